"""The blocking DHT on real UDP sockets (127.0.0.1 and ::1 only).

Only what real sockets, threads and greenlets show is tested here; the
protocol itself is covered on the core and the simulator. Every test runs
on the driver named by ``HYPERDHT_TEST_BACKEND`` (the ``backend`` fixture).
Nothing sleeps: waits are on events and futures with generous timeouts.
"""

from __future__ import annotations

import gc
import math
import random
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hyperdht import messages
from hyperdht.addressing import DEFAULT_PORT
from hyperdht.dhtrpc import DHT, IncomingQuery, RemoteNode, collect_stream
from hyperdht.errors import ClosedError, QueryError, RequestCancelled, RequestTimeout
from hyperdht.ipencoding import Address, node_codec, peer_codec

LOCAL = "127.0.0.1"
#: Only a broken run waits this long.
TIMEOUT = 10.0

try:
    import gevent
    import gevent.socket
except ImportError:  # pragma: no cover - gevent is a test dependency
    gevent = None


def xor(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def raw_socket(backend: str, family: int = socket.AF_INET) -> Any:
    """A plain UDP socket that cooperates with the backend (a gevent
    socket under gevent, so that waiting on it lets the node run)."""
    make = gevent.socket.socket if backend == "gevent" else socket.socket
    sock = make(family, socket.SOCK_DGRAM)
    sock.bind(("::1" if family == socket.AF_INET6 else LOCAL, 0))
    sock.settimeout(TIMEOUT)
    return sock


def in_background(backend: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``fn`` in a thread (or greenlet); the returned function joins it
    (TIMEOUT) and returns its result or raises its exception."""
    if backend == "gevent":
        glet = gevent.spawn(fn)

        def join_greenlet() -> Any:
            glet.join(TIMEOUT)
            assert glet.ready(), "background greenlet did not finish"
            return glet.get()

        return join_greenlet
    out: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join_thread() -> Any:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "background thread did not finish"
        if errors:
            raise errors[0]
        return out[0]

    return join_thread


@pytest.fixture
def make(backend: str) -> Iterator[Callable[..., DHT]]:
    """``make(**kwargs)`` creates a DHT on 127.0.0.1 and the backend under
    test; everything made is closed at the end."""
    made: list[DHT] = []

    def factory(**kw: Any) -> DHT:
        kw.setdefault("host", LOCAL)
        node = DHT(backend=backend, **kw)
        made.append(node)
        return node

    yield factory
    for node in made:
        node.close()


def swarm(make: Callable[..., DHT], n: int, **kw: Any) -> list[DHT]:
    """A bootstrap node and ``n`` nodes that bootstrapped from it (one
    after the other: a burst of simultaneous bootstraps could overflow
    the bootstrap node's socket buffer on a loaded machine)."""
    boot = make(**kw)
    entry = f"{'[::1]' if kw.get('ipv6') else LOCAL}:{boot.address.port}"
    nodes = [boot]
    for _ in range(n):
        nodes.append(make(bootstrap=[entry], **kw))
        assert nodes[-1].ready(TIMEOUT)
    return nodes


def closest(nodes: list[DHT], target: bytes, exclude: DHT) -> set[bytes]:
    others = [n.id for n in nodes if n is not exclude]
    return set(sorted(others, key=lambda i: xor(i, target))[:20])


def unreached(nodes: list[DHT], origin: DHT, target: bytes, found: set[bytes]) -> set[bytes]:
    """What a lookup from ``origin`` that found ``found`` should have
    reached but did not: the nodes that the origin's or a responder's
    routing table lists among its 20 closest to ``target`` (what that node
    answers a ``_find_node`` with) and that are closer than the farthest of
    the 20 closest found (any of them, if it found fewer). A query ends
    only once every such node answered, so on a network that lost nothing
    this is empty, whatever the random ids made of the tables (see
    :func:`assert_queries_reach_the_closest`)."""
    by_id = {n.id: n for n in nodes}
    distances = sorted(xor(i, target) for i in found)
    cutoff = distances[19] if len(distances) >= 20 else math.inf
    listed: set[bytes] = set()
    for namer in [origin, *(by_id[i] for i in found)]:
        table = sorted(namer.nodes(), key=lambda c: xor(c.id, target))[:20]
        listed.update(c.id for c in table if xor(c.id, target) < cutoff)
    return listed - found - {origin.id}


def assert_queries_reach_the_closest(nodes: list[DHT], rounds: int, seed: int) -> None:
    """``rounds`` seeded queries from random nodes of the swarm ``nodes``.

    Each must reach what the swarm's routing tables lead it to (nothing
    :func:`unreached`), at least 20 real nodes (or all the others) at their
    real addresses, and most of the 20 closest to the target of all the
    swarm.

    Not *all* 20: Kademlia does not promise that. A node is found only if
    some node near the target has it in its table, and a table learns only
    from its own traffic; now and then (about one query in 4,000 on this
    swarm) the 20th closest has never talked to any node nearer the target
    and no lookup can find it. The test asserted all 20 before and failed
    that way once in CI. What the drivers must get right is that a query
    loses nothing: ``unreached`` is exact, ids or not.
    """
    rng = random.Random(seed)
    by_id = {n.id: n for n in nodes}
    for _ in range(rounds):
        target = rng.randbytes(32)
        origin = rng.choice(nodes)
        expected = closest(nodes, target, origin)
        for _attempt in range(3):
            timeouts = sum(n.stats.timeouts for n in nodes)
            stream = origin.query("_find_node", target)
            results = collect_stream(stream)
            found = {r.node.id for r in results}
            assert found <= by_id.keys() - {origin.id}
            assert all(by_id[r.node.id].address == r.node.address for r in results)
            assert len(found) >= min(20, len(nodes) - 1)
            missed = unreached(nodes, origin, target, found)
            # The protocol has no retries: a datagram lost on a loaded
            # machine (a timeout, here or in a node's own maintenance) may
            # hide a node; nothing else may.
            lost = stream.warnings or sum(n.stats.timeouts for n in nodes) > timeouts
            if not missed or not lost:
                break
        assert missed == set()
        assert len(expected - found) <= 5


# -- a swarm on loopback ---------------------------------------------------------


def test_fifty_nodes_bootstrap_and_queries_reach_the_closest(make: Callable[..., DHT]) -> None:
    nodes = swarm(make, 50)
    assert len({n.id for n in nodes}) == 51
    for node in nodes[1:]:
        assert node.nodes(), "bootstrapped with an empty table"
    assert_queries_reach_the_closest(nodes, rounds=8, seed=1)


def test_update_runs_the_handlers_of_the_closest(make: Callable[..., DHT]) -> None:
    nodes = swarm(make, 25)
    stored: list[bytes] = []
    lock = threading.Lock()  # handlers run on each node's receiver

    def handler_of(node: DHT) -> Callable[[RemoteNode, IncomingQuery], bytes]:
        def handler(remote: RemoteNode, q: IncomingQuery) -> bytes:
            with lock:
                stored.append(node.id)
            return b"ok"

        return handler

    for node in nodes:
        node.on_update("put", handler_of(node))
    target = random.Random(2).randbytes(32)
    stream = nodes[3].update("put", target, b"v")
    results = collect_stream(stream)
    committed = set(stored)
    assert len(committed) == len(stored)  # one commit per node
    assert committed <= {n.id for n in nodes} - {nodes[3].id}
    assert {r.node.id for r in results} <= committed
    if not stream.warnings:  # else a datagram was lost (loaded machine): no exact count
        # The commit goes to the 20 closest the query reached: what the
        # tables lead to (see assert_queries_reach_the_closest), most of
        # the 20 closest of the swarm.
        assert [r.value for r in results] == [b"ok"] * 20
        assert committed == {r.node.id for r in results}
        assert unreached(nodes, nodes[3], target, committed) == set()
        assert len(closest(nodes, target, nodes[3]) - committed) <= 5


# -- close -----------------------------------------------------------------------


_TASK = re.compile(r"^hyperdht-(recv|timer|spawn)-(\d+)")


def live_tasks(port: int) -> list[str]:
    """Names of live threads and greenlets of the driver on ``port``."""
    names = [t.name for t in threading.enumerate()]
    if gevent is not None:
        names += [g.name for g in gc.get_objects() if isinstance(g, gevent.Greenlet) and not g.dead]
    return [n for n in names if (m := _TASK.match(n)) and int(m.group(2)) == port]


def test_close_leaves_nothing_running(make: Callable[..., DHT], backend: str) -> None:
    a, b = make(), make(inline_handlers=False)
    b.on_query("slow", lambda remote, q: b"handled off the receiver")
    assert a.ping((LOCAL, b.address.port)).host == LOCAL
    results = collect_stream(a.query("slow", bytes(32), nodes=[(LOCAL, b.address.port)]))
    assert [r.value for r in results] == [b"handled off the receiver"]
    port = b.address.port
    sock = b.driver.socket  # type: ignore[attr-defined]
    hub = getattr(b.driver, "hub", None)  # the thread backend's shared I/O thread
    assert live_tasks(port) or hub is not None
    members = hub.members if hub is not None else 0
    b.close()
    assert live_tasks(port) == []
    assert hub is None or hub.members == members - 1
    assert sock.fileno() == -1
    b.close()  # idempotent
    # The port is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOCAL, port))


def test_streams_end_when_the_node_closes(make: Callable[..., DHT], backend: str) -> None:
    silent = raw_socket(backend)
    try:
        node = make(timeout=60.0)  # the query would otherwise wait a minute
        stream = node.query("q", bytes(32), nodes=[silent.getsockname()])
        data, _ = silent.recvfrom(2048)  # the request is out
        assert messages.decode_request(data[2:]).command == "q"
        join = in_background(backend, lambda: list(stream))
        ping = in_background(backend, lambda: node.ping(silent.getsockname()))
        if backend == "gevent":
            gevent.sleep(0)  # let both block first
        node.close()
        assert join() == []
        assert isinstance(stream.error, QueryError)
        with pytest.raises((RequestCancelled, ClosedError)):
            ping()
    finally:
        silent.close()


def test_methods_after_close_raise_closed_error(make: Callable[..., DHT]) -> None:
    other = make()
    node = make()
    node.close()
    assert node.closed
    to = (LOCAL, other.address.port)
    calls: list[Callable[[], Any]] = [
        lambda: node.ping(to),
        lambda: node.holepunch(to, to),
        lambda: node.query("x", bytes(32)),
        lambda: node.update("x", bytes(32)),
        lambda: node.bootstrap(),
        lambda: node.send_datagram(b"x", to),
    ]
    for call in calls:
        with pytest.raises(ClosedError):
            call()


# -- bad input -------------------------------------------------------------------


def test_garbage_over_udp_is_counted_and_the_node_keeps_answering(
    make: Callable[..., DHT], backend: str
) -> None:
    node = make()
    to = (LOCAL, node.address.port)
    sock = raw_socket(backend)
    try:
        garbage = [
            b"",  # empty datagram
            b"\x80",  # shorter than a header
            b"\x80\x01\x0a\x05hi",  # truncated field
            b"\x80\x02\x12\x02id",  # no command
            b"\x00\x03" + messages.encode_response(messages.RpcResponse()),  # unmatched
            b"\x80\x04" + messages.encode_request(messages.RpcRequest("_ping", id=b"short")),
            b"\x80\x05"
            + messages.encode_request(
                messages.RpcRequest("_find_node", forward_request=b"\x7f\x00\x00\x01\x00\x00")
            ),
            b"\x80\x06" + messages.encode_request(messages.RpcRequest("x", target=b"short")),
            bytes(range(256)) * 4,  # header 0x0001: another unmatched response
        ]
        for data in garbage:
            sock.sendto(data, to)
        # A valid ping from the same socket: once it is answered, everything
        # before it was processed (same socket, loopback keeps the order).
        sock.sendto(b"\x80\x07" + messages.encode_request(messages.RpcRequest("_ping")), to)
        data, src = sock.recvfrom(2048)
        assert data[:2] == b"\x00\x07" and src == to
        assert peer_codec(False).decode(messages.decode_response(data[2:]).value or b"") == (
            Address(*sock.getsockname())
        )
        drops = node.stats.drops
        assert drops["short"] == 2
        assert drops["decode"] >= 2
        assert drops["unmatched_response"] == 2
        assert drops["bad_id"] == 1
        assert drops["forward_not_ping"] == 1
        assert drops["bad_target"] == 1
        assert node.stats.datagrams_in == len(garbage) + 1
        assert node.stats.requests_served["_ping"] == 1
    finally:
        sock.close()
    # And it still works as a DHT node.
    other = make()
    assert other.ping(to).port == other.address.port


# -- IPv6 ------------------------------------------------------------------------


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="::1 is not available")


@needs_ipv6
def test_ipv6_nodes_bootstrap_ping_and_query(make: Callable[..., DHT]) -> None:
    nodes = swarm(make, 8, host="::1", ipv6=True)
    assert all(n.ipv6 for n in nodes)
    seen = nodes[1].ping(f"[::1]:{nodes[0].address.port}")
    assert seen == Address("::1", nodes[1].address.port)
    assert all(c.address.host == "::1" for c in nodes[2].nodes())
    assert_queries_reach_the_closest(nodes, rounds=4, seed=3)


@needs_ipv6
def test_ipv6_node_speaks_the_18_byte_encoding(make: Callable[..., DHT], backend: str) -> None:
    nodes = swarm(make, 3, host="::1", ipv6=True)
    sock = raw_socket(backend, socket.AF_INET6)
    to = ("::1", nodes[0].address.port)
    try:
        req = messages.RpcRequest("_find_node", target=bytes(32))
        sock.sendto(b"\x80\x01" + messages.encode_request(req), to)
        data, _ = sock.recvfrom(4096)
        res = messages.decode_response(data[2:])
        listed = node_codec(True).decode_list(res.nodes or b"")
        assert len(res.nodes or b"") == 50 * len(listed) and len(listed) == 3
        assert {n.address.host for n in listed} == {"::1"}
        sock.sendto(b"\x80\x02" + messages.encode_request(messages.RpcRequest("_ping")), to)
        data, _ = sock.recvfrom(4096)
        value = messages.decode_response(data[2:]).value or b""
        assert len(value) == 18
        assert peer_codec(True).decode(value) == Address("::1", sock.getsockname()[1])
    finally:
        sock.close()


@needs_ipv6
def test_ipv4_and_ipv6_nodes_do_not_mix(make: Callable[..., DHT]) -> None:
    v6 = make(host="::1", ipv6=True)
    v4 = make()
    with pytest.raises(ValueError, match="IPv6"):
        v4.ping(f"[::1]:{v6.address.port}")
    with pytest.raises(ValueError, match="IPv4"):
        v6.ping((LOCAL, v4.address.port))
    with pytest.raises(ValueError, match="bootstrap"):
        make(bootstrap=[f"[::1]:{v6.address.port}"])
    with pytest.raises(ValueError, match="bootstrap"):
        make(host="::1", ipv6=True, bootstrap=[f"{LOCAL}:{v4.address.port}"])
    with pytest.raises(ValueError, match="nodes"):
        v4.query("x", bytes(32), nodes=[("::1", v6.address.port)])


# -- application datagrams and caller sockets ------------------------------------


def test_application_datagrams_between_two_nodes(make: Callable[..., DHT]) -> None:
    a, b = make(), make()
    got: list[tuple[bytes, Address]] = []
    arrived = a.driver.new_event()

    def on_datagram(data: bytes, src: Address) -> None:
        got.append((data, src))
        if len(got) == 3:
            arrived.set()

    a.on_datagram(on_datagram)
    for payload in (b"one", b"", b"\xff" * 1000):
        b.send_datagram(payload, (LOCAL, a.address.port))
    assert arrived.wait(TIMEOUT)
    assert sorted(got) == sorted(
        (p, Address(LOCAL, b.address.port)) for p in (b"one", b"", b"\xff" * 1000)
    )
    # They are not DHT traffic: no drops, no requests served.
    assert a.stats.drops == {} and sum(a.stats.requests_served.values()) == 0
    with pytest.raises(ValueError, match="data"):
        b.send_datagram("text", (LOCAL, a.address.port))  # type: ignore[arg-type]


def test_caller_socket_is_used_and_not_closed(make: Callable[..., DHT], backend: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCAL, 0))
    sock.settimeout(TIMEOUT)
    try:
        node = make(socket=sock)
        assert node.address == Address(*sock.getsockname())
        other = make()
        assert other.ping((LOCAL, node.address.port)).port == other.address.port
        assert node.ping((LOCAL, other.address.port)) == node.address
        node.close()
        assert sock.fileno() != -1
        # Still a working socket, and nobody else reads it any more.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind((LOCAL, 0))
            peer.sendto(b"after close", sock.getsockname())
            assert sock.recvfrom(64) == (b"after close", peer.getsockname())
        sock.sendto(b"x", (LOCAL, other.address.port))
    finally:
        sock.close()


# -- threads ---------------------------------------------------------------------


def test_many_threads_share_one_node(make: Callable[..., DHT], backend: str) -> None:
    if backend != "thread":
        pytest.skip("threads sharing a node: thread backend only")
    nodes = swarm(make, 10)
    for node in nodes:
        node.on_query("who", lambda remote, q, nid=node.id: nid)
    shared = nodes[4]
    errors: list[BaseException] = []
    done = 0
    lock = threading.Lock()

    def worker(seed: int) -> None:
        nonlocal done
        rng = random.Random(seed)
        try:
            for _ in range(10):
                peer = rng.choice(nodes)
                if peer is not shared:
                    assert shared.ping((LOCAL, peer.address.port)) == shared.address
            for _ in range(3):
                target = rng.randbytes(32)
                results = collect_stream(shared.query("who", target))
                assert results and all(r.value == r.node.id for r in results)
        except BaseException as exc:
            errors.append(exc)
        else:
            with lock:
                done += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert done == 8


# -- bootstrap arguments ---------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:4000", [Address(LOCAL, 4000)]),
        ("127.0.0.1", [Address(LOCAL, DEFAULT_PORT)]),
        (("127.0.0.1", 4001), [Address(LOCAL, 4001)]),
        (["localhost:4002", ("127.0.0.1", 4003)], [Address(LOCAL, 4002), Address(LOCAL, 4003)]),
        (["127.0.0.1", " 127.0.0.1:4004 "], [Address(LOCAL, 49737), Address(LOCAL, 4004)]),
    ],
)
def test_bootstrap_arguments(make: Callable[..., DHT], given: Any, expected: list[Address]) -> None:
    node = make(bootstrap=given, timeout=0.2)
    assert node.core.bootstrap_nodes == expected


@pytest.mark.parametrize(
    "bad",
    [
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:http",
        ":4000",
        "[::1",
        ("127.0.0.1", 0),
        ("127.0.0.1", "x"),
        ("", 4000),
        12345,
    ],
)
def test_bad_bootstrap_entries_raise_value_error_naming_them(
    make: Callable[..., DHT], bad: Any
) -> None:
    with pytest.raises(ValueError, match="bootstrap") as info:
        make(bootstrap=[f"{LOCAL}:4000", bad])
    shown = str(info.value)
    assert repr(bad) in shown or (isinstance(bad, str) and bad.split(":")[0] in shown)


def test_bootstrap_to_nobody_is_ready_but_bootstrap_raises(make: Callable[..., DHT]) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((LOCAL, 0))
    try:
        node = make(bootstrap=[silent.getsockname()], timeout=0.2)
        assert node.ready(TIMEOUT)
        assert node.nodes() == []
        with pytest.raises(QueryError, match="No nodes responded"):
            node.bootstrap()
        with pytest.raises(RequestTimeout):
            node.ping(silent.getsockname())
    finally:
        silent.close()
