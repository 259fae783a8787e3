"""Drive the Node.js reference peer (``peer.js``) from Python tests.

``NodePeer.start()`` spawns ``node peer.js`` and waits for its ready line;
``peer.call(cmd, **args)`` sends one JSON-lines command and returns its reply.
``run_capture()`` runs ``capture.js`` (client mode) and returns what it did and
the datagrams it recorded. ``node_available()`` says whether Node.js and the
pinned reference packages are installed (``npm ci --prefix reference``; the
tree is found as ``node_reference.node_modules_dir()`` says, and every Node.js
child gets ``node_reference.node_environ()``).
``decode_datagrams()`` decodes raw datagrams with the reference's own
decoders (``capture.js --decode``); ``RawUdp`` is a bare UDP socket for
crafted datagrams.

No sleeps: a reader thread turns stdout lines into per-command replies and a
queue of unsolicited events, and every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from node_reference import install_hint, missing_packages, node_environ
except ImportError:  # run as a script (test_golden_wire.py --regenerate): add tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from node_reference import install_hint, missing_packages, node_environ

INTEROP_DIR = Path(__file__).resolve().parent
PEER_JS = INTEROP_DIR / "peer.js"
CAPTURE_JS = INTEROP_DIR / "capture.js"
VERSIONS_JS = INTEROP_DIR / "versions.js"

#: The reference packages the harness must run on, exactly.
PINNED = {"hyperdht": "1.3.0", "dht-rpc": "2.3.0", "udp-request": "1.4.0"}

DEFAULT_TIMEOUT = 10.0

Address = Mapping[str, Any]  # {"host": str, "port": int}


class NodePeerError(RuntimeError):
    """A command answered ``ok: false``, or the Node.js process failed."""

    def __init__(self, message: str, reply: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reply: dict[str, Any] = dict(reply or {})


class NodePeerTimeout(NodePeerError, TimeoutError):
    """No reply (or ready line) within the deadline."""


def node_executable() -> str | None:
    """The ``node`` binary: ``$NODE`` if set, else ``node`` on PATH."""
    env = os.environ.get("NODE")
    if env:
        return env if shutil.which(env) else None
    return shutil.which("node")


@functools.lru_cache(maxsize=1)
def node_available() -> tuple[bool, str]:
    """``(True, version info)`` when Node.js and the pinned packages are usable.

    Otherwise ``(False, reason)`` with reason ``"node not found"`` or one that
    starts with ``"run npm ci --prefix reference"``.
    """
    node = node_executable()
    if node is None:
        return False, "node not found"
    missing = missing_packages(PINNED)
    if missing is not None:
        return False, missing
    npm_hint = install_hint()
    # Ask Node itself what hyperdht really loads (no nested dht-rpc copy).
    try:
        proc = subprocess.run(
            [node, str(VERSIONS_JS)],
            cwd=INTEROP_DIR,
            env=node_environ(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"node not usable: {exc}"
    if proc.returncode != 0:
        return False, f"{npm_hint} (node could not load hyperdht: {proc.stderr.strip()[-300:]})"
    try:
        loaded = json.loads(proc.stdout)
    except ValueError:
        return False, f"node printed something unexpected: {proc.stdout[:200]!r}"
    for name, want in PINNED.items():
        if loaded.get(name) != want:
            return False, f"{npm_hint} (hyperdht loads {name}@{loaded.get(name)}, need {want})"
    return True, f"node {loaded['node']}, " + ", ".join(f"{n}@{v}" for n, v in PINNED.items())


def _jsonable(value: Any) -> Any:
    """bytes -> hex; (host, port) tuples stay lists; NodePeer -> its address."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, NodePeer):
        return value.address
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _bootstrap_arg(b: str | Address | tuple[str, int] | NodePeer) -> str:
    if isinstance(b, NodePeer):
        return f"{b.host}:{b.port}"
    if isinstance(b, str):
        return b
    if isinstance(b, tuple):
        return f"{b[0]}:{b[1]}"
    a = getattr(b, "address", None)  # a Python node (HyperDHT / DHT)
    if a is not None and not callable(a):
        return f"{a.host}:{a.port}"
    return f"{b['host']}:{b['port']}"


_EOF = object()


