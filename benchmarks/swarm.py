"""The Python side of the many-nodes scenario of ``suite.py``.

``python benchmarks/swarm.py '{"backend": "thread", "nodes": N, "announces":
A, "lookups": L, "idle": S, "batch": B, "seed": X}'`` runs, in this one
process, on 127.0.0.1 (the same steps as ``reference/swarm.js``); the
backend is ``thread`` or ``gevent``, or ``thread-private`` /
``gevent-private`` for nodes on threads (greenlets) of their own instead of
the shared hub:

1. one bootstrap node, then N :class:`hyperdht.HyperDHT` nodes joining
   through it, B at a time (each batch waits for its nodes' first
   bootstrap): ``bootstrap_s`` is the time from the first node to the last
   ready one;
2. A nodes (spread over the swarm) announce sha256(their id), one after the
   other (``announce_s``, latency p50/p90);
3. L sequential lookups of those keys from other random nodes; a lookup is
   *found* when an answer lists the announcer's address (p50/p90 latency);
   Each phase also reports the process's CPU seconds over it
   (``bootstrap_cpu_s``, ``announce_cpu_s``, ``lookup_cpu_s``): on a busy
   machine, where wall times depend on how many threads compete for the
   cores, the steadier figure;
4. the resident memory (``rss_mb``, ``peak_rss_mb``), then S seconds idle and
   the process's CPU over that window in % of one core (``idle_cpu_pct``).

Prints one JSON line and exits at once (``os._exit``: tearing down a
thousand nodes is not part of what is measured).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import statistics
import sys
import time
from typing import Any

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0


def quantile(xs: list[float], q: float) -> float | None:
    """Linear-interpolated quantile (as ``reference/swarm.js`` computes it)."""
    if not xs:
        return None
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def memory_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, kb, _ = line.split()
                values[key] = int(kb) / 1024
    return values["VmRSS:"], values["VmHWM:"]


def cpu_seconds() -> float:
    """User + system CPU time of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def raise_fd_limit(needed: int) -> None:
    """Raise the soft open-files limit towards ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _thread_private() -> Any:
    from hyperdht.drivers.thread import ThreadBackend

    return ThreadBackend(hub=False)


def _gevent_private() -> Any:
    from hyperdht.drivers.gevent import GeventBackend

    return GeventBackend(hub=False)


#: Backends besides the registry's names: every node on private receiver and
#: timer threads (greenlets) instead of the process's shared hub.
PRIVATE = {"thread-private": _thread_private, "gevent-private": _gevent_private}


def run(opts: dict[str, Any]) -> dict[str, Any]:
    """Run the scenario; return the figures."""
    from hyperdht import HyperDHT, QueryError, collect_stream

    backend: Any = opts.get("backend", "thread")
    impl = backend
    if backend in PRIVATE:
        backend = PRIVATE[backend]()
    n = int(opts.get("nodes", 100))
    announces = int(opts.get("announces", 50))
    lookups = int(opts.get("lookups", 50))
    idle = float(opts.get("idle", 0))
    batch = int(opts.get("batch", 50))
    rng = random.Random(opts.get("seed", 1))
    raise_fd_limit(8 * n + 256)
    if impl.startswith("gevent"):
        import gevent

        sleep = gevent.sleep
    else:
        sleep = time.sleep

    out: dict[str, Any] = {"impl": impl, "nodes": n}
    boot = HyperDHT(host=HOST, backend=backend)
    bootstrap = [(HOST, boot.address.port)]
    nodes: list[Any] = []
    ready = failed = 0
    t0 = time.perf_counter()
    c0 = cpu_seconds()
    for start in range(0, n, batch):
        group = [
            HyperDHT(host=HOST, bootstrap=bootstrap, backend=backend)
            for _ in range(min(batch, n - start))
        ]
        nodes += group
        deadline = time.monotonic() + READY_TIMEOUT
        for node in group:
            if node.ready(timeout=max(0.0, deadline - time.monotonic())):
                ready += 1
            else:
                failed += 1
    out.update(
        bootstrap_s=time.perf_counter() - t0,
        bootstrap_cpu_s=cpu_seconds() - c0,
        bootstrapped=ready,
        bootstrap_failed=failed,
    )

    step = max(1, len(nodes) // max(1, announces))
    announcers = [nodes[i * step] for i in range(announces) if i * step < len(nodes)]
    keys = [hashlib.sha256(a.id).digest() for a in announcers]
    latencies: list[float] = []
    ok = 0
    t = time.perf_counter()
    c0 = cpu_seconds()
    for node, key in zip(announcers, keys, strict=True):
        s = time.perf_counter()
        try:
            node.announce_discard(key)
            ok += 1
        except QueryError:
            pass
        latencies.append(time.perf_counter() - s)
    out.update(
        announce_s=time.perf_counter() - t,
        announce_cpu_s=cpu_seconds() - c0,
        announce_ok=ok,
        announce_p50_ms=1000 * (quantile(latencies, 0.5) or 0),
        announce_p90_ms=1000 * (quantile(latencies, 0.9) or 0),
    )

    latencies = []
    found = 0
    t = time.perf_counter()
    c0 = cpu_seconds()
    for i in range(lookups if keys else 0):
        k = i % len(keys)
        port = announcers[k].address.port
        origin = rng.choice(nodes)
        if origin is announcers[k]:
            origin = nodes[(nodes.index(origin) + 1) % len(nodes)]
        s = time.perf_counter()
        try:
            results = collect_stream(origin.lookup(keys[k]))
        except QueryError:
            results = []
        latencies.append(time.perf_counter() - s)
        if any(p.port == port for r in results for p in r.peers):
            found += 1
    out.update(
        lookup_s=time.perf_counter() - t,
        lookup_cpu_s=cpu_seconds() - c0,
        lookups=lookups,
        lookup_found=found,
        lookup_p50_ms=1000 * (quantile(latencies, 0.5) or 0),
        lookup_p90_ms=1000 * (quantile(latencies, 0.9) or 0),
    )

    out["rss_mb"] = memory_mb()[0]
    c0 = cpu_seconds()
    t = time.perf_counter()
    sleep(idle)
    wall = time.perf_counter() - t
    out["idle_s"] = wall
    out["idle_cpu_pct"] = 100 * (cpu_seconds() - c0) / wall if idle > 0 else None
    out["peak_rss_mb"] = memory_mb()[1]
    out["table_median"] = statistics.median(len(node.nodes()) for node in nodes) if nodes else 0
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``swarm.py JSON``; prints the figures as one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    opts = json.loads(args[0]) if args else {}
    result = run(opts)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
