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
* ``hyperdht demo``: see :mod:`hyperdht.demo`.

Options may also come from a ``--config`` file (JSON or YAML) with the same
keys as the long options; the command line wins. Every error is one line on
stderr: exit status 2 for usage errors (bad options, keys, addresses, config
files), 1 for failures (a port in use, no node answering).

With ``--backend gevent`` the background work runs in greenlets and signals
are caught with :func:`gevent.signal_handler`, so the main greenlet waits
cooperatively; with threads the usual :mod:`signal` handlers set an event.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

from . import __version__
from .addressing import DEFAULT_PORT, parse_address
from .discovery import HyperDHT, QueryResponse
from .errors import HyperDHTError
from .ipencoding import Address

__all__ = [
    "CommandError",
    "Runtime",
    "Settings",
    "UsageError",
    "main",
    "parse_key",
    "parse_settings",
]

log = logging.getLogger(__name__)

PROG = "hyperdht"
BACKENDS = ("thread", "gevent")
#: Re-announce / re-bootstrap every 4-5 minutes (PROTOCOL.md section 7).
REFRESH_INTERVAL = (240.0, 300.0)
#: After a failed announce, try again sooner.
RETRY_INTERVAL = (20.0, 40.0)
#: Seconds the unannounce may take after a signal before the node closes.
UNANNOUNCE_TIMEOUT = 3.5
#: Seconds to wait for a background task to notice it must stop.
STOP_TIMEOUT = 1.0


class UsageError(Exception):
    """Bad options, keys, addresses or config files: exit status 2."""


class CommandError(Exception):
    """The command could not do its job (e.g. a port in use): exit status 1."""


# -- settings ----------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything the node command needs, from defaults, a config file and
    the command line (in increasing priority)."""

    port: int | None = None  # None: 49737 for a plain node, any free port otherwise
    host: str = "0.0.0.0"
    bootstrap: tuple[str, ...] = ()
    ephemeral: bool = False
    id: bytes | None = None
    concurrency: int = 16
    backend: str = "thread"
    announce: tuple[bytes, ...] = ()
    query: tuple[bytes, ...] = ()
    json: bool = False
    quiet: bool = False

    @property
    def listen_port(self) -> int:
        """The port to bind: ``port``, else 49737 for a plain node (the
        well-known bootstrap port) and any free port to announce or query."""
        if self.port is not None:
            return self.port
        return 0 if self.announce or self.query else DEFAULT_PORT


def parse_key(text: str, what: str = "key") -> bytes:
    """A 32-byte key from 64 hex characters; raises UsageError."""
    if not isinstance(text, str):
        raise UsageError(f"{what}: expected 64 hex characters, got {text!r}")
    value = text.strip()
    if len(value) != 64:
        raise UsageError(f"{what}: expected 64 hex characters (32 bytes), got {text!r}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise UsageError(f"{what}: not hexadecimal: {text!r}") from None


def parse_bootstrap(values: Iterable[str], what: str = "--bootstrap") -> tuple[str, ...]:
    """Split comma-separated entries and check each ``host[:port]`` (a bare
    host means port 49737). No name is resolved here. Raises UsageError."""
    out: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise UsageError(f"{what}: expected 'host:port' strings, got {value!r}")
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                parse_address(part, what=what, default_port=DEFAULT_PORT)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            out.append(part)
    return tuple(out)


def port_arg(text: str) -> int:
    """argparse type: a port number 0-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


