"""``--backend asyncio`` for the commands (``hyperdht``, ``hyperdht demo``,
``hyperdht-swarm``), run as subprocesses: the commands' blocking code on
the asyncio driver, whose loop runs in a thread of its own. Output lines
are read with a deadline; every process is killed at teardown."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from hyperdht import HyperDHT

HOST = "127.0.0.1"
DEADLINE = 60.0  # only a broken run waits this long
KEY = "ab" * 32


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


@pytest.fixture
def boot() -> Iterator[str]:
    # In-process on threads: it keeps serving while the test blocks.
    with HyperDHT(host=HOST, backend="thread") as node:
        yield f"{HOST}:{node.address.port}"


def test_demo_on_asyncio() -> None:
    result = run("hyperdht", "demo", "--backend", "asyncio")
    assert result.returncode == 0, result
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "hyperdht demo (asyncio backend), everything on 127.0.0.1"
    assert any(re.search(r"C hole punches through .*: N answered from", line) for line in lines)
    assert lines[-1].startswith("demo finished")


def test_announce_query_and_sigint_on_asyncio(boot: str) -> None:
    args = ["--host", HOST, "-b", boot, "--backend", "asyncio", "-a", KEY]
    announcer = subprocess.Popen(
        [sys.executable, "-m", "hyperdht", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert announcer.stdout is not None
        port = None
        for line in announcer.stdout:  # ends if the process dies: then the asserts fail
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
            if line.startswith(f"announced {KEY}"):
                break
        assert port is not None
        result = run("hyperdht", "--host", HOST, "-b", boot, "-q", KEY, "--backend", "asyncio")
        assert result.returncode == 0, result
        assert f"127.0.0.1:{port}" in result.stdout
        announcer.send_signal(signal.SIGINT)
        out, err = announcer.communicate(timeout=DEADLINE)
        assert announcer.returncode == 0, err
        assert f"unannounced {KEY}" in out
        assert "Traceback" not in err
    finally:
        if announcer.poll() is None:
            announcer.kill()
            announcer.wait(DEADLINE)


def test_swarm_on_asyncio() -> None:
    result = run(
        "hyperdht.cli.swarm", "--backend", "asyncio", "--count", "40", "--announce",
        "--duration", "1", "--host", HOST,
    )  # fmt: skip
    assert result.returncode == 0, result
    assert "40 nodes, asyncio backend" in result.stdout
    found = re.search(r"lookups (\d+)/(\d+) found", result.stdout)
    assert found and int(found.group(1)) > 0, result.stdout
