"""What the fuzz targets share: the input reader, address pools, the clock.

The input is read by :class:`Reader`, a tiny deterministic byte consumer,
rather than atheris' ``FuzzedDataProvider``: the same bytes then mean the
same program with or without atheris installed, so a crash file replays
as a plain regression test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar

from hyperdht.ipencoding import Address

__all__ = [
    "T0",
    "ID_POOL",
    "POOL4",
    "POOL6",
    "InvariantError",
    "Reader",
    "check",
    "counter_bytes",
]

T = TypeVar("T")

#: The virtual clock's start (a nonzero time, so "0" is never special).
T0 = 1000.0

#: Source and contact addresses (never sent to: the cores are sans-I/O).
POOL4: tuple[Address, ...] = (
    *(Address(f"198.18.0.{i}", 49736 + i) for i in range(1, 7)),
    Address("198.18.0.1", 1),
    Address("198.18.1.1", 65535),
    Address("127.0.0.1", 49737),
    Address("0.0.0.0", 49737),
)
POOL6: tuple[Address, ...] = (
    *(Address("::1", 49736 + i) for i in range(1, 7)),
    Address("fd00::1", 1),
    Address("::ffff:198.18.0.1", 49737),
    Address("::", 49737),
    Address("fd00::2", 65535),
)

#: Node ids the programs use: a few fixed ones and their neighbours.
ID_POOL: tuple[bytes, ...] = (
    *(hashlib.sha256(bytes([i])).digest() for i in range(8)),
    bytes(32),
    b"\xff" * 32,
)


class InvariantError(AssertionError):
    """A fuzz target found a broken invariant (a finding)."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`InvariantError` with ``message`` unless ``condition``."""
    if not condition:
        raise InvariantError(message)


class Reader:
    """Consumes a fuzz input field by field; past the end every read
    returns zeros (or empty bytes), so every input is a valid program."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self.data) - self.pos

    def byte(self) -> int:
        """One byte (0 past the end)."""
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uint(self, size: int) -> int:
        """A big-endian unsigned integer of ``size`` bytes."""
        return int.from_bytes(self.take(size).ljust(size, b"\0"), "big")

    def take(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer at the end)."""
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def blob(self, limit: int) -> bytes:
        """A length-prefixed byte string: one length byte, or for lengths
        from 255 on, 0xFF and two more bytes; at most ``limit`` bytes."""
        n = self.byte()
        if n == 0xFF:
            n = self.uint(2)
        return self.take(min(n, limit))

    def flag(self) -> bool:
        """A boolean (the low bit of one byte)."""
        return bool(self.byte() & 1)

    def pick(self, seq: Sequence[T]) -> T:
        """One element of ``seq`` (not empty)."""
        return seq[self.byte() % len(seq)]

    def maybe(self, fn: Callable[[], T]) -> T | None:
        """None or ``fn()``, chosen by one byte."""
        return fn() if self.flag() else None


def counter_bytes(seed: bytes) -> Callable[[int], bytes]:
    """A deterministic ``random_bytes(n)`` (the cores' secrets and ids)."""
    counter = 0

    def random_bytes(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            counter += 1
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        return out[:n]

    return random_bytes
