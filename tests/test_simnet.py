"""The in-memory network (hyperdht.testing), driven by toy endpoints.

Everything runs on the virtual clock: no sleeps, no wall-clock time, and
exact float comparisons are meaningful because every time is a sum the
simulator computes the same way the test does.
"""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdht.errors import ClosedError
from hyperdht.future import Future
from hyperdht.ipencoding import Address
from hyperdht.testing import NAT, Host, Network, SimDriver, TraceEvent

Addr = tuple[str, int]


# -- toy endpoints --------------------------------------------------------------


class Sink:
    """Records what it receives; sends what the test queues."""

    def __init__(self) -> None:
        self.out: list[tuple[bytes, Addr]] = []
        self.received: list[tuple[bytes, Address, float]] = []
        self.deadline: float | None = None

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.received.append((data, addr, now))

    def datagrams_to_send(self) -> list[tuple[bytes, Any]]:
        out, self.out = self.out, []
        return out

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        self.deadline = None

    @property
    def payloads(self) -> list[bytes]:
        return [data for data, _, _ in self.received]


class Echo(Sink):
    """Sends every datagram back to where it came from."""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        super().receive_datagram(data, addr, now)
        self.out.append((data, addr, None))


class Ticker(Sink):
    """A timer endpoint: fires at the times in ``schedule``, in turn."""

    def __init__(self, schedule: list[float]) -> None:
        super().__init__()
        self.schedule = list(schedule)
        self.fired: list[float] = []
        self.deadline = self.schedule.pop(0) if self.schedule else None

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.deadline = self.schedule.pop(0) if self.schedule else None


