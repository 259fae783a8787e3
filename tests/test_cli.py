"""The ``hyperdht`` and ``hyperdht-swarm`` commands, run as subprocesses.

Everything is on 127.0.0.1. Nothing sleeps to wait: a reader thread per
process queues its stdout lines, and each test waits for the line it needs
with a deadline that only a broken run reaches. Every process is killed at
teardown.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

DEADLINE = 20.0  # only a broken run waits this long
KEY = "ab" * 32
KEY2 = "cd" * 32
HOST = "127.0.0.1"
LISTENING = re.compile(r"^hyperdht listening on 127\.0\.0\.1:(\d+)$")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

try:
    import gevent  # noqa: F401

    HAVE_GEVENT = True
except ImportError:
    HAVE_GEVENT = False


class Proc:
    """A command running in the background; its stdout lines are queued by
    a reader thread, its stderr collected."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.stderr: list[str] = []
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.lines), daemon=True),
            threading.Thread(target=self._collect, args=(self.popen.stderr,), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream: object, out: queue.Queue[str | None]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            out.put(line.rstrip("\n"))
        out.put(None)

    def _collect(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.stderr.append(line)

    def expect(self, pattern: str | re.Pattern[str], timeout: float = DEADLINE) -> re.Match[str]:
        """The first next stdout line matching ``pattern``; fails the test
        at the deadline or when the output ends."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} in {timeout} s: {self.report()}")
            if line is None:
                pytest.fail(f"output ended before {pattern!r}: {self.report()}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def rest(self, timeout: float = DEADLINE) -> list[str]:
        """The remaining stdout lines, once the process has exited."""
        self.wait(timeout)
        out = []
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                return out
            out.append(line)

    def wait(self, timeout: float = DEADLINE) -> int:
        """The exit status, once the process has exited and all its output
        has been read."""
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"did not exit in {timeout} s: {self.report()}")
        for t in self._threads:
            t.join(timeout)
        return status

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(DEADLINE)
        for t in self._threads:
            t.join(DEADLINE)

    def report(self) -> str:
        return f"{self.args}: stdout {self.seen!r}, stderr {''.join(self.stderr)!r}"


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


def run(*args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
    """Run a command to completion."""
    return subprocess.run(
        [sys.executable, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def hyperdht(*args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
    return run("-m", "hyperdht", *args, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    assert result.returncode == status, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hyperdht: error: "), lines
    assert text in lines[0], lines


Start = Callable[..., Proc]


@pytest.fixture
def start(procs: list[Proc]) -> Start:
    """Start ``python -m hyperdht ARGS`` in the background."""

    def start(*args: str) -> Proc:
        p = Proc("-m", "hyperdht", *args)
        procs.append(p)
        return p

    return start


class Boot(NamedTuple):
    proc: Proc
    address: str


@pytest.fixture
def boot(start: Start, backend: str) -> Boot:
    """A bootstrap node on the backend under test."""
    node = start("-p", "0", "--host", HOST, "--backend", backend)
    port = int(node.expect(LISTENING).group(1))
    return Boot(node, f"{HOST}:{port}")


def announcer(start: Start, boot: str, backend: str, *keys: str) -> tuple[Proc, int]:
    """An announcing node, once every key is announced; and its port."""
    args = ["--host", HOST, "-b", boot, "--backend", backend]
    for key in keys:
        args += ["-a", key]
    proc = start(*args)
    port = int(proc.expect(LISTENING).group(1))
    for key in keys:
        proc.expect(rf"^announced {key} ")
    return proc, port


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A bound UDP port that never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    yield sock.getsockname()[1]
    sock.close()


# -- the node ------------------------------------------------------------------


def test_bootstrap_node_prints_its_address_and_stops_on_sigint(start: Start, backend: str) -> None:
    node = start("-p", "0", "--host", HOST, "--backend", backend)
    assert int(node.expect(LISTENING).group(1)) > 0
    node.signal(signal.SIGINT)
    assert node.wait() == 0
    assert "Traceback" not in "".join(node.stderr)


def test_bootstrap_node_logs_what_it_serves(start: Start, boot: Boot, backend: str) -> None:
    announcer(start, boot.address, backend, KEY)
    assert hyperdht("--host", HOST, "-b", boot.address, "-q", KEY).returncode == 0
    boot.proc.signal(signal.SIGTERM)
    assert boot.proc.wait() == 0
    log = "".join(boot.proc.stderr)
    assert f"announce {KEY} from 127.0.0.1:" in log
    assert f"lookup {KEY}" in log


def test_quiet_node_logs_nothing(start: Start, backend: str) -> None:
    node = start("-p", "0", "--host", HOST, "--quiet", "--backend", backend)
    port = int(node.expect(LISTENING).group(1))
    hyperdht("--host", HOST, "-b", f"{HOST}:{port}", "-q", KEY)
    node.signal(signal.SIGINT)
    assert node.wait() == 0
    assert node.stderr == []


# -- announce and query ----------------------------------------------------------


def test_announce_then_query_finds_the_announcer(start: Start, boot: Boot, backend: str) -> None:
    _, port = announcer(start, boot.address, backend, KEY, KEY2)
    for key in (KEY, KEY2):
        result = hyperdht("--host", HOST, "-b", boot.address, "-q", key, "--backend", backend)
        assert result.returncode == 0, result
        lines = result.stdout.splitlines()
        assert lines, result
        assert all(line.startswith(f"{key} from 127.0.0.1:") for line in lines), lines
        assert any(f"127.0.0.1:{port}" in line.split(": ", 1)[1] for line in lines), lines


def test_query_json_lines(start: Start, boot: Boot, backend: str) -> None:
    _, port = announcer(start, boot.address, backend, KEY)
    result = hyperdht("--host", HOST, "-b", boot.address, "-q", KEY, "--json", "--backend", backend)
    assert result.returncode == 0, result
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records
    for record in records:
        assert record["key"] == KEY
        assert record["node"]["host"] == HOST
        assert isinstance(record["node"]["port"], int)
        assert record["local_peers"] == []
    assert {"host": HOST, "port": port} in records[0]["peers"]


def test_query_unknown_key_with_nodes_answering_exits_0(boot: Boot, backend: str) -> None:
    result = hyperdht("--host", HOST, "-b", boot.address, "-q", KEY, "--backend", backend)
    assert result.returncode == 0, result
    assert result.stdout == ""


def test_query_when_no_node_answers_exits_1(dead_port: int, backend: str) -> None:
    result = hyperdht("--host", HOST, "-b", f"{HOST}:{dead_port}", "-q", KEY, "--backend", backend)
    assert_one_line_error(result, 1, f"no node answered the lookup of {KEY}")
    assert result.stdout == ""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_unannounces_and_exits_0(
    start: Start, boot: Boot, backend: str, signum: int
) -> None:
    proc, port = announcer(start, boot.address, backend, KEY, KEY2)
    found = hyperdht("--host", HOST, "-b", boot.address, "-q", KEY)
    assert f"127.0.0.1:{port}" in found.stdout, found
    began = time.monotonic()
    proc.signal(signum)
    assert proc.wait(timeout=5) == 0
    assert time.monotonic() - began < 5
    assert sorted(proc.rest()) == [f"unannounced {KEY}", f"unannounced {KEY2}"]
    assert "Traceback" not in "".join(proc.stderr)
    # Both at once: each walk waits for the announcer that is gone.
    lookups = [start("--host", HOST, "-b", boot.address, "-q", key) for key in (KEY, KEY2)]
    for lookup in lookups:
        assert lookup.wait() == 0, lookup.report()  # the bootstrap node answered...
        assert lookup.rest() == []  # ...with nothing


def test_gevent_backend(start: Start) -> None:
    if not HAVE_GEVENT and not IN_CI:
        pytest.skip("gevent is not installed")
    node = start("-p", "0", "--host", HOST, "--backend", "gevent")
    boot = f"{HOST}:{node.expect(LISTENING).group(1)}"
    proc, port = announcer(start, boot, "gevent", KEY)
    result = hyperdht("--host", HOST, "-b", boot, "-q", KEY, "--backend", "gevent")
    assert result.returncode == 0 and f"127.0.0.1:{port}" in result.stdout, result
    proc.signal(signal.SIGINT)
    proc.expect(rf"^unannounced {KEY}$", timeout=5)
    assert proc.wait(5) == 0
    node.signal(signal.SIGINT)
    assert node.wait() == 0


# -- config files --------------------------------------------------------------


def write_config(path: Path, data: dict[str, object]) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        import yaml

        path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["node.json", "node.yaml", "node.yml"])
def test_config_file(start: Start, tmp_path: Path, backend: str, name: str) -> None:
    if name != "node.json":
        pytest.importorskip("yaml")
    config = write_config(tmp_path / name, {"host": HOST, "port": 0, "backend": backend})
    node = start("-c", str(config))
    boot = f"{HOST}:{node.expect(LISTENING).group(1)}"
    _, port = announcer(start, boot, backend, KEY)
    query = write_config(
        tmp_path / f"query{config.suffix}",
        {"host": HOST, "bootstrap": boot, "query": [KEY], "json": True, "quiet": True},
    )
    result = hyperdht("--config", str(query))
    assert result.returncode == 0, result
    assert {"host": HOST, "port": port} in json.loads(result.stdout.splitlines()[0])["peers"]


def test_command_line_wins_over_config(start: Start, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.json", {"host": HOST, "port": 1, "quiet": False})
    node = start("-c", str(config), "-p", "0", "--quiet")
    assert int(node.expect(LISTENING).group(1)) != 1


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.json", '{"host": "127.0.0.1", "colour": "red"}', "unknown key 'colour'"),
        ("c.yaml", "host: 127.0.0.1\nfoo: 1\n", "unknown key 'foo'"),
        ("c.json", '{"host": ', "invalid JSON"),
        ("c.yaml", "host: [127.0.0.1\n", "invalid YAML"),
        ("c.json", "[1, 2]", "expected a mapping"),
        ("c.json", '{"port": "eighty"}', "'port' must be an integer"),
        ("c.json", '{"port": 70000}', "'port' must be 0-65535"),
        ("c.yaml", "backend: threads\n", "'backend' must be one of"),
        ("c.json", '{"query": ["nothex"], "bootstrap": "127.0.0.1"}', "--query"),
        ("c.toml", "port = 1\n", "unsupported extension"),
    ],
)
def test_bad_config_file(tmp_path: Path, name: str, content: str, message: str) -> None:
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    path = tmp_path / name
    path.write_text(content)
    assert_one_line_error(hyperdht("-c", str(path)), 2, message)


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    assert_one_line_error(hyperdht("--config", str(missing)), 2, "cannot read")


# -- usage errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-q", "xyz", "-b", HOST], "--query: expected 64 hex characters"),
        (["-a", "g" * 64, "-b", HOST], "--announce: not hexadecimal"),
        (["-a", KEY[:-1], "-b", HOST], "--announce: expected 64 hex characters"),
        (["--id", "12"], "--id: expected 64 hex characters"),
        (["-q", KEY, "-b", "127.0.0.1:notaport"], "bad port"),
        (["-q", KEY, "-b", "127.0.0.1:70000"], "port must be 1-65535"),
        (["-q", KEY, "-b", "127.0.0.1:1,:2"], "missing host"),
        (["-p", "70000"], "port must be 0-65535"),
        (["-p", "x"], "not a port number"),
        (["--concurrency", "0"], "must be at least 1"),
        (["--backend", "trio"], "invalid choice"),
        (["-a", KEY, "-q", KEY, "-b", HOST], "--announce and --query cannot be used together"),
        (["-q", KEY], "--query needs --bootstrap"),
        (["--json"], "--json only applies to --query"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    assert_one_line_error(hyperdht(*args), 2, message)


def test_port_in_use(backend: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, 0))
        port = taken.getsockname()[1]
        result = hyperdht("--host", HOST, "-p", str(port), "--backend", backend)
    assert_one_line_error(result, 1, f"cannot bind UDP socket to {HOST}:{port}")
    assert "in use" in result.stderr


def test_help_and_version() -> None:
    result = hyperdht("--help")
    assert result.returncode == 0
    assert "--announce" in result.stdout and "demo" in result.stdout
    assert hyperdht("--version").stdout.startswith("hyperdht ")


def test_console_scripts_are_declared() -> None:
    from importlib.metadata import entry_points

    scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
    assert scripts["hyperdht"].value == "hyperdht.cli.node:main"
    assert scripts["hyperdht-swarm"].value == "hyperdht.cli.swarm:main"
    assert callable(scripts["hyperdht"].load()) and callable(scripts["hyperdht-swarm"].load())


# -- hyperdht-swarm --------------------------------------------------------------


def test_swarm_bounded_run(backend: str) -> None:
    result = run(
        "-m",
        "hyperdht.cli.swarm",
        "--count",
        "8",
        "--announce",
        "--duration",
        "0.2",
        "--host",
        HOST,
        "--backend",
        backend,
    )
    assert result.returncode == 0, result
    out = result.stdout
    assert "8 nodes up" in out
    assert "8/8 announced" in out
    assert "swarm summary: 8 nodes" in out
    assert "max RSS" in out
    assert "Traceback" not in result.stderr


def test_swarm_joins_a_network_and_stops_on_sigint(start: Start, boot: Boot, backend: str) -> None:
    swarm = Proc(
        "-m",
        "hyperdht.cli.swarm",
        "-n",
        "3",
        "-b",
        boot.address,
        "--host",
        HOST,
        "--backend",
        backend,
    )
    try:
        swarm.expect(r"3 nodes up .* \(3 bootstrapped\)")
        swarm.signal(signal.SIGINT)
        swarm.expect(r"^swarm summary: 3 nodes")
        assert swarm.wait() == 0
    finally:
        swarm.kill()


def test_swarm_usage_error() -> None:
    result = run("-m", "hyperdht.cli.swarm", "--count", "0")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("hyperdht-swarm: error: ")
    assert len(result.stderr.strip().splitlines()) == 1
