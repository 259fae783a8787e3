"""Peer discovery's protocol logic, driven with hand-made datagrams.

A :class:`DiscoveryCore` sits on a :class:`DHTCore`; encoded ``peers``
requests and responses and a ``now`` go in, datagrams come out. Time moves
only when a test says so. No sockets, no threads, no sleeps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from hyperdht import messages
from hyperdht.dhtrpc import DHTCore
from hyperdht.discovery import COMMAND, DiscoveryCore, PeerResponse
from hyperdht.errors import ArgumentError
from hyperdht.ipencoding import Address, Node, peer_codec
from hyperdht.messages import PeersRequest, PeersResponse, RpcRequest, RpcResponse

PEERS = peer_codec(False)
KEY = bytes(range(32))
ME = Address("10.0.0.1", 49737)
ANNOUNCER = Address("10.0.0.2", 5000)
ASKER = Address("10.0.0.3", 6000)


@dataclass
class Sent:
    tid: int
    request: RpcRequest | None
    response: RpcResponse | None
    to: Address


def make(seed: int = 1, **kw: object) -> tuple[DHTCore, DiscoveryCore]:
    rng = random.Random(seed)
    dht = DHTCore(rng=rng, random_bytes=rng.randbytes, **kw)  # type: ignore[arg-type]
    return dht, DiscoveryCore(dht, address=ME, max_age=60.0)


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


def ask(core: DHTCore, req: RpcRequest, src: Address, now: float) -> RpcResponse | None:
    """Deliver ``req`` from ``src``; the one response the core sent back."""
    core.receive_datagram((0x8000 | 7).to_bytes(2, "big") + messages.encode_request(req), src, now)
    [sent] = [s for s in drain(core) if s.to == src and s.response is not None] or [None]
    return sent.response if sent is not None else None


def token_for(core: DHTCore, src: Address, now: float) -> bytes:
    res = ask(core, RpcRequest(command="_ping"), src, now)
    assert res is not None and res.roundtrip_token is not None
    return res.roundtrip_token


def peers_request(
    core: DHTCore,
    src: Address,
    kind: int,
    now: float,
    *,
    port: int = 0,
    local: bytes | None = None,
    update: bool = True,
) -> PeersResponse | None:
    """Send a ``peers`` request as a remote node would (an update carries
    the token the core issued to ``src``); the decoded answer, if any."""
    token = token_for(core, src, now) if update else None
    value = messages.encode_peers_request(PeersRequest(type=kind, port=port, local_address=local))
    res = ask(
        core,
        RpcRequest(command=COMMAND, target=KEY, value=value, roundtrip_token=token),
        src,
        now,
    )
    assert res is not None  # a node always answers a query (value or not)
    return messages.decode_peers_response(res.value) if res.value is not None else None


def local6(host: str, port: int) -> bytes:
    return bytes(int(x) for x in host.split(".")) + port.to_bytes(2, "big")


# -- serving ---------------------------------------------------------------------


def test_announce_is_stored_at_now_and_expires_after_max_age() -> None:
    dht, _ = make()
    assert peers_request(dht, ANNOUNCER, messages.ANNOUNCE, now=10.0) is None  # nobody yet
    res = peers_request(dht, ASKER, messages.LOOKUP, now=69.0, update=False)
    assert res is not None and PEERS.decode_list(res.peers or b"") == [ANNOUNCER]
    # Announced at 10 with max_age 60: gone after 70, on the virtual clock.
    assert peers_request(dht, ASKER, messages.LOOKUP, now=70.5, update=False) is None


def test_announce_without_a_valid_token_is_only_a_lookup() -> None:
    dht, disco = make()
    peers_request(dht, ANNOUNCER, messages.ANNOUNCE, now=0.0, update=False)
    assert not disco.store.has(KEY)


def test_announced_port_overrides_the_source_port() -> None:
    dht, _ = make()
    peers_request(dht, ANNOUNCER, messages.ANNOUNCE, now=0.0, port=8080)
    res = peers_request(dht, ASKER, messages.LOOKUP, now=1.0, update=False)
    assert res is not None
    assert PEERS.decode_list(res.peers or b"") == [Address(ANNOUNCER.host, 8080)]


def test_a_requester_never_gets_itself_back() -> None:
    dht, _ = make()
    peers_request(dht, ANNOUNCER, messages.ANNOUNCE, now=0.0)
    assert peers_request(dht, ANNOUNCER, messages.LOOKUP, now=1.0, update=False) is None


def test_unannounce_forgets_the_peer() -> None:
    dht, disco = make()
    peers_request(dht, ANNOUNCER, messages.ANNOUNCE, now=0.0)
    assert peers_request(dht, ANNOUNCER, messages.UNANNOUNCE, now=1.0) is None
    assert not disco.store.has(KEY)


def test_local_peers_only_for_the_same_slash_16_and_never_oneself() -> None:
    dht, _ = make()
    lan = local6("192.168.1.5", 8080)
    peers_request(dht, ANNOUNCER, messages.ANNOUNCE, now=0.0, local=lan)
    same = peers_request(
        dht, ASKER, messages.LOOKUP, now=1.0, local=local6("192.168.7.7", 0), update=False
    )
    assert same is not None and same.local_peers == bytes([1, 5]) + (8080).to_bytes(2, "big")
    other = peers_request(
        dht, ASKER, messages.LOOKUP, now=1.0, local=local6("10.3.7.7", 0), update=False
    )
    assert other is not None and other.local_peers is None
    # Another requester behind the same LAN address does not get it back.
    itself = peers_request(dht, ASKER, messages.LOOKUP, now=1.0, local=lan, update=False)
    assert itself is not None and itself.local_peers is None


def test_listeners_see_what_is_served() -> None:
    dht, disco = make()
    seen: list[tuple[object, ...]] = []
    for event in ("announce", "unannounce", "lookup"):
        disco.add_listener(event, lambda *a, e=event: seen.append((e, *a)))
    disco.add_listener("lookup", lambda *a: 1 / 0)  # a raising listener is skipped
    peers_request(dht, ANNOUNCER, messages.ANNOUNCE, now=0.0)
    peers_request(dht, ASKER, messages.LOOKUP, now=0.0, update=False)
    peers_request(dht, ANNOUNCER, messages.UNANNOUNCE, now=0.0)
    assert seen == [
        ("announce", KEY, ANNOUNCER),
        ("lookup", KEY),
        ("unannounce", KEY, ANNOUNCER),
    ]
    with pytest.raises(ArgumentError, match="event"):
        disco.add_listener("nope", print)


def test_replies_are_packed_while_under_900_bytes() -> None:
    dht, _ = make()
    for i in range(300):
        src = Address(f"10.1.{i // 200}.{i % 200 + 1}", 7000)
        local = local6("192.168.7.1", 1000 + i) if i % 2 else None
        peers_request(dht, src, messages.ANNOUNCE, now=0.0, local=local)
    picks = set()
    for _ in range(2):
        res = peers_request(dht, ASKER, messages.LOOKUP, now=1.0, update=False)
        assert res is not None and res.local_peers is None
        peers = PEERS.decode_list(res.peers or b"")
        assert len(peers) == len(set(peers)) == 150  # 900 bytes of 6-byte peers
        picks.add(frozenset(peers))
    assert len(picks) == 2  # a random pick each time (odds 1 in C(300, 150))
    lan = local6("192.168.0.1", 0)
    res = peers_request(dht, ASKER, messages.LOOKUP, now=1.0, local=lan, update=False)
    assert res is not None
    size = len(res.peers or b"") + len(res.local_peers or b"")
    # The last entry is added while under 900 bytes: 6 or 10 more.
    assert 900 <= size < 910
    assert 0 < len(res.local_peers or b"") // 4 < len(res.peers or b"") // 6


# -- the client side -------------------------------------------------------------


SERVER = Node(b"\x42" * 32, Address("10.0.0.9", 49737))


def test_lookup_sends_a_peers_query_and_maps_the_answers() -> None:
    dht, disco = make(nodes=[SERVER])
    query = disco.lookup(KEY, now=0.0, local_address=("192.168.1.1", 0))
    [sent] = drain(dht)
    assert sent.to == SERVER.address and sent.request is not None
    assert sent.request.command == COMMAND and sent.request.target == KEY
    assert messages.decode_peers_request(sent.request.value or b"") == PeersRequest(
        type=messages.LOOKUP, port=0, local_address=local6("192.168.1.1", 0)
    )
    value = messages.encode_peers_response(
        PeersResponse(peers=PEERS.encode(ANNOUNCER), local_peers=bytes([2, 3, 0x1F, 0x90]))
    )
    res = RpcResponse(id=SERVER.id, value=value, roundtrip_token=b"t" * 32)
    dht.receive_datagram(sent.tid.to_bytes(2, "big") + messages.encode_response(res), sent.to, 0.1)
    assert query.done and query.error is None
    assert list(query.results) == [
        PeerResponse(SERVER.address, [ANNOUNCER], [Address("192.168.2.3", 8080)])
    ]


def test_own_stored_peers_come_first_from_our_address() -> None:
    dht, disco = make(nodes=[SERVER])
    peers_request(dht, ANNOUNCER, messages.ANNOUNCE, now=0.0)
    query = disco.lookup(KEY, now=1.0)
    assert list(query.results) == [PeerResponse(ME, [ANNOUNCER], [])]


def test_announce_commits_with_the_token_and_the_port() -> None:
    dht, disco = make(nodes=[SERVER])
    query = disco.announce(KEY, now=0.0, port=8080)
    [sent] = drain(dht)
    assert sent.request is not None and sent.request.roundtrip_token is None
    res = RpcResponse(id=SERVER.id, roundtrip_token=b"t" * 32)
    dht.receive_datagram(sent.tid.to_bytes(2, "big") + messages.encode_response(res), sent.to, 0.1)
    [commit] = drain(dht)
    assert commit.request is not None and commit.request.roundtrip_token == b"t" * 32
    assert messages.decode_peers_request(commit.request.value or b"") == PeersRequest(
        type=messages.ANNOUNCE, port=8080
    )
    while (t := dht.get_timer()) is not None and not query.done:
        assert t < 10
        dht.handle_timer(t)
    assert query.done and query.error is not None  # the commit timed out
    assert str(query.error) == "No close nodes responded"


def test_bad_arguments_raise_argument_error() -> None:
    _, disco = make()
    with pytest.raises(ArgumentError, match="key"):
        disco.lookup(b"short", now=0.0)
    with pytest.raises(ArgumentError, match="local_address"):
        disco.lookup(KEY, now=0.0, local_address=("::1", 0))
    with pytest.raises(ArgumentError, match="port"):
        disco.announce(KEY, now=0.0, port=70000)
    with pytest.raises(ArgumentError, match="max_age"):
        DiscoveryCore(DHTCore(), max_age=0)
