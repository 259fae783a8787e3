"""What the commands print: the logging setup, addresses, result lines.

Lines go to stdout whole, also when several threads (or greenlets) print at
once; diagnostics go through :mod:`logging` to stderr, configured once by
:func:`configure_logging`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import Any, TextIO

from ..discovery import PeerResponse
from ..ipencoding import Address

__all__ = [
    "configure_logging",
    "format_address",
    "result_json",
    "result_text",
    "reachability_text",
    "reachability_json",
    "say",
    "say_error",
]

# Lines come from several threads (or greenlets): each is written whole.
_output_lock = threading.Lock()


def configure_logging(level: int) -> None:
    """Log to stderr (library loggers included) at ``level``."""
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def format_address(addr: Address) -> str:
    """``host:port``, with brackets for IPv6."""
    return f"[{addr.host}]:{addr.port}" if ":" in addr.host else f"{addr.host}:{addr.port}"


def say(line: str, stream: TextIO | None = None) -> None:
    """Write ``line`` and a newline to ``stream`` (stdout) in one piece, and
    flush, so that a reader sees each line as soon as it is printed."""
    out = stream or sys.stdout
    with _output_lock:
        out.write(line + "\n")
        out.flush()


def say_error(prog: str, message: str) -> None:
    """The one-line error of a command: ``PROG: error: MESSAGE`` on stderr."""
    say(f"{prog}: error: {message}", sys.stderr)


def result_text(key: bytes, r: PeerResponse) -> str:
    """One lookup answer as a line: ``KEYHEX from NODE: PEER... [local PEER...]``."""
    line = f"{key.hex()} from {format_address(r.node)}: "
    line += " ".join(format_address(p) for p in r.peers)
    if r.local_peers:
        line += " local " + " ".join(format_address(p) for p in r.local_peers)
    return line


def result_json(key: bytes, r: PeerResponse) -> str:
    """One lookup answer as a JSON line: ``key``, ``node``, ``peers`` and
    ``local_peers``, each address an object with ``host`` and ``port``."""

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


def reachability_text(verdict: str, ephemeral: bool) -> str:
    """The reachability line of a running node: ``reachability: VERDICT
    (full node | ephemeral)``."""
    return f"reachability: {verdict} ({'ephemeral' if ephemeral else 'full node'})"


def reachability_json(verdict: str, ephemeral: bool) -> str:
    """The reachability verdict as a JSON line: ``reachability`` (one of
    ``"unknown"``, ``"reachable"``, ``"unreachable"``) and ``ephemeral``."""
    return json.dumps({"reachability": verdict, "ephemeral": ephemeral})
