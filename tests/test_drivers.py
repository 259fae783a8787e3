"""The thread and gevent drivers on real loopback sockets.

Only what real sockets, threads and greenlets show is tested here: delivery,
timer wake-ups, waiting, and that ``close()`` really stops everything. The
endpoints are toys defined below. Nothing sleeps to wait for something:
every wait is on an event or a future, with a timeout that only a broken
run reaches.
"""

from __future__ import annotations

import gc
import importlib
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperdht.datagram import SendOptions
from hyperdht.drivers import Driver, create_driver
from hyperdht.drivers.thread import ThreadDriver
from hyperdht.errors import ArgumentError, ClosedError
from hyperdht.future import Future

try:
    import gevent
    import gevent.socket
except ImportError:
    gevent = None

TIMEOUT = 5.0  # only a broken run waits this long
TIMER_STEP = 0.05
OVERSIZED = b"x" * 70000  # larger than any UDP datagram: sendto fails (EMSGSIZE)

needs_gevent = pytest.mark.skipif(gevent is None, reason="gevent is not installed")
#: "thread" runs on the shared hub thread; "thread-private" is the thread
#: driver with ``hub=False`` (a receiver and a timer thread of its own);
#: likewise "gevent" (the shared gevent hub) and "gevent-private".
KINDS = [
    "thread",
    "thread-private",
    pytest.param("gevent", marks=needs_gevent),
    pytest.param("gevent-private", marks=needs_gevent),
]


def new_driver(kind: str, **kwargs: Any) -> Driver:
    """``create_driver(kind, ...)``, or a driver with private threads or greenlets."""
    if kind == "thread-private":
        return ThreadDriver(hub=False, **kwargs)
    if kind == "gevent-private":
        from hyperdht.drivers.gevent import GeventDriver

        return GeventDriver(hub=False, **kwargs)
    return create_driver(kind, **kwargs)


# -- toy endpoints --------------------------------------------------------------


class ToyEndpoint:
    """An outbox, a settable timer, and a future per expected payload.

    The test touches it only under ``driver.locked()``, like a real core.
    """

    def __init__(self) -> None:
        self.outbox: list[tuple[bytes, Any]] = []
        self.deadline: float | None = None
        self.received: list[tuple[bytes, Any]] = []
        self.expected: dict[bytes, Future[tuple[bytes, Any]]] = {}

    def send(self, data: bytes, addr: Any) -> None:
        self.outbox.append((data, addr, None))

    def expect(self, data: bytes) -> Future[tuple[bytes, Any]]:
        future: Future[tuple[bytes, Any]] = Future()
        self.expected[data] = future
        return future

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        self.received.append((data, addr))
        self.on_datagram(data, addr)
        future = self.expected.pop(data, None)
        if future is not None:
            future.set_result((data, addr))

    def on_datagram(self, data: bytes, addr: Any) -> None:
        pass

    def datagrams_to_send(self) -> list[tuple[bytes, Any]]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        pass


class EchoEndpoint(ToyEndpoint):
    """Replies to every datagram; raises on b"boom"; closes its driver on
    b"close" (from inside the receiver)."""

    driver: Driver | None = None

    def __init__(self) -> None:
        super().__init__()
        #: Resolved once b"close" closed the driver (on a hub no task of
        #: the driver's own is left to join).
        self.closed_itself: Future[None] = Future()

    def on_datagram(self, data: bytes, addr: Any) -> None:
        if data == b"boom":
            raise RuntimeError("boom")
        if data == b"close" and self.driver is not None:
            self.driver.close()
            self.closed_itself.set_result(None)
            return
        self.send(data, addr)


class TimerEndpoint(ToyEndpoint):
    """Re-arms at now + TIMER_STEP on every due call, ``rounds`` times."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds
        self.calls: list[tuple[float, float]] = []  # (deadline, now)
        self.early: list[float] = []
        self.done: Future[None] = Future()

    def handle_timer(self, now: float) -> None:
        if self.deadline is None or now < self.deadline:
            self.early.append(now)
            return
        self.calls.append((self.deadline, now))
        if len(self.calls) < self.rounds:
            self.deadline = now + TIMER_STEP
        else:
            self.deadline = None
            self.done.set_result(None)


# -- helpers ----------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def make_driver(kind: str) -> Iterator[Callable[..., Driver]]:
    """``make_driver(endpoint, **create_driver_kwargs)``: a started driver,
    closed at teardown."""
    drivers: list[Driver] = []

    def make(endpoint: Any = None, **kwargs: Any) -> Driver:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        driver = new_driver(kind, **kwargs)
        drivers.append(driver)
        if endpoint is not None:
            if isinstance(endpoint, EchoEndpoint):
                endpoint.driver = driver
            driver.start(endpoint)
        return driver

    yield make
    for driver in drivers:
        driver.close()


def round_trip(client: Driver, endpoint: ToyEndpoint, to: Any, payload: bytes = b"ping") -> Any:
    """Send ``payload`` from ``client`` to ``to``; return the echo's sender."""
    with client.locked():
        future = endpoint.expect(payload)
        endpoint.send(payload, to)
    assert client.wait(future, TIMEOUT), f"no echo of {payload!r} within {TIMEOUT}s"
    return future.result()[1]


