"""The query state machine on its own, against a fake host and a synthetic
network of ids: no sockets, no clock but the ``now`` the test passes.

What is checked: the candidate lists stay bounded by k whatever the network
size (the cost of a response must not grow with it), the walk still ends at
the k closest ids, an explicit node list is queried as given, and a finished
query keeps no candidates.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdht import messages
from hyperdht.dhtrpc.query import Query, QueryNode, QueryOptions, _Closest
from hyperdht.ipencoding import Address, Node, node_codec

CODEC = node_codec(False)
K = 20


def distance(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


class _Table:
    def __init__(self, contacts: list[Node]) -> None:
        self.contacts = contacts

    def closest(self, target: bytes, n: int) -> list[Node]:
        return sorted(self.contacts, key=lambda c: distance(c.id, target))[:n]


class FakeNetwork:
    """``size`` nodes; each answers a query with the k ids closest to the
    target among the nodes it knows (all of them: the best case, enough
    to check the walk)."""

    def __init__(self, size: int, seed: int) -> None:
        rng = random.Random(seed)
        self.nodes = [
            Node(rng.randbytes(32), Address(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 4000))
            for i in range(1, size + 1)
        ]
        self.by_address = {n.address: n for n in self.nodes}

    def closest(self, target: bytes, n: int = K) -> list[Node]:
        return sorted(self.nodes, key=lambda c: distance(c.id, target))[:n]

    def answer(self, addr: Address, target: bytes) -> messages.RpcResponse:
        node = self.by_address[addr]
        listed = b"".join(CODEC.encode(c) for c in self.closest(target))
        return messages.RpcResponse(id=node.id, nodes=listed, roundtrip_token=b"t" * 32)


class FakeHost:
    """The :class:`~hyperdht.dhtrpc.query.QueryHost` a query runs on:
    requests are recorded, the test answers them."""

    def __init__(self, own: bytes, table: list[Node], concurrency: int = 3) -> None:
        self.id = own
        self.query_id: bytes | None = own
        self.closed = False
        self.concurrency = concurrency
        self.table = _Table(table)
        self.bootstrap_nodes: list[Address] = []
        self.node_codec = CODEC
        self.inflight_queries = 0
        self.sent: list[tuple[messages.RpcRequest, Address, Callable[..., None]]] = []
        self.drops: list[str] = []

    @property
    def requests_in_flight(self) -> int:
        return len(self.sent)

    def query_started(self) -> None:
        self.inflight_queries += 1

    def query_ended(self) -> None:
        self.inflight_queries -= 1

    def request(
        self,
        request: messages.RpcRequest,
        addr: Address,
        callback: Callable[..., None],
        now: float,
        *,
        any_source: bool = False,
    ) -> Callable[[], None]:
        self.sent.append((request, addr, callback))
        return lambda: None

    def holepunch_request(self, peer: Address) -> messages.RpcRequest:
        return messages.RpcRequest(command="_ping")

    def open_path(self, id: bytes, addr: Address) -> bool:
        return False

    def drop(self, reason: str) -> None:
        self.drops.append(reason)


def run_query(
    net: FakeNetwork, host: FakeHost, query: Query, check: Callable[[Query], None]
) -> list[Address]:
    """Answer the query's requests in the order sent until it is done;
    ``check`` runs after every response. Returns the addresses asked."""
    asked: list[Address] = []
    query.start(0.0)
    now = 0.0
    while host.sent:
        request, addr, callback = host.sent.pop(0)
        asked.append(addr)
        now += 0.01
        assert request.target is not None
        callback(None, net.answer(addr, request.target), addr, now)
        check(query)
    assert query.done
    return asked


def bounded(query: Query) -> None:
    for kept in (query._pending, query._closest):
        assert len(kept.nodes) == len(kept.distances) == len(kept.ids) <= K
        assert kept.distances == sorted(kept.distances)
        assert [n.distance for n in kept.nodes] == kept.distances
        assert set(kept.ids) == {n.id for n in kept.nodes}


def test_a_walk_over_a_large_network_keeps_k_candidates_and_ends_at_the_k_closest() -> None:
    net = FakeNetwork(3000, seed=1)
    rng = random.Random(2)
    start = rng.sample(net.nodes, 5)
    target = rng.randbytes(32)
    host = FakeHost(rng.randbytes(32), start)
    query = Query(host, "_find_node", target, None)
    asked = run_query(net, host, query, bounded)
    expected = {n.address for n in net.closest(target)}
    assert expected <= set(asked)
    assert len(asked) == len(set(asked))  # nobody is asked twice
    assert query.responses == len(asked)
    assert query.error is None


def test_an_update_commits_to_the_k_closest_responders_with_their_tokens() -> None:
    net = FakeNetwork(500, seed=3)
    rng = random.Random(4)
    target = rng.randbytes(32)
    host = FakeHost(rng.randbytes(32), rng.sample(net.nodes, 5))
    query = Query(host, "_find_node", target, None, QueryOptions(update=True))
    commits: list[Address] = []
    query.start(0.0)
    while host.sent:
        request, addr, callback = host.sent.pop(0)
        if request.roundtrip_token is not None:
            commits.append(addr)
        assert request.target is not None
        callback(None, net.answer(addr, request.target), addr, 1.0)
        bounded(query)
    assert query.done and query.error is None
    assert set(commits) == {n.address for n in net.closest(target)}
    assert query.commits == K


def test_an_explicit_node_list_is_queried_as_given_and_not_walked() -> None:
    net = FakeNetwork(100, seed=5)
    far, near = net.nodes[0], net.nodes[1]
    host = FakeHost(bytes(32), [])
    # Two id-less addresses (same blank id) and two nodes, in that order.
    given_nodes = [far.address, near.address, far, near]
    query = Query(host, "_find_node", near.id, None, QueryOptions(nodes=tuple(given_nodes)))
    asked = run_query(net, host, query, lambda q: None)
    assert asked == [far.address, near.address, far.address, near.address]


def test_a_finished_query_keeps_no_candidates() -> None:
    net = FakeNetwork(200, seed=6)
    rng = random.Random(7)
    host = FakeHost(rng.randbytes(32), rng.sample(net.nodes, 5))
    query = Query(host, "_find_node", rng.randbytes(32), None)
    run_query(net, host, query, lambda q: None)
    assert len(query._pending) == 0 and len(query._closest) == 0
    assert query.results  # the results stay readable


def test_our_own_id_and_bad_nodes_are_never_candidates() -> None:
    net = FakeNetwork(50, seed=8)
    own = net.nodes[0]
    host = FakeHost(own.id, [net.nodes[1]])
    query = Query(host, "_find_node", own.id, None)
    asked = run_query(net, host, query, lambda q: None)
    assert own.address not in asked
    # A truncated nodes field is dropped, counted, and the query goes on.
    host2 = FakeHost(own.id, [net.nodes[1]])
    q2 = Query(host2, "_find_node", own.id, None)
    q2.start(0.0)
    _, addr, callback = host2.sent.pop(0)
    callback(None, messages.RpcResponse(id=net.nodes[1].id, nodes=b"\x01" * 7), addr, 0.1)
    assert host2.drops == ["bad_nodes"]
    assert q2.done and q2.error is None


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 25),
    distances=st.lists(st.integers(0, 2**16), max_size=120),
)
def test_closest_keeps_the_limit_closest_distinct_ids(limit: int, distances: list[int]) -> None:
    kept = _Closest(limit)
    for d in distances:
        # One id per distance, as with XOR distances to one target.
        kept.insert(QueryNode(d.to_bytes(4, "big"), Address("10.0.0.1", 1), d))
        assert len(kept) <= limit
    assert kept.distances == sorted(set(distances))[:limit]
    assert [n.distance for n in kept.nodes] == kept.distances
    assert set(kept.ids) == {n.id for n in kept.nodes}


def test_the_rejection_test_matches_insert() -> None:
    kept = _Closest(2)
    for d in (5, 9):
        assert kept.insert(QueryNode(bytes([d]), Address("10.0.0.1", 1), d))
    assert kept.rejects(9) and kept.rejects(10) and not kept.rejects(8)
    assert not kept.insert(QueryNode(bytes([10]), Address("10.0.0.1", 1), 10))
    assert kept.insert(QueryNode(bytes([1]), Address("10.0.0.1", 1), 1))
    assert kept.distances == [1, 5]
    assert not kept.insert(QueryNode(bytes([1]), Address("10.0.0.1", 2), 1))  # same id
