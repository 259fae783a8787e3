"""Faults on real loopback sockets, on the backend the suite runs on
(``HYPERDHT_TEST_BACKEND``: thread, gevent, or asyncio, whose nodes then
run on an event loop in a thread and are used through the blocking API).

* ``sendto`` failing (EAGAIN, ENOBUFS, EMSGSIZE, EPERM), injected by
  :class:`hyperdht.testing.faults.FaultySocket` through ``socket=``: the
  datagram is dropped and counted in ``driver.send_errors``, never raised
  in the I/O loop; the request it carried is not retried (DHT requests
  never are) and fails with RequestTimeout after its usual timeout; the
  other datagrams of the same flush still go out; the node keeps serving.
* Real ICMP port-unreachable errors (``IP_RECVERR``): the request times
  out as usual, the receiver neither stops nor spins on the error queue.
* Handlers that raise (no response, ``stats.handler_errors``) or hang
  (``inline_handlers=False``: the node keeps serving and ``close()``
  returns promptly).
* ``close()`` from another thread or greenlet while a caller is blocked in
  a query, an announce, a lookup, a holepunch or a connect: the caller gets
  the documented error (RequestCancelled for a request, a stream that ends
  with an error, QueryError for ``announce_discard``) within
  :data:`PROMPT` seconds, and nothing of the node is left: no thread,
  greenlet, task or descriptor.

Nothing sleeps: every wait is on an event, bounded by :data:`TIMEOUT`.
"""

from __future__ import annotations

import errno
import gc
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hyperdht import DHT, HyperDHT, collect_stream
from hyperdht.errors import ClosedError, QueryError, RequestCancelled, RequestTimeout
from hyperdht.testing.faults import IP_RECVERR, SEND_ERRNOS, FaultySocket

LOCAL = "127.0.0.1"
#: Only a broken run waits this long.
TIMEOUT = 10.0
#: How soon after close() a blocked caller must be released.
PROMPT = 2.0
#: Request timeout of the nodes that must see a request fail.
SHORT = 1.0
#: Request timeout of the nodes whose requests must stay pending until close().
LONG = 60.0


