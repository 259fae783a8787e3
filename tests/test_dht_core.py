"""The DHT node's protocol logic, driven with hand-made datagrams.

Every test talks to a :class:`DHTCore` the way the network would: encoded
datagrams and a ``now`` go in, datagrams come out of
``datagrams_to_send()``, and time moves only when the test calls
``handle_timer``. No sockets, no threads, no sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdht import messages
from hyperdht.dhtrpc import DEFER, DHTCore, IncomingQuery, RemoteNode
from hyperdht.dhtrpc.core import MAINTENANCE_INTERVAL, K
from hyperdht.dhtrpc.tokens import ROTATE_INTERVAL
from hyperdht.errors import RequestTimeout
from hyperdht.future import Future
from hyperdht.ipencoding import Address, Node, node_codec, peer_codec
from hyperdht.messages import RpcRequest, RpcResponse

PEERS = peer_codec(False)
NODES = node_codec(False)

A = Address("10.0.0.1", 5000)
B = Address("10.0.0.2", 6000)
SILENT = Address("10.9.9.9", 9999)


# -- helpers ----------------------------------------------------------------------


@dataclass
class Sent:
    """One datagram the core queued, decoded."""

    tid: int
    request: RpcRequest | None
    response: RpcResponse | None
    to: Address


def make_core(seed: int = 1, **kw: Any) -> DHTCore:
    rng = random.Random(seed)
    return DHTCore(rng=rng, random_bytes=rng.randbytes, **kw)


def frame_request(tid: int, req: RpcRequest) -> bytes:
    return (0x8000 | tid).to_bytes(2, "big") + messages.encode_request(req)


def frame_response(tid: int, res: RpcResponse) -> bytes:
    return tid.to_bytes(2, "big") + messages.encode_response(res)


def drain(core: DHTCore) -> list[Sent]:
    out = []
    for data, to, _options in core.datagrams_to_send():
        header = int.from_bytes(data[:2], "big")
        tid = header & 0x7FFF
        if header & 0x8000:
            out.append(Sent(tid, messages.decode_request(data[2:]), None, to))
        else:
            out.append(Sent(tid, None, messages.decode_response(data[2:]), to))
    return out


def requests_out(sent: list[Sent]) -> list[Sent]:
    return [s for s in sent if s.request is not None]


def responses_out(sent: list[Sent]) -> list[Sent]:
    return [s for s in sent if s.response is not None]


def deliver(
    core: DHTCore, req: RpcRequest, src: Address, *, tid: int = 7, now: float = 0.0
) -> list[Sent]:
    """Feed ``req`` from ``src``; return what the core sent in reaction."""
    core.receive_datagram(frame_request(tid, req), src, now)
    return drain(core)


def ask(core: DHTCore, req: RpcRequest, src: Address, now: float = 0.0) -> RpcResponse | None:
    """Feed ``req`` and return the one response to ``src``, or None if the
    core did not answer."""
    answers = [s for s in responses_out(deliver(core, req, src, now=now)) if s.to == src]
    assert len(answers) <= 1
    return answers[0].response if answers else None


def answer(core: DHTCore, sent: Sent, res: RpcResponse, now: float = 0.0) -> None:
    """Reply to a request the core sent, from the address it went to."""
    core.receive_datagram(frame_response(sent.tid, res), sent.to, now)


def advance(core: DHTCore, until: float) -> None:
    """Run every timer due up to ``until``, in order, as a driver would."""
    while (t := core.get_timer()) is not None and t <= until:
        core.handle_timer(t)


def addr(i: int) -> Address:
    return Address(f"10.1.{i // 250}.{i % 250 + 1}", 4000 + i)


def xor(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def far_id(own: bytes, rng: random.Random) -> bytes:
    """An id whose first bit differs from ``own``: it lands in the farthest
    bucket, which never splits once the table has split on that bit."""
    return bytes([own[0] ^ 0x80]) + rng.randbytes(31)


def ping_req(id: bytes | None) -> RpcRequest:
    return RpcRequest(command="_ping", id=id)


def pong(id: bytes, to: Address) -> RpcResponse:
    return RpcResponse(id=id, value=PEERS.encode(to), roundtrip_token=b"t" * 32)


# -- built-in commands -----------------------------------------------------------


def test_ping_returns_the_requesters_address_and_a_token() -> None:
    core = make_core()
    res = ask(core, ping_req(b"\x01" * 32), A)
    assert res is not None
    assert res.id == core.id
    assert res.value is not None and len(res.value) == 6
    assert PEERS.decode(res.value) == A
    assert res.roundtrip_token is not None and len(res.roundtrip_token) == 32
    assert core.stats.requests_served["_ping"] == 1


def test_ping_answers_with_the_same_tid() -> None:
    core = make_core()
    [sent] = deliver(core, ping_req(None), A, tid=0x1234)
    assert sent.tid == 0x1234 and sent.response is not None and sent.to == A


def test_find_node_returns_the_20_closest_in_node_encoding() -> None:
    core = make_core()
    rng = random.Random(5)
    for i in range(80):
        deliver(core, ping_req(rng.randbytes(32)), addr(i))
    known = core.nodes()
    assert len(known) > K
    for _ in range(10):
        target = rng.randbytes(32)
        res = ask(core, RpcRequest(command="_find_node", target=target), B)
        assert res is not None and res.nodes is not None
        assert len(res.nodes) == K * 38
        listed = NODES.decode_list(res.nodes)
        expected = sorted(known, key=lambda n: xor(n.id, target))[:K]
        assert listed == expected
        assert core.id not in [n.id for n in listed]
        assert res.id == core.id and res.roundtrip_token is not None


def test_find_node_with_a_small_table_lists_everything_it_knows() -> None:
    core = make_core()
    ids = [bytes([i]) * 32 for i in range(1, 4)]
    for i, nid in enumerate(ids):
        deliver(core, ping_req(nid), addr(i))
    res = ask(core, RpcRequest(command="_find_node", target=bytes(32)), B)
    assert res is not None and res.nodes is not None
    assert sorted(NODES.decode_list(res.nodes), key=lambda n: n.id) == [
        Node(nid, addr(i)) for i, nid in enumerate(ids)
    ]


def test_find_node_on_an_empty_table_answers_empty_nodes() -> None:
    core = make_core()
    res = ask(core, RpcRequest(command="_find_node", target=bytes(32)), A)
    assert res is not None and res.nodes == b""


@pytest.mark.parametrize("command", ["_find_node", "anything"])
@pytest.mark.parametrize("target", [None, b"", b"\x01" * 31, b"\x01" * 33])
def test_target_not_32_bytes_gets_no_response(command: str, target: bytes | None) -> None:
    core = make_core()
    calls: list[IncomingQuery] = []
    core.on_request("anything", calls.append, update=False)
    assert ask(core, RpcRequest(command=command, target=target), A) is None
    assert core.stats.drops["bad_target"] == 1
    assert calls == []


# -- queries and updates ---------------------------------------------------------


def test_query_without_handler_still_answers_with_nodes() -> None:
    core = make_core()
    deliver(core, ping_req(b"\x05" * 32), B)
    res = ask(core, RpcRequest(command="unknown", target=b"\x04" * 32, value=b"v"), A)
    assert res is not None
    assert res.value is None
    assert res.nodes is not None and NODES.decode_list(res.nodes) == [Node(b"\x05" * 32, B)]
    assert res.id == core.id and res.roundtrip_token is not None


def test_handler_sees_the_query_and_its_value_travels_back() -> None:
    core = make_core()
    seen: list[IncomingQuery] = []

    def handler(q: IncomingQuery) -> bytes:
        seen.append(q)
        return b"answer:" + (q.value or b"")

    core.on_request("echo", handler, update=False)
    rid, target = b"\x02" * 32, b"\x03" * 32
    res = ask(core, RpcRequest(command="echo", id=rid, target=target, value=b"hi"), A)
    assert res is not None and res.value == b"answer:hi"
    [q] = seen
    assert (q.command, q.target, q.value, q.is_update) == ("echo", target, b"hi", False)
    assert q.node == RemoteNode(rid, A)


def test_handler_returning_none_sends_no_value() -> None:
    core = make_core()
    core.on_request("x", lambda q: None, update=False)
    res = ask(core, RpcRequest(command="x", target=bytes(32)), A)
    assert res is not None and res.value is None


@pytest.mark.parametrize("bad", ["raises", "not-bytes"])
def test_failing_handler_means_no_response(bad: str) -> None:
    core = make_core()

    def handler(q: IncomingQuery) -> Any:
        if bad == "raises":
            raise RuntimeError("boom")
        return 42

    core.on_request("x", handler, update=False)
    assert ask(core, RpcRequest(command="x", target=bytes(32)), A) is None
    assert core.stats.handler_errors == 1
    # The node carries on.
    assert ask(core, ping_req(None), A) is not None


def test_deferred_handler_answers_later_on_the_same_tid() -> None:
    core = make_core()
    held: list[IncomingQuery] = []
    core.on_request("slow", lambda q: held.append(q) or DEFER, update=False)
    assert deliver(core, RpcRequest(command="slow", target=bytes(32)), A, tid=99) == []
    core.reply(held[0], b"later")
    [sent] = drain(core)
    assert sent.tid == 99 and sent.to == A
    assert sent.response is not None and sent.response.value == b"later"


def test_builtin_commands_cannot_be_handled() -> None:
    core = make_core()
    for command in ("_ping", "_find_node"):
        with pytest.raises(ValueError, match=command):
            core.on_request(command, lambda q: None, update=False)


# -- round-trip tokens -----------------------------------------------------------


class Recorder:
    """Query and update handlers of ``command`` that record what ran."""

    def __init__(self, core: DHTCore, command: str = "store") -> None:
        self.kinds: list[str] = []
        self.queries: list[IncomingQuery] = []
        core.on_request(command, lambda q: self._on(q, "query"), update=False)
        core.on_request(command, lambda q: self._on(q, "update"), update=True)

    def _on(self, q: IncomingQuery, kind: str) -> bytes:
        self.kinds.append(kind)
        self.queries.append(q)
        return kind.encode()


def store(token: bytes | None) -> RpcRequest:
    return RpcRequest(command="store", target=b"\x09" * 32, value=b"v", roundtrip_token=token)


def test_token_from_the_same_host_makes_an_update() -> None:
    core = make_core()
    rec = Recorder(core)
    res = ask(core, ping_req(None), A)
    assert res is not None
    token = res.roundtrip_token
    # Another port of the same host: the token is bound to the host.
    res = ask(core, store(token), Address(A.host, A.port + 1))
    assert res is not None and res.value == b"update"
    assert rec.kinds == ["update"]
    assert rec.queries[0].is_update and rec.queries[0].roundtrip_token == token


def test_tokens_from_query_responses_work_too() -> None:
    core = make_core()
    rec = Recorder(core)
    res = ask(core, store(None), A)
    assert res is not None and res.value == b"query"
    assert ask(core, store(res.roundtrip_token), A) is not None
    assert rec.kinds == ["query", "update"]


def test_token_issued_to_another_host_is_a_query() -> None:
    core = make_core()
    rec = Recorder(core)
    res = ask(core, ping_req(None), A)
    assert res is not None
    ask(core, store(res.roundtrip_token), B)
    ask(core, store(b"\x00" * 32), A)  # forged
    ask(core, store(b""), A)
    assert rec.kinds == ["query", "query", "query"]
    assert all(q.roundtrip_token is None for q in rec.queries)


def test_token_lives_one_to_two_rotation_periods() -> None:
    core = make_core()
    rec = Recorder(core)
    res = ask(core, ping_req(None), A)
    assert res is not None
    token = res.roundtrip_token
    advance(core, ROTATE_INTERVAL + 1)  # one rotation: still valid
    ask(core, store(token), A, now=ROTATE_INTERVAL + 1)
    advance(core, 2 * ROTATE_INTERVAL + 1)  # two rotations (> 10 min): expired
    ask(core, store(token), A, now=2 * ROTATE_INTERVAL + 1)
    assert rec.kinds == ["update", "query"]


def test_another_nodes_token_is_not_accepted() -> None:
    issuer, other = make_core(1), make_core(2)
    rec = Recorder(other)
    res = ask(issuer, ping_req(None), A)
    assert res is not None
    ask(other, store(res.roundtrip_token), A)
    assert rec.kinds == ["query"]


# -- the routing table ------------------------------------------------------------


def test_ids_in_requests_are_stored_with_their_address() -> None:
    core = make_core()
    nid = b"\x11" * 32
    deliver(core, ping_req(nid), A)
    assert core.nodes() == [Node(nid, A)]
    # A query or an update with an id counts as well, and the newest
    # address wins.
    deliver(core, RpcRequest(command="q", id=nid, target=bytes(32)), B)
    assert core.nodes() == [Node(nid, B)]
    other = b"\x22" * 32
    deliver(core, RpcRequest(command="_find_node", id=other, target=bytes(32)), A)
    assert {n.id: n.address for n in core.nodes()} == {nid: B, other: A}


def test_ids_in_responses_are_stored_with_the_address_they_came_from() -> None:
    core = make_core()
    fut = core.ping(A, now=0.0)
    [sent] = drain(core)
    assert sent.request is not None and sent.request.id == core.id
    nid = b"\x33" * 32
    listed = Node(b"\x44" * 32, B)
    res = RpcResponse(id=nid, value=PEERS.encode(B), nodes=NODES.encode(listed))
    answer(core, sent, res)
    assert fut.result() == B
    # The responder is stored; nodes it merely lists are not.
    assert core.nodes() == [Node(nid, A)]


def test_a_response_from_another_address_completes_nothing() -> None:
    core = make_core()
    fut = core.ping(A, now=0.0)
    [sent] = drain(core)
    core.receive_datagram(frame_response(sent.tid, pong(b"\x33" * 32, A)), B, 0.0)
    assert not fut.done()
    assert core.stats.drops["unexpected_source"] == 1
    assert core.nodes() == []


def test_own_id_is_never_stored() -> None:
    core = make_core()
    deliver(core, ping_req(core.id), A)
    fut = core.ping(B, now=0.0)
    [sent] = drain(core)
    answer(core, sent, pong(core.id, B))
    assert fut.result() == B
    assert core.nodes() == []


def test_ephemeral_node_sends_no_id_and_is_never_stored() -> None:
    eph = make_core(seed=2, ephemeral=True)
    eph.ping(A, now=0.0)
    eph.query("x", bytes(32), now=0.0, nodes=[B])
    sent = drain(eph)
    assert len(sent) == 2
    assert all(s.request is not None and s.request.id is None for s in sent)
    for cmd in ("_ping", "_find_node", "x"):
        res = ask(eph, RpcRequest(command=cmd, target=bytes(32)), A)
        assert res is not None and res.id is None and res.roundtrip_token is not None

    # Feed the ephemeral node's own datagrams to a normal node: it answers
    # them but stores nothing.
    core = make_core(seed=3)
    eph.ping(A, now=0.0)
    [ping] = drain(eph)
    assert ping.request is not None
    core.receive_datagram(frame_request(ping.tid, ping.request), Address("10.2.0.1", 1), 0.0)
    assert len(responses_out(drain(core))) == 1
    assert core.nodes() == []


# -- bad input: dropped, counted, never raised ------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "short"),
        (b"\x80", "short"),
        (b"\x80\x01\xff\xfe\xfd", "app_datagram_unhandled"),  # third byte 0xff
        (b"\x80\x01\x0a\x05hello\x12", "decode"),  # truncated field
        (b"\x80\x01\x12\x02id", "decode"),  # no command
        (b"\x80\x01\x08\x01", "decode"),  # command as a varint
        (b"\x00\x01" + messages.encode_response(RpcResponse(id=b"x" * 32)), "unmatched_response"),
    ],
)
def test_undecodable_datagrams_are_dropped_and_counted(data: bytes, reason: str) -> None:
    core = make_core()
    core.receive_datagram(data, A, 0.0)
    assert core.stats.drops[reason] == 1
    assert drain(core) == []
    assert core.stats.datagrams_in == 1
    assert ask(core, ping_req(None), A) is not None  # still serving


@pytest.mark.parametrize("bad_id", [b"", b"\x01" * 20, b"\x01" * 31, b"\x01" * 33])
def test_wrong_length_id_in_a_request_is_dropped(bad_id: bytes) -> None:
    core = make_core()
    assert ask(core, ping_req(bad_id), A) is None
    assert core.stats.drops["bad_id"] == 1
    assert core.nodes() == []


def test_wrong_length_id_in_a_response_fails_the_request() -> None:
    core = make_core()
    fut = core.ping(A, now=0.0)
    [sent] = drain(core)
    answer(core, sent, pong(b"\x01" * 20, A))
    assert core.stats.drops["bad_id"] == 1
    assert fut.done() and fut.exception() is not None
    assert core.nodes() == []


def test_undecodable_response_fails_the_request_and_is_counted() -> None:
    core = make_core()
    fut = core.ping(A, now=0.0)
    [sent] = drain(core)
    core.receive_datagram(sent.tid.to_bytes(2, "big") + b"\x0a\x40", A, 0.0)
    assert core.stats.drops["decode"] == 1
    assert fut.done() and fut.exception() is not None


def test_forwarded_ping_is_sent_on_with_the_same_tid() -> None:
    core = make_core()
    rid = b"\x66" * 32
    seen: list[tuple[Address, Address]] = []
    core.on_holepunch = lambda src, to: seen.append((src, to))
    req = RpcRequest(command="_ping", id=rid, forward_request=PEERS.encode(B))
    [sent] = deliver(core, req, A, tid=0x321)
    assert sent.to == B and sent.tid == 0x321 and sent.request is not None
    assert sent.request.command == "_ping" and sent.request.id == rid
    assert sent.request.forward_request is None
    assert sent.request.forward_response == PEERS.encode(A)
    assert core.stats.forwarded == 1
    assert seen == [(A, B)]


ENC_B = PEERS.encode(B)
PORT_ZERO = b"\x0a\x00\x00\x02\x00\x00"
T32 = bytes(32)


@pytest.mark.parametrize(
    ("req", "reason"),
    [
        (RpcRequest("_find_node", target=T32, forward_request=ENC_B), "forward_not_ping"),
        (RpcRequest("x", target=T32, forward_request=ENC_B), "forward_not_ping"),
        (RpcRequest("_ping", forward_request=PORT_ZERO), "bad_forward"),
        (RpcRequest("_ping", forward_request=b"\x0a\x00\x00\x02\x17"), "bad_forward"),
        (RpcRequest("_ping", forward_request=b""), "bad_forward"),
        (RpcRequest("_find_node", target=T32, forward_response=ENC_B), "forward_not_ping"),
        (RpcRequest("_ping", forward_response=PORT_ZERO), "bad_forward"),
    ],
)
def test_bad_forwards_are_dropped_and_counted(req: RpcRequest, reason: str) -> None:
    core = make_core()
    assert deliver(core, req, A) == []
    assert core.stats.drops[reason] == 1
    assert core.stats.forwarded == 0


def test_forwarded_ping_is_answered_to_the_original_requester() -> None:
    core = make_core()  # the node behind the NAT
    referrer = Address("198.18.0.1", 49737)
    requester_id = b"\x77" * 32
    req = RpcRequest(command="_ping", id=requester_id, forward_response=PEERS.encode(B))
    [sent] = deliver(core, req, referrer, tid=0x42)
    assert sent.to == B and sent.tid == 0x42 and sent.response is not None
    assert sent.response.id == core.id
    assert PEERS.decode(sent.response.value or b"") == B
    # The requester's id came through the referrer: not stored under the
    # referrer's address.
    assert core.nodes() == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_datagrams_never_raise(payload: bytes, as_request: bool) -> None:
    core = make_core()
    core.ping(A, now=0.0)  # something for a response to match
    [sent] = drain(core)
    header = (0x8000 | 5) if as_request else sent.tid
    core.receive_datagram(header.to_bytes(2, "big") + payload, A, 0.0)
    drain(core)
    core.receive_datagram(payload, A, 0.0)
    drain(core)
    assert core.stats.datagrams_in == 2
    assert ask(core, ping_req(None), B) is not None


# -- timeouts and concurrency -----------------------------------------------------


def test_silent_peer_times_out_after_1_25_to_1_5_seconds() -> None:
    core = make_core()
    failed_at: dict[int, float] = {}
    now = 0.0

    def watch(i: int) -> Callable[[Future[Any]], None]:
        def done(f: Future[Any]) -> None:
            assert isinstance(f.exception(), RequestTimeout)
            failed_at[i] = now

        return done

    sent_at = [0.0, 0.1, 0.24]
    for i, t in enumerate(sent_at):
        core.ping(SILENT, now=t).add_done_callback(watch(i))
    while len(failed_at) < len(sent_at):
        deadline = core.get_timer()
        assert deadline is not None and deadline < 10
        now = deadline
        core.handle_timer(now)
    for i, t in enumerate(sent_at):
        assert 1.25 <= failed_at[i] - t <= 1.5
    assert core.stats.timeouts == 3


def test_concurrency_cap_queues_and_drains_on_responses_and_timeouts() -> None:
    core = make_core(concurrency=2)
    targets = [addr(i) for i in range(12)]
    futures = [core.ping(t, now=0.0) for t in targets]
    now = 0.0
    answered = set()
    while not all(f.done() for f in futures):
        assert core.udp.inflight <= 2
        for s in drain(core):
            # Every second target answers, the others stay silent.
            if targets.index(s.to) % 2 == 0:
                answer(core, s, pong(bytes([targets.index(s.to) + 1]) * 32, s.to), now)
                answered.add(s.to)
                assert core.udp.inflight <= 2
        deadline = core.get_timer()
        assert deadline is not None and deadline < 60
        now = deadline
        core.handle_timer(now)
    assert len(answered) == 6
    assert sum(f.exception() is None for f in futures) == 6
    assert sum(isinstance(f.exception(), RequestTimeout) for f in futures) == 6


# -- maintenance -----------------------------------------------------------------


def test_maintenance_pings_stale_contacts_and_drops_the_silent() -> None:
    core = make_core()
    ids = {name: bytes([i + 1]) * 32 for i, name in enumerate("BCDEF")}
    where = {name: addr(i) for i, name in enumerate("BCDEF")}
    for name in "BCDEF":
        deliver(core, ping_req(ids[name]), where[name], now=0.0)  # tick 0
    t6 = 6 * MAINTENANCE_INTERVAL + 1
    advance(core, t6)
    for name in "DEF":
        deliver(core, ping_req(ids[name]), where[name], now=t6)  # seen at tick 6
    drain(core)

    # Tick 8: the 3 least recently seen are B, C, D; D was seen 2 ticks
    # ago, so only B and C are checked.
    t8 = 8 * MAINTENANCE_INTERVAL
    advance(core, t8)
    pings = requests_out(drain(core))
    assert sorted(s.to for s in pings) == [where["B"], where["C"]]
    assert all(s.request is not None and s.request.command == "_ping" for s in pings)
    [to_b] = [s for s in pings if s.to == where["B"]]
    answer(core, to_b, pong(ids["B"], to_b.to), now=t8)
    advance(core, 8 * MAINTENANCE_INTERVAL + 2)
    assert {n.id for n in core.nodes()} == {ids[n] for n in "BDEF"}
    assert core.stats.timeouts == 1

    # Tick 16 with three queries in flight: only one contact is checked.
    t = 16 * MAINTENANCE_INTERVAL - 0.5
    advance(core, t)
    queries = [core.query("q", bytes(32), now=t, nodes=[SILENT]) for _ in range(3)]
    assert core.inflight_queries == 3
    drain(core)
    advance(core, 16 * MAINTENANCE_INTERVAL)
    pings = [s for s in requests_out(drain(core)) if s.to != SILENT]
    assert [s.to for s in pings] == [where["D"]]
    advance(core, 16 * MAINTENANCE_INTERVAL + 2)
    assert all(q.done for q in queries)
    assert ids["D"] not in {n.id for n in core.nodes()}


# -- a full bucket ---------------------------------------------------------------


def fill_far_bucket(core: DHTCore, rng: random.Random) -> list[tuple[bytes, Address]]:
    """20 contacts in the bucket that differs from us in the first bit."""
    contacts = [(far_id(core.id, rng), addr(i)) for i in range(K)]
    for cid, where in contacts:
        deliver(core, ping_req(cid), where)
    assert len(core.nodes()) == K
    return contacts


def bucket_full_setup(
    bootstrapped: bool = True,
) -> tuple[DHTCore, list[tuple[bytes, Address]], tuple[bytes, Address], list[Sent], float]:
    core = make_core()
    if bootstrapped:
        core.bootstrap(now=0.0)  # nothing to bootstrap from: done at once
        assert core.bootstrapped
    rng = random.Random(9)
    contacts = fill_far_bucket(core, rng)
    t = 3 * MAINTENANCE_INTERVAL + 1  # everybody was seen 3 ticks ago
    advance(core, t)
    new = (far_id(core.id, rng), addr(100))
    sent = deliver(core, ping_req(new[0]), new[1], now=t)
    # The newcomer is answered whatever happens to the table.
    assert [s.to for s in responses_out(sent)] == [new[1]]
    return core, contacts, new, requests_out(sent), t


def table_ids(core: DHTCore) -> set[bytes]:
    return {n.id for n in core.nodes()}


def test_full_bucket_replaces_the_first_contact_that_fails_to_answer() -> None:
    core, contacts, new, pings, t = bucket_full_setup()
    for i in range(2):  # the two least recently seen answer...
        assert [s.to for s in pings] == [contacts[i][1]]
        answer(core, pings[0], pong(contacts[i][0], pings[0].to), now=t)
        pings = requests_out(drain(core))
    assert [s.to for s in pings] == [contacts[2][1]]  # ...the third does not
    advance(core, t + 2)
    assert table_ids(core) == {c[0] for c in contacts if c != contacts[2]} | {new[0]}
    assert Node(new[0], new[1]) in core.nodes()
    assert requests_out(drain(core)) == []  # nobody else was pinged


def test_full_bucket_first_failure_ends_the_pings() -> None:
    core, contacts, new, pings, t = bucket_full_setup()
    assert [s.to for s in pings] == [contacts[0][1]]
    advance(core, t + 2)
    assert requests_out(drain(core)) == []
    assert table_ids(core) == {c[0] for c in contacts[1:]} | {new[0]}


def test_full_bucket_drops_the_newcomer_when_all_three_answer() -> None:
    core, contacts, new, pings, t = bucket_full_setup()
    for i in range(3):
        assert [s.to for s in pings] == [contacts[i][1]]
        answer(core, pings[0], pong(contacts[i][0], pings[0].to), now=t)
        pings = requests_out(drain(core))
    assert pings == []
    advance(core, t + 5)
    assert table_ids(core) == {c[0] for c in contacts}
    assert new[0] not in table_ids(core)


def test_full_bucket_pings_a_stale_contact_once_for_many_newcomers() -> None:
    core, contacts, new, pings, t = bucket_full_setup()
    assert [s.to for s in pings] == [contacts[0][1]]
    rng = random.Random(10)
    for i in range(5):  # more newcomers while that ping is out
        sent = deliver(core, ping_req(far_id(core.id, rng)), addr(200 + i), now=t)
        assert requests_out(sent) == []
    advance(core, t + 2)  # the contact never answers: the first newcomer takes its place
    assert table_ids(core) == {c[0] for c in contacts[1:]} | {new[0]}


def test_full_bucket_pings_nobody_while_bootstrapping() -> None:
    core, contacts, new, pings, t = bucket_full_setup(bootstrapped=False)
    assert pings == []
    advance(core, t + 5)
    assert table_ids(core) == {c[0] for c in contacts}
    assert new[0] not in table_ids(core)


def test_full_bucket_keeps_contacts_heard_from_recently() -> None:
    core = make_core()
    core.bootstrap(now=0.0)
    rng = random.Random(9)
    contacts = fill_far_bucket(core, rng)
    t = 2 * MAINTENANCE_INTERVAL + 1
    advance(core, t)  # only 2 ticks: all fresh
    sent = deliver(core, ping_req(far_id(core.id, rng)), addr(100), now=t)
    assert requests_out(sent) == []
    assert table_ids(core) == {c[0] for c in contacts}


# -- after close -----------------------------------------------------------------


def test_closed_core_ignores_input_and_fails_requests() -> None:
    core = make_core()
    fut = core.ping(A, now=0.0)
    drain(core)
    core.close()
    assert fut.done() and fut.exception() is not None
    assert deliver(core, ping_req(None), A) == []
    late = core.ping(B, now=0.0)
    assert late.done() and late.exception() is not None
    assert core.get_timer() is None
    assert drain(core) == []
