"""Faults on the asyncio API (``hyperdht.aio``), real loopback sockets: the
counterpart of ``tests/test_faults.py`` for code that awaits.

* ``sendto`` failing (EAGAIN, ENOBUFS, EMSGSIZE, EPERM) through
  :class:`hyperdht.testing.faults.FaultySocket`: counted in
  ``driver.send_errors``, the request times out, the node serves on.
* Real ICMP port-unreachable errors (``IP_RECVERR``): the loop's reader
  does not spin on the socket's error queue.
* An ``async def`` handler that raises (no answer, ``handler_errors``) or
  never finishes (others are served; ``close()`` cancels it at once).
* ``close()`` from another task while tasks await a query, an announce, a
  lookup, a ping, a holepunch and a connect: each gets the documented
  error within :data:`PROMPT` seconds, and no task, reader or descriptor
  of the node is left.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hyperdht.aio import AsyncHyperDHT, collect_stream, collect_values
from hyperdht.errors import ClosedError, QueryError, RequestCancelled, RequestTimeout
from hyperdht.testing.faults import SEND_ERRNOS, FaultySocket

from .conftest import LOCAL, Maker, bounded, silent_socket

PROMPT = 2.0
SHORT = 1.0


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def drain(stream: Any) -> list[Any]:
    """A stream's results, whatever error ended it."""
    return [r async for r in stream]


def others() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


@pytest.mark.parametrize("err", SEND_ERRNOS, ids=[errno.errorcode[e] for e in SEND_ERRNOS])
async def test_a_refused_send_is_counted_and_its_request_times_out(make: Maker, err: int) -> None:
    with FaultySocket.bind(LOCAL) as sock:
        a = make(socket=sock, timeout=SHORT)
        b = make(timeout=SHORT)
        sock.fail_sends(err, 1, to=b.address)
        with pytest.raises(RequestTimeout):
            await bounded(a.ping(b.address))
        assert a.driver.send_errors == 1
        assert (await bounded(a.ping(b.address))).port == a.address.port
        sock.fail_sends(err, 1, to=b.address)  # a's answer this time
        with pytest.raises(RequestTimeout):
            await bounded(b.ping(a.address))
        assert (await bounded(b.ping(a.address))).port == b.address.port
        assert a.driver.send_errors == 2
        await a.close()


async def test_emsgsize_for_one_datagram_does_not_stop_the_others(make: Maker) -> None:
    with FaultySocket.bind(LOCAL) as sock:
        a = make(socket=sock, timeout=SHORT)
        servers = [make() for _ in range(3)]
        for s in servers:
            s.on_query("who", lambda node, query, s=s: str(s.address.port).encode())
        refused = servers[1].address
        sock.fail_sends(errno.EMSGSIZE, 1, to=refused)
        values = await bounded(
            collect_values(a.query("who", bytes(32), nodes=[s.address for s in servers]))
        )
        assert sorted(values) == sorted(  # type: ignore[type-var]
            str(s.address.port).encode() for s in servers if s.address != refused
        )
        assert a.driver.send_errors == 1
        await a.close()


async def test_real_icmp_errors_do_not_make_the_reader_spin(make: Maker) -> None:
    with FaultySocket.bind(LOCAL, recverr=True) as sock:
        a = make(socket=sock, timeout=SHORT)
        b = make(timeout=SHORT)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
            gone.bind((LOCAL, 0))
            dead = gone.getsockname()
        with pytest.raises(RequestTimeout):
            await bounded(a.ping(dead))
        assert sock.real_errors[errno.ECONNREFUSED] >= 1
        assert (await bounded(b.ping(a.address))).port == b.address.port
        assert (await bounded(a.ping(b.address))).port == a.address.port
        assert sock.recvs < 100
        await a.close()


async def test_async_handlers_that_raise_or_never_finish(make: Maker) -> None:
    a = make(timeout=SHORT)
    b = make()
    entered = asyncio.Event()

    async def boom(node: Any, query: Any) -> bytes:
        raise ValueError("boom")

    async def never(node: Any, query: Any) -> bytes:
        entered.set()
        await asyncio.Event().wait()
        return b""

    b.on_query("boom", boom)
    b.on_query("never", never)
    b.on_query("echo", lambda node, query: query.value)
    assert await bounded(drain(a.query("boom", bytes(32), nodes=[b.address]))) == []
    assert b.stats.handler_errors == 1
    hung = asyncio.ensure_future(drain(a.query("never", bytes(32), nodes=[b.address])))
    await bounded(entered.wait())
    echoed = await bounded(collect_values(a.query("echo", bytes(32), b"x", nodes=[b.address])))
    assert echoed == [b"x"]
    before = others()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await bounded(b.close())
    assert loop.time() - start < PROMPT
    assert others() <= before  # the handler's task is gone
    assert await bounded(hung) == []  # a's request got no answer
    await a.close()


def awaiting(node: AsyncHyperDHT, far: Any) -> dict[str, Callable[[], Awaitable[Any]]]:
    key = bytes(range(32))
    return {
        "query": lambda: collect_stream(node.query("x", key, nodes=[far])),
        "announce": lambda: node.announce_discard(key),
        "lookup": lambda: collect_stream(node.lookup(key)),
        "ping": lambda: node.ping(far),
        "holepunch": lambda: node.holepunch((LOCAL, 9), far),
        "connect": lambda: node.connect((LOCAL, 9), far, opener_ttl=2),
    }


EXPECTED: dict[str, tuple[type[BaseException], ...]] = {
    "query": (QueryError, ClosedError),
    "announce": (QueryError, ClosedError),
    "lookup": (QueryError, ClosedError),
    "ping": (RequestCancelled, ClosedError),
    "holepunch": (RequestCancelled, ClosedError),
    "connect": (RequestCancelled, ClosedError),
}


@pytest.mark.parametrize("op", list(EXPECTED))
async def test_close_from_another_task_releases_every_awaiting_one(make: Maker, op: str) -> None:
    loop = asyncio.get_running_loop()
    silent = silent_socket()
    try:
        far = silent.getsockname()
        before_fds, before_tasks = fds(), others()
        node = make(AsyncHyperDHT, timeout=60.0, bootstrap=[far])
        await bounded(loop.sock_recv(silent, 2048))  # the bootstrap's request
        waiter = asyncio.ensure_future(awaiting(node, far)[op]())
        await bounded(loop.sock_recv(silent, 2048))  # the operation's request
        assert not waiter.done()
        closer = asyncio.ensure_future(node.close())
        start = loop.time()
        with pytest.raises(EXPECTED[op]):
            await bounded(waiter)
        assert loop.time() - start < PROMPT
        await bounded(closer)
        assert node.driver._timer is None  # type: ignore[attr-defined]
        assert others() <= before_tasks
        assert fds() == before_fds
    finally:
        silent.close()
