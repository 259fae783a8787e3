"""Validation of the arguments every layer shares, written once.

``DHT``, ``DHTCore``, ``RequestCore`` and ``HyperDHT`` all check their
``id``, ``concurrency``, ``timeout``, ``port`` ... with these functions, so
they accept and reject the same values with the same messages. Each returns
the value (normalised where that is harmless, e.g. ``bytearray`` -> bytes)
or raises :class:`~hyperdht.errors.ArgumentError` whose message starts with
the argument's name.
"""

from __future__ import annotations

from typing import Any

from .errors import ArgumentError
from .ipencoding import ID_LENGTH

__all__ = [
    "check_id",
    "check_key",
    "check_positive_int",
    "check_optional_positive_int",
    "check_positive_number",
    "check_port",
    "check_command",
    "check_ephemeral",
    "check_positive_rate",
    "check_optional_positive_rate",
]


def check_id(value: Any, what: str = "id") -> bytes:
    """``value`` must be exactly :data:`~hyperdht.ipencoding.ID_LENGTH` bytes."""
    if not isinstance(value, bytes) or len(value) != ID_LENGTH:
        raise ArgumentError(f"{what} must be {ID_LENGTH} bytes, got {value!r}")
    return value


def check_key(value: Any, what: str = "key") -> bytes:
    """Like :func:`check_id`, but a ``bytearray`` is accepted (and copied)."""
    if not isinstance(value, (bytes, bytearray)) or len(value) != ID_LENGTH:
        raise ArgumentError(f"{what} must be {ID_LENGTH} bytes, got {value!r}")
    return bytes(value)


def check_positive_int(value: Any, what: str) -> int:
    """A positive ``int`` (``True`` is refused: it is no count)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ArgumentError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_optional_positive_int(value: Any, what: str) -> int | None:
    """None, or what :func:`check_positive_int` accepts."""
    return None if value is None else check_positive_int(value, what)


def check_positive_number(value: Any, what: str) -> float:
    """A positive int or float (seconds, mostly), as a float."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ArgumentError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


def check_port(value: Any, what: str = "port") -> int:
    """0-65535 (0: let the system or the sender's address choose)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 65536:
        raise ArgumentError(f"{what} must be 0-65535, got {value!r}")
    return value


def check_command(value: Any, what: str = "command") -> str:
    """A non-empty string that encodes as UTF-8 (checked here, so that a
    query never fails half-started when its request is encoded)."""
    if not isinstance(value, str) or not value:
        raise ArgumentError(f"{what} must be a non-empty string, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ArgumentError(f"{what} must be encodable as UTF-8, got {value!r}") from None
    return value


def check_ephemeral(value: Any, what: str = "ephemeral") -> bool | str:
    """``True``, ``False`` or ``"auto"`` (ephemeral until the node finds
    itself reachable; see :mod:`hyperdht.dhtrpc.reachability`)."""
    if isinstance(value, bool) or value == "auto":
        return value  # type: ignore[no-any-return]
    raise ArgumentError(f"{what} must be True, False or 'auto', got {value!r}")


def check_positive_rate(value: Any, what: str) -> float:
    """A positive, finite int or float (a rate or a count of tokens), as a float."""
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not 0 < value < float("inf")
    ):
        raise ArgumentError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def check_optional_positive_rate(value: Any, what: str) -> float | None:
    """None (no limit), or what :func:`check_positive_rate` accepts."""
    return None if value is None else check_positive_rate(value, what)
