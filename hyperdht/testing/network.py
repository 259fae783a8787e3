"""The simulated network: a virtual clock, an event queue, and datagram
delivery with latency, jitter, loss, duplication, reordering and NAT.

The loop pops ``(time, seq, callback, args)`` entries in time order (ties in
scheduling order), sets the clock to the entry's time and runs the
callback. Nothing sleeps and the wall clock is never read; all randomness
comes from one ``random.Random(seed)``, so a run is a pure function of the
seed and of what the test does.

The entries wait in a calendar queue (:class:`_EventQueue`): buckets of
1/16384 s of virtual time, each sorted once when the clock reaches it, so
that scheduling and running an event costs the same with 100 events
pending as with 100,000 (a binary heap's cost grows with the log of its
size, and its cache misses with the size itself). The order is exactly a
heap's: by time, then by scheduling order.

The network touches hosts, NATs and drivers only through their public
members; the drivers reach it through the section "the driver side"
(:meth:`Network.schedule`, :meth:`Network.block_until`,
:meth:`Network.route`, :meth:`Network.record_delivery`,
:meth:`Network.record_timer`). A datagram keeps its
:class:`~hyperdht.datagram.SendOptions` from :meth:`Network.route` to the
delivery step (where it crosses NATs), and its IP TTL
(``SendOptions.ttl``) is spent router by router on the way (see
:class:`Network`: a datagram whose TTL runs out is dropped at that router,
before any NAT behind it sees it).
"""

from __future__ import annotations

import gc
import heapq
import ipaddress
import math
import random
from bisect import insort
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..datagram import Datagram, SendOptions
from ..errors import ArgumentError, StateError
from ..ipencoding import Address
from .host import Host
from .nat import NAT, FilteringBehavior, MappingBehavior

if TYPE_CHECKING:
    # Annotations only: drivers are created by hosts, never by the network.
    from .driver import SimDriver

__all__ = ["Network", "NetworkStats", "TraceEvent", "ScheduledCall"]

_REENTRANT = (
    "the simulated network's event loop is already running: {what} was called from a "
    "datagram, timer or spawned callback. The simulator is single-threaded and cannot "
    "block there; use Future.add_done_callback(), or call blocking APIs only from the "
    "test's top level"
)

# First addresses handed out when Network.host()/nat() get no IP: the
# benchmarking range (RFC 2544) for the public network, 10/8 behind a NAT.
_AUTO_PUBLIC = int(ipaddress.IPv4Address("198.18.0.1"))
_AUTO_PRIVATE = int(ipaddress.IPv4Address("10.0.0.2"))


class TraceEvent(NamedTuple):
    """One thing that happened on the network, as passed to ``Network.trace``.

    ``kind`` is ``"send"`` (an endpoint handed a datagram to the network;
    ``src`` is its local address), ``"deliver"`` (``src`` is the address the
    receiver sees, ``dst`` the receiver's local address), ``"drop"``
    (``reason`` is ``"loss"``, ``"no_listener"``, ``"nat_filtered"``,
    ``"no_route"`` or ``"ttl_expired"``) or ``"timer"`` (an endpoint's timer fired; ``src`` and
    ``dst`` are its address, ``data`` is empty). ``options`` is the
    datagram's :class:`~hyperdht.datagram.SendOptions` (or None) on
    ``"send"`` and ``"deliver"``.
    """

    time: float
    kind: str
    src: tuple[str, int]
    dst: tuple[str, int]
    data: bytes
    reason: str | None = None
    options: SendOptions | None = None


@dataclass(frozen=True)
class NetworkStats:
    """A snapshot of the network's datagram counters (see ``Network.stats``)."""

    #: Datagrams endpoints handed to the network.
    sent: int = 0
    #: Datagrams handed to an endpoint (a duplicate counts twice).
    delivered: int = 0
    #: Extra copies created by the ``duplicate`` rate.
    duplicated: int = 0
    #: Dropped by the ``loss`` rate.
    dropped_loss: int = 0
    #: Dropped because nothing was bound at the destination on arrival.
    dropped_no_listener: int = 0
    #: Dropped by a NAT: no mapping on that port, filtered, or expired.
    dropped_nat_filtered: int = 0
    #: Dropped because a NATed host sent to its own NAT without hairpinning.
    dropped_no_route: int = 0
    #: Dropped at a router because their IP TTL ran out.
    dropped_ttl_expired: int = 0

    @property
    def dropped(self) -> int:
        """All drops, whatever the reason."""
        return (
            self.dropped_loss
            + self.dropped_no_listener
            + self.dropped_nat_filtered
            + self.dropped_no_route
            + self.dropped_ttl_expired
        )


