"""The gevent driver (``backend="gevent"``; needs ``pip install hyperdht[gevent]``).

Runs an :class:`~hyperdht.drivers.base.Endpoint` with two greenlets, a
receiver and a timer, on a :mod:`gevent.socket` socket. No monkey-patching
is needed: every blocking point (``recvfrom``, the timer wait, ``wait``,
events, the lock) is a gevent primitive. Use the driver from the hub's
thread, like any gevent object. Time is :func:`time.monotonic`.

``close()`` kills the receiver, the timer and any greenlet left from
``spawn()`` (``GreenletExit`` interrupts them wherever they block, even on
the lock), so it always returns with nothing of the driver running, except
the calling greenlet when it is one of them.

A caller-supplied ``socket=``:

* a gevent socket is used as is;
* a stdlib :class:`socket.socket` is not read directly, which would block
  the hub: the driver reads a *duplicate* of its descriptor through a gevent
  socket and closes that duplicate on ``close()``. The duplicate shares the
  blocking flag, so the caller's timeout is restored on ``close()``;
* another object with ``fileno()`` and ``setblocking()`` (a wrapper, e.g.
  :class:`hyperdht.natsocket.NATSocket`) is set non-blocking and its own
  ``recvfrom`` is called whenever its descriptor is readable, so anything
  the wrapper filters stays filtered; its timeout is restored on
  ``close()``;
* anything else is used as is and must itself cooperate with gevent.

The caller's socket is never closed.
"""

from __future__ import annotations

try:
    import gevent
    import gevent.event
    import gevent.lock
    import gevent.socket
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "backend='gevent' needs gevent, which is not installed: pip install hyperdht[gevent]"
    ) from exc

import contextlib
import logging
import socket as _socket
import time
from typing import TYPE_CHECKING, Any

from ..errors import ClosedError
from ..ipencoding import Address
from ._common import RECV_BATCH, RECV_BUFSIZE, SocketDriver, bind_udp, sockname_address
from .base import Endpoint, Event, SocketLike

if TYPE_CHECKING:
    from ..future import Future

__all__ = ["GeventDriver"]

log = logging.getLogger(__name__)

# After handle_timer raised, wait this long before calling it again unless the
# deadline changes, so an endpoint stuck on an overdue deadline cannot spin.
_TIMER_ERROR_BACKOFF = 0.05

# Longest single timer sleep: a far deadline (even inf) just costs a wake-up
# and a re-check now and then, instead of overflowing the wait's timeout.
_MAX_SLEEP = 3600.0


