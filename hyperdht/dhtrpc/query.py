"""The iterative query, sans-I/O (after dht-rpc's ``query-stream.js``).

A :class:`Query` walks towards ``target``: it keeps the k closest nodes seen
so far sorted by XOR distance, queries the closest not yet queried (at most
``concurrency`` requests of the node in flight), adds every node a response
lists, and ends when no unqueried node is left. An update then "commits":
it re-sends the request, now carrying each responder's round-trip token, to
the k closest responders.

It runs entirely inside the core's callbacks. Results collect in
:attr:`Query.results` and :attr:`Query.on_change` is called whenever a
result arrives or the query ends, so a driver-level stream can wake its
reader. No thread or greenlet exists per query.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from .. import messages
from ..arguments import check_optional_positive_int
from ..errors import DecodeError, QueryError
from ..ipencoding import ID_LENGTH, Address, Node, NodeCodec
from .types import QueryResponse

__all__ = ["Query", "QueryHost", "QueryNode", "QueryOptions", "ResponseCallback"]

BLANK_ID = bytes(ID_LENGTH)

#: ``callback(error, response, address, now)``: how a request completes.
#: ``now`` is the time of the call that completed it (a datagram's arrival or
#: a timer tick), which follow-up requests are sent at.
ResponseCallback = Callable[
    [BaseException | None, "messages.RpcResponse | None", Address, float], None
]


class _Contact(Protocol):
    @property
    def id(self) -> bytes: ...
    @property
    def address(self) -> Address: ...


class _Table(Protocol):
    def closest(self, target: bytes, n: int) -> Sequence[_Contact]: ...


class QueryHost(Protocol):
    """What a :class:`Query` needs from the node it runs on; the
    :class:`~hyperdht.dhtrpc.DHTCore` provides it. Written as a protocol so
    that this module never imports the core (the core imports it)."""

    @property
    def id(self) -> bytes:
        """The node's id (never queried, never added as a candidate)."""
        ...

    @property
    def query_id(self) -> bytes | None:
        """The id to put in requests (None for an ephemeral node)."""
        ...

    @property
    def closed(self) -> bool:
        """True once the node is closed."""
        ...

    @property
    def concurrency(self) -> int:
        """The node's default concurrency."""
        ...

    @property
    def table(self) -> _Table:
        """The routing table (``closest(target, n)``)."""
        ...

    @property
    def bootstrap_nodes(self) -> list[Address]:
        """Where to start when the table is too small."""
        ...

    @property
    def node_codec(self) -> NodeCodec:
        """The node encoding of the ``nodes`` field."""
        ...

    @property
    def requests_in_flight(self) -> int:
        """Requests of the node waiting for a response."""
        ...

    @property
    def inflight_queries(self) -> int:
        """Queries of the node not yet done."""
        ...

    def query_started(self) -> None:
        """A query was created (it counts in :attr:`inflight_queries`)."""

    def query_ended(self) -> None:
        """A query ended."""

    def request(
        self,
        request: messages.RpcRequest,
        addr: Address,
        callback: ResponseCallback,
        now: float,
        *,
        any_source: bool = False,
    ) -> Callable[[], None]:
        """Send ``request`` (respecting the concurrency cap); returns a
        canceller (the query does not use it)."""

    def holepunch_request(self, peer: Address) -> messages.RpcRequest:
        """The ping to send to a referrer for it to forward to ``peer``."""
        ...

    def open_path(self, id: bytes, addr: Address) -> bool:
        """True if a node learnt from a referrer must be reached through
        the referrer first (the node has queued a NAT opener to it)."""
        ...

    def drop(self, reason: str) -> None:
        """Count something dropped, by reason."""


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """How a query runs (the options :meth:`DHTCore.query` and
    :meth:`DHT.query` / :meth:`DHT.update` take, defined once).

    ``nodes``: query exactly these and do not move closer (None: walk from
    the routing table). ``concurrency``: requests in flight (None: the
    node's). ``holepunching``: retry a silent node through its referrer.
    ``update``: commit to the closest responders after the query.
    ``verbose``: an update also yields the query-phase responses.
    Raises ArgumentError for a bad ``concurrency``.
    """

    nodes: tuple[Node | Address, ...] | None = None
    concurrency: int | None = None
    holepunching: bool = True
    update: bool = False
    verbose: bool = False

    def __post_init__(self) -> None:
        check_optional_positive_int(self.concurrency, "concurrency")


