"""Value types of the DHT RPC layer."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..ipencoding import Address, Node

__all__ = ["RemoteNode", "QueryResponse", "IncomingQuery", "Stats"]


@dataclass(frozen=True, slots=True)
class RemoteNode:
    """Who sent a request: its id (None for an ephemeral node) and the
    address the datagram came from."""

    id: bytes | None
    address: Address

    @property
    def host(self) -> str:
        """The sender's host."""
        return self.address.host

    @property
    def port(self) -> int:
        """The sender's port."""
        return self.address.port


@dataclass(frozen=True, slots=True)
class QueryResponse:
    """One result of a query or update: the responding node and the value
    its handler returned (None when it returned nothing)."""

    node: Node
    value: bytes | None


@dataclass(frozen=True, slots=True)
class IncomingQuery:
    """A query or update that reached this node, as handlers see it.

    ``is_update`` is True when the request carried a round-trip token that
    this node issued to the sender's host (then ``roundtrip_token`` holds
    it); an invalid token makes the request a plain query.
    """

    command: str
    target: bytes
    value: bytes | None
    is_update: bool
    roundtrip_token: bytes | None
    node: RemoteNode
    #: Transaction id of the request (what :meth:`DHTCore.reply` answers on).
    tid: int = field(default=0, repr=False, compare=False)
    #: The ``now`` of the core call that received it (the time a handler
    #: that keeps state, such as the peer store, records).
    now: float = field(default=0.0, repr=False, compare=False)


@dataclass(slots=True)
class Stats:
    """Counters of one node, since it started. Read them any time; they are
    plain integers and :class:`collections.Counter` objects."""

    datagrams_in: int = 0
    datagrams_out: int = 0
    #: Requests answered, by command.
    requests_served: Counter[str] = field(default_factory=Counter)
    #: Outgoing requests that timed out.
    timeouts: int = 0
    #: Datagrams (or fields) dropped, by reason.
    drops: Counter[str] = field(default_factory=Counter)
    #: Application handlers that raised (no response was sent).
    handler_errors: int = 0
    #: Pings forwarded for hole punching.
    forwarded: int = 0
    #: Whether unsolicited datagrams reach us: ``"unknown"``,
    #: ``"reachable"`` or ``"unreachable"`` (:mod:`.reachability`).
    reachability: str = "unknown"
    #: Reachability probes and runs, by outcome.
    reachability_probes: Counter[str] = field(default_factory=Counter)
