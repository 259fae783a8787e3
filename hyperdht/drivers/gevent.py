"""The gevent driver (``backend="gevent"``; needs ``pip install hyperdht[gevent]``).

Runs an :class:`~hyperdht.drivers.base.Endpoint` with two greenlets, a
receiver and a timer, on a :mod:`gevent.socket` socket. No monkey-patching
is needed: every blocking point (``recvfrom``, the timer wait, ``wait``,
events, the lock) is a gevent primitive. Use the driver from the hub's
thread, like any gevent object. Time is :func:`time.monotonic`.

The loops are :class:`~hyperdht.drivers.socket.SocketDriver`'s; this
module supplies the greenlets, the gevent lock and events, and the reads.

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
  :class:`hyperdht.testing.natsocket.NATSocket`) is set non-blocking and its own
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
    from ..errors import BackendUnavailable

    raise BackendUnavailable(
        "backend='gevent' needs gevent, which is not installed: pip install hyperdht[gevent]"
    ) from exc

import logging
import socket as _socket
from collections.abc import Callable
from typing import Any

from ..errors import ArgumentError
from .base import Event, SocketLike
from .socket import RECV_BUFSIZE, NextDatagram, SocketDriver, bind_udp, drain_error_queue

__all__ = ["GeventDriver"]

log = logging.getLogger(__name__)


class GeventDriver(SocketDriver):
    """Runs one endpoint on one UDP socket with a receiver and a timer greenlet.

    ``host``/``port``/``ipv6`` say where to bind a new socket (``port=0``
    picks a free one); ``socket`` supplies an already bound one instead (see
    the module docstring), which the driver never closes. Raises BindError
    (an OSError) when binding fails (the message names the address),
    ArgumentError (a ValueError) when ``socket`` is closed. The counters
    and everything else: :class:`SocketDriver`.
    """

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        ipv6: bool = False,
        socket: SocketLike | None = None,
    ) -> None:
        restore: tuple[Any, float | None] | None = None
        if socket is None:
            sock: Any = bind_udp(gevent.socket.socket, host, port, ipv6)
            owned = True
        elif isinstance(socket, gevent.socket.socket):
            sock = socket
            owned = False
        elif isinstance(socket, _socket.socket):
            fileno = socket.fileno()
            if fileno < 0:
                raise ArgumentError("socket: the socket is closed")
            # The duplicate shares the blocking flag: put the caller's back.
            restore = (socket, socket.gettimeout())
            sock = gevent.socket.socket(fileno=_socket.dup(fileno))
            owned = True  # the duplicate
        elif hasattr(socket, "fileno") and hasattr(socket, "setblocking"):
            # A wrapper (it may filter what it returns): call its own methods,
            # non-blocking, and wait for readability on its descriptor.
            if socket.fileno() < 0:
                raise ArgumentError("socket: the socket is closed")
            timeout = socket.gettimeout() if hasattr(socket, "gettimeout") else None
            restore = (socket, timeout)
            socket.setblocking(False)
            sock = _WaitReadSocket(socket)
            owned = False
        else:
            sock = socket
            owned = False
        super().__init__(sock, owned=owned, lock=gevent.lock.RLock(), restore_timeout=restore)
        self._greenlets: set[Any] = set()

    def new_event(self) -> Event:
        """A fresh :class:`gevent.event.Event`."""
        event: Event = gevent.event.Event()
        return event

    # -- what SocketDriver asks of a backend -----------------------------------

    def _prepare_receiver(self) -> tuple[NextDatagram, Callable[[int], Any] | None]:
        sock = self._sock
        recvfrom = sock.recvfrom

        def next_datagram() -> tuple[bytes, Any] | None:
            try:
                result: tuple[bytes, Any] = recvfrom(RECV_BUFSIZE)
            except (TimeoutError, ConnectionError):
                return None  # a caller's timeout; an ICMP error (Windows)
            return result

        # After one cooperative read, drain what the kernel already holds
        # without blocking (the gevent socket's own non-blocking socket), so
        # a burst costs one lock hold and one flush, like the thread driver.
        raw = getattr(sock, "_sock", None)
        if not (
            isinstance(sock, gevent.socket.socket) and raw is not None and raw.gettimeout() == 0.0
        ):
            return next_datagram, None
        drain = raw.recvfrom
        fileno = sock.fileno()
        wait_read = gevent.socket.wait_read

        # Read the raw socket ourselves rather than through the gevent
        # socket, whose recvfrom would spin while a queued ICMP error
        # (IP_RECVERR) keeps the descriptor readable with nothing to read.
        def next_raw() -> tuple[bytes, Any] | None:
            try:
                result: tuple[bytes, Any] = drain(RECV_BUFSIZE)
            except BlockingIOError:
                drain_error_queue(raw)
                wait_read(fileno)
                return None
            except ConnectionError:  # an ICMP error (IP_RECVERR)
                return None
            return result

        return next_raw, drain

    def _launch(self, name: str, fn: Callable[..., object], *args: Any) -> None:
        greenlet = gevent.Greenlet(fn, *args)
        greenlet.name = name
        self._greenlets.add(greenlet)
        greenlet.rawlink(self._greenlets.discard)
        greenlet.start()

    def _spawn_task(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self._launch(f"hyperdht-spawn-{self._address[1]}", self._run_spawned, fn, args)

    def _stop_tasks(self) -> None:
        """Kill every greenlet of the driver but the calling one (wherever
        they block, even on the lock) and wait until they are gone."""
        current = gevent.getcurrent()
        gevent.killall([g for g in self._greenlets if g is not current], block=True)


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
                drain_error_queue(inner)  # a queued ICMP error keeps it readable
                gevent.socket.wait_read(inner.fileno())

    def close(self) -> None:
        """Never called: the caller owns the wrapped socket."""
