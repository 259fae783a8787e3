"""Bootstrap a large DHT on the in-memory network and time it.

``--nodes`` public nodes (default 1,000) join through one ephemeral
bootstrap node, all at once, on a network with 10-15 ms of latency; then a
few lookups from random nodes are checked against a brute-force search over
every id. Prints the wall time, the virtual time, the simulator's event and
datagram counts and the routing-table sizes.

``--pause-gc`` runs it with ``Network(pause_gc=True)`` (no cyclic garbage
collection while the simulator's loop runs).

Run: ``python benchmarks/bench_sim_bootstrap.py [--nodes N] [--seed S] [--pause-gc] [--quick]``.

How the cost grows with the network (1,000 against 10,000 nodes in one
run, plus announces and lookups on the large one): ``bench_sim_scale.py``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from hyperdht.dhtrpc import DHT, collect_stream
from hyperdht.testing import Network

BOOT = ("198.18.0.1", 49737)


def run(nodes: int, seed: int, lookups: int, pause_gc: bool = False) -> bool:
    rng = random.Random(seed)
    net = Network(seed=seed, latency=0.01, jitter=0.005, pause_gc=pause_gc)
    t0 = time.perf_counter()
    boot = DHT(backend=net.host(BOOT[0]), port=BOOT[1], ephemeral=True)
    dhts = [DHT(id=rng.randbytes(32), backend=net.host(), bootstrap=[BOOT]) for _ in range(nodes)]
    created = time.perf_counter() - t0
    t1 = time.perf_counter()
    for dht in dhts:
        if not dht.ready(timeout=600):
            print("a node did not finish bootstrapping", file=sys.stderr)
            return False
    wall = time.perf_counter() - t1
    sizes = [len(d.nodes()) for d in dhts]
    stats = net.stats
    print(f"nodes:            {nodes} (+1 bootstrap), seed {seed}")
    print(
        f"wall time:        {created + wall:.2f} s ({created:.2f} s creating, {wall:.2f} s running)"
    )
    print(f"virtual time:     {net.now:.2f} s")
    print(f"events:           {net.events_processed:,}")
    print(f"datagrams:        {stats.sent:,} sent, {stats.delivered:,} delivered")
    print(
        f"routing tables:   min {min(sizes)}, median {statistics.median(sizes):.0f}, "
        f"max {max(sizes)} contacts"
    )

    ok = 0
    t2 = time.perf_counter()
    for _ in range(lookups):
        target = rng.randbytes(32)
        origin = rng.choice(dhts)
        found = {r.node.id for r in collect_stream(origin.query("_find_node", target))}
        ids = [d.id for d in dhts if d is not origin]
        t = int.from_bytes(target, "big")
        expected = sorted(ids, key=lambda i: int.from_bytes(i, "big") ^ t)[:20]
        ok += set(expected) <= found
    print(
        f"lookups:          {ok}/{lookups} found all 20 closest "
        f"({(time.perf_counter() - t2) / max(lookups, 1) * 1000:.1f} ms wall each)"
    )
    for dht in [*dhts, boot]:
        dht.close()
    return ok == lookups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="nodes to bootstrap (1000)")
    parser.add_argument("--seed", type=int, default=1, help="simulator and id seed (1)")
    parser.add_argument("--lookups", type=int, default=10, help="lookups to check (10)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100 nodes")
    parser.add_argument(
        "--pause-gc", action="store_true", help="Network(pause_gc=True): no cyclic GC in the loop"
    )
    args = parser.parse_args(argv)
    nodes = 100 if args.quick else args.nodes
    if nodes < 1:
        parser.error("--nodes must be at least 1")
    return 0 if run(nodes, args.seed, args.lookups, args.pause_gc) else 1


if __name__ == "__main__":
    sys.exit(main())
