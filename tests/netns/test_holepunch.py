"""HyperDHT hole punching through a real Linux NAT (conntrack + MASQUERADE).

Each repetition builds a fresh :class:`NatLab` and runs HyperDHT nodes
(``dht_agent.py``) inside its namespaces, on the backend named by
``$HYPERDHT_TEST_BACKEND`` (``thread`` or ``gevent``):

1. a bootstrap node on P (198.18.0.10:49737); A, behind the NAT router R,
   announces a key through it;
2. B, a public *ephemeral* node, looks the key up and gets A's public (NAT)
   address and the referrer that returned it (``QueryResponse.node``);
3. B pings that address directly: R filters it (RequestTimeout).  This leaves
   an UNREPLIED conntrack entry ``B -> R:port`` behind, as it would on the
   Internet when a client tries direct first;
4. B hole punches through the referrer and uses the address ``holepunch()``
   returned: A's answer needs the reply tuple ``B -> R:port`` that the failed
   ping already holds, so R remaps it to another port (recorded);
5. A and B exchange application datagrams over the punched path both ways.

A is ephemeral too, so P never hands A out as a DHT node and B's lookup talks
to P only: B's direct ping really is the first datagram B sends towards R.

Also here: the same with a Node.js hyperdht@1.3.0 node as bootstrap/referrer
on P, and a record-only report of the double-NAT case (B2 behind R2, see
NAT-REPORT.md).  The only "wait for nothing" is an expected RequestTimeout or
a short silence check in the record-only experiments.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from node_reference import missing_packages, node_environ

from .dht_client import BACKEND, Addr, AgentError, DhtAgent
from .lab import NatLab, ct_flow, leftover_namespaces, own_prefix

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPEAT = 10
BOOTSTRAP_PORT = 49737
INTEROP = Path(__file__).resolve().parent.parent / "interop"
PINNED = {"hyperdht": "1.3.0", "dht-rpc": "2.3.0"}
#: Seconds a record-only experiment listens for a datagram that should not come.
SILENCE = 1.0


# --------------------------------------------------------------------------- helpers


def require(ok: bool, reason: str) -> None:
    """Skip locally, fail under CI=true."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _backend_available() -> None:
    require(BACKEND in ("thread", "gevent"), f"unknown HYPERDHT_TEST_BACKEND={BACKEND!r}")
    if BACKEND == "gevent":
        require(importlib.util.find_spec("gevent") is not None, "gevent is not installed")


def report(record_property: Callable[[str, object], None], name: str, value: object) -> None:
    """Keep an observation in the junit XML (record_property) and in -s output."""
    record_property(name, value)
    print(f"[netns:{BACKEND}] {name}: {json.dumps(value, indent=1, default=str)}")


def start_python_bootstrap(lab: NatLab) -> Addr:
    boot = DhtAgent(lab, lab.public, host=lab.public_ip, port=BOOTSTRAP_PORT)
    assert boot.port == BOOTSTRAP_PORT
    return lab.public_ip, BOOTSTRAP_PORT


def node_status() -> tuple[bool, str]:
    """Whether Node.js and the pinned reference packages are usable here."""
    node = shutil.which("node")
    if node is None:
        return False, "node not found"
    missing = missing_packages(PINNED)
    if missing is not None:
        return False, missing
    return True, node


#: Fallback when tests/interop/peer.js is absent: a bare reference node.
_NODE_INLINE = """
var dgram = require('dgram'), hyperdht = require('hyperdht')
var s = dgram.createSocket('udp4')
s.bind(Number(process.argv[2]), process.argv[1])
var node = hyperdht({ socket: s })
s.on('listening', function () {
  var a = s.address()
  console.log(JSON.stringify({ event: 'ready', host: a.address, port: a.port }))
})
process.stdin.on('end', function () { node.destroy(); process.exit(0) })
process.stdin.resume()
"""