class GeventDriver(SocketDriver):
    """Runs one endpoint on one UDP socket with a receiver and a timer greenlet.

    ``host``/``port``/``ipv6`` say where to bind a new socket (``port=0``
    picks a free one); ``socket`` supplies an already bound one instead (see
    the module docstring), which the driver never closes. Raises OSError
    when binding fails (the message names the address), ValueError when
    ``socket`` is closed.

    ``send_errors`` counts datagrams ``sendto`` refused; ``endpoint_errors``
    counts exceptions raised by the endpoint inside the receiver or timer
    (each is logged and the loop goes on).
    """

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        ipv6: bool = False,
        socket: SocketLike | None = None,
    ) -> None:
        self.lock: Any = gevent.lock.RLock()
        self.send_errors = 0
        self.endpoint_errors = 0
        self._endpoint: Endpoint | None = None
        self._deadline: float | None = None
        self._closing = False
        self._timer_wake: Any = gevent.event.Event()
        self._greenlets: set[Any] = set()
        self._waiters: set[Any] = set()
        self._caller_sock: Any = None
        self._caller_timeout: float | None = None

        if socket is None:
            self._sock: Any = bind_udp(gevent.socket.socket, host, port, ipv6)
            self._owned = True
        elif isinstance(socket, gevent.socket.socket):
            self._sock = socket
            self._owned = False
        elif isinstance(socket, _socket.socket):
            fileno = socket.fileno()
            if fileno < 0:
                raise ValueError("socket: the socket is closed")
            self._caller_sock = socket
            self._caller_timeout = socket.gettimeout()
            self._sock = gevent.socket.socket(fileno=_socket.dup(fileno))
            self._owned = True  # the duplicate
        elif hasattr(socket, "fileno") and hasattr(socket, "setblocking"):
            # A wrapper (it may filter what it returns): call its own methods,
            # non-blocking, and wait for readability on its descriptor.
            if socket.fileno() < 0:
                raise ValueError("socket: the socket is closed")
            self._caller_sock = socket
            self._caller_timeout = socket.gettimeout() if hasattr(socket, "gettimeout") else None
            socket.setblocking(False)
            self._sock = _WaitReadSocket(socket)
            self._owned = False
        else:
            self._sock = socket
            self._owned = False
        self._address = sockname_address(self._sock.getsockname())

    def start(self, endpoint: Endpoint) -> None:
        """Start the receiver and timer greenlets for ``endpoint``, then flush
        whatever it queued before. Raises ClosedError after ``close()`` and
        RuntimeError when already started."""
        with self.lock:
            if self._closing:
                raise ClosedError("driver is closed")
            if self._endpoint is not None:
                raise RuntimeError("driver already started")
            self._endpoint = endpoint
            port = self._address[1]
            self._start(f"hyperdht-recv-{port}", self._receive_loop, endpoint)
            self._start(f"hyperdht-timer-{port}", self._timer_loop, endpoint)
            self.flush()

    def _wake_timer(self) -> None:
        self._timer_wake.set()

    def wait(self, future: Future[Any], timeout: float | None) -> bool:
        """Block this greenlet until ``future`` is done (True) or ``timeout``
        passes or the driver closes (then ``future.done()``). Call without
        the lock."""
        if future.done():
            return True
        event = gevent.event.Event()
        with self.lock:
            if self._closing:
                return future.done()
            self._waiters.add(event)
            future.add_done_callback(lambda _: event.set())
        try:
            event.wait(timeout)
        finally:
            self._waiters.discard(event)
        return future.done()

    def new_event(self) -> Event:
        """A fresh :class:`gevent.event.Event`."""
        event: Event = gevent.event.Event()
        return event

    def spawn(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` in a new greenlet; an exception it raises is
        logged. ``close()`` kills those still running. Ignored (logged at
        debug) after ``close()``."""
        if self._closing:
            log.debug("spawn(%r) after close() ignored", fn)
            return
        self._start(f"hyperdht-spawn-{self._address[1]}", self._run_spawned, fn, args)

    def close(self) -> None:
        """Kill the driver's greenlets (all but the calling one) and close
        the socket if the driver created it. Idempotent."""
        with self.lock:
            if self._closing:
                return
            self._closing = True
        for event in list(self._waiters):
            event.set()
        self._timer_wake.set()
        current = gevent.getcurrent()
        gevent.killall([g for g in self._greenlets if g is not current], block=True)
        if self._owned:
            self._sock.close()
        if self._caller_sock is not None:
            with contextlib.suppress(OSError):  # the caller closed it meanwhile
                self._caller_sock.settimeout(self._caller_timeout)

    # -- internals ------------------------------------------------------------

    def _start(self, name: str, run: Any, *args: Any) -> Any:
        greenlet = gevent.Greenlet(run, *args)
        greenlet.name = name
        self._greenlets.add(greenlet)
        greenlet.rawlink(self._greenlets.discard)
        greenlet.start()
        return greenlet

    def _receive_loop(self, endpoint: Endpoint) -> None:
        # Hot path: everything the loop touches per datagram is a local.
        recvfrom = self._sock.recvfrom
        # After one cooperative read, drain what the kernel already holds
        # without blocking (the gevent socket's own non-blocking socket), so
        # a burst costs one lock hold and one flush, like the thread driver.
        raw = getattr(self._sock, "_sock", None)
        drain = None
        if (
            isinstance(self._sock, gevent.socket.socket)
            and raw is not None
            and raw.gettimeout() == 0.0
        ):
            drain = raw.recvfrom
        receive = endpoint.receive_datagram
        make_address = Address
        monotonic = time.monotonic
        lock = self.lock
        try:
            while not self._closing:
                try:
                    data, addr = recvfrom(RECV_BUFSIZE)
                except (TimeoutError, ConnectionError):
                    continue  # a caller's timeout; an ICMP error (Windows)
                with lock:
                    if self._closing:
                        return
                    now = monotonic()
                    for _ in range(RECV_BATCH):
                        try:
                            receive(data, make_address(addr[0], addr[1]), now)
                        except Exception:
                            self._endpoint_error("receive_datagram")
                        if drain is None:
                            break
                        try:
                            data, addr = drain(RECV_BUFSIZE)
                        except OSError:  # BlockingIOError: nothing more queued
                            break
                    self._safe_flush()
        except Exception:
            if not self._closing:
                log.exception("receiver of %s stopped", self._address)

    def _timer_loop(self, endpoint: Endpoint) -> None:
        wake = self._timer_wake
        monotonic = time.monotonic
        while not self._closing:
            wake.clear()
            deadline = self._deadline
            if deadline is None:
                wake.wait()
                continue
            delay = deadline - monotonic()
            if delay > 0:
                wake.wait(min(delay, _MAX_SLEEP))
                continue
            failed = False
            with self.lock:
                deadline = self._deadline
                now = monotonic()
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
                wake.wait(_TIMER_ERROR_BACKOFF)

    def _run_spawned(self, fn: Any, args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("spawned %r raised", fn)


class _WaitReadSocket:
    """Adapts a non-blocking socket-like wrapper with ``fileno()`` to the
    hub: ``recvfrom`` waits cooperatively for readability, then calls the
    wrapper's own ``recvfrom`` (so whatever it filters stays filtered)."""

    def __init__(self, sock: Any) -> None:
        self._inner = sock
        self.sendto = sock.sendto
        self.getsockname = sock.getsockname

    def recvfrom(self, bufsize: int) -> tuple[bytes, Any]:
        inner = self._inner
        while True:
            try:
                result: tuple[bytes, Any] = inner.recvfrom(bufsize)
                return result
            except BlockingIOError:
                gevent.socket.wait_read(inner.fileno())

    def close(self) -> None:
        """Never called: the caller owns the wrapped socket."""
