"""The simulator's :class:`~hyperdht.drivers.base.Driver`: one simulated
UDP socket feeding one sans-I/O endpoint from the network's event loop.

Everything runs in the thread that drives the :class:`Network`. Blocking
calls (:meth:`SimDriver.wait`, :meth:`SimEvent.wait`) run the event loop
until the thing waited for happens or the *virtual* deadline passes, so a
blocking API written for real sockets runs unchanged, and instantly, on the
simulator. They cannot be called from inside the loop (a datagram, timer or
spawned callback): that raises StateError (a RuntimeError), see
:meth:`Network.run`.

The driver owns its timer (it schedules ``_on_timer`` on the network's
heap and recognises superseded entries by its own sequence number) and its
backlog; the network reaches it only through public members
(:attr:`SimDriver.endpoint`, :meth:`SimDriver.enqueue`, ``lock``,
:meth:`SimDriver.flush`).
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..drivers.base import Driver, Endpoint
from ..errors import ClosedError, StateError

if TYPE_CHECKING:
    # Back-references for annotations only: a Host creates its drivers and
    # the Network routes to them, so importing those at run time would be
    # a cycle (host -> driver -> host).
    from ..datagram import Datagram, SendOptions
    from ..future import Future
    from ..ipencoding import Address
    from .host import Host
    from .network import Network

__all__ = ["SimDriver", "SimEvent"]


class SimEvent:
    """A ``threading.Event`` look-alike whose :meth:`wait` runs the
    simulated network instead of blocking."""

    __slots__ = ("_flag", "_network")

    def __init__(self, network: Network) -> None:
        """An unset event on ``network``'s clock."""
        self._network = network
        self._flag = False

    def set(self) -> None:
        """Set the flag; a pending :meth:`wait` returns True."""
        self._flag = True

    def clear(self) -> None:
        """Reset the flag."""
        self._flag = False

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        """Run the network until the flag is set (True) or ``timeout``
        virtual seconds pass (False). Raises like :meth:`SimDriver.wait`."""
        return self._flag or self._network.block_until(self.is_set, timeout)

    def __repr__(self) -> str:
        return f"<SimEvent {'set' if self._flag else 'unset'}>"


