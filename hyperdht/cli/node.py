"""The ``hyperdht`` command: run a DHT node, announce keys, look keys up.

* ``hyperdht [options]``: a bootstrap/relay node. It prints
  ``hyperdht listening on HOST:PORT``, logs what it serves (announces,
  unannounces, lookups) unless ``--quiet``, re-bootstraps every 4-5
  minutes, and runs until SIGINT/SIGTERM (then exits 0).
* ``hyperdht --announce KEYHEX``: announce, re-announce every 4-5 minutes,
  and unannounce within 5 seconds of SIGINT/SIGTERM.
* ``hyperdht --query KEYHEX``: look up, print one line per answer
  (``--json``: JSON lines); exit 0 if any node answered, 1 if none did.
  The lookup node is always ephemeral (it stays out of routing tables).
* A plain node or an announcer prints ``reachability: VERDICT (full node |
  ephemeral)`` once bootstrapped and on every change. ``--ephemeral
  auto`` (the default) keeps it out of routing tables until unsolicited
  datagrams are found to reach it; ``--ephemeral`` alone (or ``true``)
  always, ``--ephemeral false`` never. A node without ``--bootstrap`` (the
  first node of a network) starts as a full node.
* ``hyperdht demo``: see :mod:`hyperdht.cli.demo`.

Options may also come from a ``--config`` file (JSON or YAML) with the same
keys as the long options; the command line wins. Every error is one line on
stderr: exit status 2 for usage errors (bad options, keys, addresses, config
files), 1 for failures (a port in use, no node answering).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..addressing import DEFAULT_PORT
from ..discovery import HyperDHT
from ..errors import HyperDHTError
from ..ipencoding import Address
from .errors import UsageError
from .options import (
    ConfigKind,
    OneLineParser,
    add_backend,
    add_bootstrap,
    add_host,
    add_port,
    load_config,
    new_parser,
    parse_bootstrap,
    parse_key,
    positive_int_arg,
    rate_arg,
)
from .output import (
    configure_logging,
    format_address,
    reachability_text,
    result_json,
    result_text,
    say,
    say_error,
)
from .runtime import StopSignal, Task, driver_of, open_node, require_backend, run_main

__all__ = ["REFRESH_INTERVAL", "Settings", "build_parser", "main", "parse_settings"]

log = logging.getLogger(__name__)

PROG = "hyperdht"
#: Re-announce / re-bootstrap every 4-5 minutes (PROTOCOL.md section 7).
REFRESH_INTERVAL = (240.0, 300.0)
#: After a failed announce, try again sooner.
RETRY_INTERVAL = (20.0, 40.0)
#: Seconds the unannounce may take after a signal before the node closes.
UNANNOUNCE_TIMEOUT = 3.5
#: Seconds to wait for a background task to notice it must stop.
STOP_TIMEOUT = 1.0

#: Config keys (the long option names) and what each holds.
CONFIG_KINDS: dict[str, ConfigKind] = {
    "port": "port",
    "host": "str",
    "bootstrap": "strs",
    "ephemeral": "ephemeral",
    "id": "str",
    "concurrency": "positive",
    "backend": "backend",
    "announce": "strs",
    "query": "strs",
    "json": "bool",
    "quiet": "bool",
    "rate_limit": "rate",
}


@dataclass(frozen=True)
class Settings:
    """Everything the node command needs, from defaults, a config file and
    the command line (in increasing priority)."""

    port: int | None = None  # None: 49737 for a plain node, any free port otherwise
    host: str = "0.0.0.0"
    bootstrap: tuple[str, ...] = ()
    ephemeral: bool | str = "auto"
    id: bytes | None = None
    concurrency: int = 16
    backend: str = "thread"
    announce: tuple[bytes, ...] = ()
    query: tuple[bytes, ...] = ()
    json: bool = False
    quiet: bool = False
    rate_limit: float | None = None  # requests served per second per source host

    @property
    def listen_port(self) -> int:
        """The port to bind: ``port``, else 49737 for a plain node (the
        well-known bootstrap port) and any free port to announce or query."""
        if self.port is not None:
            return self.port
        return 0 if self.announce or self.query else DEFAULT_PORT


def build_parser() -> OneLineParser:
    """The ``hyperdht`` option parser. Options left out are absent from the
    namespace, so a config file can fill them in."""
    p = new_parser(
        PROG,
        "Run a hyperdht node: a bootstrap/relay node (no action), an announcer "
        "(--announce) or a lookup (--query).",
        usage="%(prog)s [options]\n       %(prog)s demo [--backend {thread,gevent,asyncio}]",
        epilog=(
            "commands:\n"
            "  demo   start a small network on 127.0.0.1 and show hole punching\n"
            "         through an emulated NAT (see: hyperdht demo --help)\n\n"
            "Keys are 32 bytes written as 64 hex characters. A bootstrap 'host'\n"
            "without a port means port 49737."
        ),
        suppress_defaults=True,
    )
    node = p.add_argument_group("node")
    add_port(
        node,
        "UDP port to bind (default: 49737 for a plain node, any free port "
        "with --announce/--query; 0 picks a free one)",
    )
    add_host(node, "address to bind (default: 0.0.0.0)")
    add_bootstrap(node, "bootstrap node; repeat or separate with commas")
    node.add_argument(
        "--ephemeral",
        nargs="?",
        const=True,
        type=_ephemeral_arg,
        metavar="auto|true|false",
        help="stay out of other nodes' routing tables: auto (default) while "
        "unsolicited datagrams do not reach us, true (also: no value) always, "
        "false never; always true with --query",
    )
    node.add_argument("--id", metavar="HEX", help="node id, 64 hex characters (default: random)")
    node.add_argument(
        "--concurrency", type=positive_int_arg, metavar="N", help="requests in flight (default: 16)"
    )
    node.add_argument(
        "--rate-limit",
        type=rate_arg,
        metavar="N",
        help="serve each source host at most N requests per second, bursts of 2N "
        "(default: unlimited)",
    )
    add_backend(node)
    node.add_argument(
        "-c", "--config", metavar="FILE", help="read options from a .json, .yaml or .yml file"
    )
    action = p.add_argument_group("actions")
    action.add_argument(
        "-a",
        "--announce",
        action="append",
        metavar="KEYHEX",
        help="announce KEYHEX (repeatable); re-announce until stopped",
    )
    action.add_argument(
        "-q",
        "--query",
        action="append",
        metavar="KEYHEX",
        help="look KEYHEX up (repeatable), print the answers and exit",
    )
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="with --query: print JSON lines")
    out.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _ephemeral_arg(value: str) -> bool | str:
    """``--ephemeral``'s value: ``auto``, ``true`` or ``false``."""
    mode = _ephemeral_mode(value)
    if mode is None:
        raise argparse.ArgumentTypeError(f"expected auto, true or false, got {value!r}")
    return mode


