"""What the socket drivers share, written once.

:class:`SocketEndpointDriver` is what every driver of a real UDP socket
shares, the asyncio driver included: the socket and its address, the lock,
the endpoint and its deadline, the counters, sending with per-datagram
options, ``flush()`` and the accounting of errors. Its subclass
:class:`SocketDriver`, the base of the thread and gevent drivers, adds the
waiters and implements everything that does not depend on how the driver
runs code concurrently:

* ``start()``'s guards, ``flush()``, ``send_datagrams()``, ``wait()``,
  ``spawn()``'s guard and the logging of a spawned callable's exception;
* the **receive loop**: it waits for a first datagram (the backend says
  how), then, holding the lock once, reads the clock *once per batch*,
  hands up to :data:`RECV_BATCH` datagrams to the endpoint (draining what
  the kernel already holds without blocking), and flushes once;
* the **timer loop**: sleep on an event of the backend until the
  endpoint's deadline (at most :data:`MAX_SLEEP` at a time), woken early
  when a flush moves the deadline earlier;
  run ``handle_timer``; after it raised, back off :data:`TIMER_ERROR_BACKOFF`
  so an endpoint stuck on an overdue deadline cannot spin;
* ``close()``'s order: mark closing and wake the timer and receiver (with
  the lock), release every blocked ``wait()``, stop the tasks, then close
  the socket the driver owns or restore the caller's socket timeout.

A backend module subclasses it and supplies only what differs: the lock,
events, how a task (receiver, timer, spawned callable) is started and
stopped, and how the receiver waits for the first datagram of a batch (and
is woken on close).
"""

from __future__ import annotations

import abc
import contextlib
import errno
import logging
import socket as _socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..datagram import Datagram
from ..errors import BindError, ClosedError, StateError
from ..ipencoding import Address
from .base import Driver, Endpoint, Event

if TYPE_CHECKING:
    from ..future import Future

__all__ = [
    "MAX_SLEEP",
    "RECV_BATCH",
    "RECV_BUFSIZE",
    "SEND_ERRORS",
    "TIMER_ERROR_BACKOFF",
    "NextDatagram",
    "SocketDriver",
    "SocketEndpointDriver",
    "bind_udp",
    "drain_error_queue",
    "received_address",
    "send_datagrams",
    "send_with_ttl",
    "sockname_address",
]

log = logging.getLogger(__name__)

#: Larger than any UDP payload, so a datagram is never truncated.
RECV_BUFSIZE = 65536
#: Datagrams a receiver handles per lock hold (then it flushes once).
RECV_BATCH = 64
#: After ``handle_timer`` raised, wait this long before calling it again
#: unless the deadline changes, so an endpoint stuck on an overdue deadline
#: cannot spin.
TIMER_ERROR_BACKOFF = 0.05
#: Longest single timer sleep: a far deadline (even inf) just costs a
#: wake-up and a re-check now and then, instead of overflowing a timeout.
MAX_SLEEP = 3600.0

#: What ``sendto`` raises for a destination that cannot be sent to: OSError
#: for the network (EPERM, ENETUNREACH, EMSGSIZE, a full buffer, gaierror),
#: ValueError/OverflowError for an address the socket module rejects (a port
#: out of range, a malformed IDNA host). All are per-datagram drops.
SEND_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, OverflowError)

#: How a receiver gets the first datagram of a batch: block until one is
#: there and return ``(data, sockaddr)``, or return None to have the loop
#: re-check whether the driver is closing (a timeout, a spurious wake-up,
#: an ICMP error).
NextDatagram = Callable[[], "tuple[bytes, Any] | None"]


def received_address(addr: Any, _new: Any = tuple.__new__) -> Address:
    """The :class:`Address` of what ``recvfrom`` returned as the source:
    the pair itself for IPv4, host and port of the 4-tuple for IPv6 (the
    per-datagram hot path: no ``Address.__new__`` call for a pair)."""
    if len(addr) == 2:
        return _new(Address, addr)  # type: ignore[no-any-return]
    return Address(addr[0], addr[1])


def sockname_address(sockname: Any) -> Address:
    """Convert what ``getsockname``/``recvfrom`` return (a 2-tuple for IPv4,
    a 4-tuple for IPv6) to an Address."""
    return Address(sockname[0], sockname[1])


