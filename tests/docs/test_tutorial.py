"""The tutorial's two processes, as the tutorial runs them: a bootstrap node
(``hyperdht``), process A announcing and answering, process B looking up,
connecting and sending, on each API (blocking, gevent, asyncio), directly
and with A behind the emulated NAT. Loopback only; every wait has a
timeout, none is a sleep.

Each test runs on a topic of its own (``TUTORIAL_TOPIC``): tox runs several
envs at once on 127.0.0.1, and a routing table can keep a dead node's port
after another env's node took it, so a shared topic could find another run's
(or an earlier test's) announcement.
"""

from __future__ import annotations

import os
import queue
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from .conftest import DOCS

SCRIPTS = DOCS / "tutorial"
TIMEOUT = 90.0  # generous: a loaded 2-core machine takes seconds per step


def environment(topic: str | None) -> dict[str, str]:
    """This process's environment, with ``TUTORIAL_TOPIC`` set to ``topic``."""
    env = dict(os.environ)
    env.pop("TUTORIAL_TOPIC", None)
    if topic is not None:
        env["TUTORIAL_TOPIC"] = topic
    return env


def fresh_topic() -> str:
    """A topic no other run announces."""
    return f"hyperdht tutorial {secrets.token_hex(8)}"


class Process:
    """A subprocess whose stdout lines arrive on a queue (so we can wait for
    one with a timeout)."""

    def __init__(self, *args: str, topic: str | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            env=environment(topic),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first output line matching ``pattern``; fails on EOF or timeout."""
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} in {TIMEOUT} s:\n" + self.output())
            if line is None:
                pytest.fail(f"exited before a line matching {pattern!r}:\n" + self.output())
            self.seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m

    def output(self) -> str:
        """The lines seen so far, as text (for a failure message)."""
        return "\n".join(self.seen)

    def finish(self) -> list[str]:
        """Wait for the exit (with a timeout); the whole output."""
        self.proc.wait(timeout=TIMEOUT)
        while (line := self.lines.get(timeout=TIMEOUT)) is not None:
            self.seen.append(line)
        return self.seen

    def kill(self) -> None:
        """Stop it if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)


@pytest.fixture
def bootstrap() -> Iterator[str]:
    """``hyperdht -p 0 --host 127.0.0.1``, as the tutorial starts it (on a
    free port), one per test: a bootstrap node shared by the tests keeps
    the earlier tests' A nodes in its table after they exit, so every
    later query waits out their requests' timeouts (some 3 s a query, 12 s
    a test; measured), and their ports may be held by another tox env's
    nodes by then, which pulls the query into that env's network."""
    node = Process("-m", "hyperdht", "-p", "0", "--host", "127.0.0.1")
    try:
        yield node.wait_for(r"hyperdht listening on (127\.0\.0\.1:\d+)").group(1)
    finally:
        node.kill()


@pytest.mark.parametrize("nat", [False, True], ids=["direct", "nat"])
@pytest.mark.parametrize("api", ["blocking", "gevent", "asyncio"])
def test_two_processes_exchange_datagrams(bootstrap: str, api: str, nat: bool) -> None:
    """A announces, B finds it, connects and says hello, A answers."""
    topic = fresh_topic()
    a = Process(str(SCRIPTS / f"a_{api}.py"), bootstrap, *(["--nat"] if nat else []), topic=topic)
    try:
        port = a.wait_for(r"^A: announced [0-9a-f]{16}\.\.\. on port (\d+)$").group(1)
        b = subprocess.run(
            [sys.executable, str(SCRIPTS / f"b_{api}.py"), bootstrap],
            env=environment(topic),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert b.returncode == 0, b.stdout + b.stderr
        first, *rest = b.stdout.splitlines()
        # The referrer is whichever node answered first: the bootstrap node,
        # or A's record on another node that A announced to.
        assert re.fullmatch(
            rf"B: 127\.0\.0\.1:\d+ says 127\.0\.0\.1:{port} announced the key", first
        ), b.stdout
        assert rest == [
            f"B: connected, 127.0.0.1:{port} answered",
            f"B: got b'hello from A' from 127.0.0.1:{port}",
        ], b.stdout
        out = a.finish()
        # The messages are the whole output as text: pytest shortens a
        # long list in an assertion, and a traceback is what we need.
        text = a.output()
        assert a.proc.returncode == 0, text
        assert re.fullmatch(r"A: got b'hello from B' from 127\.0\.0\.1:\d+", out[1]), text
        assert out[2:] == ["A: unannounced, bye"], text
    finally:
        a.kill()


def test_the_tutorial_includes_every_script() -> None:
    """Each script is shown on the tutorial page (what runs is what is read)."""
    page = (DOCS / "tutorial.rst").read_text(encoding="utf-8")
    for script in sorted(SCRIPTS.glob("*.py")):
        assert f".. literalinclude:: tutorial/{script.name}" in page, script.name


def test_a_process_that_fails_fails_the_test(bootstrap: str) -> None:
    """B without anyone announcing says so and exits 1 (the check above can fail)."""
    b = subprocess.run(
        [sys.executable, str(SCRIPTS / "b_blocking.py"), bootstrap],
        env=environment(fresh_topic()),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert b.returncode == 1, b.stdout + b.stderr
    assert b.stdout.splitlines()[-1] == "B: nobody announced the key"
