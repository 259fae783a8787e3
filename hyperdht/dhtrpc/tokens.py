"""Round-trip tokens with rotating secrets.

A token proves that a requester really receives datagrams at the host it
claims: we hand it out in every response and accept it back in an update
only from the same host. As in the reference, a token is
``sha256(secret || host)``; two secrets are valid at a time and the older
one is replaced every rotation period (5 minutes), so a token lives between
one and two periods. Only the issuer ever checks a token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

__all__ = ["TokenStore", "ROTATE_INTERVAL"]

#: Seconds between secret rotations (the reference's 5 minutes).
ROTATE_INTERVAL = 300.0


class TokenStore:
    """Issues and checks round-trip tokens for one node."""

    __slots__ = ("_cache", "_random", "_secrets")

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._random = random_bytes
        self._secrets = [random_bytes(32), random_bytes(32)]
        self._cache: dict[str, bytes] = {}

    def rotate(self) -> None:
        """Replace the older secret by a fresh one."""
        self._secrets[1] = self._secrets[0]
        self._secrets[0] = self._random(32)
        self._cache.clear()

    def _token(self, host: str, index: int) -> bytes:
        return hashlib.sha256(self._secrets[index] + host.encode()).digest()

    def issue(self, host: str) -> bytes:
        """The current token for ``host``."""
        token = self._cache.get(host)
        if token is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            token = self._cache[host] = self._token(host, 0)
        return token

    def check(self, token: bytes, host: str) -> bool:
        """True if ``token`` was issued to ``host`` under either live secret."""
        return hmac.compare_digest(token, self.issue(host)) or hmac.compare_digest(
            token, self._token(host, 1)
        )