class SimDriver(Driver):
    """A simulated UDP socket bound on a :class:`Host`, running one endpoint.

    Create it with :meth:`Host.create_driver` (or let the library do so
    through ``backend=host``). ``address`` is the host's own IP and the
    bound port, even for a wildcard bind; behind a NAT that is the private
    address, and peers see the NAT's mapping instead.
    """

    __slots__ = (
        "_address",
        "_backlog",
        "_closed",
        "_deadline",
        "_endpoint",
        "_host",
        "_network",
        "_timer_at",
        "_timer_seq",
        "lock",
    )

    def __init__(self, host: Host, address: Address) -> None:
        """Use :meth:`Host.create_driver` rather than calling this directly."""
        #: A re-entrant lock, as the contract asks; never contended here.
        self.lock = threading.RLock()
        self._network = host.network
        self._host = host
        self._address = address
        self._endpoint: Endpoint | None = None
        self._closed = False
        # The endpoint's deadline as of the last flush.
        self._deadline: float | None = None
        # The earliest timer event in the network's heap that is still
        # valid (inf: none); other scheduled events are superseded, not
        # removed, and recognised by their sequence number: only the one
        # carrying _timer_seq is live.
        self._timer_at = math.inf
        self._timer_seq = 0
        # Datagrams that arrived before start(), as a kernel would queue them.
        self._backlog: list[tuple[bytes, Address, SendOptions | None]] = []

    @property
    def address(self) -> Address:
        """The local (host IP, port) the socket is bound to."""
        return self._address

    @property
    def host(self) -> Host:
        """The host this socket is bound on."""
        return self._host

    def node_rng(self) -> random.Random:
        """The network's seeded :class:`random.Random` for the node on this
        socket (:meth:`Network.node_rng`, one shared by every node): the DHT
        takes its id and tids from it."""
        return self._network.node_rng(self._address)

    @property
    def network(self) -> Network:
        """The network whose clock and loop this driver uses."""
        return self._network

    @property
    def endpoint(self) -> Endpoint | None:
        """The endpoint given to :meth:`start`, or None before."""
        return self._endpoint

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def now(self) -> float:
        """The network's virtual clock, in seconds."""
        return self._network.now

    def start(self, endpoint: Endpoint) -> None:
        """Attach ``endpoint``: hand it any datagram that arrived since the
        bind, and arm its timer. Raises ClosedError after :meth:`close` and
        StateError (a RuntimeError) when already started."""
        if self._closed:
            raise ClosedError(f"SimDriver {self._address}: start() after close()")
        if self._endpoint is not None:
            raise StateError(f"SimDriver {self._address}: already started")
        self._endpoint = endpoint
        backlog, self._backlog = self._backlog, []
        network = self._network
        with self.lock:
            for data, src, options in backlog:
                network.record_delivery(src, self._address, data, options)
                endpoint.receive_datagram(data, src, network.now)
            self.flush()

    def enqueue(self, data: bytes, src: Address, options: SendOptions | None = None) -> None:
        """Keep a datagram that arrived before :meth:`start`, as a kernel
        queues it on a bound socket; ``start()`` delivers it. The network
        calls this when :attr:`endpoint` is None."""
        if not self._closed:
            self._backlog.append((data, src, options))

    def send_datagrams(self, datagrams: Sequence[Datagram]) -> None:
        """Hand ``(data, address, options)`` triples to the network, which
        routes them with their options (see :meth:`Network.route`)."""
        self._network.route(self, datagrams)

    def flush(self) -> None:
        """Hand the endpoint's queued datagrams to the network and re-arm
        the timer from ``endpoint.get_timer()``. A no-op before
        :meth:`start` and after :meth:`close`."""
        endpoint = self._endpoint
        if endpoint is None or self._closed:
            return
        out = endpoint.datagrams_to_send()
        if out:
            self._network.route(self, out)
        deadline = endpoint.get_timer()
        self._deadline = deadline
        if deadline is not None and deadline < self._timer_at:
            self._arm_timer(deadline)

    def wait(self, future: Future[Any], timeout: float | None) -> bool:
        """Run the network until ``future`` is done (True), or ``timeout``
        virtual seconds pass or the driver is closed (then
        ``future.done()``); virtual time advances to that moment and no
        further.

        Raises StateError (a RuntimeError) when called from inside the
        event loop (unless it can answer at once: the future is done or
        ``timeout`` <= 0), and when ``timeout`` is None and nothing is left scheduled, so the
        future can never complete (a simulated deadlock). An exception
        raised by an endpoint or callback while the loop runs propagates."""
        if future.done() or self._closed:
            return future.done()
        self._network.block_until(lambda: future.done() or self._closed, timeout)
        return future.done()

    def nat_hops(self, public_ip: str) -> int | None:
        """Routers from this socket's host up to and including the NAT
        whose public address is ``public_ip`` (its own routers + 1), or
        None when that is not this host's NAT: the simulator's answer to
        the TTL probe :mod:`hyperdht.dhtrpc.natprobe` makes on real
        sockets."""
        nat = self._host.nat
        if nat is None or nat.public_ip != public_ip:
            return None
        return self._host.hops + 1

    def new_event(self) -> SimEvent:
        """A fresh, unset :class:`SimEvent` on this network."""
        return SimEvent(self._network)

    def spawn(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` from the event loop at the current virtual
        time, after what is already due then; without the lock. Dropped if
        the driver is closed by then."""
        if self._closed:
            return
        self._network.schedule(self._network.now, self._run_spawned, fn, args)

    def close(self) -> None:
        """Unbind the port and cancel the timer and spawned calls;
        idempotent. Datagrams still in flight to it are dropped on arrival
        (counted as ``dropped_no_listener``)."""
        if self._closed:
            return
        self._closed = True
        self._deadline = None
        self._timer_at = math.inf
        self._timer_seq += 1  # supersedes the scheduled timer event
        self._backlog = []
        self._host.unbind(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SimDriver {self._address[0]}:{self._address[1]} {state}>"

    # -- the timer, on the network's heap ----------------------------------------

    def _arm_timer(self, deadline: float) -> None:
        network = self._network
        now = network.now
        when = deadline if deadline > now else now
        self._timer_seq = seq = self._timer_seq + 1
        self._timer_at = when
        network.schedule(when, self._on_timer, seq)

    def _on_timer(self, seq: int) -> None:
        if seq != self._timer_seq or self._closed:
            return  # superseded by an earlier deadline, or closed
        self._timer_at = math.inf
        deadline = self._deadline
        if deadline is None:
            return
        network = self._network
        now = network.now
        if deadline > now:
            # The deadline moved later since this event was scheduled.
            self._arm_timer(deadline)
            return
        endpoint = self._endpoint
        assert endpoint is not None  # a timer is only armed by flush()
        if network.trace is not None:
            network.record_timer(self._address)
        with self.lock:
            endpoint.handle_timer(now)
            self.flush()

    def _run_spawned(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        if not self._closed:
            fn(*args)
