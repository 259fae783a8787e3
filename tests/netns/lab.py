"""Real Linux NATs built from network namespaces, for hole-punching tests.

Two builders: :class:`RoutedLab` (two sites, each behind a NAT of a chosen
profile, joined by a chain of core routers so that an IP TTL expires
somewhere real; see its docstring) and :class:`NatLab`, the first lab: one
bridged segment with one or two NAT routers on it.

Topology of one :class:`NatLab` (every namespace name starts with
``hdl<pid>-<random>-`` so that parallel runs cannot collide)::

                      wan namespace: bridge br0, 198.18.0.0/24
          +-------------------+-------------------+-------------------+
          |                   |                   |                   |
    P  198.18.0.10      B  198.18.0.20      R  198.18.0.1       R2 198.18.0.2   (R2 optional)
    (lab.public)        (lab.public2)       wan0 | MASQUERADE  wan0 | MASQUERADE
                                            lan0 198.19.1.1    lan0 198.19.2.1
                                                 |                  |
                                            A  198.19.1.10     B2 198.19.2.10
                                            (lab.nat_host)     (lab.nat_host2)

Each router forwards, masquerades everything leaving ``wan0`` and lets in
from ``wan0`` only what conntrack says is ESTABLISHED or RELATED.  Public
hosts only know the connected 198.18.0.0/24, so LAN addresses are not routable
from the wan, as on the Internet.  Interfaces are created directly inside
their namespaces (``ip -n NS link add ... peer ... netns OTHER``) so nothing
ever appears in the host's own namespace, and their fixed short names
(``eth0``, ``wan0``, ``lan0``, ``br0``) cannot clash between labs.  IPv6 is
disabled in every lab namespace: the only addresses are 198.18.0.0/15 and
loopback.

Only :mod:`subprocess` and the ``ip``, ``iptables`` (nft or legacy backend,
whichever works inside a namespace) and, optionally, ``conntrack`` binaries
are used.  Needs root.  Debian packages: ``iproute2 iptables conntrack``.

How this NAT behaves (seen by test_lab.py on Linux 6.18, iptables-nft 1.8.9):

* MASQUERADE keeps the LAN source port when it is free, so every peer sees
  A's socket at the same public port (endpoint-independent mapping), while
  the filter only admits the exact peer address+port A sent to
  (port-restricted).  A plain hole punch through the rendezvous works.
* If a peer's datagram reaches R:port *before* A sends to that peer, R keeps
  an UNREPLIED entry ``peer -> R:port``; A's later datagram to that peer would
  need the same tuple, so conntrack remaps A's source to a random other port
  (e.g. 39745 -> 4793).  The peer must answer the address the datagram came
  from; the old port stays blocked for that peer.  New destinations then see
  the remapped port too; existing flows keep the old one.  With two such
  NATs the naive double punch fails this way (the far NAT remaps its answer).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "NS_PREFIX",
    "NAT_PROFILES",
    "LabBase",
    "LabProcess",
    "NatLab",
    "RoutedLab",
    "UdpAgent",
    "ct_flow",
    "iptables_command",
    "lab_available",
    "leftover_namespaces",
    "nat_rules",
    "own_prefix",
    "reap_stale_namespaces",
    "wait_for",
]

#: Every namespace a lab creates starts with this.
NS_PREFIX = "hdl"

_AGENT = Path(__file__).with_name("udp_agent.py")
_CMD_TIMEOUT = 15.0
_NS_RE = re.compile(rf"^{NS_PREFIX}(\d+)-[0-9a-f]+-\w+$")


# --------------------------------------------------------------------------- helpers


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = _CMD_TIMEOUT) -> str:
    """Run a short command to completion and return its stdout."""
    res = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and res.returncode != 0:
        raise RuntimeError(
            f"command failed ({res.returncode}): {' '.join(argv)}\n{res.stderr.strip()}"
        )
    return res.stdout


def own_prefix(pid: int | None = None) -> str:
    """Namespace-name prefix of every lab created by process ``pid`` (default: this one)."""
    return f"{NS_PREFIX}{os.getpid() if pid is None else pid}-"


def _list_namespaces() -> list[str]:
    if shutil.which("ip") is None:
        return []
    out = _run(["ip", "netns", "list"], check=False)
    # Lines look like "name" or "name (id: 3)".
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def leftover_namespaces(prefix: str = NS_PREFIX) -> list[str]:
    """Namespaces whose name starts with ``prefix`` that still exist.

    With the default prefix this covers every lab of every process; pass
    :func:`own_prefix` to look only at this process's labs (other pytest runs
    may legitimately have live labs at the same time).
    """
    return sorted(n for n in _list_namespaces() if n.startswith(prefix))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_namespace(name: str) -> None:
    """Kill whatever still runs in lab namespace ``name``, then delete it."""
    out = _run(["ip", "netns", "pids", name], check=False)
    for tok in out.split():
        # Only processes inside this lab's own namespace: lab-started ones.
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(tok), signal.SIGKILL)
    _run(["ip", "netns", "del", name], check=False)


def reap_stale_namespaces() -> list[str]:
    """Delete lab namespaces whose creating process no longer exists.

    Left by a run that was SIGKILLed; safe while other runs are active since
    only namespaces of dead pids are touched.  Returns the names removed.
    """
    removed = []
    for name in leftover_namespaces():
        m = _NS_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            _delete_namespace(name)
            removed.append(name)
    return removed


@functools.cache
def iptables_command() -> str | None:
    """The iptables binary that works inside a fresh namespace, or None.

    ``$HYPERDHT_NETNS_IPTABLES`` forces one; otherwise ``iptables`` (Debian's
    alternative, nft by default) is tried first, then ``iptables-nft`` and
    ``iptables-legacy``.
    """
    forced = os.environ.get("HYPERDHT_NETNS_IPTABLES")
    candidates = [forced] if forced else ["iptables", "iptables-nft", "iptables-legacy"]
    candidates = [c for c in candidates if shutil.which(c)]
    if not candidates or os.geteuid() != 0:
        return None
    probe = f"{own_prefix()}{secrets.token_hex(3)}-probe"
    try:
        _run(["ip", "netns", "add", probe])
        for cmd in candidates:
            try:
                _run(["ip", "netns", "exec", probe, cmd, "-t", "nat", "-A", "POSTROUTING",
                      "-o", "lo", "-j", "MASQUERADE"])  # fmt: skip
                _run(["ip", "netns", "exec", probe, cmd, "-A", "FORWARD", "-i", "lo",
                      "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
                      "-j", "ACCEPT"])  # fmt: skip
            except (RuntimeError, OSError, subprocess.SubprocessError):
                continue
            return cmd
        return None
    except (RuntimeError, OSError, subprocess.SubprocessError):
        return None
    finally:
        _delete_namespace(probe)


@functools.cache
def lab_available() -> tuple[bool, str]:
    """Whether a :class:`NatLab` can be built here, and why (not)."""
    if sys.platform != "linux":
        return False, f"network namespaces need Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return False, "the NAT lab needs root (network namespaces, iptables)"
    if shutil.which("ip") is None:
        return False, "`ip` (iproute2) is not installed"
    probe = f"{own_prefix()}{secrets.token_hex(3)}-probe"
    try:
        _run(["ip", "netns", "add", probe])
        _run(["ip", "-n", probe, "link", "set", "lo", "up"])
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return False, f"`ip netns` is not usable: {exc}"
    finally:
        _delete_namespace(probe)
    if not any(shutil.which(c) for c in ("iptables", "iptables-nft", "iptables-legacy")):
        return False, "iptables is not installed (apt-get install -y iptables)"
    cmd = iptables_command()
    if cmd is None:
        return False, "no iptables backend (nft or legacy) can add NAT/conntrack rules in a netns"
    version = _run([cmd, "--version"], check=False).strip()
    return True, f"{cmd}: {version}"


def ct_flow(
    src: str,
    dst: str,
    sport: int | None = None,
    dport: int | None = None,
    reply: tuple[str, str, int | None, int | None] | None = None,
) -> str:
    """Regex for a ``conntrack -L`` line: original tuple, optionally the reply tuple.

    Tolerates the ``[UNREPLIED]``/``[ASSURED]`` flags between and after tuples.
    """

    def tup(s: str, d: str, sp: int | None, dp: int | None) -> str:
        out = rf"src={re.escape(s)} dst={re.escape(d)}"
        out += rf" sport={sp}" if sp is not None else r" sport=\d+"
        out += rf" dport={dp}\b" if dp is not None else r" dport=\d+"
        return out

    rx = tup(src, dst, sport, dport)
    if reply is not None:
        rx += r"(?: \[\w+\])* " + tup(*reply)
    return rx


def wait_for(predicate: Any, timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate()`` every 50 ms until it returns something truthy (returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met within {timeout}s")
        time.sleep(0.05)


# --------------------------------------------------------------------------- processes


class LabProcess(subprocess.Popen):  # type: ignore[type-arg]
    """A Popen whose piped stdout is read by a thread into a line queue.

    ``expect(pattern)`` waits (bounded) for the first unread line matching a
    regex and consumes only that line, so unrelated lines stay available.
    """

    def __init__(self, argv: Sequence[str], **kwargs: Any) -> None:
        kwargs.setdefault("stdin", subprocess.PIPE)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        if kwargs.get("text") or kwargs.get("universal_newlines"):
            kwargs.setdefault("bufsize", 1)
        kwargs.setdefault("start_new_session", True)  # own process group: killed as one
        super().__init__(list(argv), **kwargs)
        self.lines: list[str] = []  # every stdout line, for reports
        self._pending: list[str] = []
        self._stderr: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._threads = []
        if self.stdout is not None:
            self._threads.append(self._start_reader(self.stdout, self._on_stdout, True))
        if self.stderr is not None:
            self._threads.append(self._start_reader(self.stderr, self._stderr.append, False))

    def _start_reader(self, stream: Any, sink: Any, is_stdout: bool) -> threading.Thread:
        def pump() -> None:
            try:
                for raw in stream:
                    sink(raw.rstrip("\r\n") if isinstance(raw, str) else raw)
            except (OSError, ValueError):
                pass
            finally:
                if is_stdout:
                    with self._cond:
                        self._eof = True
                        self._cond.notify_all()

        t = threading.Thread(target=pump, name=f"labproc-{self.pid}", daemon=True)
        t.start()
        return t

    def _on_stdout(self, line: str) -> None:
        with self._cond:
            self.lines.append(line)
            self._pending.append(line)
            self._cond.notify_all()

    @property
    def stderr_text(self) -> str:
        return "\n".join(self._stderr)

    def expect(self, pattern: str | re.Pattern[str], timeout: float = 5.0) -> re.Match[str]:
        """Consume and return the first unread stdout line matching ``pattern``.

        Raises TimeoutError after ``timeout`` seconds, RuntimeError when the
        process closed its stdout without printing such a line.
        """
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, line in enumerate(self._pending):
                    m = rx.search(line)
                    if m:
                        del self._pending[i]
                        return m
                if self._eof:
                    raise RuntimeError(
                        f"process {self.args!r} ended (rc={self.poll()}) before printing "
                        f"/{rx.pattern}/; stderr:\n{self.stderr_text}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no line matching /{rx.pattern}/ within {timeout}s from {self.args!r}"
                    )
                self._cond.wait(left)

    def send_line(self, line: str) -> None:
        assert self.stdin is not None, "started without stdin=PIPE"
        self.stdin.write(line + "\n")
        self.stdin.flush()

    def kill_group(self) -> None:
        """SIGKILL this process's group (it is a session leader) and reap it."""
        if self.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(timeout=5)
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        for t in self._threads:
            t.join(timeout=1)