class Pinger(Sink):
    """Resolves a Future with (data, addr, now) when a reply arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: Future[tuple[bytes, Address, float]] | None = None

    def ping(self, driver: SimDriver, addr: Addr, data: bytes = b"ping") -> Future[Any]:
        future: Future[tuple[bytes, Address, float]] = Future()
        with driver.locked():
            self.pending = future
            self.out.append((data, addr, None))
        return future

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        super().receive_datagram(data, addr, now)
        if self.pending is not None and not self.pending.done():
            self.pending.set_result((data, addr, now))


def node(host: Host, endpoint: Sink, port: int = 0) -> SimDriver:
    driver = host.create_driver(port=port)
    driver.start(endpoint)
    return driver


def send(driver: SimDriver, data: bytes, addr: Addr) -> None:
    endpoint = driver.endpoint
    assert isinstance(endpoint, Sink)
    with driver.locked():
        endpoint.out.append((data, addr, None))


# -- delivery ------------------------------------------------------------------


def test_delivery_takes_exactly_the_latency() -> None:
    net = Network(latency=0.01)
    a, b = Sink(), Sink()
    da = node(net.host("198.18.0.1"), a)
    db = node(net.host("198.18.0.2"), b, port=4000)
    net.run_for(1.0)
    start = net.now
    send(da, b"hi", ("198.18.0.2", 4000))
    assert b.received == []  # nothing is delivered synchronously
    net.run()
    assert b.received == [(b"hi", da.address, start + 0.01)]
    src = b.received[0][1]
    assert isinstance(src, Address) and src == ("198.18.0.1", da.address.port)
    assert db.address == ("198.18.0.2", 4000)
    assert net.now == start + 0.01
    assert net.stats.sent == net.stats.delivered == 1


def test_same_path_datagrams_arrive_in_order() -> None:
    net = Network(latency=0.02)
    sink = Sink()
    da = node(net.host(), Sink())
    db = node(net.host(), sink)
    for i in range(100):
        send(da, b"%d" % i, db.address)
        net.run_for(0.001)
    net.run()
    assert sink.payloads == [b"%d" % i for i in range(100)]


def test_echo_round_trip() -> None:
    net = Network(latency=0.005)
    pinger = Pinger()
    da = node(net.host(), pinger)
    db = node(net.host(), Echo())
    future = pinger.ping(da, db.address)
    assert da.wait(future, 1.0)
    assert future.result() == (b"ping", db.address, 0.01)


def test_loss_one_drops_everything() -> None:
    net = Network(loss=1.0)
    sink = Sink()
    da = node(net.host(), Sink())
    db = node(net.host(), sink)
    for _ in range(50):
        send(da, b"x", db.address)
    net.run()
    assert sink.received == []
    stats = net.stats
    assert (stats.sent, stats.delivered, stats.dropped_loss, stats.dropped) == (50, 0, 50, 50)


def test_partial_loss_is_roughly_the_rate() -> None:
    net = Network(seed=3, loss=0.3)
    sink = Sink()
    da = node(net.host(), Sink())
    db = node(net.host(), sink)
    for _ in range(2000):
        send(da, b"x", db.address)
    net.run()
    assert net.stats.dropped_loss + len(sink.received) == 2000
    assert 500 < net.stats.dropped_loss < 700


def test_duplicate_one_delivers_twice() -> None:
    net = Network(duplicate=1.0)
    sink = Sink()
    da = node(net.host(), Sink())
    db = node(net.host(), sink)
    send(da, b"a", db.address)
    send(da, b"b", db.address)
    net.run()
    assert sink.payloads == [b"a", b"a", b"b", b"b"]
    stats = net.stats
    assert (stats.sent, stats.duplicated, stats.delivered) == (2, 2, 4)


def test_reorder_holds_some_datagrams_back() -> None:
    net = Network(seed=7, latency=0.01, reorder=0.3, reorder_delay=0.05)
    sink = Sink()
    da = node(net.host(), Sink())
    db = node(net.host(), sink)
    sent = [b"%03d" % i for i in range(200)]
    for data in sent:
        send(da, data, db.address)
        net.run_for(0.001)
    net.run()
    got = sink.payloads
    assert sorted(got) == sent
    assert got != sent
    delays = sorted({round(now - int(d) * 0.001, 9) for d, _, now in sink.received})
    assert delays == [0.01, 0.06]


def test_jitter_stays_within_bounds_and_reorders() -> None:
    net = Network(seed=5, latency=0.01, jitter=0.02)
    sink = Sink()
    da = node(net.host(), Sink())
    db = node(net.host(), sink)
    for i in range(100):
        send(da, b"%d" % i, db.address)
    net.run()
    assert all(0.01 <= now < 0.03 for _, _, now in sink.received)
    assert sink.payloads != [b"%d" % i for i in range(100)]


def test_link_properties_can_change_mid_run() -> None:
    net = Network(latency=0.01)
    sink = Sink()
    da = node(net.host(), Sink())
    db = node(net.host(), sink)
    net.loss = 1.0
    send(da, b"lost", db.address)
    net.run()
    net.loss, net.latency = 0.0, 0.5
    send(da, b"slow", db.address)
    net.run()
    assert sink.received == [(b"slow", da.address, 0.5)]  # the loss took no time
    with pytest.raises(ValueError, match="loss"):
        net.loss = 1.5
    with pytest.raises(ValueError, match="latency"):
        Network(latency=-1)


def test_no_listener_is_dropped_and_counted() -> None:
    net = Network()
    da = node(net.host("198.18.0.1"), Sink())
    net.host("198.18.0.2")
    send(da, b"x", ("198.18.0.2", 9))  # host exists, port not bound
    send(da, b"x", ("192.0.2.1", 9))  # nobody has that IP
    net.run()
    assert net.stats.dropped_no_listener == 2


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    loss=st.floats(0, 1),
    duplicate=st.floats(0, 1),
    reorder=st.floats(0, 1),
    jitter=st.floats(0, 0.1),
)
def test_every_datagram_is_accounted_for(
    seed: int, loss: float, duplicate: float, reorder: float, jitter: float
) -> None:
    net = Network(seed=seed, loss=loss, duplicate=duplicate, reorder=reorder, jitter=jitter)
    sink = Sink()
    da = node(net.host(), Sink())
    db = node(net.host(), sink)
    for i in range(30):
        send(da, b"%d" % i, db.address if i % 5 else ("192.0.2.1", 1))
        net.run_for(0.003)
    net.run()
    stats = net.stats
    assert stats.sent == 30
    assert stats.sent + stats.duplicated == stats.delivered + stats.dropped
    assert stats.delivered == len(sink.received)


def scenario(seed: int) -> list[TraceEvent]:
    trace: list[TraceEvent] = []
    net = Network(
        seed=seed,
        latency=0.01,
        jitter=0.01,
        loss=0.1,
        duplicate=0.1,
        reorder=0.1,
        trace=trace.append,
    )
    nat = net.nat(filtering="address-restricted")
    pingers = [Pinger() for _ in range(5)]
    drivers = [node(net.host(nat=nat if i % 2 else None), p) for i, p in enumerate(pingers)]
    echo = node(net.host(), Echo())
    for round_ in range(20):
        for driver, pinger in zip(drivers, pingers, strict=True):
            pinger.ping(driver, echo.address, b"%d" % round_)
        net.run_for(0.005)
    net.run()
    return trace


def test_same_seed_same_trace() -> None:
    first = scenario(42)
    assert {e.kind for e in first} == {"send", "deliver", "drop"}
    assert first == scenario(42)
    assert first != scenario(43)


# -- timers --------------------------------------------------------------------


def test_timers_fire_at_their_virtual_times() -> None:
    net = Network()
    ticker = Ticker([0.5, 1.25, 1.25, 3.0])
    node(net.host(), ticker)
    net.run()
    assert ticker.fired == [0.5, 1.25, 1.25, 3.0]
    assert net.now == 3.0


def test_timer_rearms_when_the_deadline_moves_earlier() -> None:
    net = Network(latency=0.1)
    ticker = Ticker([10.0])
    dt = node(net.host(), ticker)
    net.run_for(1.0)
    with dt.locked():
        ticker.deadline = 5.0
    net.run_for(7.0)
    assert ticker.fired == [5.0]


def test_timer_moved_later_or_cancelled_does_not_fire_early() -> None:
    net = Network()
    later, cancelled = Ticker([1.0]), Ticker([1.0])
    dl = node(net.host(), later)
    dc = node(net.host(), cancelled)
    with dl.locked():
        later.deadline = 2.0
    with dc.locked():
        cancelled.deadline = None
    net.run()
    assert later.fired == [2.0]
    assert cancelled.fired == []


def test_a_datagram_can_move_the_timer() -> None:
    class Delayed(Sink):
        """Answers each datagram 0.25 s later, from its timer."""

        def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
            super().receive_datagram(data, addr, now)
            self.reply_to = addr
            self.deadline = now + 0.25

        def handle_timer(self, now: float) -> None:
            self.out.append((b"late", self.reply_to, None))
            self.deadline = None

    net = Network(latency=0.01)
    pinger = Pinger()
    da = node(net.host(), pinger)
    db = node(net.host(), Delayed())
    future = pinger.ping(da, db.address)
    assert da.wait(future, 1.0)
    assert future.result()[2] == 0.01 + 0.25 + 0.01


def test_a_past_deadline_fires_at_once() -> None:
    net = Network()
    net.run_for(2.0)
    ticker = Ticker([1.0])
    node(net.host(), ticker)
    net.run()
    assert ticker.fired == [2.0]


# -- waiting -------------------------------------------------------------------


def test_wait_true_when_the_future_resolves_in_time() -> None:
    net = Network(latency=0.05)
    pinger = Pinger()
    da = node(net.host(), pinger)
    db = node(net.host(), Echo())
    ticker = Ticker([5.0])
    node(net.host(), ticker)
    future = pinger.ping(da, db.address)
    assert da.wait(future, 2.0) is True
    assert net.now == 0.1  # stopped at the reply, not at the deadline
    assert ticker.fired == []
    assert da.wait(future, 2.0) is True  # already done: no time passes
    assert net.now == 0.1


def test_wait_false_at_exactly_the_deadline() -> None:
    net = Network(latency=0.05)
    pinger = Pinger()
    da = node(net.host(), pinger)
    node(net.host(), Sink(), port=7)  # never answers
    ticker = Ticker([0.5, 1.5, 2.5])
    node(net.host(), ticker)
    net.run_for(0.25)
    future = pinger.ping(da, (net.hosts[1].ip, 7))
    assert da.wait(future, 2.0) is False
    assert net.now == 2.25
    assert ticker.fired == [0.5, 1.5]  # the 2.5 s timer is not run yet
    future2 = pinger.ping(da, ("192.0.2.1", 1))
    assert da.wait(future2, 0) is False  # polling does not advance time
    assert net.now == 2.25


def test_wait_without_timeout_on_an_idle_network_is_a_deadlock() -> None:
    net = Network()
    driver = node(net.host(), Sink())
    with pytest.raises(RuntimeError, match="deadlock"):
        driver.wait(Future(), None)


def test_wait_from_inside_the_loop_raises() -> None:
    net = Network()
    driver = node(net.host(), Sink())
    errors: list[BaseException] = []

    def blocking() -> None:
        try:
            driver.wait(Future(), 1.0)
        except RuntimeError as exc:
            errors.append(exc)
        assert driver.wait(Future(), 0) is False  # a poll is fine
        done: Future[int] = Future()
        done.set_result(1)
        assert driver.wait(done, 1.0) is True

    driver.spawn(blocking)
    net.run()
    assert len(errors) == 1 and "already running" in str(errors[0])
    net.call_later(0.1, net.run)
    with pytest.raises(RuntimeError, match="already running"):
        net.run()
    net.run()  # the loop is usable again


def test_new_event() -> None:
    net = Network()
    driver = node(net.host(), Sink())
    event = driver.new_event()
    net.call_later(1.5, event.set)
    assert not event.is_set()
    assert event.wait(1.0) is False
    assert net.now == 1.0
    assert event.wait(1.0) is True
    assert net.now == 1.5
    assert event.wait() is True
    event.clear()
    assert event.wait(0.5) is False
    assert net.now == 2.0


def test_wait_returns_when_the_driver_closes() -> None:
    net = Network()
    driver = node(net.host(), Sink())
    net.call_later(0.3, driver.close)
    assert driver.wait(Future(), 10.0) is False
    assert net.now == 0.3
    assert driver.wait(Future(), 10.0) is False
    assert net.now == 0.3


def test_spawn_runs_later_at_the_same_virtual_time() -> None:
    net = Network()
    driver = node(net.host(), Sink())
    net.run_for(1.0)
    ran: list[tuple[str, float]] = []
    driver.spawn(lambda tag: ran.append((tag, net.now)), "a")
    assert ran == []
    net.run()
    assert ran == [("a", 1.0)]
    driver.spawn(ran.append, ("b", 0.0))
    driver.close()
    net.run()
    assert ran == [("a", 1.0)]


def test_run_step_and_scheduled_calls() -> None:
    net = Network()
    log: list[tuple[str, float]] = []
    net.call_at(2.0, lambda: log.append(("at", net.now)))
    call = net.call_later(1.0, lambda: log.append(("cancelled", net.now)))
    net.call_later(3.0, lambda: log.append(("later", net.now)))
    call.cancel()
    assert net.step() and net.now == 1.0 and log == []
    assert net.run(until=2.5) == 1
    assert net.now == 2.5 and log == [("at", 2.0)]
    assert net.run_until(lambda: len(log) == 2, timeout=10.0)
    assert net.now == 3.0
    assert not net.step()
    assert net.run_until(lambda: False) is False
    assert net.run_until(lambda: False, timeout=4.0) is False
    assert net.now == 7.0
    with pytest.raises(ValueError, match="until"):
        net.run(until=1.0)
    assert net.events_processed == 3


def test_an_endpoint_exception_propagates_and_the_loop_resumes() -> None:
    class Fragile(Sink):
        def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
            if data == b"boom":
                raise ValueError("boom")
            super().receive_datagram(data, addr, now)

    net = Network()
    fragile = Fragile()
    da = node(net.host(), Sink())
    db = node(net.host(), fragile)
    send(da, b"boom", db.address)
    send(da, b"ok", db.address)
    with pytest.raises(ValueError, match="boom"):
        net.run()
    net.run()
    assert fragile.payloads == [b"ok"]


# -- binding and closing ---------------------------------------------------------


def test_close_unbinds_the_port_and_stops_the_timer() -> None:
    net = Network(latency=0.01)
    host = net.host()
    ticker = Ticker([1.0])
    dt = node(host, ticker, port=5000)
    da = node(net.host(), Sink())
    assert host.ports == [5000]
    send(da, b"in flight", dt.address)
    dt.close()
    dt.close()  # idempotent
    assert dt.closed and host.ports == []
    net.run()
    assert ticker.fired == [] and ticker.received == []
    assert net.stats.dropped_no_listener == 1
    send(dt, b"after close", da.address)  # flush on a closed driver is a no-op
    assert net.stats.sent == 1
    with pytest.raises(ClosedError):
        dt.start(Sink())
    sink = Sink()
    node(host, sink, port=5000)  # the port is free again
    send(da, b"again", (host.ip, 5000))
    net.run()
    assert sink.payloads == [b"again"]


def test_bind_rules() -> None:
    net = Network()
    host = net.host("198.18.0.9")
    first = host.create_driver(port=0)
    second = host.create_driver(host="198.18.0.9", port=0)
    assert first.address.port != second.address.port
    assert first.address.host == "198.18.0.9"
    host.create_driver(port=6000)
    with pytest.raises(OSError) as info:
        host.create_driver(port=6000)
    assert info.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as info:
        host.create_driver(host="198.18.0.10", port=0)
    assert info.value.errno == errno.EADDRNOTAVAIL
    with pytest.raises(OSError) as info:
        host.create_driver(ipv6=True)
    assert info.value.errno == errno.EAFNOSUPPORT
    with pytest.raises(ValueError, match="socket"):
        host.create_driver(socket=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already in use"):
        net.host("198.18.0.9")
    with pytest.raises(ValueError, match="not an IP"):
        net.host("nowhere")
    v6 = net.host("2001:db8::1").create_driver(host="::", port=1, ipv6=True)
    assert v6.address == ("2001:db8::1", 1)


def test_datagrams_before_start_are_queued() -> None:
    net = Network()
    da = node(net.host(), Sink())
    late = net.host().create_driver(port=9)
    send(da, b"early", late.address)
    net.run()
    sink = Sink()
    late.start(sink)
    assert sink.payloads == [b"early"]
    assert net.stats.delivered == 1
    with pytest.raises(RuntimeError, match="already started"):
        late.start(Sink())


def test_host_is_a_backend() -> None:
    from hyperdht.drivers import create_driver

    net = Network()
    driver = create_driver(net.host("198.18.0.3"), host="0.0.0.0", port=0)
    assert isinstance(driver, SimDriver)
    assert driver.address.host == "198.18.0.3"
    assert driver.now() == net.now


# -- NAT -------------------------------------------------------------------------


def natted(net: Network, nat: NAT, ip: str | None = None) -> tuple[SimDriver, Pinger]:
    pinger = Pinger()
    return node(net.host(ip, nat=nat), pinger, port=1000), pinger


def test_nat_blocks_inbound_until_the_inside_sends() -> None:
    net = Network()
    nat = net.nat("203.0.113.1")
    inside, in_ep = natted(net, nat, "10.0.0.2")
    srv_ep = Echo()
    server = node(net.host("198.18.0.1"), srv_ep, port=80)

    future = in_ep.ping(inside, server.address)
    assert inside.wait(future, 1.0)
    public = srv_ep.received[0][1]
    assert public.host == "203.0.113.1" and public != inside.address
    assert future.result()[1] == server.address  # the reply got in

    outsider = node(net.host("198.18.0.2"), Sink())
    send(outsider, b"unsolicited", public)
    send(outsider, b"private", inside.address)  # not routable from outside
    net.run()
    assert in_ep.payloads == [b"ping"]
    assert net.stats.dropped_nat_filtered == 1
    assert net.stats.dropped_no_listener == 1
    assert nat.mappings()[0].internal == inside.address
    assert nat.mappings()[0].public == public


@pytest.mark.parametrize(
    ("filtering", "same_ip_other_port", "other_ip"),
    [
        ("port-restricted", False, False),
        ("address-restricted", True, False),
        ("full-cone", True, True),
    ],
)
def test_nat_filtering(filtering: Any, same_ip_other_port: bool, other_ip: bool) -> None:
    net = Network()
    nat = net.nat("203.0.113.1", filtering=filtering)
    inside, in_ep = natted(net, nat)
    server_host = net.host("198.18.0.1")
    server_ep = Sink()
    server = node(server_host, server_ep, port=80)
    same_ip = node(server_host, Sink(), port=81)
    elsewhere = node(net.host("198.18.0.2"), Sink(), port=80)

    send(inside, b"hello", server.address)
    net.run()
    public = server_ep.received[0][1]
    send(server, b"from-server", public)
    send(same_ip, b"from-same-ip", public)
    send(elsewhere, b"from-elsewhere", public)
    net.run()
    expected = [b"from-server"]
    expected += [b"from-same-ip"] if same_ip_other_port else []
    expected += [b"from-elsewhere"] if other_ip else []
    assert in_ep.payloads == expected
    assert net.stats.dropped_nat_filtered == 3 - len(expected)


def test_endpoint_independent_mapping_keeps_one_public_port() -> None:
    net = Network()
    nat = net.nat("203.0.113.1")
    inside, _ = natted(net, nat)
    sinks = [Sink() for _ in range(3)]
    servers = [node(net.host(), s, port=80) for s in sinks]
    for server in servers:
        send(inside, b"x", server.address)
    net.run()
    assert len({s.received[0][1] for s in sinks}) == 1


def test_symmetric_mapping_gives_a_port_per_destination() -> None:
    net = Network()
    nat = net.nat("203.0.113.1", mapping="symmetric")
    inside, _ = natted(net, nat)
    sinks = [Sink() for _ in range(3)]
    host = net.host()
    servers = [node(host, sinks[0], port=80), node(host, sinks[1], port=81)]
    servers.append(node(net.host(), sinks[2], port=80))
    for server in servers:
        send(inside, b"x", server.address)
        send(inside, b"y", server.address)
    net.run()
    seen = [{src for _, src, _ in s.received} for s in sinks]
    assert all(len(srcs) == 1 for srcs in seen)  # stable per destination
    ports = {next(iter(srcs)).port for srcs in seen}
    assert len(ports) == 3
    assert len(nat.mappings()) == 3


def test_address_dependent_mapping_gives_a_port_per_destination_ip() -> None:
    net = Network()
    nat = net.nat("203.0.113.1", mapping="address-dependent")
    inside, _ = natted(net, nat)
    host = net.host()
    a, b, c = Sink(), Sink(), Sink()
    for server in (node(host, a, port=80), node(host, b, port=81), node(net.host(), c)):
        send(inside, b"x", server.address)
    net.run()
    assert a.received[0][1] == b.received[0][1] != c.received[0][1]


def rendezvous(
    net: Network, nat_a: NAT, nat_b: NAT
) -> tuple[SimDriver, Pinger, SimDriver, Pinger, Addr, Addr]:
    """A and B (each behind its NAT) register with a public server S, which
    tells each the other's public address: the hole-punching set-up."""
    da, a = natted(net, nat_a)
    db, b = natted(net, nat_b)
    server_ep = Sink()
    server = node(net.host("198.18.0.100"), server_ep, port=49737)
    send(da, b"register", server.address)
    send(db, b"register", server.address)
    net.run()
    seen = {data_src[1].host: data_src[1] for data_src in server_ep.received}
    return da, a, db, b, seen[nat_a.public_ip], seen[nat_b.public_ip]