class NodeProcess:
    """A ``node`` child speaking JSON lines on stdin/stdout.

    Lines with a ``"seq"`` are replies and go to whoever waits for that seq;
    any other line (``{"event": ...}``) goes to the :attr:`unsolicited` queue.
    stderr is kept (last 200 lines) for error messages.
    """

    def __init__(self, argv: Sequence[str], *, cwd: Path = INTEROP_DIR) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=node_environ(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.unsolicited: queue.Queue[Any] = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=200)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, queue.Queue[Any]] = {}  # for the reader thread
        self._sent: dict[int, tuple[str, queue.Queue[Any]]] = {}  # for wait()
        self.ready: dict[str, Any] = {}
        self._eof = False
        self._closed = False
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()

    # -- reader threads ---------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                self.unsolicited.put({"event": "noise", "line": line})
                continue
            seq = msg.get("seq") if isinstance(msg, dict) else None
            if isinstance(msg, dict) and "ok" in msg and seq is not None:
                with self._lock:
                    waiter = self._waiting.pop(seq, None)
                if waiter is not None:
                    waiter.put(msg)
                continue
            self.unsolicited.put(msg)
        with self._lock:
            self._eof = True
            waiters = list(self._waiting.values())
            self._waiting.clear()
        for w in waiters:
            w.put(_EOF)
        self.unsolicited.put(_EOF)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip("\n"))

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_tail)

    def _died(self, what: str) -> NodePeerError:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2)
        tail = self.stderr_text()[-2000:]
        return NodePeerError(f"{what}: node exited with {self.proc.returncode}; stderr:\n{tail}")

    # -- commands ---------------------------------------------------------

    def send(self, cmd: str, **args: Any) -> int:
        """Send one command; returns its seq (pass it to :meth:`wait`)."""
        seq = next(self._seq)
        msg = {k: _jsonable(v) for k, v in args.items()}
        msg["seq"] = seq
        msg["cmd"] = cmd
        waiter: queue.Queue[Any] = queue.Queue(maxsize=1)
        with self._lock:
            if self._eof or self._closed:
                raise NodePeerError(f"{cmd}: the node process is gone")
            self._waiting[seq] = waiter
            self._sent[seq] = (cmd, waiter)
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            with self._lock:
                self._waiting.pop(seq, None)
                self._sent.pop(seq, None)
            raise self._died(f"{cmd}: cannot write ({exc})") from exc
        return seq

    def wait(self, seq: int, timeout: float | None = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Wait for the reply to ``seq``; raise :class:`NodePeerError` on ``ok: false``."""
        with self._lock:
            cmd, waiter = self._sent.pop(seq)
        try:
            reply = waiter.get(timeout=timeout)
        except queue.Empty:
            with self._lock:
                self._waiting.pop(seq, None)
            raise NodePeerTimeout(f"{cmd}: no reply within {timeout} s") from None
        if reply is _EOF:
            raise self._died(f"{cmd}: no reply")
        if not reply.get("ok"):
            raise NodePeerError(f"{cmd}: {reply.get('error')}", reply)
        return dict(reply)

    def call(self, cmd: str, *, timeout: float | None = DEFAULT_TIMEOUT, **args: Any) -> dict:
        """Send ``cmd`` with ``args`` (bytes become hex) and return the reply."""
        return self.wait(self.send(cmd, **args), timeout=timeout)

    def next_event(self, timeout: float | None = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The next unsolicited line (``{"event": ...}``)."""
        try:
            msg = self.unsolicited.get(timeout=timeout)
        except queue.Empty:
            raise NodePeerTimeout(f"no event within {timeout} s") from None
        if msg is _EOF:
            self.unsolicited.put(_EOF)  # keep reporting EOF
            raise self._died("waiting for an event")
        return dict(msg)

    # -- lifetime ---------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout: float = 5.0) -> int | None:
        """Close stdin (the process exits on EOF), wait, kill after ``timeout``."""
        if self._closed:
            return self.proc.returncode
        self._closed = True
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)
        self._out.join(timeout=timeout)
        self._err.join(timeout=timeout)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NodePeer(NodeProcess):
    """A running ``node peer.js``: a hyperdht@1.3.0 node driven by JSON lines."""

    @classmethod
    def spawn(
        cls,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        bootstrap: Iterable[str | Address | tuple[str, int] | NodePeer] = (),
        ephemeral: bool = False,
        id: bytes | str | None = None,
        capture: str | os.PathLike[str] | None = None,
        let_crash: bool = False,
        concurrency: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> NodePeer:
        """Spawn ``node peer.js`` without waiting; call :meth:`wait_ready` next.

        (Spawning several peers first and then waiting for each overlaps
        their Node.js start-up.)
        """
        node = node_executable()
        if node is None:
            raise NodePeerError("node not found")
        argv = [node, str(PEER_JS), "--port", str(port), "--host", host]
        for b in bootstrap:
            argv += ["--bootstrap", _bootstrap_arg(b)]
        if ephemeral:
            argv.append("--ephemeral")
        if id is not None:
            argv += ["--id", id.hex() if isinstance(id, bytes) else id]
        if capture is not None:
            argv += ["--capture", os.fspath(capture)]
        if let_crash:
            argv.append("--let-crash")
        if concurrency is not None:
            argv += ["--concurrency", str(concurrency)]
        argv += list(extra_args)
        return cls(argv)

    @classmethod
    def start(cls, *, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> NodePeer:
        """Spawn ``node peer.js`` (see :meth:`spawn` for the options) and wait
        (at most ``timeout``) for its ready line."""
        peer = cls.spawn(**kwargs)
        peer.wait_ready(timeout)
        return peer

    def wait_ready(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Wait for the ready line (kept in :attr:`ready`); close the process on failure."""
        if self.ready:
            return self.ready
        try:
            self.ready = self._wait_ready(timeout)
        except BaseException:
            self.close(timeout=2)
            raise
        return self.ready

    def _wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NodePeerTimeout(
                    f"no ready line within {timeout} s; stderr:\n{self.stderr_text()[-2000:]}"
                )
            msg = self.next_event(timeout=left)
            if msg.get("event") == "ready":
                return msg
            if msg.get("event") == "error":
                raise NodePeerError(f"peer.js failed to start: {msg.get('error')}", msg)

    @property
    def host(self) -> str:
        return str(self.ready["host"])

    @property
    def port(self) -> int:
        return int(self.ready["port"])

    @property
    def id(self) -> str:
        """The node id, hex."""
        return str(self.ready["id"])

    @property
    def address(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __enter__(self) -> NodePeer:
        return self

    def __repr__(self) -> str:
        return f"<NodePeer {self.host}:{self.port} id={self.id[:8]}>"


class NodePeerFactory:
    """``factory(**kw)`` starts one peer; ``factory.many(n, **kw)`` starts n at once.

    Keyword arguments are those of :meth:`NodePeer.spawn`, plus ``timeout``.
    Every peer started is closed at teardown.
    """

    def __init__(self) -> None:
        self.started: list[NodePeer] = []

    def many(self, n: int, *, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> list[NodePeer]:
        peers = []
        for _ in range(n):
            peer = NodePeer.spawn(**kwargs)
            self.started.append(peer)
            peers.append(peer)
        for peer in peers:
            peer.wait_ready(timeout)
        return peers

    def __call__(self, *, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> NodePeer:
        return self.many(1, timeout=timeout, **kwargs)[0]

    def close_all(self) -> None:
        errors = []
        for peer in reversed(self.started):
            try:
                peer.close()
            except Exception as exc:  # pragma: no cover - teardown must reach every peer
                errors.append(exc)
        if errors:
            raise errors[0]


@dataclass
class NodeSwarm:
    """A bootstrap node and the peers that bootstrapped from it."""

    bootstrap: NodePeer
    peers: list[NodePeer]

    @property
    def all(self) -> list[NodePeer]:
        return [self.bootstrap, *self.peers]


def read_capture(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The datagrams of a capture file, one dict per line (see README.md)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class CaptureRun:
    """What ``capture.js`` did: its step lines, its done line, its datagrams."""

    returncode: int
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: dict[str, Any] = field(default_factory=dict)
    datagrams: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""

    def step_datagrams(self, step: str) -> list[dict[str, Any]]:
        return [d for d in self.datagrams if d.get("step") == step]


def run_capture(
    target: Address | tuple[str, int] | NodePeer,
    out: str | os.PathLike[str],
    *,
    steps: Sequence[str] | None = None,
    command: str | None = None,
    value: bytes | None = None,
    key: bytes | None = None,
    via: Address | tuple[str, int] | NodePeer | None = None,
    announce_port: int | None = None,
    local_address: Address | tuple[str, int] | None = None,
    id: bytes | None = None,
    ephemeral: bool = False,
    timeout: float = 60.0,
) -> CaptureRun:
    """Run ``node capture.js`` (client mode) against ``target``; see capture.js."""
    node = node_executable()
    if node is None:
        raise NodePeerError("node not found")
    argv = [node, str(CAPTURE_JS), "--target", _bootstrap_arg(target), "--out", os.fspath(out)]
    if steps is not None:
        argv += ["--steps", ",".join(steps)]
    if command is not None:
        argv += ["--command", command]
    if value is not None:
        argv += ["--value", value.hex()]
    if key is not None:
        argv += ["--key", key.hex()]
    if via is not None:
        argv += ["--via", _bootstrap_arg(via)]
    if announce_port is not None:
        argv += ["--announce-port", str(announce_port)]
    if local_address is not None:
        argv += ["--local-address", _bootstrap_arg(local_address)]
    if id is not None:
        argv += ["--id", id.hex()]
    if ephemeral:
        argv.append("--ephemeral")
    proc = subprocess.run(
        argv,
        cwd=INTEROP_DIR,
        env=node_environ(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    run = CaptureRun(returncode=proc.returncode, stderr=proc.stderr)
    for line in proc.stdout.splitlines():
        if not line.strip():
            continue
        msg = json.loads(line)
        if msg.get("event") == "step":
            run.steps[msg["step"]] = msg
        elif msg.get("event") == "done":
            run.done = msg
        elif msg.get("event") == "error":
            raise NodePeerError(f"capture.js: {msg.get('error')}", msg)
    if os.path.exists(out):
        run.datagrams = read_capture(out)
    return run


def start_proxy(
    upstream: Address | tuple[str, int] | NodePeer,
    out: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = DEFAULT_TIMEOUT,
) -> NodeProcess:
    """Start ``capture.js --proxy``; its ready line is in ``proxy.ready``."""
    node = node_executable()
    if node is None:
        raise NodePeerError("node not found")
    argv = [
        node,
        str(CAPTURE_JS),
        "--proxy",
        "--upstream",
        _bootstrap_arg(upstream),
        "--out",
        os.fspath(out),
        "--host",
        host,
        "--port",
        str(port),
    ]
    proc = NodeProcess(argv)
    try:
        msg = proc.next_event(timeout=timeout)
        if msg.get("event") != "ready":
            raise NodePeerError(f"capture.js --proxy: {msg}", msg)
        proc.ready = msg
    except BaseException:
        proc.close(timeout=2)
        raise
    return proc


def decode_datagrams(datagrams: Iterable[bytes], *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Decode each datagram the way the reference does (``capture.js
    --decode``: udp-request header, dht-rpc's ``messages.js``, hyperdht's
    ``schema.proto``): one dict per datagram, as in the capture format, plus
    ``peersResponse`` for responses with a value."""
    node = node_executable()
    if node is None:
        raise NodePeerError("node not found")
    data = [bytes(d) for d in datagrams]
    proc = subprocess.run(
        [node, str(CAPTURE_JS), "--decode"],
        cwd=INTEROP_DIR,
        env=node_environ(),
        input="".join(d.hex() + "\n" for d in data),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise NodePeerError(f"capture.js --decode failed: {proc.stderr[-2000:]}")
    out = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    if len(out) != len(data):
        raise NodePeerError(f"capture.js --decode: {len(data)} datagrams in, {len(out)} out")
    return out


class RawUdp:
    """A bare UDP socket on 127.0.0.1 (no DHT behind it) for crafted datagrams.

    :meth:`request` frames a payload as a udp-request request (random tid
    unless given) and waits, with a deadline, for the response with that
    tid from any address; :meth:`wait_for` waits for a request or response
    with a given tid. Datagrams that arrive while waiting for another are
    kept in :attr:`other`. Close it (or use ``with``).
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.other: list[tuple[bytes, tuple[str, int]]] = []

    @property
    def addr(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()
        return (str(host), int(port))

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    def recv(self, timeout: float = 5.0) -> tuple[bytes, tuple[str, int]]:
        """The next datagram (from :attr:`other` first); TimeoutError after ``timeout``."""
        if self.other:
            return self.other.pop(0)
        self.sock.settimeout(timeout)
        try:
            data, src = self.sock.recvfrom(65536)
        except TimeoutError:
            raise TimeoutError(f"no datagram within {timeout} s") from None
        return data, (str(src[0]), int(src[1]))

    def request(
        self,
        payload: bytes,
        addr: tuple[str, int],
        *,
        tid: int | None = None,
        timeout: float = 5.0,
    ) -> tuple[bytes, tuple[str, int]]:
        """Send ``payload`` as a request; return (response datagram, source)."""
        if tid is None:
            tid = secrets.randbelow(0x7FFF)
        self.send((0x8000 | tid).to_bytes(2, "big") + payload, addr)
        return self.wait_response(tid, timeout=timeout)

    def wait_response(self, tid: int, *, timeout: float = 5.0) -> tuple[bytes, tuple[str, int]]:
        """Wait for the response datagram with ``tid`` (any source)."""
        return self.wait_for(tid, request=False, timeout=timeout)

    def wait_for(
        self, tid: int, *, request: bool, timeout: float = 5.0
    ) -> tuple[bytes, tuple[str, int]]:
        """Wait for a request (``request=True``) or response with ``tid``."""
        header = (0x8000 if request else 0) | tid
        for i, (data, src) in enumerate(self.other):
            if len(data) >= 2 and int.from_bytes(data[:2], "big") == header:
                del self.other[i]
                return data, src
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                kind = "request" if request else "response"
                raise TimeoutError(f"no {kind} with tid {tid} within {timeout} s")
            self.sock.settimeout(left)
            try:
                data, src = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            if len(data) >= 2 and int.from_bytes(data[:2], "big") == header:
                return data, (str(src[0]), int(src[1]))
            self.other.append((data, (str(src[0]), int(src[1]))))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawUdp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
