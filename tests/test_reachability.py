"""Reachability detection and ``ephemeral="auto"``, on the simulator's
virtual clock (hyperdht.dhtrpc.reachability): deterministic for a seed.

A swarm of public full nodes is big enough that a newcomer's bootstrap
leaves nodes it never contacted, the probes' X.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from hyperdht import HyperDHT
from hyperdht.arguments import check_ephemeral
from hyperdht.dhtrpc import DHT
from hyperdht.dhtrpc.reachability import CONTACTED_LIMIT, ReachabilityProber
from hyperdht.errors import ArgumentError
from hyperdht.ipencoding import Address
from hyperdht.testing import NAT, Host, Network

BOOT = "198.18.0.1:49737"


def seeded(node: HyperDHT, seed: int = 1) -> HyperDHT:
    """``node`` with its core's random choices (the probes' targets and
    referrers) seeded, before its first probe run: with the network's seed
    that makes a run reproducible."""
    node.core.rng.seed(seed)
    return node


class Swarm:
    """A bootstrap node and ``n`` public full nodes on their own hosts."""

    def __init__(self, n: int = 40, *, seed: int = 1, loss: float = 0.0) -> None:
        rng = random.Random(seed)
        # One router between NATs, as in tests/test_connect.py: a NAT
        # opener (IP TTL 2) dies before the far NAT.
        self.net = Network(seed=seed, latency=0.01, hops=1)
        self.boot = HyperDHT(backend=self.net.host("198.18.0.1"), port=49737)
        self.nodes = [
            seeded(HyperDHT(id=rng.randbytes(32), backend=self.net.host(), bootstrap=[BOOT]))
            for _ in range(n)
        ]
        for node in self.nodes:
            assert node.ready(timeout=30)
        self.net.loss = loss

    def host(self, nat: str | None = None, **kw: Any) -> Host:
        """A public host, or one behind a NAT: ``"linux"`` (port-restricted,
        keeps unreplied inbound entries), ``"openwrt"`` (port-restricted
        only) or a filtering behaviour such as ``"full-cone"``."""
        if nat is None:
            return self.net.host()
        the_nat = self.nat(nat, **kw)
        return self.net.host(nat=the_nat)

    def nat(self, kind: str, **kw: Any) -> NAT:
        if kind == "linux":
            return self.net.nat(keep_unsolicited=True, **kw)
        if kind == "openwrt":
            return self.net.nat(**kw)
        return self.net.nat(filtering=kind, **kw)  # type: ignore[arg-type]

    def known_by_others(self, node: DHT) -> int:
        """How many swarm nodes have ``node``'s id in their table."""
        return sum(any(n.id == node.id for n in other.nodes()) for other in self.nodes)

    def settle(self, node: DHT, runs: int = 1, timeout: float = 30.0) -> float:
        """Run until ``node`` finished ``runs`` probe runs; the virtual
        seconds it took."""
        t0 = self.net.now
        assert self.net.run_until(
            lambda: node.stats.reachability_probes["runs"] >= runs, timeout=timeout
        )
        return self.net.now - t0

    def close(self) -> None:
        for node in [*self.nodes, self.boot]:
            node.close()


@pytest.fixture
def swarm() -> Any:
    s = Swarm()
    yield s
    s.close()


def test_a_public_node_is_reachable_and_a_full_node(swarm: Swarm) -> None:
    node = HyperDHT(backend=swarm.host(), bootstrap=[BOOT])  # "auto" by default
    assert node.ready()
    # The first pong showed no address translation: reachable at once, and
    # the bootstrap already carried our id.
    assert node.reachability == "reachable" and not node.ephemeral
    assert swarm.known_by_others(node) >= 10
    took = swarm.settle(node)
    assert took < 1.0  # a few round trips of 20 ms
    probes = node.stats.reachability_probes
    assert probes["hit"] >= 1 and probes["miss"] == 0
    assert node.stats.reachability == "reachable"


@pytest.mark.parametrize("kind", ["linux", "openwrt"])
def test_a_natted_node_is_unreachable_and_stays_ephemeral(swarm: Swarm, kind: str) -> None:
    node = seeded(HyperDHT(backend=swarm.host(kind), bootstrap=[BOOT]))
    assert node.ready()
    assert node.reachability == "unknown" and node.ephemeral
    took = swarm.settle(node)
    assert took < 5.0
    assert node.reachability == "unreachable" and node.ephemeral
    assert node.stats.reachability_probes["hit"] == 0
    assert node.stats.reachability_probes["miss"] >= 2
    swarm.net.run_for(60.0)
    assert swarm.known_by_others(node) == 0