def test_hole_punching_through_two_cone_nats() -> None:
    net = Network(latency=0.02)
    da, a, db, b, a_public, b_public = rendezvous(
        net, net.nat("203.0.113.1"), net.nat("203.0.113.2")
    )
    send(da, b"punch", b_public)  # dropped by B's NAT, but opens A's
    net.run()
    assert b.received == [] and net.stats.dropped_nat_filtered == 1
    send(db, b"through", a_public)  # gets in, and opens B's
    net.run()
    assert a.payloads == [b"through"]
    send(da, b"hello", b_public)
    net.run()
    assert b.payloads == [b"hello"]


def test_a_third_party_can_reuse_a_learnt_mapping_once_punched() -> None:
    net = Network()
    nat = net.nat("203.0.113.1")
    inside, in_ep = natted(net, nat)
    b_ep, c_ep = Echo(), Sink()
    b = node(net.host("198.18.0.2"), b_ep, port=80)
    c = node(net.host("198.18.0.3"), c_ep, port=80)
    send(inside, b"hi B", b.address)  # A sends to B first...
    net.run()
    learnt = b_ep.received[0][1]  # ...B learns A's mapping and tells C
    assert in_ep.payloads == [b"hi B"]  # B's echo got in
    send(c, b"C before", learnt)
    net.run()
    assert in_ep.payloads == [b"hi B"]
    send(inside, b"punch", c.address)  # A punches towards C
    send(c, b"C after", learnt)
    net.run()
    assert in_ep.payloads == [b"hi B", b"C after"]
    assert c_ep.received[0][1] == learnt  # same public port for C as for B


