"""The gevent driver (``backend="gevent"``; needs ``pip install hyperdht[gevent]``).

Runs an :class:`~hyperdht.drivers.base.Endpoint` on a :mod:`gevent.socket`
socket. By default every gevent driver of a thread shares one worker
greenlet and one timer heap, the :func:`~hyperdht.drivers.gevent_hub.default_hub`
(see :mod:`hyperdht.drivers.gevent_hub`): the worker reads a driver's
socket when its persistent read watcher fires and runs its
``handle_timer`` when its deadline is due, with the driver's lock held.
``hub=False`` gives the driver two greenlets of its own instead (the
:class:`~hyperdht.drivers.socket.SocketDriver` loops), a receiver and a
timer; a caller socket the driver cannot read without blocking (see
below) always gets those. No monkey-patching is needed: every blocking
point (the reads, the timer wait, ``wait``, events, the lock) is a gevent
primitive. Use the driver from the gevent hub's thread, like any gevent
object. Time is :func:`time.monotonic`.

``close()`` unregisters the driver from the hub (or kills its receiver and
timer) and kills any greenlet left from ``spawn()`` (``GreenletExit``
interrupts them wherever they block, even on the lock), so it always
returns with nothing of the driver running, except the calling greenlet
when it is one of them.

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
* anything else is used as is and must itself cooperate with gevent; it
  runs on private greenlets, since the hub cannot watch it.

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
from .base import Endpoint, Event, SocketLike
from .gevent_hub import GeventHub, Registration, default_hub
from .socket import (
    RECV_BUFSIZE,
    NextDatagram,
    SocketDriver,
    bind_udp,
    drain_error_queue,
)

__all__ = ["GeventBackend", "GeventDriver"]

log = logging.getLogger(__name__)


class GeventDriver(SocketDriver):
    """Runs one endpoint on one UDP socket, on a shared
    :class:`~hyperdht.drivers.gevent_hub.GeventHub` or on a receiver and a
    timer greenlet of its own.

    ``host``/``port``/``ipv6`` say where to bind a new socket (``port=0``
    picks a free one); ``socket`` supplies an already bound one instead (see
    the module docstring), which the driver never closes. ``hub`` is the
    :class:`~hyperdht.drivers.gevent_hub.GeventHub` to run on: None (the
    default) for :func:`~hyperdht.drivers.gevent_hub.default_hub`, False for
    private greenlets. Raises BindError (an OSError) when binding fails (the
    message names the address), ArgumentError (a ValueError) when
    ``socket`` is closed. The counters and everything else:
    :class:`SocketDriver`.
    """

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        ipv6: bool = False,
        socket: SocketLike | None = None,
        hub: GeventHub | bool | None = None,
    ) -> None:
        restore: tuple[Any, float | None] | None = None
        # What the hub reads without blocking (a non-blocking recvfrom that
        # raises BlockingIOError when nothing is queued), if anything.
        raw: Any = None
        if socket is None:
            sock: Any = bind_udp(gevent.socket.socket, host, port, ipv6)
            owned = True
            raw = _raw_socket(sock)
        elif isinstance(socket, gevent.socket.socket):
            sock = socket
            owned = False
            raw = _raw_socket(sock)
        elif isinstance(socket, _socket.socket):
            fileno = socket.fileno()
            if fileno < 0:
                raise ArgumentError("socket: the socket is closed")
            # The duplicate shares the blocking flag: put the caller's back.
            restore = (socket, socket.gettimeout())
            sock = gevent.socket.socket(fileno=_socket.dup(fileno))
            owned = True  # the duplicate
            raw = _raw_socket(sock)
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
            raw = socket
        else:
            sock = socket
            owned = False
        super().__init__(sock, owned=owned, lock=gevent.lock.RLock(), restore_timeout=restore)
        self._greenlets: set[Any] = set()
        self._raw = raw
        self._hub: GeventHub | None = None
        if raw is not None and hub is not False:
            self._hub = default_hub() if hub is None or hub is True else hub
        self._member: Registration | None = None  # on the hub, once started
        self._failed_deadline: float | None = None
        self._failed_at = 0.0

    @property
    def hub(self) -> GeventHub | None:
        """The hub this driver runs on, or None when it has its own greenlets."""
        return self._hub

    def new_event(self) -> Event:
        """A fresh :class:`gevent.event.Event`."""
        event: Event = gevent.event.Event()
        return event

    # -- what SocketDriver asks of a backend -----------------------------------

    def _start_loops(self, endpoint: Endpoint) -> None:
        hub = self._hub
        if hub is None:
            super()._start_loops(endpoint)
            return
        self._hub_sock = self._raw
        self._member = hub.register(self._raw.fileno(), self._hub_readable, self._hub_timer)

    def _deadline_changed(self, old: float | None, deadline: float) -> None:
        member = self._member
        if member is None:
            super()._deadline_changed(old, deadline)
            return
        armed = member.armed
        if armed is None or deadline < armed:
            self._hub.arm(member, deadline)  # type: ignore[union-attr]

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
        raw = _raw_socket(sock)
        if raw is None:
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
        """Leave the hub (or kill the receiver and the timer), kill every
        spawned greenlet but the calling one (wherever they block, even on
        the lock) and wait until they are gone."""
        hub, member = self._hub, self._member
        if hub is not None and member is not None:
            # The closing flag is set: no callback of ours runs any more.
            hub.unregister(member)
        current = gevent.getcurrent()
        gevent.killall([g for g in self._greenlets if g is not current], block=True)


class GeventBackend:
    """A :class:`~hyperdht.drivers.base.Backend` of gevent drivers on a
    chosen hub: ``DHT(backend=GeventBackend(hub=False))`` gives a node its
    own receiver and timer greenlets, ``GeventBackend(hub=GeventHub())``
    runs the nodes created with it on a hub of their own. ``hub=None`` is
    what ``backend="gevent"`` does (the thread's default hub)."""

    def __init__(self, hub: GeventHub | bool | None = None) -> None:
        #: What every driver created here gets as ``hub=``.
        self.hub = hub

    def create_driver(
        self,
        *,
        host: str,
        port: int,
        ipv6: bool,
        socket: SocketLike | None,
    ) -> GeventDriver:
        """A :class:`GeventDriver` on this backend's hub."""
        return GeventDriver(host=host, port=port, ipv6=ipv6, socket=socket, hub=self.hub)

    def __repr__(self) -> str:
        return f"GeventBackend(hub={self.hub!r})"


def _raw_socket(sock: Any) -> Any:
    """The non-blocking stdlib socket inside a gevent socket, or None."""
    raw = getattr(sock, "_sock", None)
    if isinstance(sock, gevent.socket.socket) and raw is not None and raw.gettimeout() == 0.0:
        return raw
    return None


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
