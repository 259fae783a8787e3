"""The blocking peer-discovery node: a :class:`~hyperdht.dhtrpc.DHT` whose
core also runs a :class:`~hyperdht.discovery.core.DiscoveryCore`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..arguments import check_positive_int, check_positive_number
from ..dhtrpc.core import DHTCore
from ..dhtrpc.limits import Limits
from ..dhtrpc.node import DHT, QueryHandler
from ..dhtrpc.query import QueryOptions
from ..dhtrpc.stream import QueryStream, discard_stream
from ..dhtrpc.types import QueryResponse
from ..drivers.base import SocketLike
from ..errors import ArgumentError
from ..ipencoding import Node
from .core import COMMAND, DiscoveryCore, Listener, PeerResponse
from .store import DEFAULT_MAX_AGE, DEFAULT_MAX_SIZE

__all__ = ["HyperDHT"]


class HyperDHT(DHT):
    """A DHT node with peer discovery, wire-compatible with Node.js
    ``hyperdht@1.3.0``.

    Takes every keyword of :class:`~hyperdht.dhtrpc.DHT`, plus
    ``max_age`` (seconds an announcement is kept, default 15 minutes) and
    ``max_peers`` (store size per generation, default 65536). Everything
    :class:`~hyperdht.dhtrpc.DHT` offers is here too, except that the
    ``peers`` command is reserved (handling or querying it raises
    ArgumentError). ``ephemeral`` defaults to ``"auto"``: ephemeral
    until the node finds that unsolicited datagrams reach it (see
    :attr:`~hyperdht.dhtrpc.DHT.reachability`), a full node from then on.
    """

    def __init__(
        self,
        *,
        id: bytes | None = None,
        bootstrap: Iterable[str | tuple[str, int]] | str = (),
        host: str = "0.0.0.0",
        port: int = 0,
        ephemeral: bool | str = "auto",
        concurrency: int = 16,
        nodes: Iterable[Node] = (),
        socket: SocketLike | None = None,
        backend: Any = "thread",
        timeout: float = 1.0,
        ipv6: bool = False,
        inline_handlers: bool = True,
        max_age: float = DEFAULT_MAX_AGE,
        max_peers: int = DEFAULT_MAX_SIZE,
        rate_limit: float | None = None,
        limits: Limits | None = None,
    ) -> None:
        # Checked before the socket is bound, so a bad value leaks nothing.
        self._max_age = check_positive_number(max_age, "max_age")
        self._max_peers = check_positive_int(max_peers, "max_peers")
        super().__init__(
            id=id,
            bootstrap=bootstrap,
            host=host,
            port=port,
            ephemeral=ephemeral,
            concurrency=concurrency,
            nodes=nodes,
            socket=socket,
            backend=backend,
            timeout=timeout,
            ipv6=ipv6,
            inline_handlers=inline_handlers,
            rate_limit=rate_limit,
            limits=limits,
        )

    def _setup_core(self, core: DHTCore) -> None:
        # Before the driver starts: a peers request never meets a node
        # without the handler.
        self._discovery = DiscoveryCore(
            core, max_age=self._max_age, max_peers=self._max_peers, address=self.address
        )

    @property
    def discovery(self) -> DiscoveryCore:
        """The sans-I/O peer-discovery core (for advanced use; hold
        ``driver.lock``)."""
        return self._discovery

    # -- events ------------------------------------------------------------

    def add_listener(self, event: str, fn: Listener) -> None:
        """Observe what this node serves: ``"announce"`` and
        ``"unannounce"`` call ``fn(key, peer_address)``, ``"lookup"`` calls
        ``fn(key)``. Listeners run on the receiver: keep them quick.
        Raises ArgumentError for an unknown event."""
        with self.driver.lock:
            self._discovery.add_listener(event, fn)

    def remove_listener(self, event: str, fn: Listener) -> None:
        """Remove a listener added with :meth:`add_listener`."""
        with self.driver.lock:
            self._discovery.remove_listener(event, fn)

    # -- peer discovery ----------------------------------------------------

    def lookup(self, key: bytes, *, local_address: Any = None) -> QueryStream[PeerResponse]:
        """Find the peers announced under ``key`` (32 bytes).

        With ``local_address`` (an IPv4 ``(host, port)``, port may be 0),
        peers that announced a LAN address in the same /16 also come back in
        ``local_peers``. Returns a stream of :class:`PeerResponse`; this
        node's own stored peers for the key come first. Raises
        ArgumentError for a bad key or address.
        """
        d = self._discovery
        return self._start_query(lambda now: d.lookup(key, now=now, local_address=local_address))

    def announce(
        self, key: bytes, *, port: int = 0, local_address: Any = None
    ) -> QueryStream[PeerResponse]:
        """Announce that we listen on ``key`` and stream what the nodes on
        the way already know (like a lookup). ``port`` overrides the
        announced port (default: the port our datagrams come from);
        ``local_address`` announces a LAN address too. Re-announce every
        4-5 minutes to stay listed."""
        d = self._discovery
        return self._start_query(
            lambda now: d.announce(key, now=now, port=port, local_address=local_address)
        )

    def announce_discard(self, key: bytes, *, port: int = 0, local_address: Any = None) -> None:
        """Announce and wait until done; raises QueryError on failure."""
        discard_stream(self.announce(key, port=port, local_address=local_address))

    def unannounce(self, key: bytes, *, port: int = 0, local_address: Any = None) -> None:
        """Withdraw an announcement (same ``port``/``local_address`` as
        announced) and wait until done; raises QueryError on failure."""
        d = self._discovery
        discard_stream(
            self._start_query(
                lambda now: d.unannounce(key, now=now, port=port, local_address=local_address)
            )
        )

    # -- the reserved command ----------------------------------------------

    def _register(self, command: str, handler: QueryHandler | None, *, update: bool) -> None:
        _check_not_reserved(command)
        super()._register(command, handler, update=update)

    def _query(
        self, command: str, target: bytes, value: bytes | None, options: QueryOptions
    ) -> QueryStream[QueryResponse]:
        _check_not_reserved(command)
        return super()._query(command, target, value, options)

    def __repr__(self) -> str:
        return "<Hyper" + super().__repr__()[1:]


def _check_not_reserved(command: str) -> None:
    if command == COMMAND:
        raise ArgumentError(f"command {COMMAND!r} is reserved for peer discovery")