def test_hole_punching_fails_through_a_symmetric_nat() -> None:
    net = Network()
    da, a, db, b, a_public, b_public = rendezvous(
        net, net.nat("203.0.113.1", mapping="symmetric"), net.nat("203.0.113.2")
    )
    for _ in range(3):
        send(da, b"punch", b_public)
        send(db, b"punch", a_public)
        net.run()
    assert a.received == []  # B aims at the port A used for the server
    assert b.received == []  # A's punches come from a new port each time
    assert net.stats.dropped_nat_filtered == 6


def test_mappings_expire_after_the_idle_timeout() -> None:
    net = Network(latency=0.01)
    nat = net.nat("203.0.113.1", timeout=30.0)
    inside, in_ep = natted(net, nat)
    srv_ep = Sink()
    server = node(net.host(), srv_ep, port=80)
    send(inside, b"1", server.address)
    net.run()
    first = srv_ep.received[0][1]
    net.run_for(20.0)
    send(server, b"still open", first)
    net.run()
    net.run_for(20.0)  # 40 s since A last sent: expired
    send(server, b"too late", first)
    net.run()
    assert in_ep.payloads == [b"still open"]
    assert nat.mappings() == []
    send(inside, b"2", server.address)
    net.run()
    assert srv_ep.received[1][1] != first  # a fresh public port