class QueryNode:
    """A candidate of a query: where it is, how far, who told us of it."""

    __slots__ = ("address", "distance", "id", "queried", "referrer", "token")

    def __init__(
        self,
        id: bytes,
        address: Address,
        distance: int,
        referrer: Address | None = None,
        token: bytes | None = None,
    ) -> None:
        self.id = id
        self.address = address
        self.distance = distance
        self.referrer = referrer
        self.token = token
        self.queried = False


class _Closest:
    """At most ``limit`` nodes, sorted by distance, at most one per id.

    The candidate lists of a query: inserting is a bisect on a parallel
    list of distances plus a dict lookup, so the cost of a response does
    not depend on how many nodes the query has seen, only on ``limit``
    (k, 20) for the list shift. The dict holds exactly the ids kept: an
    evicted node is forgotten (as in dht-rpc, it may come back).
    """

    __slots__ = ("distances", "ids", "limit", "nodes")

    def __init__(self, limit: float, nodes: Iterable[QueryNode] = ()) -> None:
        self.limit = limit
        self.nodes: list[QueryNode] = []
        self.distances: list[int] = []
        self.ids: dict[bytes, QueryNode] = {}
        for node in nodes:
            self.insert(node)

    def __len__(self) -> int:
        return len(self.nodes)

    def full(self) -> bool:
        """Whether a new node must beat the farthest one to get in."""
        return len(self.nodes) >= self.limit

    def rejects(self, distance: int) -> bool:
        """True when a node at ``distance`` cannot get in (full, and not
        closer than the farthest kept): the test every listed node of
        every response goes through, before anything is built for it."""
        distances = self.distances
        return len(distances) >= self.limit and distance >= distances[-1]

    def insert(self, node: QueryNode) -> bool:
        """Keep ``node`` if it is among the ``limit`` closest and its id is
        not kept yet (evicting the farthest when full); True if kept."""
        distance = node.distance
        if self.rejects(distance) or node.id in self.ids:
            return False
        nodes = self.nodes
        distances = self.distances
        if len(nodes) >= self.limit:
            del self.ids[nodes.pop().id]
            distances.pop()
        pos = bisect_right(distances, distance)
        distances.insert(pos, distance)
        nodes.insert(pos, node)
        self.ids[node.id] = node
        return True