class UdpAgent:
    """Client for ``udp_agent.py``: one UDP socket inside a namespace.

    The agent binds ``0.0.0.0:port``, reports every datagram as
    ``RECV ip port payload`` (with ``icmp``, also every ICMP error about one
    it sent as ``ICMP offender type code dst-ip dst-port payload``), and sends
    on request
    (optionally with a chosen IP TTL); with ``echo=True`` it
    answers each datagram with ``ECHO <seen-ip> <seen-port> <payload>``
    (a tiny STUN: the sender learns its public address).
    """

    RECV = re.compile(r"^RECV (\S+) (\d+) (.*)$")

    def __init__(self, proc: LabProcess, ns: str, ip: str) -> None:
        self.proc = proc
        self.ns = ns
        self.ip = ip
        m = proc.expect(r"^READY (\d+)$", timeout=10)
        self.port = int(m.group(1))

    @property
    def addr(self) -> tuple[str, int]:
        return self.ip, self.port

    ICMP = re.compile(r"^ICMP (\S+) (\d+) (\d+) (\S+) (\d+) (.*)$")

    def send(self, ip: str, port: int, payload: str, ttl: int | None = None) -> None:
        """Send one datagram (with IP TTL ``ttl``, else the default 64); returns
        once the agent's sendto() has returned."""
        if not payload or any(c.isspace() for c in payload):
            raise ValueError("payload must be one non-empty word")
        if ttl is None:
            self.proc.send_line(f"send {ip} {port} {payload}")
        else:
            self.proc.send_line(f"sendttl {int(ttl)} {ip} {port} {payload}")
        self.proc.expect(rf"^SENT {re.escape(ip)} {port} {re.escape(payload)}$", timeout=5)

    def icmp(self, payload: str, timeout: float = 5.0) -> tuple[str, int, int]:
        """Wait for the ICMP error about our datagram ``payload``:
        ``(offender address, ICMP type, ICMP code)`` (11, 0: TTL exceeded)."""
        rx = re.compile(rf"^ICMP (\S+) (\d+) (\d+) (\S+) (\d+) ({re.escape(payload)})$")
        m = self.proc.expect(rx, timeout=timeout)
        return m.group(1), int(m.group(2)), int(m.group(3))

    def recv(self, timeout: float = 5.0, payload: str | None = None) -> tuple[str, int, str]:
        """Next datagram (or next one whose payload starts with ``payload``)."""
        rx = self.RECV
        if payload is not None:
            rx = re.compile(rf"^RECV (\S+) (\d+) ({re.escape(payload)}.*)$")
        m = self.proc.expect(rx, timeout=timeout)
        return m.group(1), int(m.group(2)), m.group(3)

    def assert_silent(self, timeout: float = 1.5) -> None:
        """Assert that no datagram arrives within ``timeout`` seconds."""
        try:
            got = self.recv(timeout=timeout)
        except TimeoutError:
            return
        raise AssertionError(f"{self.ns} unexpectedly received {got}")


