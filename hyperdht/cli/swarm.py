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
holds thousands of nodes; with ``--backend asyncio`` every node is a socket
watched by one shared event loop (in a thread of its own); with threads
each node costs two threads and a few descriptors.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..discovery import HyperDHT
from ..drivers import Event
from ..errors import HyperDHTError
from .node import REFRESH_INTERVAL
from .options import (
    OneLineParser,
    add_backend,
    add_bootstrap,
    add_host,
    add_port,
    new_parser,
    parse_bootstrap,
    positive_int_arg,
    seconds_arg,
)
from .output import configure_logging, format_address, say
from .runtime import StopSignal, Task, driver_of, map_bounded, open_node, require_backend, run_main

__all__ = ["Swarm", "SwarmReport", "build_parser", "main"]

log = logging.getLogger(__name__)

PROG = "hyperdht-swarm"
#: Seconds a node may take to bootstrap before it counts as failed.
READY_TIMEOUT = 15.0
#: Keys looked up after announcing, as a check that the swarm works.
CHECK_LOOKUPS = 10
#: File descriptors per node (socket; the thread driver adds a wake-up pair
#: and a selector), for raising the process limit.
FDS_PER_NODE = {"thread": 4, "gevent": 1, "asyncio": 1}


def build_parser() -> OneLineParser:
    """The ``hyperdht-swarm`` option parser."""
    p = new_parser(PROG, "Run many hyperdht nodes in one process (load and behaviour tests).")
    p.add_argument(
        "-n", "--count", type=positive_int_arg, required=True, metavar="N", help="number of nodes"
    )
    add_bootstrap(
        p,
        "join this network (repeatable, comma-separated); default: the first "
        "node is the swarm's bootstrap node",
        default=[],
    )
    add_host(p, "address to bind (default: 127.0.0.1)", default="127.0.0.1")
    add_port(
        p,
        "port of the swarm's bootstrap node when there is no --bootstrap (default: any)",
        default=0,
    )
    p.add_argument(
        "-a", "--announce", action="store_true", help="each node announces sha256(its id)"
    )
    add_backend(p, default="thread")
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
        type=seconds_arg,
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


class Swarm:
    """The nodes of one ``hyperdht-swarm`` run. The first node's driver
    provides the events and background tasks of the run."""

    def __init__(self, args: argparse.Namespace, stop: StopSignal) -> None:
        self.args = args
        self.stop = stop
        self.nodes: list[HyperDHT] = []
        self.report = SwarmReport()

    def _node(self, bootstrap: Sequence[str], port: int = 0) -> HyperDHT:
        node = open_node(
            bootstrap=list(bootstrap),
            host=self.args.host,
            port=port,
            backend=self.args.backend,
        )
        if not self.nodes:
            self.stop.attach(driver_of(node))
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
            say(f"{PROG}: bootstrap node listening on {bootstrap[0]}")
            self.report.bootstrapped += 1
        # At least one batch: the run's events come from the first node.
        while len(self.nodes) < args.count and not (self.nodes and self.stop.is_set()):
            batch = [
                self._node(bootstrap) for _ in range(min(args.batch, args.count - len(self.nodes)))
            ]
            for node in batch:
                if node.ready(READY_TIMEOUT) and node.nodes():
                    self.report.bootstrapped += 1
            log.info("%d nodes started", len(self.nodes))
        self.report.nodes = len(self.nodes)
        self.report.startup = time.monotonic() - began
        say(
            f"{PROG}: {len(self.nodes)} nodes up in {self.report.startup:.2f} s "
            f"({self.report.bootstrapped} bootstrapped)"
        )

    def announce_all(self) -> None:
        """Every node announces sha256(its id), ``--batch`` at once."""
        began = time.monotonic()

        def announce(node: HyperDHT) -> bool:
            if node.closed or self.stop.is_set():
                return False
            try:
                node.announce_discard(hashlib.sha256(node.id).digest())
            except HyperDHTError as exc:
                log.info("announce from %s failed: %s", format_address(node.address), exc)
                return False
            return True

        # One worker per node of the first batch, each on that node's driver.
        workers = [driver_of(n) for n in self.nodes[: self.args.batch]]
        results = map_bounded(announce, list(self.nodes), workers)
        ok = sum(results)
        self.report.announce_rounds += 1
        self.report.announced += ok
        self.report.announce_failed += len(results) - ok
        say(f"{PROG}: {ok}/{len(results)} announced in {time.monotonic() - began:.2f} s")

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
        say(
            f"{PROG}: lookups {self.report.lookups_found}/{self.report.lookups} found the announcer"
        )

    def reannounce(self, done: Event) -> None:
        """Announce again every 4-5 minutes until ``done`` is set."""
        while not done.wait(random.uniform(*REFRESH_INTERVAL)):
            self.announce_all()

    def close(self) -> None:
        """Close every node, the first (which runs the background tasks) last."""
        for node in reversed(self.nodes):
            node.close()


def run(args: argparse.Namespace) -> int:
    """Run the swarm ``args`` describe; returns the exit status."""
    require_backend(args.backend)
    raise_fd_limit(args.count * FDS_PER_NODE[args.backend] + 64)
    began = time.monotonic()
    task: Task | None = None
    with StopSignal(PROG, args.backend) as stop:
        swarm = Swarm(args, stop)
        done: Event | None = None
        try:
            swarm.start()
            driver = driver_of(swarm.nodes[0])
            done = driver.new_event()
            if args.announce and not stop.is_set():
                swarm.announce_all()
                swarm.check_lookups()
                task = Task(driver, swarm.reannounce, done, name="hyperdht-reannounce")
            stop.wait(args.duration)
            swarm.report.ran = time.monotonic() - began
            lines = swarm.report.summary(swarm.nodes, args.backend)
        finally:
            stop.set()  # an announce round in progress stops at once
            if done is not None:
                done.set()
            swarm.close()
    if task is not None:
        task.join(1.0)
    for line in lines:
        say(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hyperdht-swarm``; returns the exit status."""

    def body() -> int:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
        parse_bootstrap(args.bootstrap)
        configure_logging(logging.INFO if args.verbose else logging.WARNING)
        return run(args)

    return run_main(PROG, body)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