def test_keepalives_keep_a_mapping_open() -> None:
    net = Network(latency=0.01)
    nat = net.nat("203.0.113.1", timeout=30.0)
    inside, in_ep = natted(net, nat)
    srv_ep = Sink()
    server = node(net.host(), srv_ep, port=80)
    for _ in range(5):
        send(inside, b"keepalive", server.address)
        net.run_for(25.0)
    send(server, b"still open", srv_ep.received[0][1])
    net.run()
    assert in_ep.payloads == [b"still open"]
    assert len({src for _, src, _ in srv_ep.received}) == 1


def test_hosts_behind_one_nat_share_a_lan_and_the_public_ip() -> None:
    net = Network()
    nat = net.nat("203.0.113.1")
    d1, _ = natted(net, nat, "10.0.0.2")
    d2, e2 = natted(net, nat, "10.0.0.3")
    send(d1, b"lan", d2.address)
    net.run()
    assert e2.received[0][:2] == (b"lan", d1.address)  # direct, private source
    srv = Sink()
    server = node(net.host(), srv, port=80)
    send(d1, b"1", server.address)
    send(d2, b"2", server.address)
    net.run()
    (_, p1, _), (_, p2, _) = srv.received
    assert p1.host == p2.host == "203.0.113.1" and p1.port != p2.port
    assert [h.ip for h in nat.hosts] == ["10.0.0.2", "10.0.0.3"]