def _ephemeral_mode(value: Any) -> bool | str | None:
    if isinstance(value, bool) or value == "auto":
        return value  # type: ignore[no-any-return]
    if isinstance(value, str) and value.lower() in ("auto", "true", "false"):
        lowered = value.lower()
        return "auto" if lowered == "auto" else lowered == "true"
    return None


def parse_settings(argv: Sequence[str]) -> Settings:
    """Parse the command line (and the config file it names) into
    :class:`Settings`. Raises UsageError; exits for ``--help``/``--version``."""
    ns = vars(build_parser().parse_args(list(argv)))
    values: dict[str, Any] = {}
    config = ns.pop("config", None)
    if config is not None:
        values.update(load_config(config, CONFIG_KINDS))
    values.update(ns)  # the command line wins over the file

    announce = tuple(parse_key(k, "--announce") for k in values.get("announce", []))
    query = tuple(parse_key(k, "--query") for k in values.get("query", []))
    if announce and query:
        raise UsageError("--announce and --query cannot be used together")
    if values.get("json") and not query:
        raise UsageError("--json only applies to --query")
    node_id = values.get("id")
    bootstrap = parse_bootstrap(values.get("bootstrap", []))
    if (announce or query) and not bootstrap:
        action = "--announce" if announce else "--query"
        raise UsageError(f"{action} needs --bootstrap (the network to use)")
    return Settings(
        port=values.get("port"),
        host=values.get("host", "0.0.0.0"),
        bootstrap=bootstrap,
        ephemeral=_ephemeral_mode(values.get("ephemeral", "auto")) or False,
        id=parse_key(node_id, "--id") if node_id is not None else None,
        concurrency=values.get("concurrency", 16),
        backend=values.get("backend", "thread"),
        announce=announce,
        query=query,
        json=bool(values.get("json", False)),
        quiet=bool(values.get("quiet", False)),
        rate_limit=values.get("rate_limit"),
    )


