"""Fixtures of the asyncio suites: nodes on 127.0.0.1 made inside the test's
event loop and closed at the end.

These run on every tox env (the backend factor picks the blocking suites'
driver; these always use the asyncio one). Nothing sleeps: waits are on
futures and events, bounded by :data:`TIMEOUT` with ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from hyperdht.aio import AsyncDHT, AsyncHyperDHT

LOCAL = "127.0.0.1"
#: Only a broken run waits this long.
TIMEOUT = 10.0

T = TypeVar("T")


async def bounded(aw: Awaitable[T]) -> T:
    """``aw``, failing the test if it takes longer than TIMEOUT."""
    return await asyncio.wait_for(aw, TIMEOUT)


def silent_socket() -> socket.socket:
    """A bound UDP socket on loopback that never answers (non-blocking, to
    be read with ``loop.sock_recv``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCAL, 0))
    sock.setblocking(False)
    return sock


Maker = Callable[..., Any]


@pytest.fixture
async def make() -> AsyncIterator[Maker]:
    """``make(cls=AsyncDHT, **kwargs)`` creates a node on 127.0.0.1; all
    are closed at the end."""
    made: list[AsyncDHT] = []

    def factory(cls: type[AsyncDHT] = AsyncDHT, **kw: Any) -> Any:
        kw.setdefault("host", LOCAL)
        node = cls(**kw)
        made.append(node)
        return node

    yield factory
    for node in made:
        await node.close()


async def swarm(make: Maker, n: int, cls: type[AsyncDHT] = AsyncHyperDHT, **kw: Any) -> list[Any]:
    """A bootstrap node and ``n`` nodes bootstrapped from it, one after the
    other (a burst could overflow the bootstrap node's socket buffer)."""
    boot = make(cls, **kw)
    entry = f"{LOCAL}:{boot.address.port}"
    nodes = [boot]
    for _ in range(n):
        node = make(cls, bootstrap=[entry], **kw)
        await bounded(node.ready())
        nodes.append(node)
    return nodes