def bind_udp(factory: Callable[[int, int], Any], host: str, port: int, ipv6: bool) -> Any:
    """Create a UDP socket with ``factory(family, type)`` and bind it.

    ``factory`` is passed in (``socket.socket`` looked up at call time, or
    ``gevent.socket.socket``) so a monkey-patched program gets its own.

    Raises :class:`~hyperdht.errors.BindError` (an OSError, same errno)
    whose message names the address, e.g. when the port is in use; the
    socket is closed first.
    """
    family = _socket.AF_INET6 if ipv6 else _socket.AF_INET
    sock = factory(family, _socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        shown = f"[{host}]:{port}" if ipv6 else f"{host}:{port}"
        raise BindError(exc.errno, f"cannot bind UDP socket to {shown}: {exc.strerror}") from exc
    return sock


def drain_error_queue(sock: Any) -> int:
    """Read and discard the ICMP errors queued on ``sock`` (Linux, when the
    caller's socket has ``IP_RECVERR``/``IPV6_RECVERR`` set); return how
    many. A queued error keeps the descriptor readable while ``recvfrom``
    has nothing to return, so a receiver that woke up for nothing calls
    this, or it would spin. At most :data:`RECV_BATCH` per call; a no-op
    for a socket-like object without ``recvmsg``."""
    recvmsg = getattr(sock, "recvmsg", None)
    flags = getattr(_socket, "MSG_ERRQUEUE", 0)
    if recvmsg is None or not flags:
        return 0
    flags |= getattr(_socket, "MSG_DONTWAIT", 0)
    for n in range(RECV_BATCH):
        try:
            recvmsg(1, 1024, flags)
        except (OSError, ValueError):  # BlockingIOError: the queue is empty
            return n
    return RECV_BATCH


def send_datagrams(sock: Any, datagrams: Iterable[Datagram]) -> int:
    """Send each ``(data, addr, options)`` on ``sock``; return how many
    sends failed.

    ``options.ttl`` sets the IP TTL (IPv6: unicast hop limit) for that one
    datagram and restores the socket's previous value right after. A
    failure is logged at debug and skipped, never raised: UDP is lossy
    anyway and one bad destination must not stop the others.
    """
    errors = 0
    sendto = sock.sendto
    for data, addr, options in datagrams:
        try:
            if options is None or options.ttl is None:
                sendto(data, addr)
            else:
                send_with_ttl(sock, data, addr, options.ttl)
        except SEND_ERRORS as exc:
            errors += 1
            log.debug("sendto %r (%d bytes) failed: %s", addr, len(data), exc)
    return errors


def _ttl_option(sock: Any) -> tuple[int, int]:
    if getattr(sock, "family", _socket.AF_INET) == _socket.AF_INET6:
        return _socket.IPPROTO_IPV6, _socket.IPV6_UNICAST_HOPS
    return _socket.IPPROTO_IP, _socket.IP_TTL


def send_with_ttl(sock: Any, data: bytes, addr: Any, ttl: int) -> None:
    """``sock.sendto(data, addr)`` with the IP TTL set to ``ttl`` for this
    datagram only. Raises what ``setsockopt``/``sendto`` raise (an OSError
    with EOPNOTSUPP for a socket-like object without ``setsockopt``)."""
    if not hasattr(sock, "setsockopt"):
        raise OSError(errno.EOPNOTSUPP, f"{type(sock).__name__} cannot set a per-datagram TTL")
    level, option = _ttl_option(sock)
    previous = sock.getsockopt(level, option)
    sock.setsockopt(level, option, ttl)
    try:
        sock.sendto(data, addr)
    finally:
        sock.setsockopt(level, option, previous)


class SocketEndpointDriver(Driver):
    """What every driver that runs an endpoint on a real UDP socket shares,
    whatever runs its code (threads, greenlets, an event loop): the socket
    and its address, the lock, the endpoint and its deadline, the closing
    flag, the counters, sending with per-datagram options, ``flush()``, and
    the accounting of exceptions raised by the endpoint or spawned work.

    A subclass says what to do when ``flush()`` finds a new deadline
    (:meth:`_deadline_changed`) and supplies the rest of the contract.

    ``send_errors`` counts datagrams ``sendto`` refused; ``endpoint_errors``
    counts exceptions raised by the endpoint inside the driver's receiver or
    timer (each is logged and the driver goes on).
    """

    def __init__(self, sock: Any, *, owned: bool, lock: Any) -> None:
        #: Re-entrant lock serialising every call into the endpoint.
        self.lock: Any = lock
        #: Datagrams ``sendto`` refused (each is dropped and logged at debug).
        self.send_errors = 0
        #: Exceptions the endpoint raised in the receiver or timer.
        self.endpoint_errors = 0
        self._sock = sock
        self._owned = owned
        self._address = sockname_address(sock.getsockname())
        self._endpoint: Endpoint | None = None
        self._deadline: float | None = None
        self._closing = False

    @property
    def address(self) -> Address:
        """The local (host, port) the socket is bound to."""
        return self._address

    @property
    def socket(self) -> Any:
        """The socket the driver reads and sends on (e.g. to set options);
        see the driver's module docstring for caller-supplied sockets."""
        return self._sock

    @property
    def closing(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._closing

    def now(self) -> float:
        """Seconds on :func:`time.monotonic`."""
        return time.monotonic()

    def send_datagrams(self, datagrams: Sequence[Datagram]) -> None:
        """Send on the socket with per-datagram options; failures (a full
        send buffer included) are counted in ``send_errors``, never raised."""
        self.send_errors += send_datagrams(self._sock, datagrams)

    def flush(self) -> None:
        """Send the endpoint's queued datagrams, then let the timer know of
        the endpoint's deadline (:meth:`_deadline_changed`). A no-op before
        ``start()`` and after ``close()``."""
        with self.lock:
            endpoint = self._endpoint
            if endpoint is None or self._closing:
                return
            datagrams = endpoint.datagrams_to_send()
            if datagrams:
                self.send_datagrams(datagrams)
            old = self._deadline
            deadline = self._deadline = endpoint.get_timer()
            if deadline is not None:
                self._deadline_changed(old, deadline)

    @abc.abstractmethod
    def _deadline_changed(self, old: float | None, deadline: float) -> None:
        """``flush()`` found ``deadline`` (it was ``old``): re-arm the timer
        if it must fire earlier. Called with the lock held."""

    def _run_spawned(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("spawned %r raised", fn)

    def _safe_flush(self) -> None:
        try:
            self.flush()
        except Exception:
            self._endpoint_error("datagrams_to_send/get_timer")

    def _endpoint_error(self, what: str) -> None:
        self.endpoint_errors += 1
        log.exception("endpoint.%s raised (driver on %s)", what, self._address)


class SocketDriver(SocketEndpointDriver):
    """The shared implementation of the thread and gevent drivers (see the
    module docstring for what it does and what a subclass supplies).

    ``sock`` is the socket to read and send on; ``owned`` says whether
    ``close()`` closes it; ``lock`` is the backend's re-entrant lock.
    ``restore_timeout``, if not None, is ``(socket, timeout)``: the caller's
    socket whose timeout the driver changes, and the value ``close()`` puts
    back.

    ``send_errors`` counts datagrams ``sendto`` refused; ``endpoint_errors``
    counts exceptions raised by the endpoint inside the receiver or timer
    (each is logged and the loop goes on).
    """

    def __init__(
        self,
        sock: Any,
        *,
        owned: bool,
        lock: Any,
        restore_timeout: tuple[Any, float | None] | None = None,
    ) -> None:
        super().__init__(sock, owned=owned, lock=lock)
        self._restore_timeout = restore_timeout
        self._waiters: set[Event] = set()
        # Set to make the timer re-read the deadline (see _timer_loop).
        self._timer_wake: Event = self.new_event()

    # -- transport ------------------------------------------------------------

    def start(self, endpoint: Endpoint) -> None:
        """Start the receiver and the timer for ``endpoint``, then flush
        whatever it queued before. Raises ClosedError after ``close()`` and
        StateError (a RuntimeError) when already started."""
        with self.lock:
            if self._closing:
                raise ClosedError("driver is closed")
            if self._endpoint is not None:
                raise StateError("driver already started")
            self._start_loops(endpoint)
            self._endpoint = endpoint
            self.flush()

    def _start_loops(self, endpoint: Endpoint) -> None:
        """Called by ``start()`` with the lock: start the receiver and the
        timer of ``endpoint``; by default a task each (:meth:`_launch`)."""
        next_datagram, drain = self._prepare_receiver()
        port = self._address[1]
        self._launch(f"hyperdht-recv-{port}", self._receive_loop, endpoint, next_datagram, drain)
        self._launch(f"hyperdht-timer-{port}", self._timer_loop, endpoint)

    def _deadline_changed(self, old: float | None, deadline: float) -> None:
        if old is None or deadline < old:
            self._timer_wake.set()

    def close(self) -> None:
        """Stop the receiver, the timer and spawned work (see the backend
        for which tasks it can join), release every blocked :meth:`wait`,
        then close the socket if the driver created it, or restore the
        caller's socket timeout. Idempotent."""
        with self.lock:
            if self._closing:
                return
            self._closing = True
            self._timer_wake.set()
            self._wake_receiver()
            waiters = list(self._waiters)
        for event in waiters:
            event.set()
        self._stop_tasks()
        if self._owned:
            self._sock.close()
        restore = self._restore_timeout
        if restore is not None:
            sock, timeout = restore
            with contextlib.suppress(OSError):  # the caller closed it meanwhile
                sock.settimeout(timeout)

    # -- waiting ----------------------------------------------------------------

    def wait(self, future: Future[Any], timeout: float | None) -> bool:
        """Block until ``future`` is done (True) or ``timeout`` passes or the
        driver closes (then ``future.done()``). Call without the lock."""
        if future.done():
            return True
        event = self.new_event()
        with self.lock:
            if self._closing:
                return future.done()
            self._waiters.add(event)
            future.add_done_callback(lambda _: event.set())
        try:
            event.wait(timeout)
        finally:
            with self.lock:
                self._waiters.discard(event)
        return future.done()

    def spawn(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` as a task of the backend; an exception it
        raises is logged. Ignored (logged at debug) after ``close()``."""
        with self.lock:
            if self._closing:
                log.debug("spawn(%r) after close() ignored", fn)
                return
            self._spawn_task(fn, args)

    # -- what a backend supplies --------------------------------------------------

    @abc.abstractmethod
    def _prepare_receiver(self) -> tuple[NextDatagram, Callable[[int], Any] | None]:
        """Called by ``start()`` with the lock: set the socket up for the
        receiver and return ``(next_datagram, drain)``: how to block for
        the first datagram of a batch, and a non-blocking ``recvfrom``
        (raising OSError when nothing is queued) for the rest, or None to
        handle one datagram per batch."""

    @abc.abstractmethod
    def _launch(self, name: str, fn: Callable[..., object], *args: Any) -> None:
        """Start ``fn(*args)`` as a task named ``name`` (receiver, timer)."""

    @abc.abstractmethod
    def _spawn_task(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        """Run ``self._run_spawned(fn, args)`` as a task (with the lock)."""

    def _wake_receiver(self) -> None:
        """Make the receiver notice ``close()`` (called with the lock);
        nothing by default."""

    @abc.abstractmethod
    def _stop_tasks(self) -> None:
        """Called by ``close()`` without the lock, after the closing flag is
        set and every waiter released: stop (join or kill) the tasks."""

    # -- the loops ------------------------------------------------------------

    def _receive_loop(
        self,
        endpoint: Endpoint,
        next_datagram: NextDatagram,
        drain: Callable[[int], Any] | None,
    ) -> None:
        # Hot path: everything the loop touches per datagram is a local.
        receive = endpoint.receive_datagram
        make_address = received_address
        clock = self.now
        lock = self.lock
        batch = range(RECV_BATCH - 1) if drain is not None else ()
        try:
            while not self._closing:
                got = next_datagram()
                if got is None:
                    continue
                data, addr = got
                with lock:
                    if self._closing:
                        return
                    now = clock()
                    try:
                        receive(data, make_address(addr), now)
                    except Exception:
                        self._endpoint_error("receive_datagram")
                    for _ in batch:
                        try:
                            data, addr = drain(RECV_BUFSIZE)  # type: ignore[misc]
                        except OSError:  # BlockingIOError: nothing more queued
                            break
                        try:
                            receive(data, make_address(addr), now)
                        except Exception:
                            self._endpoint_error("receive_datagram")
                    self._safe_flush()
        except Exception:
            if not self._closing:
                log.exception("receiver of %s stopped", self._address)
        finally:
            self._receiver_exited()

    def _receiver_exited(self) -> None:
        """Run by the receiver as it exits; nothing by default."""

    def _timer_loop(self, endpoint: Endpoint) -> None:
        # The wake event is cleared *before* the deadline is read, and set
        # by flush() after it changes the deadline, so no wake-up is lost;
        # the lock is held only to run the endpoint, never while sleeping
        # (close() may hold it while it stops this task).
        wake = self._timer_wake
        clock = self.now
        lock = self.lock
        try:
            while not self._closing:
                wake.clear()
                deadline = self._deadline
                if deadline is None:
                    wake.wait()
                    continue
                delay = deadline - clock()
                if delay > 0:
                    wake.wait(min(delay, MAX_SLEEP))
                    continue
                failed = False
                with lock:
                    deadline = self._deadline
                    now = clock()
                    if self._closing or deadline is None or now < deadline:
                        continue
                    try:
                        endpoint.handle_timer(now)
                    except Exception:
                        self._endpoint_error("handle_timer")
                        failed = True
                    self._safe_flush()
                if failed:
                    wake.clear()
                    wake.wait(TIMER_ERROR_BACKOFF)
        except Exception:
            if not self._closing:
                log.exception("timer of %s stopped", self._address)

    # -- what a hub calls (thread.Hub on its thread, GeventHub on its worker) --
    #
    # A subclass that runs on a hub sets these: the hub, its registration
    # (None until registered), the socket to read (``_hub_sock``), and the
    # deadline ``handle_timer`` last raised for, with when.
    _hub: Any = None
    _member: Any = None
    _hub_sock: Any = None
    _failed_deadline: float | None = None
    _failed_at: float = 0.0

    def _hub_readable(self) -> None:
        """What a hub calls when the socket is readable: up to
        :data:`RECV_BATCH` datagrams under the lock, one flush."""
        endpoint = self._endpoint
        if endpoint is None:
            return
        receive = endpoint.receive_datagram
        sock = self._hub_sock
        recvfrom = sock.recvfrom
        make_address = received_address
        with self.lock:
            if self._closing:
                return
            now = self.now()
            for received in range(RECV_BATCH):
                try:
                    data, addr = recvfrom(RECV_BUFSIZE)
                except (BlockingIOError, InterruptedError):
                    if not received:
                        # Readable with nothing to read: a queued ICMP
                        # report (IP_RECVERR), which would keep the
                        # selector or watcher waking us forever.
                        drain_error_queue(sock)
                    break  # nothing more queued (or a spurious readiness)
                except ConnectionError:
                    continue  # an ICMP error reported on the socket
                except OSError:
                    if not self._closing:
                        log.exception("receiving on %s failed", self._address)
                    break
                try:
                    receive(data, make_address(addr), now)
                except Exception:
                    self._endpoint_error("receive_datagram")
            self._safe_flush()

    def _hub_timer(self) -> None:
        """What a hub calls at the armed deadline: ``handle_timer`` if it
        is due (re-arm otherwise; back off after it raised), one flush."""
        endpoint = self._endpoint
        hub = self._hub
        member = self._member
        if endpoint is None or hub is None or member is None:
            return
        with self.lock:
            deadline = self._deadline
            if self._closing or deadline is None:
                return
            now = self.now()
            if now < deadline:
                hub.arm(member, deadline)
                return
            if deadline == self._failed_deadline and now < self._failed_at + TIMER_ERROR_BACKOFF:
                # handle_timer raised for this very deadline: back off.
                hub.arm(member, self._failed_at + TIMER_ERROR_BACKOFF)
                return
            self._failed_deadline = None
            try:
                endpoint.handle_timer(now)
            except Exception:
                self._endpoint_error("handle_timer")
                self._failed_deadline, self._failed_at = deadline, now
            self._safe_flush()
