"""The blocking DHT node: a :class:`DHTCore` run by a driver.

Every public method is safe to call from many threads (or greenlets) at
once: calls into the core are serialised by the driver's lock, and waiting
happens outside it.
"""

from __future__ import annotations

import logging
import socket as _socket
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Any, TypeVar

from ..addressing import DEFAULT_PORT, parse_address, resolve_address
from ..arguments import (
    check_ephemeral,
    check_id,
    check_optional_positive_rate,
    check_port,
    check_positive_int,
    check_positive_number,
)
from ..drivers import create_driver
from ..drivers.base import Driver, SocketLike
from ..errors import ArgumentError, ArgumentTypeError, ClosedError, RequestTimeout, StateError
from ..future import Future
from ..ipencoding import ID_LENGTH, Address, Node
from .connect import WILDCARD_HOSTS
from .core import DEFER, DHTCore
from .limits import Limits
from .natprobe import nat_hop_probe
from .query import Query, QueryOptions
from .stream import QueryStream
from .types import IncomingQuery, QueryResponse, RemoteNode, Stats

__all__ = ["DHT", "QueryHandler", "DatagramHandler", "MeasurementSteps", "Step"]

log = logging.getLogger(__name__)

#: ``handler(node, query) -> bytes | None``; raising means "no response".
QueryHandler = Callable[[RemoteNode, IncomingQuery], "bytes | None"]
#: ``handler(data, address)`` for application datagrams.
DatagramHandler = Callable[[bytes, Address], None]
#: A step of work that must wait (see :meth:`DHT.run_steps`): a core
#: future to wait for, or a number of seconds to pause.
Step = Future[Any] | float
#: The opener-TTL measurement as steps (:meth:`DHT.opener_ttl_measurement`).
MeasurementSteps = Generator[Step, None, None]

T = TypeVar("T")


def _parse_nodes(nodes: Iterable[Any]) -> list[Node]:
    out = []
    for n in nodes:
        if not isinstance(n, Node):
            try:
                n = Node(bytes(n[0]), parse_address(n[1], what="nodes"))
            except (TypeError, IndexError, ValueError) as exc:
                raise ArgumentError(f"nodes: bad entry {n!r} ({exc})") from None
        if len(n.id) != ID_LENGTH:
            raise ArgumentError(f"nodes: id of {n!r} is not {ID_LENGTH} bytes")
        out.append(n)
    return out


