"""Peer discovery (HyperDHT): announce, lookup, unannounce.

Mostly on the in-memory network with its virtual clock; one smoke test on
real loopback sockets with the backend under test.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hyperdht import HyperDHT, PeerResponse, collect_stream
from hyperdht.discovery import collect_peers
from hyperdht.ipencoding import Address
from hyperdht.testing import Network

BOOT = Address("198.18.0.1", 49737)
K = 20


def xor(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


class Swarm:
    """``n`` HyperDHT nodes on public hosts, bootstrapped from one
    ephemeral node; ``kw`` goes to every HyperDHT."""

    def __init__(self, n: int = 24, seed: int = 1, **kw: Any) -> None:
        self.rng = random.Random(seed)
        self.net = Network(seed=seed, latency=0.01)
        self.boot = HyperDHT(backend=self.net.host(BOOT.host), port=BOOT.port, ephemeral=True, **kw)
        self.nodes = [
            HyperDHT(id=self.rng.randbytes(32), backend=self.net.host(), bootstrap=[BOOT], **kw)
            for _ in range(n)
        ]
        for node in self.nodes:
            assert node.ready(timeout=30)

    def key(self) -> bytes:
        return self.rng.randbytes(32)

    def closest(self, key: bytes, exclude: HyperDHT | None = None) -> set[bytes]:
        ids = [n.id for n in self.nodes if n is not exclude]
        return set(sorted(ids, key=lambda i: xor(i, key))[:K])

    def close(self) -> None:
        for node in [*self.nodes, self.boot]:
            node.close()


@pytest.fixture
def swarm() -> Iterator[Swarm]:
    s = Swarm()
    yield s
    s.close()


def lookup(node: HyperDHT, key: bytes, **kw: Any) -> list[PeerResponse]:
    return collect_stream(node.lookup(key, **kw))


def all_local(results: list[PeerResponse]) -> set[Address]:
    return {p for r in results for p in r.local_peers}


# -- announce, lookup, unannounce ------------------------------------------------


def test_announce_lookup_unannounce(swarm: Swarm) -> None:
    key = swarm.key()
    announcer, seeker = swarm.nodes[1], swarm.nodes[2]
    assert lookup(seeker, key) == []

    collect_stream(announcer.announce(key))
    results = lookup(seeker, key)
    assert len(results) >= K - 1  # the storing nodes (the seeker may be one)
    for r in results:
        assert r.peers == [announcer.address]
        assert r.local_peers == []
    responders = {r.node for r in results}
    storing = {n.address for n in swarm.nodes if n.id in swarm.closest(key, announcer)}
    assert responders <= storing | {seeker.address}
    assert collect_peers(seeker.lookup(key)) == [announcer.address]

    announcer.unannounce(key)
    assert lookup(seeker, key) == []


def test_announce_is_stored_by_the_closest_nodes_and_events_fire(swarm: Swarm) -> None:
    key = swarm.key()
    announcer, seeker = swarm.nodes[0], swarm.nodes[7]
    events: dict[str, list[tuple[bytes, tuple[Any, ...]]]] = {
        "announce": [],
        "unannounce": [],
        "lookup": [],
    }

    def listener(event: str, node: HyperDHT) -> Callable[..., None]:
        return lambda *args: events[event].append((node.id, args))

    for node in swarm.nodes:
        for event in events:
            node.add_listener(event, listener(event, node))

    announcer.announce_discard(key)
    assert {nid for nid, _ in events["announce"]} == swarm.closest(key, announcer)
    assert {args for _, args in events["announce"]} == {(key, announcer.address)}
    assert events["lookup"] == []

    lookup(seeker, key)
    assert events["lookup"] and {args for _, args in events["lookup"]} == {(key,)}

    announcer.unannounce(key)
    assert {nid for nid, _ in events["unannounce"]} == swarm.closest(key, announcer)
    assert {args for _, args in events["unannounce"]} == {(key, announcer.address)}

    fn = swarm.nodes[3].add_listener
    with pytest.raises(ValueError, match="event"):
        fn("peer", lambda *a: None)


def test_remove_listener(swarm: Swarm) -> None:
    calls: list[Any] = []
    node = swarm.nodes[0]
    key = node.id  # this node is the closest: it serves every request for it

    def fn(*args: Any) -> None:
        calls.append(args)

    node.add_listener("lookup", fn)
    lookup(swarm.nodes[1], key)
    assert calls == [(key,)]
    node.remove_listener("lookup", fn)
    lookup(swarm.nodes[1], key)
    assert calls == [(key,)]


def test_own_stored_peers_come_first(swarm: Swarm) -> None:
    keeper = swarm.nodes[5]
    key = keeper.id  # the keeper is the closest node to the key: it stores it
    announcer = swarm.nodes[6]
    announcer.announce_discard(key)

    results = lookup(keeper, key)
    assert results[0].node == keeper.address
    assert results[0].peers == [announcer.address]
    assert keeper.address not in {r.node for r in results[1:]}  # not asked over the wire

    # Announcing yields what is already there too, own store first.
    results = collect_stream(keeper.announce(key))
    assert results[0].node == keeper.address
    assert results[0].peers == [announcer.address]
    # A node storing nothing for the key yields nothing of its own.
    other_key = swarm.key()
    assert lookup(keeper, other_key) == []


def test_own_announced_address_is_never_returned(swarm: Swarm) -> None:
    key = swarm.key()
    me, other = swarm.nodes[3], swarm.nodes[4]
    me.announce_discard(key)
    other.announce_discard(key)
    results = lookup(me, key)
    assert results
    assert all(r.peers == [other.address] for r in results)
    # Re-announcing reports the others only, too.
    results = collect_stream(me.announce(key))
    assert {p for r in results for p in r.peers} == {other.address}


def test_port_override(swarm: Swarm) -> None:
    key = swarm.key()
    announcer = swarm.nodes[8]
    announcer.announce_discard(key, port=5000)
    wanted = Address(announcer.address.host, 5000)
    assert collect_peers(swarm.nodes[9].lookup(key)) == [wanted]
    announcer.unannounce(key)  # the sender's port: not what was announced
    assert collect_peers(swarm.nodes[9].lookup(key)) == [wanted]
    announcer.unannounce(key, port=5000)
    assert collect_peers(swarm.nodes[9].lookup(key)) == []
    with pytest.raises(ValueError, match="port"):
        announcer.announce(key, port=70000)


def test_local_addresses_only_within_the_same_16(swarm: Swarm) -> None:
    key = swarm.key()
    lan = {
        swarm.nodes[0]: ("192.168.1.5", 7000),
        swarm.nodes[1]: ("10.1.2.3", 7001),
        swarm.nodes[2]: ("192.168.9.9", 7002),
    }
    for node, local in lan.items():
        node.announce_discard(key, local_address=local)
    publics = {n.address for n in lan}

    results = lookup(swarm.nodes[10], key, local_address=("192.168.0.2", 0))
    assert {p for r in results for p in r.peers} == publics
    assert all_local(results) == {Address("192.168.1.5", 7000), Address("192.168.9.9", 7002)}

    results = lookup(swarm.nodes[10], key, local_address="10.1.0.9:0")
    assert all_local(results) == {Address("10.1.2.3", 7001)}

    # No local address: no local peers.
    assert all_local(lookup(swarm.nodes[10], key)) == set()

    # The requester's own LAN address is never sent back to it.
    results = lookup(swarm.nodes[11], key, local_address=("192.168.1.5", 7000))
    assert all_local(results) == {Address("192.168.9.9", 7002)}

    with pytest.raises(ValueError, match="local_address"):
        swarm.nodes[11].lookup(key, local_address=("::1", 0))


def test_bad_keys_raise_value_error(swarm: Swarm) -> None:
    node = swarm.nodes[0]
    for bad in (b"", b"x" * 31, b"x" * 33, "a" * 32, None):
        with pytest.raises(ValueError, match="key"):
            node.lookup(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="key"):
            node.announce(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="key"):
            node.announce_discard(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="key"):
            node.unannounce(bad)  # type: ignore[arg-type]
    lookup(node, bytearray(32))  # type: ignore[arg-type]


def test_peers_command_is_reserved(swarm: Swarm) -> None:
    node = swarm.nodes[0]
    with pytest.raises(ValueError, match="peers"):
        node.on_query("peers", lambda remote, q: None)
    with pytest.raises(ValueError, match="peers"):
        node.on_update("peers", lambda remote, q: None)
    with pytest.raises(ValueError, match="peers"):
        node.query("peers", bytes(32))
    with pytest.raises(ValueError, match="peers"):
        node.update("peers", bytes(32))
    # Other commands are fine alongside discovery.
    node.on_query("other", lambda remote, q: b"ok")
    results = collect_stream(swarm.nodes[1].query("other", node.id))
    assert b"ok" in {r.value for r in results}


def test_announcements_expire_after_max_age() -> None:
    swarm = Swarm(n=22, seed=3, max_age=60.0)
    try:
        key = swarm.key()
        announcer, seeker = swarm.nodes[0], swarm.nodes[1]
        announcer.announce_discard(key)
        swarm.net.run_for(45.0)
        assert collect_peers(seeker.lookup(key)) == [announcer.address]
        swarm.net.run_for(20.0)  # 65 s after the announce
        assert collect_peers(seeker.lookup(key)) == []
        announcer.announce_discard(key)  # re-announcing revives it
        assert collect_peers(seeker.lookup(key)) == [announcer.address]
    finally:
        swarm.close()


def test_default_max_age_keeps_announcements_for_15_minutes(swarm: Swarm) -> None:
    key = swarm.key()
    swarm.nodes[0].announce_discard(key)
    swarm.net.run_for(14 * 60.0)
    assert collect_peers(swarm.nodes[1].lookup(key)) == [swarm.nodes[0].address]
    swarm.net.run_for(2 * 60.0)
    assert collect_peers(swarm.nodes[1].lookup(key)) == []


# -- real sockets ----------------------------------------------------------------


def test_loopback_smoke(backend: str) -> None:
    boot = HyperDHT(host="127.0.0.1", backend=backend)
    nodes = [boot]
    try:
        entry = f"127.0.0.1:{boot.address.port}"
        nodes += [HyperDHT(host="127.0.0.1", bootstrap=[entry], backend=backend) for _ in range(5)]
        for node in nodes:
            assert node.ready(10.0)
        key = random.Random(4).randbytes(32)
        nodes[1].announce_discard(key, local_address=("192.168.3.4", 9000))
        results = lookup(nodes[4], key, local_address=("192.168.0.1", 0))
        assert results
        assert {p for r in results for p in r.peers} == {nodes[1].address}
        assert all_local(results) == {Address("192.168.3.4", 9000)}
        nodes[1].unannounce(key, local_address=("192.168.3.4", 9000))
        assert lookup(nodes[4], key) == []
    finally:
        for node in nodes:
            node.close()
