"""A bounded soak: many loopback nodes announcing and looking up, for minutes.

``python benchmarks/soak.py --backend thread`` starts one bootstrap node and
``--nodes`` (200) :class:`hyperdht.HyperDHT` nodes on 127.0.0.1 in this
process, then for ``--minutes`` (10, at most 10) ``--workers`` (4) callers
(threads; greenlets under gevent) each loop: announce a random key of a
pool of ``--keys`` (1024) from a random node, then look it up from another
random node (*found* when the announcer is among the peers). Each node's peer store holds at most
``--max-peers`` (128) items per generation (two generations), so the
stores reach their steady size within the first minute: the library
bounds the store by size, not age (as the reference does), and with the
default 65536 they would grow for hours and hide any other growth.
``--backend asyncio`` runs the nodes on one event loop in a thread
(:class:`hyperdht.drivers.asyncio.LoopBackend`) and the callers use the
blocking API.

Every ``--interval`` seconds (60) it samples the resident memory (MiB),
the process's threads, its open file descriptors, and the live greenlets
(gevent) or the loop's tasks (asyncio), with the operations done so far. At
the end it closes every node, samples once more, prints the table and
writes everything to ``--json`` (``soak-results.json``).

**The flatness rule** (exit status 1 when broken, 0 otherwise): the first
sample (taken right after the bootstrap, before the stores filled) is
warm-up and left out; of the rest, the median of the last third must not
exceed the median of the first third by more than 10 % plus a slack per
series (``SLACK``: 8 MiB, 2 threads, 8 descriptors, 20 greenlets or
tasks). Operations must also keep succeeding: at least half of the
lookups of the last interval find their announcer, and every interval
completes some operations. After ``close()`` the threads, descriptors and
tasks must be back to what the process had before the first node.

``--quick`` is a 30-second smoke run with 20 nodes and 5-second samples
(``pytest benchmarks`` runs it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
MAX_MINUTES = 10.0
#: Allowed growth of each series beyond 10 % (see the module docstring).
SLACK = {"rss_mb": 8.0, "threads": 2, "fds": 8, "tasks": 20}
#: Relative growth allowed between the first and last third.
GROWTH = 1.10


def rss_mb() -> float:
    """Resident memory of this process in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def os_threads() -> int:
    """OS threads of this process (from /proc, so gevent's hub counts once)."""
    return len(os.listdir("/proc/self/task"))


