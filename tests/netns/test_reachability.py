"""Reachability verdicts in the routed lab, on ``$HYPERDHT_TEST_BACKEND``.

Each run builds a fresh :class:`RoutedLab`; P's namespace gets
:data:`SWARM` more addresses (198.18.0.11...) and one process runs a
public full node on each, bootstrapped from P, so that a newcomer's
bootstrap leaves nodes it never sent to (the probes' X; the prober goes
by host). Then A joins on default settings (``ephemeral="auto"``) and
must reach the right verdict: ``reachable`` and a full node when public,
``unreachable`` and ephemeral behind a ``linux`` or ``openwrt`` NAT. The
seconds from A's READY to its verdict are printed (``-s``) and kept in the
junit XML; NAT-REPORT.md section 8 has the figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from .dht_client import BACKEND, DhtAgent
from .lab import RoutedLab

BOOTSTRAP_PORT = 49737
SWARM = 30
VERDICT_TIMEOUT = 10.0

#: One process, ``SWARM`` public full nodes on P's extra addresses.
SWARM_CODE = """
import sys, time
from hyperdht import HyperDHT
backend, n = sys.argv[1], int(sys.argv[2])
nodes = []
for i in range(n):
    node = HyperDHT(host=f"198.18.0.{11 + i}", port=49737, backend=backend,
                    bootstrap=["198.18.0.10:49737"], ephemeral=False)
    nodes.append(node)
for node in nodes:
    node.ready(10)
print("SWARM", sum(len(node.nodes()) > 0 for node in nodes), flush=True)
sys.stdin.read()
for node in nodes:
    node.close()
"""


def start_swarm(lab: RoutedLab) -> Any:
    for i in range(SWARM):
        lab.exec(lab.bootstrap, ["ip", "addr", "add", f"198.18.0.{11 + i}/24", "dev", "eth0"])
    # The scenery runs on threads whatever the backend under test (A's):
    # its blocking stdin read would stall a gevent hub.
    proc = lab.python(lab.bootstrap, ["-c", SWARM_CODE, "thread", str(SWARM)])
    m = proc.expect(r"^SWARM (\d+)$", timeout=15)
    assert int(m.group(1)) >= SWARM - 1, "the swarm did not bootstrap"
    return proc


def verdict_of(agent: DhtAgent, timeout: float) -> tuple[dict[str, Any], float]:
    t0 = time.monotonic()
    while True:
        stats = agent.call("stats")
        if stats["probes"].get("runs", 0) >= 1 or time.monotonic() - t0 > timeout:
            return stats, round(time.monotonic() - t0, 2)
        time.sleep(0.1)  # polling another process's state: nothing to wait on


CASES = [
    ("public", "reachable", False),
    ("linux", "unreachable", True),
    ("openwrt", "unreachable", True),
]


@pytest.mark.time_limit(60)
@pytest.mark.parametrize(("nat", "verdict", "ephemeral"), CASES)
def test_verdict(
    routed_lab_factory: Callable[..., RoutedLab],
    record_property: Any,
    nat: str,
    verdict: str,
    ephemeral: bool,
) -> None:
    lab = routed_lab_factory(chain=2, nat_a=nat, nat_b="public")
    boot = (lab.bootstrap_ip, BOOTSTRAP_PORT)
    DhtAgent(lab, lab.bootstrap, host=lab.bootstrap_ip, port=BOOTSTRAP_PORT, ephemeral=False)
    start_swarm(lab)
    a = DhtAgent(lab, lab.host_a, bootstrap=[boot])
    stats, seconds = verdict_of(a, VERDICT_TIMEOUT)
    obs = {
        "nat": nat,
        "backend": BACKEND,
        "reachability": stats["reachability"],
        "ephemeral": stats["ephemeral"],
        "seconds_to_verdict": seconds,
        "probes": stats["probes"],
        "drops": stats["drops"],
    }
    record_property(f"reachability_{nat}", obs)
    print(f"[reachability] {json.dumps(obs)}")
    assert stats["reachability"] == verdict, obs
    assert stats["ephemeral"] is ephemeral, obs
    assert seconds < VERDICT_TIMEOUT, obs
    if ephemeral:
        assert stats["probes"].get("hit", 0) == 0, obs
