"""The ``hyperdht-swarm`` command: many DHT nodes in one process.

For load and behaviour tests on one machine: ``--count N`` nodes on real
UDP sockets, started in batches so the bootstrap node is not flooded.
Without ``--bootstrap`` the first node is the swarm's own bootstrap node
(its address is printed, so other processes can join). With
``--announce`` each node announces the SHA-256 of its id (and again every
4-5 minutes), then a few keys are looked up from random nodes as a check.
Runs until SIGINT/SIGTERM or for ``--duration`` seconds, then closes every
node and prints a summary (startup time, announces, routing tables,
traffic, peak memory).

With ``--backend gevent`` every node is two greenlets and a socket, which
holds thousands of nodes; with threads each node costs two threads and a
few descriptors.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import resource
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from .cli import (
    BACKENDS,
    REFRESH_INTERVAL,
    CommandError,
    OneLineParser,
    Runtime,
    StopSignal,
    Task,
    UsageError,
    configure_logging,
    format_address,
    parse_bootstrap,
    port_arg,
    positive_int_arg,
)
from .discovery import HyperDHT
from .errors import HyperDHTError

__all__ = ["SwarmReport", "main"]

log = logging.getLogger(__name__)

PROG = "hyperdht-swarm"
#: Seconds a node may take to bootstrap before it counts as failed.
READY_TIMEOUT = 15.0
#: Keys looked up after announcing, as a check that the swarm works.
CHECK_LOOKUPS = 10
#: File descriptors per node (socket; the thread driver adds a wake-up pair
#: and a selector), for raising the process limit.
FDS_PER_NODE = {"thread": 4, "gevent": 1}

T = TypeVar("T")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``hyperdht-swarm`` option parser."""
    p = OneLineParser(
        prog=PROG,
        description="Run many hyperdht nodes in one process (load and behaviour tests).",
    )
    p.add_argument(
        "-n", "--count", type=positive_int_arg, required=True, metavar="N", help="number of nodes"
    )
    p.add_argument(
        "-b",
        "--bootstrap",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="join this network (repeatable, comma-separated); default: the first "
        "node is the swarm's bootstrap node",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument(
        "-p",
        "--port",
        type=port_arg,
        default=0,
        help="port of the swarm's bootstrap node when there is no --bootstrap (default: any)",
    )
    p.add_argument(
        "-a", "--announce", action="store_true", help="each node announces sha256(its id)"
    )
    p.add_argument("--backend", choices=BACKENDS, default="thread", help="default: thread")
    p.add_argument(
        "--batch",
        type=positive_int_arg,
        metavar="N",
        default=50,
        help="nodes started (and announces run) at once (default: 50)",
    )
    p.add_argument(
        "-d",
        "--duration",
        type=_seconds,
        metavar="SECONDS",
        help="stop SECONDS after the swarm is up (and has announced); default: at a signal",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress and node events")
    return p


@dataclass
class SwarmReport:
    """What a swarm run did, for the summary."""

    nodes: int = 0
    bootstrapped: int = 0
    startup: float = 0.0
    announced: int = 0
    announce_failed: int = 0
    announce_rounds: int = 0
    lookups_found: int = 0
    lookups: int = 0
    ran: float = 0.0

    def summary(self, nodes: Sequence[HyperDHT], backend: str) -> list[str]:
        """The summary lines."""
        sizes = [len(n.nodes()) for n in nodes] or [0]
        stats = [n.stats for n in nodes]
        lines = [
            f"swarm summary: {self.nodes} nodes, {backend} backend, ran {self.ran:.1f} s",
            f"  startup    {self.startup:.2f} s, {self.bootstrapped} bootstrapped, "
            f"{self.nodes - self.bootstrapped} failed",
        ]
        if self.announce_rounds:
            lines.append(
                f"  announces  {self.announced} ok, {self.announce_failed} failed "
                f"({self.announce_rounds} round(s)); lookups {self.lookups_found}/"
                f"{self.lookups} found"
            )
        lines += [
            f"  routing    table size min {min(sizes)} / avg {sum(sizes) / len(sizes):.1f} "
            f"/ max {max(sizes)}",
            f"  traffic    datagrams in {sum(s.datagrams_in for s in stats)}, "
            f"out {sum(s.datagrams_out for s in stats)}, "
            f"timeouts {sum(s.timeouts for s in stats)}",
            f"  memory     max RSS {max_rss_mib():.1f} MiB",
        ]
        return lines


def max_rss_mib() -> float:
    """Peak resident memory of this process in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / (1024 * 1024)


def raise_fd_limit(needed: int) -> None:
    """Raise the soft open-files limit towards ``needed`` (up to the hard
    limit); warn when that is not enough."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open files limit to %d: %s", target, exc)
        return
    if target < needed:
        log.warning("open files limit %d may be too low for this swarm (%d)", target, needed)


def run_limited(
    runtime: Runtime, fn: Callable[[T], bool], items: Sequence[T], limit: int
) -> list[bool]:
    """``[fn(x) for x in items]`` with at most ``limit`` running at once, in
    threads or greenlets."""
    if runtime.backend == "gevent":
        import gevent.pool

        results: list[bool] = gevent.pool.Pool(limit).map(fn, items)
        return results
    with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="hyperdht-swarm") as pool:
        return list(pool.map(fn, items))