def test_hairpinning() -> None:
    net = Network()
    plain = net.nat("203.0.113.1")
    d1, _ = natted(net, plain)
    send(d1, b"x", ("203.0.113.1", 20000))
    net.run()
    assert net.stats.dropped_no_route == 1

    hairpin = net.nat("203.0.113.2", hairpin=True, filtering="full-cone")
    d2, e2 = natted(net, hairpin, "10.0.0.2")
    d3, _ = natted(net, hairpin, "10.0.0.3")
    srv = Sink()
    server = node(net.host(), srv, port=80)
    send(d2, b"reg", server.address)
    net.run()
    public2 = srv.received[0][1]
    send(d3, b"via public", public2)
    net.run()
    assert e2.payloads == [b"via public"]
    assert e2.received[0][1].host == "203.0.113.2"


def test_private_ips_may_repeat_across_nats() -> None:
    net = Network()
    d1, e1 = natted(net, net.nat("203.0.113.1"), "10.0.0.2")
    d2, e2 = natted(net, net.nat("203.0.113.2"), "10.0.0.2")
    assert d1.address == d2.address
    srv = Echo()
    server = node(net.host(), srv, port=80)
    f1 = e1.ping(d1, server.address, b"one")
    f2 = e2.ping(d2, server.address, b"two")
    assert d1.wait(f1, 1.0) and d2.wait(f2, 1.0)
    assert (e1.payloads, e2.payloads) == ([b"one"], [b"two"])


