"""The contract between a sans-I/O protocol core and the driver that runs it.

A protocol core (:class:`Endpoint`) never touches a socket, a thread or a
clock: datagrams and the current time go in, datagrams to send and the
deadline of its next timer come out. A :class:`Driver` owns the rest: one
socket, a receiver (a thread, a greenlet, or the simulator's event loop),
one timer, a lock that serialises every call into the endpoint, and the way
a caller *waits* (for a :class:`~hyperdht.future.Future` or an event).

Rules every driver follows:

* Every call into the endpoint happens with ``driver.lock`` held. After
  such a call the caller runs :meth:`Driver.flush` (still holding the lock),
  or simply uses ``with driver.locked():`` which does both.
* ``flush`` sends everything in ``endpoint.datagrams_to_send()`` and
  re-arms the timer from ``endpoint.get_timer()``.
* The receiver hands every datagram to ``endpoint.receive_datagram`` with
  ``driver.now()``; it never raises out of the loop because of one bad
  datagram or one failed ``sendto`` (the endpoint counts drops itself).
* ``close()`` stops the receiver and the timer, closes the socket if the
  driver created it, and returns only when no thread/greenlet of the driver
  is left running (unless called from the driver's own receiver/timer, in
  which case it does not join itself). It is idempotent.

A *backend* is what ``DHT(backend=...)`` takes: ``"thread"``, ``"gevent"``,
or any object with a ``create_driver(...)`` method (see :class:`Backend`),
such as a host of :class:`hyperdht.testing.Network`.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..datagram import Datagram
    from ..future import Future
    from ..ipencoding import Address

__all__ = ["Endpoint", "Event", "Driver", "Backend", "SocketLike"]


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


class Driver(abc.ABC):
    """Runs one :class:`Endpoint` on one socket. See the module docstring."""

    #: Re-entrant lock serialising every call into the endpoint.
    lock: Any

    @property
    @abc.abstractmethod
    def address(self) -> Address:
        """The local address the socket is bound to."""

    @abc.abstractmethod
    def now(self) -> float:
        """Current time in seconds on the driver's clock (monotonic)."""

    @abc.abstractmethod
    def start(self, endpoint: Endpoint) -> None:
        """Begin receiving and timing for ``endpoint``."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Send queued datagrams and re-arm the timer. Call with the lock held."""

    @abc.abstractmethod
    def wait(self, future: Future[Any], timeout: float | None) -> bool:
        """Block until ``future`` is done or ``timeout`` seconds pass;
        True if it is done. Call *without* holding the lock."""

    @abc.abstractmethod
    def new_event(self) -> Event:
        """A fresh, unset event that waits cooperatively with this driver."""

    @abc.abstractmethod
    def spawn(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` soon, outside the receiver and without the lock
        (used to hand slow application handlers off the receive path)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop everything this driver started; idempotent."""

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
    the names ``"thread"`` and ``"gevent"``."""

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