def _interval(bounds: tuple[float, float]) -> float:
    return random.uniform(*bounds)


def start_node(settings: Settings, stop: StopSignal) -> HyperDHT:
    """Start the node ``settings`` describe and attach ``stop`` to its
    driver. Raises UsageError or CommandError (see :func:`open_node`)."""
    dht = open_node(
        id=settings.id,
        bootstrap=list(settings.bootstrap),
        host=settings.host,
        port=settings.listen_port,
        # A one-shot lookup must not leave a soon-dead entry in routing
        # tables (it would cost every later query a timeout).
        ephemeral=True if settings.query else settings.ephemeral,
        concurrency=settings.concurrency,
        backend=settings.backend,
        rate_limit=settings.rate_limit,
    )
    stop.attach(driver_of(dht))
    return dht


def _say_reachability(dht: HyperDHT) -> None:
    """Print the verdict now and on every change."""
    said: list[str] = []

    def show(verdict: str) -> None:
        line = reachability_text(verdict, dht.ephemeral)
        if not said or said[-1] != line:
            said.append(line)
            say(line)

    dht.on_reachability(show)
    show(dht.reachability)


def run_node(settings: Settings, stop: StopSignal) -> int:
    """A bootstrap/relay node until ``stop``."""
    dht = start_node(settings, stop)
    done = driver_of(dht).new_event()
    task: Task | None = None
    try:
        say(f"{PROG} listening on {format_address(dht.address)}")
        _say_reachability(dht)
        if not settings.quiet:
            _log_events(dht)

        def refresh() -> None:
            if settings.bootstrap and dht.ready() and not done.is_set():
                log.info("bootstrapped: %d nodes in the routing table", len(dht.nodes()))
            while not done.wait(_interval(REFRESH_INTERVAL)):
                try:
                    dht.bootstrap()
                except HyperDHTError as exc:
                    if not done.is_set():
                        log.warning("re-bootstrap failed: %s", exc)
                else:
                    log.info("re-bootstrapped: %d nodes in the routing table", len(dht.nodes()))

        task = Task(driver_of(dht), refresh, name="hyperdht-refresh")
        stop.wait()
        log.info("signal %s: closing", stop.signum)
    finally:
        done.set()
        dht.close()
    if task is not None:
        task.join(STOP_TIMEOUT)
    return 0


def _log_events(dht: HyperDHT) -> None:
    def announce(key: bytes, peer: Address) -> None:
        log.info("announce %s from %s", key.hex(), format_address(peer))

    def unannounce(key: bytes, peer: Address) -> None:
        log.info("unannounce %s from %s", key.hex(), format_address(peer))

    def lookup(key: bytes) -> None:
        log.info("lookup %s", key.hex())

    dht.add_listener("announce", announce)
    dht.add_listener("unannounce", unannounce)
    dht.add_listener("lookup", lookup)


class _Announcer:
    """Announces keys now and every 4-5 minutes, in a background task."""

    def __init__(self, dht: HyperDHT, keys: Sequence[bytes]) -> None:
        self._dht = dht
        self._keys = keys
        self._stopping = driver_of(dht).new_event()
        self._stream: Any = None

    def run(self) -> None:
        delay = 0.0
        while not self._stopping.wait(delay):
            ok = all([self._announce(key) for key in self._keys])
            delay = _interval(REFRESH_INTERVAL if ok else RETRY_INTERVAL)
            if not ok and not self._stopping.is_set():
                log.warning("retrying in %.0f s", delay)

    def _announce(self, key: bytes) -> bool:
        if self._stopping.is_set():
            return False
        stream = self._stream = self._dht.announce(key)
        for _ in stream:
            pass
        self._stream = None
        if self._stopping.is_set():
            return False
        if stream.error is not None:
            log.warning("announce %s failed: %s", key.hex(), stream.error)
            return False
        say(f"announced {key.hex()} (stored by {stream.commits} nodes)")
        return True

    def stop(self) -> None:
        """Stop announcing; an announce in flight is cancelled."""
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            stream.close()


