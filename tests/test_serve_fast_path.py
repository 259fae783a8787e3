"""The serve path's short cuts behave exactly like the general path.

``DHTCore._on_request`` recognises the pings real peers send byte for byte
(``command`` "_ping", then a 32-byte ``id`` or nothing) and skips decoding;
``_serve_ping`` writes the answer's address field without the codec. Each
test runs two cores with the same seed on the same input, one with the
short cut disabled (its byte patterns patched so nothing matches), and
compares everything observable: datagrams sent, stats, the routing table.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hyperdht import messages
from hyperdht.dhtrpc import core as core_module
from hyperdht.dhtrpc.core import DHTCore
from hyperdht.ipencoding import Address

PEER = Address("127.0.0.1", 40000)
PING = messages.encode_request(messages.RpcRequest("_ping"))
PING_ID = messages.encode_request(messages.RpcRequest("_ping", id=bytes(range(32))))


def make_core(ipv6: bool = False) -> DHTCore:
    rng = random.Random(7)
    return DHTCore(id=bytes(32), rng=rng, random_bytes=rng.randbytes, ipv6=ipv6)


def observe(core: DHTCore, payloads: list[bytes], addr: Address) -> Any:
    outcome = []
    for i, payload in enumerate(payloads):
        try:
            core.receive_datagram((0x8000 | i).to_bytes(2, "big") + payload, addr, 1.0 + i)
        except Exception as exc:  # the general path raises what the codec raises
            outcome.append(type(exc).__name__)
        outcome.append(core.datagrams_to_send())
    return (
        outcome,
        dict(core.stats.requests_served),
        dict(core.stats.drops),
        [(c.id, c.address) for c in core.table],
    )


def general_path(monkeypatch: pytest.MonkeyPatch, payloads: list[bytes], addr: Address) -> Any:
    with monkeypatch.context() as m:
        m.setattr(core_module, "_PING_WITH_ID", b"\xff" * len(core_module._PING_WITH_ID))
        m.setattr(core_module, "_PING_EPHEMERAL", b"\xff")
        core = make_core(":" in addr.host)
        m.setattr(core, "_pack_host", _refuse)
        return observe(core, payloads, addr)


def _refuse(host: str) -> None:
    """The general path: the codec encodes every address."""


def mutations(base: bytes) -> st.SearchStrategy[bytes]:
    """``base`` with a byte changed, cut, or extended."""
    return st.one_of(
        st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)).map(
            lambda t: base[: t[0]] + bytes((t[1],)) + base[t[0] + 1 :]
        ),
        st.integers(0, len(base)).map(lambda n: base[:n]),
        st.binary(max_size=40).map(lambda extra: base + extra),
    )


PAYLOADS = st.one_of(
    st.just(PING),
    st.just(PING_ID),
    mutations(PING),
    mutations(PING_ID),
    st.binary(max_size=60),
    st.builds(
        lambda i, t, tok, v: messages.encode_request(
            messages.RpcRequest("_ping", i, t, None, None, tok, v)
        ),
        st.none() | st.binary(min_size=31, max_size=33),
        st.none() | st.binary(max_size=33),
        st.none() | st.binary(max_size=33),
        st.none() | st.binary(max_size=8),
    ),
)


@given(payloads=st.lists(PAYLOADS, min_size=1, max_size=6))
@example(payloads=[PING_ID, PING, PING_ID])
@example(payloads=[PING_ID[:-1], PING_ID + b"\x00", PING + b"\x12\x00"])
@settings(max_examples=300, deadline=None)
def test_fast_ping_path_equals_general_path(payloads: list[bytes]) -> None:
    mp = pytest.MonkeyPatch()
    try:
        assert observe(make_core(), payloads, PEER) == general_path(mp, payloads, PEER)
    finally:
        mp.undo()


@pytest.mark.parametrize(
    "addr",
    [
        Address("127.0.0.1", 40000),
        Address("10.0.0.1", 1),
        Address("10.0.0.1", 65535),
        Address("10.0.0.1", 0),  # the codec refuses port 0: both raise
        Address("not-an-ip", 5),
        Address("::1", 5),  # an IPv6 host on an IPv4 node
        Address("::ffff:10.0.0.1", 7),
        Address("fe80::1", 8),
    ],
)
def test_ping_answer_is_what_the_codec_writes(addr: Address) -> None:
    mp = pytest.MonkeyPatch()
    try:
        fast = observe(make_core(":" in addr.host), [PING_ID, PING], addr)
        assert fast == general_path(mp, [PING_ID, PING], addr)
    finally:
        mp.undo()


def test_ping_answer_decodes_to_id_address_and_token() -> None:
    core = make_core()
    core.receive_datagram(b"\x80\x05" + PING_ID, PEER, 1.0)
    [(data, to, options)] = core.datagrams_to_send()
    assert (data[:2], to, options) == (b"\x00\x05", PEER, None)
    res = messages.decode_response(data[2:])
    assert res == messages.RpcResponse(
        id=core.id,
        value=core.peer_codec.encode(PEER),
        roundtrip_token=core.tokens.issue(PEER.host),
    )
    assert data[2:] == messages.encode_response(res)
    core.tokens.rotate()  # nothing cached across a rotation
    core.receive_datagram(b"\x80\x06" + PING_ID, PEER, 2.0)
    [(data, _, _)] = core.datagrams_to_send()
    assert messages.decode_response(data[2:]).roundtrip_token == core.tokens.issue(PEER.host)
