"""The asyncio driver (``backend="asyncio"``): a core run by the event loop.

No thread of its own: the socket is watched with ``loop.add_reader`` and
the timer is one ``loop.call_later`` handle, so every call into the
endpoint happens on the loop's thread, in a callback. Works on any loop
with ``add_reader`` (the default selector loop, uvloop); not on Windows'
proactor loop.

The receiver reads what the kernel holds, up to
:data:`~hyperdht.drivers.socket.RECV_BATCH` datagrams per readiness
callback, hands them to the endpoint with one clock reading, and flushes
once (the batching of the socket drivers). The timer is re-armed only when
a flush moves the deadline *earlier*; a timer that fires before a deadline
that moved later simply re-arms, so a busy node does not churn the loop's
timer heap.

The *waiting* half is for code outside the loop's thread: ``wait`` and
the events are :mod:`threading` ones, so a blocking
:class:`~hyperdht.dhtrpc.DHT` on this driver works from a worker thread
(``await asyncio.to_thread(dht.ping, addr)``); called on the loop's own
thread, ``wait`` raises StateError instead of freezing the loop
(:class:`LoopBackend` puts drivers on a loop of another thread). The
asyncio API (:mod:`hyperdht.aio`) uses only the transport half and the
lock, and awaits asyncio futures instead. ``spawn`` runs the callable in
the loop's default executor.

Create it in a coroutine (it takes the running loop), or pass ``loop=``
(from any thread: ``start()`` and ``close()`` then hand the socket to and
from the loop and wait until it has taken or let go of it). A
caller-supplied ``socket=`` (with ``fileno()`` and ``setblocking()``) is
put in non-blocking mode while the driver runs, its own ``recvfrom`` is
called (so a wrapper's filtering stays), its timeout is restored by
``close()``, and it is never closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket as _socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ArgumentError, ArgumentTypeError, ClosedError, StateError
from .base import Endpoint, SocketLike
from .socket import (
    MAX_SLEEP,
    RECV_BATCH,
    RECV_BUFSIZE,
    TIMER_ERROR_BACKOFF,
    SocketEndpointDriver,
    bind_udp,
    drain_error_queue,
    sockname_address,
)

if TYPE_CHECKING:
    from ..future import Future

__all__ = ["AsyncioDriver", "LOOP_CALL_TIMEOUT", "LoopBackend"]

log = logging.getLogger(__name__)

#: How long ``start()``/``close()`` called from another thread wait for the
#: loop to attach or detach the socket (only a stuck loop takes that long).
LOOP_CALL_TIMEOUT = 10.0


def _running_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise StateError(
            "backend='asyncio' needs a running event loop: create the node inside a coroutine"
        ) from None


class LoopBackend:
    """A :class:`~hyperdht.drivers.base.Backend` whose drivers run on
    ``loop``, which may run in another thread: the blocking API then works
    from any other thread. :meth:`in_thread` starts such a loop (the
    commands run ``--backend asyncio`` so)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread: threading.Thread | None = None

    @classmethod
    def in_thread(cls, name: str = "hyperdht-asyncio") -> LoopBackend:
        """A backend on a new event loop running in a daemon thread
        ``name`` until :meth:`stop`."""
        loop = asyncio.new_event_loop()
        backend = cls(loop)
        started = threading.Event()
        loop.call_soon(started.set)
        thread = backend._thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
        thread.start()
        started.wait()
        return backend

    def create_driver(
        self, *, host: str, port: int, ipv6: bool, socket: SocketLike | None
    ) -> AsyncioDriver:
        """An :class:`AsyncioDriver` on :attr:`loop`."""
        return AsyncioDriver(host=host, port=port, ipv6=ipv6, socket=socket, loop=self.loop)

    def stop(self) -> None:
        """Stop and close the loop started by :meth:`in_thread` (close its
        nodes first); a no-op for a loop given to the constructor."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        thread.join()
        self.loop.close()


class AsyncioDriver(SocketEndpointDriver):
    """Runs one endpoint on one UDP socket from an asyncio event loop.

    ``host``/``port``/``ipv6`` say where to bind a new socket (``port=0``
    picks a free one); ``socket`` supplies an already bound one instead
    (see the module docstring). ``loop`` defaults to the running loop.
    Raises StateError (a RuntimeError) without a running loop, BindError
    (an OSError) when binding fails, ArgumentTypeError (a TypeError) when
    ``socket`` lacks ``fileno()``/``setblocking()``, ArgumentError (a
    ValueError) when it is closed.

    ``send_errors`` counts datagrams ``sendto`` refused; ``endpoint_errors``
    counts exceptions the endpoint raised in the reader or timer callback
    (each is logged and the driver goes on).
    """

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        ipv6: bool = False,
        socket: SocketLike | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._loop = loop if loop is not None else _running_loop()
        if socket is None:
            sock: Any = bind_udp(_socket.socket, host, port, ipv6)
            owned = True
        else:
            sock = socket
            owned = False
            if not (hasattr(sock, "fileno") and hasattr(sock, "setblocking")):
                raise ArgumentTypeError("socket: needs fileno() and setblocking()")
            if sock.fileno() < 0:
                raise ArgumentError("socket: the socket is closed")
        # The lock serialises the loop's callbacks and any worker thread
        # using the blocking API.
        super().__init__(sock, owned=owned, lock=threading.RLock())
        self._saved_timeout: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._reading = False
        self._waiters: set[threading.Event] = set()
        self._spawned: set[asyncio.Future[Any]] = set()

    # -- transport ------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the driver runs on."""
        return self._loop

    def start(self, endpoint: Endpoint) -> None:
        """Watch the socket and arm the timer for ``endpoint``, then flush
        what it queued before. Raises ClosedError after ``close()`` and
        StateError when already started."""
        with self.lock:
            if self._closing:
                raise ClosedError("driver is closed")
            if self._endpoint is not None:
                raise StateError("driver already started")
            sock = self._sock
            if not self._owned and hasattr(sock, "gettimeout"):
                self._saved_timeout = sock.gettimeout()
            sock.setblocking(False)
            self._endpoint = endpoint
            self._reading = True
        self._in_loop(self._loop.add_reader, sock.fileno(), self._on_readable, endpoint)
        self.flush()

    def _deadline_changed(self, old: float | None, deadline: float) -> None:
        # Re-arm if the deadline moved earlier than the armed timer; from
        # another thread, through call_soon_threadsafe.
        at = self._timer_at
        if at is not None and at <= deadline:
            return
        if self._on_loop():
            self._arm(deadline)
        else:
            self._timer_at = deadline
            self._loop.call_soon_threadsafe(self._arm_later)

    def close(self) -> None:
        """Stop watching the socket, cancel the timer and spawned work,
        release every blocked :meth:`wait`, then close the socket if the
        driver created it, or restore the caller's socket timeout.
        Idempotent; from another thread it returns once the loop has let
        go of the socket."""
        with self.lock:
            if self._closing:
                return
            self._closing = True
            waiters = list(self._waiters)
        for event in waiters:
            event.set()
        self._in_loop(self._detach)
        if self._owned:
            self._sock.close()
        elif self._endpoint is not None and hasattr(self._sock, "settimeout"):
            with contextlib.suppress(OSError):  # the caller closed it meanwhile
                self._sock.settimeout(self._saved_timeout)

    def _detach(self) -> None:
        # On the loop's thread: nothing of the driver stays on the loop.
        with self.lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            spawned = list(self._spawned)
            reading, self._reading = self._reading, False
        for fut in spawned:
            fut.cancel()
        if reading and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())

    def _on_loop(self) -> bool:
        """Whether the caller runs on the driver's event loop."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _in_loop(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop's thread and return when it has
        run (at once on that thread, or when the loop is not running)."""
        if self._on_loop() or not self._loop.is_running():
            fn(*args)
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args)
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(LOOP_CALL_TIMEOUT):
            log.warning("event loop of %s did not run %r in time", self._address, fn)

    # -- waiting (for threads other than the loop's) ---------------------------

    def wait(self, future: Future[Any], timeout: float | None) -> bool:
        """Block a worker thread until ``future`` is done (True) or
        ``timeout`` passes or the driver closes. Raises StateError on the
        loop's own thread (it would freeze the loop): await through
        :mod:`hyperdht.aio` there."""
        if future.done():
            return True
        if self._on_loop():
            raise StateError(
                "cannot block the event loop waiting for the DHT: use hyperdht.aio "
                "(AsyncDHT / AsyncHyperDHT), or call the blocking API from a worker thread"
            )
        event = threading.Event()
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

    def new_event(self) -> threading.Event:
        """A fresh :class:`threading.Event` (for worker threads)."""
        return threading.Event()

    def spawn(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` in the loop's default executor; an exception it
        raises is logged. Ignored (logged at debug) after ``close()``."""
        with self.lock:
            if self._closing:
                log.debug("spawn(%r) after close() ignored", fn)
                return
            if not self._on_loop():
                self._loop.call_soon_threadsafe(self.spawn, fn, *args)
                return
            fut = self._loop.run_in_executor(None, self._run_spawned, fn, args)
            self._spawned.add(fut)
            fut.add_done_callback(self._spawned.discard)

    # -- the callbacks ---------------------------------------------------------

    def _on_readable(self, endpoint: Endpoint) -> None:
        # Hot path: one lock hold, one clock reading and one flush per batch.
        recvfrom = self._sock.recvfrom
        receive = endpoint.receive_datagram
        with self.lock:
            if self._closing:
                return
            now = self.now()
            for i in range(RECV_BATCH):
                try:
                    data, addr = recvfrom(RECV_BUFSIZE)
                except (BlockingIOError, InterruptedError):
                    if i == 0:  # readable for nothing: a queued ICMP error?
                        drain_error_queue(self._sock)
                    break
                except OSError as exc:  # an ICMP error reported on the socket
                    log.debug("recvfrom on %s failed: %s", self._address, exc)
                    break
                try:
                    receive(data, sockname_address(addr), now)
                except Exception:
                    self._endpoint_error("receive_datagram")
            self._safe_flush()

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        delay = min(max(deadline - self.now(), 0.0), MAX_SLEEP)
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _arm_later(self) -> None:
        # Scheduled by a flush from another thread: arm for the deadline now.
        with self.lock:
            if self._closing or self._deadline is None:
                return
            self._arm(self._deadline)

    def _on_timer(self) -> None:
        with self.lock:
            self._timer = None
            self._timer_at = None
            endpoint = self._endpoint
            if self._closing or endpoint is None:
                return
            deadline = self._deadline
            if deadline is None:
                return
            now = self.now()
            if now < deadline:
                self._arm(deadline)  # the deadline moved later meanwhile
                return
            try:
                endpoint.handle_timer(now)
            except Exception:
                self._endpoint_error("handle_timer")
                # Back off so an endpoint stuck on an overdue deadline cannot spin.
                self._arm(now + TIMER_ERROR_BACKOFF)
            self._safe_flush()
