"""The announced-peer store of a hyperdht node (after hyperdht's ``store.js``).

Two generations of ``key -> {peer id -> entry}``: writes go to the current
generation; when it holds more than ``max_size`` items (keys plus entries)
it becomes the previous generation and a fresh one starts, so memory stays
bounded (at most about twice ``max_size`` items) under any announce flood.
Reads see both generations. Entries older than ``max_age`` seconds are
skipped. Sans-I/O: time is a parameter.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from ..arguments import check_positive_int, check_positive_number

__all__ = ["PeerStore", "StoredPeer", "DEFAULT_MAX_AGE", "DEFAULT_MAX_SIZE"]

#: Seconds an announcement stays valid (the Go port's 15 minutes).
DEFAULT_MAX_AGE = 15 * 60.0
#: Items (keys plus entries) per generation.
DEFAULT_MAX_SIZE = 65536


@dataclass(frozen=True, slots=True)
class StoredPeer:
    """One announcement: the encoded public peer and, optionally, the
    announcer's LAN address split into its /16 filter and the rest."""

    peer: bytes
    local_filter: bytes | None = None
    local_peer: bytes | None = None


class _Entry:
    __slots__ = ("age", "value")

    def __init__(self, value: StoredPeer, age: float) -> None:
        self.value = value
        self.age = age


class PeerStore:
    """Bounded, two-generation peer store. Not thread-safe."""

    def __init__(
        self,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        max_age: float = DEFAULT_MAX_AGE,
        rng: random.Random | None = None,
    ) -> None:
        self.max_size = check_positive_int(max_size, "max_size")
        self.max_age = check_positive_number(max_age, "max_age")
        self._rng = rng or random.Random()
        self._current: dict[bytes, dict[str, _Entry]] = {}
        self._previous: dict[bytes, dict[str, _Entry]] = {}
        self._size = 0

    def __len__(self) -> int:
        """Items (keys plus entries) in the current generation."""
        return self._size

    def has(self, key: bytes) -> bool:
        """True if any generation holds entries for ``key``."""
        return key in self._current or key in self._previous

    def put(self, key: bytes, peer_id: str, value: StoredPeer, now: float) -> None:
        """Store (or refresh) ``peer_id``'s announcement under ``key``."""
        entries = self._current.get(key)
        if entries is not None:
            entry = entries.get(peer_id)
            if entry is not None:
                entry.value = value
                entry.age = now
                return
        old = self._previous.get(key)
        if old is not None and old.pop(peer_id, None) is not None and not old:
            del self._previous[key]
        if entries is None:
            entries = self._current[key] = {}
            self._size += 1
        entries[peer_id] = _Entry(value, now)
        self._size += 1
        if self._size > self.max_size:
            self._previous = self._current
            self._current = {}
            self._size = 0

    def delete(self, key: bytes, peer_id: str) -> None:
        """Forget ``peer_id``'s announcement under ``key`` (both generations)."""
        entries = self._current.get(key)
        if entries is not None and entries.pop(peer_id, None) is not None:
            self._size -= 1
            if not entries:
                del self._current[key]
                self._size -= 1
        old = self._previous.get(key)
        if old is not None and old.pop(peer_id, None) is not None and not old:
            del self._previous[key]

    def iterate(self, key: bytes, now: float) -> Iterator[StoredPeer]:
        """The live announcements under ``key`` in random order (lazily
        shuffled: taking a few of many costs little)."""
        pool = list(self._current.get(key, {}).values())
        pool.extend(self._previous.get(key, {}).values())
        rand = self._rng.random
        oldest = now - self.max_age
        n = len(pool)
        for i in range(n):
            j = i + int(rand() * (n - i))
            pool[i], pool[j] = pool[j], pool[i]
            entry = pool[i]
            if entry.age >= oldest:
                yield entry.value
