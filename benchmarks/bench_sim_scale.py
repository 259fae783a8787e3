"""Does the simulator's cost per datagram stay flat as the network grows?

One process, one run: bootstrap ``--small`` (1,000) public HyperDHT nodes on
the in-memory network and time it; then, on a fresh network, ``--large``
(10,000); print both and their ratio (wall and CPU time: the machine may be
shared, CPU time is the steadier figure). Then, on the large network,
``--keys`` (1,000) keys are each announced from a random node and each
looked up from another random node; a key is found when the lookup returns
its announcer's address. Also: events, datagrams, datagrams per node, CPU
microseconds per event, resident memory per simulated node, the whole run's
wall and CPU time. ``--json PATH`` writes every figure.

The targets (issue 12): the large bootstrap within 12x the wall time of the
small one, >= 99% of the keys found, the whole run under 10 minutes.
``--quick`` is a smoke run (50 and 150 nodes, 10 keys) for tox's bench env.
``--pause-gc`` runs both networks with ``Network(pause_gc=True)``: the
cyclic garbage collector off while the simulator's loop runs (an opt-in of
the simulator; the default run leaves the collector as Python sets it).
Each bootstrap line also says how much of its CPU time the collector took
(all collections, and the full ones apart), and the events per node.

The JSON also records the machine (CPU model, load average) and the
environment variables that change how the heap is laid out
(``PYTHONMALLOC``, ``GLIBC_TUNABLES``): with
``PYTHONMALLOC=malloc GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` the objects
live on transparent huge pages, a way to test how much of the cost per
event that grows with the network is page walks (benchmarks/README.md).

``--rounds R`` repeats the pair of bootstraps R times (the same seed, so
the same events) and reports the median ratio: on a shared machine the
cost per event moves from one run to the next, and one pair is one sample.

Run: ``python benchmarks/bench_sim_scale.py [--small N] [--large N]
[--keys K] [--seed S] [--pause-gc] [--rounds R] [--json PATH] [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from suite import cpu_model  # benchmarks/ is the script's directory, first on sys.path

from hyperdht import HyperDHT, collect_stream
from hyperdht.testing import Network

BOOT = ("198.18.0.1", 49737)

#: Environment variables that change the heap's layout, recorded in the JSON.
HEAP_ENV = ("PYTHONMALLOC", "GLIBC_TUNABLES")


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model, CPUs, load average,
    and the heap-layout variables of :data:`HEAP_ENV` (None when unset)."""
    return {
        "cpu_model": cpu_model() or None,
        "cpus": os.cpu_count(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "env": {name: os.environ.get(name) for name in HEAP_ENV},
    }


def rss_bytes() -> int:
    """The process's resident memory now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


@dataclass
class Bootstrap:
    """The figures of one bootstrap run."""

    nodes: int
    wall_s: float
    cpu_s: float
    virtual_s: float
    events: int
    datagrams: int
    rss_per_node_bytes: int | None  # None: not measured (a later round)
    gc_collections: int
    gc_cpu_s: float
    gc_full_collections: int
    gc_full_cpu_s: float
    events_per_node: float = field(init=False)
    cpu_us_per_event: float = field(init=False)
    datagrams_per_node: float = field(init=False)

    def __post_init__(self) -> None:
        self.cpu_us_per_event = self.cpu_s / max(self.events, 1) * 1e6
        self.events_per_node = self.events / max(self.nodes, 1)
        self.datagrams_per_node = self.datagrams / max(self.nodes, 1)

    def show(self) -> None:
        rss = "n/a" if self.rss_per_node_bytes is None else f"{self.rss_per_node_bytes / 1024:.1f}"
        print(
            f"bootstrap {self.nodes:>6,} nodes: {self.wall_s:7.2f} s wall, "
            f"{self.cpu_s:7.2f} s CPU, "
            f"{self.events:,} events ({self.events_per_node:.1f}/node, "
            f"{self.cpu_us_per_event:.1f} us CPU each), "
            f"{self.datagrams_per_node:.1f} datagrams/node, "
            f"{rss} KiB/node, {self.virtual_s:.2f} s virtual, "
            f"gc {self.gc_collections} collections {self.gc_cpu_s:.2f} s CPU "
            f"({self.gc_full_collections} full: {self.gc_full_cpu_s:.2f} s)"
        )


@dataclass
class Swarm:
    """A network and its nodes."""

    net: Network
    boot: HyperDHT
    nodes: list[HyperDHT]

    def close(self) -> None:
        for node in [*self.nodes, self.boot]:
            node.close()


class GCTimer:
    """Counts the cyclic collector's runs and their CPU time (``gc.callbacks``),
    all of them and the full (oldest-generation) ones apart."""

    def __init__(self) -> None:
        self.collections = 0
        self.cpu_s = 0.0
        self.full_collections = 0
        self.full_cpu_s = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            spent = time.process_time() - self._start
            self.collections += 1
            self.cpu_s += spent
            if info.get("generation") == 2:
                self.full_collections += 1
                self.full_cpu_s += spent

    def __enter__(self) -> GCTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self)


def bootstrap(
    n: int, seed: int, pause_gc: bool = False, measure_rss: bool = True
) -> tuple[Swarm, Bootstrap]:
    """Create ``n`` nodes on a new network and wait until all bootstrapped.
    With ``measure_rss=False`` the memory per node is not reported (after
    a larger network was freed, the process reuses its memory and the RSS
    growth means nothing)."""
    gc.collect()
    with GCTimer() as gc_timer:
        return _bootstrap(n, seed, pause_gc, gc_timer, measure_rss)


def _bootstrap(
    n: int, seed: int, pause_gc: bool, gc_timer: GCTimer, measure_rss: bool
) -> tuple[Swarm, Bootstrap]:
    rss0 = rss_bytes()
    rng = random.Random(seed)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    net = Network(seed=seed, latency=0.01, jitter=0.005, pause_gc=pause_gc)
    boot = HyperDHT(backend=net.host(BOOT[0]), port=BOOT[1], ephemeral=True)
    nodes = [HyperDHT(id=rng.randbytes(32), backend=net.host(), bootstrap=[BOOT]) for _ in range(n)]
    for node in nodes:
        if not node.ready(timeout=600):
            raise SystemExit("a node did not finish bootstrapping")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    figures = Bootstrap(
        nodes=n,
        wall_s=wall,
        cpu_s=cpu,
        virtual_s=net.now,
        events=net.events_processed,
        datagrams=net.stats.sent,
        rss_per_node_bytes=(rss_bytes() - rss0) // max(n, 1) if measure_rss else None,
        gc_collections=gc_timer.collections,
        gc_cpu_s=gc_timer.cpu_s,
        gc_full_collections=gc_timer.full_collections,
        gc_full_cpu_s=gc_timer.full_cpu_s,
    )
    return Swarm(net, boot, nodes), figures


def announce_and_look_up(swarm: Swarm, keys: int, seed: int) -> dict[str, Any]:
    """Announce ``keys`` keys from random nodes, then look each up from
    another random node; count the lookups that return the announcer."""
    rng = random.Random(seed + 1)
    net = swarm.net
    events0, sent0 = net.events_processed, net.stats.sent
    wall0, cpu0 = time.perf_counter(), time.process_time()
    announced = []
    failed_announces = 0
    for _ in range(keys):
        key = rng.randbytes(32)
        node = rng.choice(swarm.nodes)
        try:
            node.announce_discard(key)
        except Exception:  # a failed announce is a miss, reported below
            failed_announces += 1
        announced.append((key, node))
    announce_wall = time.perf_counter() - wall0
    found = 0
    for key, announcer in announced:
        seeker = rng.choice(swarm.nodes)
        while seeker is announcer and len(swarm.nodes) > 1:
            seeker = rng.choice(swarm.nodes)
        try:
            responses = collect_stream(seeker.lookup(key))
        except Exception:
            continue
        if any(announcer.address in r.peers for r in responses):
            found += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    events = net.events_processed - events0
    return {
        "keys": keys,
        "found": found,
        "found_percent": 100.0 * found / max(keys, 1),
        "failed_announces": failed_announces,
        "announce_wall_s": announce_wall,
        "wall_s": wall,
        "cpu_s": cpu,
        "events": events,
        "datagrams": net.stats.sent - sent0,
        "cpu_us_per_event": cpu / max(events, 1) * 1e6,
    }


def run(
    small: int, large: int, keys: int, seed: int, pause_gc: bool = False, rounds: int = 1
) -> dict[str, Any]:
    """The whole measurement; returns what ``--json`` writes.

    Each of ``rounds`` rounds bootstraps ``small`` nodes, then ``large``
    nodes (each on a fresh network, the same seed, so the same events every
    round); ``wall_ratio`` / ``cpu_ratio`` are the medians of the rounds'
    ratios (all in ``rounds``), ``small`` / ``large`` the last round's
    figures, and the lookups run on the last round's large network. Memory
    per node is measured in the first round only."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    measured_on = machine()
    per_round: list[dict[str, Any]] = []
    for r in range(rounds):
        if rounds > 1:
            print(f"round {r + 1}/{rounds}")
        swarm, first = bootstrap(small, seed, pause_gc, measure_rss=r == 0)
        first.show()
        swarm.close()
        del swarm
        swarm, second = bootstrap(large, seed, pause_gc, measure_rss=r == 0)
        second.show()
        per_round.append(
            {
                "small": asdict(first),
                "large": asdict(second),
                "wall_ratio": second.wall_s / first.wall_s,
                "cpu_ratio": second.cpu_s / first.cpu_s,
            }
        )
        print(
            f"ratio {large:,}/{small:,}: {per_round[-1]['wall_ratio']:.2f}x wall, "
            f"{per_round[-1]['cpu_ratio']:.2f}x CPU ({large / small:.0f}x the nodes; target <= 12x)"
        )
        if r < rounds - 1:
            swarm.close()
            del swarm
    wall_ratio = statistics.median(x["wall_ratio"] for x in per_round)
    cpu_ratio = statistics.median(x["cpu_ratio"] for x in per_round)
    if rounds > 1:
        print(f"median of {rounds} rounds: {wall_ratio:.2f}x wall, {cpu_ratio:.2f}x CPU")
    lookups = announce_and_look_up(swarm, keys, seed)
    print(
        f"{keys:,} keys announced and looked up on {large:,} nodes: "
        f"{lookups['found']:,} found ({lookups['found_percent']:.1f}%; target >= 99%), "
        f"{lookups['wall_s']:.2f} s wall, {lookups['cpu_s']:.2f} s CPU"
    )
    swarm.close()
    total_wall, total_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(f"whole run: {total_wall:.1f} s wall, {total_cpu:.1f} s CPU (target < 600 s)")
    return {
        "seed": seed,
        "pause_gc": pause_gc,
        "python": sys.version.split()[0],
        "machine": measured_on,
        "small": per_round[-1]["small"],
        "large": per_round[-1]["large"],
        "wall_ratio": wall_ratio,
        "cpu_ratio": cpu_ratio,
        "rounds": per_round,
        "lookups": lookups,
        "total_wall_s": total_wall,
        "total_cpu_s": total_cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1000, help="nodes of the first run (1000)")
    parser.add_argument("--large", type=int, default=10000, help="nodes of the second (10000)")
    parser.add_argument("--keys", type=int, default=1000, help="keys to announce (1000)")
    parser.add_argument("--seed", type=int, default=1, help="simulator and id seed (1)")
    parser.add_argument(
        "--pause-gc",
        action="store_true",
        help="Network(pause_gc=True): no cyclic GC while the simulator's loop runs",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="small-then-large bootstrap pairs; the ratio is their median (1)",
    )
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50/150 nodes, 10 keys")
    args = parser.parse_args(argv)
    if args.quick:
        args.small, args.large, args.keys = 50, 150, 10
    if args.small < 2 or args.large < 2 or args.keys < 0 or args.rounds < 1:
        parser.error(
            "--small and --large must be at least 2, --keys at least 0, --rounds at least 1"
        )
    result = run(args.small, args.large, args.keys, args.seed, args.pause_gc, args.rounds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0 if result["lookups"]["found_percent"] >= 99.0 else 1


if __name__ == "__main__":
    sys.exit(main())
