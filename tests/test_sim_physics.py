"""The simulator's IP physics: hop counts, TTL expiry, and NATs that keep an
unreplied inbound entry and remap a clashing outbound flow (Linux conntrack)."""

from __future__ import annotations

import pytest

from hyperdht.datagram import SendOptions
from hyperdht.errors import ArgumentError
from hyperdht.ipencoding import Address
from hyperdht.testing import Network, TraceEvent


class Sink:
    """A minimal endpoint: records what arrives, sends what it is told to."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, Address]] = []
        self.out: list[tuple[bytes, Address, SendOptions | None]] = []

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.got.append((data, addr))

    def datagrams_to_send(self) -> list[tuple[bytes, Address, SendOptions | None]]:
        out, self.out = self.out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def endpoint(net: Network, host: object) -> tuple[Sink, object]:
    sink = Sink()
    driver = host.create_driver()  # type: ignore[attr-defined]
    driver.start(sink)
    return sink, driver


def send(driver: object, data: bytes, dst: tuple[str, int], ttl: int | None = None) -> None:
    opts = None if ttl is None else SendOptions(ttl=ttl)
    driver.send_datagrams([(data, Address(*dst), opts)])  # type: ignore[attr-defined]


def test_ttl_expires_at_the_router_it_runs_out_at() -> None:
    """Behind a NAT with 2 core hops: TTL 1 dies before the NAT (no mapping),
    TTL 2 creates the mapping and dies in the core, TTL 4 reaches a public
    host (NAT + 2 core routers forward it)."""
    drops: list[TraceEvent] = []
    net = Network(hops=2, trace=lambda e: drops.append(e) if e.kind == "drop" else None)
    nat = net.nat("198.18.9.1")
    lan, lan_drv = endpoint(net, net.host("10.0.0.2", nat=nat))
    pub, pub_drv = endpoint(net, net.host("198.18.0.5"))
    dst = pub_drv.address  # type: ignore[attr-defined]
    send(lan_drv, b"t1", dst, ttl=1)
    assert nat.mappings() == []
    send(lan_drv, b"t2", dst, ttl=2)
    assert len(nat.mappings()) == 1
    send(lan_drv, b"t3", dst, ttl=3)
    send(lan_drv, b"t4", dst, ttl=4)
    send(lan_drv, b"none", dst)
    net.run()
    assert [d for d, _ in pub.got] == [b"t4", b"none"]
    assert [e.data for e in drops] == [b"t1", b"t2", b"t3"]
    assert {e.reason for e in drops} == {"ttl_expired"}
    assert net.stats.dropped_ttl_expired == 3
    assert lan.got == []


def test_far_nat_hops_and_host_hops_count() -> None:
    """Into a LAN: the far NAT forwards (one hop) and so do the host's own
    routers; a datagram that reaches the far NAT but no mapping is a local
    delivery there (any TTL)."""
    net = Network(hops=1)
    na = net.nat("198.18.1.1", hops=1)
    a, a_drv = endpoint(net, net.host("10.0.0.2", nat=na, hops=1))
    pub, pub_drv = endpoint(net, net.host("198.18.0.5"))
    send(a_drv, b"open", pub_drv.address)  # type: ignore[attr-defined]
    net.run()
    a_pub = pub.got[0][1]
    # public -> A: core (1) + NAT A's hops (1) + NAT A (1) + A's router (1).
    for ttl in (4, 5):
        send(pub_drv, f"ttl{ttl}".encode(), a_pub, ttl=ttl)
    net.run()
    assert [d for d, _ in a.got] == [b"ttl5"]
    assert net.hops == 1 and na.hops == 1


def test_bad_hops_raise_argument_error() -> None:
    with pytest.raises(ArgumentError, match="hops"):
        Network(hops=-1)
    net = Network()
    with pytest.raises(ArgumentError, match="hops"):
        net.nat(hops=-1)
    with pytest.raises(ArgumentError, match="hops"):
        net.host(hops=-2)


def two_linux_nats() -> tuple[Network, list[object]]:
    net = Network(hops=1)
    na = net.nat("198.18.1.1", keep_unsolicited=True)
    nb = net.nat("198.18.2.1", keep_unsolicited=True)
    a, a_drv = endpoint(net, net.host("10.0.0.2", nat=na))
    b, b_drv = endpoint(net, net.host("10.0.0.2", nat=nb))
    rv, rv_drv = endpoint(net, net.host("198.18.0.10"))
    return net, [na, nb, a, a_drv, b, b_drv, rv, rv_drv]


def test_unreplied_entry_remaps_the_clashing_flow() -> None:
    """B's datagram reaches NAT A first: NAT A keeps it as an unreplied entry,
    and A's later datagram to B leaves from another port, which NAT B drops
    (and keeps in turn): the two-NAT failure of NAT-REPORT.md section 2."""
    net, (na, nb, _a, a_drv, b, b_drv, rv, rv_drv) = two_linux_nats()
    rendezvous = rv_drv.address  # type: ignore[attr-defined]
    send(a_drv, b"a", rendezvous)
    send(b_drv, b"b", rendezvous)
    net.run()
    a_pub, b_pub = rv.got[0][1], rv.got[1][1]  # type: ignore[attr-defined]
    send(b_drv, b"direct", a_pub)  # filtered at NAT A, but kept
    net.run()
    assert na.unreplied() == [((b_pub.host, b_pub.port), a_pub.port)]  # type: ignore[attr-defined]
    send(a_drv, b"answer", b_pub)
    net.run()
    assert b.got == []  # type: ignore[attr-defined]
    remapped = [m for m in na.mappings() if m.remote == (b_pub.host, b_pub.port)]  # type: ignore[attr-defined]
    assert remapped and remapped[0].public.port != a_pub.port
    assert nb.unreplied() == [((a_pub.host, remapped[0].public.port), b_pub.port)]  # type: ignore[attr-defined]


def test_low_ttl_opener_avoids_the_clash() -> None:
    """The same, but B's first datagram has TTL 2: it opens NAT B and expires
    in the core, so A's answer keeps its port and gets in."""
    net, (na, _nb, a, a_drv, b, b_drv, rv, rv_drv) = two_linux_nats()
    rendezvous = rv_drv.address  # type: ignore[attr-defined]
    send(a_drv, b"a", rendezvous)
    send(b_drv, b"b", rendezvous)
    net.run()
    a_pub, b_pub = rv.got[0][1], rv.got[1][1]  # type: ignore[attr-defined]
    send(b_drv, b"opener", a_pub, ttl=2)
    net.run()
    assert na.unreplied() == []
    send(a_drv, b"answer", b_pub)
    net.run()
    assert b.got == [(b"answer", a_pub)]  # type: ignore[attr-defined]
    send(b_drv, b"data", a_pub)
    net.run()
    assert (b"data", b_pub) in a.got  # type: ignore[attr-defined]


def test_default_nat_keeps_nothing() -> None:
    """Without keep_unsolicited an unsolicited datagram leaves no trace (the
    openwrt-like behaviour the simulator always had)."""
    net = Network()
    nat = net.nat()
    _, drv = endpoint(net, net.host(nat=nat))
    _pub, pub_drv = endpoint(net, net.host())
    send(drv, b"x", pub_drv.address)  # type: ignore[attr-defined]
    net.run()
    send(pub_drv, b"y", (nat.public_ip, 1))
    net.run()
    assert nat.unreplied() == [] and not nat.keep_unsolicited
