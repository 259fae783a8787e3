"""The contract between a sans-I/O protocol core and the driver that runs it.

A protocol core (:class:`Endpoint`) never touches a socket, a thread or a
clock: datagrams and the current time go in, datagrams to send and the
deadline of its next timer come out. A :class:`Driver` owns the rest: one
socket, a receiver (a thread, a greenlet, or the simulator's event loop),
one timer, a lock that serialises every call into the endpoint, and the way
a caller *waits* (for a :class:`~hyperdht.future.Future` or an event).

The contract has two halves (:class:`Transport`: the socket, sending and
the timer; :class:`Waiting`: the lock, blocking waits, events and
``spawn``), so that a driver with another waiting model (asyncio) can share
the first. :class:`Driver` is both. Rules every driver follows:

* Every call into the endpoint happens with ``driver.lock`` held. After
  such a call the caller runs :meth:`Driver.flush` (still holding the lock),
  or simply uses ``with driver.locked():`` which does both.
* ``flush`` sends everything in ``endpoint.datagrams_to_send()`` (with
  each datagram's ``options``) and re-arms the timer from
  ``endpoint.get_timer()``.
* The receiver hands every datagram to ``endpoint.receive_datagram`` with
  ``driver.now()``; it never raises out of the loop because of one bad
  datagram or one failed ``sendto`` (the endpoint counts drops itself).
* ``close()`` stops the receiver and the timer, closes the socket if the
  driver created it, and returns only when no thread/greenlet of the driver
  is left running (unless called from the driver's own receiver/timer, in
  which case it does not join itself; a thread running a spawned callable
  that hangs is waited for only briefly, since it cannot be interrupted).
  It is idempotent.

A *backend* is what ``DHT(backend=...)`` takes: ``"thread"``, ``"gevent"``,
or any object with a ``create_driver(...)`` method (see :class:`Backend`),
such as a host of :class:`hyperdht.testing.Network`.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..datagram import Datagram
    from ..future import Future
    from ..ipencoding import Address

__all__ = ["Endpoint", "Event", "Transport", "Waiting", "Driver", "Backend", "SocketLike"]


@runtime_checkable
class Endpoint(Protocol):
    """A sans-I/O protocol core, as a driver sees it."""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Process one datagram that arrived from ``addr``."""

    def datagrams_to_send(self) -> list[Datagram]:
        """Drain and return the datagrams queued for sending, as
        ``(data, address, options)`` triples (see :mod:`hyperdht.datagram`)."""

    def get_timer(self) -> float | None:
        """Absolute time (driver clock) at which ``handle_timer`` is due,
        or None when nothing is scheduled."""

    def handle_timer(self, now: float) -> None:
        """Run whatever is due at ``now``."""


@runtime_checkable
class SocketLike(Protocol):
    """What a caller-supplied ``socket=`` must offer (a bound UDP socket
    does). ``fileno()`` is needed by the thread driver to wake its receiver
    on close."""

    def sendto(self, data: bytes, address: Any, /) -> int:
        """Send one datagram to ``address``."""
        ...

    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]:
        """Receive one datagram: ``(data, address)``."""
        ...

    def getsockname(self) -> Any:
        """The bound local address."""
        ...

    def close(self) -> None:
        """Close the socket (a driver never closes a caller's socket)."""
        ...


class Event(Protocol):
    """``threading.Event``-like; ``wait`` must cooperate with the driver
    (a gevent event under gevent, the virtual clock under the simulator)."""

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        ...

    def clear(self) -> None:
        """Reset the flag."""
        ...

    def is_set(self) -> bool:
        """True while the flag is set."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout``; True if set."""
        ...


class Transport(abc.ABC):
    """The *transport* half of the driver contract: one socket (real or
    simulated) carrying one endpoint's datagrams, and its timer.

    Who calls what:

    * The endpoint's owner (``DHT``, ``UDPRequest``) calls :meth:`start`
      once, :meth:`close` once or more, and :meth:`flush` after every call
      into the endpoint, with the driver's lock held (see :class:`Waiting`).
    * The driver itself calls ``endpoint.receive_datagram(data, addr,
      now)`` and ``endpoint.handle_timer(now)`` with the lock held, then
      :meth:`flush`; and :meth:`send_datagrams` from :meth:`flush`.
    * :meth:`now` and :attr:`address` may be read from anywhere.

    Nothing here blocks waiting for something to happen: a driver whose
    waiting model is different (futures awaited on an asyncio loop) offers
    the same transport.
    """

    @property
    @abc.abstractmethod
    def address(self) -> Address:
        """The local address the socket is bound to."""

    @abc.abstractmethod
    def now(self) -> float:
        """Current time in seconds on the driver's clock (monotonic)."""

    @abc.abstractmethod
    def start(self, endpoint: Endpoint) -> None:
        """Begin receiving and timing for ``endpoint``, then flush what it
        queued before. Raises :class:`~hyperdht.errors.StateError` when
        already started and :class:`~hyperdht.errors.ClosedError` after
        :meth:`close`."""

    @abc.abstractmethod
    def send_datagrams(self, datagrams: Sequence[Datagram]) -> None:
        """Send ``(data, address, options)`` triples, applying each one's
        :class:`~hyperdht.datagram.SendOptions` to that datagram only. A
        datagram that cannot be sent is dropped (and counted), never
        raised: UDP is lossy anyway. Called by :meth:`flush`."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Send ``endpoint.datagrams_to_send()`` (through
        :meth:`send_datagrams`) and re-arm the timer from
        ``endpoint.get_timer()``. Call with the lock held; a no-op before
        :meth:`start` and after :meth:`close`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop everything this driver started; idempotent."""


class Waiting(abc.ABC):
    """The *waiting* half of the driver contract: how a caller outside the
    driver serialises with it and blocks until the endpoint has answered.

    * ``lock`` is re-entrant. Hold it for every call into the endpoint
      (``with driver.locked():`` does that and flushes on exit).
    * :meth:`wait` and the ``wait`` of :meth:`new_event` events are called
      *without* the lock, from the caller's thread (greenlet; under the
      simulator, the test's top level), never from the receiver or timer.
    * :meth:`spawn` may be called with or without the lock, from anywhere;
      the callable runs later without the lock.
    """

    #: Re-entrant lock serialising every call into the endpoint.
    lock: Any

    @abc.abstractmethod
    def wait(self, future: Future[Any], timeout: float | None) -> bool:
        """Block until ``future`` is done or ``timeout`` seconds pass or the
        driver closes; True if it is done. Call *without* holding the lock."""

    @abc.abstractmethod
    def new_event(self) -> Event:
        """A fresh, unset event that waits cooperatively with this driver."""

    @abc.abstractmethod
    def spawn(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` soon, outside the receiver and without the lock
        (used to hand slow application handlers off the receive path). An
        exception it raises is logged, not propagated (the simulator
        propagates it out of its loop instead). Ignored after ``close()``."""


class Driver(Transport, Waiting):
    """Runs one :class:`Endpoint` on one socket: a :class:`Transport` and a
    :class:`Waiting` model together. See the module docstring."""

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """``with driver.locked():`` holds the lock and flushes on exit."""
        with self.lock:
            try:
                yield
            finally:
                self.flush()


class Backend(Protocol):
    """Something that creates drivers: the thing ``backend=`` accepts besides
    the names of :data:`hyperdht.drivers.BACKENDS`."""

    def create_driver(
        self,
        *,
        host: str,
        port: int,
        ipv6: bool,
        socket: SocketLike | None,
    ) -> Driver:
        """A driver bound to ``host:port`` (or running ``socket``)."""
        ...