# --------------------------------------------------------------------------- the lab


class _State:
    """What teardown needs; kept apart from the lab so a finaliser can own it."""

    def __init__(self) -> None:
        self.namespaces: list[str] = []
        self.procs: list[LabProcess] = []
        self.lock = threading.Lock()

    def close(self) -> None:
        # One item at a time, so a close() interrupted (e.g. by a signal) can be
        # resumed by the next call, the finaliser or atexit.
        while True:
            with self.lock:
                if not self.procs:
                    break
                proc = self.procs.pop()
            with contextlib.suppress(Exception):
                proc.kill_group()
        while True:
            with self.lock:
                if not self.namespaces:
                    break
                name = self.namespaces.pop()
            with contextlib.suppress(Exception):
                _delete_namespace(name)


class LabBase:
    """What every lab shares: lifecycle, namespace plumbing, running things,
    inspecting a NAT router.  A subclass implements ``_build``, ``ip_of`` and
    ``_default_router``."""

    WAN_IF = "wan0"
    LAN_IF = "lan0"

    def __init__(self) -> None:
        self.id = f"{own_prefix()}{secrets.token_hex(3)}"
        self.iptables = iptables_command() or "iptables"
        self.build_seconds: float | None = None
        self._state = _State()
        # Runs on garbage collection or at interpreter exit if close() was never called.
        self._finalizer = weakref.finalize(self, self._state.close)
        self._started = False

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Any:
        """Build the lab (once); on any failure tear down what was built, then raise."""
        if self._started:
            return self
        self._started = True
        t0 = time.monotonic()
        try:
            ok, reason = lab_available()
            if not ok:
                raise RuntimeError(f"NAT lab unavailable: {reason}")
            self._build()
        except BaseException:
            self.close()
            raise
        self.build_seconds = time.monotonic() - t0
        return self

    def close(self) -> None:
        """Kill every process started here and delete every namespace. Idempotent."""
        self._state.close()

    @property
    def namespaces(self) -> list[str]:
        """Namespaces this lab created and has not yet deleted."""
        return list(self._state.namespaces)

    def _build(self) -> None:
        raise NotImplementedError

    def ip_of(self, ns: str) -> str:
        """The address of the host in namespace ``ns``."""
        raise NotImplementedError

    def _default_router(self) -> str:
        raise NotImplementedError

    # -- building blocks --------------------------------------------------------------

    def _add_ns(self, name: str, forward: bool) -> None:
        _run(["ip", "netns", "add", name])
        with self._state.lock:
            self._state.namespaces.append(name)
        sysctls = [
            # No IPv6 (no link-local fe80:: either): only 198.18.0.0/15 + loopback.
            "/proc/sys/net/ipv6/conf/all/disable_ipv6=1",
            "/proc/sys/net/ipv6/conf/default/disable_ipv6=1",
            f"/proc/sys/net/ipv4/ip_forward={1 if forward else 0}",
            # Every TTL expiry answers with an ICMP time-exceeded, however fast the
            # test sends (Linux's default limits them to about one a second).
            "/proc/sys/net/ipv4/icmp_ratelimit=0",
        ]
        script = "; ".join(
            f"if [ -e {k} ]; then echo {v} > {k}; fi" for k, v in (s.split("=") for s in sysctls)
        )
        script += "; ip link set lo up"
        _run(["ip", "netns", "exec", name, "sh", "-c", script])

    def _veth(self, ns1: str, if1: str, ns2: str, if2: str) -> None:
        _run(["ip", "-n", ns1, "link", "add", if1, "type", "veth", "peer", "name", if2,
              "netns", ns2])  # fmt: skip

    def _addr(self, ns: str, ifname: str, cidr: str) -> None:
        _run(["ip", "-n", ns, "addr", "add", cidr, "dev", ifname])
        _run(["ip", "-n", ns, "link", "set", ifname, "up"])

    # -- running things ---------------------------------------------------------------

    def _check_ns(self, ns: str) -> None:
        if ns not in self._state.namespaces:
            raise ValueError(f"{ns!r} is not a live namespace of this lab")

    def run(self, ns: str, argv: Sequence[str], **popen_kwargs: Any) -> LabProcess:
        """Start ``argv`` inside namespace ``ns``; killed (with its group) at close().

        Defaults: stdin/stdout/stderr piped, text mode, own session.  Read
        stdout with ``proc.expect(regex, timeout)``.
        """
        self._check_ns(ns)
        proc = LabProcess(["ip", "netns", "exec", ns, *argv], **popen_kwargs)
        with self._state.lock:
            self._state.procs.append(proc)
        return proc

    def python(self, ns: str, code_or_args: str | Sequence[str], **popen_kwargs: Any) -> LabProcess:
        """Run ``sys.executable -u`` in ``ns``: a str is ``-c`` code, a sequence is argv
        (e.g. ``["-m", "hyperdht", ...]`` or ``[script, arg...]``)."""
        if isinstance(code_or_args, str):
            argv = [sys.executable, "-u", "-c", code_or_args]
        else:
            argv = [sys.executable, "-u", *code_or_args]
        env = dict(popen_kwargs.pop("env", None) or os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return self.run(ns, argv, env=env, **popen_kwargs)

    def udp_agent(self, ns: str, port: int = 0, echo: bool = False, icmp: bool = False) -> UdpAgent:
        """Start a UDP agent (see :class:`UdpAgent`) in ``ns`` and wait for READY;
        ``icmp=True`` makes it report ICMP errors (:meth:`UdpAgent.icmp`)."""
        args = [str(_AGENT), "--port", str(port)]
        if echo:
            args.append("--echo")
        if icmp:
            args.append("--icmp")
        return UdpAgent(self.python(ns, args), ns, self.ip_of(ns))

    def exec(self, ns: str, argv: Sequence[str], check: bool = True) -> str:
        """Run a short command inside ``ns`` to completion; return its stdout."""
        self._check_ns(ns)
        return _run(["ip", "netns", "exec", ns, *argv], check=check)

    # -- inspecting a NAT ---------------------------------------------------------------

    def conntrack(self, router: str | None = None) -> str:
        """The router's conntrack table as text (``conntrack -L``, else /proc)."""
        ns = router or self._default_router()
        if shutil.which("conntrack"):
            return self.exec(ns, ["conntrack", "-L"], check=False)
        return self.exec(ns, ["cat", "/proc/net/nf_conntrack"], check=False)

    def iptables_rules(self, router: str | None = None) -> str:
        """``iptables -S`` of filter and nat tables with packet counters."""
        ns = router or self._default_router()
        out = [self.exec(ns, [self.iptables, "-w", "-t", t, "-S", "-v"]) for t in ("filter", "nat")]
        return "".join(out)

    def _drop_count(self, ns: str, chain: str) -> int:
        out = self.exec(ns, [self.iptables, "-w", "-L", chain, "-v", "-x", "-n"])
        for line in out.splitlines():
            f = line.split()
            if len(f) >= 6 and f[2] == "DROP" and f[5] == self.WAN_IF:
                return int(f[0])
        raise RuntimeError(f"no {chain} DROP rule for {self.WAN_IF} in:\n{out}")

    def forward_drops(self, router: str | None = None) -> int:
        """Packets the router's ``FORWARD -i wan0 -j DROP`` rule has dropped."""
        return self._drop_count(router or self._default_router(), "FORWARD")

    def input_drops(self, router: str | None = None) -> int:
        """Packets an ``openwrt`` router's ``INPUT -i wan0 ... NEW -j DROP`` has dropped."""
        return self._drop_count(router or self._default_router(), "INPUT")

    def wait_conntrack(self, pattern: str, router: str | None = None, timeout: float = 5.0) -> str:
        """Poll the router's conntrack table until ``pattern`` (regex) matches a line."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            table = self.conntrack(router)
            for line in table.splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no conntrack line /{pattern}/ within {timeout}s:\n{table}")
            time.sleep(0.05)


class NatLab(LabBase):
    """Build (on ``with``/``start()``) and tear down (on exit/``close()``) a one-segment
    NAT lab (the drawing at the top of this module).

    Attributes hold namespace names (``public``, ``public2``, ``nat_host``,
    ``router``, ``wan``; with ``second_nat=True`` also ``router2`` and
    ``nat_host2``, else None) and addresses (``public_ip``, ``public2_ip``,
    ``nat_public_ip``, ``nat_host_ip``, ``router_lan_ip``, ``nat2_public_ip``,
    ``nat_host2_ip``, ``router2_lan_ip``).  Addresses are the same in every
    lab; namespaces isolate them.  For a routed lab see :class:`RoutedLab`.
    """

    WAN_PREFIX = 24
    LAN_PREFIX = 24
    public_ip = "198.18.0.10"
    public2_ip = "198.18.0.20"
    nat_public_ip = "198.18.0.1"
    nat2_public_ip = "198.18.0.2"
    router_lan_ip = "198.19.1.1"
    nat_host_ip = "198.19.1.10"
    router2_lan_ip = "198.19.2.1"
    nat_host2_ip = "198.19.2.10"

    def __init__(self, second_nat: bool = False) -> None:
        super().__init__()
        self.second_nat = second_nat
        self.wan = f"{self.id}-wan"
        self.public = f"{self.id}-p"
        self.public2 = f"{self.id}-b"
        self.router = f"{self.id}-r"
        self.nat_host = f"{self.id}-a"
        self.router2: str | None = f"{self.id}-r2" if second_nat else None
        self.nat_host2: str | None = f"{self.id}-b2" if second_nat else None

    def start(self) -> NatLab:
        """Build the lab (once); on failure tear it down and raise."""
        super().start()
        return self

    def __enter__(self) -> NatLab:
        return self.start()

    @property
    def routers(self) -> list[str]:
        """The NAT routers' namespaces (R, and R2 if any)."""
        return [r for r in (self.router, self.router2) if r]

    def _default_router(self) -> str:
        return self.router

    def ip_of(self, ns: str) -> str:
        """The address of the host in namespace ``ns`` (a router's: its wan one)."""
        table = {
            self.public: self.public_ip,
            self.public2: self.public2_ip,
            self.router: self.nat_public_ip,
            self.nat_host: self.nat_host_ip,
        }
        if self.second_nat:
            table[self.router2] = self.nat2_public_ip  # type: ignore[index]
            table[self.nat_host2] = self.nat_host2_ip  # type: ignore[index]
        return table[ns]

    def public_ip_of(self, ns: str) -> str:
        """The address the wan sees for traffic from ``ns`` (its NAT's, if behind one)."""
        if ns == self.nat_host:
            return self.nat_public_ip
        if self.second_nat and ns == self.nat_host2:
            return self.nat2_public_ip
        return self.ip_of(ns)

    def _build(self) -> None:
        for ns in [self.wan, self.public, self.public2, *self.routers]:
            self._add_ns(ns, forward=ns in self.routers)
        for host in [self.nat_host, self.nat_host2]:
            if host:
                self._add_ns(host, forward=False)
        # The wan: one bridge, one port per attached host.
        _run(["ip", "-n", self.wan, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.wan, "link", "set", "br0", "up"])
        attached = [
            (self.public, "eth0", self.public_ip, "vp"),
            (self.public2, "eth0", self.public2_ip, "vb"),
            (self.router, self.WAN_IF, self.nat_public_ip, "vr1"),
        ]
        if self.router2:
            attached.append((self.router2, self.WAN_IF, self.nat2_public_ip, "vr2"))
        for ns, ifname, ip, port in attached:
            self._veth(self.wan, port, ns, ifname)
            _run(["ip", "-n", self.wan, "link", "set", port, "master", "br0"])
            _run(["ip", "-n", self.wan, "link", "set", port, "up"])
            self._addr(ns, ifname, f"{ip}/{self.WAN_PREFIX}")
        self._build_nat(self.router, self.router_lan_ip, self.nat_host, self.nat_host_ip)
        if self.router2 and self.nat_host2:
            self._build_nat(self.router2, self.router2_lan_ip, self.nat_host2, self.nat_host2_ip)

    def _build_nat(self, router: str, lan_ip: str, host: str, host_ip: str) -> None:
        self._veth(router, self.LAN_IF, host, "eth0")
        self._addr(router, self.LAN_IF, f"{lan_ip}/{self.LAN_PREFIX}")
        self._addr(host, "eth0", f"{host_ip}/{self.LAN_PREFIX}")
        _run(["ip", "-n", host, "route", "add", "default", "via", lan_ip])
        for rule in nat_rules("linux", self.WAN_IF):
            _run(["ip", "netns", "exec", router, self.iptables, *rule])


#: NAT router profiles of :class:`RoutedLab` (``public``: no NAT router at all).
NAT_PROFILES = ("linux", "openwrt", "random", "public")


def nat_rules(profile: str, wan_if: str) -> list[list[str]]:
    """The iptables arguments that make a router a NAT of ``profile``.

    * ``linux``: MASQUERADE out of ``wan_if``; from ``wan_if`` FORWARD only
      ESTABLISHED,RELATED; the router's own INPUT accepts everything (the
      default policy), so an unsolicited datagram to the router is confirmed
      as an UNREPLIED conntrack entry;
    * ``openwrt``: as linux, and NEW packets from ``wan_if`` to the router
      itself are dropped (OpenWrt's wan zone ``input REJECT``), so they
      never become conntrack entries;
    * ``random``: as linux with ``MASQUERADE --random-fully``: every new
      flow (destination) gets a random public port (a "hard" NAT).
    """
    if profile not in ("linux", "openwrt", "random"):
        raise ValueError(f"no NAT rules for profile {profile!r}")
    masq = ["-t", "nat", "-A", "POSTROUTING", "-o", wan_if, "-j", "MASQUERADE"]
    if profile == "random":
        masq.append("--random-fully")
    rules = [
        masq,
        ["-A", "FORWARD", "-i", wan_if, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
         "-j", "ACCEPT"],
        ["-A", "FORWARD", "-i", wan_if, "-j", "DROP"],
    ]  # fmt: skip
    if profile == "openwrt":
        rules.append(
            ["-A", "INPUT", "-i", wan_if, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]
        )
    return rules


class RoutedLab(LabBase):
    """Two sites joined by a chain of core routers, like two homes on the Internet.

    Chain positions, west to east (``chain`` = N core routers, N >= 1)::

        A --lan-- RA ==link0== C1 ==link1== ... CN ==linkN== RB --lan-- B
                                   |
                                  Cm --pub-- P   (the bootstrap host, m = bootstrap_at)

    * ``link k`` (0..N) joins positions k and k+1 as 198.18.(k+1).0/24, the
      west end ``.1``, the east end ``.2``; P's segment is 198.18.0.0/24 (Cm
      ``.1``, P ``.10``).  The sites' LANs are 198.19.1.0/24 (A ``.10``, RA
      ``.1``) and 198.19.2.0/24 (B ``.10``, RB ``.1``); no core router has a
      route to them, as private space is not routed on the Internet.
    * Core routers are plain Linux routers (static routes, no filter): they
      decrement the TTL and answer an expired datagram with ICMP
      time-exceeded from the address facing its sender.
    * ``nat_a`` / ``nat_b`` pick each side's profile (:data:`NAT_PROFILES`,
      see :func:`nat_rules`).  ``public`` puts the host itself at the end of
      the chain with the router's public address (no RA/RB namespace).

    Attributes: namespaces ``host_a``, ``host_b``, ``router_a``, ``router_b``
    (None for ``public``), ``core`` (C1..CN), ``bootstrap``; addresses
    ``host_a_ip``, ``host_b_ip``, ``public_a_ip``, ``public_b_ip`` (what the
    Internet sees), ``bootstrap_ip``.
    """

    bootstrap_ip = "198.18.0.10"
    lan_a_router_ip = "198.19.1.1"
    lan_b_router_ip = "198.19.2.1"
    MAX_CHAIN = 200

    def __init__(
        self,
        chain: int = 4,
        nat_a: str = "linux",
        nat_b: str = "linux",
        bootstrap_at: int | None = None,
    ) -> None:
        if not isinstance(chain, int) or not 1 <= chain <= self.MAX_CHAIN:
            raise ValueError(f"chain must be 1..{self.MAX_CHAIN} core routers, got {chain!r}")
        for name, profile in (("nat_a", nat_a), ("nat_b", nat_b)):
            if profile not in NAT_PROFILES:
                raise ValueError(f"{name} must be one of {NAT_PROFILES}, got {profile!r}")
        at = (chain + 1) // 2 if bootstrap_at is None else bootstrap_at
        if not 1 <= at <= chain:
            raise ValueError(f"bootstrap_at must be 1..{chain}, got {bootstrap_at!r}")
        super().__init__()
        self.chain = chain
        self.nat_a = nat_a
        self.nat_b = nat_b
        self.bootstrap_at = at
        self.host_a = f"{self.id}-a"
        self.host_b = f"{self.id}-b"
        self.router_a: str | None = None if nat_a == "public" else f"{self.id}-ra"
        self.router_b: str | None = None if nat_b == "public" else f"{self.id}-rb"
        self.core = [f"{self.id}-c{j}" for j in range(1, chain + 1)]
        self.bootstrap = f"{self.id}-p"
        self.public_a_ip = self._link_ip(0, "west")
        self.public_b_ip = self._link_ip(chain, "east")
        self.host_a_ip = "198.19.1.10" if self.router_a else self.public_a_ip
        self.host_b_ip = "198.19.2.10" if self.router_b else self.public_b_ip

    def start(self) -> RoutedLab:
        """Build the lab (once, in a second or two); on failure tear it down and raise."""
        super().start()
        return self

    def __enter__(self) -> RoutedLab:
        return self.start()

    @staticmethod
    def _link_net(k: int) -> str:
        return f"198.18.{k + 1}.0/24"

    @staticmethod
    def _link_ip(k: int, end: str) -> str:
        return f"198.18.{k + 1}.{1 if end == 'west' else 2}"

    @property
    def routers(self) -> list[str]:
        """Every router namespace: RA (if any), C1..CN, RB (if any)."""
        return [r for r in (self.router_a, *self.core, self.router_b) if r]

    def _default_router(self) -> str:
        router = self.router_a or self.router_b
        if router is None:
            raise ValueError("this lab has no NAT router (both sides are public)")
        return router

    def ip_of(self, ns: str) -> str:
        """The address of ``ns``: a host's own, a NAT router's public one, a core
        router's address on its link towards B."""
        table = {
            self.host_a: self.host_a_ip,
            self.host_b: self.host_b_ip,
            self.bootstrap: self.bootstrap_ip,
        }
        if self.router_a:
            table[self.router_a] = self.public_a_ip
        if self.router_b:
            table[self.router_b] = self.public_b_ip
        for j, ns_j in enumerate(self.core, start=1):
            table[ns_j] = self._link_ip(j, "west")
        return table[ns]

    def public_ip_of(self, ns: str) -> str:
        """The address the Internet sees for traffic from ``ns``."""
        if ns == self.host_a:
            return self.public_a_ip
        if ns == self.host_b:
            return self.public_b_ip
        return self.ip_of(ns)

    def path_from_b(self, dst: str) -> list[tuple[str, str]]:
        """The routers a datagram from ``host_b`` to ``ip_of(dst)`` passes, in order,
        each with the address its ICMP time-exceeded comes from.

        A datagram sent with TTL t expires at the t-th of these (ICMP from its
        address) and reaches ``dst`` when t > ``len(path_from_b(dst))``.
        ``dst`` may be ``bootstrap``, ``router_a`` or a core router (its own
        address, like a NAT router's public one, is delivered locally).
        """
        hops: list[tuple[str, str]] = []
        if self.router_b:
            hops.append((self.router_b, self.lan_b_router_ip))
        if dst == self.bootstrap:
            last = self.bootstrap_at
        elif dst == self.router_a or (dst == self.host_a and not self.router_a):
            last = 1
        elif dst in self.core:
            last = self.core.index(dst) + 2
        else:
            raise ValueError(f"no path from host_b to {dst!r} in this lab")
        for j in range(self.chain, last - 1, -1):
            hops.append((self.core[j - 1], self._link_ip(j, "west")))
        return hops

    # -- building -----------------------------------------------------------------------

    def _build(self) -> None:
        n = self.chain
        for ns in self.routers:
            self._add_ns(ns, forward=True)
        for ns in (self.host_a, self.host_b, self.bootstrap):
            self._add_ns(ns, forward=False)
        # Position k of the chain: 0 = RA or A, 1..N = cores, N+1 = RB or B.
        ends = {
            0: (self.router_a or self.host_a, self.WAN_IF if self.router_a else "eth0"),
            n + 1: (self.router_b or self.host_b, self.WAN_IF if self.router_b else "eth0"),
        }

        def at(k: int, side: str) -> tuple[str, str]:
            """(namespace, interface) of position k on its link towards ``side``."""
            if k in ends:
                return ends[k]
            return self.core[k - 1], "tow" if side == "west" else "toe"

        for k in range(n + 1):
            (w_ns, w_if), (e_ns, e_if) = at(k, "east"), at(k + 1, "west")
            self._veth(w_ns, w_if, e_ns, e_if)
            self._addr(w_ns, w_if, f"{self._link_ip(k, 'west')}/24")
            self._addr(e_ns, e_if, f"{self._link_ip(k, 'east')}/24")
        m_ns = self.core[self.bootstrap_at - 1]
        self._veth(m_ns, "top", self.bootstrap, "eth0")
        self._addr(m_ns, "top", "198.18.0.1/24")
        self._addr(self.bootstrap, "eth0", f"{self.bootstrap_ip}/24")
        _run(["ip", "-n", self.bootstrap, "route", "add", "default", "via", "198.18.0.1"])
        # Ends: a default route into the core.
        _run(["ip", "-n", ends[0][0], "route", "add", "default", "via", self._link_ip(0, "east")])
        _run(["ip", "-n", ends[n + 1][0], "route", "add", "default",
              "via", self._link_ip(n, "west")])  # fmt: skip
        # Cores: a static route to every public segment that is not connected.
        for j, ns in enumerate(self.core, start=1):
            west, east = self._link_ip(j - 1, "west"), self._link_ip(j, "east")
            for k in range(n + 1):
                if k < j - 1:
                    _run(["ip", "-n", ns, "route", "add", self._link_net(k), "via", west])
                elif k > j:
                    _run(["ip", "-n", ns, "route", "add", self._link_net(k), "via", east])
            if j != self.bootstrap_at:
                via = west if self.bootstrap_at < j else east
                _run(["ip", "-n", ns, "route", "add", "198.18.0.0/24", "via", via])
        for router, profile, host, lan in (
            (self.router_a, self.nat_a, self.host_a, "198.19.1"),
            (self.router_b, self.nat_b, self.host_b, "198.19.2"),
        ):
            if router is None:
                continue
            self._veth(router, self.LAN_IF, host, "eth0")
            self._addr(router, self.LAN_IF, f"{lan}.1/24")
            self._addr(host, "eth0", f"{lan}.10/24")
            _run(["ip", "-n", host, "route", "add", "default", "via", f"{lan}.1"])
            for rule in nat_rules(profile, self.WAN_IF):
                _run(["ip", "netns", "exec", router, self.iptables, *rule])