class Query:
    """One query or update in progress. Create it with
    :meth:`DHTCore.query`; read :attr:`results`, :attr:`done`,
    :attr:`error`."""

    def __init__(
        self,
        core: QueryHost,
        command: str,
        target: bytes,
        value: bytes | None,
        options: QueryOptions = QueryOptions(),
        *,
        map: Callable[[QueryResponse], Any] | None = None,
        k: int = 20,
        initial: Iterable[Any] = (),
    ) -> None:
        self._core = core
        self.command = command
        self.target = target
        self.value = value
        self._target_int = int.from_bytes(target, "big")
        self.concurrency = options.concurrency or core.concurrency
        self.holepunching = options.holepunching
        self.update = options.update
        self.verbose = options.verbose
        self._map = map
        self._request = messages.RpcRequest(
            command=command, id=core.query_id, target=target, value=value
        )
        nodes = options.nodes
        #: Mapped results not yet taken by the reader.
        self.results: deque[Any] = deque(initial)
        #: How many results were produced so far.
        self.yielded = len(self.results)
        self.responses = 0
        self.commits = 0
        self.errors = 0
        #: Failed single requests (timeouts etc.): warnings, not errors.
        self.warnings: list[BaseException] = []
        self.error: QueryError | None = None
        self.done = False
        self.destroyed = False
        #: Called (no arguments) when a result arrives or the query ends.
        self.on_change: Callable[[], None] | None = None
        #: When set, ``(alone, background)`` concurrencies for a bootstrap query.
        self.dynamic_concurrency: tuple[int, int] | None = None
        self._done_callbacks: list[Callable[[Query], None]] = []
        self._committing = False
        self._inflight = 0
        if nodes is not None:
            # Exactly these, in the order given (duplicates and id-less
            # addresses included): a plain list, never reordered.
            self._k: float = float("inf")
            self._pending = _Closest(self._k)
            self._pending.nodes = [self._copy(n) for n in nodes]
            self._pending.ids = {n.id: n for n in self._pending.nodes}
            self._move_closer = False
            self._bootstrapped = True
        else:
            self._k = k
            self._pending = _Closest(k)
            self._move_closer = True
            self._bootstrapped = False
        #: The k closest responders with their tokens (the commit targets).
        self._closest = _Closest(self._k)
        core.query_started()

    def _copy(self, node: Node | Address) -> QueryNode:
        if isinstance(node, Node):
            return QueryNode(node.id, node.address, self._distance(node.id))
        return QueryNode(BLANK_ID, Address(node[0], node[1]), self._distance(BLANK_ID))

    def _distance(self, id: bytes) -> int:
        return int.from_bytes(id, "big") ^ self._target_int

    # -- control -----------------------------------------------------------

    def start(self, now: float) -> None:
        """Send the first requests (at ``now``)."""
        if self._core.closed:
            self.finish(QueryError("node is closed"))
            return
        self._continue(now)

    def add_done_callback(self, fn: Callable[[Query], None]) -> None:
        """Call ``fn(query)`` when the query ends (at once if it has)."""
        if self.done:
            fn(self)
        else:
            self._done_callbacks.append(fn)

    def destroy(self) -> None:
        """Stop: no more requests are sent, responses still in flight are
        ignored, and the query ends without an error."""
        if self.destroyed:
            return
        self.destroyed = True
        self.finish(None)

    def push(self, item: Any) -> None:
        """Add a result that did not come from the network (hyperdht yields
        the node's own stored peers first)."""
        if not self.done:
            self._emit(item)

    # -- internals ---------------------------------------------------------

    def _emit(self, item: Any) -> None:
        self.results.append(item)
        self.yielded += 1
        if self.on_change is not None:
            self.on_change()

    def finish(self, error: QueryError | None) -> None:
        """End the query now with ``error`` (None: success); results
        already collected stay readable. Does nothing once done."""
        if self.done:
            return
        self.done = True
        self.error = error
        # Nothing reads the candidates once done (late responses stop at
        # the ``done`` check): a finished query a node keeps (its
        # bootstrap, for ready()) holds no QueryNode any more.
        self._pending = self._closest = _Closest(0)
        self._core.query_ended()
        if self.on_change is not None:
            self.on_change()
        callbacks, self._done_callbacks = self._done_callbacks, []
        for fn in callbacks:
            fn(self)

    def _finalize(self) -> None:
        if self.responses == 0:
            self.finish(QueryError("No nodes responded"))
        elif self._committing and self.commits == 0:
            self.finish(QueryError("No close nodes responded"))
        else:
            self.finish(None)

    def _continue(self, now: float) -> None:
        if self.done:
            return
        if self._core.closed:
            self.finish(QueryError("node is closed"))
            return
        if self.dynamic_concurrency is not None:
            alone, background = self.dynamic_concurrency
            self.concurrency = alone if self._core.inflight_queries == 1 else background
        if self._committing:
            if self._send_all(self._closest.nodes, now, use_token=True) or self._inflight:
                return
            self._finalize()
            return
        if not self._bootstrapped:
            self._bootstrap(now)
        if self._send_all(self._pending.nodes, now, use_token=False) or self._inflight:
            return
        if self.update:
            for node in self._closest.nodes:
                node.queried = False
            self._committing = True
            if self._send_all(self._closest.nodes, now, use_token=True) or self._inflight:
                return
        self._finalize()

    def _bootstrap(self, now: float) -> None:
        self._bootstrapped = True
        core = self._core
        closest = core.table.closest(self.target, int(self._k))
        pending = self._pending
        for contact in closest:  # at most k
            pending.insert(QueryNode(contact.id, contact.address, self._distance(contact.id)))
        if len(closest) < len(core.bootstrap_nodes):
            for addr in core.bootstrap_nodes:
                self._send(QueryNode(BLANK_ID, addr, 0), now, force=True, use_token=False)

    def _send_all(self, nodes: list[QueryNode], now: float, *, use_token: bool) -> int:
        free = max(0, self.concurrency - self._core.requests_in_flight)
        if not free and not self._inflight:
            free = 1
        if not free:
            return 0
        sent = 0
        for node in nodes:  # at most k: the queried ones are skipped here
            if not node.queried and self._send(node, now, force=False, use_token=use_token):
                sent += 1
                if sent == free:
                    break
        return sent

    def _send(self, node: QueryNode, now: float, *, force: bool, use_token: bool) -> bool:
        if not force:
            if node.queried:
                return False
            node.queried = True
        self._inflight += 1
        request = self._request
        if use_token and node.token is not None:
            request = messages.RpcRequest(
                command=request.command,
                id=request.id,
                target=request.target,
                value=request.value,
                roundtrip_token=node.token,
            )
        committing = self._committing
        if (
            self.holepunching
            and node.referrer is not None
            and self._core.open_path(node.id, node.address)
        ):
            # Behind a NAT, first contact: through the referrer first, so
            # that no direct datagram reaches the node's NAT before it has
            # sent to us; direct only if that fails.
            self._holepunch(node, request, committing, now, fallback=True)
            return True
        # A partial, not a closure: two objects per request in flight
        # instead of a function, its cells and their tuple (thousands are
        # in flight at once in a large simulation, and every one the
        # cyclic collector finds alive it walks again).
        self._core.request(
            request, node.address, partial(_replied, self, node, request, committing), now
        )
        return True

    def _holepunch(
        self,
        node: QueryNode,
        request: messages.RpcRequest,
        committing: bool,
        now: float,
        *,
        fallback: bool = False,
    ) -> None:
        """The node did not answer (or, with ``fallback``, is not contacted
        directly yet); it was learnt from a referrer, so ask the referrer
        to forward a ping (opening the node's NAT towards us), then send
        the request once on the address the punched answer came from.
        With ``fallback`` a failed punch is followed by a direct request."""
        assert node.referrer is not None
        core = self._core
        try:
            punch = core.holepunch_request(node.address)
        except ValueError as exc:
            self._callback(exc, None, node.address, committing, now)
            return

        def done(
            err: BaseException | None, res: messages.RpcResponse | None, src: Address, now: float
        ) -> None:
            self._callback(err, res, src, committing, now)

        def punched(
            err: BaseException | None, _res: messages.RpcResponse | None, src: Address, now: float
        ) -> None:
            if err is not None:
                if fallback:
                    core.request(request, node.address, done, now)
                else:
                    self._callback(err, None, node.address, committing, now)
                return
            core.request(request, src, done, now)

        core.request(punch, node.referrer, punched, now, any_source=True)

    def _on_reply(
        self,
        node: QueryNode,
        request: messages.RpcRequest,
        committing: bool,
        err: BaseException | None,
        res: messages.RpcResponse | None,
        src: Address,
        now: float,
    ) -> None:
        """How a request sent by :meth:`_send` completes."""
        if err is not None and self.holepunching and node.referrer is not None:
            self._holepunch(node, request, committing, now)
            return
        self._callback(err, res, src, committing, now)

    def _callback(
        self,
        err: BaseException | None,
        res: messages.RpcResponse | None,
        src: Address,
        committing: bool,
        now: float,
    ) -> None:
        self._inflight -= 1
        if self.done:
            return
        if err is not None or res is None:
            self.errors += 1
            if err is not None:
                self.warnings.append(err)
            self._continue(now)
            return
        self.responses += 1
        if committing:
            self.commits += 1
        self._add_closest(res, src)
        if self._move_closer and res.nodes:
            codec = self._core.node_codec
            try:
                candidates = codec.decode_raw(res.nodes)
            except DecodeError:
                self._core.drop("bad_nodes")
                candidates = []
            if candidates:
                self._add_candidates(candidates, src)
        rid = res.id
        if rid is None or (self.update and not self.verbose and not committing):
            self._continue(now)
            return
        item: Any = QueryResponse(Node(rid, src), res.value)
        if self._map is not None:
            item = self._map(item)
        if item is not None:
            self._emit(item)
        self._continue(now)

    def _add_candidates(
        self, candidates: list[tuple[bytes, bytes, int]], referrer: Address
    ) -> None:
        """Keep the listed nodes that are among the k closest seen. This
        runs for every node of every response, so it is one loop with the
        rejection test inlined: a node farther than the k-th closest costs
        one int conversion and one comparison, and nothing is built."""
        pending = self._pending
        distances = pending.distances
        ids = pending.ids
        limit = pending.limit
        target = self._target_int
        own = self._core.id
        host = self._core.node_codec.host
        from_bytes = int.from_bytes
        for nid, ip, port in candidates:
            distance = from_bytes(nid, "big") ^ target
            if len(distances) >= limit and distance >= distances[-1]:
                continue
            if nid in ids or nid == own:
                continue
            pending.insert(QueryNode(nid, Address(host(ip), port), distance, referrer))

    def _add_closest(self, res: messages.RpcResponse, src: Address) -> None:
        rid = res.id
        if rid is None or res.roundtrip_token is None or rid == self._core.id:
            return
        prev = self._pending.ids.get(rid)
        if prev is None:
            prev = QueryNode(rid, src, self._distance(rid))
        prev.token = res.roundtrip_token
        self._closest.insert(prev)


#: ``_replied(query, node, request, committing, err, res, src, now)``: the
#: response callback of :meth:`Query._send`, bound with :func:`partial`.
_replied = Query._on_reply
