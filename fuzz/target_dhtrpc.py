"""Fuzz target: the DHT core (:class:`hyperdht.dhtrpc.core.DHTCore`).

Runs :class:`fuzz.dht_program.DHTProgram`: requests of every command,
responses on the tids of the core's own requests (bootstrap, queries,
pings, hole punches, connects), forwarded pings, tokens, application
datagrams and time steps; see that module for the invariants.
"""

from __future__ import annotations

from .dht_program import DHTProgram

__all__ = ["NAME", "run_one"]

#: The target's name (``run.py --target``).
NAME = "dhtrpc"


def run_one(data: bytes) -> None:
    """Run one fuzz input as a program on a fresh :class:`DHTCore`."""
    DHTProgram(data).run()
