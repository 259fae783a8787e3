"""The thread driver (``backend="thread"``, the default).

Runs an :class:`~hyperdht.drivers.base.Endpoint` on a UDP socket. By
default every driver of the process shares one I/O thread and one timer
heap, the :func:`~hyperdht.drivers.hub.default_hub` (see
:mod:`hyperdht.drivers.hub`): the hub thread reads a driver's socket when
it is readable and runs its ``handle_timer`` when its deadline is due, with
the driver's lock held, as a private receiver would. ``hub=False`` gives
the driver its own two daemon threads instead (the
:class:`~hyperdht.drivers.socket.SocketDriver` loops): a receiver that
feeds datagrams to the endpoint, and a timer that sleeps on a
:class:`threading.Event` until ``endpoint.get_timer()`` is due; a caller
socket without ``fileno()`` always gets those. ``spawn()`` uses the hub's
thread pool, or a small pool of the driver's own with ``hub=False``. Time
is :func:`time.monotonic`.

**Waking a private receiver on close.** Closing a socket from another thread does
not wake a ``recvfrom`` blocked on it (Linux), and a polling timeout costs
wake-ups forever and latency on close. So the receiver never blocks in
``recvfrom``: it blocks in a :mod:`selectors` selector watching the socket
*and* one end of a private socketpair; ``close()`` writes a byte to the
other end, the selector returns at once, and the receiver sees the closing
flag. The socket is non-blocking, so a spurious readiness (e.g. a datagram
dropped for a bad checksum after ``select`` reported it) cannot block the
receiver either; it simply selects again.

A caller-supplied socket is used as is, put in non-blocking mode while the
driver runs (its timeout is restored by ``close()``), and never closed. One
without ``fileno()`` cannot be selected on: the receiver then polls it with
``settimeout(POLL_INTERVAL)`` and notices ``close()`` within that interval.

Everything from :mod:`threading`, :mod:`socket` and :mod:`selectors` is
looked up at call time, so in a program that ran
``gevent.monkey.patch_all()`` first the driver runs on greenlets.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket as _socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..errors import ArgumentError, ArgumentTypeError
from .base import Endpoint, SocketLike
from .hub import Hub, Registration, default_hub
from .socket import (
    RECV_BUFSIZE,
    NextDatagram,
    SocketDriver,
    bind_udp,
    drain_error_queue,
)

__all__ = ["POLL_INTERVAL", "SPAWN_JOIN_TIMEOUT", "SPAWN_WORKERS", "ThreadBackend", "ThreadDriver"]

log = logging.getLogger(__name__)

#: Receive timeout of the fallback loop for a caller socket without fileno().
POLL_INTERVAL = 0.05

#: Threads in the pool that runs :meth:`ThreadDriver.spawn` callables of a
#: driver with private threads (on a hub: :data:`hyperdht.drivers.hub.SPAWN_WORKERS`).
SPAWN_WORKERS = 4

#: How long ``close()`` waits, in all, for spawned callables still running
#: (a handler that hangs cannot be interrupted): then it returns anyway,
#: logs a warning, and those pool threads end when their callable returns.
SPAWN_JOIN_TIMEOUT = 1.0


class ThreadDriver(SocketDriver):
    """Runs one endpoint on one UDP socket, on a shared hub thread or on a
    receiver and a timer thread of its own.

    ``host``/``port``/``ipv6`` say where to bind a new socket (``port=0``
    picks a free one); ``socket`` supplies an already bound one instead,
    which the driver never closes. ``hub`` is the :class:`~hyperdht.drivers.hub.Hub`
    to run on: None (the default) for :func:`~hyperdht.drivers.hub.default_hub`,
    False for private threads. Raises BindError (an OSError) when
    binding fails (the message names the address), ArgumentTypeError (a
    TypeError) when ``socket`` offers neither ``fileno()`` nor
    ``settimeout()``, ArgumentError (a ValueError) when it is closed.
    The counters and everything else: :class:`SocketDriver`.
    """

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        ipv6: bool = False,
        socket: SocketLike | None = None,
        hub: Hub | bool | None = None,
    ) -> None:
        if hub is True:
            hub = None
        if socket is None:
            sock: Any = bind_udp(_socket.socket, host, port, ipv6)
            owned = True
        else:
            sock = socket
            owned = False
        fileno: Any = getattr(sock, "fileno", None)
        selectable = fileno is not None and hasattr(sock, "setblocking")
        if selectable and fileno() < 0:
            raise ArgumentError("socket: the socket is closed")
        if not selectable and not hasattr(sock, "settimeout"):
            raise ArgumentTypeError("socket: needs fileno() and setblocking(), or settimeout()")
        super().__init__(sock, owned=owned, lock=threading.RLock())
        self._selectable = selectable
        self._threads: list[threading.Thread] = []
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: Any = None
        self._wake_w: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_pool = threading.local()
        self._pool_threads: list[threading.Thread] = []
        self._spawned: set[Future[Any]] = set()  # on the hub's pool
        self._hub: Hub | None = None
        if selectable and hub is not False:
            self._hub = default_hub() if hub is None else hub
        self._member: Registration | None = None  # on the hub, once started
        self._failed_deadline: float | None = None
        self._failed_at = 0.0

    @property
    def hub(self) -> Hub | None:
        """The hub this driver runs on, or None when it has its own threads."""
        return self._hub

    def new_event(self) -> threading.Event:
        """A fresh :class:`threading.Event`."""
        return threading.Event()

    # -- what SocketDriver asks of a backend -----------------------------------

    def _start_loops(self, endpoint: Endpoint) -> None:
        hub = self._hub
        if hub is None:
            super()._start_loops(endpoint)
            return
        sock = self._sock
        if not self._owned:
            timeout = sock.gettimeout() if hasattr(sock, "gettimeout") else None
            self._restore_timeout = (sock, timeout) if hasattr(sock, "settimeout") else None
        sock.setblocking(False)
        self._hub_sock = sock
        self._member = hub.register(sock, self._hub_readable, self._hub_timer)

    def _deadline_changed(self, old: float | None, deadline: float) -> None:
        member = self._member
        if member is None:
            super()._deadline_changed(old, deadline)
            return
        armed = member.armed  # unlocked: a stale value is harmless (see armed)
        if armed is None or deadline < armed:
            self._hub.arm(member, deadline)  # type: ignore[union-attr]

    def _prepare_receiver(self) -> tuple[NextDatagram, Callable[[int], Any] | None]:
        sock = self._sock
        saved = sock.gettimeout() if hasattr(sock, "gettimeout") else None
        if not self._owned:
            self._restore_timeout = (sock, saved) if hasattr(sock, "settimeout") else None
        recvfrom = sock.recvfrom
        if not self._selectable:
            sock.settimeout(POLL_INTERVAL)

            def poll() -> tuple[bytes, Any] | None:
                try:
                    result: tuple[bytes, Any] = recvfrom(RECV_BUFSIZE)
                except (TimeoutError, ConnectionError):
                    return None
                return result

            return poll, None
        sock.setblocking(False)
        self._wake_r, self._wake_w = _socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        selector = self._selector = selectors.DefaultSelector()
        selector.register(sock.fileno(), selectors.EVENT_READ)
        selector.register(self._wake_r.fileno(), selectors.EVENT_READ)
        select = selector.select

        # The receiver never blocks in recvfrom (see the module docstring):
        # it selects on the socket and the wake-up pair, then reads without
        # blocking; a spurious readiness just selects again.
        def next_datagram() -> tuple[bytes, Any] | None:
            select()
            if self._closing:
                return None
            try:
                result: tuple[bytes, Any] = recvfrom(RECV_BUFSIZE)
            except BlockingIOError:
                drain_error_queue(sock)  # what made it readable, if anything
                return None
            except ConnectionError:  # an ICMP error (IP_RECVERR)
                return None
            return result

        return next_datagram, recvfrom

    def _launch(self, name: str, fn: Callable[..., object], *args: Any) -> None:
        thread = threading.Thread(target=fn, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _spawn_task(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        hub = self._hub
        if hub is not None:
            future = hub.spawn(self._run_spawned, fn, args)
            self._spawned.add(future)
            future.add_done_callback(self._spawned.discard)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=SPAWN_WORKERS,
                thread_name_prefix=f"hyperdht-spawn-{self._address[1]}",
                initializer=self._mark_pool_thread,
            )
        self._pool.submit(self._run_spawned, fn, args)

    def _wake_receiver(self) -> None:
        # Under the lock: the receiver closes this pair, also under it.
        if self._wake_w is not None:
            with contextlib.suppress(OSError):  # closed by a receiver that stopped
                self._wake_w.send(b"\0")

    def _stop_tasks(self) -> None:
        """Join every driver thread, except the calling one and except when
        the caller holds ``driver.lock`` (they would wait for it forever):
        those finish on their own as soon as they run again (no endpoint
        call, no socket use happens after ``close()`` returns). Spawned work
        still running gets :data:`SPAWN_JOIN_TIMEOUT` in all."""
        current = threading.current_thread()
        can_join = not self._holds_lock()
        hub, member = self._hub, self._member
        if hub is not None and member is not None:
            # The closing flag is set: the hub runs no callback of ours any
            # more; after this it does not even select on the socket.
            last = hub.unregister(member)
            # Drop what has not started; wait for what runs (as a pool of
            # our own would on shutdown), unless that is us.
            spawned = [f for f in list(self._spawned) if not f.cancel()]
            if can_join and not hub.in_pool():
                _done, running = futures.wait(spawned, timeout=SPAWN_JOIN_TIMEOUT)
                if running:
                    log.warning("close(): %d spawned callables still running", len(running))
            if last is not None and last is not current and can_join:
                hub.join_if_idle(last)
        for thread in self._threads:
            if thread is not current and can_join:
                thread.join()
        if self._pool is not None:
            in_pool = getattr(self._in_pool, "active", False)
            self._pool.shutdown(wait=False, cancel_futures=True)
            if can_join and not in_pool:
                deadline = time.monotonic() + SPAWN_JOIN_TIMEOUT
                for thread in self._pool_threads:
                    thread.join(max(0.0, deadline - time.monotonic()))
                busy = [t.name for t in self._pool_threads if t.is_alive()]
                if busy:
                    log.warning("close(): spawned work still running in %s", ", ".join(busy))

    def _receiver_exited(self) -> None:
        # With the lock (close() writes to the pair under it), so the
        # selector is never closed under select().
        with self.lock:
            if self._selector is not None:
                self._selector.close()
            for sock in (self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()

    # -- internals ------------------------------------------------------------

    def _mark_pool_thread(self) -> None:
        self._in_pool.active = True
        self._pool_threads.append(threading.current_thread())

    def _holds_lock(self) -> bool:
        is_owned = getattr(self.lock, "_is_owned", None)
        return bool(is_owned()) if is_owned is not None else False


class ThreadBackend:
    """A :class:`~hyperdht.drivers.base.Backend` of thread drivers on a
    chosen hub: ``DHT(backend=ThreadBackend(hub=False))`` gives a node its
    own receiver and timer threads, ``ThreadBackend(hub=Hub())`` runs the
    nodes created with it on a hub of their own. ``hub=None`` is what
    ``backend="thread"`` does (the process-wide hub)."""

    def __init__(self, hub: Hub | bool | None = None) -> None:
        #: What every driver created here gets as ``hub=``.
        self.hub = hub

    def create_driver(
        self,
        *,
        host: str,
        port: int,
        ipv6: bool,
        socket: SocketLike | None,
    ) -> ThreadDriver:
        """A :class:`ThreadDriver` on this backend's hub."""
        return ThreadDriver(host=host, port=port, ipv6=ipv6, socket=socket, hub=self.hub)

    def __repr__(self) -> str:
        return f"ThreadBackend(hub={self.hub!r})"