def run_announce(settings: Settings, stop: StopSignal) -> int:
    """Announce until ``stop``, then unannounce (bounded) and close."""
    dht = start_node(settings, stop)
    driver = driver_of(dht)
    tasks: list[Task] = []
    try:
        say(f"{PROG} listening on {format_address(dht.address)}")
        _say_reachability(dht)
        announcer = _Announcer(dht, settings.announce)
        tasks.append(Task(driver, announcer.run, name="hyperdht-announce"))
        stop.wait()
        log.info("signal %s: unannouncing", stop.signum)
        announcer.stop()
        tasks[0].join(STOP_TIMEOUT)

        def unannounce(key: bytes) -> None:
            try:
                dht.unannounce(key)
            except HyperDHTError as exc:
                log.warning("unannounce %s failed: %s", key.hex(), exc)
            else:
                say(f"unannounced {key.hex()}")

        # All keys at once, so that the time bound holds for any number.
        deadline = time.monotonic() + UNANNOUNCE_TIMEOUT
        for key in settings.announce:
            tasks.append(Task(driver, unannounce, key, name="hyperdht-unannounce"))
        for task in tasks[1:]:
            task.join(max(0.0, deadline - time.monotonic()))
        if any(task.is_alive() for task in tasks[1:]):
            log.warning("unannounce did not finish in %.1f s; closing anyway", UNANNOUNCE_TIMEOUT)
    finally:
        dht.close()
    for task in tasks:
        task.join(STOP_TIMEOUT)
    return 0


def run_query(settings: Settings, stop: StopSignal) -> int:
    """Look every key up and print the answers: 0 if nodes answered every
    lookup, 1 if one got no answer, 130 when interrupted by a signal."""
    dht = start_node(settings, stop)
    failed: list[bytes] = []

    def lookups() -> None:
        try:
            fmt = result_json if settings.json else result_text
            for key in settings.query:
                stream = dht.lookup(key)
                for result in stream:
                    say(fmt(key, result))
                if stream.responses == 0 and not dht.closed:
                    reason = f": {stream.error}" if stream.error is not None else ""
                    say_error(PROG, f"no node answered the lookup of {key.hex()}{reason}")
                    failed.append(key)
        finally:
            stop.set()

    # The lookups run in the background so that a signal (which only sets
    # ``stop``) can end them: closing the node ends every stream.
    task = Task(driver_of(dht), lookups, name="hyperdht-query")
    try:
        stop.wait()
    finally:
        dht.close()
    task.join(STOP_TIMEOUT)
    if stop.signum is not None:
        say_error(PROG, "interrupted")
        return 130
    return 1 if failed else 0


def run(settings: Settings) -> int:
    """Run the command ``settings`` describe; returns the exit status."""
    require_backend(settings.backend)
    # Before anything else: no signal goes unhandled.
    with StopSignal(PROG, settings.backend) as stop:
        if settings.query:
            return run_query(settings, stop)
        if settings.announce:
            return run_announce(settings, stop)
        return run_node(settings, stop)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hyperdht`` (and ``python -m hyperdht``); returns the
    exit status. ``hyperdht demo ...`` runs :func:`hyperdht.cli.demo.main`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "demo":
        from . import demo

        return demo.main(args[1:])

    def body() -> int:
        settings = parse_settings(args)
        # A lookup is a one-shot tool whose output is its stdout: no chatter.
        quiet = settings.quiet or bool(settings.query)
        configure_logging(logging.WARNING if quiet else logging.INFO)
        return run(settings)

    return run_main(PROG, body)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
