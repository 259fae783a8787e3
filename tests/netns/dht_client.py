"""Client side of ``dht_agent.py``: one HyperDHT node inside a lab namespace.

Shared by the hole-punching tests (``test_holepunch.py``, ``test_two_nat.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .lab import LabBase, LabProcess

__all__ = ["AGENT", "BACKEND", "Addr", "AgentError", "DhtAgent"]

#: The driver the agents run on, from ``$HYPERDHT_TEST_BACKEND`` (thread or gevent).
BACKEND = os.environ.get("HYPERDHT_TEST_BACKEND", "thread")
AGENT = Path(__file__).resolve().with_name("dht_agent.py")

Addr = tuple[str, int]


class AgentError(Exception):
    """A command answered ``ok: false``; ``.error`` is the exception's class name."""

    def __init__(self, cmd: str, reply: dict[str, Any]) -> None:
        super().__init__(f"{cmd}: {reply.get('error')}: {reply.get('message')}")
        self.error = reply.get("error")
        self.reply = reply


class DhtAgent:
    """Client of ``dht_agent.py``: one HyperDHT node inside a lab namespace.

    Starting one waits (bounded) for its READY line; ``info`` is what it said.
    """

    def __init__(
        self,
        lab: LabBase,
        ns: str,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        bootstrap: Sequence[Addr] = (),
        ephemeral: bool | str = "auto",
        backend: str | None = None,
    ) -> None:
        self.backend = backend or BACKEND
        args = [str(AGENT), "--backend", self.backend, "--host", host, "--port", str(port)]
        for h, p in bootstrap:
            args += ["--bootstrap", f"{h}:{p}"]
        args += ["--ephemeral", str(ephemeral).lower()]
        self.ns = ns
        self.proc: LabProcess = lab.python(ns, args)
        m = self.proc.expect(r"^READY (\d+) (\{.*\})$", timeout=10)
        self.port = int(m.group(1))
        self.info = json.loads(m.group(2))
        self._seq = itertools.count(1)

    def call(self, cmd: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
        """Run one command and return its reply; raises AgentError if not ok."""
        seq = next(self._seq)
        self.proc.send_line(json.dumps({"seq": seq, "cmd": cmd, **args}))
        m = self.proc.expect(rf'^\{{"seq": {seq}[,}}].*$', timeout=timeout)
        reply: dict[str, Any] = json.loads(m.group(0))
        if not reply.get("ok"):
            raise AgentError(cmd, reply)
        return reply

    def fails(self, cmd: str, timeout: float = 5.0, **args: Any) -> tuple[str | None, float]:
        """Run a command expected to fail: ``(error name or None, seconds taken)``."""
        t0 = time.monotonic()
        try:
            self.call(cmd, timeout=timeout, **args)
        except AgentError as exc:
            return exc.error, time.monotonic() - t0
        return None, time.monotonic() - t0

    def recv(self, timeout: float = 5.0) -> tuple[str, Addr]:
        """The next application datagram: ``(data, from)``; AgentError on timeout."""
        r = self.call("recv", timeout=timeout + 2, wait=timeout)
        return r["data"], (r["from"][0], r["from"][1])

    def close(self) -> None:
        """Ask the node to close and wait (bounded) for the process to end."""
        with contextlib.suppress(Exception):
            self.call("close", timeout=5)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