class Env:
    """What differs between backends for a test: the ``backend=`` value,
    events, running a callable concurrently, a cooperative silent socket,
    and counting what is alive."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.backend: Any = name
        self.loop_backend: Any = None
        if name == "gevent":
            import gevent
            import gevent.event
            import gevent.socket

            self._gevent = gevent
            gevent.get_hub()  # its descriptors exist before any count
        elif name == "asyncio":
            from hyperdht.drivers.asyncio import LoopBackend

            self.loop_backend = self.backend = LoopBackend.in_thread("faults-loop")

    def event(self) -> Any:
        """An event the test and the nodes can both wait on."""
        if self.name == "gevent":
            return self._gevent.event.Event()
        return threading.Event()

    def run(self, fn: Callable[[], Any]) -> Call:
        """Run ``fn()`` in another thread (greenlet under gevent)."""
        return Call(self, fn)

    def silent(self) -> socket.socket:
        """A bound loopback UDP socket that never answers."""
        if self.name == "gevent":
            sock: socket.socket = self._gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOCAL, 0))
        return sock

    def alive(self, port: int | None = None) -> dict[str, Any]:
        """What is running: threads (of the node on ``port``, if given;
        not the test's own), open descriptors, live greenlets, the loop's
        tasks."""
        gc.collect()
        # Not the test's own threads, nor the default executor of the
        # asyncio loop (the loop's, it outlives every node).
        names = [
            t.name
            for t in threading.enumerate()
            if not t.name.startswith(("faults-call", "asyncio_"))
        ]
        if port is not None:
            names = [n for n in names if n.endswith(f"-{port}") or f"-{port}_" in n]
        out: dict[str, Any] = {
            "threads": sorted(names),
            "fds": len(os.listdir("/proc/self/fd")),
        }
        if self.name == "gevent":
            import greenlet

            out["greenlets"] = sum(
                1 for g in gc.get_objects() if isinstance(g, greenlet.greenlet) and not g.dead
            )
        if self.loop_backend is not None:
            import asyncio

            async def tasks() -> int:
                return len(asyncio.all_tasks()) - 1

            loop = self.loop_backend.loop
            out["tasks"] = asyncio.run_coroutine_threadsafe(tasks(), loop).result(TIMEOUT)
        return out

    def close(self) -> None:
        """Stop the event loop thread (asyncio)."""
        if self.loop_backend is not None:
            self.loop_backend.stop()


class Call:
    """``fn()`` running concurrently; :meth:`join` waits for its outcome."""

    def __init__(self, env: Env, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self._done = env.event()
        self._fn = fn
        if env.name == "gevent":
            env._gevent.spawn(self._run)
        else:
            threading.Thread(target=self._run, name="faults-call", daemon=True).start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at = time.monotonic()
            self._done.set()

    def join(self, timeout: float = TIMEOUT) -> bool:
        """Wait for ``fn`` to return or raise; True if it did."""
        return bool(self._done.wait(timeout))


@pytest.fixture
def env(backend: str) -> Iterator[Env]:
    """The backend of this run, ready for fault tests."""
    e = Env(backend)
    try:
        yield e
    finally:
        e.close()


def peer(env: Env, **kw: Any) -> DHT:
    """A node on loopback, on the backend of the run."""
    kw.setdefault("host", LOCAL)
    return DHT(backend=env.backend, **kw)


# -- sendto failures ---------------------------------------------------------------


@pytest.mark.parametrize("err", SEND_ERRNOS, ids=[errno.errorcode[e] for e in SEND_ERRNOS])
def test_a_refused_send_is_counted_and_its_request_times_out(env: Env, err: int) -> None:
    with (
        FaultySocket.bind(LOCAL) as sock,
        peer(env, socket=sock, timeout=SHORT) as a,
        peer(env, timeout=SHORT) as b,
    ):
        sock.fail_sends(err, 1, to=b.address)
        start = time.monotonic()
        with pytest.raises(RequestTimeout):
            a.ping(b.address)
        assert time.monotonic() - start < SHORT * 1.5 + PROMPT
        assert a.driver.send_errors == 1  # type: ignore[attr-defined]
        assert sock.injected[err] == 1
        # The next request goes out, and a still answers others.
        assert a.ping(b.address).port == a.address.port
        assert b.ping(a.address).port == b.address.port
        # A refused *response*: the asker's request times out, a serves on.
        sock.fail_sends(err, 1, to=b.address)
        with pytest.raises(RequestTimeout):
            b.ping(a.address)
        assert a.driver.send_errors == 2  # type: ignore[attr-defined]
        assert b.ping(a.address).port == b.address.port


def test_emsgsize_for_one_datagram_does_not_stop_the_others_of_the_flush(env: Env) -> None:
    with FaultySocket.bind(LOCAL) as sock, peer(env, socket=sock, timeout=SHORT) as a:
        servers = [peer(env) for _ in range(3)]
        try:
            for s in servers:
                s.on_query("who", lambda node, query, s=s: str(s.address.port).encode())
            refused = servers[1].address
            sock.fail_sends(errno.EMSGSIZE, 1, to=refused)
            # One query to three nodes: its three requests leave in one flush.
            stream = a.query("who", bytes(32), nodes=[s.address for s in servers])
            values = sorted(r.value for r in stream)
            expected = sorted(str(s.address.port).encode() for s in servers if s.address != refused)
            assert values == expected
            assert a.driver.send_errors == 1  # type: ignore[attr-defined]
        finally:
            for s in servers:
                s.close()


def test_eagain_on_every_send_for_a_while_then_the_node_recovers(env: Env) -> None:
    with (
        FaultySocket.bind(LOCAL) as sock,
        peer(env, socket=sock, timeout=SHORT) as a,
        peer(env, timeout=SHORT) as b,
    ):
        sock.fail_sends(errno.EAGAIN, 50)
        for _ in range(2):
            with pytest.raises(RequestTimeout):
                a.ping(b.address)
        sock.clear()
        assert a.ping(b.address).port == a.address.port
        assert a.driver.send_errors == 2  # type: ignore[attr-defined]


# -- ICMP errors ----------------------------------------------------------------------


def closed_port() -> int:
    """A loopback UDP port nothing listens on (just released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCAL, 0))
        port: int = s.getsockname()[1]
    return port


def test_real_icmp_port_unreachable_times_out_the_request_and_nothing_else(env: Env) -> None:
    with (
        FaultySocket.bind(LOCAL, recverr=True) as sock,
        peer(env, socket=sock, timeout=SHORT) as a,
        peer(env, timeout=SHORT) as b,
    ):
        dead = (LOCAL, closed_port())
        with pytest.raises(RequestTimeout):
            a.ping(dead)
        assert sock.real_errors[errno.ECONNREFUSED] >= 1  # the kernel did report it
        # Still serving, and still asking.
        assert b.ping(a.address).port == b.address.port
        assert a.ping(b.address).port == a.address.port
        # The error queue kept the socket readable: a receiver that does
        # not drain it spins through recvfrom tens of thousands of times.
        assert sock.recvs < 100


def test_real_icmp_errors_on_a_plain_caller_socket_cost_no_cpu(env: Env) -> None:
    # A stdlib socket, as a program would pass it (the gevent driver reads
    # a duplicate of it through a gevent socket): no counters, so the
    # receiver's CPU time tells whether it spun on the error queue.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCAL, 0))
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        with peer(env, socket=sock, timeout=SHORT) as a, peer(env, timeout=SHORT) as b:
            dead = (LOCAL, closed_port())
            wall, cpu = time.monotonic(), time.process_time()
            with pytest.raises(RequestTimeout):
                a.ping(dead)
            wall, cpu = time.monotonic() - wall, time.process_time() - cpu
            assert b.ping(a.address).port == b.address.port
            assert cpu < 0.5 * wall, f"{cpu:.2f} s of CPU in {wall:.2f} s: the receiver spun"


