"""``HyperDHT.connect()`` in the routed lab: lookup -> connect -> data both ways.

Each run builds a fresh :class:`RoutedLab`, starts P (the bootstrap and
referrer), A and B as ``dht_agent.py`` nodes on ``$HYPERDHT_TEST_BACKEND``,
lets A announce a fresh key, B look it up, and B call ``connect(A, P)``
with no option (the opener TTL and the NAT detection are connect's own).
A run is "ok" when connect returned and application datagrams then flowed
both ways on the returned address.  The cells and their floors are those of
the issue; the observations (seconds to connect, punched port = announced
port) are printed with ``-s`` and kept in the junit XML.

Both peers run on default settings (``ephemeral="auto"``: a NATed peer
finds itself unreachable, or cannot tell in a lab this small, and stays
ephemeral; a public one becomes a full node, handed out as a DHT node, so
the other's bootstrap, announce and lookup contact it; from a NATed node
that first contact goes through the referrer, NAT-REPORT.md section 6).
A record-only cell runs the same with both peers ephemeral.
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from .dht_client import Addr, AgentError, DhtAgent
from .lab import RoutedLab, leftover_namespaces, own_prefix

BOOTSTRAP_PORT = 49737
RUNS = 10
SILENCE = 2.0

pytestmark = pytest.mark.matrix

_RESULTS: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)


def report(record_property: Callable[[str, object], None], name: str, value: object) -> None:
    record_property(name, value)
    print(f"[connect] {name}: {json.dumps(value, default=str)}")


def exchange(a: DhtAgent, b: DhtAgent, addr: Addr, tag: str) -> bool:
    """B -> A on ``addr``, A answers where it came from, B checks the source."""
    b.call("send", addr=list(addr), data=f"b-to-a-{tag}")
    try:
        data, seen = a.recv(timeout=SILENCE)
        if data != f"b-to-a-{tag}":
            return False
        a.call("send", addr=list(seen), data=f"a-to-b-{tag}")
        back, source = b.recv(timeout=SILENCE)
    except AgentError:
        return False
    return back == f"a-to-b-{tag}" and source == tuple(addr)


def run_once(lab: RoutedLab, tag: str, ephemeral: bool | str) -> dict[str, Any]:
    t0 = time.monotonic()
    boot = (lab.bootstrap_ip, BOOTSTRAP_PORT)
    DhtAgent(lab, lab.bootstrap, host=lab.bootstrap_ip, port=BOOTSTRAP_PORT)
    a = DhtAgent(lab, lab.host_a, bootstrap=[boot], ephemeral=ephemeral)
    b = DhtAgent(lab, lab.host_b, bootstrap=[boot], ephemeral=ephemeral)
    key = secrets.token_bytes(32).hex()
    a.call("announce", key=key)
    results = b.call("lookup", key=key)["results"]
    hits = [((r["node"][0], r["node"][1]), (p[0], p[1])) for r in results for p in r["peers"]]
    assert hits, f"lookup found no peer: {results}"
    # P as the referrer, not B itself (a non-ephemeral B stores A's
    # announcement and lists itself first: connect() then pings directly).
    referrer, a_pub = next(h for h in hits if h[0] == boot)
    obs: dict[str, Any] = {"nats": f"{lab.nat_a}x{lab.nat_b}", "chain": lab.chain}
    try:
        reply = b.call("connect", timeout=20, peer=list(a_pub), referrer=list(referrer))
    except AgentError as exc:
        obs.update(ok=False, connect=exc.error, connect_s=None)
    else:
        addr: Addr = (reply["address"][0], reply["address"][1])
        obs.update(
            connect=addr,
            connect_s=reply["seconds"],
            punched_is_announced=addr == a_pub,
            ok=exchange(a, b, addr, tag),
        )
    stats = b.call("stats")
    obs["b_natted"], obs["b_opener_ttl"] = stats["natted"], stats["opener_ttl"]
    obs["b_reachability"] = stats["reachability"]
    obs["a_reachability"] = a.call("stats")["reachability"]
    obs["seconds"] = round(time.monotonic() - t0, 2)
    return obs


def run_cell(
    make: Callable[..., RoutedLab],
    nat_a: str,
    nat_b: str,
    chain: int,
    runs: int = RUNS,
    ephemeral: bool | str = "auto",
) -> list[dict[str, Any]]:
    out = []
    for rep in range(runs):
        lab = make(chain=chain, nat_a=nat_a, nat_b=nat_b)
        try:
            out.append(run_once(lab, f"{nat_a[:2]}{nat_b[:2]}{chain}{rep}", ephemeral))
        finally:
            lab.close()
    _RESULTS[f"{nat_a}x{nat_b}/chain{chain}{'/ephemeral' if ephemeral is True else ''}"].extend(out)
    return out


CELLS = [
    ("linux", "linux", 1, 9),
    ("linux", "linux", 4, 9),
    ("openwrt", "linux", 4, 9),
    ("linux", "public", 4, 10),
    ("public", "linux", 4, 10),
]


@pytest.mark.time_limit(240)
@pytest.mark.parametrize(("nat_a", "nat_b", "chain", "floor"), CELLS)
def test_connect_cell(
    routed_lab_factory: Callable[..., RoutedLab],
    record_property: Any,
    nat_a: str,
    nat_b: str,
    chain: int,
    floor: int,
) -> None:
    """lookup -> connect() -> data both ways, ``RUNS`` fresh labs, >= ``floor`` ok."""
    runs = run_cell(routed_lab_factory, nat_a, nat_b, chain)
    report(record_property, f"{nat_a}x{nat_b}_chain{chain}", runs)
    ok = sum(r["ok"] for r in runs)
    assert ok >= floor, f"connect worked {ok}/{len(runs)}: {runs}"


@pytest.mark.time_limit(120)
def test_ephemeral_peers_report(
    routed_lab_factory: Callable[..., RoutedLab], record_property: Any
) -> None:
    """Record-only: both peers ephemeral (never handed out), linux x linux."""
    runs = run_cell(routed_lab_factory, "linux", "linux", 4, runs=3, ephemeral=True)
    report(record_property, "linuxxlinux_ephemeral", runs)


#: The random NAT (``MASQUERADE --random-fully``), record-only and opt-in
#: (``HYPERDHT_NETNS_FULL_MATRIX=1``).
RANDOM_PAIRS = [("random", "linux"), ("linux", "random")]


@pytest.mark.time_limit(120)
@pytest.mark.parametrize(("nat_a", "nat_b"), RANDOM_PAIRS)
def test_random_nat_report(
    routed_lab_factory: Callable[..., RoutedLab], record_property: Any, nat_a: str, nat_b: str
) -> None:
    """Record-only: connect() with a random NAT on one side (chain 4)."""
    if os.environ.get("HYPERDHT_NETNS_FULL_MATRIX", "") not in ("1", "true", "yes"):
        pytest.skip("the random NAT runs only with HYPERDHT_NETNS_FULL_MATRIX=1")
    runs = run_cell(routed_lab_factory, nat_a, nat_b, 4, runs=3)
    report(record_property, f"{nat_a}x{nat_b}_chain4", runs)


def test_connect_summary(record_property: Any) -> None:
    """Record-only: one line per cell, with the median time to connect."""
    if not _RESULTS:
        pytest.skip("no connect run in this session")
    summary = {}
    for cell, runs in sorted(_RESULTS.items()):
        times = [r["connect_s"] for r in runs if r["connect_s"] is not None]
        summary[cell] = {
            "ok": f"{sum(r['ok'] for r in runs)}/{len(runs)}",
            "punched_is_announced": sum(bool(r.get("punched_is_announced")) for r in runs),
            "median_connect_s": statistics.median(times) if times else None,
            "max_connect_s": max(times) if times else None,
            "run_s": statistics.median(r["seconds"] for r in runs),
            "b_opener_ttl": sorted({r.get("b_opener_ttl") for r in runs}, key=str),
        }
    report(record_property, "summary", summary)


def test_no_leftover_namespaces_from_this_process() -> None:
    assert leftover_namespaces(own_prefix()) == []
