"""The asyncio peer-discovery node: :class:`AsyncDHT` over a
:class:`~hyperdht.discovery.HyperDHT`, whose core also runs the
sans-I/O :class:`~hyperdht.discovery.core.DiscoveryCore`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..dhtrpc.limits import Limits
from ..discovery.core import DiscoveryCore, Listener, PeerResponse
from ..discovery.node import HyperDHT
from ..discovery.store import DEFAULT_MAX_AGE, DEFAULT_MAX_SIZE
from ..drivers.base import SocketLike
from ..ipencoding import Node
from .node import AsyncDHT
from .stream import AsyncQueryStream, discard_stream

__all__ = ["AsyncHyperDHT"]


class AsyncHyperDHT(AsyncDHT):
    """A DHT node with peer discovery on the running asyncio event loop,
    wire-compatible with Node.js ``hyperdht@1.3.0``.

    Takes the keywords of :class:`~hyperdht.discovery.HyperDHT` (``backend``
    as :class:`AsyncDHT` says). ``lookup`` and ``announce`` stream the same
    :class:`~hyperdht.discovery.PeerResponse` objects as the blocking API;
    the ``peers`` command is reserved.
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
        backend: Any = "asyncio",
        timeout: float = 1.0,
        ipv6: bool = False,
        inline_handlers: bool = True,
        max_age: float = DEFAULT_MAX_AGE,
        max_peers: int = DEFAULT_MAX_SIZE,
        rate_limit: float | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._init(
            HyperDHT,
            inline_handlers,
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
            max_age=max_age,
            max_peers=max_peers,
            rate_limit=rate_limit,
            limits=limits,
        )

    @property
    def _hyper(self) -> HyperDHT:
        node = self._node
        assert isinstance(node, HyperDHT)
        return node

    @property
    def discovery(self) -> DiscoveryCore:
        """The sans-I/O peer-discovery core (for advanced use)."""
        return self._hyper.discovery

    def add_listener(self, event: str, fn: Listener) -> None:
        """Observe what this node serves (see
        :meth:`hyperdht.discovery.HyperDHT.add_listener`); listeners run
        on the loop."""
        self._hyper.add_listener(event, fn)

    def remove_listener(self, event: str, fn: Listener) -> None:
        """Remove a listener added with :meth:`add_listener`."""
        self._hyper.remove_listener(event, fn)

    def lookup(self, key: bytes, *, local_address: Any = None) -> AsyncQueryStream[PeerResponse]:
        """Find the peers announced under ``key`` (32 bytes): ``async for``
        the :class:`PeerResponse` objects, this node's own stored peers
        first. Raises ArgumentError for a bad key or address."""
        return self._stream(self._hyper.lookup(key, local_address=local_address))

    def announce(
        self, key: bytes, *, port: int = 0, local_address: Any = None
    ) -> AsyncQueryStream[PeerResponse]:
        """Announce that we listen on ``key`` and stream what the nodes on
        the way already know (see :meth:`hyperdht.discovery.HyperDHT.announce`)."""
        return self._stream(self._hyper.announce(key, port=port, local_address=local_address))

    async def announce_discard(
        self, key: bytes, *, port: int = 0, local_address: Any = None
    ) -> None:
        """Announce and wait until done; raises QueryError on failure."""
        await discard_stream(self.announce(key, port=port, local_address=local_address))

    async def unannounce(self, key: bytes, *, port: int = 0, local_address: Any = None) -> None:
        """Withdraw an announcement (same ``port``/``local_address`` as
        announced) and wait until done; raises QueryError on failure."""
        d = self.discovery
        await discard_stream(
            self._start(
                lambda now: d.unannounce(key, now=now, port=port, local_address=local_address)
            )
        )