def start_node_bootstrap(lab: NatLab) -> Addr:
    ok, node = node_status()
    require(ok, f"Node.js reference unavailable: {node}")
    peer_js = INTEROP / "peer.js"
    host, port = lab.public_ip, str(BOOTSTRAP_PORT)
    if peer_js.is_file():
        argv = [node, str(peer_js), "--host", host, "--port", port]
    else:
        argv = [node, "-e", _NODE_INLINE, host, port]
    env = node_environ()
    proc = lab.run(lab.public, argv, cwd=str(INTEROP), env=env)
    m = proc.expect(r'"event":\s*"ready".*"port":\s*(\d+)', timeout=15)
    assert int(m.group(1)) == BOOTSTRAP_PORT
    return lab.public_ip, BOOTSTRAP_PORT


def announce_and_lookup(
    lab: NatLab, boot: Addr, b_ns: str
) -> tuple[DhtAgent, DhtAgent, Addr, Addr]:
    """Steps 1-2: A announces a fresh key, B looks it up.

    Returns ``(a, b, a_public, referrer)``.
    """
    a = DhtAgent(lab, lab.nat_host, bootstrap=[boot], ephemeral=True)
    b = DhtAgent(lab, b_ns, bootstrap=[boot], ephemeral=True)
    assert a.info["bootstrapped"] and b.info["bootstrapped"], (a.info, b.info)
    key = secrets.token_bytes(32).hex()
    a.call("announce", key=key)
    results = b.call("lookup", key=key)["results"]
    hits = [((r["node"][0], r["node"][1]), (p[0], p[1])) for r in results for p in r["peers"]]
    assert hits, f"lookup found no peer: {results}"
    referrer, a_pub = hits[0]
    return a, b, a_pub, referrer


def ct_lines(table: str, *needles: str) -> list[str]:
    """Conntrack lines (UDP, whitespace squeezed) mentioning any of the needles."""
    out = [" ".join(line.split()) for line in table.splitlines() if line.startswith("udp")]
    return [line for line in out if any(n in line for n in needles)]


# --------------------------------------------------------------------------- scenario


def single_nat_scenario(lab: NatLab, boot: Addr, tag: str) -> dict[str, Any]:
    """Steps 1-5 with B public; asserts every step, returns observations."""
    t0 = time.monotonic()
    a, b, a_pub, referrer = announce_and_lookup(lab, boot, lab.public2)
    b_addr = (lab.public2_ip, b.port)
    # 2. The lookup returned A's public (NAT) address, from the bootstrap/referrer.
    assert a_pub[0] == lab.nat_public_ip, a_pub
    assert referrer == boot, referrer
    # B has sent nothing towards R yet (A is ephemeral: P never handed it out).
    assert not ct_lines(lab.conntrack(), f"src={lab.public2_ip} "), lab.conntrack()

    # 3. Direct first: filtered by R.
    error, ping_s = b.fails("ping", addr=a_pub)
    assert error == "RequestTimeout", error
    early = lab.wait_conntrack(
        ct_flow(lab.public2_ip, lab.nat_public_ip, b.port, a_pub[1]) + r" \[UNREPLIED\]"
    )

    # 4. Hole punch through the referrer; use the address the answer came from.
    punched = tuple(b.call("holepunch", peer=list(a_pub), referrer=list(referrer))["address"])
    assert punched[0] == lab.nat_public_ip, punched
    # R's flow for A's answer: A -> B, with B's replies going to the punched port.
    punch_entry = lab.wait_conntrack(
        ct_flow(
            lab.nat_host_ip,
            lab.public2_ip,
            a.port,
            b.port,
            (lab.public2_ip, lab.nat_public_ip, b.port, punched[1]),
        )
    )

    # 5. Application datagrams over the punched path, both ways.
    b.call("send", addr=list(punched), data=f"b-to-a-{tag}")
    data, seen = a.recv()
    assert (data, seen) == (f"b-to-a-{tag}", b_addr)
    a.call("send", addr=list(seen), data=f"a-to-b-{tag}")
    data, seen_by_b = b.recv()
    assert (data, seen_by_b) == (f"a-to-b-{tag}", punched)
    # And once more each way: the path stays open.
    b.call("send", addr=list(punched), data=f"again-{tag}")
    assert a.recv() == (f"again-{tag}", b_addr)
    a.call("send", addr=list(b_addr), data=f"again-back-{tag}")
    assert b.recv() == (f"again-back-{tag}", punched)

    obs = {
        "a_lan": (lab.nat_host_ip, a.port),
        "announced": a_pub,
        "punched": punched,
        "remapped": punched[1] != a_pub[1],
        "referrer": referrer,
        "b": b_addr,
        "direct_ping_failed_after_s": round(ping_s, 2),
        "ct_failed_ping": " ".join(early.split()),
        "ct_punched": " ".join(punch_entry.split()),
        "seconds": round(time.monotonic() - t0, 2),
    }
    for agent in (a, b):
        agent.close()
    return obs


