"""The shared hub of the gevent backend: one worker greenlet for many drivers.

Each test uses a hub of its own (``GeventHub(name=...)``), so that what it
counts (greenlets, members, timer entries, wake-ups) is its own, whatever
other tests left in the default hub. Nothing sleeps to wait for something:
every wait is on an event, a future or a join, with a timeout only a broken
run reaches.
"""

from __future__ import annotations

import gc
import itertools
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

gevent = pytest.importorskip("gevent")

from test_drivers import TIMEOUT, EchoEndpoint, ToyEndpoint, round_trip  # noqa: E402

from hyperdht.dhtrpc import DHT  # noqa: E402
from hyperdht.drivers.gevent import GeventBackend, GeventDriver  # noqa: E402
from hyperdht.drivers.gevent_hub import HEAP_SLACK, GeventHub, default_hub  # noqa: E402
from hyperdht.errors import HyperDHTError  # noqa: E402
from hyperdht.future import Future  # noqa: E402

_names = itertools.count()


@pytest.fixture
def hub() -> Iterator[GeventHub]:
    """A private hub; at teardown its worker must be gone."""
    hub = GeventHub(name=f"hyperdht-gevent-hub-test-{next(_names)}")
    yield hub
    worker = hub.greenlet
    if worker is not None:
        worker.join(TIMEOUT)
        assert worker.dead, "the worker outlived its drivers"


def start(hub: GeventHub | bool, endpoint: Any) -> GeventDriver:
    driver = GeventDriver(host="127.0.0.1", port=0, hub=hub)
    if isinstance(endpoint, EchoEndpoint):
        endpoint.driver = driver
    driver.start(endpoint)
    return driver


def live_greenlets(prefix: str = "hyperdht-") -> list[str]:
    return [
        g.name
        for g in gc.get_objects()
        if isinstance(g, gevent.Greenlet) and not g.dead and g.name.startswith(prefix)
    ]


class BusyTimer(ToyEndpoint):
    """A timer that is always due: counts how often it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.first: Future[None] = Future()

    def get_timer(self) -> float | None:
        return 0.0

    def handle_timer(self, now: float) -> None:
        self.calls += 1
        if not self.first.done():
            self.first.set_result(None)


class CountingTimer(ToyEndpoint):
    """Due once at ``deadline``; resolves ``fired`` with the time it ran."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline
        self.fired: Future[float] = Future()
        self.early = 0

    def handle_timer(self, now: float) -> None:
        if self.deadline is None or now < self.deadline:
            self.early += 1
            return
        self.deadline = None
        self.fired.set_result(now)


def test_many_drivers_share_one_greenlet(hub: GeventHub) -> None:
    before = live_greenlets()
    servers = [start(hub, EchoEndpoint()) for _ in range(50)]
    client_ep = ToyEndpoint()
    client = start(hub, client_ep)
    assert live_greenlets() == [*before, hub.name]
    assert hub.members == 51
    for server in servers:
        assert round_trip(client, client_ep, server.address, b"hi %d" % server.address[1])
    assert live_greenlets() == [*before, hub.name]  # answering started no greenlet
    for driver in [*servers, client]:
        driver.close()
    assert hub.members == 0
    assert hub.greenlet is None  # the last close() ended it
    assert live_greenlets() == before


def test_sockets_readable_together_are_served_in_one_wake_up(hub: GeventHub) -> None:
    servers = [start(hub, EchoEndpoint()) for _ in range(20)]
    client_ep = ToyEndpoint()
    client = start(False, client_ep)  # its own greenlets: only the servers count
    round_trip(client, client_ep, servers[0].address)
    before = hub.wakeups
    # Loopback delivers inside sendto: all 20 sockets are readable before
    # the loop polls again, so one wake-up of the worker serves them all.
    futures = []
    with client.locked():
        for i, server in enumerate(servers):
            futures.append(client_ep.expect(b"n%d" % i))
            client_ep.send(b"n%d" % i, server.address)
    for future in futures:
        assert client.wait(future, TIMEOUT)
    assert hub.wakeups - before <= 2
    for driver in [*servers, client]:
        driver.close()


def test_timers_due_together_cost_one_wake_up_and_never_run_early(hub: GeventHub) -> None:
    probe = start(hub, ToyEndpoint())
    deadline = probe.now() + 0.05
    endpoints = [CountingTimer(deadline) for _ in range(30)]
    drivers = [start(hub, ep) for ep in endpoints]
    gevent.sleep(0)  # let the worker see the new deadline and sleep towards it
    before = hub.wakeups
    for driver, ep in zip(drivers, endpoints, strict=True):
        assert driver.wait(ep.fired, TIMEOUT)
        assert ep.fired.result() >= deadline
        assert ep.early == 0  # the driver never calls handle_timer before time
    # One wake-up runs them all (a second one is allowed for a timer that
    # the loop's clock saw a hair early).
    assert hub.wakeups - before <= 2
    for driver in [probe, *drivers]:
        driver.close()


def test_close_stops_only_its_own_socket_and_timer(hub: GeventHub) -> None:
    client_ep = ToyEndpoint()
    client = start(hub, client_ep)
    keeper = start(hub, EchoEndpoint())
    busy_ep = BusyTimer()
    busy = start(hub, busy_ep)
    leaving = start(hub, EchoEndpoint())
    assert busy.wait(busy_ep.first, TIMEOUT)
    round_trip(client, client_ep, leaving.address)

    leaving.close()
    busy.close()
    calls = busy_ep.calls
    assert leaving.socket.fileno() == -1
    assert busy.socket.fileno() == -1
    assert hub.members == 2
    for i in range(20):
        round_trip(client, client_ep, keeper.address, b"still %d" % i)
    assert busy_ep.calls == calls
    assert hub.timer_entries <= 2 + HEAP_SLACK
    client.close()
    keeper.close()