def positive_int_arg(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, not printed)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``hyperdht`` option parser. Options left out are absent from the
    namespace (``argparse.SUPPRESS``), so a config file can fill them in."""
    p = OneLineParser(
        prog=PROG,
        usage="%(prog)s [options]\n       %(prog)s demo [--backend {thread,gevent}]",
        description=(
            "Run a hyperdht node: a bootstrap/relay node (no action), an announcer "
            "(--announce) or a lookup (--query)."
        ),
        epilog=(
            "commands:\n"
            "  demo   start a small network on 127.0.0.1 and show hole punching\n"
            "         through an emulated NAT (see: hyperdht demo --help)\n\n"
            "Keys are 32 bytes written as 64 hex characters. A bootstrap 'host'\n"
            "without a port means port 49737."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    node = p.add_argument_group("node")
    node.add_argument(
        "-p",
        "--port",
        type=port_arg,
        metavar="PORT",
        help="UDP port to bind (default: 49737 for a plain node, any free port "
        "with --announce/--query; 0 picks a free one)",
    )
    node.add_argument("--host", metavar="HOST", help="address to bind (default: 0.0.0.0)")
    node.add_argument(
        "-b",
        "--bootstrap",
        action="append",
        metavar="HOST[:PORT]",
        help="bootstrap node; repeat or separate with commas",
    )
    node.add_argument(
        "--ephemeral",
        action="store_true",
        help="stay out of other nodes' routing tables (for unreachable nodes; "
        "always on with --query)",
    )
    node.add_argument("--id", metavar="HEX", help="node id, 64 hex characters (default: random)")
    node.add_argument(
        "--concurrency", type=positive_int_arg, metavar="N", help="requests in flight (default: 16)"
    )
    node.add_argument("--backend", choices=BACKENDS, help="I/O driver (default: thread)")
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


#: Config keys and what each must hold (a config file uses the long option names).
_CONFIG_TYPES: dict[str, str] = {
    "port": "int",
    "host": "str",
    "bootstrap": "strs",
    "ephemeral": "bool",
    "id": "str",
    "concurrency": "int",
    "backend": "str",
    "announce": "strs",
    "query": "strs",
    "json": "bool",
    "quiet": "bool",
}


def load_config(path: str) -> dict[str, Any]:
    """Read a config file (.json, .yaml or .yml) into a dict of option
    values, checking keys and value types. Raises UsageError."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise UsageError(f"config file {path}: unsupported extension (use .json, .yaml or .yml)")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"config file {path}: cannot read: {reason}") from None
    data: Any
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"config file {path}: invalid JSON: {exc}") from None
    else:
        try:
            import yaml
        except ImportError:
            raise UsageError(
                f"config file {path}: reading YAML needs PyYAML (pip install hyperdht[yaml])"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            reason = " ".join(str(exc).split())
            raise UsageError(f"config file {path}: invalid YAML: {reason}") from None
        if data is None:
            data = {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path}: expected a mapping of options at the top level")
    out: dict[str, Any] = {}
    for key, value in data.items():
        kind = _CONFIG_TYPES.get(key) if isinstance(key, str) else None
        if kind is None:
            known = ", ".join(sorted(_CONFIG_TYPES))
            raise UsageError(f"config file {path}: unknown key {key!r} (known: {known})")
        out[key] = _check_type(path, key, kind, value)
    return out


def _check_type(path: str, key: str, kind: str, value: Any) -> Any:
    ok: bool
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "str":
        ok = isinstance(value, str)
    else:  # a string or a list of strings
        if isinstance(value, str):
            value = [value]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if not ok:
        wanted = {"int": "an integer", "bool": "true or false", "str": "a string"}.get(
            kind, "a string or a list of strings"
        )
        raise UsageError(f"config file {path}: {key!r} must be {wanted}, got {value!r}")
    if key == "port" and not 0 <= value < 65536:
        raise UsageError(f"config file {path}: 'port' must be 0-65535, got {value}")
    if key == "concurrency" and value < 1:
        raise UsageError(f"config file {path}: 'concurrency' must be at least 1, got {value}")
    if key == "backend" and value not in BACKENDS:
        raise UsageError(f"config file {path}: 'backend' must be one of {BACKENDS}, got {value!r}")
    return value


def parse_settings(argv: Sequence[str]) -> Settings:
    """Parse the command line (and the config file it names) into
    :class:`Settings`. Raises UsageError; exits for ``--help``/``--version``."""
    ns = vars(build_parser().parse_args(list(argv)))
    values: dict[str, Any] = {}
    config = ns.pop("config", None)
    if config is not None:
        values.update(load_config(config))
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
        ephemeral=bool(values.get("ephemeral", False)),
        id=parse_key(node_id, "--id") if node_id is not None else None,
        concurrency=values.get("concurrency", 16),
        backend=values.get("backend", "thread"),
        announce=announce,
        query=query,
        json=bool(values.get("json", False)),
        quiet=bool(values.get("quiet", False)),
    )


# -- threads or greenlets ------------------------------------------------------


