"""Third-party send limits and the optional per-source rate limit
(:mod:`hyperdht.dhtrpc.limits`), on the limiter and on the core.

Everything runs on the sans-I/O core with a virtual clock: datagrams go in
with a ``now``, what the core would send comes out of
``datagrams_to_send()``; no socket is opened, nothing leaves the process.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdht import messages
from hyperdht.cli.errors import UsageError
from hyperdht.cli.node import parse_settings
from hyperdht.cli.options import load_config
from hyperdht.dhtrpc import DHT, DHTCore
from hyperdht.dhtrpc.limits import (
    FORWARD_BURST,
    FORWARD_RATE,
    MAX_TRACKED,
    Limits,
    RateLimiter,
)
from hyperdht.discovery import HyperDHT
from hyperdht.errors import ArgumentError, ArgumentTypeError
from hyperdht.ipencoding import Address, peer_codec
from hyperdht.messages import RpcRequest
from hyperdht.testing import Network

PEERS = peer_codec(False)
VICTIM = Address("10.66.0.1", 53)
T32 = bytes(range(32))


def make_core(**kw: Any) -> DHTCore:
    rng = random.Random(1)
    return DHTCore(rng=rng, random_bytes=rng.randbytes, **kw)


def frame(tid: int, req: RpcRequest) -> bytes:
    return (0x8000 | tid).to_bytes(2, "big") + messages.encode_request(req)


def send(core: DHTCore, req: RpcRequest, src: Address, now: float) -> list[Any]:
    core.receive_datagram(frame(1, req), src, now)
    return core.datagrams_to_send()


def src(i: int) -> Address:
    return Address(f"10.1.{i // 250}.{i % 250 + 1}", 4000 + i)


def forward_to(target: Address) -> RpcRequest:
    return RpcRequest(command="_ping", id=T32, forward_request=PEERS.encode(target))


def answer_to(target: Address) -> RpcRequest:
    return RpcRequest(command="_ping", id=T32, forward_response=PEERS.encode(target))


# -- the limiter -------------------------------------------------------------


def test_limiter_allows_a_burst_then_the_rate() -> None:
    lim = RateLimiter(10, 5)
    assert [lim.allow("a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert lim.allow("b", 0.0)  # keys are independent
    assert not lim.allow("a", 0.05)  # half a token
    assert lim.allow("a", 0.1)  # one token after 1/rate seconds
    assert not lim.allow("a", 0.1)
    # A long idle refills only up to the burst.
    assert [lim.allow("a", 100.0) for _ in range(6)] == [True] * 5 + [False]


def test_limiter_ignores_time_going_backwards() -> None:
    lim = RateLimiter(1, 1)
    assert lim.allow("a", 10.0)
    assert not lim.allow("a", 5.0)
    assert not lim.allow("a", 10.5)
    assert lim.allow("a", 11.0)


def test_limiter_memory_is_bounded_and_forgets_the_least_recent() -> None:
    lim = RateLimiter(1, 1, max_keys=3)
    for key in "abc":
        assert lim.allow(key, 0.0)
    assert not lim.allow("a", 0.0)  # "a" is now the most recent
    assert lim.allow("d", 0.0)  # evicts "b"
    assert len(lim) == 3
    assert lim.allow("b", 0.0)  # forgotten: a fresh, full bucket (evicts "c")
    assert not lim.allow("a", 0.0)  # still remembered, still empty
    for i in range(10_000):
        lim.allow(i, 0.0)
    assert len(lim) == 3


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"rate": 0, "burst": 1}, "rate"),
        ({"rate": 1, "burst": -1}, "burst"),
        ({"rate": float("inf"), "burst": 1}, "rate"),
        ({"rate": True, "burst": 1}, "rate"),
        ({"rate": 1, "burst": 1, "max_keys": 0}, "max_keys"),
    ],
)
def test_limiter_rejects_bad_figures(kw: dict[str, Any], name: str) -> None:
    with pytest.raises(ArgumentError, match=f"^{name} "):
        RateLimiter(**kw)


def test_limits_validate_their_fields() -> None:
    with pytest.raises(ArgumentError, match=r"^limits\.per_target_burst "):
        Limits(per_target_burst=0)
    assert Limits().per_source_rate == FORWARD_RATE
    assert Limits().per_source_burst == FORWARD_BURST
    assert Limits().max_tracked == MAX_TRACKED


# -- third-party sends on the core -------------------------------------------


def test_forwards_from_one_source_stop_at_the_burst_and_go_on_at_the_rate() -> None:
    core = make_core()
    s = src(1)
    out = [len(send(core, forward_to(src(100 + i)), s, 0.0)) for i in range(FORWARD_BURST + 10)]
    assert out == [1] * FORWARD_BURST + [0] * 10
    assert core.stats.forwarded == FORWARD_BURST
    assert core.stats.drops["third_party_source"] == 10
    # One second later: FORWARD_RATE more.
    out = [len(send(core, forward_to(src(500 + i)), s, 1.0)) for i in range(40)]
    assert sum(out) == FORWARD_RATE


def test_forwards_to_one_target_are_bounded_whoever_asks() -> None:
    core = make_core()
    out = [len(send(core, forward_to(VICTIM), src(i), 0.0)) for i in range(200)]
    assert sum(out) == FORWARD_BURST
    assert core.stats.drops["third_party_target"] == 200 - FORWARD_BURST
    assert core.stats.drops["third_party_source"] == 0
    # Any port of the victim's host shares its bucket.
    other_port = Address(VICTIM.host, 9)
    assert send(core, forward_to(other_port), src(999), 0.0) == []


def test_answers_to_a_third_address_are_bounded_per_target() -> None:
    core = make_core()
    out = [len(send(core, answer_to(VICTIM), src(i), 0.0)) for i in range(200)]
    assert sum(out) == FORWARD_BURST
    assert core.stats.drops["third_party_target"] == 200 - FORWARD_BURST
    # Per source too.
    core = make_core()
    out = [len(send(core, answer_to(src(100 + i)), src(1), 0.0)) for i in range(200)]
    assert sum(out) == FORWARD_BURST
    assert core.stats.drops["third_party_source"] == 200 - FORWARD_BURST


def test_plain_pings_and_answers_to_the_requester_are_not_limited() -> None:
    core = make_core()
    s = src(1)
    for _ in range(500):
        assert len(send(core, RpcRequest(command="_ping", id=T32), s, 0.0)) == 1
        assert len(send(core, answer_to(s), s, 0.0)) == 1  # to itself: no third party
    assert not core.stats.drops


def test_disabled_limits_forward_everything() -> None:
    core = make_core(limits=Limits(enabled=False))
    out = [len(send(core, forward_to(VICTIM), src(1), 0.0)) for i in range(500)]
    assert sum(out) == 500


def test_hole_punching_never_notices_the_limits() -> None:
    """A busy referrer: every second for a minute, 30 clients each punch
    to 10 peers of one popular announcer host (the same target host), each
    forwarded ping tried up to 4 times. Meanwhile the peer's side answers
    forwarded pings relayed by that referrer. Nothing may be dropped as
    long as no single host exceeds FORWARD_RATE sustained."""
    referrer = make_core()
    peer = make_core()
    popular = Address("10.50.0.1", 7000)
    relay = Address("10.60.0.1", 49737)
    sent = 0
    for second in range(60):
        # FORWARD_RATE per second reach the popular host in total, arriving
        # in bursts: 4 tries of 4 punches at the start of each second.
        for attempt in range(4):
            now = second + attempt * 0.01
            client = src(second * 4 + attempt)
            assert len(send(referrer, forward_to(popular), client, now)) == 1
            assert len(send(peer, answer_to(client), relay, now)) == 1
            sent += 1
    assert sent == 60 * 4 and not referrer.stats.drops and not peer.stats.drops
    # One client connecting to 20 peers at once, 3 tries each, through
    # one referrer: a burst of 60 within FORWARD_BURST.
    busy = make_core()
    for attempt in range(3):
        for i in range(20):
            assert len(send(busy, forward_to(src(1000 + i)), src(1), attempt * 1.0)) == 1
    assert not busy.stats.drops


# -- one datagram out per datagram in, and the size ratio ---------------------

REQUESTS = st.builds(
    RpcRequest,
    command=st.sampled_from(["_ping", "_find_node", "peers", "x"]),
    id=st.one_of(st.none(), st.just(T32)),
    target=st.one_of(st.none(), st.just(T32)),
    forward_request=st.one_of(st.none(), st.just(PEERS.encode(VICTIM))),
    forward_response=st.one_of(st.none(), st.just(PEERS.encode(VICTIM))),
    value=st.one_of(st.none(), st.binary(max_size=40)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(REQUESTS, st.integers(0, 40)), min_size=1, max_size=60))
def test_never_more_than_one_datagram_out_per_datagram_in(reqs: list[Any]) -> None:
    core = make_core()
    for i, (req, who) in enumerate(reqs):
        assert len(send(core, req, src(who), i * 0.001)) <= 1


#: The largest size of a datagram a node sends to a third address, over the
#: size of the request that caused it (both with the 2-byte header).
THIRD_PARTY_RATIO = 4.6


def test_largest_third_party_answer_to_request_ratio() -> None:
    """The cheapest request that makes a node send to a third address is a
    bare ``_ping`` with ``forwardResponse`` (17 bytes): its answer to the
    victim carries our id, the victim's address and a token (78 bytes),
    a ratio of 4.59. A forwarded ping is as large as the request that
    asked for it (forwardResponse replaces forwardRequest; an invalid
    token is not passed on): a ratio of at most 1."""
    core = make_core()
    req = RpcRequest(command="_ping", forward_response=PEERS.encode(VICTIM))
    data = frame(1, req)
    core.receive_datagram(data, src(1), 0.0)
    [(out, to, _)] = core.datagrams_to_send()
    assert to == VICTIM
    assert (len(data), len(out)) == (17, 78)
    assert len(out) / len(data) <= THIRD_PARTY_RATIO
    for value in (None, b"", b"x" * 100):
        for token in (None, b"t" * 32):
            req = RpcRequest(
                command="_ping",
                forward_request=PEERS.encode(VICTIM),
                value=value,
                roundtrip_token=token,
            )
            data = frame(1, req)
            core.receive_datagram(data, src(2), 0.0)
            [(out, to, _)] = core.datagrams_to_send()
            assert to == VICTIM and len(out) <= len(data)


def test_largest_answer_to_request_ratio_to_the_requester() -> None:
    """To the requester itself the largest ratio is a ``_find_node`` with
    20 known contacts: a 48-byte request, an 833-byte answer (17.4x).
    That needs no third party: a node that can spoof its source can aim
    it elsewhere, which is what ``rate_limit`` bounds."""
    core = make_core()
    for i in range(400):
        core._add_node(random.Random(i).randbytes(32), src(i), None, 0.0)
    req = RpcRequest(command="_find_node", target=T32)
    data = frame(1, req)
    core.receive_datagram(data, src(1), 0.0)
    [(out, _to, _)] = core.datagrams_to_send()
    assert (len(data), len(out)) == (48, 833)
    assert len(out) / len(data) < 17.5


# -- the optional per-source rate limit --------------------------------------


def test_rate_limit_is_off_by_default() -> None:
    core = make_core()
    assert core.rate_limit is None
    for _ in range(1000):
        assert len(send(core, RpcRequest(command="_ping"), src(1), 0.0)) == 1


def test_rate_limit_bounds_what_each_source_host_is_served() -> None:
    core = make_core(rate_limit=5)
    ping = RpcRequest(command="_ping")
    out = [len(send(core, ping, src(1), 0.0)) for _ in range(20)]
    assert out == [1] * 10 + [0] * 10  # bursts of twice the rate
    assert core.stats.drops["rate_limited"] == 10
    # Another port of the same host shares the bucket; another host does not.
    assert send(core, ping, Address(src(1).host, 1), 0.0) == []
    assert len(send(core, ping, src(2), 0.0)) == 1
    # Five per second afterwards.
    out = [len(send(core, ping, src(1), 1.0)) for _ in range(20)]
    assert sum(out) == 5
    # Queries and forwards count too.
    find = RpcRequest(command="_find_node", target=T32)
    out = [len(send(core, find, src(3), 0.0)) for _ in range(20)]
    assert sum(out) == 10


def test_rate_limit_does_not_touch_responses_to_our_requests() -> None:
    core = make_core(rate_limit=1)
    peer = src(7)
    futures = [core.ping(peer, now=0.0) for _ in range(10)]
    for data, to, _ in core.datagrams_to_send():
        assert to == peer
        tid = int.from_bytes(data[:2], "big") & 0x7FFF
        pong = messages.RpcResponse(value=PEERS.encode(src(0)))
        core.receive_datagram(tid.to_bytes(2, "big") + messages.encode_response(pong), peer, 0.0)
    assert all(f.done() and f.exception() is None for f in futures)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5", True])
def test_rate_limit_is_validated(bad: Any) -> None:
    with pytest.raises(ArgumentError, match=r"^rate_limit "):
        make_core(rate_limit=bad)
    net = Network()
    with pytest.raises(ArgumentError, match=r"^rate_limit "):
        HyperDHT(backend=net.host("198.18.0.1"), rate_limit=bad)


def test_limits_must_be_a_limits() -> None:
    with pytest.raises(ArgumentTypeError, match=r"^limits "):
        make_core(limits={"per_source_rate": 1})
    net = Network()
    with pytest.raises(ArgumentTypeError, match=r"^limits "):
        DHT(backend=net.host("198.18.0.1"), limits=5)  # type: ignore[arg-type]


def test_node_passes_rate_limit_and_limits_to_its_core() -> None:
    net = Network()
    limits = Limits(per_source_rate=2)
    with HyperDHT(backend=net.host("198.18.0.1"), rate_limit=3, limits=limits) as node:
        core = node.core
        assert core.rate_limit == 3.0 and core.limits is limits


def test_cli_rate_limit_option_and_config_key(tmp_path: Any) -> None:
    assert parse_settings([]).rate_limit is None
    assert parse_settings(["--rate-limit", "50"]).rate_limit == 50.0
    assert parse_settings(["--rate-limit", "0.5"]).rate_limit == 0.5
    for bad in ("0", "-2", "x", "inf"):
        with pytest.raises(UsageError, match="--rate-limit"):
            parse_settings(["--rate-limit", bad])
    config = tmp_path / "c.json"
    config.write_text('{"rate_limit": 20}')
    assert parse_settings(["-c", str(config)]).rate_limit == 20
    config.write_text('{"rate_limit": 0}')
    with pytest.raises(UsageError, match="rate_limit"):
        load_config(str(config), {"rate_limit": "rate"})