def test_a_full_cone_natted_node_becomes_a_full_node(swarm: Swarm) -> None:
    node = seeded(HyperDHT(backend=swarm.host("full-cone"), bootstrap=[BOOT]))
    assert node.ready()
    assert node.ephemeral and swarm.known_by_others(node) == 0
    outside = node.core.observed
    assert outside is not None

    def answers_with_its_id() -> bool:
        pinger = DHT(backend=swarm.host())  # no table, no bootstrap
        pinger.ping(outside)
        known = any(n.id == node.id for n in pinger.nodes())
        pinger.close()
        return known

    assert not answers_with_its_id()  # ephemeral: no id on its pongs
    swarm.settle(node)
    assert node.reachability == "reachable" and not node.ephemeral
    assert answers_with_its_id()  # a full node: its pongs carry its id
    # It re-bootstrapped with its id: the nodes near it now know it.
    swarm.net.run_for(5.0)
    assert swarm.known_by_others(node) >= 10


def test_loss_never_makes_a_natted_node_reachable() -> None:
    s = Swarm(seed=2, loss=0.2)
    try:
        node = seeded(HyperDHT(backend=s.host("linux"), bootstrap=[BOOT]))
        node.ready()
        s.settle(node, runs=3, timeout=600.0)
        assert node.reachability in ("unknown", "unreachable") and node.ephemeral
        assert node.stats.reachability_probes["hit"] == 0
    finally:
        s.close()


def test_loss_does_not_make_a_public_node_unreachable() -> None:
    s = Swarm(seed=3, loss=0.1)
    try:
        node = seeded(HyperDHT(backend=s.host(), bootstrap=[BOOT]))
        node.ready()
        s.settle(node, runs=3, timeout=3000.0)
        assert node.reachability == "reachable" and not node.ephemeral
        # Silence is checked with a direct ping: a lost answer is void, not a miss.
        assert node.stats.reachability_probes["void"] + node.stats.reachability_probes["hit"] > 0
    finally:
        s.close()


def test_a_node_that_flips() -> None:
    """Full cone -> reachable; the NAT turns port-restricted -> a later
    run says unreachable and the node is ephemeral again. (A bigger swarm:
    each run needs nodes the node never sent to.)"""
    swarm = Swarm(n=80, seed=4)
    nat = swarm.nat("full-cone")
    node = seeded(HyperDHT(backend=swarm.net.host(nat=nat), bootstrap=[BOOT]))
    node.ready()
    swarm.settle(node)
    assert node.reachability == "reachable" and not node.ephemeral
    # The router's settings change (the simulator has no API for it).
    nat._filtering = "port-restricted"
    nat._full_cone, nat._port_restricted = False, True
    swarm.settle(node, runs=2, timeout=1200.0)
    assert node.reachability == "unreachable" and node.ephemeral
    swarm.close()


def test_a_new_outside_address_starts_over(swarm: Swarm) -> None:
    node = seeded(HyperDHT(backend=swarm.host("linux"), bootstrap=[BOOT]))
    node.ready()
    swarm.settle(node)
    assert node.reachability == "unreachable"
    with node.driver.locked():
        node.core.observed = Address("198.18.200.1", 4242)  # as a pong would say
        assert node.reachability == "unknown"
    # A later run decides again (a run in a small swarm may find too few
    # never-contacted nodes to say anything: then the next one does).
    assert swarm.net.run_until(lambda: node.reachability == "unreachable", timeout=600.0)
    assert node.stats.reachability_probes["runs"] >= 2


def test_a_network_too_small_to_probe_stays_unknown() -> None:
    net = Network(seed=1, latency=0.01)
    boot = DHT(backend=net.host("198.18.0.1"), port=49737)
    others = [DHT(backend=net.host(), bootstrap=[BOOT]) for _ in range(3)]
    node = seeded(HyperDHT(backend=net.host(nat=net.nat(keep_unsolicited=True)), bootstrap=[BOOT]))
    node.ready()
    assert net.run_until(lambda: node.stats.reachability_probes["runs"] >= 1, timeout=30)
    assert node.reachability == "unknown" and node.ephemeral
    assert node.stats.reachability_probes["no_candidate"] >= 1
    for n in [node, *others, boot]:
        n.close()