def test_a_busy_timer_does_not_starve_other_greenlets(hub: GeventHub) -> None:
    busy_ep = BusyTimer()
    busy = start(hub, busy_ep)
    assert busy.wait(busy_ep.first, TIMEOUT)
    ran = gevent.event.Event()
    gevent.spawn(ran.set)
    assert ran.wait(TIMEOUT)
    busy.close()


def test_worker_exits_after_the_last_close_and_restarts(hub: GeventHub) -> None:
    first = start(hub, ToyEndpoint())
    worker = hub.greenlet
    assert worker is not None and not worker.dead
    first.close()
    assert worker.dead
    assert hub.greenlet is None
    again_ep = ToyEndpoint()
    again = start(hub, again_ep)
    server = start(hub, EchoEndpoint())
    assert hub.greenlet is not None and hub.greenlet is not worker
    round_trip(again, again_ep, server.address)
    again.close()
    server.close()
    assert hub.greenlet is None


def test_close_from_inside_a_callback(hub: GeventHub) -> None:
    server_ep = EchoEndpoint()
    server = start(hub, server_ep)
    client_ep = ToyEndpoint()
    client = start(hub, client_ep)
    round_trip(client, client_ep, server.address)
    with client.locked():
        client_ep.send(b"close", server.address)  # the server closes itself on the worker
    assert client.wait(server_ep.closed_itself, TIMEOUT)
    other = start(hub, EchoEndpoint())
    round_trip(client, client_ep, other.address)  # the worker is not stuck
    assert server.closing
    assert server.socket.fileno() == -1
    other.close()
    worker = hub.greenlet
    assert worker is not None
    # The last driver closes itself on the worker: the worker exits alone.
    client_ep.on_datagram = lambda data, addr: client.close()  # type: ignore[method-assign]
    sender_ep = ToyEndpoint()
    sender = start(False, sender_ep)
    with sender.locked():
        sender_ep.send(b"bye", client.address)
    worker.join(TIMEOUT)
    assert worker.dead, "the worker did not exit after its last driver closed itself"
    assert client.closing
    sender.close()


def test_close_from_another_greenlet_during_a_blocking_query(hub: GeventHub) -> None:
    silent = start(False, ToyEndpoint())  # bound, read by a toy that never answers
    node = DHT(host="127.0.0.1", backend=GeventBackend(hub=hub), timeout=30.0)
    outcome: list[BaseException | object] = []

    def ping() -> None:
        try:
            outcome.append(node.ping(("127.0.0.1", silent.address[1])))
        except BaseException as exc:
            outcome.append(exc)

    pinger = gevent.spawn(ping)
    gevent.sleep(0)  # ping() is now blocked in wait()
    node.close()
    pinger.join(TIMEOUT)
    assert pinger.dead, "ping() still blocked after close()"
    assert isinstance(outcome[0], HyperDHTError), outcome
    assert hub.greenlet is None
    silent.close()


def test_no_fd_or_greenlet_leak_over_create_close_cycles(hub: GeventHub) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    greenlets, files = live_greenlets(), fds()
    for _ in range(10):
        client_ep = ToyEndpoint()
        client = start(hub, client_ep)
        servers = [start(hub, EchoEndpoint()) for _ in range(5)]
        for server in servers:
            round_trip(client, client_ep, server.address)
        for driver in [client, *servers]:
            driver.close()
        assert live_greenlets() == greenlets
        assert fds() == files


def test_stale_timer_entries_stay_bounded(hub: GeventHub) -> None:
    ep = ToyEndpoint()
    driver = start(hub, ep)
    far = driver.now() + 3600.0
    for i in range(10 * HEAP_SLACK):  # every flush arms an earlier deadline
        with driver.locked():
            ep.deadline = far - i
    assert hub.timer_entries <= 2 + HEAP_SLACK
    driver.close()
    assert hub.timer_entries == 0


def test_dht_nodes_share_the_default_hub() -> None:
    nodes = [DHT(host="127.0.0.1", backend="gevent") for _ in range(20)]
    try:
        assert {n.driver.hub for n in nodes} == {default_hub()}  # type: ignore[attr-defined]
        assert live_greenlets("hyperdht-recv-") == []
        for node in nodes[1:4]:
            node.ping(("127.0.0.1", nodes[0].address.port))
    finally:
        for node in nodes:
            node.close()


def test_private_greenlets_stay_available() -> None:
    driver = GeventDriver(host="127.0.0.1", port=0, hub=False)
    assert driver.hub is None
    driver.start(ToyEndpoint())
    port = driver.address[1]
    assert {f"hyperdht-recv-{port}", f"hyperdht-timer-{port}"} <= set(live_greenlets())
    driver.close()
    assert live_greenlets(f"hyperdht-recv-{port}") == []


def test_each_thread_has_a_default_hub_of_its_own() -> None:
    # gevent runs one hub (one loop) per OS thread: so does the gevent hub.
    seen: list[GeventHub] = []
    thread = threading.Thread(target=lambda: seen.append(default_hub()), daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert seen and seen[0] is not default_hub()
    assert default_hub() is default_hub()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_after_fork_gets_a_fresh_hub() -> None:
    parent = default_hub()
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        fresh = default_hub()
        os._exit(0 if fresh is not parent and fresh.greenlet is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
