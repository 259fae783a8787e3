"""connect() on the simulator, whose NATs behave like Linux's (unreplied
inbound entries, remapped flows) and whose routers spend the IP TTL.

Everything runs on the virtual clock: deterministic for a seed, and fast.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from hyperdht import HyperDHT
from hyperdht.errors import ArgumentError, RequestTimeout
from hyperdht.ipencoding import Address
from hyperdht.testing import Network, TraceEvent

KEY = hashlib.sha256(b"connect").digest()
BOOT = "198.18.0.10:49737"


class World:
    """P public (bootstrap), A and B each behind a NAT or public."""

    def __init__(
        self,
        *,
        a_nat: bool = True,
        b_nat: bool = True,
        linux: bool = True,
        hops: int = 1,
        b_hops: int = 0,
        seed: int = 1,
        a_eph: bool = True,
        b_eph: bool = True,
    ) -> None:
        self.sends: list[TraceEvent] = []
        self.net = Network(seed=seed, latency=0.01, hops=hops, trace=self._trace)
        net = self.net
        self.boot = HyperDHT(backend=net.host("198.18.0.10"), port=49737)
        self.nat_a = net.nat("198.18.1.1", keep_unsolicited=linux) if a_nat else None
        self.nat_b = net.nat("198.18.2.1", keep_unsolicited=linux) if b_nat else None
        host_a = net.host("10.0.0.2", nat=self.nat_a) if a_nat else net.host("198.18.1.5")
        host_b = (
            net.host("10.0.0.2", nat=self.nat_b, hops=b_hops) if b_nat else net.host("198.18.2.5")
        )
        self.a = HyperDHT(backend=host_a, bootstrap=[BOOT], ephemeral=a_eph)
        self.b = HyperDHT(backend=host_b, bootstrap=[BOOT], ephemeral=b_eph)
        assert self.a.ready() and self.b.ready()
        self.a_got: list[tuple[bytes, Address]] = []
        self.b_got: list[tuple[bytes, Address]] = []
        self.a.on_datagram(self._a_answers)
        self.b.on_datagram(lambda d, s: self.b_got.append((d, s)))

    def _trace(self, event: TraceEvent) -> None:
        if event.kind == "send":
            self.sends.append(event)

    def _a_answers(self, data: bytes, src: Address) -> None:
        self.a_got.append((data, src))
        self.a.send_datagram(b"re:" + data, src)

    def found(self, *, first: bool = False) -> tuple[Address, Address]:
        """A announces, B looks up: (referrer, A's announced address), the
        referrer being P unless ``first`` (then the first response's node,
        which is B itself when B stored the announcement)."""
        self.a.announce_discard(KEY)
        hits = [(r.node, p) for r in self.b.lookup(KEY) for p in r.peers]
        assert hits
        if first:
            return hits[0]
        return next(h for h in hits if h[0] == Address("198.18.0.10", 49737))

    def talks(self, addr: Address) -> bool:
        """B -> A on ``addr``; A answers where it came from; B hears it from ``addr``."""
        self.b.send_datagram(b"hi", addr)
        self.net.run_for(1.0)
        return [d for d, _ in self.a_got] == [b"hi"] and self.b_got == [(b"re:hi", addr)]

    def openers(self) -> list[TraceEvent]:
        return [e for e in self.sends if e.options is not None and e.options.ttl is not None]


def test_naive_flow_fails_between_two_linux_nats() -> None:
    """Today's flow: the direct ping leaves an unreplied entry in NAT A, A's
    answer to the forwarded ping is remapped, NAT B drops it."""
    w = World()
    referrer, peer = w.found()
    with pytest.raises(RequestTimeout):
        w.b.ping(peer)
    with pytest.raises(RequestTimeout):
        w.b.holepunch(peer, referrer)
    assert w.nat_a is not None and w.nat_a.unreplied()


@pytest.mark.parametrize("hops", [1, 4])
def test_connect_between_two_linux_nats(hops: int) -> None:
    w = World(hops=hops)
    referrer, peer = w.found()
    t0 = w.net.now
    addr = w.b.connect(peer, referrer)
    assert addr == peer  # NAT A was never poisoned: the announced port itself
    assert w.net.now - t0 < 0.5  # a few round trips of 20 ms
    assert w.talks(addr)
    assert [e.options.ttl for e in w.openers() if e.options] == [2]
    assert w.nat_a is not None and w.nat_a.unreplied() == []
    assert w.net.stats.dropped_ttl_expired == 1


def test_connect_from_a_public_host_sends_no_opener() -> None:
    """B public: an opener could reach NAT A, so none is sent; the punch works."""
    w = World(b_nat=False)
    referrer, peer = w.found()
    addr = w.b.connect(peer, referrer)
    assert w.talks(addr)
    assert w.openers() == []


def test_connect_to_a_public_peer() -> None:
    w = World(a_nat=False)
    referrer, peer = w.found()
    addr = w.b.connect(peer, referrer)
    assert addr == peer and w.talks(addr)


def test_connect_without_referrer_is_a_direct_ping() -> None:
    w = World(a_nat=False)
    _, peer = w.found()
    assert w.b.connect(peer) == peer
    assert w.openers() == []


def test_connect_without_referrer_to_a_natted_peer_times_out() -> None:
    w = World()
    _, peer = w.found()
    t0 = w.net.now
    with pytest.raises(RequestTimeout):
        w.b.connect(peer, timeout=5.0)
    assert w.net.now - t0 <= 5.0 + 1e-9


def test_opener_ttl_for_a_host_behind_an_inner_router() -> None:
    """B behind a router inside its LAN (as behind a carrier-grade NAT, two
    routers to the outside): TTL 2 dies before NAT B, so a fixed 2 fails;
    the measured TTL is 3, which crosses NAT B and expires in the core."""
    w = World(b_hops=1, hops=2)
    referrer, peer = w.found()
    with pytest.raises(RequestTimeout):
        w.b.connect(peer, referrer, opener_ttl=2)

    w = World(b_hops=1, hops=2)
    referrer, peer = w.found()
    assert w.b.core.opener_ttl == 3  # measured once the bootstrap's pong came
    addr = w.b.connect(peer, referrer)
    assert addr == peer and w.talks(addr)
    assert [e.options.ttl for e in w.openers() if e.options][-1] == 3


def test_connect_with_openwrt_like_nats_works_too() -> None:
    w = World(linux=False)
    referrer, peer = w.found()
    assert w.talks(w.b.connect(peer, referrer))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"opener_ttl": 0}, "ttl"), ({"opener_ttl": 256}, "ttl"), ({"timeout": 0}, "timeout")],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    w = World(a_nat=False)
    referrer, peer = w.found()
    with pytest.raises(ArgumentError, match=match):
        w.b.connect(peer, referrer, **kwargs)


def test_core_connect_on_a_virtual_clock() -> None:
    """The core's connect() is a plain future: what hyperdht.aio can wrap."""
    w = World()
    referrer, peer = w.found()
    core, driver = w.b.core, w.b.driver
    with driver.locked():
        fut = core.connect(peer, referrer, now=driver.now(), local=w.b.address)
    assert not fut.done()
    w.net.run_until(fut.done, timeout=5.0)
    assert fut.result() == peer


def test_the_opener_leaves_before_the_punch_request() -> None:
    """The opener must cross our NAT before the peer's answer can arrive, so
    it goes out ahead of the hole-punch request in the same batch."""
    w = World()
    referrer, peer = w.found()
    w.sends.clear()
    w.b.connect(peer, referrer)
    order = [(e.dst, e.options is not None) for e in w.sends if e.src == w.b.address]
    opener = order.index((tuple(peer), True))
    punch = [i for i, (dst, _) in enumerate(order) if dst == tuple(referrer)][1]
    assert opener < punch


@pytest.mark.parametrize(("a_eph", "b_eph"), [(False, False), (False, True), (True, False)])
def test_default_settings_lookups_do_not_poison(a_eph: bool, b_eph: bool) -> None:
    """Non-ephemeral NATed nodes are handed out as DHT nodes, so bootstrap,
    announce and lookup contact them directly: a NATed node makes such a
    first contact through the referrer (after an opener), so neither NAT
    keeps an unreplied entry and connect() still works."""
    w = World(a_eph=a_eph, b_eph=b_eph)
    referrer, peer = w.found()
    assert w.nat_a is not None and w.nat_b is not None
    assert w.nat_a.unreplied() == [] and w.nat_b.unreplied() == []
    assert w.b.core.natted is True and w.a.core.natted is True
    addr = w.b.connect(peer, referrer)
    assert addr == peer and w.talks(addr)


def test_public_nodes_contact_referred_nodes_directly() -> None:
    """A public node knows it is public after its bootstrap pong, so its
    queries send no openers and ask no referrer to forward anything."""
    w = World(a_nat=False, b_nat=False, a_eph=False, b_eph=False)
    w.found()
    assert w.b.core.natted is False
    assert w.openers() == []
    assert w.boot.stats.forwarded == 0


def test_connect_through_our_own_stored_peer_pings_directly() -> None:
    """A non-ephemeral B stores A's announcement and yields itself first as
    the node: the peer has sent to us, so connect() pings it directly."""
    w = World(a_eph=False, b_eph=False)
    referrer, peer = w.found(first=True)
    assert referrer == w.b.address
    t0 = w.net.now
    addr = w.b.connect(peer, referrer)
    assert addr == peer and w.net.now - t0 < 0.1
    assert w.b.core.natted is True  # no ping to ourselves told us otherwise
    assert w.talks(addr)