_TASK = re.compile(r"^hyperdht-(recv|timer|spawn)-(\d+)(_\d+)?$")


def driver_tasks(port: int) -> list[Any]:
    """The threads and greenlets (live or not) of the driver on ``port``."""
    tasks: list[Any] = threading.enumerate()
    if gevent is not None:
        tasks += [g for g in gc.get_objects() if isinstance(g, gevent.Greenlet)]
    return [t for t in tasks if (m := _TASK.match(t.name)) and int(m.group(2)) == port]


def live_tasks(port: int) -> list[str]:
    """Names of the live threads and greenlets of the driver on ``port``."""
    return [
        t.name
        for t in driver_tasks(port)
        if (not t.dead if gevent is not None and isinstance(t, gevent.Greenlet) else t.is_alive())
    ]


def join_tasks(port: int) -> None:
    """Wait (TIMEOUT) for every task of the driver on ``port`` to end."""
    for task in driver_tasks(port):
        task.join(TIMEOUT)


def in_background(kind: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``fn`` in a thread (or greenlet); return a function that joins
    it (TIMEOUT) and returns its result."""
    if kind.startswith("gevent"):
        glet = gevent.spawn(fn)

        def join_greenlet() -> Any:
            glet.join(TIMEOUT)
            assert glet.ready(), "background greenlet did not finish"
            return glet.get()

        return join_greenlet

    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()

    def join_thread() -> Any:
        thread.join(TIMEOUT)
        assert result, "background thread did not finish"
        return result[0]

    return join_thread


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# -- delivery ---------------------------------------------------------------------


def test_round_trip(make_driver: Callable[..., Driver]) -> None:
    server = make_driver(EchoEndpoint())
    client_ep = ToyEndpoint()
    client = make_driver(client_ep)
    assert server.address == ("127.0.0.1", server.address[1])
    sender = round_trip(client, client_ep, server.address)
    assert sender == server.address
    assert sender.host == "127.0.0.1"
    assert type(sender) is type(server.address)
    for i in range(20):
        round_trip(client, client_ep, server.address, b"n%d" % i)


@pytest.mark.skipif(not ipv6_loopback(), reason="::1 is not available")
def test_round_trip_ipv6(make_driver: Callable[..., Driver]) -> None:
    server = make_driver(EchoEndpoint(), host="::1", ipv6=True)
    client_ep = ToyEndpoint()
    client = make_driver(client_ep, host="::1", ipv6=True)
    assert tuple(server.address) == ("::1", server.address[1])
    sender = round_trip(client, client_ep, server.address)
    assert tuple(sender) == ("::1", server.address[1])  # (host, port), not the 4-tuple


def test_received_address_is_an_address_pair() -> None:
    from hyperdht.drivers.socket import received_address
    from hyperdht.ipencoding import Address

    for raw, want in [
        (("127.0.0.1", 4000), ("127.0.0.1", 4000)),
        (("::1", 5000, 0, 0), ("::1", 5000)),
        (("fe80::1", 6000, 0, 2), ("fe80::1", 6000)),
    ]:
        got = received_address(raw)
        assert type(got) is Address
        assert (got.host, got.port) == want == tuple(got)
        assert hash(got) == hash(Address(*want))


def test_per_datagram_ttl_is_applied_then_restored(make_driver: Callable[..., Driver]) -> None:
    """A datagram with SendOptions(ttl=...) is sent with that IP TTL (it
    still arrives over loopback, zero hops away); the socket's own TTL is
    the same before and after, so the next datagram goes out as usual."""
    server = make_driver(EchoEndpoint())
    client_ep = ToyEndpoint()
    client = make_driver(client_ep)
    sock = client.socket  # type: ignore[attr-defined]
    before = sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
    with client.locked():
        future = client_ep.expect(b"low")
        client_ep.outbox.append((b"low", server.address, SendOptions(ttl=2)))
    assert client.wait(future, TIMEOUT), "a low-TTL datagram did not cross loopback"
    assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == before
    assert round_trip(client, client_ep, server.address) == server.address


def test_send_options_validate_ttl() -> None:
    for bad in (0, 256, -1, True, 1.5):
        with pytest.raises(ArgumentError, match="ttl"):
            SendOptions(ttl=bad)  # type: ignore[arg-type]
    assert SendOptions(ttl=1).ttl == 1 and SendOptions().ttl is None


def test_queued_before_start_is_sent_on_start(make_driver: Callable[..., Driver]) -> None:
    server = make_driver(EchoEndpoint())
    client_ep = ToyEndpoint()
    future = client_ep.expect(b"early")
    client_ep.send(b"early", server.address)
    client = make_driver(client_ep)
    assert client.wait(future, TIMEOUT)


# -- timer ------------------------------------------------------------------------


class ParkingTimerEndpoint(TimerEndpoint):
    """Like TimerEndpoint, but its first due call re-arms an hour ahead and
    resolves ``parked``: from then on the timer is known to be asleep."""

    def __init__(self, rounds: int) -> None:
        super().__init__(rounds)
        self.parked: Future[None] = Future()

    def handle_timer(self, now: float) -> None:
        if self.parked.done():
            super().handle_timer(now)
        elif self.deadline is None or now < self.deadline:
            self.early.append(now)
        else:
            self.deadline = now + 3600
            self.parked.set_result(None)


def test_timer_wakes_early_and_rearms(make_driver: Callable[..., Driver]) -> None:
    endpoint = ParkingTimerEndpoint(rounds=3)
    driver = make_driver(endpoint)
    with driver.locked():
        endpoint.deadline = driver.now()
    assert driver.wait(endpoint.parked, TIMEOUT)
    # The timer sleeps towards an hour from now. Move the deadline earlier,
    # later (it must not fire at the stale one), and earlier again.
    with driver.locked():
        endpoint.deadline = driver.now() + TIMER_STEP
    with driver.locked():
        endpoint.deadline = driver.now() + 3600
    with driver.locked():
        endpoint.deadline = driver.now() + 2 * TIMER_STEP
    assert driver.wait(endpoint.done, TIMEOUT)
    assert endpoint.early == []
    assert len(endpoint.calls) == 3
    for deadline, now in endpoint.calls:
        assert now >= deadline


def test_handle_timer_raising_does_not_kill_the_timer(make_driver: Callable[..., Driver]) -> None:
    class Flaky(TimerEndpoint):
        def handle_timer(self, now: float) -> None:
            if not self.calls and not self.early:
                self.early.append(-1.0)  # marks the one failure
                raise RuntimeError("first call fails")
            super().handle_timer(now)

    endpoint = Flaky(rounds=2)
    driver = make_driver(endpoint)
    with driver.locked():
        endpoint.deadline = driver.now()
    assert driver.wait(endpoint.done, TIMEOUT)
    assert driver.endpoint_errors == 1  # type: ignore[attr-defined]


# -- waiting ----------------------------------------------------------------------


def test_wait(make_driver: Callable[..., Driver]) -> None:
    driver = make_driver(ToyEndpoint())
    pending: Future[int] = Future()
    assert driver.wait(pending, 0.05) is False
    done: Future[int] = Future()
    done.set_result(1)
    assert driver.wait(done, 0.05) is True
    event = driver.new_event()
    assert not event.is_set()
    assert event.wait(0.01) is False
    event.set()
    assert event.wait(TIMEOUT) is True


def test_wait_resolved_from_another_thread_of_control(
    kind: str, make_driver: Callable[..., Driver]
) -> None:
    driver = make_driver(ToyEndpoint())
    future: Future[int] = Future()

    def resolve() -> None:
        with driver.locked():
            future.set_result(7)

    driver.spawn(resolve)
    assert driver.wait(future, TIMEOUT) is True
    assert future.result() == 7


def test_close_releases_waiters(kind: str, make_driver: Callable[..., Driver]) -> None:
    driver = make_driver(ToyEndpoint())
    registered = driver.new_event()

    class Watched(Future[int]):
        def add_done_callback(self, fn: Callable[[Future[int]], None]) -> None:
            super().add_done_callback(fn)
            registered.set()  # the waiter is committed to waiting now

    never = Watched()
    join = in_background(kind, lambda: driver.wait(never, None))
    assert registered.wait(TIMEOUT)
    driver.close()
    assert join() is False


# -- spawn ------------------------------------------------------------------------


def test_spawn_runs_and_logs_exceptions(
    make_driver: Callable[..., Driver], caplog: pytest.LogCaptureFixture
) -> None:
    driver = make_driver(ToyEndpoint())
    ran = driver.new_event()

    def fail() -> None:
        raise ValueError("spawned failure")

    driver.spawn(fail)
    driver.spawn(ran.set)
    assert ran.wait(TIMEOUT)
    driver.close()  # joins the pool/greenlets, so the failure is logged by now
    assert any("spawned" in r.getMessage() and r.exc_info for r in caplog.records)


# -- errors -----------------------------------------------------------------------


class OversizedReplyEndpoint(EchoEndpoint):
    """Answers every datagram with one that cannot be sent, then the echo."""

    def on_datagram(self, data: bytes, addr: Any) -> None:
        self.send(OVERSIZED, addr)
        super().on_datagram(data, addr)


def test_send_errors_are_counted_not_raised(make_driver: Callable[..., Driver]) -> None:
    server = make_driver(OversizedReplyEndpoint())
    client_ep = ToyEndpoint()
    client = make_driver(client_ep)
    with client.locked():
        client_ep.send(OVERSIZED, server.address)  # EMSGSIZE
        client_ep.send(b"x", ("127.0.0.1", 70000))  # port out of range
    assert client.send_errors == 2  # type: ignore[attr-defined]
    round_trip(client, client_ep, server.address)  # neither driver died
    round_trip(client, client_ep, server.address, b"again")
    with server.lock:  # the echo can arrive before the server's flush returns
        assert server.send_errors == 2  # type: ignore[attr-defined]


def test_endpoint_exception_does_not_kill_receiver(
    make_driver: Callable[..., Driver], caplog: pytest.LogCaptureFixture
) -> None:
    server = make_driver(EchoEndpoint())
    client_ep = ToyEndpoint()
    client = make_driver(client_ep)
    with caplog.at_level(logging.ERROR, logger="hyperdht.drivers"):
        with client.locked():
            client_ep.send(b"boom", server.address)
        round_trip(client, client_ep, server.address)  # sent after b"boom"
    assert server.endpoint_errors == 1  # type: ignore[attr-defined]
    assert any("receive_datagram" in r.getMessage() for r in caplog.records)


def test_bind_to_port_in_use_raises_oserror(kind: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"127\.0\.0\.1:{port}"):
            new_driver(kind, host="127.0.0.1", port=port)


def test_start_twice_and_after_close(make_driver: Callable[..., Driver]) -> None:
    driver = make_driver(ToyEndpoint())
    with pytest.raises(RuntimeError):
        driver.start(ToyEndpoint())
    driver.close()
    fresh = make_driver()
    fresh.close()
    with pytest.raises(ClosedError):
        fresh.start(ToyEndpoint())


# -- close ------------------------------------------------------------------------


def test_close_stops_everything_fast(kind: str, make_driver: Callable[..., Driver]) -> None:
    server = make_driver(EchoEndpoint())
    client_ep = TimerEndpoint(rounds=1000)
    client = make_driver(client_ep)
    round_trip(client, client_ep, server.address)
    with client.locked():
        client_ep.deadline = client.now()  # keep the timer busy
    ran = client.new_event()
    client.spawn(ran.set)
    assert ran.wait(TIMEOUT)
    ports = [server.address[1], client.address[1]]
    if kind.endswith("-private"):  # on a hub, a driver has no receiver/timer of its own
        assert all(live_tasks(port) for port in ports)

    for driver in (server, client):
        started = time.monotonic()
        driver.close()
        assert time.monotonic() - started < 1.0  # a sanity bound, not a benchmark
        assert live_tasks(driver.address[1]) == []
        assert driver.socket.fileno() == -1  # type: ignore[attr-defined]
    for port in ports:
        assert live_tasks(port) == []
    server.close()
    client.close()
    client.flush()  # a no-op now


def test_close_without_start(kind: str) -> None:
    driver = new_driver(kind, host="127.0.0.1", port=0)
    driver.close()
    driver.close()
    assert driver.socket.fileno() == -1  # type: ignore[attr-defined]


def test_close_from_the_receiver(make_driver: Callable[..., Driver]) -> None:
    server_ep = EchoEndpoint()
    server = make_driver(server_ep)
    client_ep = ToyEndpoint()
    client = make_driver(client_ep)
    round_trip(client, client_ep, server.address)
    with client.locked():
        client_ep.send(b"close", server.address)
    assert client.wait(server_ep.closed_itself, TIMEOUT)
    port = server.address[1]
    join_tasks(port)
    assert live_tasks(port) == []
    assert server.socket.fileno() == -1  # type: ignore[attr-defined]


def test_close_with_the_lock_held(make_driver: Callable[..., Driver]) -> None:
    server = make_driver(EchoEndpoint())
    client_ep = ToyEndpoint()
    client = make_driver(client_ep)
    round_trip(client, client_ep, server.address)
    port = server.address[1]
    with server.lock:  # must not deadlock on a receiver waiting for the lock
        server.close()
    join_tasks(port)
    assert live_tasks(port) == []


@needs_gevent
def test_gevent_driver_uses_a_caller_gevent_socket() -> None:
    with gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        server = create_driver("gevent", host="127.0.0.1", port=0)
        client = create_driver("gevent", host="127.0.0.1", port=0, socket=sock)
        try:
            assert client.socket is sock  # type: ignore[attr-defined]
            server.start(EchoEndpoint())
            client_ep = ToyEndpoint()
            client.start(client_ep)
            assert round_trip(client, client_ep, server.address) == server.address
        finally:
            client.close()
            server.close()
        assert sock.fileno() != -1


def test_caller_socket_is_used_and_left_open(kind: str, make_driver: Callable[..., Driver]) -> None:
    server = make_driver(EchoEndpoint())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        client_ep = ToyEndpoint()
        client = make_driver(client_ep, socket=sock)
        assert client.address == sock.getsockname()
        assert round_trip(client, client_ep, server.address) == server.address
        started = time.monotonic()
        client.close()
        assert time.monotonic() - started < 1.0
        assert sock.fileno() != -1
        assert sock.gettimeout() is None  # blocking again, as it was given
        assert live_tasks(sock.getsockname()[1]) == []


class NoFileno:
    """A socket-like without fileno(): the thread driver polls it."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.closed = False

    def sendto(self, data: bytes, address: Any, /) -> int:
        n: int = self.sock.sendto(data, address)
        return n

    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]:
        result: tuple[bytes, Any] = self.sock.recvfrom(bufsize)
        return result

    def getsockname(self) -> Any:
        return self.sock.getsockname()

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        timeout: float | None = self.sock.gettimeout()
        return timeout

    def close(self) -> None:
        self.closed = True


