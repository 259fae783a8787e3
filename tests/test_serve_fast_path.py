"""The serve path's short cuts behave exactly like the general path.

``DHTCore._on_request`` recognises the pings real peers send byte for byte
(``command`` "_ping", then a 32-byte ``id`` or nothing) and the
``_find_node`` requests (``command``, a 32-byte ``id`` or none, a 32-byte
``target``) and skips decoding; ``_serve_ping`` writes the answer's address
field without the codec. Each
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
TARGET = bytes(range(100, 132))
FIND = messages.encode_request(messages.RpcRequest("_find_node", target=TARGET))
FIND_ID = messages.encode_request(
    messages.RpcRequest("_find_node", id=bytes(range(1, 33)), target=TARGET)
)


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


def general_path(payloads: list[bytes], addr: Address) -> Any:
    """What ``observe`` sees with every short cut patched out."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(core_module, "_PING_WITH_ID", b"\xff" * len(core_module._PING_WITH_ID))
        m.setattr(core_module, "_PING_EPHEMERAL", b"\xff")
        m.setattr(core_module, "_FIND_WITH_ID", b"\xff" * len(core_module._FIND_WITH_ID))
        m.setattr(core_module, "_FIND_EPHEMERAL", b"\xff" * len(core_module._FIND_EPHEMERAL))
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
    assert observe(make_core(), payloads, PEER) == general_path(payloads, PEER)


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
    fast = observe(make_core(":" in addr.host), [PING_ID, PING], addr)
    assert fast == general_path([PING_ID, PING], addr)


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


def pinged_by(i: bytes) -> bytes:
    """A ping from a full node with id ``i``: it enters the table."""
    return messages.encode_request(messages.RpcRequest("_ping", id=i))


FIND_PAYLOADS = st.one_of(
    st.just(FIND),
    st.just(FIND_ID),
    mutations(FIND),
    mutations(FIND_ID),
    st.binary(min_size=32, max_size=32).map(pinged_by),
    st.builds(
        lambda c, i, t, fr, fs, tok, v: messages.encode_request(
            messages.RpcRequest(c, i, t, fr, fs, tok, v)
        ),
        st.sampled_from(["_find_node", "_find_nodf", "_ping"]),
        st.none() | st.binary(min_size=31, max_size=33),
        st.none() | st.binary(min_size=31, max_size=33),
        st.none() | st.just(b"\x7f\x00\x00\x01\x10\x00"),
        st.none() | st.just(b"\x7f\x00\x00\x01\x10\x00"),
        st.none() | st.binary(max_size=33),
        st.none() | st.binary(max_size=8),
    ),
)


@given(payloads=st.lists(FIND_PAYLOADS, min_size=1, max_size=8))
@example(payloads=[pinged_by(bytes(range(5, 37))), FIND_ID, FIND, FIND_ID])
@example(payloads=[FIND_ID[:-1], FIND_ID + b"\x00", FIND + b"\x2a\x00", FIND[:-1]])
@example(payloads=[FIND_ID.replace(b"\x1a\x20", b"\x1a\x21")])
@settings(max_examples=300, deadline=None)
def test_fast_find_node_path_equals_general_path(payloads: list[bytes]) -> None:
    assert observe(make_core(), payloads, PEER) == general_path(payloads, PEER)


@pytest.mark.parametrize("request_id", [None, bytes(range(1, 33))])
@pytest.mark.parametrize("contacts", [0, 1, 3, 30])
def test_find_node_answer_is_what_encode_response_writes(
    request_id: bytes | None, contacts: int
) -> None:
    """Through the fast path, with 0 to K contacts (so 0-, 1- and 2-byte
    field lengths): id, nodes nearest first, token, as the codec writes."""
    core = make_core()
    rng = random.Random(contacts)
    for i in range(contacts):
        core.receive_datagram(
            b"\x80\x01" + pinged_by(rng.randbytes(32)), Address("10.0.0.2", 1000 + i), 0.5
        )
    core.datagrams_to_send()
    request = messages.encode_request(
        messages.RpcRequest("_find_node", id=request_id, target=TARGET)
    )
    core.receive_datagram(b"\x80\x07" + request, PEER, 1.0)
    [(data, to, options)] = core.datagrams_to_send()
    assert (data[:2], to, options) == (b"\x00\x07", PEER, None)
    t = int.from_bytes(TARGET, "big")
    nearest = sorted(core.table, key=lambda c: int.from_bytes(c.id, "big") ^ t)[:20]
    nodes = b"".join(core.node_codec.encode(c.to_node()) for c in nearest)
    assert data[2:] == messages.encode_response(
        messages.RpcResponse(id=core.id, nodes=nodes, roundtrip_token=core.tokens.issue(PEER.host))
    )
    assert core._closest_encoded(TARGET) == nodes
    assert len(nearest) == min(contacts + (request_id is not None), 20)