_PORTS: list[dict[str, Any]] = []


@pytest.mark.parametrize("rep", range(REPEAT))
def test_holepunch_through_nat(
    nat_lab_factory: Callable[..., NatLab], record_property: Any, rep: int
) -> None:
    lab = nat_lab_factory()
    boot = start_python_bootstrap(lab)
    obs = single_nat_scenario(lab, boot, f"py{rep}")
    _PORTS.append(obs)
    report(record_property, "holepunch", obs)


def test_holepunch_with_node_referrer(
    nat_lab_factory: Callable[..., NatLab], record_property: Any
) -> None:
    require(*node_status())
    lab = nat_lab_factory()
    boot = start_node_bootstrap(lab)
    obs = single_nat_scenario(lab, boot, "node")
    report(record_property, "holepunch_node_referrer", obs)


def test_port_observations_summary(record_property: Any) -> None:
    """Record-only: how often the punched port differed from the announced one."""
    if not _PORTS:
        pytest.skip("no repetition ran in this session")
    summary = {
        "repetitions": len(_PORTS),
        "remapped": sum(o["remapped"] for o in _PORTS),
        "announced_vs_punched": [(o["announced"][1], o["punched"][1]) for o in _PORTS],
        "seconds": [o["seconds"] for o in _PORTS],
    }
    report(record_property, "port_summary", summary)


# --------------------------------------------------------------------------- second NAT (report)


_DOUBLE: list[dict[str, Any]] = []
#: Repetitions of the double-NAT report that also try a second and an oracle punch.
EXTRAS = 3


def double_nat_experiment(lab: NatLab, boot: Addr, tag: str, extras: bool) -> dict[str, Any]:
    """The same scenario with B2 behind R2. Records, never asserts.

    With ``extras``, after the failed punch also try a second punch and an
    "oracle" retry (each costs a timeout or a silence check).
    """
    assert lab.router2 and lab.nat_host2
    obs: dict[str, Any] = {}
    a, b2, a_pub, referrer = announce_and_lookup(lab, boot, lab.nat_host2)
    obs["a_lan"] = (lab.nat_host_ip, a.port)
    obs["announced"] = a_pub
    obs["b2_lan"] = (lab.nat_host2_ip, b2.port)

    obs["direct_ping"], _ = b2.fails("ping", addr=list(a_pub))
    try:
        punched = b2.call("holepunch", peer=list(a_pub), referrer=list(referrer))["address"]
        obs["holepunch"] = punched
    except AgentError as exc:
        punched = None
        obs["holepunch"] = exc.error
    ct_r, ct_r2 = lab.conntrack(lab.router), lab.conntrack(lab.router2)
    obs["ct_r"] = ct_lines(ct_r, f"={lab.nat2_public_ip} ")
    obs["ct_r2"] = ct_lines(ct_r2, f"={lab.nat_public_ip} ")
    # B2's public address as R saw it, and the port R gave A's answer.
    b2_pub = None
    for line in obs["ct_r"]:
        m = re.search(
            rf"src={re.escape(lab.nat2_public_ip)} dst={re.escape(lab.nat_public_ip)} "
            rf"sport=(\d+) dport={a_pub[1]}\b",
            line,
        )
        if m:
            b2_pub = (lab.nat2_public_ip, int(m.group(1)))
    obs["b2_public"] = b2_pub
    answer_port = None
    if b2_pub is not None:
        for line in obs["ct_r"]:
            m = re.search(
                rf"src={re.escape(lab.nat_host_ip)} dst={re.escape(b2_pub[0])} sport={a.port} "
                rf"dport={b2_pub[1]} .*src={re.escape(b2_pub[0])} "
                rf"dst={re.escape(lab.nat_public_ip)} sport={b2_pub[1]} dport=(\d+)",
                line,
            )
            if m:
                answer_port = int(m.group(1))
    obs["a_answer_left_r_from_port"] = answer_port
    obs["a_answer_remapped"] = answer_port is not None and answer_port != a_pub[1]
    if punched is None and extras:
        # A second punch: A's answer now goes out on the existing (remapped) flow.
        obs["second_holepunch"] = b2.fails("holepunch", peer=list(a_pub), referrer=list(referrer))[
            0
        ]
        # Oracle retry: B2 sends straight to the port R gave A's answer (as if A had
        # learnt it and told B2 through the referrer).  R2 has meanwhile kept A's
        # dropped answer as an UNREPLIED entry, so R2 remaps B2's flow in turn.
        if answer_port is not None:
            b2.call("send", addr=[lab.nat_public_ip, answer_port], data=f"oracle-{tag}")
            try:
                obs["oracle_retry_reached_a"] = a.recv(timeout=SILENCE)[0] == f"oracle-{tag}"
            except AgentError:
                obs["oracle_retry_reached_a"] = False
            ct_r2 = lab.conntrack(lab.router2)
            obs["ct_r2_after_oracle"] = ct_lines(
                ct_r2, f"dport={answer_port} ", f"sport={answer_port} "
            )
    elif punched is not None:
        b2.call("send", addr=list(punched), data=f"b2-to-a-{tag}")
        try:
            obs["datagram_reached_a"] = a.recv(timeout=SILENCE)[0] == f"b2-to-a-{tag}"
        except AgentError:
            obs["datagram_reached_a"] = False
    return obs


