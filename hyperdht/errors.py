"""Exceptions raised by hyperdht.

Every exception the library raises on purpose derives from
:class:`HyperDHTError`, so ``except HyperDHTError`` catches all of them.
Bad arguments raise the builtin :class:`ValueError` (or :class:`TypeError`)
with a message naming the argument.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "HyperDHTError",
    "DecodeError",
    "RequestTimeout",
    "RequestCancelled",
    "QueryError",
    "ClosedError",
]


class HyperDHTError(Exception):
    """Base class of every error hyperdht raises on purpose."""


class DecodeError(HyperDHTError, ValueError):
    """A buffer received from the network does not decode.

    Also a :class:`ValueError`, so callers that treat any malformed input
    alike can catch that.
    """


class RequestTimeout(HyperDHTError, TimeoutError):
    """A request got no response in time (after any retries)."""

    def __init__(self, message: str = "Request timed out") -> None:
        super().__init__(message)


class RequestCancelled(HyperDHTError):
    """A request was cancelled before it completed, e.g. by ``close()``."""

    def __init__(self, message: str = "Request cancelled") -> None:
        super().__init__(message)


class ClosedError(HyperDHTError):
    """The node (or stream) is closed and cannot be used any more."""


class QueryError(HyperDHTError):
    """A query or update failed as a whole.

    ``responses`` holds what did arrive before the failure (the yielded
    results, possibly empty), so a caller can still use partial results.
    The messages match the reference: ``"No nodes responded"`` and
    ``"No close nodes responded"``.
    """

    def __init__(self, message: str, responses: list[Any] | None = None) -> None:
        super().__init__(message)
        self.responses: list[Any] = list(responses or [])
