"""The DHT on the in-memory network: queries over hundreds of nodes, table
maintenance, the concurrency cap and hole punching through NATs.

Everything runs on the simulator's virtual clock (blocking calls run the
event loop), so minutes of protocol take milliseconds and a run is the same
every time: node ids come from seeded generators.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from hyperdht import messages
from hyperdht.dhtrpc import (
    DHT,
    DHTCore,
    IncomingQuery,
    QueryResponse,
    QueryStream,
    RemoteNode,
    collect_stream,
)
from hyperdht.dhtrpc.core import K
from hyperdht.errors import QueryError, RequestTimeout
from hyperdht.future import Future
from hyperdht.ipencoding import Address, Node
from hyperdht.testing import MappingBehavior, Network, TraceEvent

BOOT = Address("198.18.0.1", 49737)
#: A bootstrap address where nothing listens: requests to it time out.
DEAD = Address("198.18.0.2", 49737)
N_NODES = 300


def xor(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def closest(ids: list[bytes], target: bytes, n: int = K) -> list[bytes]:
    return sorted(ids, key=lambda i: xor(i, target))[:n]


class Swarm:
    """A network of ``n`` public DHT nodes bootstrapped from one ephemeral node."""

    def __init__(self, n: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.net = Network(seed=seed, latency=0.01, jitter=0.005)
        self.boot = DHT(backend=self.net.host(BOOT.host), port=BOOT.port, ephemeral=True)
        self.nodes = [self.add() for _ in range(n)]
        for node in self.nodes:
            assert node.ready(timeout=60)

    def add(self, **kw: Any) -> DHT:
        kw.setdefault("bootstrap", [BOOT])
        return DHT(id=self.rng.randbytes(32), backend=self.net.host(), **kw)

    @property
    def ids(self) -> list[bytes]:
        return [n.id for n in self.nodes]

    def by_id(self, nid: bytes) -> DHT:
        return next(n for n in self.nodes if n.id == nid)

    def others(self, node: DHT) -> list[bytes]:
        return [i for i in self.ids if i != node.id]


@pytest.fixture(scope="module")
def swarm() -> Iterator[Swarm]:
    s = Swarm(N_NODES, seed=7)
    yield s
    for node in s.nodes:
        node.close()
    s.boot.close()


def handle_everywhere(swarm: Swarm, command: str, *, update: bool, fn: Any) -> None:
    for node in swarm.nodes:
        register = node.on_update if update else node.on_query
        register(command, fn(node))


# -- bootstrap and queries at scale ----------------------------------------------


def test_bootstrap_populates_every_routing_table(swarm: Swarm) -> None:
    sizes = [len(n.nodes()) for n in swarm.nodes]
    assert min(sizes) >= K
    ids = set(swarm.ids)
    for node in swarm.nodes:
        known = node.nodes()
        assert node.id not in {c.id for c in known}
        assert {c.id for c in known} <= ids  # the ephemeral bootstrap is nowhere
        for contact in known:
            # Stored with the address the node really has.
            assert swarm.by_id(contact.id).address == contact.address


def first_diff(a: bytes, b: bytes) -> int:
    """The first bit at which two 32-byte ids differ (their bucket depth)."""
    return 256 - xor(a, b).bit_length()


@pytest.mark.parametrize("bootstrap", [[BOOT], [DEAD, BOOT]], ids=["one", "first-is-down"])
def test_after_bootstrap_nodes_know_someone_across_each_leading_bit(
    bootstrap: list[Address],
) -> None:
    """A young network joined through one full node. A bootstrap walks
    towards the node's own id, so without the fill after it a node that
    shares its first bits with the bootstrap node would know nobody across
    them, and an announce or lookup for a key there could stay among such
    nodes. After it, every node has a contact in each of the first buckets
    whose range the bootstrap node knows someone in, and every lookup of a
    random target from every node reaches the target's closest node; also
    when the first bootstrap node listed never answers (the fill then asks
    the next one)."""
    rng = random.Random(5)
    net = Network(seed=5, latency=0.01, jitter=0.005)
    boot = DHT(id=rng.randbytes(32), backend=net.host(BOOT.host), port=BOOT.port)
    net.host(DEAD.host)  # a machine, so no node gets its address; nothing listens
    nodes = []
    for _ in range(200):
        node = DHT(id=rng.randbytes(32), backend=net.host(), bootstrap=bootstrap)
        assert node.ready(timeout=60)
        nodes.append(node)
    try:
        # The fills: a round trip to the bootstrap node (after a timeout
        # when the first is down), then the pings.
        net.run_for(10.0)
        boot_known = [c.id for c in boot.nodes()]
        checked = 0
        for node in nodes:
            known = {first_diff(node.id, c.id) for c in node.nodes()}
            for depth in range(3):
                if any(first_diff(node.id, i) == depth for i in boot_known):
                    assert depth in known, (node.id.hex(), depth)
                    checked += 1
        assert checked > 200  # a shallow bucket per node at least, on average
        ids = [n.id for n in nodes] + [boot.id]
        for node in nodes:
            target = rng.randbytes(32)
            results = collect_stream(node.query("_find_node", target))
            best = closest([i for i in ids if i != node.id], target, 1)
            assert set(best) <= {r.node.id for r in results}, node.id.hex()
    finally:
        for node in nodes:
            node.close()
        boot.close()


def test_the_background_bootstrap_keeps_no_responses(swarm: Swarm) -> None:
    # Nobody reads the initial bootstrap's results: a node must not keep
    # its ~30 responses (~10 KB) for life, a thousand nodes per process.
    for node in swarm.nodes:
        query = node.bootstrap_query
        assert query is not None and query.done
        assert query.responses >= K
        assert len(query.results) == 0


def test_query_from_any_node_reaches_the_20_closest(swarm: Swarm) -> None:
    handle_everywhere(swarm, "whoami", update=False, fn=lambda node: lambda n, q: node.id)
    rng = random.Random(1)
    for _ in range(12):
        target = rng.randbytes(32)
        origin = rng.choice(swarm.nodes)
        results = collect_stream(origin.query("whoami", target))
        for r in results:
            assert r.value == r.node.id  # each node's own value, from its address
            assert swarm.by_id(r.node.id).address == r.node.address
        got = {r.node.id for r in results}
        assert set(closest(swarm.others(origin), target)) <= got


def test_find_node_query_reaches_the_closest_too(swarm: Swarm) -> None:
    target = random.Random(2).randbytes(32)
    origin = swarm.nodes[0]
    results = collect_stream(origin.query("_find_node", target))
    assert set(closest(swarm.others(origin), target)) <= {r.node.id for r in results}


def test_update_commits_to_the_k_closest_with_their_tokens(swarm: Swarm) -> None:
    committed: list[tuple[bytes, IncomingQuery]] = []

    def on_update(node: DHT) -> Any:
        def handler(remote: RemoteNode, q: IncomingQuery) -> bytes:
            committed.append((node.id, q))
            return b"stored"

        return handler

    handle_everywhere(swarm, "store", update=False, fn=lambda node: lambda n, q: b"seen")
    handle_everywhere(swarm, "store", update=True, fn=on_update)
    rng = random.Random(3)
    target = rng.randbytes(32)
    origin = rng.choice(swarm.nodes)
    stream = origin.update("store", target, b"payload")
    results = collect_stream(stream)

    expected = set(closest(swarm.others(origin), target))
    assert {nid for nid, _ in committed} == expected
    assert len(committed) == K  # each committed once
    for _, q in committed:
        assert q.is_update and q.roundtrip_token is not None
        assert q.value == b"payload" and q.node == RemoteNode(origin.id, origin.address)
    # Only commit responses are yielded.
    assert [r.value for r in results] == [b"stored"] * K
    assert {r.node.id for r in results} == expected
    assert stream.commits == K and stream.responses > K


def test_verbose_update_also_yields_the_query_phase(swarm: Swarm) -> None:
    handle_everywhere(swarm, "note", update=False, fn=lambda node: lambda n, q: b"seen")
    handle_everywhere(swarm, "note", update=True, fn=lambda node: lambda n, q: b"stored")
    origin = swarm.nodes[5]
    target = random.Random(4).randbytes(32)
    results = collect_stream(origin.update("note", target, b"x", verbose=True))
    values = [r.value for r in results]
    assert values.count(b"stored") == K
    assert values.count(b"seen") >= K
    stored = {r.node.id for r in results if r.value == b"stored"}
    assert stored == set(closest(swarm.others(origin), target))


def test_update_whose_commit_gets_no_answer_fails(swarm: Swarm) -> None:
    def refuse(node: DHT) -> Any:
        def handler(remote: RemoteNode, q: IncomingQuery) -> bytes:
            raise RuntimeError("full")

        return handler

    handle_everywhere(swarm, "refused", update=True, fn=refuse)
    stream = swarm.nodes[9].update("refused", random.Random(5).randbytes(32))
    with pytest.raises(QueryError, match="No close nodes responded"):
        collect_stream(stream)
    assert stream.responses >= K and stream.commits == 0


def test_query_with_explicit_nodes_asks_exactly_those(swarm: Swarm) -> None:
    asked: list[bytes] = []

    def record(node: DHT) -> Any:
        def handler(remote: RemoteNode, q: IncomingQuery) -> None:
            asked.append(node.id)

        return handler

    handle_everywhere(swarm, "only", update=False, fn=record)
    chosen = swarm.nodes[10:13]
    origin = swarm.nodes[0]
    target = chosen[0].id  # their neighbours would be closer still
    as_addresses = [(n.address.host, n.address.port) for n in chosen[:2]]
    as_nodes = [Node(chosen[2].id, chosen[2].address)]
    results = collect_stream(origin.query("only", target, nodes=[*as_addresses, *as_nodes]))
    assert sorted(asked) == sorted(n.id for n in chosen)
    assert {r.node.id for r in results} == {n.id for n in chosen}


def test_query_from_a_node_without_contacts_starts_at_the_bootstrap(swarm: Swarm) -> None:
    entry = swarm.nodes[17]
    served = entry.stats.requests_served["probe"]
    handle_everywhere(swarm, "probe", update=False, fn=lambda node: lambda n, q: None)
    # A bare core with an empty table and one bootstrap address (ephemeral,
    # so that no table keeps it after the test).
    driver = swarm.net.host().create_driver()
    core = DHTCore(ephemeral=True, bootstrap=[entry.address], now=driver.now())
    driver.start(core)
    try:
        target = random.Random(6).randbytes(32)
        with driver.locked():
            query = core.query("probe", target, now=driver.now())
        results = collect_stream(QueryStream[QueryResponse](driver, query))
        assert entry.stats.requests_served["probe"] == served + 1
        assert set(closest(swarm.ids, target)) <= {r.node.id for r in results}
    finally:
        core.close()
        driver.close()


def test_no_node_responding_is_an_error(swarm: Swarm) -> None:
    lonely = swarm.add(bootstrap=[Address("198.18.200.1", 49737)])  # nobody there
    try:
        assert lonely.ready(timeout=30)
        stream = lonely.query("whoami", bytes(32))
        with pytest.raises(QueryError, match="No nodes responded") as info:
            collect_stream(stream)
        assert info.value.responses == []
        assert stream.warnings and all(isinstance(w, RequestTimeout) for w in stream.warnings)
        with pytest.raises(QueryError, match="No nodes responded"):
            lonely.bootstrap()
    finally:
        lonely.close()


def test_closing_a_stream_cancels_the_query(swarm: Swarm) -> None:
    origin = swarm.nodes[20]
    sent: list[bytes] = []

    def trace(ev: TraceEvent) -> None:
        if (
            ev.kind == "send"
            and ev.src == origin.address
            and ev.data[0] & 0x80
            and messages.decode_request(ev.data[2:]).command == "cancel-me"
        ):
            sent.append(ev.data)

    handle_everywhere(swarm, "cancel-me", update=False, fn=lambda node: lambda n, q: b"x")
    swarm.net.trace = trace
    try:
        stream = origin.query("cancel-me", random.Random(8).randbytes(32), concurrency=2)
        first = next(stream)
        assert first.value == b"x"
        stream.close()
        before = len(sent)
        swarm.net.run_for(10.0)
        assert len(sent) == before  # nothing more went out for it
        list(stream)  # ends (buffered results, if any, then stop)
        assert stream.done and stream.error is None
    finally:
        swarm.net.trace = None


# -- timeouts and concurrency ----------------------------------------------------


def test_a_silent_address_times_out_after_1_25_to_1_5_virtual_seconds() -> None:
    net = Network(seed=4)
    node = DHT(backend=net.host())
    for silent in (Address("198.18.100.1", 1000), Address("198.18.100.2", 1000)):
        net.run_for(0.1)  # not on a tick boundary
        start = net.now
        with pytest.raises(RequestTimeout):
            node.ping(silent)
        assert 1.25 <= net.now - start <= 1.5
    assert node.stats.timeouts == 2
    node.close()


def test_never_more_than_concurrency_requests_in_flight_and_none_lost() -> None:
    net = Network(seed=3, latency=0.02, jitter=0.03)
    peers = [DHT(backend=net.host()) for _ in range(20)]
    node = DHT(backend=net.host(), concurrency=2)
    silent = [Address(f"198.18.100.{i}", 1000) for i in range(1, 6)]
    targets = [p.address for p in peers] * 2 + silent
    random.Random(1).shuffle(targets)
    core = node.core
    with node.driver.locked():
        futures: list[Future[Address]] = [core.ping(t, now=node.driver.now()) for t in targets]
    peak = 0
    while not all(f.done() for f in futures):
        assert net.step(), "the network went idle with requests unfinished"
        assert core.udp.inflight <= 2
        peak = max(peak, core.udp.inflight)
    assert peak == 2
    answered = [f for f in futures if f.exception() is None]
    timed_out = [f for f in futures if isinstance(f.exception(), RequestTimeout)]
    assert len(answered) == 40 and len(timed_out) == len(silent)
    assert {f.result() for f in answered} == {node.address}


# -- maintenance -----------------------------------------------------------------


def test_a_node_that_disappears_is_removed_by_maintenance() -> None:
    swarm = Swarm(8, seed=11)
    victim = swarm.nodes[3]
    alive = [n for n in swarm.nodes if n is not victim]
    knew = [n for n in alive if victim.id in {c.id for c in n.nodes()}]
    assert knew
    before = {n.id: {c.id for c in n.nodes()} for n in alive}
    victim.close()

    def forgotten() -> bool:
        return all(victim.id not in {c.id for c in n.nodes()} for n in knew)

    start = swarm.net.now
    assert swarm.net.run_until(forgotten, timeout=600)
    # Maintenance runs on every 8th 5-s tick: it took at least one round.
    assert swarm.net.now - start >= 35
    for node in alive:
        # Contacts that answer their pings stay.
        assert before[node.id] - {victim.id} <= {c.id for c in node.nodes()}


# -- hole punching ---------------------------------------------------------------


class Punch:
    """Referrer R (public), A behind a NAT (bootstrapped via R), B public
    (or behind its own NAT) that never talked to A."""

    def __init__(
        self,
        a_mapping: MappingBehavior = "endpoint-independent",
        b_nat: MappingBehavior | None = None,
    ) -> None:
        self.net = Network(seed=5, latency=0.01)
        rng = random.Random(5)
        self.r = DHT(id=rng.randbytes(32), backend=self.net.host(BOOT.host), port=BOOT.port)
        nat = self.net.nat("203.0.113.1", mapping=a_mapping, filtering="port-restricted")
        self.a = DHT(
            id=rng.randbytes(32), backend=self.net.host("10.0.0.2", nat=nat), bootstrap=[BOOT]
        )
        assert self.a.ready(timeout=30)
        self.a_public = self.a.ping(BOOT)
        assert self.a_public.host == "203.0.113.1"
        assert Node(self.a.id, self.a_public) in self.r.nodes()
        if b_nat is None:
            b_host = self.net.host("198.18.0.9")
        else:
            b_nat_dev = self.net.nat("203.0.113.2", mapping=b_nat, filtering="port-restricted")
            b_host = self.net.host("10.0.0.3", nat=b_nat_dev)
        self.b = DHT(id=rng.randbytes(32), backend=b_host)


def test_holepunch_through_a_port_restricted_nat() -> None:
    p = Punch()
    with pytest.raises(RequestTimeout):
        p.b.ping(p.a_public)  # the NAT filters a stranger
    forwarded = p.r.stats.forwarded
    got = p.b.holepunch(p.a_public, BOOT)
    assert got == p.a_public
    assert p.r.stats.forwarded == forwarded + 1
    # The hole is open: direct traffic works both ways.
    assert p.b.ping(got) == p.b.address
    inbox_a: list[tuple[bytes, Address]] = []
    inbox_b: list[tuple[bytes, Address]] = []
    p.a.on_datagram(lambda data, src: inbox_a.append((data, src)))
    p.b.on_datagram(lambda data, src: inbox_b.append((data, src)))
    p.b.send_datagram(b"hello A", got)
    assert p.net.run_until(lambda: bool(inbox_a), timeout=5)
    assert inbox_a == [(b"hello A", p.b.address)]
    p.a.send_datagram(b"hello B", p.b.address)
    assert p.net.run_until(lambda: bool(inbox_b), timeout=5)
    assert inbox_b == [(b"hello B", p.a_public)]


def test_holepunch_through_a_symmetric_nat_uses_the_punched_address() -> None:
    p = Punch(a_mapping="symmetric")
    with pytest.raises(RequestTimeout):
        p.b.ping(p.a_public)
    got = p.b.holepunch(p.a_public, BOOT)
    # A's answer left through a new mapping: that is the address to use.
    assert got.host == p.a_public.host and got.port != p.a_public.port
    assert p.b.ping(got) == p.b.address
    with pytest.raises(RequestTimeout):
        p.b.ping(p.a_public)


def test_holepunch_between_two_symmetric_nats_fails_with_a_timeout() -> None:
    p = Punch(a_mapping="symmetric", b_nat="symmetric")
    with pytest.raises(RequestTimeout, match="timed out"):
        p.b.holepunch(p.a_public, BOOT)
    assert p.r.stats.forwarded == 1  # the referrer did its part


class PunchQuery:
    """What B's query for A's id gave."""

    def __init__(
        self, results: list[QueryResponse], asked: list[RemoteNode], stream: Any, forwards: int
    ) -> None:
        self.results = results
        self.asked = asked
        self.stream = stream
        self.forwards = forwards


def holepunch_query(p: Punch, *, holepunching: bool) -> PunchQuery:
    """A few more public nodes join via R (they reach A through hole
    punches of their own); then B, knowing only R, queries A's id with a
    bare core (no bootstrap first, so A's NAT has never seen B)."""
    rng = random.Random(6)
    extra = [DHT(id=rng.randbytes(32), backend=p.net.host(), bootstrap=[BOOT]) for _ in range(4)]
    for node in extra:
        assert node.ready(timeout=30)
    forwarded = p.r.stats.forwarded
    asked: list[RemoteNode] = []
    p.a.on_query("find", lambda remote, q: asked.append(remote) or b"it's A")
    driver = p.net.host("198.18.0.50").create_driver()
    core = DHTCore(id=bytes(32), bootstrap=[BOOT], now=driver.now())
    driver.start(core)
    with driver.locked():
        query = core.query("find", p.a.id, now=driver.now(), holepunching=holepunching)
    stream = QueryStream[QueryResponse](driver, query)
    results = collect_stream(stream)
    core.close()
    driver.close()
    return PunchQuery(results, asked, stream, p.r.stats.forwarded - forwarded)


def test_query_reaches_a_natted_node_through_the_automatic_holepunch() -> None:
    p = Punch()
    run = holepunch_query(p, holepunching=True)
    from_a = [r for r in run.results if r.node.id == p.a.id]
    assert [r.value for r in from_a] == [b"it's A"]
    assert from_a[0].node.address == p.a_public
    [remote] = run.asked
    assert remote.address == Address("198.18.0.50", 49152)
    assert run.forwards == 1


def test_query_reaches_a_node_behind_a_symmetric_nat_at_the_punched_address() -> None:
    p = Punch(a_mapping="symmetric")
    run = holepunch_query(p, holepunching=True)
    from_a = [r for r in run.results if r.node.id == p.a.id]
    assert [r.value for r in from_a] == [b"it's A"]
    # Not the address the referrer knew: the one the punched answer came from.
    assert from_a[0].node.address.host == p.a_public.host
    assert from_a[0].node.address not in {c.address for c in p.r.nodes()}
    assert run.forwards == 1


def test_query_without_holepunching_cannot_reach_the_natted_node() -> None:
    p = Punch()
    run = holepunch_query(p, holepunching=False)
    assert p.a.id not in {r.node.id for r in run.results}
    assert run.asked == []
    assert any(isinstance(w, RequestTimeout) for w in run.stream.warnings)
    assert run.forwards == 0