@pytest.mark.parametrize("rep", range(REPEAT))
def test_second_nat_report(
    nat_lab_factory: Callable[..., NatLab], record_property: Any, rep: int
) -> None:
    """Record-only (never fails on the outcome): B2 behind a second NAT."""
    lab = nat_lab_factory(second_nat=True)
    boot = start_python_bootstrap(lab)
    try:
        obs = double_nat_experiment(lab, boot, f"d{rep}", extras=rep < EXTRAS)
    except Exception as exc:  # an observation too; this test must not fail CI
        obs = {"error": f"{type(exc).__name__}: {exc}"}
    _DOUBLE.append(obs)
    report(record_property, "second_nat", obs)


# --------------------------------------------------------------------------- strategies (report)


@contextlib.contextmanager
def iptables_rule(lab: NatLab, router: str, rule: Sequence[str]) -> Iterator[None]:
    """Insert ``rule`` (``-t table CHAIN match... -j target``) for the block's duration."""
    table, chain, *spec = rule
    ipt = [lab.iptables, "-w", "-t", table]
    lab.exec(router, [*ipt, "-I", chain, *spec])
    try:
        yield
    finally:
        lab.exec(router, [*ipt, "-D", chain, *spec], check=False)


def punch_outcome(
    lab: NatLab, a: DhtAgent, b2: DhtAgent, a_pub: Addr, referrer: Addr, tag: str
) -> dict[str, Any]:
    out: dict[str, Any] = {"announced": a_pub}
    try:
        punched = b2.call("holepunch", peer=list(a_pub), referrer=list(referrer))["address"]
    except AgentError as exc:
        out["holepunch"] = exc.error
        out["ct_r"] = ct_lines(lab.conntrack(lab.router), f"={lab.nat2_public_ip} ")
        out["ct_r2"] = ct_lines(lab.conntrack(lab.router2), f"={lab.nat_public_ip} ")
        return out
    out["holepunch"] = punched
    b2.call("send", addr=punched, data=f"b2-to-a-{tag}")
    try:
        data, seen = a.recv(timeout=2)
        a.call("send", addr=list(seen), data=f"a-to-b2-{tag}")
        back = b2.recv(timeout=2)
        out["datagrams_both_ways"] = data == f"b2-to-a-{tag}" and back[0] == f"a-to-b2-{tag}"
    except AgentError as exc:
        out["datagrams_both_ways"] = f"failed: {exc}"
    return out