def test_synthetic_icmp_errors_from_recvfrom_lose_nothing(env: Env) -> None:
    with (
        FaultySocket.bind(LOCAL) as sock,
        peer(env, socket=sock, timeout=1.0) as a,
        peer(env, timeout=1.0) as b,
    ):
        sock.fail_recvs(errno.ECONNREFUSED, 3)
        # The answer waits in the kernel while recvfrom fails three times.
        assert a.ping(b.address).port == a.address.port
        assert sock.injected[errno.ECONNREFUSED] == 3
        assert b.ping(a.address).port == b.address.port


# -- handlers -----------------------------------------------------------------------


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "off-receiver"])
def test_a_raising_handler_sends_nothing_and_the_node_serves_on(env: Env, inline: bool) -> None:
    with peer(env, timeout=SHORT) as a, peer(env, inline_handlers=inline) as b:
        b.on_query("boom", lambda node, query: 1 / 0)  # type: ignore[arg-type,return-value]
        b.on_query("echo", lambda node, query: query.value)
        stream = a.query("boom", bytes(32), nodes=[b.address])
        assert list(stream) == []
        assert stream.error is not None
        if inline:
            assert b.driver.endpoint_errors == 0  # type: ignore[attr-defined]
        assert b.stats.handler_errors == 1
        assert [r.value for r in a.query("echo", bytes(32), b"hi", nodes=[b.address])] == [b"hi"]


def test_a_hanging_handler_leaves_the_node_serving_and_close_prompt(env: Env) -> None:
    release = env.event()
    entered = env.event()
    with peer(env, timeout=SHORT) as a:
        b = peer(env, inline_handlers=False)
        port = b.address.port

        def hang(node: object, query: object) -> bytes:
            entered.set()
            release.wait(TIMEOUT)
            return b"late"

        b.on_query("hang", hang)
        b.on_query("echo", lambda node, query: query.value)
        try:
            hung = env.run(lambda: list(a.query("hang", bytes(32), nodes=[b.address])))
            assert entered.wait(TIMEOUT)
            assert a.ping(b.address).port == a.address.port
            assert [r.value for r in a.query("echo", bytes(32), b"x", nodes=[b.address])] == [b"x"]
            start = time.monotonic()
            closing = env.run(b.close)
            assert closing.join(), "close() hung on a hanging handler"
            assert closing.error is None
            assert time.monotonic() - start < PROMPT
        finally:
            release.set()
            b.close()
        assert hung.join()
        assert hung.result == []  # b closed before it answered: a's request timed out
        if env.name == "thread":
            # The pool thread finishes once the handler returns.
            for t in threading.enumerate():
                if t.name.startswith(f"hyperdht-spawn-{port}_"):
                    t.join(TIMEOUT)
        assert env.alive(port)["threads"] == []


# -- close() while callers are blocked ------------------------------------------------


def blocked_calls(node: HyperDHT, silent: tuple[str, int]) -> dict[str, Callable[[], Any]]:
    """What blocks until ``silent`` answers (it never does)."""
    key = bytes(range(32))
    return {
        "query": lambda: list(node.query("x", key, nodes=[silent])),
        "announce": lambda: node.announce_discard(key),
        "lookup": lambda: collect_stream(node.lookup(key)),
        "ping": lambda: node.ping(silent),
        "holepunch": lambda: node.holepunch((LOCAL, 9), silent),
        "connect": lambda: node.connect((LOCAL, 9), silent, opener_ttl=2),
    }


#: What each blocked call ends with when the node closes under it.
EXPECTED: dict[str, tuple[type[BaseException], ...] | None] = {
    "query": None,  # the stream just ends
    "announce": (QueryError, ClosedError),
    "lookup": (QueryError, ClosedError),
    "ping": (RequestCancelled, ClosedError),
    "holepunch": (RequestCancelled, ClosedError),
    "connect": (RequestCancelled, ClosedError),
}


@pytest.mark.parametrize("op", list(EXPECTED))
def test_close_from_elsewhere_releases_a_blocked_caller_and_leaves_nothing(
    env: Env, op: str
) -> None:
    with env.silent() as silent:
        far = silent.getsockname()
        before = env.alive()
        sock = FaultySocket.bind(LOCAL)
        try:
            node = HyperDHT(
                host=LOCAL, backend=env.backend, socket=sock, timeout=LONG, bootstrap=[far]
            )
            port = node.address.port
            sent = env.event()
            sock.on_send = lambda data, addr: sent.set()
            call = env.run(blocked_calls(node, far)[op])
            assert sent.wait(TIMEOUT), "the call sent nothing"
            assert not call.join(0), f"{op} returned before close(): {call.error!r}"
            start = time.monotonic()
            closing = env.run(node.close)
            assert closing.join() and closing.error is None
            assert call.join(), f"{op} still blocked after close()"
            assert call.finished_at is not None and call.finished_at - start < PROMPT
        finally:
            sock.close()
        expected = EXPECTED[op]
        if expected is None:
            assert call.error is None, repr(call.error)
        else:
            assert isinstance(call.error, expected), repr(call.error)
        after = env.alive()
        assert env.alive(port)["threads"] == []
        assert after == before
