"""AsyncDHT on real UDP sockets (127.0.0.1 only): the scenarios of
tests/test_dht_loopback.py and tests/test_handlers.py that make sense on
asyncio, plus what only asyncio has (no thread, cancellation, async
handlers, close leaving no task/reader/timer)."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from typing import Any

import pytest

from hyperdht import messages
from hyperdht.aio import AsyncDHT, collect_stream, collect_values
from hyperdht.dhtrpc import DHT
from hyperdht.drivers.asyncio import AsyncioDriver, LoopBackend
from hyperdht.errors import (
    ArgumentError,
    ClosedError,
    QueryError,
    RequestCancelled,
    RequestTimeout,
    StateError,
)
from hyperdht.ipencoding import Address

from .conftest import LOCAL, Maker, bounded, silent_socket, swarm


async def _drain(stream: Any) -> list[Any]:
    return [r async for r in stream]


def xor(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


async def test_ping_query_and_update_with_no_thread_of_its_own(make: Maker) -> None:
    before = set(threading.enumerate())
    nodes = await swarm(make, 12, cls=AsyncDHT)
    assert set(threading.enumerate()) == before  # no receiver, no timer thread
    assert all(isinstance(n.driver, AsyncioDriver) for n in nodes)
    a, b = nodes[1], nodes[2]
    assert await bounded(a.ping((LOCAL, b.address.port))) == a.address

    stored: dict[bytes, bytes] = {}
    for n in nodes:
        n.on_query("get", lambda node, q, n=n: b"from:" + n.id[:4])

        def store(node: Any, q: Any, n: Any = n) -> bytes:
            stored[n.id] = q.value
            return b"ok"

        n.on_update("put", store)
    target = random.Random(3).randbytes(32)
    expected = set(sorted((n.id for n in nodes if n is not a), key=lambda i: xor(i, target))[:20])
    found = {r.node.id for r in await bounded(collect_stream(a.query("_find_node", target)))}
    assert expected <= found
    values = await bounded(collect_values(a.query("get", target)))
    assert values and all(v is not None and v.startswith(b"from:") for v in values)
    stream = a.update("put", target, b"data")
    commits = await bounded(collect_stream(stream))
    assert stream.commits == len(commits) > 0
    assert set(stored.values()) == {b"data"}
    assert set(threading.enumerate()) == before


async def test_async_handler_answers_when_it_returns_without_blocking_the_receiver(
    make: Maker,
) -> None:
    a, b = make(), make()
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow(node: Any, query: Any) -> bytes:
        entered.set()
        await release.wait()
        return b"late:" + query.value

    b.on_query("slow", slow)
    to = [(LOCAL, b.address.port)]
    answer = asyncio.ensure_future(collect_values(a.query("slow", bytes(32), b"x", nodes=to)))
    await bounded(entered.wait())
    # The handler is still awaiting; the receive path is not blocked by it.
    assert await bounded(a.ping((LOCAL, b.address.port))) == a.address
    assert not answer.done()
    release.set()
    assert await bounded(answer) == [b"late:x"]


async def test_plain_handlers_inline_or_in_the_executor_and_raising_ones(make: Maker) -> None:
    a = make()
    inline = make()
    off = make(inline_handlers=False)
    loop_thread = threading.get_ident()
    seen: dict[int, set[int]] = {inline.address.port: set(), off.address.port: set()}

    def recorder(port: int) -> Any:
        def record(node: Any, query: Any) -> bytes:
            seen[port].add(threading.get_ident())
            return b"sync"

        return record

    inline.on_query("h", recorder(inline.address.port))
    off.on_query("h", recorder(off.address.port))
    off.on_update("h", lambda node, q: 1 / 0)  # type: ignore[arg-type,return-value]

    async def failing(node: Any, q: Any) -> bytes:
        raise KeyError("no")

    inline.on_update("h", failing)
    for node in (inline, off):
        got = await bounded(collect_values(a.query("h", bytes(32), nodes=[node.address])))
        assert got == [b"sync"]
        # A raising handler sends nothing: the commit gets no answer.
        stream = a.update("h", bytes(32), nodes=[node.address])
        assert await bounded(_drain(stream)) == []
        assert stream.error is not None
        assert node.stats.handler_errors == 1
    assert seen[inline.address.port] == {loop_thread}
    assert seen[off.address.port] and loop_thread not in seen[off.address.port]
    with pytest.raises(ArgumentError, match="callable"):
        a.on_query("x", "not callable")  # type: ignore[arg-type]


async def test_cancelling_a_ping_cancels_that_request_only(make: Maker) -> None:
    silent = silent_socket()
    loop = asyncio.get_running_loop()
    try:
        node, other = make(timeout=60.0), make()
        far = silent.getsockname()
        task = asyncio.ensure_future(node.ping(far))
        data = await bounded(loop.sock_recv(silent, 2048))  # the request is out
        assert messages.decode_request(data[2:]).command == "_ping"
        kept = asyncio.ensure_future(node.ping(far))
        await bounded(loop.sock_recv(silent, 2048))
        assert node.core.requests_in_flight == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert node.core.requests_in_flight == 1
        assert not kept.done()
        assert await bounded(node.ping(other.address)) == node.address
        kept.cancel()
        with pytest.raises(asyncio.CancelledError):
            await kept
        assert node.core.requests_in_flight == 0
    finally:
        silent.close()


async def test_cancelling_a_task_iterating_a_query_destroys_that_query_only(make: Maker) -> None:
    silent = silent_socket()
    loop = asyncio.get_running_loop()
    try:
        node = make(timeout=60.0)
        to = [silent.getsockname()]
        first, second = node.query("q", bytes(32), nodes=to), node.query("q", bytes(32), nodes=to)

        waiting = [asyncio.Event(), asyncio.Event()]

        async def drain(stream: Any, started: asyncio.Event) -> list[Any]:
            started.set()  # the next line awaits the first result
            return [r async for r in stream]

        t1 = asyncio.ensure_future(drain(first, waiting[0]))
        t2 = asyncio.ensure_future(drain(second, waiting[1]))
        await bounded(loop.sock_recv(silent, 2048))
        await bounded(loop.sock_recv(silent, 2048))
        for started in waiting:
            await bounded(started.wait())
        t1.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t1
        assert first.done and first.error is None  # destroyed, not failed
        assert not second.done and not t2.done()
        await second.aclose()
        assert await bounded(t2) == []
    finally:
        silent.close()


async def test_a_request_that_times_out_raises_request_timeout(make: Maker) -> None:
    silent = silent_socket()
    try:
        node = make(timeout=0.2)
        with pytest.raises(RequestTimeout):
            await bounded(node.ping(silent.getsockname()))
    finally:
        silent.close()


def _owned_by_the_loop(loop: asyncio.AbstractEventLoop, fd: int) -> bool:
    try:
        return loop.remove_reader(fd)
    except ValueError:  # the descriptor is closed
        return False


async def test_close_ends_streams_and_requests_and_leaves_nothing(make: Maker) -> None:
    silent = silent_socket()
    loop = asyncio.get_running_loop()
    try:
        node = make(timeout=60.0)
        release, entered = asyncio.Event(), asyncio.Event()

        async def never(n: Any, q: Any) -> bytes:
            entered.set()
            await release.wait()
            return b""

        node.on_query("never", never)
        client = make()
        pending_answer = asyncio.ensure_future(
            collect_values(client.query("never", bytes(32), nodes=[node.address]))
        )
        await bounded(entered.wait())  # a handler task is pending on the node
        stream = node.query("q", bytes(32), nodes=[silent.getsockname()])
        ping = asyncio.ensure_future(node.ping(silent.getsockname()))
        await bounded(loop.sock_recv(silent, 2048))
        await bounded(loop.sock_recv(silent, 2048))
        sock = node.driver.socket
        before = asyncio.all_tasks()
        await node.close()
        assert [r async for r in stream] == []
        assert isinstance(stream.error, QueryError)
        with pytest.raises((RequestCancelled, ClosedError)):
            await bounded(ping)
        assert sock.fileno() == -1
        await node.close()  # idempotent
        assert node.driver._timer is None  # type: ignore[attr-defined]
        leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
        assert leftover <= {pending_answer}
        pending_answer.cancel()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((LOCAL, node.address.port))  # the port is free again
    finally:
        silent.close()


async def test_methods_after_close_raise_closed_error(make: Maker) -> None:
    other, node = make(), make()
    await node.close()
    assert node.closed
    to = (LOCAL, other.address.port)
    with pytest.raises(ClosedError):
        await node.ping(to)
    with pytest.raises(ClosedError):
        await node.holepunch(to, to)
    with pytest.raises(ClosedError):
        await node.bootstrap()
    for call in (
        lambda: node.query("x", bytes(32)),
        lambda: node.update("x", bytes(32)),
        lambda: node.send_datagram(b"x", to),
    ):
        with pytest.raises(ClosedError):
            call()


async def test_application_datagrams_between_two_nodes(make: Maker) -> None:
    a, b = make(), make()
    got: asyncio.Future[tuple[bytes, Address]] = asyncio.get_running_loop().create_future()
    b.on_datagram(lambda data, addr: got.done() or got.set_result((data, addr)))
    a.send_datagram(b"hello", (LOCAL, b.address.port))
    assert await bounded(got) == (b"hello", a.address)


async def test_bootstrap_ready_and_nodes(make: Maker) -> None:
    await bounded(make().ready())  # nothing to bootstrap from: at once
    silent = silent_socket()
    try:
        lonely = make(bootstrap=[silent.getsockname()], timeout=0.2)
        await bounded(lonely.ready())
        assert lonely.nodes() == []
        with pytest.raises(QueryError, match="No nodes responded"):
            await bounded(lonely.bootstrap())
    finally:
        silent.close()
    nodes = await swarm(make, 3, cls=AsyncDHT)
    await bounded(nodes[1].bootstrap())
    restored = make(nodes=nodes[1].nodes())
    await bounded(restored.ready())
    assert {n.id for n in restored.nodes()} & {n.id for n in nodes}


async def test_arguments_are_checked_like_the_blocking_api(make: Maker) -> None:
    with pytest.raises(ArgumentError, match="backend"):
        AsyncDHT(host=LOCAL, backend="thread")
    with pytest.raises(ValueError, match="bootstrap"):
        AsyncDHT(host=LOCAL, bootstrap=["nonsense:port:x"])
    with pytest.raises(ValueError, match="concurrency"):
        AsyncDHT(host=LOCAL, concurrency=0)
    node = make()
    with pytest.raises(ValueError, match="addr"):
        await node.ping("not an address:")


def test_needs_a_running_loop() -> None:
    with pytest.raises(StateError, match="running event loop"):
        AsyncDHT(host=LOCAL)


async def test_the_blocking_dht_on_the_asyncio_driver_works_from_a_worker_thread() -> None:
    async with AsyncDHT(host=LOCAL) as server:
        client = DHT(host=LOCAL, backend="asyncio")
        try:
            with pytest.raises(StateError, match="event loop"):
                client.ping(server.address)  # would freeze the loop
            seen = await bounded(asyncio.to_thread(client.ping, server.address))
            assert seen == client.address
        finally:
            client.close()


def test_blocking_nodes_on_a_loop_in_its_own_thread() -> None:
    backend = LoopBackend.in_thread("test-loop")
    try:
        with DHT(host=LOCAL, backend=backend) as a, DHT(host=LOCAL, backend=backend) as b:
            b.on_query("echo", lambda node, q: q.value)
            assert a.ping(b.address) == a.address
            values = [r.value for r in a.query("echo", bytes(32), b"hi", nodes=[b.address])]
            assert values == [b"hi"]
            sock = b.driver.socket  # type: ignore[attr-defined]
        assert sock.fileno() == -1
    finally:
        backend.stop()
    assert "test-loop" not in {t.name for t in threading.enumerate()}
    assert backend.loop.is_closed()


async def test_caller_socket_is_used_released_from_the_loop_and_not_closed(make: Maker) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCAL, 0))
    sock.settimeout(3.0)
    try:
        other = make()
        node = make(socket=sock)
        assert node.address.port == sock.getsockname()[1]
        assert await bounded(other.ping(node.address)) == other.address
        await node.close()
        assert sock.fileno() != -1 and sock.gettimeout() == 3.0
        assert loop.remove_reader(sock.fileno()) is False  # the driver let go of it
    finally:
        sock.close()
