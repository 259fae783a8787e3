"""Routing-table diversity: at most a few contacts per IP and per /24 in
any bucket, so one host's id flood cannot eclipse a node.

On the table (:class:`hyperdht.kbucket.KBucket` with ``group``) and on the
sans-I/O core, with a virtual clock. The core tests use global addresses
as plain values: nothing is sent, no socket is opened.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdht import messages
from hyperdht.dhtrpc import DHTCore
from hyperdht.dhtrpc.core import MAINTENANCE_INTERVAL, K
from hyperdht.dhtrpc.limits import MAX_PER_IP, MAX_PER_SUBNET, diversity_group
from hyperdht.errors import ArgumentError
from hyperdht.ipencoding import Address
from hyperdht.kbucket import KBucket
from hyperdht.messages import RpcRequest

# -- the grouping of addresses ----------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.5.6.7",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "198.18.0.1",  # the simulator's public range
        "198.19.255.1",
        "169.254.1.1",
        "100.64.0.1",
        "203.0.113.7",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "localhost",
        "",
    ],
)
def test_non_global_addresses_are_exempt(host: str) -> None:
    assert diversity_group(host) is None


@pytest.mark.parametrize(
    "host",
    ["1.1.1.1", "45.1.2.3", "8.8.8.8", "223.255.255.1", "2606:4700::1111", "::ffff:8.8.8.8"],
)
def test_global_addresses_are_grouped_as_ipaddress_sees_them(host: str) -> None:
    assert ipaddress.ip_address(host).is_global or host.startswith("::ffff:")
    assert diversity_group(host) is not None


DELIBERATE = ("192.0.0.0/24", "192.88.99.0/24", "224.0.0.0/4")


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_ipv4_exemptions_agree_with_ipaddress(n: int) -> None:
    """Our table of non-global IPv4 blocks against the standard library's
    (3.10 to 3.13 agree), except where we exempt more on purpose: 192.0.0.0/24
    (recent versions call 192.0.0.9 and .10 global), the deprecated 6to4
    relay anycast 192.88.99.0/24 and multicast 224.0.0.0/4 (never a source
    address), which the standard library calls global."""
    ip = ipaddress.IPv4Address(n)
    if any(ip in ipaddress.IPv4Network(net) for net in DELIBERATE):
        assert diversity_group(str(ip)) is None
        return
    assert (diversity_group(str(ip)) is not None) == ip.is_global


@pytest.mark.parametrize(
    "host", ["1.2.3", "1.2.3.4.5", "1.2.3.256", "1.2.3.-4", "1.2.3. 4", "a.b.c.d", "::g"]
)
def test_malformed_hosts_are_exempt(host: str) -> None:
    assert diversity_group(host) is None


def test_global_addresses_group_by_ip_and_24_or_64() -> None:
    a = diversity_group("45.1.2.3")
    b = diversity_group("45.1.2.200")
    c = diversity_group("45.1.3.3")
    assert a is not None and b is not None and c is not None
    assert a[0] != b[0]
    assert a[1] == b[1] != c[1]
    assert diversity_group("::ffff:45.1.2.3") == a
    v6a = diversity_group("2606:4700:1:2::1")
    v6b = diversity_group("2606:4700:1:2:ffff::9")
    v6c = diversity_group("2606:4700:1:3::1")
    assert v6a is not None and v6b is not None and v6c is not None
    assert v6a[0] != v6b[0] and v6a[1] == v6b[1] != v6c[1]


# -- the table ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class C:
    id: bytes
    ip: str | None
    net: str | None = None


def group(c: C) -> tuple[str, str] | None:
    return None if c.ip is None else (c.ip, c.net or c.ip)


def one_bucket_ids(n: int, seed: int = 0) -> list[bytes]:
    """Ids whose first bit is 1: with local id 0, all in far bucket 0 once split."""
    rng = random.Random(seed)
    return [bytes([0x80 | rng.randrange(128)]) + rng.randbytes(31) for _ in range(n)]


def test_table_refuses_a_third_contact_of_one_ip_in_a_bucket() -> None:
    rejected: list[C] = []
    pinged: list[Any] = []
    t: KBucket[C] = KBucket(
        bytes(32),
        group=group,
        group_limits=(2, 4),
        on_rejected=rejected.append,
        on_ping=lambda old, new: pinged.append(new),
    )
    ids = one_bucket_ids(10)
    t.add(C(ids[0], "a", "n"))
    t.add(C(ids[1], "a", "n"))
    t.add(C(ids[2], "a", "n"))
    assert [c.id for c in rejected] == [ids[2]]
    t.add(C(ids[3], "b", "n"))
    t.add(C(ids[4], "b", "n"))
    t.add(C(ids[5], "c", "n"))  # a fifth of subnet "n"
    assert [c.id for c in rejected] == [ids[2], ids[5]]
    t.add(C(ids[6], None))  # exempt
    t.add(C(ids[7], None))
    t.add(C(ids[8], None))
    assert len(t) == 7
    # A known id is refreshed, never refused.
    t.add(C(ids[0], "a", "n"))
    assert len(t) == 7 and len(rejected) == 2 and not pinged


def test_a_refused_contact_never_makes_the_table_ping() -> None:
    pinged: list[Any] = []
    t: KBucket[C] = KBucket(
        bytes(32),
        k=4,
        group=group,
        group_limits=(2, 4),
        on_ping=lambda old, new: pinged.append(new),
    )
    # Split once so that the 1-prefixed ids sit in a far bucket that cannot split.
    rng = random.Random(3)
    for i in range(4):
        t.add(C(bytes([rng.randrange(64)]) + rng.randbytes(31), f"near{i}"))
    ids = one_bucket_ids(8)
    for i in range(4):
        t.add(C(ids[i], f"ip{i // 2}"))
    assert len(t) == 8 and not pinged
    t.add(C(ids[4], "ip0"))  # full and crowded: refused, no ping
    assert not pinged
    t.add(C(ids[5], "ip9"))  # full, not crowded: the usual ping
    assert len(pinged) == 1


def test_group_limits_are_checked() -> None:
    with pytest.raises(ArgumentError, match="group_limits"):
        KBucket(bytes(32), group=group, group_limits=(0,))


def test_many_exempt_contacts_on_one_address_fill_a_bucket() -> None:
    t: KBucket[C] = KBucket(bytes(32), group=lambda c: diversity_group(c.ip or ""))
    t = KBucket(bytes(32), group=lambda c: diversity_group(c.ip or ""), group_limits=(2, 4))
    for ip in ("127.0.0.1", "198.18.0.1", "10.0.0.1"):
        t = KBucket(bytes(32), group=lambda c: diversity_group(c.ip or ""), group_limits=(2, 4))
        for cid in one_bucket_ids(60):
            t.add(C(cid, ip))
        assert max(len(b) for b in t.buckets()) == 20


# -- the core: an id flood from one host --------------------------------------

OWN = bytes(32)


def make_core() -> DHTCore:
    rng = random.Random(1)
    return DHTCore(id=OWN, rng=rng, random_bytes=rng.randbytes)


def frame(tid: int, req: RpcRequest) -> bytes:
    return (0x8000 | tid).to_bytes(2, "big") + messages.encode_request(req)


def honest(i: int) -> Address:
    """A global address in a /24 of its own."""
    return Address(f"{20 + i % 50}.{i // 50}.1.1", 49737)


def near_id(rng: random.Random, depth: int) -> bytes:
    """A random id sharing exactly ``depth`` leading bits with OWN (all zero)."""
    n = int.from_bytes(rng.randbytes(32), "big")
    n >>= depth + 1
    n |= 1 << (255 - depth)
    return n.to_bytes(32, "big")


def populate(core: DHTCore, rng: random.Random) -> set[bytes]:
    """Ids from 1,000 honest hosts, spread over the buckets as a real
    network would spread them; the core then has a full, split table."""
    for i in range(1000):
        depth = min(int(rng.expovariate(0.7)), 12)
        core.receive_datagram(
            frame(1, RpcRequest(command="_ping", id=near_id(rng, depth))), honest(i), 0.0
        )
    core.datagrams_to_send()
    core.bootstrapped = True
    return {c.id for c in core.table}


def flood(
    core: DHTCore, hosts: list[str], n: int, rng: random.Random, now: float, *, alive: bool
) -> tuple[list[Any], list[Address]]:
    """``n`` pings, each with a new id close to ours, from ``hosts`` on
    random ports. The core's re-pings of its own contacts are answered at
    once when ``alive`` (the contacts are up), never otherwise. Returns the
    answers to the flood and the addresses re-pinged."""
    answers = []
    repinged = []
    attackers = set(hosts)
    by_addr = {c.address: c.id for c in core.table}
    for j in range(n):
        rid = near_id(rng, rng.randrange(0, 40))
        addr = Address(hosts[j % len(hosts)], rng.randrange(1024, 65536))
        core.receive_datagram(frame(j & 0x7FFF, RpcRequest(command="_ping", id=rid)), addr, now)
        for data, to, opts in core.datagrams_to_send():
            if to.host in attackers:
                answers.append((data, to, opts))
                continue
            repinged.append(to)
            if alive:
                tid = int.from_bytes(data[:2], "big") & 0x7FFF
                pong = messages.RpcResponse(id=by_addr[to], value=b"\x01\x02\x03\x04\x00\x01")
                core.receive_datagram(
                    tid.to_bytes(2, "big") + messages.encode_response(pong), to, now
                )
    # Requests to the dead contacts time out: they make room.
    while (t := core.get_timer()) is not None and t <= now + 10:
        core.handle_timer(t)
    core.datagrams_to_send()
    return answers, repinged


def per_bucket(core: DHTCore, pick: Any) -> int:
    """The largest number of contacts in one bucket for which ``pick`` is true."""
    return max(sum(1 for c in b if pick(c)) for b in core.table.buckets())


ONE_HOST = ["45.9.9.9"]
ONE_24 = [f"45.9.9.{i}" for i in range(1, 255)]


@pytest.mark.parametrize("attackers", [ONE_HOST, ONE_24], ids=["one-host", "one-24"])
def test_an_id_flood_from_one_host_or_one_24_displaces_no_live_contact(
    attackers: list[str],
) -> None:
    """10,000 new ids close to ours from one host (or one /24) on random
    ports, at a node whose 1,000-host table has gone stale. The flood
    costs it at most one re-ping per stale contact of the buckets the
    flood reaches, keeps every contact that answers, and gets at most
    MAX_PER_IP (MAX_PER_SUBNET) contacts into any bucket."""
    rng = random.Random(5)
    core = make_core()
    before = populate(core, rng)
    assert len(before) > 100
    # Let every contact go stale: a full bucket would now re-ping them.
    while (t := core.get_timer()) is not None and t <= 4 * MAINTENANCE_INTERVAL:
        core.handle_timer(t)
    core.datagrams_to_send()
    answers, repinged = flood(core, attackers, 10_000, rng, 4 * MAINTENANCE_INTERVAL, alive=True)
    hosts = set(attackers)
    assert len(answers) == 10_000  # one answer per ping, nothing more
    assert len(repinged) <= len(before)
    assert len(repinged) == len(set(repinged))  # each contact once
    assert before <= {c.id for c in core.table}
    limit = MAX_PER_IP if len(attackers) == 1 else MAX_PER_SUBNET
    assert per_bucket(core, lambda c: c.address.host in hosts) <= limit
    flooded = sum(1 for c in core.table if c.address.host in hosts)
    assert flooded <= limit * len(core.table.buckets())
    # The 20 closest to our own id: the flood holds a few, never all.
    closest = core.table.closest(OWN, K)
    assert sum(1 for c in closest if c.address.host in hosts) <= 2 * limit
    # Most of the flood is refused by the rule; the rest found its bucket
    # full of contacts that had just answered.
    assert core.stats.drops["table_diversity"] > 7_500


@pytest.mark.parametrize(
    ("attackers", "bounded"), [(ONE_HOST, True), (["10.9.9.9"], False)], ids=["global", "exempt"]
)
def test_a_flood_replaces_dead_contacts_only_up_to_the_limit(
    attackers: list[str], bounded: bool
) -> None:
    """When the stale contacts are really gone, the usual Kademlia
    replacement lets newcomers in, but from one host at most MAX_PER_IP per
    bucket. The control, from an exempt (private, as on a LAN) address:
    the flood takes over whole buckets, as in the reference."""
    rng = random.Random(5)
    core = make_core()
    populate(core, rng)
    while (t := core.get_timer()) is not None and t <= 4 * MAINTENANCE_INTERVAL:
        core.handle_timer(t)
    core.datagrams_to_send()
    now = 4 * MAINTENANCE_INTERVAL
    for _ in range(10):
        flood(core, attackers, 500, rng, now, alive=False)
        now += 10
    taken = per_bucket(core, lambda c: c.address.host in attackers)
    if bounded:
        assert taken <= MAX_PER_IP
    else:
        assert taken > MAX_PER_SUBNET


def test_many_nodes_on_loopback_fill_the_table() -> None:
    """The swarm command, the demo and the tests run every node on
    127.0.0.1: exempt, so the table fills as before."""
    rng = random.Random(2)
    core = make_core()
    for i in range(500):
        rid = near_id(rng, min(int(rng.expovariate(0.7)), 12))
        core.receive_datagram(
            frame(1, RpcRequest(command="_ping", id=rid)), Address("127.0.0.1", 10000 + i), 0.0
        )
    assert not core.stats.drops
    sizes = Counter(len(b) for b in core.table.buckets())
    assert sizes[K] >= 3  # full buckets of one IP