def test_explicit_modes_keep_their_meaning(swarm: Swarm) -> None:
    full = seeded(HyperDHT(backend=swarm.host("linux"), bootstrap=[BOOT], ephemeral=False))
    eph = HyperDHT(backend=swarm.host(), bootstrap=[BOOT], ephemeral=True)
    full.ready()
    eph.ready()
    swarm.net.run_for(60.0)
    # No probes; the first pong's verdict only, and it changes no mode.
    assert full.stats.reachability_probes == eph.stats.reachability_probes == {}
    assert full.reachability == "unknown" and not full.ephemeral
    assert eph.reachability == "reachable" and eph.ephemeral
    assert DHT(backend=swarm.host(), bootstrap=[BOOT]).ephemeral is False  # DHT: False


def test_the_first_node_of_a_network_is_a_full_node() -> None:
    net = Network(seed=1)
    boot = seeded(HyperDHT(backend=net.host("198.18.0.1"), port=49737))
    assert not boot.ephemeral and boot.reachability == "unknown"
    boot.close()


def test_a_probe_never_uses_a_host_we_sent_to(swarm: Swarm) -> None:
    """Every X got nothing from us before the forwarded ping reached it."""
    sent: dict[str, float] = {}
    node_host = swarm.host("linux")
    forwarded_to: list[tuple[str, float]] = []
    public_ip = None

    def trace(event: Any) -> None:
        if event.kind == "send" and event.src[0] == node_host.ip:
            sent.setdefault(event.dst[0], event.time)

    swarm.net.trace = trace
    node = seeded(HyperDHT(backend=node_host, bootstrap=[BOOT]))

    def on_forward(requester: Address, target: Address) -> None:
        if requester.host == public_ip:
            forwarded_to.append((target.host, swarm.net.now))

    for other in swarm.nodes:
        other.core.on_holepunch = on_forward
    node.ready()
    public_ip = node.core.observed.host if node.core.observed else None
    assert public_ip is not None
    swarm.settle(node)
    probes = [(h, t) for h, t in forwarded_to]
    assert len(probes) >= 2
    for host, t in probes:
        assert sent.get(host, float("inf")) > t, host


def test_sent_hosts_are_bounded() -> None:
    net = Network(seed=1)
    node = DHT(backend=net.host())
    prober: ReachabilityProber = node.core.reachability
    batch = [
        (b"x", Address(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1), None)
        for i in range(CONTACTED_LIMIT + 10)
    ]
    prober.sent(batch)
    assert len(prober._contacted) == CONTACTED_LIMIT
    assert not prober.contacted("10.0.0.0") and prober.contacted(batch[-1][1].host)
    node.close()


@pytest.mark.parametrize("value", ["yes", 1, None, "Auto"])
def test_bad_ephemeral(value: Any) -> None:
    with pytest.raises(ArgumentError, match="ephemeral"):
        check_ephemeral(value)
    net = Network(seed=1)
    with pytest.raises(ArgumentError, match="ephemeral"):
        DHT(backend=net.host(), ephemeral=value)


@pytest.mark.parametrize("linux", [True, False])
def test_connect_with_both_peers_on_auto(linux: bool) -> None:
    """The connect flow of tests/test_connect.py, both NATed peers on the
    default ``ephemeral="auto"``, in a swarm big enough to probe."""
    s = Swarm(n=30)
    try:
        nat_a = s.nat("linux" if linux else "openwrt", hops=0)
        nat_b = s.nat("linux" if linux else "openwrt", hops=0)
        a = seeded(HyperDHT(backend=s.net.host(nat=nat_a), bootstrap=[BOOT]))
        b = HyperDHT(backend=s.net.host(nat=nat_b), bootstrap=[BOOT])
        assert a.ready() and b.ready()
        s.settle(a)
        s.settle(b)
        assert a.reachability == b.reachability == "unreachable"
        key = bytes(32)
        a.announce_discard(key)
        hits = [(r.node, p) for r in b.lookup(key) for p in r.peers]
        referrer, peer = next(h for h in hits if h[0] != b.address)
        got: list[bytes] = []
        a.on_datagram(lambda d, src: a.send_datagram(b"re:" + d, src))
        b.on_datagram(lambda d, src: got.append(d))
        addr = b.connect(peer, referrer)
        b.send_datagram(b"hi", addr)
        assert s.net.run_until(lambda: got == [b"re:hi"], timeout=5.0)
        assert a.ephemeral and b.ephemeral
        # The probes' X left unreplied entries in a Linux NAT; B never did.
        assert b.core.observed is not None
        assert all(src[0] != b.core.observed.host for src, _ in nat_a.unreplied())
    finally:
        s.close()