def test_nat_arguments_are_checked() -> None:
    net = Network()
    with pytest.raises(ValueError, match="mapping"):
        net.nat(mapping="cone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="filtering"):
        net.nat(filtering="strict")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        net.nat(timeout=0)
    nat = net.nat("203.0.113.1")
    with pytest.raises(ValueError, match="already in use"):
        net.host("203.0.113.1")
    with pytest.raises(ValueError, match="another Network"):
        Network().host(nat=nat)


# -- capacity --------------------------------------------------------------------


class Chatter(Echo):
    """Pings a random peer every ``period`` for ``rounds`` rounds; echoes
    pings, counts pongs."""

    def __init__(self, rng: random.Random, peers: Sequence[Addr], start: float) -> None:
        super().__init__()
        self.rng, self.peers = rng, peers
        self.left = 50
        self.pongs = 0
        self.deadline = start

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if data == b"ping":
            self.out.append((b"pong", addr, None))
        else:
            self.pongs += 1

    def handle_timer(self, now: float) -> None:
        self.out.append((b"ping", self.rng.choice(self.peers), None))
        self.left -= 1
        self.deadline = now + 0.01 if self.left else None


def test_a_thousand_endpoints_exchange_a_hundred_thousand_datagrams() -> None:
    net = Network(seed=1, latency=0.005, jitter=0.002)
    rng = random.Random(2)
    drivers = [net.host().create_driver(port=49737) for _ in range(1000)]
    peers = [d.address for d in drivers]
    chatters = [Chatter(rng, peers, start=i * 1e-5) for i in range(1000)]
    for driver, chatter in zip(drivers, chatters, strict=True):
        driver.start(chatter)
    started = time.perf_counter()
    events = net.run()
    elapsed = time.perf_counter() - started
    print(f"\n{events} events in {elapsed:.3f} s: {events / elapsed:,.0f} events/s")
    stats = net.stats
    assert stats.sent == stats.delivered == 100_000
    assert stats.dropped == 0
    assert sum(c.pongs for c in chatters) == 50_000
    assert events == 150_000


# -- cost per event does not grow with the network ---------------------------------


def opcodes_per_round_trips(idle_hosts: int, behind_nat: bool) -> int:
    """Python bytecodes the simulator runs for 50 echo round trips
    on a network that also holds ``idle_hosts`` hosts with a bound socket
    and a pending timer each (behind one NAT with ``behind_nat``)."""
    import sys

    net = Network(seed=1)
    nat = net.nat() if behind_nat else None
    for _ in range(idle_hosts):
        ticker = Ticker([1e6])  # armed, far in the future: on the heap all along
        node(net.host(nat=nat), ticker)
    echo = node(net.host(), Echo())
    pinger = Sink()
    pinger_drv = node(net.host(nat=nat), pinger)
    rounds = 50
    steps = 0

    def count(frame: Any, event: str, arg: Any) -> Any:
        nonlocal steps
        if event == "call":
            frame.f_trace_opcodes = True
        elif event == "opcode":
            steps += 1
        return count

    sys.settrace(count)
    try:
        for _ in range(rounds):
            send(pinger_drv, b"x", echo.address)
            net.run_until(lambda: len(pinger.received) > 0, timeout=1.0)
            pinger.received.clear()
    finally:
        sys.settrace(None)
    return steps


@pytest.mark.parametrize("behind_nat", [False, True])
def test_a_round_trip_costs_the_same_on_a_small_and_a_large_network(behind_nat: bool) -> None:
    """No per-event scan over hosts, NATs, ports or timers: the same echo
    runs (within 5%) as many bytecodes beside 3 idle hosts as beside 3,000.
    Any Python-level loop over them would add thousands per event, that is
    100 times the allowance; what the allowance admits is the heap's
    log-time comparisons and the interpreter's own caches, which differ by
    about 1% with what earlier tests left behind."""

    def measured(idle_hosts: int) -> int:
        # A tracer installed by an earlier test can swallow one run's
        # events (seen once as a count of 0): measure again then.
        for _ in range(3):
            steps = opcodes_per_round_trips(idle_hosts, behind_nat)
            if steps:
                return steps
        raise AssertionError("sys.settrace counted no bytecodes")

    small = measured(3)
    large = measured(3000)
    assert small <= large * 1.05 and large <= small * 1.05, (small, large)
