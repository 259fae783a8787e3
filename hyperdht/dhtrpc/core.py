"""The DHT node as a sans-I/O state machine (after mafintosh's ``dht-rpc``).

:class:`DHTCore` implements the :class:`~hyperdht.drivers.base.Endpoint`
contract: datagrams and ``now`` go in, datagrams to send and a timer
deadline come out. It owns the routing table, the request/response layer,
the round-trip tokens, table maintenance and the queries; it never blocks,
sleeps, reads a clock or touches a socket. The blocking
:class:`~hyperdht.dhtrpc.DHT` and the simulator both drive it.

Where this deliberately differs from the reference (none of it is visible
on the wire as a different encoding; see docs/PROTOCOL-NOTES.md):

* the queue of requests waiting for a concurrency slot drains whenever a
  request completes, not only when a response arrives;
* a forwarded ping (one carrying ``forwardResponse``) does not add the
  original requester's id to the table under the referrer's address;
* requests and responses whose ``id`` is present with a length other than
  32 bytes are dropped (the reference processes them without the id);
* responses must come from the address the request went to (except for
  hole-punch pings), see :mod:`hyperdht.udprequest`;
* forwarded pings and answers sent to a third address are rate-limited per
  source and per target host, an optional ``rate_limit`` bounds what each
  source host is served, and a routing-table bucket keeps at most a few
  contacts per global IP and /24: see :mod:`hyperdht.dhtrpc.limits`;
* after its first bootstrap a node asks its bootstrap node for nodes in
  each range of ids above its nearest contacts' that it knows nobody in,
  and pings a few of them (:meth:`DHTCore._fill_far_buckets`): in a young network, a node whose id
  shares its first bits with the bootstrap node's otherwise knows nobody
  across those bits, and announces and lookups that start there can stay
  among such nodes and miss the key's closest nodes.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import operator
import os
import random
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import messages
from ..arguments import (
    check_command,
    check_ephemeral,
    check_id,
    check_optional_positive_rate,
    check_positive_int,
    check_positive_number,
)
from ..datagram import Datagram, SendOptions
from ..errors import (
    ArgumentError,
    ArgumentTypeError,
    ClosedError,
    DecodeError,
    HyperDHTError,
    RequestCancelled,
)
from ..future import Future
from ..ipencoding import ID_LENGTH, Address, Node, node_codec, pack_ipv4, peer_codec
from ..kbucket import KBucket
from ..udprequest.core import HEADER_SIZE, MAX_TID, REQUEST_BIT, PendingRequest, RequestCore
from .connect import DEFAULT_OPENER_TTL, opener_datagram, start_connect
from .limits import MAX_PER_IP, MAX_PER_SUBNET, Limits, RateLimiter, diversity_group
from .query import Query, QueryOptions, ResponseCallback
from .reachability import REACHABLE, ReachabilityProber
from .tokens import ROTATE_INTERVAL, TokenStore
from .types import IncomingQuery, QueryResponse, RemoteNode, Stats

__all__ = [
    "DHTCore",
    "RoutingNode",
    "DEFER",
    "K",
    "ID_LENGTH",
    "MAINTENANCE_INTERVAL",
    "APP_PREFIX",
    "Handler",
    "ResponseCallback",
]

log = logging.getLogger(__name__)

#: Bucket size and the number of closest nodes a query keeps.
K = 20
#: Seconds between maintenance ticks (the reference's 5 s).
MAINTENANCE_INTERVAL = 5.0
#: Nodes pinged in each range of ids we know nobody in after the first
#: bootstrap (see :meth:`DHTCore._fill_far_buckets`).
FILL_CONTACTS = 2
#: Datagrams whose third byte is 0xFF can never be DHT messages (0xFF would
#: start a protobuf tag of wire type 7, which does not exist), so they are
#: handed to the application: see :meth:`DHTCore.send_datagram`.
APP_PREFIX = b"\xff\xff\xff"
APP_MARKER = 0xFF

#: A handler returns this to answer later with :meth:`DHTCore.reply`.
DEFER: Any = object()

#: ``handler(query)`` returns bytes, None, or :data:`DEFER`.
Handler = Callable[[IncomingQuery], Any]


class RoutingNode:
    """A routing-table contact: id, address, the token it gave us, and the
    maintenance tick at which we last heard from it."""

    __slots__ = ("address", "encoded", "id", "tick", "token")

    def __init__(self, id: bytes, address: Address, token: bytes | None, tick: int) -> None:
        self.id = id
        self.address = address
        self.token = token
        self.tick = tick
        #: The node encoding (id + peer), cached: every response lists up
        #: to 20 contacts. Reset when the address changes.
        self.encoded: bytes | None = None

    @property
    def group(self) -> tuple[int, int] | None:
        """The (IP, subnet) this contact counts against in its bucket, None
        when its address is exempt (:func:`~hyperdht.dhtrpc.limits.diversity_group`,
        which caches it per host: the table asks once per new contact)."""
        return diversity_group(self.address.host)

    def set_address(self, address: Address) -> None:
        """Move the contact to ``address`` (dropping what was cached for the old one)."""
        self.address = address
        self.encoded = None

    def to_node(self) -> Node:
        """A frozen :class:`~hyperdht.ipencoding.Node` snapshot."""
        return Node(self.id, self.address)

    def __repr__(self) -> str:
        return f"RoutingNode({self.id.hex()[:12]}…, {self.address.host}:{self.address.port})"


@dataclass(slots=True, eq=False)
class _Queued:
    request: messages.RpcRequest
    address: Address
    callback: ResponseCallback
    any_source: bool
    now: float
    #: Set once the request leaves the queue (what cancelling it then cancels).
    pending: PendingRequest | None = None


#: The tags and lengths of a request's 32-byte ``id`` and ``target``.
_ID_TAG = b"\x12\x20"
_TARGET_TAG = b"\x1a\x20"

#: A ping as dht-rpc encodes it: ``command`` "_ping" and, from a full
#: node, its 32-byte ``id`` (tag, length, bytes; nothing else).
_PING_EPHEMERAL = messages.encode_request(messages.RpcRequest("_ping"))
_PING_WITH_ID = _PING_EPHEMERAL + _ID_TAG
_PING_WITH_ID_LEN = len(_PING_WITH_ID)
_PING_WITH_ID_SIZE = _PING_WITH_ID_LEN + ID_LENGTH

#: A ``_find_node`` as dht-rpc encodes it: ``command``, from a full node its
#: 32-byte ``id``, then the 32-byte ``target`` (nothing else).
_FIND_HEAD = messages.encode_request(messages.RpcRequest("_find_node"))
_FIND_WITH_ID = _FIND_HEAD + _ID_TAG
_FIND_ID_AT = len(_FIND_WITH_ID)  # where the id starts
_FIND_TARGET_TAG_AT = _FIND_ID_AT + ID_LENGTH
_FIND_WITH_ID_SIZE = _FIND_TARGET_TAG_AT + len(_TARGET_TAG) + ID_LENGTH
_FIND_EPHEMERAL = _FIND_HEAD + _TARGET_TAG
_FIND_EPHEMERAL_SIZE = len(_FIND_EPHEMERAL) + ID_LENGTH

#: The tag and length of a response's 32-byte ``roundtripToken`` (a sha256).
_TOKEN_TAG = messages.response_field(4, bytes(32))[:2]

# The serve path's helpers, bound once.
_encoded_of = operator.attrgetter("encoded")
_response_field = messages.response_field

# Answers (encoded closest nodes) are memoised by KBucket.closest_key once
# this many have been served without a table change: a busy node's table
# rarely changes, a churning one's memo would only cost memory. At most
# _ANSWERS_MAX are kept (about 0.8 kB each).
_ANSWERS_AFTER = 256
_ANSWERS_MAX = 4096


def _field_start(field: bytes) -> int:
    """Where the value of a length-delimited protobuf field starts: after
    its one-byte tag and its varint length."""
    at = 1
    while field[at] & 0x80:
        at += 1
    return at + 1


def _routing_group(node: RoutingNode) -> tuple[int, int] | None:
    """The routing table's diversity groups of a contact (cached on it)."""
    return node.group


