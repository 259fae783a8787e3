"""AsyncHyperDHT on loopback: announce, lookup, unannounce, listeners, the
reserved command; the same PeerResponse objects as the blocking API."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from hyperdht import PeerResponse
from hyperdht.aio import AsyncHyperDHT, collect_stream
from hyperdht.discovery import collect_peers
from hyperdht.ipencoding import Address

from .conftest import LOCAL, Maker, bounded, swarm


async def test_announce_lookup_unannounce(make: Maker) -> None:
    nodes = await swarm(make, 8)
    key = hashlib.sha256(b"aio topic").digest()
    announcer, seeker = nodes[1], nodes[6]
    announced: list[Any] = []
    for n in nodes:
        n.add_listener("announce", lambda k, peer: announced.append((k, peer)))
    await bounded(announcer.announce_discard(key))
    assert (key, announcer.address) in announced

    results = await bounded(collect_stream(seeker.lookup(key)))
    assert results and all(isinstance(r, PeerResponse) for r in results)
    assert collect_peers(results) == [announcer.address]

    async with seeker.lookup(key) as stream:  # async with closes it early
        first = await bounded(stream.__anext__())
        assert isinstance(first, PeerResponse)
    assert stream.done

    await bounded(announcer.unannounce(key))
    assert collect_peers(await bounded(collect_stream(seeker.lookup(key)))) == []


async def test_port_override_and_local_addresses(make: Maker) -> None:
    nodes = await swarm(make, 6)
    key = hashlib.sha256(b"lan").digest()
    await bounded(nodes[1].announce_discard(key, port=8080, local_address=("192.168.1.5", 7000)))
    results = await bounded(collect_stream(nodes[4].lookup(key, local_address=("192.168.0.2", 0))))
    assert collect_peers(results) == [Address(LOCAL, 8080)]
    assert {p for r in results for p in r.local_peers} == {Address("192.168.1.5", 7000)}


async def test_bad_keys_and_the_reserved_command(make: Maker) -> None:
    node = make(AsyncHyperDHT)
    for bad in (b"", b"x" * 31, "a" * 32, None):
        with pytest.raises(ValueError, match="key"):
            node.lookup(bad)
        with pytest.raises(ValueError, match="key"):
            await node.announce_discard(bad)
        with pytest.raises(ValueError, match="key"):
            await node.unannounce(bad)
    with pytest.raises(ValueError, match="peers"):
        node.on_query("peers", lambda remote, q: None)
    with pytest.raises(ValueError, match="peers"):
        node.query("peers", bytes(32))
