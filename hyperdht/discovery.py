"""Peer discovery on the DHT (after mafintosh's ``hyperdht@1.3.0``).

Nodes announce that they listen on a 32-byte key; anyone can look the key
up and get the announcers' public addresses (and LAN addresses of peers in
the same /16). All of it travels as the DHT command ``peers`` (PROTOCOL.md
section 7): a lookup is a query, an announce a verbose update, an
unannounce an update.

Differences from the reference, on purpose (docs/PROTOCOL-NOTES.md):

* a requester's own LAN address is never returned to it in ``localPeers``
  (the reference compares a 4-byte entry with the 6-byte address, so it
  never matches);
* the default max age of an announcement is 15 minutes (the Go port's), not
  about 6; it is the ``max_age`` constructor option.
"""

from __future__ import annotations

import logging
import socket as _socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import messages
from .addressing import parse_address
from .dhtrpc.node import DHT, DatagramHandler, QueryHandler
from .dhtrpc.stream import QueryStream, discard_stream
from .dhtrpc.types import IncomingQuery
from .dhtrpc.types import QueryResponse as RpcQueryResponse
from .errors import DecodeError
from .ipencoding import Address, Node
from .peerstore import DEFAULT_MAX_AGE, DEFAULT_MAX_SIZE, PeerStore, StoredPeer

__all__ = ["HyperDHT", "QueryResponse", "EVENTS"]

log = logging.getLogger(__name__)

COMMAND = "peers"
#: Replies are packed while peers plus local peers stay under this size.
MAX_REPLY = 900
#: Events :meth:`HyperDHT.add_listener` accepts.
EVENTS = ("announce", "unannounce", "lookup")


@dataclass(frozen=True, slots=True)
class QueryResponse:
    """One node's answer to a lookup or announce: the node that answered,
    the public addresses announced under the key, and the LAN addresses of
    announcers in the caller's /16 (only when a ``local_address`` was
    given)."""

    node: Address
    peers: list[Address] = field(default_factory=list)
    local_peers: list[Address] = field(default_factory=list)


def _check_key(key: Any) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
        raise ValueError(f"key must be 32 bytes, got {key!r}")
    return bytes(key)


def _encode_local(local_address: Any) -> bytes | None:
    """``(host, port)`` -> 6 bytes; port 0 is allowed here (a lookup's
    local address only needs the host)."""
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
        raise ValueError(f"local_address: expected (host, port), got {local_address!r}")
    try:
        packed = _socket.inet_aton(addr.host)
        if addr.host.count(".") != 3:
            raise OSError
    except (OSError, TypeError):
        raise ValueError(f"local_address: {addr.host!r} is not an IPv4 address") from None
    port = addr.port
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
        raise ValueError(f"local_address: port must be 0-65535, got {port!r}")
    return packed + port.to_bytes(2, "big")


def _decode_local_peers(buf: bytes | None, local: bytes | None) -> list[Address]:
    out: list[Address] = []
    if not buf or not local:
        return out
    prefix = f"{local[0]}.{local[1]}."
    for i in range(0, len(buf) - 3, 4):
        port = (buf[i + 2] << 8) | buf[i + 3]
        if port:
            out.append(Address(f"{prefix}{buf[i]}.{buf[i + 1]}", port))
    return out


