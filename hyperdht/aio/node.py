"""The asyncio DHT node: the blocking :class:`~hyperdht.dhtrpc.DHT`'s
construction, validation and bookkeeping, awaited instead of waited for.

An :class:`AsyncDHT` holds a :class:`~hyperdht.dhtrpc.DHT` on the asyncio
driver (or on a simulator host) and uses everything of it that never
blocks: argument checks, the core, handlers' registration, streams'
validation, ``send_datagram``, ``nodes``, ``close``. What blocks there
(waiting for a request's future or a query's results) is an ``await``
here. Nothing runs on a thread of its own: every callback is the loop's.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any, TypeVar

from ..addressing import parse_address, resolve_address
from ..dhtrpc.core import DEFER, DHTCore
from ..dhtrpc.limits import Limits
from ..dhtrpc.node import DHT, DatagramHandler, MeasurementSteps, Step
from ..dhtrpc.query import Query
from ..dhtrpc.stream import QueryStream
from ..dhtrpc.types import IncomingQuery, QueryResponse, RemoteNode, Stats
from ..drivers.base import Driver, SocketLike
from ..errors import ArgumentError, ClosedError
from ..future import Future
from ..ipencoding import Address, Node
from .stream import AsyncQueryStream

__all__ = ["AsyncDHT", "AsyncQueryHandler"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``handler(node, query)`` returning the value to send back (bytes or
#: None), or an awaitable of it (an ``async def`` handler); raising means
#: "no response".
AsyncQueryHandler = Callable[[RemoteNode, IncomingQuery], "bytes | Awaitable[bytes | None] | None"]


def _check_backend(backend: Any) -> Any:
    if isinstance(backend, str) and backend != "asyncio":
        raise ArgumentError(
            f"backend: the asyncio API runs on the event loop: 'asyncio' or a Backend "
            f"object (a simulator host), not {backend!r}"
        )
    return backend


class AsyncDHT:
    """A DHT RPC node on the running asyncio event loop, wire-compatible
    with Node.js ``dht-rpc@2.3.0``.

    Takes the keywords of :class:`~hyperdht.dhtrpc.DHT`; ``backend`` is
    ``"asyncio"`` (default) or a backend object whose driver runs on the
    loop's thread (a :class:`hyperdht.testing.Network` host, see
    :func:`hyperdht.aio.run_network`). Create it inside a coroutine; it has
    no thread of its own. ``inline_handlers=False`` runs plain-function
    handlers in the loop's default executor (for handlers that block).
    Raises ArgumentError (a ValueError) for bad arguments, BindError (an
    OSError) when the socket cannot be bound, StateError without a running
    loop.
    """

    def __init__(
        self,
        *,
        id: bytes | None = None,
        bootstrap: Iterable[str | tuple[str, int]] | str = (),
        host: str = "0.0.0.0",
        port: int = 0,
        ephemeral: bool | str = False,
        concurrency: int = 16,
        nodes: Iterable[Node] = (),
        socket: SocketLike | None = None,
        backend: Any = "asyncio",
        timeout: float = 1.0,
        ipv6: bool = False,
        inline_handlers: bool = True,
        rate_limit: float | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._init(
            DHT,
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
            rate_limit=rate_limit,
            limits=limits,
        )

    def _init(self, cls: Callable[..., DHT], inline_handlers: bool, **kwargs: Any) -> None:
        """Open the blocking node ``cls(**kwargs)`` this one awaits (for
        :class:`~hyperdht.aio.AsyncHyperDHT`)."""
        _check_backend(kwargs["backend"])
        self._inline = inline_handlers
        # Handlers always run inline in the blocking node: the wrapper
        # below decides (an awaitable or an executor is the DEFER path).
        self._node = cls(inline_handlers=True, **kwargs)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._loop = asyncio.get_running_loop()
        self._connect_cap = 10 * float(kwargs["timeout"])
        # The background opener-TTL measurement as a task of the loop, not
        # on the driver's executor: no datagram has been read yet (that
        # needs a turn of the loop), so none of it ran the default.
        self._node.measurement_scheduler = self._schedule_measurement

    # -- properties --------------------------------------------------------

    @property
    def id(self) -> bytes:
        """This node's 32-byte id."""
        return self._node.id

    @property
    def address(self) -> Address:
        """The local address the socket is bound to."""
        return self._node.address

    @property
    def ephemeral(self) -> bool:
        """True while this node gives out no id (with ``ephemeral="auto"``:
        until it is found reachable)."""
        return self._node.ephemeral

    @property
    def reachability(self) -> str:
        """Whether unsolicited datagrams reach this node: ``"unknown"``,
        ``"reachable"`` or ``"unreachable"`` (see
        :attr:`hyperdht.dhtrpc.DHT.reachability`)."""
        return self._node.reachability

    @property
    def ipv6(self) -> bool:
        """True for an IPv6 node."""
        return self._node.ipv6

    @property
    def stats(self) -> Stats:
        """Counters: datagrams in/out, requests served, timeouts, drops."""
        return self._node.stats

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._node.closed

    @property
    def core(self) -> DHTCore:
        """The sans-I/O core (for advanced use, on the loop's thread)."""
        return self._node.core

    @property
    def driver(self) -> Driver:
        """The driver running the core."""
        return self._node.driver

    # -- helpers -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._node.closed:
            raise ClosedError("the DHT node is closed")

    def _addr(self, value: Any, what: str) -> Address:
        return resolve_address(parse_address(value, what=what), ipv6=self.ipv6, what=what)

    async def _await(self, fut: Future[T]) -> T:
        """Await a core future; cancelling the awaiting task withdraws the
        request behind it (and nothing else)."""
        await self._settled(fut)
        return fut.result()

    async def _settled(self, fut: Future[Any]) -> None:
        """Wait until ``fut`` is done (its outcome stays in it); cancelling
        the awaiting task cancels ``fut``."""
        if not fut.done():
            waiter = asyncio.get_running_loop().create_future()

            def wake(_: Future[Any]) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            fut.add_done_callback(wake)
            try:
                await waiter
            except asyncio.CancelledError:
                with self.driver.locked():
                    fut.cancel()
                raise

    def _stream(self, stream: QueryStream[Any]) -> AsyncQueryStream[Any]:
        """Await the query that the blocking node validated and started."""
        return AsyncQueryStream(self.driver, stream.query)

    def _start(self, start: Callable[[float], Query]) -> AsyncQueryStream[Any]:
        """Run ``start(now)`` on the core with the lock and stream its query."""
        self._check_open()
        driver = self.driver
        with driver.locked():
            query = start(driver.now())
        return AsyncQueryStream(driver, query)

    # -- operations --------------------------------------------------------

    async def ping(self, addr: str | tuple[str, int]) -> Address:
        """Ping ``addr``; returns our address as that node saw it. Raises
        RequestTimeout when it does not answer."""
        self._check_open()
        target = self._addr(addr, "addr")
        driver = self.driver
        with driver.locked():
            fut = self.core.ping(target, now=driver.now())
        return await self._await(fut)

    async def holepunch(
        self, peer: str | tuple[str, int], referrer: str | tuple[str, int]
    ) -> Address:
        """Punch a hole to ``peer`` through ``referrer`` and return the
        address the peer's answer came from (use that one). Raises
        RequestTimeout when the punch fails."""
        self._check_open()
        p = self._addr(peer, "peer")
        r = self._addr(referrer, "referrer")
        driver = self.driver
        with driver.locked():
            fut = self.core.holepunch(p, r, now=driver.now())
        return await self._await(fut)

    async def connect(
        self,
        peer: str | tuple[str, int],
        referrer: str | tuple[str, int] | None = None,
        *,
        timeout: float | None = None,
        opener_ttl: int | None = None,
    ) -> Address:
        """Reach ``peer`` whichever side is behind a NAT and return the
        address that answered (send to that one); the flow of
        :meth:`hyperdht.dhtrpc.DHT.connect`, whose opener-TTL measurement
        is awaited too. ``referrer`` is the node that gave us the peer.

        Raises RequestTimeout when nothing answered within ``timeout``
        seconds (default: 10 request timeouts; checked when a step of the
        flow ends, so it can come up to one request timeout late), and
        ArgumentError for a bad address, ``opener_ttl`` or ``timeout``.
        Cancelling the awaiting task withdraws the connect's request in
        flight.
        """
        steps = self._node.connect_steps(
            peer,
            referrer,
            timeout=self._connect_cap if timeout is None else timeout,
            opener_ttl=opener_ttl,
        )
        fut = await self._run_steps(steps)
        return await self._await(fut)

    async def _run_steps(self, steps: Generator[Step, None, T]) -> T:
        """Run the blocking node's ``steps`` (see
        :meth:`hyperdht.dhtrpc.DHT.run_steps`) awaiting each: a core future
        with :meth:`_await`, a pause with :func:`asyncio.sleep`."""
        try:
            step = next(steps)
            while True:
                if isinstance(step, Future):
                    await self._settled(step)  # the steps read its outcome
                else:
                    await asyncio.sleep(step)
                step = steps.send(None)
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            steps.close()

    def _schedule_measurement(self, steps: MeasurementSteps) -> None:
        if self.closed:
            steps.close()
            return
        task = self._loop.create_task(self._run_steps(steps))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def bootstrap(self) -> None:
        """Run a bootstrap round now and wait for it; raises QueryError if
        no node answered."""
        core = self.core
        stream = self._start(lambda now: core.bootstrap(now=now))
        async for _ in stream:
            pass
        if stream.error is not None:
            raise stream.error

    async def ready(self) -> None:
        """Wait until the initial background bootstrap has finished (at
        once if there was none). Bound it with :func:`asyncio.wait_for`."""
        query = self._node.bootstrap_query
        if query is None or query.done:
            return
        waiter = asyncio.get_running_loop().create_future()

        def done(_: Query) -> None:
            if not waiter.done():
                waiter.set_result(None)

        with self.driver.lock:
            query.add_done_callback(done)
        await waiter

    def nodes(self) -> list[Node]:
        """A snapshot of the routing table; ``nodes=`` accepts it."""
        return self._node.nodes()

    def on_query(self, command: str, handler: AsyncQueryHandler | None) -> None:
        """Handle queries of ``command``: ``handler(node, query)`` returns
        the value to send back, or is an ``async def`` whose result is (it
        answers when it returns, off the receive path); raising means no
        response. None removes the handler."""
        self._node.on_query(command, self._wrap(handler))

    def on_update(self, command: str, handler: AsyncQueryHandler | None) -> None:
        """Like :meth:`on_query`, for updates."""
        self._node.on_update(command, self._wrap(handler))

    def _wrap(self, handler: AsyncQueryHandler | None) -> Any:
        if handler is None:
            return None
        if not callable(handler):
            raise ArgumentError(f"handler must be callable, got {handler!r}")
        h = handler
        loop = asyncio.get_running_loop()
        inline = self._inline

        def wrapped(node: RemoteNode, query: IncomingQuery) -> Any:
            if not inline and not inspect.iscoroutinefunction(h):
                self._answer_later(loop.run_in_executor(None, h, node, query), query)  # type: ignore[arg-type]
                return DEFER
            value = h(node, query)
            if inspect.isawaitable(value):
                self._answer_later(value, query)
                return DEFER
            return value

        return wrapped

    def _answer_later(self, value: Awaitable[bytes | None], query: IncomingQuery) -> None:
        task = asyncio.ensure_future(self._answer(value, query))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, value: Awaitable[bytes | None], query: IncomingQuery) -> None:
        try:
            result = await value
            if inspect.isawaitable(result):  # an async handler run in the executor
                result = await result
        except Exception:
            log.debug("handler for %s raised", query.command, exc_info=True)
            self.stats.handler_errors += 1
            return
        if not self.closed:
            with self.driver.locked():
                self.core.reply(query, result)

    def query(
        self,
        command: str,
        target: bytes,
        value: bytes | None = None,
        *,
        nodes: Iterable[Node | Address | tuple[str, int]] | None = None,
        concurrency: int | None = None,
        holepunching: bool = True,
    ) -> AsyncQueryStream[QueryResponse]:
        """Query the nodes closest to ``target`` with ``command`` (see
        :meth:`hyperdht.dhtrpc.DHT.query`); ``async for`` the
        :class:`QueryResponse` objects."""
        return self._stream(
            self._node.query(
                command,
                target,
                value,
                nodes=nodes,
                concurrency=concurrency,
                holepunching=holepunching,
            )
        )

    def update(
        self,
        command: str,
        target: bytes,
        value: bytes | None = None,
        *,
        nodes: Iterable[Node | Address | tuple[str, int]] | None = None,
        concurrency: int | None = None,
        holepunching: bool = True,
        verbose: bool = False,
    ) -> AsyncQueryStream[QueryResponse]:
        """A query followed by a commit (see
        :meth:`hyperdht.dhtrpc.DHT.update`)."""
        return self._stream(
            self._node.update(
                command,
                target,
                value,
                nodes=nodes,
                concurrency=concurrency,
                holepunching=holepunching,
                verbose=verbose,
            )
        )

    def send_datagram(self, data: bytes, addr: str | tuple[str, int]) -> None:
        """Send an application datagram on the DHT's own UDP port (see
        :meth:`hyperdht.dhtrpc.DHT.send_datagram`); never blocks."""
        self._node.send_datagram(data, addr)

    def on_datagram(self, handler: DatagramHandler | None) -> None:
        """Receive application datagrams: ``handler(data, address)`` runs on
        the loop for each (keep it quick). None removes it."""
        self._node.on_datagram(handler)

    async def close(self) -> None:
        """Stop everything: pending requests fail, streams end, handler
        tasks are cancelled and awaited, the socket closes (unless it was
        passed in); no task, timer or reader is left. Idempotent."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        self._node.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> AsyncDHT:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return "<Async" + repr(self._node)[1:]