class DHT:
    """A DHT RPC node, wire-compatible with Node.js ``dht-rpc@2.3.0``.

    ``bootstrap`` entries are ``"host:port"`` strings (the port defaults to
    49737) or ``(host, port)`` tuples. With any bootstrap address (or
    restored ``nodes``) the node bootstraps in the background at once;
    :meth:`ready` waits for that, :meth:`bootstrap` runs another round.

    ``backend`` is ``"thread"`` (default), ``"gevent"`` or a backend object
    such as a :class:`hyperdht.testing.Network` host. ``socket`` lets you
    pass a bound UDP socket to share (see :meth:`send_datagram`).
    ``inline_handlers=False`` runs query/update handlers off the receive
    path (in the driver's pool), for handlers that block.
    ``ephemeral`` is False (a full node: others add it to their routing
    tables), True (it never gives out its id) or ``"auto"`` (ephemeral
    until :attr:`reachability` is ``"reachable"``, and again should it
    become ``"unreachable"``).
    ``rate_limit`` (requests per second per source host, None: unlimited,
    the default) bounds what the node serves; ``limits`` (a
    :class:`~hyperdht.dhtrpc.limits.Limits`) sets the per-source and
    per-target limits of forwarded pings and answers to third addresses.

    Every argument is a keyword. Raises ArgumentError (a ValueError) for
    bad arguments and BindError (an OSError) when the socket cannot be
    bound.
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
        backend: Any = "thread",
        timeout: float = 1.0,
        ipv6: bool = False,
        inline_handlers: bool = True,
        rate_limit: float | None = None,
        limits: Limits | None = None,
    ) -> None:
        # Checked before the socket is bound, so a bad value leaks nothing.
        rate_limit = check_optional_positive_rate(rate_limit, "rate_limit")
        if limits is not None and not isinstance(limits, Limits):
            raise ArgumentTypeError(f"limits must be a Limits, got {type(limits).__name__}")
        if id is not None:
            check_id(id)
        check_ephemeral(ephemeral)
        check_positive_int(concurrency, "concurrency")
        check_port(port)
        check_positive_number(timeout, "timeout")
        if isinstance(bootstrap, str) or (
            isinstance(bootstrap, tuple) and len(bootstrap) == 2 and isinstance(bootstrap[1], int)
        ):
            bootstrap = [bootstrap]  # one address given on its own
        if ipv6 and host == "0.0.0.0":
            host = "::"
        boot = [
            resolve_address(
                parse_address(b, what="bootstrap", default_port=DEFAULT_PORT),
                ipv6=ipv6,
                what="bootstrap",
            )
            for b in bootstrap
        ]
        restored = _parse_nodes(nodes)
        self._inline = inline_handlers
        self._driver: Driver = create_driver(
            backend, host=host, port=port, ipv6=ipv6, socket=socket
        )
        try:
            # The simulator's sockets hand out seeded generators, so a
            # simulated run (ids, tids, probes) follows from its seed.
            node_rng = getattr(self._driver, "node_rng", None)
            rng = node_rng() if callable(node_rng) else None
            if id is None and rng is not None:
                id = rng.randbytes(ID_LENGTH)
            self._core = DHTCore(
                id=id,
                rng=rng,
                # Seeded token secrets too: a seeded run replays byte for byte.
                random_bytes=None if rng is None else rng.randbytes,
                ephemeral=ephemeral,
                concurrency=concurrency,
                bootstrap=boot,
                nodes=restored,
                ipv6=ipv6,
                timeout=timeout,
                now=self._driver.now(),
                rate_limit=rate_limit,
                limits=limits,
            )
            self._core.local_address = self._local_address(boot[0] if boot else None)
            self._setup_core(self._core)
        except BaseException:
            self._driver.close()  # never leak the bound socket
            raise
        self._timeout = float(timeout)
        self._closed = False
        self._close_lock = threading.Lock()
        self._ready: Query | None = None
        self._probed_for: str | None = None
        #: How the background opener-TTL measurement runs:
        #: ``measurement_scheduler(steps)`` with the generator of
        #: :meth:`opener_ttl_measurement`. By default a blocking run of it
        #: on the driver (``driver.spawn``). Another waiting model replaces
        #: it before the first datagram can arrive (:mod:`hyperdht.aio`
        #: runs the steps as an asyncio task, with no thread).
        self.measurement_scheduler: Callable[[MeasurementSteps], None] = self._spawn_measurement
        self._driver.start(self._core)
        if boot or restored:
            with self._driver.locked():
                self._ready = self._core.bootstrap(now=self._driver.now())
                pong = self._core.first_pong
                if pong is not None:
                    # Measure the opener TTL as soon as we know our public
                    # address, off the receive path.
                    pong.add_done_callback(
                        lambda _: self.measurement_scheduler(self.opener_ttl_measurement(None))
                    )

    def _setup_core(self, core: DHTCore) -> None:
        """Hook for subclasses: extend the core before the driver starts
        feeding it (so no datagram arrives before, say, a handler is
        installed). ``self.driver`` and ``self.address`` are usable."""

    # -- properties --------------------------------------------------------

    @property
    def id(self) -> bytes:
        """This node's 32-byte id."""
        return self._core.id

    @property
    def address(self) -> Address:
        """The local address the socket is bound to."""
        return self._driver.address

    @property
    def ephemeral(self) -> bool:
        """True while this node gives out no id (others do not store it);
        with ``ephemeral="auto"`` it changes with :attr:`reachability`."""
        return self._core.ephemeral

    @property
    def reachability(self) -> str:
        """Whether datagrams from nodes we never sent to reach us:
        ``"unknown"``, ``"reachable"`` or ``"unreachable"`` (also in
        ``stats.reachability``). Probed with the v1.3.0 protocol after the
        first bootstrap and again later, see
        :mod:`hyperdht.dhtrpc.reachability`."""
        return self._core.reachability.verdict

    @property
    def ipv6(self) -> bool:
        """True for an IPv6 node (18-byte peers, 50-byte nodes)."""
        return self._core.ipv6

    @property
    def stats(self) -> Stats:
        """Counters: datagrams in/out, requests served, timeouts, drops."""
        return self._core.stats

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def core(self) -> DHTCore:
        """The sans-I/O core (for advanced use; hold ``driver.lock``, and
        pass ``now=driver.now()`` to its operations)."""
        return self._core

    @property
    def driver(self) -> Driver:
        """The driver running the core."""
        return self._driver

    @property
    def bootstrap_query(self) -> Query | None:
        """The initial background bootstrap that :meth:`ready` waits for
        (None when there was none), for another waiting model such as
        :mod:`hyperdht.aio`."""
        return self._ready

    # -- helpers -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the DHT node is closed")

    def _addr(self, value: Any, what: str) -> Address:
        return resolve_address(parse_address(value, what=what), ipv6=self._core.ipv6, what=what)

    def _wait(self, fut: Future[Any]) -> Any:
        # The core always resolves request futures (timeout or cancel); the
        # cap only guards against a bug turning into a hang.
        if not self._driver.wait(fut, self._timeout * 20 + 10):
            raise StateError("internal: request future never resolved")
        return fut.result()

    def _start_query(self, start: Callable[[float], Query]) -> QueryStream[Any]:
        """Run ``start(now)`` on the core under the driver's lock and stream
        the query it returns. For subclasses that add query-based
        operations (the peer discovery's ``HyperDHT`` does); raises
        ClosedError after :meth:`close`."""
        self._check_open()
        with self._driver.locked():
            query = start(self._driver.now())
        return QueryStream(self._driver, query)

    # -- operations --------------------------------------------------------

    def ping(self, addr: str | tuple[str, int]) -> Address:
        """Ping ``addr``; returns our address as that node saw it.

        Raises RequestTimeout when it does not answer.
        """
        self._check_open()
        target = self._addr(addr, "addr")
        with self._driver.locked():
            fut = self._core.ping(target, now=self._driver.now())
        result: Address = self._wait(fut)
        return result

    def holepunch(self, peer: str | tuple[str, int], referrer: str | tuple[str, int]) -> Address:
        """Punch a hole to ``peer`` through ``referrer`` (a node that knows
        it), and return the address the peer's answer came from: use that
        one, a NAT may have mapped the path to another port.

        Raises RequestTimeout when the punch fails.
        """
        self._check_open()
        p = self._addr(peer, "peer")
        r = self._addr(referrer, "referrer")
        with self._driver.locked():
            fut = self._core.holepunch(p, r, now=self._driver.now())
        result: Address = self._wait(fut)
        return result

    def connect(
        self,
        peer: str | tuple[str, int],
        referrer: str | tuple[str, int] | None = None,
        *,
        timeout: float | None = None,
        opener_ttl: int | None = None,
    ) -> Address:
        """Reach ``peer`` whichever side is behind a NAT and return the
        address that answered: send to that one (``send_datagram``), a NAT
        may have mapped the path to another port than the announced one.

        ``referrer`` is the node that gave us the peer (``response.node``
        of a lookup). We learn from it whether we are behind a NAT; if so,
        one datagram with a low IP TTL opens our NAT towards the peer and
        expires before the peer's NAT. Its TTL is measured once per public
        address: probes to our own public address, whose ICMP answers
        (Linux ``IP_RECVERR``) say how many routers away the NAT that owns
        it is (a carrier-grade NAT counts); 2 when that cannot be told;
        ``opener_ttl`` overrides it. Then the referrer forwards a ping to
        the peer, whose answer opens its NAT and comes in through ours. A direct ping is only tried
        after that (it would make a Linux NAT remap the peer's answer). No
        referrer: just a direct ping.

        Raises RequestTimeout when nothing answered, at the latest after
        ``timeout`` seconds (default: about 10 request timeouts), and
        ArgumentError for a bad address, ``opener_ttl`` or ``timeout``.
        """
        fut = self.run_steps(
            self.connect_steps(peer, referrer, timeout=timeout, opener_ttl=opener_ttl)
        )
        cap = self._timeout * 10 if timeout is None else timeout
        if not self._driver.wait(fut, cap):
            p = self._addr(peer, "peer")
            with self._driver.locked():
                if not fut.done():
                    fut.set_exception(RequestTimeout(f"connect to {p.host}:{p.port} timed out"))
        result: Address = fut.result()
        return result

    def connect_steps(
        self,
        peer: str | tuple[str, int],
        referrer: str | tuple[str, int] | None = None,
        *,
        timeout: float | None = None,
        opener_ttl: int | None = None,
    ) -> Generator[Step, None, Future[Address]]:
        """:meth:`connect`'s work for any waiting model: checks the
        arguments at once (raising as :meth:`connect` does), then returns
        the steps (see :meth:`run_steps`) of the opener-TTL measurement
        when ``opener_ttl`` is None, after which the generator returns the
        core's connect future, started. :mod:`hyperdht.aio` awaits both."""
        self._check_open()
        p = self._addr(peer, "peer")
        r = None if referrer is None else self._addr(referrer, "referrer")
        if timeout is not None:
            check_positive_number(timeout, "timeout")
        local = self._local_address(r or p)
        if r is not None and r == self.address and local is not None:
            r = local  # our own address, as a lookup gives it for our own stored peers
        return self._connect_steps(p, r, local, timeout, opener_ttl)

    def _connect_steps(
        self,
        p: Address,
        r: Address | None,
        local: Address | None,
        timeout: float | None,
        opener_ttl: int | None,
    ) -> Generator[Step, None, Future[Address]]:
        if opener_ttl is None:
            yield from self.opener_ttl_measurement(r)
        with self._driver.locked():
            if local is not None:
                self._core.local_address = local
            fut = self._core.connect(
                p,
                r,
                now=self._driver.now(),
                local=local,
                opener_ttl=opener_ttl,
                timeout=timeout,
            )
        return fut

    def run_steps(self, steps: Generator[Step, None, T]) -> T:
        """Run ``steps`` to the end, blocking, and return what the
        generator returns. Each step is a core :class:`Future` (waited for,
        about 20 request timeouts at most) or a number of seconds to pause
        (waited on the driver, so cooperatively under gevent)."""
        never: Future[None] = Future()
        try:
            step = next(steps)
            while True:
                if isinstance(step, Future):
                    self._driver.wait(step, self._timeout * 20 + 10)
                else:
                    self._driver.wait(never, step)
                step = steps.send(None)
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            steps.close()

    def opener_ttl_measurement(self, referrer: Address | None) -> MeasurementSteps:
        """The steps (see :meth:`run_steps`) that set the core's opener
        TTL to (routers up to our outermost NAT) + 1, measured once per
        public address (see :mod:`hyperdht.dhtrpc.natprobe`); a ping to
        ``referrer`` first if we do not know our public address yet. It
        never fails: what cannot be measured leaves the TTL as it is. For
        another waiting model; see also :attr:`measurement_scheduler`."""
        core = self._core
        if core.natted is None and referrer is not None and referrer != core.local_address:
            if self._closed:
                return
            with self._driver.locked():
                pong = core.ping(referrer, now=self._driver.now())
            yield pong
            if not pong.done() or pong.exception() is not None:
                return
        observed = core.observed
        if self._closed or core.natted is not True or observed is None:
            return
        if observed.host == self._probed_for:
            return
        self._probed_for = observed.host
        hops = yield from self._nat_hops(observed.host)
        if hops is not None:
            log.debug(
                "our NAT (%s) is %d router(s) away: opener TTL %d", observed.host, hops, hops + 1
            )
            with self._driver.lock:
                core.opener_ttl = min(hops + 1, 255)

    def _spawn_measurement(self, steps: MeasurementSteps) -> None:
        self._driver.spawn(self.run_steps, steps)

    def _nat_hops(self, public_ip: str) -> Generator[float, None, int | None]:
        oracle = getattr(self._driver, "nat_hops", None)
        if callable(oracle):  # the simulator knows its topology
            hops: int | None = oracle(public_ip)
            return hops
        if getattr(self._driver, "socket", None) is None:
            return None
        return (yield from nat_hop_probe(public_ip, ipv6=self._core.ipv6))

    def _local_address(self, towards: Address | None) -> Address | None:
        """Our socket's address with a concrete host: the bound one, or
        for a wildcard bind the source address the kernel picks towards
        ``towards`` (a connected UDP socket; nothing is sent). None when
        that cannot be found out."""
        bound = self.address
        if bound.host not in WILDCARD_HOSTS:
            return bound
        if towards is None:
            return None
        family = _socket.AF_INET6 if self._core.ipv6 else _socket.AF_INET
        try:
            with _socket.socket(family, _socket.SOCK_DGRAM) as probe:
                probe.connect((towards.host, towards.port))
                host = probe.getsockname()[0]
        except OSError:
            return None
        return Address(host, bound.port)

    def bootstrap(self) -> None:
        """Run a bootstrap round now and wait for it; raises QueryError if
        no node answered."""
        core = self._core
        stream = self._start_query(lambda now: core.bootstrap(now=now))
        for _ in stream:
            pass
        if stream.error is not None:
            raise stream.error

    def ready(self, timeout: float | None = None) -> bool:
        """Wait until the initial background bootstrap has finished (at once
        if there was none); False if ``timeout`` passed first."""
        query = self._ready
        if query is None:
            return True
        fut: Future[None] = Future()

        def done(_: Query) -> None:
            if not fut.done():
                fut.set_result(None)

        with self._driver.lock:
            query.add_done_callback(done)
        return self._driver.wait(fut, timeout)

    def nodes(self) -> list[Node]:
        """A snapshot of the routing table; ``DHT(nodes=...)`` accepts it."""
        with self._driver.lock:
            return self._core.nodes()

    def on_query(self, command: str, handler: QueryHandler | None) -> None:
        """Handle queries of ``command``: ``handler(node, query)`` returns the
        value to send back (bytes or None); raising means no response.
        None removes the handler."""
        self._register(command, handler, update=False)

    def on_update(self, command: str, handler: QueryHandler | None) -> None:
        """Like :meth:`on_query`, for updates (requests carrying a valid
        round-trip token this node issued)."""
        self._register(command, handler, update=True)

    def _register(self, command: str, handler: QueryHandler | None, *, update: bool) -> None:
        if handler is not None and not callable(handler):
            raise ArgumentError(f"handler must be callable, got {handler!r}")
        wrapped: Callable[[IncomingQuery], Any] | None = None
        if handler is not None:
            h = handler
            if self._inline:

                def wrapped(query: IncomingQuery) -> Any:
                    return h(query.node, query)

            else:

                def wrapped(query: IncomingQuery) -> Any:
                    self._driver.spawn(self._run_handler, h, query)
                    return DEFER

        with self._driver.lock:
            self._core.on_request(command, wrapped, update=update)

    def _run_handler(self, handler: QueryHandler, query: IncomingQuery) -> None:
        try:
            value = handler(query.node, query)
        except Exception:
            log.debug("handler for %s raised", query.command, exc_info=True)
            with self._driver.lock:
                self._core.stats.handler_errors += 1
            return
        with self._driver.locked():
            self._core.reply(query, value)

    def query(
        self,
        command: str,
        target: bytes,
        value: bytes | None = None,
        *,
        nodes: Iterable[Node | Address | tuple[str, int]] | None = None,
        concurrency: int | None = None,
        holepunching: bool = True,
    ) -> QueryStream[QueryResponse]:
        """Query the nodes closest to ``target`` (32 bytes) with ``command``.

        With ``nodes``, query exactly those and do not move closer. Returns
        a :class:`QueryStream` of :class:`QueryResponse`.
        """
        options = QueryOptions(
            nodes=self._explicit(nodes), concurrency=concurrency, holepunching=holepunching
        )
        return self._query(command, target, value, options)

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
    ) -> QueryStream[QueryResponse]:
        """A query followed by a commit: the request is re-sent with each
        responder's round-trip token to the k closest responders, whose
        update handlers then run. Yields commit responses (and, with
        ``verbose``, the query-phase responses too)."""
        options = QueryOptions(
            nodes=self._explicit(nodes),
            concurrency=concurrency,
            holepunching=holepunching,
            update=True,
            verbose=verbose,
        )
        return self._query(command, target, value, options)

    def _query(
        self, command: str, target: bytes, value: bytes | None, options: QueryOptions
    ) -> QueryStream[QueryResponse]:
        """Stream a query of ``command`` with ready-made ``options``; what
        :meth:`query` and :meth:`update` share (subclasses extend it)."""
        core = self._core
        return self._start_query(
            lambda now: core.query(command, target, value, now=now, options=options)
        )

    def _explicit(
        self, nodes: Iterable[Node | Address | tuple[str, int]] | None
    ) -> tuple[Node | Address, ...] | None:
        if nodes is None:
            return None
        return tuple(n if isinstance(n, Node) else self._addr(n, "nodes") for n in nodes)

    def send_datagram(self, data: bytes, addr: str | tuple[str, int]) -> None:
        """Send an application datagram on the DHT's own UDP port.

        After a hole punch, the punched path is this port's, so this is how
        an application talks to the peer. The receiver's handler (see
        :meth:`on_datagram`) gets ``data``; DHT nodes never confuse it with
        DHT traffic (it travels behind a 3-byte 0xFFFFFF prefix).
        """
        self._check_open()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ArgumentError(f"data must be bytes, got {type(data).__name__}")
        target = self._addr(addr, "addr")
        with self._driver.locked():
            self._core.send_datagram(bytes(data), target)

    def on_reachability(self, handler: Callable[[str], None] | None) -> None:
        """Call ``handler(verdict)`` whenever :attr:`reachability` changes
        (on the receive path: keep it quick). None removes every handler
        set this way."""
        with self._driver.lock:
            listeners = self._core.reachability.listeners
            if handler is None:
                listeners.clear()
            else:
                listeners.append(handler)

    def on_datagram(self, handler: DatagramHandler | None) -> None:
        """Receive application datagrams: ``handler(data, address)`` runs on
        the receiver for each (keep it quick). None removes it."""
        with self._driver.lock:
            self._core.on_datagram = handler

    def close(self) -> None:
        """Stop everything: pending requests fail, streams end, the
        receiver and timer stop, the socket closes (unless it was passed
        in). Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        with self._driver.locked():
            self._core.close()
        self._driver.close()

    def __enter__(self) -> DHT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.address.host}:{self.address.port}"
        return f"<DHT {self.id.hex()[:12]} {state}>"
