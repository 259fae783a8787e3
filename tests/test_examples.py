"""The programs in examples/ against a bootstrap node on 127.0.0.1.

The servers run in the background until they print that they announced;
the client runs to completion and must exchange messages with them, also
when the server sits behind the emulated NAT (then the client has to hole
punch). Nothing sleeps: stdout lines are read with a deadline by a reader
thread, and every process is killed at teardown.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperdht import HyperDHT

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEADLINE = 30.0  # only a broken run waits this long
HOST = "127.0.0.1"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

try:
    import gevent  # noqa: F401

    HAVE_GEVENT = True
except ImportError:
    HAVE_GEVENT = False


class Server:
    """An example server in the background; stdout lines are queued by a
    reader thread."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, pattern: str, timeout: float = DEADLINE) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} in {timeout} s: {self.seen}")
            if line is None:
                pytest.fail(f"output ended before {pattern!r}: {self.seen}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(DEADLINE)
        self._reader.join(DEADLINE)


@pytest.fixture
def bootstrap() -> Iterator[str]:
    # In-process and on threads: it must keep serving while the test blocks.
    with HyperDHT(host=HOST, backend="thread") as node:
        yield f"{HOST}:{node.address.port}"


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.kill()


def client(bootstrap: str, key: str, script: str = "client.py") -> subprocess.CompletedProcess[str]:
    args = ["--bootstrap", bootstrap, "--key", key, "--host", HOST]
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


#: (server, client) pairs: the blocking client with each blocking server,
#: and the asyncio pair together.
PAIRS = [
    ("server.py", "client.py"),
    ("gevent_server.py", "client.py"),
    ("asyncio_server.py", "asyncio_client.py"),
]


@pytest.mark.parametrize("nat", [False, True], ids=["direct", "behind-nat"])
@pytest.mark.parametrize(("script", "client_script"), PAIRS, ids=[p[0] for p in PAIRS])
def test_client_talks_to_server(
    bootstrap: str, servers: list[Server], script: str, client_script: str, nat: bool
) -> None:
    if script == "gevent_server.py" and not HAVE_GEVENT and not IN_CI:
        pytest.skip("gevent is not installed")
    # A key per case: an earlier case's server must not be found.
    key = hashlib.sha256(f"{script} {nat}".encode()).hexdigest()
    args = [str(EXAMPLES / script), "--bootstrap", bootstrap, "--key", key, "--host", HOST]
    server = Server(*args, *(["--nat"] if nat else []))
    servers.append(server)
    port = int(server.expect(rf"^announced {key} on port (\d+)$").group(1))

    result = client(bootstrap, key, client_script)
    assert result.returncode == 0, result
    out = result.stdout
    assert f"found 1 peer(s) for {key[:16]}..." in out
    # connect(): through the referrer either way
    assert f"connect to {HOST}:{port} through {bootstrap}: open to {HOST}:{port}" in out
    assert f"reply from {HOST}:{port}: 'echo: hello'" in out
    server.expect(r"^got 'hello' from 127\.0\.0\.1:\d+$")

    server.popen.send_signal(signal.SIGINT)
    server.expect(r"^unannounced, bye$")
    assert server.popen.wait(DEADLINE) == 0


@pytest.mark.parametrize("script", ["client.py", "asyncio_client.py"])
def test_client_without_server_exits_1(bootstrap: str, script: str) -> None:
    result = client(bootstrap, "ef" * 32, script)
    assert result.returncode == 1, result
    assert "found 0 peer(s)" in result.stdout
    assert "no peer could be reached" in result.stdout