class Swarm:
    """The nodes of one ``hyperdht-swarm`` run."""

    def __init__(self, args: argparse.Namespace, runtime: Runtime, stop: StopSignal) -> None:
        self.args = args
        self.runtime = runtime
        self.stop = stop
        self.nodes: list[HyperDHT] = []
        self.report = SwarmReport()

    def _node(self, bootstrap: Sequence[str], port: int = 0) -> HyperDHT:
        try:
            node = HyperDHT(
                bootstrap=list(bootstrap),
                host=self.args.host,
                port=port,
                backend=self.args.backend,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise CommandError(exc.strerror or str(exc)) from None
        if self.args.verbose:
            i = len(self.nodes)
            node.add_listener("announce", lambda key, peer: log.info("node %d: announce", i))
            node.add_listener("lookup", lambda key: log.info("node %d: lookup", i))
        self.nodes.append(node)
        return node

    def start(self) -> None:
        """Start ``--count`` nodes in batches, each batch bootstrapped before
        the next starts."""
        args = self.args
        began = time.monotonic()
        bootstrap = list(parse_bootstrap(args.bootstrap))
        if not bootstrap:
            first = self._node((), args.port)
            host = "127.0.0.1" if args.host == "0.0.0.0" else first.address.host
            bootstrap = [format_address(first.address._replace(host=host))]
            print(f"{PROG}: bootstrap node listening on {bootstrap[0]}", flush=True)
            self.report.bootstrapped += 1
        while len(self.nodes) < args.count and not self.stop.wait(0):
            batch = [
                self._node(bootstrap) for _ in range(min(args.batch, args.count - len(self.nodes)))
            ]
            for node in batch:
                if node.ready(READY_TIMEOUT) and node.nodes():
                    self.report.bootstrapped += 1
            log.info("%d nodes started", len(self.nodes))
        self.report.nodes = len(self.nodes)
        self.report.startup = time.monotonic() - began
        print(
            f"{PROG}: {len(self.nodes)} nodes up in {self.report.startup:.2f} s "
            f"({self.report.bootstrapped} bootstrapped)",
            flush=True,
        )

    def announce_all(self) -> None:
        """Every node announces sha256(its id)."""
        began = time.monotonic()

        def announce(node: HyperDHT) -> bool:
            if node.closed:
                return False
            try:
                node.announce_discard(hashlib.sha256(node.id).digest())
            except HyperDHTError as exc:
                log.info("announce from %s failed: %s", format_address(node.address), exc)
                return False
            return True

        results = run_limited(self.runtime, announce, list(self.nodes), self.args.batch)
        ok = sum(results)
        self.report.announce_rounds += 1
        self.report.announced += ok
        self.report.announce_failed += len(results) - ok
        print(
            f"{PROG}: {ok}/{len(results)} announced in {time.monotonic() - began:.2f} s",
            flush=True,
        )

    def check_lookups(self) -> None:
        """Look a few announced keys up from random nodes."""
        if len(self.nodes) < 2:
            return
        sample = random.sample(self.nodes, min(CHECK_LOOKUPS, len(self.nodes)))
        for owner in sample:
            asker = random.choice([n for n in self.nodes if n is not owner])
            key = hashlib.sha256(owner.id).digest()
            found = False
            try:
                for result in asker.lookup(key):
                    if any(p.port == owner.address.port for p in result.peers):
                        found = True
                        break
            except HyperDHTError as exc:
                log.info("check lookup failed: %s", exc)
            self.report.lookups += 1
            self.report.lookups_found += found
        print(
            f"{PROG}: lookups {self.report.lookups_found}/{self.report.lookups} found "
            "the announcer",
            flush=True,
        )

    def reannounce(self, done: Any) -> None:
        """Announce again every 4-5 minutes until ``done`` is set."""
        while not done.wait(random.uniform(*REFRESH_INTERVAL)):
            self.announce_all()

    def close(self) -> None:
        """Close every node."""
        for node in self.nodes:
            node.close()


def run(args: argparse.Namespace) -> int:
    """Run the swarm ``args`` describe; returns the exit status."""
    runtime = Runtime(args.backend)
    raise_fd_limit(args.count * FDS_PER_NODE[args.backend] + 64)
    stop = StopSignal(runtime)
    swarm = Swarm(args, runtime, stop)
    began = time.monotonic()
    done = runtime.event()
    task: Task | None = None
    try:
        swarm.start()
        if args.announce and not stop.wait(0):
            swarm.announce_all()
            swarm.check_lookups()
            task = runtime.spawn(swarm.reannounce, done, name="hyperdht-swarm-announce")
        stop.wait(args.duration)
        swarm.report.ran = time.monotonic() - began
        lines = swarm.report.summary(swarm.nodes, args.backend)
    finally:
        done.set()
        swarm.close()
        runtime.restore_signals()
    if task is not None:
        task.join(1.0)
    for line in lines:
        print(line, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hyperdht-swarm``; returns the exit status."""
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
        parse_bootstrap(args.bootstrap)
        configure_logging(logging.INFO if args.verbose else logging.WARNING)
        return run(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