def strategy_opener_lost_in_transit(lab: NatLab, boot: Addr, tag: str) -> dict[str, Any]:
    """B2's opener towards A's mapping opens R2 but never reaches R (a low-TTL
    opener on the Internet; here R drops it in the raw table, before conntrack
    sees it), then B2 punches through the referrer."""
    assert lab.router2
    a, b2, a_pub, referrer = announce_and_lookup(lab, boot, lab.nat_host2)
    rule = ["raw", "PREROUTING", "-i", lab.WAN_IF, "-s", lab.nat2_public_ip, "-p", "udp",
            "--dport", str(a_pub[1]), "-j", "DROP"]  # fmt: skip
    with iptables_rule(lab, lab.router, rule):
        b2.call("send", addr=list(a_pub), data=f"opener-{tag}")
        lab.wait_conntrack(
            ct_flow(lab.nat_host2_ip, lab.nat_public_ip, b2.port, a_pub[1]), lab.router2
        )
    return punch_outcome(lab, a, b2, a_pub, referrer, tag)


def strategy_routers_drop_unsolicited(lab: NatLab, boot: Addr, tag: str) -> dict[str, Any]:
    """Both routers drop NEW inbound packets to themselves in INPUT (as e.g.
    OpenWrt's default wan zone does), so a filtered packet is never confirmed
    into conntrack; then the naive sequence: direct ping, hole punch."""
    assert lab.router2
    rule = ["filter", "INPUT", "-i", lab.WAN_IF, "-m", "conntrack", "--ctstate", "NEW",
            "-j", "DROP"]  # fmt: skip
    with iptables_rule(lab, lab.router, rule), iptables_rule(lab, lab.router2, rule):
        a, b2, a_pub, referrer = announce_and_lookup(lab, boot, lab.nat_host2)
        error, _ = b2.fails("ping", addr=list(a_pub))
        out = punch_outcome(lab, a, b2, a_pub, referrer, tag)
        out["direct_ping"] = error
        return out


STRATEGIES = {
    "opener_lost_in_transit": strategy_opener_lost_in_transit,
    "routers_drop_unsolicited": strategy_routers_drop_unsolicited,
}
_STRATEGY: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)


@pytest.mark.parametrize("rep", range(3))
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_second_nat_strategy_report(
    nat_lab_factory: Callable[..., NatLab], record_property: Any, strategy: str, rep: int
) -> None:
    """Record-only: what makes the double-NAT punch work in this lab."""
    lab = nat_lab_factory(second_nat=True)
    boot = start_python_bootstrap(lab)
    try:
        obs = STRATEGIES[strategy](lab, boot, f"{strategy[:4]}{rep}")
    except Exception as exc:
        obs = {"error": f"{type(exc).__name__}: {exc}"}
    _STRATEGY[strategy].append(obs)
    report(record_property, f"strategy_{strategy}", obs)


def test_second_nat_summary(record_property: Any) -> None:
    """Record-only: totals of the double-NAT experiments above."""
    if not _DOUBLE and not _STRATEGY:
        pytest.skip("no double-NAT experiment ran in this session")

    def ok(o: dict[str, Any]) -> bool:
        return isinstance(o.get("holepunch"), list)

    summary: dict[str, Any] = {
        "naive": {
            "runs": len(_DOUBLE),
            "direct_ping": collections.Counter(str(o.get("direct_ping")) for o in _DOUBLE),
            "holepunch_ok": sum(ok(o) for o in _DOUBLE),
            "a_answer_remapped": sum(bool(o.get("a_answer_remapped")) for o in _DOUBLE),
            "second_holepunch": collections.Counter(
                str(o["second_holepunch"]) for o in _DOUBLE if "second_holepunch" in o
            ),
            "oracle_retry": collections.Counter(
                "reached A" if o["oracle_retry_reached_a"] else "lost"
                for o in _DOUBLE
                if "oracle_retry_reached_a" in o
            ),
            "errors": [o["error"] for o in _DOUBLE if "error" in o],
        },
    }
    for name, runs in sorted(_STRATEGY.items()):
        summary[name] = {
            "runs": len(runs),
            "holepunch_ok": sum(ok(o) for o in runs),
            "datagrams_both_ways": sum(o.get("datagrams_both_ways") is True for o in runs),
            "errors": [o["error"] for o in runs if "error" in o],
        }
    report(record_property, "second_nat_summary", summary)


def test_no_leftover_namespaces_from_this_process() -> None:
    assert leftover_namespaces(own_prefix()) == []


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q", "-s"]))