def test_caller_socket_without_fileno(kind: str, make_driver: Callable[..., Driver]) -> None:
    server = make_driver(EchoEndpoint())
    # Under gevent such an object must cooperate: wrap a gevent socket.
    module = gevent.socket if kind.startswith("gevent") else socket
    with module.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.bind(("127.0.0.1", 0))
        like = NoFileno(raw)
        client_ep = ToyEndpoint()
        client = make_driver(client_ep, socket=like)
        round_trip(client, client_ep, server.address)
        started = time.monotonic()
        client.close()
        assert time.monotonic() - started < 1.0
        assert not like.closed
        assert live_tasks(raw.getsockname()[1]) == []


# -- environment ------------------------------------------------------------------

_MONKEY_PATCHED = """
from gevent import monkey

monkey.patch_all()

import sys
import threading
import time

sys.path.insert(0, {tests!r})
from test_drivers import EchoEndpoint, TimerEndpoint, round_trip, TIMEOUT

from hyperdht.drivers import create_driver

server = create_driver("thread", host="127.0.0.1", port=0)
server.start(EchoEndpoint())
client_ep = TimerEndpoint(rounds=2)
client = create_driver("thread", host="127.0.0.1", port=0)
client.start(client_ep)
assert round_trip(client, client_ep, server.address) == server.address
with client.locked():
    client_ep.deadline = client.now() + 0.05
assert client.wait(client_ep.done, TIMEOUT)
ran = client.new_event()
client.spawn(ran.set)
assert ran.wait(TIMEOUT)
started = time.monotonic()
client.close()
server.close()
elapsed = time.monotonic() - started
left = [t.name for t in threading.enumerate() if t.name.startswith("hyperdht-")]
assert not left, left
assert server.socket.fileno() == -1
assert elapsed < 1.0, elapsed
print("OK")
"""


@needs_gevent
def test_thread_driver_under_gevent_monkey_patching() -> None:
    script = _MONKEY_PATCHED.format(tests=str(Path(__file__).parent))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("OK"), done.stdout


def test_gevent_driver_without_gevent_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "gevent", None)
    monkeypatch.delitem(sys.modules, "hyperdht.drivers.gevent", raising=False)
    with pytest.raises(ImportError, match=r"pip install hyperdht\[gevent\]"):
        importlib.import_module("hyperdht.drivers.gevent")