class ScheduledCall:
    """A callback scheduled with :meth:`Network.call_at` / ``call_later``."""

    __slots__ = ("_args", "_cancelled", "_fn", "when")

    def __init__(self, when: float, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        """Use :meth:`Network.call_at` rather than calling this directly."""
        #: The virtual time it is due.
        self.when = when
        self._fn = fn
        self._args = args
        self._cancelled = False

    def cancel(self) -> None:
        """Do not run it (no effect once it has run)."""
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def _fire(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            self._fn(*self._args)


#: An event: ``(when, seq, fn, args)``, run as ``fn(*args)`` at ``when``.
_Entry = tuple[float, int, Callable[..., object], tuple[Any, ...]]

# Buckets per virtual second of the event queue (a power of two, so that
# ``when * _BUCKETS_PER_SECOND`` is exact and bucket keys are monotonic in
# ``when``). With the usual 10-15 ms links a bucket holds the events of
# 1/160 to 1/250 of a datagram's flight: a few at 100 nodes, a few hundred at
# 10,000.
_BUCKETS_PER_SECOND = 16384.0
# Entries this far out (or at inf) share one last bucket.
_LAST_KEY = 1 << 62
_LAST_TIME = _LAST_KEY / _BUCKETS_PER_SECOND


class _EventQueue:
    """The network's pending events in ``(when, seq)`` order, the order of
    a binary heap of the same entries (seq numbers are unique).

    A calendar queue: an entry goes into the bucket of the
    1/``_BUCKETS_PER_SECOND`` s slot its time falls in (an append); the
    buckets' keys wait in a small heap (one key per non-empty bucket, not
    per entry); a bucket is sorted once, when it becomes the current one,
    and then consumed front to back. An entry for the current bucket's
    slot or an earlier one (a spawned call at ``now``, a short delay, a
    time in the past) is inserted in order into the current bucket's
    unconsumed part. Invariant: everything in ``_cur[_i:]`` is sorted and
    comes before everything in ``_buckets``, whose keys are all greater
    than ``_key``.
    """

    __slots__ = ("_buckets", "_cur", "_i", "_key", "_keys", "_len")

    def __init__(self) -> None:
        self._buckets: dict[int, list[_Entry]] = {}
        self._keys: list[int] = []
        # The current bucket; its consumed front is overwritten with None
        # (so that a run event's arguments are freed at once).
        self._cur: list[Any] = []
        self._i = 0
        self._key = -1
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push(self, entry: _Entry) -> None:
        """Add ``entry`` (its ``seq`` must be greater than every other's)."""
        when = entry[0]
        if when >= 0.0:
            key = int(when * _BUCKETS_PER_SECOND) if when < _LAST_TIME else _LAST_KEY
        else:  # before the clock's start (int() would round towards 0)
            key = -1
        self._len += 1
        if key <= self._key:
            insort(self._cur, entry, self._i)
            return
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [entry]
            heapq.heappush(self._keys, key)
        else:
            bucket.append(entry)

    def _advance(self) -> bool:
        """Make the next non-empty bucket the current one (the current one
        is used up); False if there is none."""
        keys = self._keys
        if not keys:
            return False
        key = heapq.heappop(keys)
        cur = self._buckets.pop(key)
        cur.sort()
        self._cur = cur
        self._i = 0
        self._key = key
        return True

    def first_time(self) -> float:
        """The time of the next entry (inf when there is none)."""
        if self._i == len(self._cur) and not self._advance():
            return math.inf
        when: float = self._cur[self._i][0]
        return when

    def pop(self, horizon: float) -> _Entry | None:
        """Remove and return the next entry if it is due at or before
        ``horizon``; None otherwise (then nothing changes but, perhaps,
        which bucket is current)."""
        cur = self._cur
        i = self._i
        if i == len(cur):
            keys = self._keys
            if not keys or keys[0] / _BUCKETS_PER_SECOND > horizon:
                return None  # (a bucket's entries are >= its key's time)
            self._advance()
            cur = self._cur
            i = 0
        entry: _Entry = cur[i]
        if entry[0] > horizon:
            return None
        cur[i] = None
        self._i = i + 1
        self._len -= 1
        return entry


def _rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ArgumentError(f"{name}: must be a probability in [0, 1], got {value!r}")
    return float(value)


def _delay(name: str, value: float) -> float:
    if not 0.0 <= value < math.inf:
        raise ArgumentError(f"{name}: must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


class Network:
    """An in-memory UDP network with a virtual clock.

    Every datagram takes ``latency`` seconds plus a uniform random extra
    in ``[0, jitter)``; it is lost with probability ``loss``, sent twice
    with probability ``duplicate`` (each copy with its own delay), and
    held back an extra ``reorder_delay`` seconds with probability
    ``reorder``, so that datagrams sent after it overtake it
    (``reorder_delay`` defaults to ``latency + jitter``, or 1 ms if both
    are 0). These link properties are attributes and may be changed at any
    time. A datagram between two hosts behind the same NAT takes the same
    path delay; crossing a NAT adds none.

    Hops: a datagram from one public-side point (a public host or a NAT) to
    another crosses ``hops`` core routers, plus the ``hops`` of the sending
    and receiving host or NAT (routers between it and the core), plus,
    behind a NAT, the host's own ``hops`` and the NAT itself. A router
    forwards a datagram only if its TTL is at least 2 and decrements it, as
    IP routers do; the destination (a host, or a NAT receiving a datagram
    that no mapping admits) accepts any TTL. So a datagram sent with
    ``SendOptions(ttl=2)`` by a host right behind its NAT creates the NAT's
    mapping and then expires at the first core router (dropped as
    ``"ttl_expired"``): the far NAT never sees it. Datagrams without a TTL
    never expire. There is no ICMP: an expired datagram is just dropped.

    The network is not thread-safe: drive it, and every endpoint on it,
    from one thread. Raises ArgumentError (a ValueError) for a rate outside [0, 1] or a
    negative delay.
    """

    __slots__ = (
        "_auto_ip",
        "_deliver_fn",
        "_delivered",
        "_dropped_loss",
        "_dropped_nat_filtered",
        "_dropped_no_listener",
        "_dropped_no_route",
        "_dropped_ttl_expired",
        "_duplicate",
        "_duplicated",
        "_events",
        "_hops",
        "_hosts",
        "_jitter",
        "_latency",
        "_loss",
        "_nats",
        "_node_rng",
        "_now",
        "_pause_gc",
        "_queue",
        "_reorder",
        "_reorder_delay",
        "_rng",
        "_running",
        "_seed",
        "_sent",
        "_seq",
        "trace",
    )

    def __init__(
        self,
        seed: int = 0,
        *,
        latency: float = 0.01,
        jitter: float = 0.0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        reorder_delay: float | None = None,
        hops: int = 0,
        trace: Callable[[TraceEvent], object] | None = None,
        pause_gc: bool = False,
    ) -> None:
        """A network whose randomness is drawn from ``random.Random(seed)``;
        see the class docstring for the link parameters. ``trace``, if
        given, is called with a :class:`TraceEvent` for everything that
        happens (``trace=events.append`` records a list).

        ``pause_gc=True`` (an opt-in for large simulations) switches
        Python's cyclic garbage collector off while the event loop runs
        (:meth:`run`, :meth:`run_until`, :meth:`step` and the drivers'
        blocking waits) and back on when it returns, if it was on: see
        :attr:`pause_gc`."""
        if not isinstance(hops, int) or isinstance(hops, bool) or hops < 0:
            raise ArgumentError(f"hops: must be an integer >= 0, got {hops!r}")
        self._hops = hops
        self._seed = seed
        self._node_rng: random.Random | None = None
        self._rng = random.Random(seed)
        self._now = 0.0
        self._queue = _EventQueue()
        # Bound once: every datagram's event carries it.
        self._deliver_fn = self._deliver
        self._pause_gc = bool(pause_gc)
        self._seq = 0
        self._running = False
        self._events = 0
        self._latency = _delay("latency", latency)
        self._jitter = _delay("jitter", jitter)
        self._loss = _rate("loss", loss)
        self._duplicate = _rate("duplicate", duplicate)
        self._reorder = _rate("reorder", reorder)
        self._reorder_delay = (
            None if reorder_delay is None else _delay("reorder_delay", reorder_delay)
        )
        # Public IP -> host or NAT. A private IP lives in its NAT's LAN.
        self._hosts: dict[str, Host] = {}
        self._nats: dict[str, NAT] = {}
        self._auto_ip = _AUTO_PUBLIC
        self._sent = 0
        self._delivered = 0
        self._duplicated = 0
        self._dropped_loss = 0
        self._dropped_no_listener = 0
        self._dropped_nat_filtered = 0
        self._dropped_no_route = 0
        self._dropped_ttl_expired = 0
        #: Called with a :class:`TraceEvent` for every send, delivery, drop
        #: and timer, or None. May be set at any time.
        self.trace: Callable[[TraceEvent], object] | None = trace

    # -- link properties ------------------------------------------------------

    @property
    def latency(self) -> float:
        """One-way delay of every datagram, in seconds."""
        return self._latency

    @latency.setter
    def latency(self, value: float) -> None:
        self._latency = _delay("latency", value)

    @property
    def jitter(self) -> float:
        """Upper bound of the uniform random delay added to ``latency``."""
        return self._jitter

    @jitter.setter
    def jitter(self, value: float) -> None:
        self._jitter = _delay("jitter", value)

    @property
    def loss(self) -> float:
        """Probability that a datagram is dropped."""
        return self._loss

    @loss.setter
    def loss(self, value: float) -> None:
        self._loss = _rate("loss", value)

    @property
    def duplicate(self) -> float:
        """Probability that a datagram is delivered twice."""
        return self._duplicate

    @duplicate.setter
    def duplicate(self, value: float) -> None:
        self._duplicate = _rate("duplicate", value)

    @property
    def reorder(self) -> float:
        """Probability that a datagram is held back by ``reorder_delay``."""
        return self._reorder

    @reorder.setter
    def reorder(self, value: float) -> None:
        self._reorder = _rate("reorder", value)

    @property
    def reorder_delay(self) -> float:
        """Extra delay of a reordered datagram (see the class docstring)."""
        if self._reorder_delay is not None:
            return self._reorder_delay
        return (self._latency + self._jitter) or 0.001

    @reorder_delay.setter
    def reorder_delay(self, value: float | None) -> None:
        self._reorder_delay = None if value is None else _delay("reorder_delay", value)

    @property
    def pause_gc(self) -> bool:
        """Whether the event loop runs with the cyclic garbage collector
        off (``Network(pause_gc=True)``; it may be changed at any time).

        A simulation of thousands of nodes holds millions of objects. The
        collector walks the young ones every few hundred allocations and
        all of them every time the survivors grew by a quarter, and each
        walk costs more per object the larger the heap (fewer of them are
        in the CPU's caches): while 1,000 nodes bootstrap it takes about a
        tenth of the CPU time, at 3,000 a fifth, and more beyond. What a
        bootstrap, a lookup or an announce allocates is freed by reference
        counting (it makes no reference cycles), so pausing changes when
        memory is freed only for cycles: those made while the loop runs
        are found by the first automatic collection after it returns. The
        switch is :func:`gc.disable` / :func:`gc.enable`, process-wide, so
        other threads run without automatic collections meanwhile too; a
        collector that was already off stays off."""
        return self._pause_gc

    @pause_gc.setter
    def pause_gc(self, value: bool) -> None:
        self._pause_gc = bool(value)

    @property
    def hops(self) -> int:
        """Core routers between any two public-side points (see the class
        docstring); fixed when the network is created."""
        return self._hops

    # -- topology --------------------------------------------------------------

    def host(self, ip: str | None = None, *, nat: NAT | None = None, hops: int = 0) -> Host:
        """Add a machine with address ``ip`` and return it.

        Without ``nat`` the host is on the public network; with it, it sits
        on that NAT's LAN (private IPs may repeat across NATs). Without
        ``ip``, the next free address of 198.18.0.0/15 (public) or 10/8
        (behind a NAT) is used. ``hops`` is the number of routers between
        the host and its NAT (or, for a public host, the core); they count
        against a datagram's TTL. Raises ArgumentError (a ValueError) for
        an invalid or taken address, a NAT of another network or a negative
        ``hops``.
        """
        if nat is not None and nat.network is not self:
            raise ArgumentError("nat: belongs to another Network")
        if nat is None:
            taken = self._taken
        else:
            lan_nat, public_ip = nat, nat.public_ip

            def taken(ip: str) -> bool:
                return lan_nat.host_at(ip) is not None or ip == public_ip

        if ip is None:
            ip = self._auto(taken, public=nat is None, start=0 if nat is None else len(nat.hosts))
        else:
            ip = _check_ip("ip", ip)
            if taken(ip):
                raise ArgumentError(f"ip: {ip} is already in use")
        host = Host(self, ip, nat, hops)
        if nat is None:
            self._hosts[ip] = host
        else:
            nat.attach(host)
        return host

    def nat(
        self,
        public_ip: str | None = None,
        *,
        mapping: MappingBehavior = "endpoint-independent",
        filtering: FilteringBehavior = "port-restricted",
        timeout: float | None = None,
        hairpin: bool = False,
        keep_unsolicited: bool = False,
        hops: int = 0,
    ) -> NAT:
        """Add a NAT with address ``public_ip`` on the public network.

        ``mapping``: ``"endpoint-independent"`` (default), ``"address-
        dependent"`` or ``"symmetric"``; ``filtering``: ``"port-restricted"``
        (default), ``"address-restricted"`` or ``"full-cone"``; ``timeout``:
        idle seconds before a mapping expires (None: never); ``hairpin``:
        whether hosts behind it may send to its public address;
        ``keep_unsolicited``: behave like Linux conntrack (an unsolicited
        inbound datagram leaves an unreplied entry, and an outbound flow
        that would reuse its tuple changes port); ``hops``: routers between
        the NAT and the core. See :mod:`hyperdht.testing.nat`. Without ``public_ip`` the next free
        public address is used. Raises ArgumentError (a ValueError) for a bad argument or a
        taken address.
        """
        if public_ip is None:
            public_ip = self._auto(self._taken, public=True)
        else:
            public_ip = _check_ip("public_ip", public_ip)
            if self._taken(public_ip):
                raise ArgumentError(f"public_ip: {public_ip} is already in use")
        nat = NAT(
            self,
            public_ip,
            mapping=mapping,
            filtering=filtering,
            timeout=timeout,
            hairpin=hairpin,
            keep_unsolicited=keep_unsolicited,
            hops=hops,
        )
        self._nats[public_ip] = nat
        return nat

    @property
    def hosts(self) -> list[Host]:
        """The public hosts, in creation order (NATed ones: ``NAT.hosts``)."""
        return list(self._hosts.values())

    @property
    def nats(self) -> list[NAT]:
        """The NATs, in creation order."""
        return list(self._nats.values())

    # -- clock and loop --------------------------------------------------------

    def node_rng(self, address: Address) -> random.Random:
        """The :class:`random.Random` the nodes of this network draw from
        (a node bound at ``address`` asks for it): their ids, tids and
        random choices then follow from the network's seed too, so a run
        with a seed is the same run every time.

        Every node shares one generator, seeded from the network's seed
        but apart from the network's own stream (links behave the same
        with or without nodes drawing): a Mersenne Twister's state is
        some 2.5 KB, which 10,000 nodes would otherwise hold 10,000 times.
        The loop runs one callback at a time, so the order of the draws,
        and with it the run, is still a function of the seed and of what
        the test does. ``address`` is accepted for the drivers' contract
        and does not change the answer. With ``seed=None`` the generator
        is seeded from the OS."""
        rng = self._node_rng
        if rng is None:
            seed = self._seed
            rng = self._node_rng = random.Random(None if seed is None else f"{seed}/nodes")
        return rng

    @property
    def now(self) -> float:
        """The virtual clock, in seconds since the network was created."""
        return self._now

    @property
    def events_processed(self) -> int:
        """How many events the loop has run so far."""
        return self._events

    @property
    def pending(self) -> int:
        """How many events are scheduled (superseded timers included)."""
        return len(self._queue)

    @property
    def running(self) -> bool:
        """True while the event loop runs (inside a callback)."""
        return self._running

    def step(self) -> bool:
        """Run the next event, advancing the clock to it; False if none is
        scheduled. Raises StateError (a RuntimeError) from inside the loop."""
        return self._loop(math.inf, None, 1, "step()") == 1

    def run(self, until: float | None = None, max_events: int | None = None) -> int:
        """Run events in time order until none is due at or before the
        absolute virtual time ``until`` (then the clock moves to ``until``),
        or, with ``until=None``, until none is left (endpoints with
        periodic timers never let that happen: pass ``until``). Stops early
        after ``max_events`` events. Returns how many ran.

        Raises ArgumentError if ``until`` is in the past, and StateError when
        called from inside the loop (a datagram, timer or spawned callback):
        ``run*``, ``step`` and the blocking waits of drivers cannot nest. An
        exception raised by a callback propagates; the loop can be resumed.
        """
        if until is not None and until < self._now:
            raise ArgumentError(f"until: {until!r} is before now ({self._now!r})")
        if max_events is not None and max_events < 0:
            raise ArgumentError(f"max_events: must be >= 0, got {max_events!r}")
        horizon = math.inf if until is None else until
        count = self._loop(horizon, None, -1 if max_events is None else max_events)
        if until is not None and not self._queue.first_time() <= until:
            self._now = until
        return count

    def run_for(self, seconds: float, max_events: int | None = None) -> int:
        """``run(until=now + seconds)``: run ``seconds`` of virtual time."""
        if not seconds >= 0:
            raise ArgumentError(f"seconds: must be >= 0, got {seconds!r}")
        return self.run(self._now + seconds, max_events)

    def run_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Run events until ``predicate()`` is true (checked before the
        first and after every event) and return True, with the clock at the
        event that made it true; or return False once ``timeout`` virtual
        seconds have passed (clock at the deadline) or, without a timeout,
        once nothing is left scheduled. Raises like :meth:`run`."""
        if timeout is None:
            self._loop(math.inf, predicate, -1, "run_until()")
            return predicate()
        deadline = self._now + max(timeout, 0.0)
        self._loop(deadline, predicate, -1, "run_until()")
        if predicate():
            return True
        self._now = deadline
        return False

    def call_at(self, when: float, fn: Callable[..., object], *args: Any) -> ScheduledCall:
        """Run ``fn(*args)`` from the loop at virtual time ``when`` (now if
        it is in the past); cancellable through the returned handle."""
        call = ScheduledCall(max(when, self._now), fn, args)
        self.schedule(call.when, call._fire)
        return call

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> ScheduledCall:
        """``call_at(now + delay, fn, *args)``."""
        return self.call_at(self._now + delay, fn, *args)

    # -- statistics ------------------------------------------------------------

    @property
    def stats(self) -> NetworkStats:
        """A snapshot of the datagram counters."""
        return NetworkStats(
            sent=self._sent,
            delivered=self._delivered,
            duplicated=self._duplicated,
            dropped_loss=self._dropped_loss,
            dropped_no_listener=self._dropped_no_listener,
            dropped_nat_filtered=self._dropped_nat_filtered,
            dropped_no_route=self._dropped_no_route,
            dropped_ttl_expired=self._dropped_ttl_expired,
        )

    def __repr__(self) -> str:
        return (
            f"<Network now={self._now:.6f} hosts={len(self._hosts)} nats={len(self._nats)}"
            f" pending={len(self._queue)}>"
        )

    # -- internals -------------------------------------------------------------

    def _loop(
        self, horizon: float, stop: Callable[[], bool] | None, limit: int, what: str = "run()"
    ) -> int:
        if self._running:
            raise StateError(_REENTRANT.format(what=what))
        pop = self._queue.pop
        count = 0
        paused = self._pause_gc and gc.isenabled()
        if paused:
            gc.disable()
        self._running = True
        try:
            if stop is None:
                while count != limit:
                    entry = pop(horizon)
                    if entry is None:
                        break
                    t, _, fn, args = entry
                    self._now = t
                    count += 1
                    fn(*args)
            elif not stop():
                while count != limit:
                    entry = pop(horizon)
                    if entry is None:
                        break
                    t, _, fn, args = entry
                    self._now = t
                    count += 1
                    fn(*args)
                    if stop():
                        break
        finally:
            self._running = False
            self._events += count
            if paused:
                gc.enable()
        return count

    # -- the driver side (what SimDriver calls; applications need none of it) --

    def block_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """What the drivers' blocking waits run on: :meth:`run_until`, but
        from inside the loop it only answers at once (``timeout`` <= 0) and
        otherwise raises StateError (a RuntimeError), and without a
        ``timeout`` it raises StateError when nothing is left scheduled (a
        simulated deadlock) instead of returning False."""
        if self._running:
            if timeout is not None and timeout <= 0:
                return predicate()
            raise StateError(_REENTRANT.format(what="a blocking wait()"))
        if self.run_until(predicate, timeout):
            return True
        if timeout is None:
            raise StateError(
                "simulated deadlock: waiting without a timeout, but nothing is scheduled "
                "on the network any more, so it can never happen"
            )
        return False

    def schedule(self, when: float, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` from the loop at virtual time ``when`` (which
        must not be in the past): the lean, uncancellable form of
        :meth:`call_at` that drivers use for timers and spawned calls."""
        self._seq = seq = self._seq + 1
        self._queue.push((when, seq, fn, args))

    def route(self, driver: SimDriver, out: Sequence[Datagram]) -> None:
        """Send the ``(data, address, options)`` datagrams ``driver``'s
        endpoint queued: through its host's NAT if it has one, then onto
        the wire with their options. A datagram with a TTL spends it on the
        sender's side here (it may expire before or at its own NAT, which
        then creates no mapping) and on the core and the far side on
        delivery."""
        now = self._now
        src = driver.address
        host = driver.host
        nat = host.nat
        trace = self.trace
        self._sent += len(out)
        for data, dst, options in out:
            if trace is not None:
                trace(TraceEvent(now, "send", src, dst, data, None, options))
            ttl = None if options is None else options.ttl
            if nat is None:
                if ttl is not None:
                    ttl = self._spend(ttl, host.hops, src, dst, data)
                    if ttl is None:
                        continue
                self._transmit(None, dst, data, src, options, ttl)
                continue
            if ttl is not None and nat.host_at(dst[0]) is None:
                # The host's own routers, then the NAT, which forwards: a
                # datagram that expires there creates no mapping.
                ttl = self._spend(ttl, host.hops + 1, src, dst, data)
                if ttl is None:
                    continue
            path = nat.egress(src, dst, now)
            if path is None:
                self._drop("no_route", src, dst, data)
                continue
            if path[0] is None and ttl is not None:
                ttl = self._spend(ttl, nat.hops, path[1], dst, data)
                if ttl is None:
                    continue
            self._transmit(path[0], dst, data, path[1], options, ttl)

    def record_delivery(
        self,
        src: tuple[str, int],
        dst: tuple[str, int],
        data: bytes,
        options: SendOptions | None = None,
    ) -> None:
        """Count (and trace) a datagram handed to the endpoint at ``dst``;
        a driver calls it for the datagrams it kept before ``start()``."""
        self._delivered += 1
        if self.trace is not None:
            self.trace(TraceEvent(self._now, "deliver", src, dst, data, None, options))

    def record_timer(self, address: tuple[str, int]) -> None:
        """Trace that the timer of the endpoint at ``address`` fired."""
        if self.trace is not None:
            self.trace(TraceEvent(self._now, "timer", address, address, b""))

    # -- delivery ----------------------------------------------------------------

    def _transmit(
        self,
        realm: NAT | None,
        dst: tuple[str, int],
        data: bytes,
        src: Address,
        options: SendOptions | None,
        ttl: int | None = None,
    ) -> None:
        """Put one datagram on the wire of ``realm`` (None: public);
        ``ttl`` is what is left of its IP TTL (None: it never expires)."""
        rng = self._rng
        if self._loss and rng.random() < self._loss:
            self._drop("loss", src, dst, data)
            return
        copies = 1
        if self._duplicate and rng.random() < self._duplicate:
            copies = 2
            self._duplicated += 1
        push = self._queue.push
        args = (realm, dst, data, src, options, ttl)
        deliver = self._deliver_fn
        for _ in range(copies):
            when = self._now + self._latency
            if self._jitter:
                when += rng.random() * self._jitter
            if self._reorder and rng.random() < self._reorder:
                when += self.reorder_delay
            self._seq = seq = self._seq + 1
            push((when, seq, deliver, args))

    def _spend(
        self, ttl: int, routers: int, src: tuple[str, int], dst: tuple[str, int], data: bytes
    ) -> int | None:
        """What is left of ``ttl`` after ``routers`` routers forwarded the
        datagram, or None (and a ``"ttl_expired"`` drop) if one of them
        found it at 1."""
        if ttl > routers:
            return ttl - routers
        self._drop("ttl_expired", src, dst, data)
        return None

    def _deliver(
        self,
        realm: NAT | None,
        dst: tuple[str, int],
        data: bytes,
        src: Address,
        options: SendOptions | None,
        ttl: int | None = None,
    ) -> None:
        """A datagram arrives at ``dst`` in ``realm``; this is where it
        crosses the core and the destination's NAT, spending what is left
        of its TTL (``ttl``) on their routers."""
        ip = dst[0]
        host: Host | None
        if realm is None:
            host = self._hosts.get(ip)
            if host is None:
                nat = self._nats.get(ip)
                if nat is None:
                    self._drop("no_listener", src, dst, data)
                    return
                if ttl is not None:
                    ttl = self._spend(ttl, self._hops + nat.hops, src, dst, data)
                    if ttl is None:
                        return
                inside = nat.ingress(src, dst[1], self._now)
                if inside is None:
                    self._drop("nat_filtered", src, dst, data)
                    return
                host, dst = inside
                if ttl is not None and self._spend(ttl, 1 + host.hops, src, dst, data) is None:
                    return
            elif (
                ttl is not None and self._spend(ttl, self._hops + host.hops, src, dst, data) is None
            ):
                return
        else:
            host = realm.host_at(ip)
        driver = host.driver_at(dst[1]) if host is not None else None
        if driver is None:
            self._drop("no_listener", src, dst, data)
            return
        endpoint = driver.endpoint
        if endpoint is None:
            driver.enqueue(data, src, options)
            return
        self._delivered += 1
        if self.trace is not None:
            self.trace(TraceEvent(self._now, "deliver", src, driver.address, data, None, options))
        with driver.lock:
            endpoint.receive_datagram(data, src, self._now)
            driver.flush()

    def _drop(self, reason: str, src: tuple[str, int], dst: tuple[str, int], data: bytes) -> None:
        if reason == "loss":
            self._dropped_loss += 1
        elif reason == "no_listener":
            self._dropped_no_listener += 1
        elif reason == "nat_filtered":
            self._dropped_nat_filtered += 1
        elif reason == "ttl_expired":
            self._dropped_ttl_expired += 1
        else:
            self._dropped_no_route += 1
        if self.trace is not None:
            self.trace(TraceEvent(self._now, "drop", src, dst, data, reason))

    def _taken(self, ip: str) -> bool:
        return ip in self._hosts or ip in self._nats

    def _auto(self, taken: Callable[[str], bool], *, public: bool, start: int = 0) -> str:
        n = self._auto_ip if public else _AUTO_PRIVATE + start
        while taken(str(ipaddress.IPv4Address(n))):
            n += 1
        if public:
            self._auto_ip = n + 1
        return str(ipaddress.IPv4Address(n))


def _check_ip(name: str, ip: str) -> str:
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise ArgumentError(f"{name}: not an IP address: {ip!r}") from None
    return ip