class HyperDHT:
    """A DHT node with peer discovery. Same constructor keywords as
    :class:`~hyperdht.dhtrpc.DHT`, plus ``max_age`` (seconds an
    announcement is kept, default 15 minutes) and ``max_peers`` (store
    size per generation, default 65536).

    Everything :class:`~hyperdht.dhtrpc.DHT` offers is here too, except that
    the ``peers`` command is reserved.
    """

    def __init__(
        self,
        *args: Any,
        max_age: float = DEFAULT_MAX_AGE,
        max_peers: int = DEFAULT_MAX_SIZE,
        **kwargs: Any,
    ) -> None:
        self._setup(DHT(*args, **kwargs), max_age, max_peers)

    @classmethod
    def from_dht(
        cls, dht: DHT, *, max_age: float = DEFAULT_MAX_AGE, max_peers: int = DEFAULT_MAX_SIZE
    ) -> HyperDHT:
        """Add peer discovery to an existing :class:`~hyperdht.dhtrpc.DHT`
        (which then belongs to the new object: closing one closes both)."""
        if not isinstance(dht, DHT):
            raise ValueError(f"dht must be a DHT, got {dht!r}")
        self = cls.__new__(cls)
        self._setup(dht, max_age, max_peers)
        return self

    def _setup(self, dht: DHT, max_age: float, max_peers: int) -> None:
        self.dht = dht
        try:
            self._store = PeerStore(max_size=max_peers, max_age=max_age)
        except ValueError:
            dht.close()
            raise
        self._listeners: dict[str, list[Callable[..., None]]] = {e: [] for e in EVENTS}
        core = dht.core
        with dht.driver.lock:
            core.on_request(COMMAND, lambda q: self._on_peers(q, False), update=False)
            core.on_request(COMMAND, lambda q: self._on_peers(q, True), update=True)

    # -- events ------------------------------------------------------------

    def add_listener(self, event: str, fn: Callable[..., None]) -> None:
        """Observe what this node serves: ``"announce"`` and
        ``"unannounce"`` call ``fn(key, peer_address)``, ``"lookup"`` calls
        ``fn(key)``. Listeners run on the receiver: keep them quick."""
        if event not in self._listeners:
            raise ValueError(f"event must be one of {EVENTS}, got {event!r}")
        self._listeners[event].append(fn)

    def remove_listener(self, event: str, fn: Callable[..., None]) -> None:
        """Remove a listener added with :meth:`add_listener`."""
        if event not in self._listeners:
            raise ValueError(f"event must be one of {EVENTS}, got {event!r}")
        if fn in self._listeners[event]:
            self._listeners[event].remove(fn)

    def _emit(self, event: str, *args: Any) -> None:
        for fn in list(self._listeners[event]):
            try:
                fn(*args)
            except Exception:
                log.exception("%s listener failed", event)

    # -- serving -----------------------------------------------------------

    def _on_peers(self, query: IncomingQuery, update: bool) -> bytes | None:
        try:
            req = messages.decode_peers_request(query.value or b"")
        except DecodeError:
            return None
        res = self._process(req, query.node.address, query.target, update)
        return messages.encode_peers_response(res) if res is not None else None

    def _process(
        self, req: messages.PeersRequest, sender: Address, target: bytes, update: bool
    ) -> messages.PeersResponse | None:
        port = req.port or sender.port
        if not port:
            return None
        codec = self.dht.core.peer_codec
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
            self._store.put(target, f"{origin.host}:{origin.port}", stored, self.dht.driver.now())
        elif update and req.type == messages.UNANNOUNCE:
            self._emit("unannounce", target, origin)
            self._store.delete(target, f"{origin.host}:{origin.port}")
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
        for n in self._store.iterate(target, self.dht.driver.now()):
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

    def _mapper(self, local: bytes | None) -> Callable[[RpcQueryResponse], QueryResponse | None]:
        codec = self.dht.core.peer_codec

        def map(r: RpcQueryResponse) -> QueryResponse | None:
            if r.value is None:
                return None
            try:
                res = messages.decode_peers_response(r.value)
                if res.peers is None:
                    return None
                peers = codec.decode_list(res.peers)
            except DecodeError:
                return None
            return QueryResponse(r.node.address, peers, _decode_local_peers(res.local_peers, local))

        return map

    def _local_results(self, key: bytes, req: messages.PeersRequest) -> list[QueryResponse]:
        """The node's own stored peers for ``key``, as if it answered itself."""
        with self.dht.driver.lock:
            if not self._store.has(key):
                return []
            me = self.dht.address
            host = me.host
            if host in ("0.0.0.0", "::"):
                host = "::1" if self.dht.ipv6 else "127.0.0.1"
            node = Address(host, me.port)
            res = self._process(req, node, key, False)
        if res is None:
            return []
        mapped = self._mapper(req.local_address)(RpcQueryResponse(Node(self.id, node), _enc(res)))
        return [mapped] if mapped is not None else []

    def _run(
        self, key: bytes, req: messages.PeersRequest, *, update: bool, verbose: bool
    ) -> QueryStream[QueryResponse]:
        initial = self._local_results(key, req)
        value = messages.encode_peers_request(req)
        local = req.local_address
        core = self.dht.core
        return self.dht._stream(
            lambda: core.query(
                COMMAND,
                key,
                value,
                update=update,
                verbose=verbose,
                map=self._mapper(local),
                initial=initial,
            )
        )

    def lookup(self, key: bytes, *, local_address: Any = None) -> QueryStream[QueryResponse]:
        """Find the peers announced under ``key`` (32 bytes).

        With ``local_address`` (an IPv4 ``(host, port)``, port may be 0),
        peers that announced a LAN address in the same /16 also come back in
        ``local_peers``. Returns a stream of :class:`QueryResponse`; this
        node's own stored peers for the key come first.
        """
        key = _check_key(key)
        req = messages.PeersRequest(
            type=messages.LOOKUP, port=0, local_address=_encode_local(local_address)
        )
        return self._run(key, req, update=False, verbose=False)

    def announce(
        self, key: bytes, *, port: int = 0, local_address: Any = None
    ) -> QueryStream[QueryResponse]:
        """Announce that we listen on ``key`` and stream what the nodes on
        the way already know (like a lookup). ``port`` overrides the
        announced port (default: the port our datagrams come from);
        ``local_address`` announces a LAN address too. Re-announce every
        4-5 minutes to stay listed."""
        key = _check_key(key)
        req = self._announce_request(messages.ANNOUNCE, port, local_address)
        return self._run(key, req, update=True, verbose=True)

    def announce_discard(self, key: bytes, *, port: int = 0, local_address: Any = None) -> None:
        """Announce and wait until done; raises QueryError on failure."""
        discard_stream(self.announce(key, port=port, local_address=local_address))

    def unannounce(self, key: bytes, *, port: int = 0, local_address: Any = None) -> None:
        """Withdraw an announcement (same ``port``/``local_address`` as
        announced) and wait until done; raises QueryError on failure."""
        key = _check_key(key)
        req = self._announce_request(messages.UNANNOUNCE, port, local_address)
        value = messages.encode_peers_request(req)
        core = self.dht.core
        discard_stream(self.dht._stream(lambda: core.query(COMMAND, key, value, update=True)))

    @staticmethod
    def _announce_request(kind: int, port: int, local_address: Any) -> messages.PeersRequest:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            raise ValueError(f"port must be 0-65535, got {port!r}")
        return messages.PeersRequest(
            type=kind, port=port, local_address=_encode_local(local_address)
        )

    # -- delegation to the DHT ---------------------------------------------

    @property
    def id(self) -> bytes:
        """This node's 32-byte id."""
        return self.dht.id

    @property
    def address(self) -> Address:
        """The local address the socket is bound to."""
        return self.dht.address

    @property
    def stats(self) -> Any:
        """The DHT's counters (see :class:`hyperdht.dhtrpc.Stats`)."""
        return self.dht.stats

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self.dht.closed

    def ping(self, addr: str | tuple[str, int]) -> Address:
        """See :meth:`hyperdht.dhtrpc.DHT.ping`."""
        return self.dht.ping(addr)

    def holepunch(self, peer: str | tuple[str, int], referrer: str | tuple[str, int]) -> Address:
        """See :meth:`hyperdht.dhtrpc.DHT.holepunch`."""
        return self.dht.holepunch(peer, referrer)

    def bootstrap(self) -> None:
        """See :meth:`hyperdht.dhtrpc.DHT.bootstrap`."""
        self.dht.bootstrap()

    def ready(self, timeout: float | None = None) -> bool:
        """See :meth:`hyperdht.dhtrpc.DHT.ready`."""
        return self.dht.ready(timeout)

    def nodes(self) -> list[Node]:
        """See :meth:`hyperdht.dhtrpc.DHT.nodes`."""
        return self.dht.nodes()

    def _reserved(self, command: str) -> None:
        if command == COMMAND:
            raise ValueError(f"command {COMMAND!r} is reserved for peer discovery")

    def on_query(self, command: str, handler: QueryHandler | None) -> None:
        """See :meth:`hyperdht.dhtrpc.DHT.on_query` (``peers`` is reserved)."""
        self._reserved(command)
        self.dht.on_query(command, handler)

    def on_update(self, command: str, handler: QueryHandler | None) -> None:
        """See :meth:`hyperdht.dhtrpc.DHT.on_update` (``peers`` is reserved)."""
        self._reserved(command)
        self.dht.on_update(command, handler)

    def query(self, command: str, target: bytes, value: bytes | None = None, **kw: Any) -> Any:
        """See :meth:`hyperdht.dhtrpc.DHT.query` (``peers`` is reserved)."""
        self._reserved(command)
        return self.dht.query(command, target, value, **kw)

    def update(self, command: str, target: bytes, value: bytes | None = None, **kw: Any) -> Any:
        """See :meth:`hyperdht.dhtrpc.DHT.update` (``peers`` is reserved)."""
        self._reserved(command)
        return self.dht.update(command, target, value, **kw)

    def send_datagram(self, data: bytes, addr: str | tuple[str, int]) -> None:
        """See :meth:`hyperdht.dhtrpc.DHT.send_datagram`."""
        self.dht.send_datagram(data, addr)

    def on_datagram(self, handler: DatagramHandler | None) -> None:
        """See :meth:`hyperdht.dhtrpc.DHT.on_datagram`."""
        self.dht.on_datagram(handler)

    def close(self) -> None:
        """Close the node (see :meth:`hyperdht.dhtrpc.DHT.close`)."""
        self.dht.close()

    def __enter__(self) -> HyperDHT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<HyperDHT {self.dht!r}>"


def _enc(res: messages.PeersResponse) -> bytes:
    return messages.encode_peers_response(res)


def collect_peers(stream: Iterable[QueryResponse]) -> list[Address]:
    """All distinct peers a lookup stream returned, in order of arrival."""
    seen: dict[Address, None] = {}
    for r in stream:
        for p in r.peers:
            seen.setdefault(p, None)
    return list(seen)
