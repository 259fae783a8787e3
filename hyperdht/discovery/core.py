"""Peer discovery as a sans-I/O layer over a :class:`~hyperdht.dhtrpc.DHTCore`.

:class:`DiscoveryCore` installs the ``peers`` command handler (PROTOCOL.md
section 7) into a DHT core, keeps the announced peers in a
:class:`~hyperdht.discovery.store.PeerStore`, and starts lookups, announces
and unannounces as queries of that core whose results are
:class:`PeerResponse` values. Like the DHT core it never blocks, reads a
clock or touches a socket: every operation takes ``now``, and a served
request uses the ``now`` of the datagram that carried it.

Differences from the reference, on purpose (docs/PROTOCOL-NOTES.md):

* a requester's own LAN address is never returned to it in ``localPeers``
  (the reference compares a 4-byte entry with the 6-byte address, so it
  never matches);
* the default max age of an announcement is 15 minutes (the Go port's), not
  about 6; it is the ``max_age`` option.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import messages
from ..addressing import parse_address
from ..arguments import check_key, check_port
from ..dhtrpc.core import DHTCore
from ..dhtrpc.query import Query
from ..dhtrpc.types import IncomingQuery, QueryResponse
from ..errors import ArgumentError, DecodeError
from ..ipencoding import Address, Node, pack_ipv4
from .store import DEFAULT_MAX_AGE, DEFAULT_MAX_SIZE, PeerStore, StoredPeer

__all__ = [
    "COMMAND",
    "EVENTS",
    "MAX_REPLY",
    "DiscoveryCore",
    "PeerResponse",
    "Listener",
    "collect_peers",
    "encode_local_address",
    "decode_local_peers",
]

log = logging.getLogger(__name__)

#: The DHT command peer discovery travels as.
COMMAND = "peers"
#: Replies are packed while peers plus local peers stay under this size.
MAX_REPLY = 900
#: Events :meth:`DiscoveryCore.add_listener` accepts.
EVENTS = ("announce", "unannounce", "lookup")

#: ``fn(key, peer_address)`` for announce/unannounce, ``fn(key)`` for lookup.
Listener = Callable[..., None]


@dataclass(frozen=True, slots=True)
class PeerResponse:
    """One node's answer to a lookup or announce: the node that answered,
    the public addresses announced under the key, and the LAN addresses of
    announcers in the caller's /16 (only when a ``local_address`` was
    given)."""

    node: Address
    peers: list[Address] = field(default_factory=list)
    local_peers: list[Address] = field(default_factory=list)


def encode_local_address(local_address: Any) -> bytes | None:
    """``(host, port)`` or ``"host:port"`` (IPv4) -> the 6-byte wire form;
    None stays None. Port 0 is allowed (a lookup's local address only needs
    the host). Raises ArgumentError naming ``local_address``."""
    if local_address is None:
        return None
    if isinstance(local_address, str):
        text = local_address.strip()
        if text.endswith(":0"):  # "host:0" means "no port", as (host, 0) does
            text = text[:-2]
        addr = parse_address(text, what="local_address", default_port=0)
    elif isinstance(local_address, tuple) and len(local_address) == 2:
        addr = Address(local_address[0], local_address[1])
    else:
        raise ArgumentError(f"local_address: expected (host, port), got {local_address!r}")
    packed = pack_ipv4(addr.host)
    if packed is None:
        raise ArgumentError(f"local_address: {addr.host!r} is not an IPv4 address")
    port = check_port(addr.port, "local_address: port")
    return packed + port.to_bytes(2, "big")


def decode_local_peers(buf: bytes | None, local: bytes | None) -> list[Address]:
    """The ``localPeers`` field (4 bytes each: the last two octets and the
    port) as addresses in the /16 of our own ``local`` 6-byte address."""
    out: list[Address] = []
    if not buf or not local:
        return out
    prefix = f"{local[0]}.{local[1]}."
    for i in range(0, len(buf) - 3, 4):
        port = (buf[i + 2] << 8) | buf[i + 3]
        if port:
            out.append(Address(f"{prefix}{buf[i]}.{buf[i + 1]}", port))
    return out


def collect_peers(stream: Iterable[PeerResponse]) -> list[Address]:
    """All distinct peers a lookup stream returned, in order of arrival."""
    seen: dict[Address, None] = {}
    for r in stream:
        for p in r.peers:
            seen.setdefault(p, None)
    return list(seen)


class _Mapper:
    """Turns a ``peers`` query response into a :class:`PeerResponse` (one
    object per query, not a closure per response)."""

    __slots__ = ("codec", "local")

    def __init__(self, core: DHTCore, local: bytes | None) -> None:
        self.codec = core.peer_codec
        self.local = local

    def __call__(self, r: QueryResponse) -> PeerResponse | None:
        if r.value is None:
            return None
        try:
            res = messages.decode_peers_response(r.value)
            if res.peers is None:
                return None
            peers = self.codec.decode_list(res.peers)
        except DecodeError:
            return None
        return PeerResponse(r.node.address, peers, decode_local_peers(res.local_peers, self.local))


class DiscoveryCore:
    """Peer discovery on one :class:`~hyperdht.dhtrpc.DHTCore` (which it
    takes over the ``peers`` command of). Not thread-safe: call it under
    the same lock as the DHT core.

    ``address`` is where this node's socket is bound; it is the ``node``
    of the response made of the node's own stored peers, which a lookup or
    announce yields first (an unspecified host becomes loopback). Raises
    ArgumentError for a bad ``max_age`` or ``max_peers``.
    """

    def __init__(
        self,
        dht: DHTCore,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        max_peers: int = DEFAULT_MAX_SIZE,
        address: Address | None = None,
    ) -> None:
        self.dht = dht
        #: The announcements this node serves.
        self.store = PeerStore(max_size=max_peers, max_age=max_age, rng=dht.rng)
        self.address = address
        self._listeners: dict[str, list[Listener]] = {e: [] for e in EVENTS}
        dht.on_request(COMMAND, self._on_query, update=False)
        dht.on_request(COMMAND, self._on_update, update=True)

    # -- events ------------------------------------------------------------

    def add_listener(self, event: str, fn: Listener) -> None:
        """Observe what this node serves: ``"announce"`` and
        ``"unannounce"`` call ``fn(key, peer_address)``, ``"lookup"`` calls
        ``fn(key)``. A listener that raises is logged and skipped."""
        if event not in self._listeners:
            raise ArgumentError(f"event must be one of {EVENTS}, got {event!r}")
        self._listeners[event].append(fn)

    def remove_listener(self, event: str, fn: Listener) -> None:
        """Remove a listener added with :meth:`add_listener`."""
        if event not in self._listeners:
            raise ArgumentError(f"event must be one of {EVENTS}, got {event!r}")
        if fn in self._listeners[event]:
            self._listeners[event].remove(fn)

    def _emit(self, event: str, *args: Any) -> None:
        for fn in list(self._listeners[event]):
            try:
                fn(*args)
            except Exception:
                log.exception("%s listener failed", event)

    # -- serving -----------------------------------------------------------

    def _on_query(self, query: IncomingQuery) -> bytes | None:
        return self._serve(query, False)

    def _on_update(self, query: IncomingQuery) -> bytes | None:
        return self._serve(query, True)

    def _serve(self, query: IncomingQuery, update: bool) -> bytes | None:
        try:
            req = messages.decode_peers_request(query.value or b"")
        except DecodeError:
            return None
        res = self.process(req, query.node.address, query.target, update=update, now=query.now)
        return messages.encode_peers_response(res) if res is not None else None

    def process(
        self,
        req: messages.PeersRequest,
        sender: Address,
        target: bytes,
        *,
        update: bool,
        now: float,
    ) -> messages.PeersResponse | None:
        """Serve one ``peers`` request from ``sender`` about ``target``:
        store or delete an announcement (``update=True``), and answer with
        the stored peers (never the sender's own), or None for no value."""
        port = req.port or sender.port
        if not port:
            return None
        codec = self.dht.peer_codec
        origin = Address(sender.host, port)
        try:
            peer = codec.encode(origin)
        except ValueError:
            return None
        local = req.local_address
        if update and req.type == messages.ANNOUNCE:
            stored = StoredPeer(peer)
            if local is not None and len(local) == 6 and local[4:6] != b"\x00\x00":
                stored = StoredPeer(peer, local[:2], local[2:])
            self._emit("announce", target, origin)
            self.store.put(target, f"{origin.host}:{origin.port}", stored, now)
        elif update and req.type == messages.UNANNOUNCE:
            self._emit("unannounce", target, origin)
            self.store.delete(target, f"{origin.host}:{origin.port}")
            return None
        elif req.type == messages.LOOKUP:
            self._emit("lookup", target)

        local_filter = own_local = None
        if local is not None and len(local) == 6:
            local_filter, own_local = local[:2], local[2:]
        peers: list[bytes] = []
        local_peers: list[bytes] = []
        size = 0
        entry_size = codec.size
        for n in self.store.iterate(target, now):
            if size >= MAX_REPLY:
                break
            if n.peer == peer:
                continue
            peers.append(n.peer)
            size += entry_size
            if (
                local_filter is not None
                and n.local_peer is not None
                and n.local_filter == local_filter
                and n.local_peer != own_local
            ):
                local_peers.append(n.local_peer)
                size += 4
        if not peers and not local_peers:
            return None
        return messages.PeersResponse(
            peers=b"".join(peers), local_peers=b"".join(local_peers) if local_peers else None
        )

    # -- client side -------------------------------------------------------

    def _own_results(
        self, key: bytes, req: messages.PeersRequest, mapper: _Mapper, now: float
    ) -> list[PeerResponse]:
        """The node's own stored peers for ``key``, as if it answered itself."""
        if not self.store.has(key):
            return []
        me = self.address or Address("0.0.0.0", 0)
        host = me.host
        if host in ("0.0.0.0", "::"):
            host = "::1" if self.dht.ipv6 else "127.0.0.1"
        node = Address(host, me.port)
        res = self.process(req, node, key, update=False, now=now)
        if res is None:
            return []
        mapped = mapper(QueryResponse(Node(self.dht.id, node), messages.encode_peers_response(res)))
        return [mapped] if mapped is not None else []

    def _run(
        self, key: bytes, req: messages.PeersRequest, now: float, *, update: bool, verbose: bool
    ) -> Query:
        mapper = _Mapper(self.dht, req.local_address)
        initial = self._own_results(key, req, mapper, now)
        return self.dht.query(
            COMMAND,
            key,
            messages.encode_peers_request(req),
            now=now,
            update=update,
            verbose=verbose,
            map=mapper,
            initial=initial,
        )

    def lookup(self, key: bytes, *, now: float, local_address: Any = None) -> Query:
        """Start a lookup of ``key`` (32 bytes) at ``now``; the query's
        results are :class:`PeerResponse` values, this node's own stored
        peers first. With ``local_address`` (IPv4 ``(host, port)``, port
        may be 0), announcers in the same /16 come back in ``local_peers``.
        Raises ArgumentError for a bad key or local address."""
        key = check_key(key)
        req = messages.PeersRequest(
            type=messages.LOOKUP, port=0, local_address=encode_local_address(local_address)
        )
        return self._run(key, req, now, update=False, verbose=False)

    def announce(
        self, key: bytes, *, now: float, port: int = 0, local_address: Any = None
    ) -> Query:
        """Start an announce of ``key`` at ``now`` (a verbose update whose
        results are :class:`PeerResponse` values, like a lookup's).
        ``port`` overrides the announced port (0: the one our datagrams
        come from); ``local_address`` announces a LAN address too."""
        key = check_key(key)
        req = announce_request(messages.ANNOUNCE, port, local_address)
        return self._run(key, req, now, update=True, verbose=True)

    def unannounce(
        self, key: bytes, *, now: float, port: int = 0, local_address: Any = None
    ) -> Query:
        """Start withdrawing an announcement of ``key`` at ``now`` (same
        ``port``/``local_address`` as announced); yields nothing."""
        key = check_key(key)
        req = announce_request(messages.UNANNOUNCE, port, local_address)
        return self.dht.query(
            COMMAND, key, messages.encode_peers_request(req), now=now, update=True
        )


def announce_request(kind: int, port: int, local_address: Any) -> messages.PeersRequest:
    """The ``peers`` request of an announce or unannounce (``kind``)."""
    check_port(port)
    return messages.PeersRequest(
        type=kind, port=port, local_address=encode_local_address(local_address)
    )
