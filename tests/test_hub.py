"""The shared hub of the thread backend: one I/O thread for many drivers.

Each test uses a hub of its own (``Hub(name=...)``), so that what it counts
(threads, members, timer entries) is its own, whatever other tests left in
the process-wide :func:`~hyperdht.drivers.hub.default_hub`. Nothing sleeps
to wait for something: every wait is on an event, a future or a join, with
a timeout only a broken run reaches.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_drivers import TIMEOUT, EchoEndpoint, ToyEndpoint, round_trip

from hyperdht.dhtrpc import DHT
from hyperdht.drivers.hub import HEAP_SLACK, SPAWN_WORKERS, Hub, default_hub
from hyperdht.drivers.thread import ThreadBackend, ThreadDriver
from hyperdht.errors import HyperDHTError
from hyperdht.future import Future

_names = itertools.count()


@pytest.fixture
def hub() -> Iterator[Hub]:
    """A private hub; at teardown its thread must be gone."""
    hub = Hub(name=f"hyperdht-hub-test-{next(_names)}")
    yield hub
    thread = hub.thread
    if thread is not None:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the hub thread outlived its drivers"


def start(hub: Hub, endpoint: Any) -> ThreadDriver:
    driver = ThreadDriver(host="127.0.0.1", port=0, hub=hub)
    if isinstance(endpoint, EchoEndpoint):
        endpoint.driver = driver
    driver.start(endpoint)
    return driver


def hub_threads(hub: Hub) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == hub.name]


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


def test_many_drivers_share_one_thread(hub: Hub) -> None:
    before = threading.active_count()
    servers = [start(hub, EchoEndpoint()) for _ in range(50)]
    client_ep = ToyEndpoint()
    client = start(hub, client_ep)
    assert threading.active_count() == before + 1
    assert len(hub_threads(hub)) == 1
    assert hub.members == 51
    for server in servers:
        assert round_trip(client, client_ep, server.address, b"hi %d" % server.address[1])
    assert threading.active_count() == before + 1  # answering started no thread
    for driver in [*servers, client]:
        driver.close()
    assert hub.members == 0
    assert hub.thread is None  # the last close() waited for it
    assert hub_threads(hub) == []
    assert threading.active_count() == before


def test_close_stops_only_its_own_socket_and_timer(hub: Hub) -> None:
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
    # The hub goes on serving the others (every round trip is several of its
    # iterations, each of which would have run a still-armed busy timer).
    for i in range(20):
        round_trip(client, client_ep, keeper.address, b"still %d" % i)
    assert busy_ep.calls == calls
    assert hub.timer_entries <= 2 + HEAP_SLACK
    client.close()
    keeper.close()


def test_hub_thread_exits_after_the_last_close_and_restarts(hub: Hub) -> None:
    first = start(hub, ToyEndpoint())
    thread = hub.thread
    assert thread is not None and thread.is_alive()
    first.close()
    assert not thread.is_alive()
    assert hub.thread is None
    again_ep = ToyEndpoint()
    again = start(hub, again_ep)
    server = start(hub, EchoEndpoint())
    assert hub.thread is not None and hub.thread is not thread
    round_trip(again, again_ep, server.address)
    again.close()
    server.close()
    assert hub.thread is None


def test_close_from_inside_a_callback(hub: Hub) -> None:
    server_ep = EchoEndpoint()
    server = start(hub, server_ep)
    client_ep = ToyEndpoint()
    client = start(hub, client_ep)
    round_trip(client, client_ep, server.address)
    with client.locked():
        client_ep.send(b"close", server.address)  # the server closes itself on the hub
    other = start(hub, EchoEndpoint())
    round_trip(client, client_ep, other.address)  # the hub is not stuck
    assert server.closing
    assert server.socket.fileno() == -1
    other.close()
    thread = hub.thread
    assert thread is not None
    # The last driver closes itself on the hub thread: the hub exits alone.
    client_ep.on_datagram = lambda data, addr: client.close()  # type: ignore[method-assign]
    sender_ep = ToyEndpoint()
    sender = ThreadDriver(host="127.0.0.1", port=0, hub=False)
    sender.start(sender_ep)
    with sender.locked():
        sender_ep.send(b"bye", client.address)
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the hub did not exit after its last driver closed itself"
    assert client.closing
    sender.close()


def test_close_from_another_thread_during_a_blocking_query(hub: Hub) -> None:
    silent = ThreadDriver(host="127.0.0.1", port=0, hub=False)  # bound, never read
    node = DHT(host="127.0.0.1", backend=ThreadBackend(hub=hub), timeout=30.0)
    entered = threading.Event()
    outcome: list[BaseException | object] = []

    def ping() -> None:
        entered.set()
        try:
            outcome.append(node.ping(("127.0.0.1", silent.address[1])))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=ping, daemon=True)
    thread.start()
    assert entered.wait(TIMEOUT)
    started = time.monotonic()
    node.close()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "ping() still blocked after close()"
    assert time.monotonic() - started < TIMEOUT
    assert isinstance(outcome[0], HyperDHTError), outcome
    assert hub.thread is None
    silent.close()


def test_no_fd_or_thread_leak_over_create_close_cycles(hub: Hub) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    threads, files = threading.active_count(), fds()
    for _ in range(10):
        client_ep = ToyEndpoint()
        client = start(hub, client_ep)
        servers = [start(hub, EchoEndpoint()) for _ in range(5)]
        for server in servers:
            round_trip(client, client_ep, server.address)
        for driver in [client, *servers]:
            driver.close()
        assert threading.active_count() == threads
        assert fds() == files


def test_dht_nodes_share_the_default_hub() -> None:
    def threads() -> tuple[int, int]:
        names = [t.name for t in threading.enumerate()]
        pool = sum(1 for n in names if n.startswith("hyperdht-hub-spawn"))
        return len(names) - pool, pool

    before, _ = threads()
    running = default_hub().thread is not None
    nodes = [DHT(host="127.0.0.1") for _ in range(20)]
    try:
        assert all(isinstance(n.driver, ThreadDriver) for n in nodes)
        assert {n.driver.hub for n in nodes} == {default_hub()}  # type: ignore[attr-defined]
        others, pool = threads()
        assert others <= before + (0 if running else 1)
        assert pool <= SPAWN_WORKERS  # their spawn() shares one pool
        for node in nodes[1:4]:
            node.ping(("127.0.0.1", nodes[0].address.port))
    finally:
        for node in nodes:
            node.close()


def test_private_threads_stay_available() -> None:
    driver = ThreadDriver(host="127.0.0.1", port=0, hub=False)
    assert driver.hub is None
    driver.start(ToyEndpoint())
    port = driver.address[1]
    names = {t.name for t in threading.enumerate()}
    assert {f"hyperdht-recv-{port}", f"hyperdht-timer-{port}"} <= names
    driver.close()


def test_stale_timer_entries_stay_bounded(hub: Hub) -> None:
    ep = ToyEndpoint()
    driver = start(hub, ep)
    far = driver.now() + 3600.0
    for i in range(10 * HEAP_SLACK):  # every flush arms an earlier deadline
        with driver.locked():
            ep.deadline = far - i
    assert hub.timer_entries <= 2 + HEAP_SLACK
    driver.close()
    assert hub.timer_entries == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_after_fork_gets_a_fresh_hub() -> None:
    parent = default_hub()
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        fresh = default_hub()
        os._exit(0 if fresh is not parent and fresh.thread is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_spawn_runs_on_the_hub_pool_and_close_waits_for_it(hub: Hub) -> None:
    drivers = [start(hub, ToyEndpoint()) for _ in range(3)]
    release = threading.Event()
    running = threading.Event()
    ran: list[str] = []

    def slow() -> None:
        running.set()
        release.wait(TIMEOUT)
        ran.append(threading.current_thread().name)

    drivers[0].spawn(slow)
    assert running.wait(TIMEOUT)
    closer = threading.Thread(target=drivers[0].close, daemon=True)
    closer.start()
    closer.join(0.05)  # close() waits for its running callable...
    assert closer.is_alive()
    release.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    assert ran and ran[0].startswith(f"{hub.name}-spawn")
    for driver in drivers[1:]:
        driver.close()
    assert not [t for t in threading.enumerate() if t.name.startswith(f"{hub.name}-spawn")]


def test_timers_armed_from_many_threads_while_the_hub_pops_all_run_never_early(hub: Hub) -> None:
    # The heap is shared between the threads that arm and the hub thread
    # that pops: every member armed must run, and never before the earliest
    # deadline it was given (re-arming earlier and later, from 8 threads).
    import random
    import socket

    members = 40
    fired: list[list[float]] = [[] for _ in range(members)]
    armed: list[list[float]] = [[] for _ in range(members)]
    ran = [threading.Event() for _ in range(members)]
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(members)]

    def on_timer(i: int) -> None:
        fired[i].append(time.monotonic())
        ran[i].set()

    regs = []
    for i, sock in enumerate(socks):
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        regs.append(hub.register(sock, lambda: None, lambda i=i: on_timer(i)))
    start = time.monotonic()

    def arm_some(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(200):
            i = rng.randrange(seed, members, 8)
            deadline = start + rng.uniform(0.0, 0.3)
            armed[i].append(deadline)  # before arm(): it may run at once
            hub.arm(regs[i], deadline)

    threads = [threading.Thread(target=arm_some, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    for i in range(members):
        assert ran[i].wait(TIMEOUT), f"member {i} armed {len(armed[i])} times never ran"
        assert fired[i][0] >= min(armed[i])
    assert hub.timer_entries <= 2 * members + HEAP_SLACK
    for reg, sock in zip(regs, socks, strict=True):
        hub.unregister(reg)
        sock.close()
    assert hub.timer_entries == 0
