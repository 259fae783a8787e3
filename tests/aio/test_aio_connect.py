"""``await AsyncDHT.connect()``: on loopback (a public peer, no referrer,
cancellation, no thread) and on the simulator between two Linux-like NATs
through :func:`hyperdht.aio.run_network` (the blocking versions are in
tests/test_connect.py)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from typing import Any

import pytest

from hyperdht import messages
from hyperdht.aio import AsyncHyperDHT, collect_stream, run_network
from hyperdht.errors import ArgumentError, RequestTimeout
from hyperdht.ipencoding import Address
from hyperdht.testing import Network, TraceEvent

from .conftest import LOCAL, Maker, bounded, silent_socket, swarm

KEY = hashlib.sha256(b"aio connect").digest()
BOOT = "198.18.0.10:49737"


async def _found(announcer: Any, finder: Any, boot: Address) -> tuple[Address, Address]:
    """``announcer`` announces KEY, ``finder`` looks it up: (the bootstrap
    node as referrer, the announced address)."""
    await announcer.announce_discard(KEY)
    hits = [(r.node, p) for r in await collect_stream(finder.lookup(KEY)) for p in r.peers]
    return next(h for h in hits if h[0] == boot)


async def test_connect_to_a_public_peer_on_loopback_with_no_thread(make: Maker) -> None:
    before = set(threading.enumerate())
    boot, a, b = await swarm(make, 2, cls=AsyncHyperDHT)
    referrer, peer = await bounded(_found(a, b, boot.address))
    assert peer == a.address
    assert await bounded(b.connect(peer, referrer)) == peer
    assert await bounded(b.connect(peer)) == peer  # no referrer: a direct ping
    assert b.core.natted is False  # loopback: the referrer saw our own address
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    a.on_datagram(lambda data, _src: got.done() or got.set_result(data))
    b.send_datagram(b"hi", peer)
    assert await bounded(got) == b"hi"
    assert set(threading.enumerate()) == before


async def test_connect_to_a_silent_peer_times_out(make: Maker) -> None:
    silent = silent_socket()
    try:
        node = make(timeout=0.05)
        with pytest.raises(RequestTimeout):
            await bounded(node.connect(silent.getsockname(), timeout=0.1))
        assert node.core.requests_in_flight == 0
    finally:
        silent.close()


async def test_bad_arguments_raise_at_once(make: Maker) -> None:
    node = make()
    for kwargs, match in [({"opener_ttl": 0}, "ttl"), ({"timeout": 0}, "timeout")]:
        with pytest.raises(ArgumentError, match=match):
            await node.connect((LOCAL, 9), **kwargs)
    with pytest.raises(ArgumentError, match="peer"):
        await node.connect("not an address")


async def test_cancelling_a_connect_withdraws_its_request(make: Maker) -> None:
    silent = silent_socket()
    loop = asyncio.get_running_loop()
    try:
        node = make(timeout=60.0)
        task = asyncio.ensure_future(node.connect(silent.getsockname()))
        data = await bounded(loop.sock_recv(silent, 2048))  # the direct ping is out
        assert messages.decode_request(data[2:]).command == "_ping"
        assert node.core.requests_in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert node.core.requests_in_flight == 0
    finally:
        silent.close()


class _World:
    """P public (bootstrap), A and B each behind a Linux-like NAT, routers
    spending ``hops`` of TTL; ``sends`` records every datagram."""

    def __init__(self, *, hops: int = 1) -> None:
        self.sends: list[TraceEvent] = []
        self.net = Network(seed=1, latency=0.01, hops=hops, trace=self._trace)
        self.nat_a = self.net.nat("198.18.1.1", keep_unsolicited=True)
        self.nat_b = self.net.nat("198.18.2.1", keep_unsolicited=True)

    def _trace(self, event: TraceEvent) -> None:
        if event.kind == "send":
            self.sends.append(event)

    def openers(self) -> list[int]:
        return [e.options.ttl for e in self.sends if e.options is not None and e.options.ttl]

    async def run(self, b_hops: int, **connect: Any) -> tuple[Address, Address, bool, int]:
        """Run the scenario, B with ``b_hops`` routers inside its LAN:
        (announced, connected, whether they talked, B's measured opener TTL)."""
        net = self.net
        boot = AsyncHyperDHT(backend=net.host("198.18.0.10"), port=49737)
        a = AsyncHyperDHT(
            backend=net.host("10.0.0.2", nat=self.nat_a), bootstrap=[BOOT], ephemeral=True
        )
        b = AsyncHyperDHT(
            backend=net.host("10.0.0.2", nat=self.nat_b, hops=b_hops),
            bootstrap=[BOOT],
            ephemeral=True,
        )
        try:
            await a.ready()
            await b.ready()
            referrer, peer = await _found(a, b, boot.address)
            measured = b.core.opener_ttl
            addr = await b.connect(peer, referrer, **connect)
            got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            a.on_datagram(lambda data, _src: got.done() or got.set_result(data))
            b.send_datagram(b"hi", addr)
            return peer, addr, await got == b"hi", measured
        finally:
            for node in (b, a, boot):
                await node.close()


@pytest.mark.parametrize("hops", [1, 4])
async def test_connect_between_two_linux_nats_on_the_simulator(hops: int) -> None:
    w = _World(hops=hops)
    peer, addr, talked, measured = await run_network(w.net, w.run(0))
    assert addr == peer and talked  # NAT A never poisoned: the announced port
    assert measured == 2 and w.openers() == [2]
    assert w.nat_a.unreplied() == []
    assert w.net.stats.dropped_ttl_expired == 1


async def test_measured_opener_ttl_behind_an_inner_router_on_the_simulator() -> None:
    """Two routers to B's NAT: the TTL measured (as an asyncio task, once
    the bootstrap's pong came) is 3; a fixed 2 dies before NAT B."""
    w = _World(hops=2)
    peer, addr, talked, measured = await run_network(w.net, w.run(1))
    assert measured == 3 and addr == peer and talked
    assert w.openers()[-1] == 3

    w = _World(hops=2)
    with pytest.raises(RequestTimeout):
        await run_network(w.net, w.run(1, opener_ttl=2))


async def test_the_real_ttl_probe_is_awaited_on_the_loop(make: Maker) -> None:
    """As if NATed with 127.0.0.1 as our public address: connect() measures
    the opener TTL with real probes (loopback answers at the first hop),
    pausing with asyncio.sleep, on no thread."""
    before = set(threading.enumerate())
    a, b = make(), make()
    core = b.core
    core.observed, core.opener_ttl = Address(LOCAL, 1), 7  # another port: NATed
    assert await bounded(b.connect(a.address)) == a.address
    assert core.opener_ttl == 2  # 1 router (ourselves) + 1
    assert set(threading.enumerate()) == before