def raise_fd_limit(needed: int) -> None:
    """Raise the soft open-files limit towards ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def flat(series: list[float], slack: float) -> tuple[bool, float, float]:
    """The flatness rule on one series (warm-up sample already removed):
    ``(ok, first_third_median, last_third_median)``."""
    if len(series) < 3:
        return True, series[0] if series else 0.0, series[-1] if series else 0.0
    third = max(1, len(series) // 3)
    first = statistics.median(series[:third])
    last = statistics.median(series[-third:])
    return last <= first * GROWTH + slack, first, last


class Soak:
    """One run; see the module docstring."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.keys = [self.rng.randbytes(32) for _ in range(opts.keys)]
        self.backend: Any = opts.backend
        self.loop_backend: Any = None
        self.nodes: list[Any] = []
        self.counts = dict.fromkeys(
            ("announces", "announce_errors", "lookups", "lookup_errors", "found"), 0
        )
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.samples: list[dict[str, Any]] = []
        self.t0 = 0.0
        if opts.backend == "gevent":
            import gevent
            import gevent.event

            self.stop = gevent.event.Event()  # type: ignore[assignment]
            self._gevent = gevent

    # -- counting what is live ---------------------------------------------------

    def tasks(self) -> int | None:
        """Live greenlets (gevent) or the loop's tasks (asyncio); None for
        the thread backend."""
        if self.opts.backend == "gevent":
            import greenlet

            return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet))
        if self.loop_backend is not None:
            import asyncio

            async def count() -> int:
                return len(asyncio.all_tasks()) - 1  # not this one

            loop = self.loop_backend.loop
            return asyncio.run_coroutine_threadsafe(count(), loop).result(10)
        return None

    def sample(self, label: str) -> dict[str, Any]:
        """Take one sample and print its row."""
        with self.lock:
            counts = dict(self.counts)
        row = {
            "label": label,
            "t_s": round(time.monotonic() - self.t0, 1),
            "rss_mb": round(rss_mb(), 1),
            "threads": os_threads(),
            "fds": open_fds(),
            "tasks": self.tasks(),
            **counts,
        }
        self.samples.append(row)
        print(
            f"{row['label']:>8} {row['t_s']:>7} {row['rss_mb']:>8} {row['threads']:>7} "
            f"{row['fds']:>5} {row['tasks'] if row['tasks'] is not None else '-':>6} "
            f"{counts['announces']:>9} {counts['lookups']:>8} {counts['found']:>6} "
            f"{counts['announce_errors'] + counts['lookup_errors']:>6}",
            flush=True,
        )
        return row

    # -- the run ---------------------------------------------------------------------

    def start_nodes(self) -> None:
        """The bootstrap node and the swarm, joining in batches."""
        from hyperdht import HyperDHT

        if self.opts.backend == "asyncio":
            from hyperdht.drivers.asyncio import LoopBackend

            self.loop_backend = LoopBackend.in_thread("soak-loop")
            self.backend = self.loop_backend
        kw = {
            "host": HOST,
            "backend": self.backend,
            "max_age": self.opts.max_age,
            "max_peers": self.opts.max_peers,
        }
        boot = HyperDHT(**kw)
        self.nodes.append(boot)
        bootstrap = [(HOST, boot.address.port)]
        for start in range(0, self.opts.nodes, 25):
            group = [
                HyperDHT(bootstrap=bootstrap, **kw) for _ in range(min(25, self.opts.nodes - start))
            ]
            self.nodes += group
            deadline = time.monotonic() + READY_TIMEOUT
            for node in group:
                node.ready(timeout=max(0.0, deadline - time.monotonic()))

    def worker(self, seed: int) -> None:
        """Until told to stop: announce a random key from a random node,
        then look it up from another one (found when the announcer's port
        is among the peers)."""
        from hyperdht import QueryError, collect_stream

        rng = random.Random(seed)
        nodes = self.nodes[1:]
        while not self.stop.is_set():
            node, other = rng.sample(nodes, 2)
            key = rng.choice(self.keys)
            try:
                node.announce_discard(key)
                self.count("announces")
            except QueryError:
                self.count("announce_errors")
            if self.stop.is_set():
                break
            port = node.address.port
            try:
                results = collect_stream(other.lookup(key))
                self.count("lookups")
                if any(p.port == port for r in results for p in r.peers):
                    self.count("found")
            except QueryError:
                self.count("lookup_errors")

    def count(self, what: str) -> None:
        """Add one to counter ``what``."""
        with self.lock:
            self.counts[what] += 1

    def run(self) -> dict[str, Any]:
        """Start, soak, sample, close; return everything."""
        opts = self.opts
        raise_fd_limit(8 * opts.nodes + 512)
        self.t0 = time.monotonic()
        if opts.backend == "gevent":
            self._gevent.get_hub()  # its descriptors are not the nodes'
        before = {"threads": os_threads(), "fds": open_fds(), "tasks": None}
        print(f"soak: {opts.backend}, {opts.nodes} nodes, {opts.minutes} min", file=sys.stderr)
        self.start_nodes()
        bootstrap_s = time.monotonic() - self.t0
        before["tasks"] = 0 if opts.backend == "asyncio" else None
        print(
            f"{'sample':>8} {'t_s':>7} {'rss_mb':>8} {'threads':>7} {'fds':>5} {'tasks':>6} "
            f"{'announces':>9} {'lookups':>8} {'found':>6} {'errors':>6}",
            flush=True,
        )
        self.t0 = time.monotonic()
        self.sample("start")
        end = self.t0 + opts.minutes * 60
        runners = self.start_workers()
        i = 0
        while True:
            i += 1
            at = min(self.t0 + i * opts.interval, end)
            self.wait_until(at)
            self.sample(f"{at - self.t0:.0f}s")
            if at >= end:
                break
        self.stop.set()
        joined = self.join_workers(runners)
        t = time.monotonic()
        for node in self.nodes:
            node.close()
        close_s = time.monotonic() - t
        if self.loop_backend is not None:
            after_tasks = self.tasks()
            self.loop_backend.stop()
            self.loop_backend = None
        else:
            after_tasks = self.tasks()
        self.nodes.clear()
        gc.collect()
        after = {"threads": os_threads(), "fds": open_fds(), "tasks": after_tasks}
        return self.verdict(before, after, bootstrap_s, close_s, joined)

    def start_workers(self) -> list[Any]:
        """The callers (threads, or greenlets under gevent)."""
        seeds = [self.rng.randrange(1 << 30) for _ in range(self.opts.workers)]
        if self.opts.backend == "gevent":
            return [self._gevent.spawn(self.worker, s) for s in seeds]
        threads = [threading.Thread(target=self.worker, args=(s,), daemon=True) for s in seeds]
        for thread in threads:
            thread.start()
        return threads

    def join_workers(self, runners: list[Any]) -> bool:
        """Wait for the callers to finish their current operation."""
        if self.opts.backend == "gevent":
            done = self._gevent.joinall(runners, timeout=60)
            return len(done) == len(runners)
        deadline = time.monotonic() + 60
        for thread in runners:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in runners)

    def wait_until(self, at: float) -> None:
        """Wait (cooperatively under gevent) until ``at`` on the monotonic
        clock."""
        wait: Callable[[float], object]
        wait = self._gevent.sleep if self.opts.backend == "gevent" else threading.Event().wait
        while (delay := at - time.monotonic()) > 0:
            wait(delay)

    def verdict(
        self,
        before: dict[str, Any],
        after: dict[str, Any],
        bootstrap_s: float,
        close_s: float,
        joined: bool,
    ) -> dict[str, Any]:
        """Apply the flatness rule (module docstring)."""
        steady = self.samples[1:]
        checks: dict[str, Any] = {}
        for name, slack in SLACK.items():
            values = [s[name] for s in steady if s[name] is not None]
            if not values:
                continue
            ok, first, last = flat(values, slack)
            checks[name] = {"ok": ok, "first_third_median": first, "last_third_median": last}
        last, prev = self.samples[-1], self.samples[-2]
        interval_lookups = last["lookups"] - prev["lookups"]
        interval_found = last["found"] - prev["found"]
        progress = all(
            (b["announces"] + b["lookups"]) > (a["announces"] + a["lookups"])
            for a, b in zip(self.samples, self.samples[1:], strict=False)
        )
        checks["progress"] = {"ok": progress}
        checks["found"] = {
            "ok": interval_lookups > 0 and interval_found * 2 >= interval_lookups,
            "last_interval_lookups": interval_lookups,
            "last_interval_found": interval_found,
        }
        leaks = {
            k: {"before": before[k], "after": after[k]}
            for k in ("threads", "fds", "tasks")
            if before[k] is not None and after[k] is not None
        }
        checks["released"] = {
            "ok": joined and all(v["after"] <= v["before"] for v in leaks.values()),
            **leaks,
        }
        ok = all(c["ok"] for c in checks.values())
        return {
            "ok": ok,
            "settings": vars(self.opts),
            "bootstrap_s": round(bootstrap_s, 1),
            "close_s": round(close_s, 2),
            "samples": self.samples,
            "checks": checks,
            "python": sys.version.split()[0],
            "loadavg": os.getloadavg(),
        }


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("thread", "gevent", "asyncio"), default="thread")
    p.add_argument("--nodes", type=int, default=200)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--keys", type=int, default=1024)
    p.add_argument("--max-age", type=float, default=60.0, help="seconds an announcement lives")
    p.add_argument("--max-peers", type=int, default=128, help="store items per generation")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default="soak-results.json")
    p.add_argument("--quick", action="store_true", help="30 s, 20 nodes, 5 s samples")
    opts = p.parse_args(argv)
    if opts.quick:
        opts.nodes, opts.minutes, opts.interval, opts.max_age = 20, 0.5, 5.0, 10.0
    if not 0 < opts.minutes <= MAX_MINUTES:
        p.error(f"--minutes must be in (0, {MAX_MINUTES:g}]")
    if (
        opts.interval <= 0
        or opts.max_peers < 1
        or opts.nodes < 2
        or opts.workers < 1
        or opts.keys < 1
    ):
        p.error("--interval, --nodes (>= 2), --workers and --keys must be positive")
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run the soak; exit status 0 when every series is flat."""
    opts = parse(argv)
    result = Soak(opts).run()
    with open(opts.json, "w") as f:
        json.dump(result, f, indent=2)
    for name, check in result["checks"].items():
        details = {k: v for k, v in check.items() if k != "ok"}
        print(f"{'ok  ' if check['ok'] else 'FAIL'} {name} {details}")
    print(f"close of {opts.nodes + 1} nodes: {result['close_s']} s; written to {opts.json}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
