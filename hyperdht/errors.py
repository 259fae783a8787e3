"""Exceptions raised by hyperdht.

Every exception the library raises derives from :class:`HyperDHTError`, so
``except HyperDHTError`` catches all of them. Where a builtin says the same
thing, the class derives from it too, so code written against the builtins
keeps working: a bad argument raises :class:`ArgumentError` (a
:class:`ValueError`, with a message naming the argument), a wrong type
:class:`ArgumentTypeError` (a :class:`TypeError`), a call in the wrong state
:class:`StateError` (a :class:`RuntimeError`), a socket that cannot be bound
:class:`BindError` (an :class:`OSError`, same errno).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "HyperDHTError",
    "ArgumentError",
    "ArgumentTypeError",
    "StateError",
    "BindError",
    "BackendUnavailable",
    "DecodeError",
    "RequestTimeout",
    "RequestCancelled",
    "QueryError",
    "ClosedError",
]


class HyperDHTError(Exception):
    """Base class of every error hyperdht raises on purpose."""


class ArgumentError(HyperDHTError, ValueError):
    """An argument has a bad value; the message names the argument
    (``"port: must be 0-65535, got 70000"``)."""


class ArgumentTypeError(HyperDHTError, TypeError):
    """An argument has the wrong type; the message names the argument."""


class StateError(HyperDHTError, RuntimeError):
    """The call does not fit the object's state (a driver started twice, a
    blocking call from inside the simulator's event loop, ...)."""


class BindError(HyperDHTError, OSError):
    """A UDP socket could not be bound; ``errno`` is the system's and the
    message names the address."""


class BackendUnavailable(HyperDHTError, ImportError):
    """A backend's library is not installed (``backend="gevent"`` without
    gevent); the message says what to install."""


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