def _no_host(host: str) -> None:
    """An IPv6 node's stand-in for pack_ipv4: always the codec."""


#: The request bit of a datagram's first byte (see :mod:`hyperdht.udprequest`).
_REQUEST_FLAG = REQUEST_BIT >> 8


def _depth(own: int, id: bytes) -> int:
    """The first bit at which ``id`` differs from the id whose int is
    ``own`` (the depth of its range in our routing table)."""
    return 8 * ID_LENGTH - (int.from_bytes(id, "big") ^ own).bit_length()


def _ignore_response(
    _err: BaseException | None, _res: messages.RpcResponse | None, _src: Address, _now: float
) -> None:
    """A response callback for requests sent only for their answer's id
    (which the core adds to the table by itself)."""


def _nothing() -> None:
    """The canceller of a request that already completed."""


class DHTCore:
    """One DHT node's protocol logic. Not thread-safe: drivers serialise calls.

    ``bootstrap`` is a list of addresses; ``nodes`` restores a routing table
    snapshot. ``rng`` makes tids and ids reproducible (the simulator seeds
    it); secrets always come from ``os.urandom`` unless ``random_bytes`` is
    given. ``rate_limit`` (requests per second, bursts of twice that; None:
    unlimited) bounds what each source host is served; ``limits`` sets the
    third-party send limits (default :class:`~hyperdht.dhtrpc.limits.Limits()`).
    """

    def __init__(
        self,
        *,
        id: bytes | None = None,
        ephemeral: bool | str = False,
        concurrency: int = 16,
        bootstrap: Iterable[Address] = (),
        nodes: Iterable[Node] = (),
        ipv6: bool = False,
        timeout: float = 1.0,
        now: float = 0.0,
        rng: random.Random | None = None,
        random_bytes: Callable[[int], bytes] | None = None,
        rate_limit: float | None = None,
        limits: Limits | None = None,
    ) -> None:
        rate_limit = check_optional_positive_rate(rate_limit, "rate_limit")
        if limits is None:
            limits = Limits()
        elif not isinstance(limits, Limits):
            raise ArgumentTypeError(f"limits must be a Limits, got {type(limits).__name__}")
        if id is None:
            id = (random_bytes or os.urandom)(ID_LENGTH)
        self.id = check_id(id)
        check_positive_int(concurrency, "concurrency")
        check_positive_number(timeout, "timeout")
        #: ``True``, ``False`` or ``"auto"`` (ephemeral until the
        #: :attr:`reachability` verdict is ``"reachable"``).
        self.ephemeral_mode: bool | str = check_ephemeral(ephemeral)
        #: True while our requests and responses carry no id.
        self.ephemeral = ephemeral is not False
        self.concurrency = concurrency
        self.ipv6 = bool(ipv6)
        self.bootstrap_nodes: list[Address] = list(bootstrap)
        self.stats = Stats()
        self.peer_codec = peer_codec(self.ipv6)
        # The 4 bytes of an IPv4 host, else None (the codec then encodes it).
        self._pack_host: Callable[[str], bytes | None] = _no_host if self.ipv6 else pack_ipv4
        self.node_codec = node_codec(self.ipv6, ID_LENGTH)
        self._query_id: bytes | None = None
        self._id_field = b""  # the encoded ``id`` field of our responses
        self._set_full(not self.ephemeral)
        #: The generator of tids and random choices (the discovery store's too).
        self.rng = rng or random.Random()
        self._rejoin = False
        self._fill_due = False
        #: Whether unsolicited datagrams reach us (:mod:`.reachability`).
        self.reachability = ReachabilityProber(self, self.rng)
        self.reachability.enabled = self.ephemeral_mode == "auto"
        if self.ephemeral_mode == "auto":
            self.reachability.on_verdict = self._on_verdict
            nodes = list(nodes)
            if not self.bootstrap_nodes and not nodes:
                # Nothing to bootstrap from: the first node of a network,
                # which the others bootstrap from. It stays a full node
                # until a verdict says otherwise.
                self._set_full(True)
        self.udp = RequestCore(
            timeout=timeout, rng=self.rng, on_request=self._on_request, on_drop=self.drop
        )
        self.tokens = TokenStore(random_bytes or os.urandom)
        self.table: KBucket[RoutingNode] = KBucket(
            self.id,
            k=K,
            on_ping=self._on_bucket_full,
            group=_routing_group,
            group_limits=(MAX_PER_IP, MAX_PER_SUBNET),
            on_rejected=self._on_table_rejected,
        )
        # _closest_encoded's memo, valid while table.changes equals
        # _answers_changes (-1: an encoding changed, start over).
        self._answers: dict[Hashable, bytes] = {}
        self._answers_changes = -1
        self._answers_calls = 0
        #: The third-party limits in force (see :mod:`hyperdht.dhtrpc.limits`).
        self.limits = limits
        #: Requests served per second per source host (None: unlimited).
        self.rate_limit = rate_limit
        self._served_limiter = (
            None if rate_limit is None else RateLimiter(rate_limit, 2 * rate_limit)
        )
        self._source_limiter = RateLimiter(
            limits.per_source_rate, limits.per_source_burst, max_keys=limits.max_tracked
        )
        self._target_limiter = RateLimiter(
            limits.per_target_rate, limits.per_target_burst, max_keys=limits.max_tracked
        )
        # Least recently seen first: the maintenance order (a plain dict,
        # re-inserted to move to the end: an OrderedDict costs a linked-list
        # node and a slot array more per contact, and 10,000 simulated
        # nodes keep some 50 contacts each).
        self._seen: dict[bytes, RoutingNode] = {}
        self._tick = 0
        self._next_maintenance = now + MAINTENANCE_INTERVAL
        self._next_rotation = now + ROTATE_INTERVAL
        self._queue: deque[_Queued] = deque()
        self._repinging: set[bytes] = set()
        self._handlers: dict[tuple[bool, str], Handler] = {}
        self._outbox: list[Datagram] = []
        # Buckets found full while adding a node: the adding call, which
        # has ``now``, sends the re-pings (KBucket's callback has no time).
        self._full: list[tuple[list[RoutingNode], RoutingNode]] = []
        self._inflight_queries = 0
        #: Our socket's address with a concrete host (the driver sets it;
        #: None: unknown). With :attr:`observed` it tells whether we are
        #: behind a NAT.
        self.local_address: Address | None = None
        self._observed: Address | None = None
        #: The IP TTL of the NAT openers (:meth:`connect`, first contacts).
        self.opener_ttl = DEFAULT_OPENER_TTL
        #: The bootstrap's ping that tells us our public address (None
        #: until a bootstrap sends one): the driver measures the opener
        #: TTL when it resolves.
        self.first_pong: Future[Address] | None = None
        self.bootstrapped = False
        self.closed = False
        #: Called with ``(payload, address)`` for application datagrams.
        self.on_datagram: Callable[[bytes, Address], None] | None = None
        #: Called with ``(requester, target)`` when we forward a hole-punch ping.
        self.on_holepunch: Callable[[Address, Address], None] | None = None
        #: Called with a :class:`RoutingNode` when a node joins / leaves the table.
        self.on_node_added: Callable[[RoutingNode], None] | None = None
        self.on_node_removed: Callable[[RoutingNode], None] | None = None
        for node in nodes:
            self._add_node(node.id, node.address, None, now)

    # -- Endpoint contract -------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Process one datagram from ``addr`` (never raises for bad input)."""
        self.stats.datagrams_in += 1
        if self.closed:
            return
        if len(data) > 2:
            if data[2] == APP_MARKER:
                if self.on_datagram is not None:
                    self.on_datagram(data[3:], addr)
                else:
                    self.drop("app_datagram_unhandled")
                return
            first = data[0]
            if first & _REQUEST_FLAG:
                # A request: what udp.receive does with one (tid, payload),
                # one call fewer on the serve path.
                tid = ((first << 8) | data[1]) & MAX_TID
                self._on_request(tid, data[HEADER_SIZE:], addr, now)
                return
        self.udp.receive(data, addr, now)

    def datagrams_to_send(self) -> list[Datagram]:
        """Drain the datagrams waiting to be sent."""
        out = self.udp.outbox
        if self._outbox:
            out.extend(self._outbox)
            self._outbox = []
        if out:
            self.udp.outbox = []
            if self.reachability.enabled:  # only a probing ("auto") node keeps track
                out = self.reachability.sent(out)
            self.stats.datagrams_out += len(out)
        return out

    def get_timer(self) -> float | None:
        """The next deadline: a request tick, maintenance, or rotation."""
        if self.closed:
            return None
        t = self._next_maintenance
        if self._next_rotation < t:
            t = self._next_rotation
        udp = self.udp.get_timer()
        if udp is not None and udp < t:
            t = udp
        probe = self.reachability.next_run
        if probe is not None and probe < t:
            t = probe
        if self._rejoin or self._fill_due:
            return -math.inf
        return t

    def handle_timer(self, now: float) -> None:
        """Run request timeouts, maintenance and secret rotation due at ``now``."""
        if self.closed:
            return
        before = self.udp.timeouts
        self.udp.handle_timer(now)
        self.stats.timeouts += self.udp.timeouts - before
        while now >= self._next_rotation:
            self.tokens.rotate()
            self._next_rotation += ROTATE_INTERVAL
        while now >= self._next_maintenance:
            self._next_maintenance += MAINTENANCE_INTERVAL
            self._tick += 1
            if self._tick & 7 == 0:
                self._ping_some(now)
        self.reachability.handle_timer(now)
        if self._rejoin:
            self._rejoin = False
            self.bootstrap(now=now)
        if self._fill_due:
            self._fill_due = False
            self._fill_far_buckets(now)

    # -- what queries use (the QueryHost protocol of query.py) -------------

    @property
    def query_id(self) -> bytes | None:
        """The id our requests and responses carry: None when ephemeral."""
        return self._query_id

    @property
    def requests_in_flight(self) -> int:
        """Requests sent and waiting for a response (not the queued ones)."""
        return self.udp.inflight

    @property
    def inflight_queries(self) -> int:
        """Queries (and bootstraps) started and not yet done."""
        return self._inflight_queries

    def query_started(self) -> None:
        """Count a new query (a :class:`Query` calls this when created)."""
        self._inflight_queries += 1

    def query_ended(self) -> None:
        """Count a query that ended (a :class:`Query` calls this once)."""
        self._inflight_queries -= 1

    def drop(self, reason: str) -> None:
        """Count a datagram or field dropped, under ``reason`` in
        :attr:`Stats.drops`."""
        self.stats.drops[reason] += 1

    def holepunch_request(self, peer: Address) -> messages.RpcRequest:
        """The ping that asks a referrer to forward it to ``peer``.
        Raises ArgumentError when ``peer`` does not encode."""
        try:
            encoded = self.peer_codec.encode(peer)
        except ValueError as exc:
            raise ArgumentError(f"peer: {exc}") from None
        return messages.RpcRequest(command="_ping", id=self._query_id, forward_request=encoded)

    # -- public operations -------------------------------------------------

    def on_request(self, command: str, handler: Handler | None, *, update: bool) -> None:
        """Register (or with None remove) the handler for queries
        (``update=False``) or updates (``update=True``) of ``command``.

        The handler gets an :class:`IncomingQuery` and returns the value to
        send (bytes or None), or :data:`DEFER` to answer later with
        :meth:`reply`. If it raises, no response is sent.
        """
        check_command(command)
        if command in ("_ping", "_find_node"):
            raise ArgumentError(f"command {command!r} is built in and cannot be handled")
        key = (update, command)
        if handler is None:
            self._handlers.pop(key, None)
        else:
            self._handlers[key] = handler

    def reply(self, query: IncomingQuery, value: bytes | None) -> None:
        """Answer a query whose handler returned :data:`DEFER`."""
        self._send_query_response(query.tid, query.node.address, query.target, value, query.command)

    def ping(self, addr: Address, *, now: float) -> Future[Address]:
        """Ping ``addr`` at ``now``; resolves to our address as the peer saw it."""
        fut: Future[Address] = Future()

        def done(
            err: BaseException | None, res: messages.RpcResponse | None, _: Address, _now: float
        ) -> None:
            self._on_pong(fut, err, res)

        fut.set_canceller(
            self.request(messages.RpcRequest(command="_ping", id=self._query_id), addr, done, now)
        )
        return fut

    def _on_pong(
        self, fut: Future[Address], err: BaseException | None, res: messages.RpcResponse | None
    ) -> None:
        if err is not None:
            fut.set_exception(err)
            return
        assert res is not None
        try:
            seen = self.peer_codec.decode(res.value or b"")
        except DecodeError:
            fut.set_exception(HyperDHTError("Invalid pong"))
        else:
            self.observed = seen
            fut.set_result(seen)

    def holepunch(self, peer: Address, referrer: Address, *, now: float) -> Future[Address]:
        """Ask ``referrer`` to forward a ping to ``peer``; resolves to the
        address the peer's answer came from (use that one: a NAT may map
        the punched path to another port than the announced one)."""
        fut: Future[Address] = Future()
        try:
            request = self.holepunch_request(peer)
        except ArgumentError as exc:
            fut.set_exception(exc)
            return fut

        def done(
            err: BaseException | None, res: messages.RpcResponse | None, src: Address, _now: float
        ) -> None:
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(src)

        fut.set_canceller(self.request(request, referrer, done, now, any_source=True))
        return fut

    def connect(
        self,
        peer: Address,
        referrer: Address | None = None,
        *,
        now: float,
        local: Address | None = None,
        opener_ttl: int | None = None,
        timeout: float | None = None,
    ) -> Future[Address]:
        """Reach ``peer`` whichever side is behind a NAT, at ``now``;
        resolves to the address the peer answered from (send to that one).

        With a ``referrer`` (the node that returned the peer): ping it to
        learn whether we are public (our address as it sees us equals
        ``local``, our socket's address with a concrete host, default
        :attr:`local_address`; unknown: assume NATed), if not send a
        low-TTL opener (``opener_ttl``, default :attr:`opener_ttl`) that
        opens our NAT and expires before the peer's, ask the referrer to
        forward a ping, and only if that fails ping the peer directly.
        Without one, just the direct ping. Fails with RequestTimeout (or
        the last step's error); after ``timeout`` seconds at the latest
        once a step ends. See :mod:`hyperdht.dhtrpc.connect`.
        """
        return start_connect(
            self,
            peer,
            referrer,
            now=now,
            local=local,
            opener_ttl=opener_ttl,
            timeout=timeout,
        )

    @property
    def observed(self) -> Address | None:
        """Our address as the last node that answered a ping saw it
        (setting a new one tells :attr:`reachability`)."""
        return self._observed

    @observed.setter
    def observed(self, value: Address | None) -> None:
        if value != self._observed:
            self._observed = value
            self.reachability.observed_changed(self.natted)

    def _set_full(self, full: bool) -> None:
        """Be a full node (our id on every request and response) or an
        ephemeral one (no id anywhere): the three fields change together."""
        self.ephemeral = not full
        self._query_id = self.id if full else None
        self._id_field = messages.response_field(1, self.id) if full else b""
        # A ping's answer up to the bytes of the address (the tag and length
        # of ``value``, a peer of peer_codec.size bytes).
        self._ping_head = (
            self._id_field + messages.response_field(3, bytes(self.peer_codec.size))[:2]
        )

    def _on_verdict(self, verdict: str) -> None:
        """``ephemeral="auto"``: a full node while reachable, else ephemeral."""
        full = verdict == REACHABLE
        if full and self.ephemeral and self.bootstrapped:
            # Let the nodes close to our id learn it: a bootstrap round
            # (at once, from handle_timer, which has the time).
            self._rejoin = True
        self._set_full(full)
        log.info("reachability %s: now %s", verdict, "a full node" if full else "ephemeral")

    @property
    def natted(self) -> bool | None:
        """True when the last pong showed us an address other than
        :attr:`local_address` (we are behind a NAT), False when it showed
        that address, None when we do not know (no pong yet, or no
        :attr:`local_address`)."""
        if self.observed is None or self.local_address is None:
            return None
        return self.observed != self.local_address

    def open_path(self, id: bytes, addr: Address) -> bool:
        """Before the first request to a node learnt from a referrer: True
        when it must not be contacted directly yet, because we are behind
        a NAT and have not heard from it. Then a NAT opener has just been
        queued to ``addr``, and the caller asks the referrer to forward a
        ping first (the node answers and so opens its own NAT towards us):
        a direct request that reached a Linux NAT first would make it
        remap every later answer of that node to us (NAT-REPORT.md)."""
        if self.natted is not True:
            return False
        known = self._seen.get(id)
        if known is not None and known.address == addr:
            return False
        self.send_opener(addr, self.opener_ttl)
        return True

    def send_opener(self, peer: Address, ttl: int) -> None:
        """Queue one untracked ``_ping`` to ``peer`` with IP TTL ``ttl``
        (the NAT opener of :meth:`connect`)."""
        if self.closed:
            return
        options = SendOptions(ttl=ttl)
        tid = self.rng.randrange(0x8000)
        # On the request layer's outbox, which is sent first: the opener
        # must leave before the hole-punch request queued right after it,
        # or the peer's answer can reach our NAT before the opener does.
        self.udp.outbox.append((opener_datagram(self, tid), peer, options))

    def query(
        self,
        command: str,
        target: bytes,
        value: bytes | None = None,
        *,
        now: float,
        nodes: Iterable[Node | Address] | None = None,
        concurrency: int | None = None,
        holepunching: bool = True,
        update: bool = False,
        verbose: bool = False,
        options: QueryOptions | None = None,
        map: Callable[[QueryResponse], Any] | None = None,
        initial: Iterable[Any] = (),
    ) -> Query:
        """Start a query (or, with ``update=True``, an update) at ``now``
        and return it.

        The options are those of :class:`QueryOptions`; pass ``options``
        instead to use a ready-made one (the keywords are then ignored).
        ``map`` turns each :class:`QueryResponse` into the item to yield
        (None skips it); ``initial`` items are yielded first. Raises
        ArgumentError for a bad command, target, value or concurrency.
        """
        check_command(command)
        check_id(target, "target")
        if value is not None and not isinstance(value, bytes):
            raise ArgumentError(f"value must be bytes or None, got {type(value).__name__}")
        if options is None:
            options = QueryOptions(
                nodes=None if nodes is None else tuple(nodes),
                concurrency=concurrency,
                holepunching=holepunching,
                update=update,
                verbose=verbose,
            )
        q = Query(self, command, target, value, options, map=map, initial=initial)
        q.start(now)
        return q

    def bootstrap(self, *, now: float) -> Query:
        """Look up our own id to fill the routing table, at ``now`` (a
        background-friendly query: it uses a lower concurrency while other
        queries run)."""
        # map=None-returning: nobody reads a bootstrap's responses, and a
        # node keeps its first bootstrap query (for ready()) for good.
        q = Query(self, "_find_node", self.id, None, map=lambda _: None)
        if not self.bootstrap_nodes and not len(self.table):
            self.bootstrapped = True
            q.finish(None)
            return q
        background = min(self.concurrency, max(2, self.concurrency // 8))
        q.dynamic_concurrency = (self.concurrency, background)

        def done(_: Query) -> None:
            if not self.bootstrapped:
                self._fill_due = True  # from handle_timer, which has the time
                if self.reachability.next_run is None:
                    self.reachability.schedule()
            self.bootstrapped = True

        q.add_done_callback(done)
        if self.observed is None and self.local_address is not None and self.bootstrap_nodes:
            # Ahead of the query's first requests (same node, same path):
            # its pong says whether we are behind a NAT before the query
            # contacts the nodes it is referred to (see open_path).
            if self.ephemeral_mode == "auto":
                # One round trip first: a pong showing no address
                # translation makes us a full node (see reachability), and
                # the bootstrap then carries our id to the nodes it meets.
                self.first_pong = pong = Future[Address]()

                def pinged(
                    err: BaseException | None,
                    res: messages.RpcResponse | None,
                    _a: Address,
                    t: float,
                ) -> None:
                    self._on_pong(pong, err, res)
                    if not q.done:
                        q._request.id = self._query_id  # the verdict may have changed it
                        q.start(t)

                ping = messages.RpcRequest(command="_ping", id=self._query_id)
                self.request(ping, self.bootstrap_nodes[0], pinged, now)
                return q
            self.first_pong = self.ping(self.bootstrap_nodes[0], now=now)
        q.start(now)
        return q

    def send_datagram(self, data: bytes, addr: Address) -> None:
        """Queue an application datagram to ``addr`` on the DHT's socket.

        It travels as ``APP_PREFIX + data``; the receiver's
        :attr:`on_datagram` gets ``data`` back. The prefix makes sure no
        DHT node ever mistakes it for a DHT message.
        """
        if not self.closed:
            self._outbox.append((APP_PREFIX + bytes(data), addr, None))

    def nodes(self) -> list[Node]:
        """A snapshot of the routing table (accepted back by ``nodes=``)."""
        return [c.to_node() for c in self.table]

    def close(self) -> None:
        """Cancel everything; the core ignores all input afterwards."""
        if self.closed:
            return
        self.closed = True
        queued, self._queue = self._queue, deque()
        self.udp.close()
        for q in queued:
            # Nothing can be sent any more, so the time passed on is moot:
            # the one the request was queued at.
            q.callback(ClosedError("node is closed"), None, q.address, q.now)

    # -- requests ----------------------------------------------------------

    def request(
        self,
        request: messages.RpcRequest,
        addr: Address,
        callback: ResponseCallback,
        now: float,
        *,
        any_source: bool = False,
    ) -> Callable[[], None]:
        """Send ``request`` at ``now`` respecting the concurrency cap;
        ``callback(err, response, address, now)`` runs once when it
        completes, with the time of the call that completed it.

        Returns a canceller: calling it withdraws the request (queued or in
        flight; nothing once it completed), and ``callback`` gets
        :class:`~hyperdht.errors.RequestCancelled`."""
        if self.closed:
            callback(ClosedError("node is closed"), None, addr, now)
            return _nothing
        if self.udp.inflight >= self.concurrency or self._queue:
            queued = _Queued(request, addr, callback, any_source, now)
            self._queue.append(queued)

            def cancel() -> None:
                if queued.pending is not None:
                    self.udp.cancel(queued.pending)
                elif queued in self._queue:
                    self._queue.remove(queued)
                    callback(RequestCancelled(), None, addr, now)

            return cancel
        pending = self._send_request(request, addr, callback, any_source, now)
        return lambda: self.udp.cancel(pending)

    def _send_request(
        self,
        request: messages.RpcRequest,
        addr: Address,
        callback: ResponseCallback,
        any_source: bool,
        now: float,
    ) -> PendingRequest:
        pending = self.udp.request(
            messages.encode_request(request), addr, now, any_source=any_source
        )

        def done(req: Future[Any]) -> None:
            self._on_request_done(req, callback)  # type: ignore[arg-type]

        pending.add_done_callback(done)
        return pending

    def _on_request_done(self, req: PendingRequest, callback: ResponseCallback) -> None:
        now = req.completed_at
        exc = req.exception()
        if exc is not None:
            callback(exc, None, req.address, now)
        else:
            response = req.result()
            try:
                res = messages.decode_response(response.payload)
            except DecodeError as err:
                self.drop("decode")
                callback(err, None, response.address, now)
            else:
                if res.id is not None:
                    if len(res.id) != ID_LENGTH:
                        self.drop("bad_id")
                        callback(
                            DecodeError("response id has the wrong length"), None, req.address, now
                        )
                        self._drain(now)
                        return
                    self._add_node(res.id, response.address, res.roundtrip_token, now)
                callback(None, res, response.address, now)
        self._drain(now)

    def _drain(self, now: float) -> None:
        queue = self._queue
        while queue and self.udp.inflight < self.concurrency and not self.closed:
            q = queue.popleft()
            q.pending = self._send_request(q.request, q.address, q.callback, q.any_source, now)

    # -- incoming requests -------------------------------------------------

    def _on_request(self, tid: int, payload: bytes, addr: Address, now: float) -> None:
        limiter = self._served_limiter
        if limiter is not None and not limiter.allow(addr.host, now):
            self.drop("rate_limited")
            return
        # The pings real peers send, recognised byte for byte: what the
        # general path below does with them, minus decoding and dispatch.
        if len(payload) == _PING_WITH_ID_SIZE and payload.startswith(_PING_WITH_ID):
            self._add_node(payload[_PING_WITH_ID_LEN:], addr, None, now)
            self._serve_ping(tid, addr)
            return
        if payload == _PING_EPHEMERAL:
            self._serve_ping(tid, addr)
            return
        # The same for the _find_node requests of lookups and bootstraps.
        size = len(payload)
        if (
            size == _FIND_WITH_ID_SIZE
            and payload.startswith(_FIND_WITH_ID)
            and payload.startswith(_TARGET_TAG, _FIND_TARGET_TAG_AT)
        ):
            self._add_node(payload[_FIND_ID_AT:_FIND_TARGET_TAG_AT], addr, None, now)
            self._serve_find_node(tid, payload[-ID_LENGTH:], addr)
            return
        if size == _FIND_EPHEMERAL_SIZE and payload.startswith(_FIND_EPHEMERAL):
            self._serve_find_node(tid, payload[-ID_LENGTH:], addr)
            return
        try:
            req = messages.decode_request(payload)
        except DecodeError:
            self.drop("decode")
            return
        rid = req.id
        if rid is not None and len(rid) != ID_LENGTH:
            self.drop("bad_id")
            return
        if rid is not None and req.forward_response is None:
            self._add_node(rid, addr, None, now)

        token = req.roundtrip_token
        if token is not None and not self.tokens.check(token, addr.host):
            token = None

        if req.forward_request is not None:
            self._forward(tid, req, addr, token, now)
            return

        reply_to = addr
        if req.forward_response is not None:
            if req.command != "_ping":
                self.drop("forward_not_ping")
                return
            try:
                reply_to = self.peer_codec.decode(req.forward_response)
            except DecodeError:
                self.drop("bad_forward")
                return
            if reply_to != addr and not self._third_party_allowed(addr, reply_to, now):
                return

        # The built-in commands, on the hot path: their responses are
        # written field by field (what encode_response would write for an
        # RpcResponse of id, value or nodes, and token), our id's field once.
        command = req.command
        if command == "_ping":
            self._serve_ping(tid, reply_to)
            return

        target = req.target
        if target is None or len(target) != ID_LENGTH:
            self.drop("bad_target")
            return

        if command == "_find_node":
            self._serve_find_node(tid, target, addr)
            return

        is_update = token is not None
        handler = self._handlers.get((is_update, command))
        value: Any = None
        if handler is not None:
            query = IncomingQuery(
                command=command,
                target=target,
                value=req.value,
                is_update=is_update,
                roundtrip_token=token,
                node=RemoteNode(rid, addr),
                tid=tid,
                now=now,
            )
            try:
                value = handler(query)
            except Exception:
                self.stats.handler_errors += 1
                log.debug("handler for %s %r raised", command, query, exc_info=True)
                return
            if value is DEFER:
                return
        self._send_query_response(tid, addr, target, value, command)

    def _serve_ping(self, tid: int, reply_to: Address) -> None:
        """Answer a ping: our id, the address we saw it from (``value``)
        and a token, written as :func:`~hyperdht.messages.encode_response`
        would write that :class:`~hyperdht.messages.RpcResponse`."""
        if self.closed:
            return
        self.stats.requests_served["_ping"] += 1
        host, port = reply_to
        packed = self._pack_host(host) if type(port) is int and 0 < port < 65536 else None
        if packed is None:
            peer = self.peer_codec.encode(reply_to)  # raises what the codec raises
        else:
            peer = packed + port.to_bytes(2, "big")
        self.udp.respond(
            tid, b"".join((self._ping_head, peer, _TOKEN_TAG, self.tokens.issue(host))), reply_to
        )

    def _serve_find_node(self, tid: int, target: bytes, addr: Address) -> None:
        """Answer a ``_find_node`` about a 32-byte ``target``: our id, our
        closest contacts and a token, written as
        :func:`~hyperdht.messages.encode_response` would write them."""
        if self.closed:
            return
        self.stats.requests_served["_find_node"] += 1
        self.udp.respond(
            tid,
            b"".join(
                (
                    self._id_field,
                    self._closest_field(target),
                    _TOKEN_TAG,
                    self.tokens.issue(addr.host),
                )
            ),
            addr,
        )

    def _send_query_response(
        self, tid: int, addr: Address, target: bytes, value: Any, command: str = ""
    ) -> None:
        if value is not None and not isinstance(value, (bytes, bytearray, memoryview)):
            self.stats.handler_errors += 1
            log.warning("handler returned %r, not bytes or None: no response sent", type(value))
            return
        self._respond(
            tid,
            addr,
            messages.RpcResponse(
                id=self._query_id,
                value=bytes(value) if value is not None else None,
                nodes=self._closest_encoded(target),
                roundtrip_token=self.tokens.issue(addr.host),
            ),
            command,
        )

    def _respond(self, tid: int, addr: Address, res: messages.RpcResponse, command: str) -> None:
        if self.closed:
            return
        self.stats.requests_served[command] += 1
        self.udp.respond(tid, messages.encode_response(res), addr)

    def _closest_encoded(self, target: bytes) -> bytes:
        """The ``nodes`` field's value in an answer about ``target``: the
        encodings of our K closest contacts, nearest first."""
        field = self._closest_field(target)
        return field[_field_start(field) :]

    def _closest_field(self, target: bytes) -> bytes:
        """The whole ``nodes`` field (tag, length, value) of an answer about
        ``target``, as :func:`~hyperdht.messages.response_field` writes it
        (memoised, see ``_ANSWERS_AFTER``)."""
        table = self.table
        if table.changes != self._answers_changes:
            self._answers.clear()
            self._answers_changes = table.changes
            self._answers_calls = 0
        elif self._answers_calls >= _ANSWERS_AFTER:
            key = table.closest_key(target, K)
            if key is not None:
                field = self._answers.get(key)
                if field is None:
                    field = _response_field(2, self._encode_closest(target))
                    if len(self._answers) < _ANSWERS_MAX:
                        self._answers[key] = field
                return field
        self._answers_calls += 1
        return _response_field(2, self._encode_closest(target))

    def _encode_closest(self, target: bytes) -> bytes:
        closest = self.table.closest(target, K)
        try:
            return b"".join(map(_encoded_of, closest))
        except TypeError:  # a contact not encoded yet (new, or its address changed)
            encode = self.node_codec.encode
            for c in closest:
                if c.encoded is None:
                    c.encoded = encode(c.to_node())
            return b"".join(map(_encoded_of, closest))

    def _third_party_allowed(self, source: Address, target: Address, now: float) -> bool:
        """Whether ``source`` may make us send one datagram to ``target``
        now (a forwarded ping or answer); counts the drop when not."""
        if not self.limits.enabled:
            return True
        if not self._source_limiter.allow(source.host, now):
            self.drop("third_party_source")
            return False
        if not self._target_limiter.allow(target.host, now):
            self.drop("third_party_target")
            return False
        return True

    def _forward(
        self, tid: int, req: messages.RpcRequest, addr: Address, token: bytes | None, now: float
    ) -> None:
        if req.command != "_ping":
            self.drop("forward_not_ping")
            return
        try:
            to = self.peer_codec.decode(req.forward_request or b"")
        except DecodeError:
            self.drop("bad_forward")
            return
        if not self._third_party_allowed(addr, to, now):
            return
        self.stats.forwarded += 1
        if self.on_holepunch is not None:
            self.on_holepunch(addr, to)
        forwarded = messages.RpcRequest(
            command=req.command,
            id=req.id,
            target=req.target,
            forward_response=self.peer_codec.encode(addr),
            # Only a token we issued is passed on, as in the reference
            # (dht-rpc nulls an invalid one before forwarding).
            roundtrip_token=token,
            value=req.value,
        )
        self.udp.forward_request(tid, messages.encode_request(forwarded), to)

    # -- routing table -----------------------------------------------------

    def _add_node(self, id: bytes, addr: Address, token: bytes | None, now: float) -> None:
        if id == self.id:
            return
        seen = self._seen
        node = seen.get(id)
        fresh = node is None
        if node is None:
            node = RoutingNode(id, addr, token, self._tick)
            seen[id] = node
        else:
            if node.address != addr:
                node.set_address(addr)
                self._answers_changes = -1  # memoised answers hold its encoding
            node.token = token
            node.tick = self._tick
            del seen[id]
            seen[id] = node
        self.table.add(node)
        if self._full:
            full, self._full = self._full, []
            for old, new in full:
                self._reping(old, new, now)
        if not fresh:
            return  # a refresh: nothing below applies to a known contact
        if self.table.get(id) is not node:
            # The bucket was full: it stays out until a ping makes room.
            del seen[id]
            return
        if self.on_node_added is not None:
            self.on_node_added(node)

    def _on_table_rejected(self, _node: RoutingNode) -> None:
        self.drop("table_diversity")

    def _remove_node(self, node: RoutingNode) -> None:
        if self._seen.get(node.id) is node:
            del self._seen[node.id]
        removed = self.table.remove(node.id)
        if removed is not None and self.on_node_removed is not None:
            self.on_node_removed(node)

    def _on_bucket_full(self, old: list[RoutingNode], new: RoutingNode) -> None:
        if not self.bootstrapped:
            return  # bootstrapping: we have just talked to all of them
        reping: list[RoutingNode] = []
        for contact in old:
            if self._tick - contact.tick < 3:
                self.table.add(contact)  # heard from recently: keep, refresh
            elif contact.id not in self._repinging:
                reping.append(contact)
        if reping:
            self._full.append((reping, new))

    def _reping(self, old: list[RoutingNode], new: RoutingNode, now: float) -> None:
        """Ping the stale contacts one by one; the first that fails makes
        room for ``new``."""
        pending = deque(old)
        # A busy node hears from many newcomers to the same full bucket: ping
        # each stale contact once at a time, not once per newcomer.
        self._repinging.update(c.id for c in old)

        def next_ping(now: float) -> None:
            if not pending:
                return
            contact = pending.popleft()

            def done(err: BaseException | None, _r: Any, _a: Address, now: float) -> None:
                self._repinging.discard(contact.id)
                if err is None:
                    next_ping(now)
                    return
                for rest in pending:
                    self._repinging.discard(rest.id)
                self._remove_node(contact)
                if new.id not in self._seen:
                    self._add_node(new.id, new.address, new.token, now)

            self.request(
                messages.RpcRequest(command="_ping", id=self._query_id),
                contact.address,
                done,
                now,
            )

        next_ping(now)

    def _fill_far_buckets(self, now: float) -> None:
        """Once, after the first bootstrap: for each depth above the ranges
        of our K closest contacts at which we know nobody (no contact whose
        id first differs from ours at that bit), a ``_find_node`` for a
        random id in that range to our first bootstrap node (it has heard
        from every node that joined through it; if it does not answer, the
        next one, and after the last our contact closest to that id), and a
        ``_ping`` to up to :data:`FILL_CONTACTS` of the nodes it lists in
        that range: their answers put them in our table.

        A bootstrap walks towards our own id, so it meets only nodes that
        share at least as many leading bits with us as the bootstrap node
        does: without this, the buckets above that depth stay empty until
        someone from there contacts us, and a query from us for a key
        across those bits can get stuck among nodes in the same state.
        Costs one request per empty range plus the pings."""
        if self.closed:
            return
        own = int.from_bytes(self.id, "big")
        bits = 8 * ID_LENGTH
        depths = {_depth(own, id) for id in self._seen}
        # Our K closest contacts are what the bootstrap ended with: every
        # node in a range deeper than the farthest of them would be closer,
        # so such a range without a contact is empty. Only the ranges above
        # it may hold nodes the walk never met.
        nearest = self.table.closest(self.id, K)
        if len(nearest) < K:
            return  # a small network: the bootstrap met all there is
        top = min(_depth(own, c.id) for c in nearest)
        for depth in range(top):
            if depth in depths:
                continue
            shift = bits - 1 - depth
            target_int = (((own >> shift) ^ 1) << shift) | self.rng.getrandbits(shift)
            target = target_int.to_bytes(ID_LENGTH, "big")
            self._ask_fill(depth, target, 0, now)

    def _ask_fill(self, depth: int, target: bytes, attempt: int, now: float) -> None:
        """Send the fill's ``_find_node`` for ``target`` (a random id in the
        range at ``depth``) to whom ``attempt`` picks: our bootstrap nodes
        in order, then our contact closest to ``target``; nothing after
        that one."""
        if self.closed:
            return
        bootstrap = self.bootstrap_nodes
        if attempt < len(bootstrap):
            ask = bootstrap[attempt]
        elif attempt == len(bootstrap):
            closest = self.table.closest(target, 1)
            if not closest:
                return
            ask = closest[0].address
        else:
            return
        request = messages.RpcRequest(command="_find_node", id=self._query_id, target=target)
        done = functools.partial(self._fill_bucket, depth, target, attempt)
        self.request(request, ask, done, now)

    def _fill_bucket(
        self,
        depth: int,
        target: bytes,
        attempt: int,
        err: BaseException | None,
        res: messages.RpcResponse | None,
        referrer: Address,
        now: float,
    ) -> None:
        """A ``_find_node`` of :meth:`_fill_far_buckets` completed: ping up
        to :data:`FILL_CONTACTS` listed nodes of the range at ``depth``
        (through ``referrer`` when we are behind a NAT, see
        :meth:`open_path`). If it timed out (or failed), ask the next one
        (:meth:`_ask_fill`)."""
        if self.closed:
            return
        if err is not None or res is None:
            self._ask_fill(depth, target, attempt + 1, now)
            return
        if not res.nodes:
            return
        try:
            listed = self.node_codec.decode_list(res.nodes)
        except DecodeError:
            self.drop("bad_nodes")
            return
        own = int.from_bytes(self.id, "big")
        ping = messages.RpcRequest(command="_ping", id=self._query_id)
        picked = 0
        for node in listed:
            if picked >= FILL_CONTACTS:
                break
            if node.id in self._seen:
                continue
            if _depth(own, node.id) != depth:
                continue  # another bucket (or our own id)
            picked += 1
            if self.open_path(node.id, node.address):
                punch = self.holepunch_request(node.address)
                self.request(punch, referrer, _ignore_response, now, any_source=True)
            else:
                self.request(ping, node.address, _ignore_response, now)

    def _ping_some(self, now: float) -> None:
        count = 1 if self._inflight_queries > 2 else 3
        for contact in list(itertools.islice(self._seen.values(), count)):
            if self._tick - contact.tick < 3:
                break
            self._check(contact, now)

    def _check(self, contact: RoutingNode, now: float) -> None:
        def done(err: BaseException | None, _r: Any, _a: Address, _now: float) -> None:
            if err is not None and self._seen.get(contact.id) is contact:
                self._remove_node(contact)

        self.request(
            messages.RpcRequest(command="_ping", id=self._query_id), contact.address, done, now
        )