class Waitable(Protocol):
    """``threading.Event`` or ``gevent.event.Event``."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Task(Protocol):
    """A background thread or greenlet."""

    def join(self, timeout: float | None = None) -> Any: ...

    def is_alive(self) -> bool: ...


class _Greenlet:
    def __init__(self, greenlet: Any) -> None:
        self._g = greenlet

    def join(self, timeout: float | None = None) -> None:
        self._g.join(timeout)

    def is_alive(self) -> bool:
        return not self._g.dead


class Runtime:
    """Threads or greenlets for one backend: events, background tasks and
    signal handling, so a command is written once for both.

    Raises CommandError for ``"gevent"`` when gevent is not installed.
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._gevent: Any = None
        self._restore: list[Callable[[], None]] = []
        if backend == "gevent":
            try:
                import gevent
                import gevent.event
            except ImportError:
                raise CommandError(
                    "--backend gevent needs gevent, which is not installed "
                    "(pip install hyperdht[gevent])"
                ) from None
            self._gevent = gevent

    def event(self) -> Waitable:
        """A fresh unset event that waits cooperatively with the backend."""
        if self._gevent is not None:
            ev: Waitable = self._gevent.event.Event()
            return ev
        return threading.Event()

    def spawn(self, fn: Callable[..., Any], *args: Any, name: str = "hyperdht-cli") -> Task:
        """Run ``fn(*args)`` in the background; an exception is logged."""

        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("%s failed", name)

        if self._gevent is not None:
            return _Greenlet(self._gevent.spawn(run))
        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    def on_signals(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(signum)`` on SIGINT and SIGTERM (in the main
        thread, or in a greenlet with gevent) until :meth:`restore_signals`."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            if self._gevent is not None:
                handle = self._gevent.signal_handler(signum, callback, signum)
                self._restore.append(handle.cancel)
            else:
                old = signal.signal(signum, lambda s, _frame: callback(s))
                self._restore.append(_restorer(signum, old))

    def restore_signals(self) -> None:
        """Undo :meth:`on_signals`."""
        while self._restore:
            self._restore.pop()()


def _restorer(signum: int, handler: Any) -> Callable[[], None]:
    def restore() -> None:
        signal.signal(signum, handler)

    return restore


class StopSignal:
    """Set by the first SIGINT/SIGTERM; a second one exits at once."""

    def __init__(self, runtime: Runtime) -> None:
        self._event = runtime.event()
        self.signum: int | None = None
        runtime.on_signals(self._on_signal)

    def _on_signal(self, signum: int) -> None:
        if self.signum is not None:
            # Shutting down already and asked again: do not make them wait.
            os.write(2, f"{PROG}: second signal, exiting now\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        self._event.set()

    def set(self) -> None:
        """Request a stop without a signal (e.g. at the end of a bounded run)."""
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a stop is requested (True) or ``timeout`` passes."""
        return self._event.wait(timeout)


# -- the node command --------------------------------------------------------


def configure_logging(level: int) -> None:
    """Log to stderr (library loggers included) at ``level``."""
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def create_node(settings: Settings) -> HyperDHT:
    """Start the node ``settings`` describe. Raises UsageError for values
    the DHT refuses, CommandError when the socket cannot be bound."""
    try:
        return HyperDHT(
            id=settings.id,
            bootstrap=list(settings.bootstrap),
            host=settings.host,
            port=settings.listen_port,
            # A one-shot lookup must not leave a soon-dead entry in routing
            # tables (it would cost every later query a timeout).
            ephemeral=settings.ephemeral or bool(settings.query),
            concurrency=settings.concurrency,
            backend=settings.backend,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise CommandError(exc.strerror or str(exc)) from None
    except ImportError as exc:
        raise CommandError(str(exc)) from None


def format_address(addr: Address) -> str:
    """``host:port``, with brackets for IPv6."""
    return f"[{addr.host}]:{addr.port}" if ":" in addr.host else f"{addr.host}:{addr.port}"


# Lines come from several threads (or greenlets): each is written whole.
_output_lock = threading.Lock()


def _say(line: str, stream: Any = None) -> None:
    stream = stream or sys.stdout
    with _output_lock:
        stream.write(line + "\n")
        stream.flush()


def _error(message: str) -> None:
    _say(f"{PROG}: error: {message}", sys.stderr)


def _interval(bounds: tuple[float, float]) -> float:
    return random.uniform(*bounds)


def run_node(settings: Settings, runtime: Runtime, stop: StopSignal) -> int:
    """A bootstrap/relay node until ``stop``."""
    dht = create_node(settings)
    done = runtime.event()
    task: Task | None = None
    try:
        _say(f"{PROG} listening on {format_address(dht.address)}")
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

        task = runtime.spawn(refresh, name="hyperdht-refresh")
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

    def __init__(self, dht: HyperDHT, keys: Sequence[bytes], runtime: Runtime) -> None:
        self._dht = dht
        self._keys = keys
        self._stopping = runtime.event()
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
        _say(f"announced {key.hex()} (stored by {stream.commits} nodes)")
        return True

    def stop(self) -> None:
        """Stop announcing; an announce in flight is cancelled."""
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            stream.close()


def run_announce(settings: Settings, runtime: Runtime, stop: StopSignal) -> int:
    """Announce until ``stop``, then unannounce (bounded) and close."""
    dht = create_node(settings)
    tasks: list[Task] = []
    try:
        _say(f"{PROG} listening on {format_address(dht.address)}")
        announcer = _Announcer(dht, settings.announce, runtime)
        tasks.append(runtime.spawn(announcer.run, name="hyperdht-announce"))
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
                _say(f"unannounced {key.hex()}")

        # All keys at once, so that the time bound holds for any number.
        deadline = time.monotonic() + UNANNOUNCE_TIMEOUT
        for key in settings.announce:
            tasks.append(runtime.spawn(unannounce, key, name="hyperdht-unannounce"))
        for task in tasks[1:]:
            task.join(max(0.0, deadline - time.monotonic()))
        if any(task.is_alive() for task in tasks[1:]):
            log.warning("unannounce did not finish in %.1f s; closing anyway", UNANNOUNCE_TIMEOUT)
    finally:
        dht.close()
    for task in tasks:
        task.join(STOP_TIMEOUT)
    return 0


def _result_json(key: bytes, r: QueryResponse) -> str:
    def addr(a: Address) -> dict[str, Any]:
        return {"host": a.host, "port": a.port}

    return json.dumps(
        {
            "key": key.hex(),
            "node": addr(r.node),
            "peers": [addr(p) for p in r.peers],
            "local_peers": [addr(p) for p in r.local_peers],
        }
    )


def _result_text(key: bytes, r: QueryResponse) -> str:
    line = f"{key.hex()} from {format_address(r.node)}: "
    line += " ".join(format_address(p) for p in r.peers)
    if r.local_peers:
        line += " local " + " ".join(format_address(p) for p in r.local_peers)
    return line


def run_query(settings: Settings, runtime: Runtime, stop: StopSignal) -> int:
    """Look every key up and print the answers: 0 if nodes answered every
    lookup, 1 if one got no answer, 130 when interrupted by a signal."""
    dht = create_node(settings)
    failed: list[bytes] = []

    def lookups() -> None:
        try:
            fmt = _result_json if settings.json else _result_text
            for key in settings.query:
                stream = dht.lookup(key)
                for result in stream:
                    _say(fmt(key, result))
                if stream.responses == 0 and not dht.closed:
                    reason = f": {stream.error}" if stream.error is not None else ""
                    _error(f"no node answered the lookup of {key.hex()}{reason}")
                    failed.append(key)
        finally:
            stop.set()

    # The lookups run in the background so that a signal (which only sets
    # ``stop``) can end them: closing the node ends every stream.
    task = runtime.spawn(lookups, name="hyperdht-query")
    try:
        stop.wait()
    finally:
        dht.close()
    task.join(STOP_TIMEOUT)
    if stop.signum is not None:
        _error("interrupted")
        return 130
    return 1 if failed else 0


def _run(settings: Settings) -> int:
    runtime = Runtime(settings.backend)
    stop = StopSignal(runtime)  # before anything else: no signal goes unhandled
    try:
        if settings.query:
            return run_query(settings, runtime, stop)
        if settings.announce:
            return run_announce(settings, runtime, stop)
        return run_node(settings, runtime, stop)
    finally:
        runtime.restore_signals()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hyperdht`` (and ``python -m hyperdht``); returns the
    exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "demo":
        from . import demo

        return demo.main(args[1:])
    try:
        settings = parse_settings(args)
        # A lookup is a one-shot tool whose output is its stdout: no chatter.
        quiet = settings.quiet or bool(settings.query)
        configure_logging(logging.WARNING if quiet else logging.INFO)
        return _run(settings)
    except UsageError as exc:
        _error(str(exc))
        return 2
    except CommandError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
