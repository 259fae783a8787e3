"""The thread driver (``backend="thread"``, the default).

Runs an :class:`~hyperdht.drivers.base.Endpoint` on a UDP socket with two
daemon threads: a receiver that feeds datagrams to the endpoint, and a timer
that sleeps on a :class:`threading.Condition` over ``driver.lock`` until
``endpoint.get_timer()`` is due. Time is :func:`time.monotonic`.

**Waking the receiver on close.** Closing a socket from another thread does
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
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import ClosedError
from ..ipencoding import Address
from ._common import RECV_BATCH, RECV_BUFSIZE, SocketDriver, bind_udp, sockname_address
from .base import Endpoint, SocketLike

if TYPE_CHECKING:
    from ..future import Future

__all__ = ["ThreadDriver", "POLL_INTERVAL", "SPAWN_WORKERS"]

log = logging.getLogger(__name__)

#: Receive timeout of the fallback loop for a caller socket without fileno().
POLL_INTERVAL = 0.05

#: Threads in the pool that runs :meth:`ThreadDriver.spawn` callables.
SPAWN_WORKERS = 4

# After handle_timer raised, wait this long before calling it again unless the
# deadline changes, so an endpoint stuck on an overdue deadline cannot spin.
_TIMER_ERROR_BACKOFF = 0.05

# Longest single timer sleep: a far deadline (even inf) just costs a wake-up
# and a re-check now and then, instead of overflowing the wait's timeout.
_MAX_SLEEP = 3600.0


class ThreadDriver(SocketDriver):
    """Runs one endpoint on one UDP socket with a receiver and a timer thread.

    ``host``/``port``/``ipv6`` say where to bind a new socket (``port=0``
    picks a free one); ``socket`` supplies an already bound one instead,
    which the driver never closes. Raises OSError when binding fails (the
    message names the address), TypeError when ``socket`` offers neither
    ``fileno()`` nor ``settimeout()``, ValueError when it is closed.

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
        self.lock: Any = threading.RLock()
        self.send_errors = 0
        self.endpoint_errors = 0
        self._cond = threading.Condition(self.lock)
        self._endpoint: Endpoint | None = None
        self._deadline: float | None = None
        self._closing = False
        self._recv_thread: threading.Thread | None = None
        self._timer_thread: threading.Thread | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: Any = None
        self._wake_w: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_pool = threading.local()
        self._waiters: set[Any] = set()
        self._saved_timeout: float | None = None

        if socket is None:
            self._sock: Any = bind_udp(_socket.socket, host, port, ipv6)
            self._owned = True
        else:
            self._sock = socket
            self._owned = False
        fileno: Any = getattr(self._sock, "fileno", None)
        self._selectable = fileno is not None and hasattr(self._sock, "setblocking")
        if self._selectable and fileno() < 0:
            raise ValueError("socket: the socket is closed")
        if not self._selectable and not hasattr(self._sock, "settimeout"):
            raise TypeError("socket: needs fileno() and setblocking(), or settimeout()")
        self._address = sockname_address(self._sock.getsockname())

    def start(self, endpoint: Endpoint) -> None:
        """Start the receiver and timer threads for ``endpoint``, then flush
        whatever it queued before. Raises ClosedError after ``close()`` and
        RuntimeError when already started."""
        with self.lock:
            if self._closing:
                raise ClosedError("driver is closed")
            if self._endpoint is not None:
                raise RuntimeError("driver already started")
            port = self._address[1]
            sock = self._sock
            if self._selectable:
                self._saved_timeout = sock.gettimeout() if hasattr(sock, "gettimeout") else None
                sock.setblocking(False)
                self._wake_r, self._wake_w = _socket.socketpair()
                self._wake_r.setblocking(False)
                self._wake_w.setblocking(False)
                self._selector = selectors.DefaultSelector()
                self._selector.register(sock.fileno(), selectors.EVENT_READ)
                self._selector.register(self._wake_r.fileno(), selectors.EVENT_READ)
                target = self._receive_loop
            else:
                self._saved_timeout = sock.gettimeout() if hasattr(sock, "gettimeout") else None
                sock.settimeout(POLL_INTERVAL)
                target = self._poll_loop
            self._endpoint = endpoint
            self._recv_thread = threading.Thread(
                target=target, args=(endpoint,), name=f"hyperdht-recv-{port}", daemon=True
            )
            self._timer_thread = threading.Thread(
                target=self._timer_loop,
                args=(endpoint,),
                name=f"hyperdht-timer-{port}",
                daemon=True,
            )
            self._recv_thread.start()
            self._timer_thread.start()
            self.flush()

    def _wake_timer(self) -> None:
        self._cond.notify()

    def wait(self, future: Future[Any], timeout: float | None) -> bool:
        """Block until ``future`` is done (True) or ``timeout`` passes or the
        driver closes (then ``future.done()``). Call without the lock."""
        if future.done():
            return True
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
        """A fresh :class:`threading.Event`."""
        return threading.Event()

    def spawn(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on a small shared thread pool; an exception it
        raises is logged. Ignored (logged at debug) after ``close()``."""
        with self.lock:
            if self._closing:
                log.debug("spawn(%r) after close() ignored", fn)
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=SPAWN_WORKERS,
                    thread_name_prefix=f"hyperdht-spawn-{self._address[1]}",
                )
            self._pool.submit(self._run_spawned, fn, args)

    def close(self) -> None:
        """Stop the threads, shut the spawn pool down, close the socket if
        the driver created it. Idempotent.

        Joins every driver thread, except the calling one and except when
        the caller holds ``driver.lock`` (they would wait for it forever):
        those finish on their own as soon as they run again (no endpoint
        call, no socket use happens after this returns).
        """
        with self.lock:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
            waiters = list(self._waiters)
            # Under the lock: the receiver closes this pair, also under it.
            if self._wake_w is not None:
                with contextlib.suppress(OSError):  # closed by a receiver that stopped
                    self._wake_w.send(b"\0")
        for event in waiters:
            event.set()
        current = threading.current_thread()
        can_join = not self._holds_lock()
        for thread in (self._recv_thread, self._timer_thread):
            if thread is not None and thread is not current and can_join:
                thread.join()
        if self._pool is not None:
            in_pool = getattr(self._in_pool, "active", False)
            self._pool.shutdown(wait=can_join and not in_pool, cancel_futures=True)
        if self._owned:
            self._sock.close()
        elif self._endpoint is not None and hasattr(self._sock, "settimeout"):
            with contextlib.suppress(OSError):  # the caller closed it meanwhile
                self._sock.settimeout(self._saved_timeout)

    # -- internals ------------------------------------------------------------

    def _holds_lock(self) -> bool:
        is_owned = getattr(self.lock, "_is_owned", None)
        return bool(is_owned()) if is_owned is not None else False

    def _receive_loop(self, endpoint: Endpoint) -> None:
        # Hot path: everything the loop touches per datagram is a local.
        selector = self._selector
        assert selector is not None
        select = selector.select
        recvfrom = self._sock.recvfrom
        receive = endpoint.receive_datagram
        make_address = Address
        monotonic = time.monotonic
        lock = self.lock
        batch = range(RECV_BATCH)
        try:
            while True:
                select()
                with lock:
                    if self._closing:
                        return
                    for _ in batch:
                        try:
                            data, addr = recvfrom(RECV_BUFSIZE)
                        except BlockingIOError:
                            break
                        except ConnectionError:
                            continue  # ICMP error on an unconnected socket (Windows)
                        try:
                            receive(data, make_address(addr[0], addr[1]), monotonic())
                        except Exception:
                            self._endpoint_error("receive_datagram")
                    self._safe_flush()
        except Exception:
            if not self._closing:
                log.exception("receiver of %s stopped", self._address)
        finally:
            with lock:
                self._release_wakeup()

    def _poll_loop(self, endpoint: Endpoint) -> None:
        recvfrom = self._sock.recvfrom
        receive = endpoint.receive_datagram
        make_address = Address
        lock = self.lock
        try:
            while not self._closing:
                try:
                    data, addr = recvfrom(RECV_BUFSIZE)
                except TimeoutError:
                    continue
                except ConnectionError:
                    continue
                with lock:
                    if self._closing:
                        return
                    try:
                        receive(data, make_address(addr[0], addr[1]), time.monotonic())
                    except Exception:
                        self._endpoint_error("receive_datagram")
                    self._safe_flush()
        except Exception:
            if not self._closing:
                log.exception("receiver of %s stopped", self._address)

    def _timer_loop(self, endpoint: Endpoint) -> None:
        cond = self._cond
        monotonic = time.monotonic
        try:
            with cond:
                while not self._closing:
                    deadline = self._deadline
                    if deadline is None:
                        cond.wait()
                        continue
                    now = monotonic()
                    if now < deadline:
                        cond.wait(min(deadline - now, _MAX_SLEEP))
                        continue
                    try:
                        endpoint.handle_timer(now)
                    except Exception:
                        self._endpoint_error("handle_timer")
                        self._safe_flush()
                        cond.wait(_TIMER_ERROR_BACKOFF)
                        continue
                    self._safe_flush()
        except Exception:
            if not self._closing:
                log.exception("timer of %s stopped", self._address)

    def _release_wakeup(self) -> None:
        # Run by the receiver as it exits (with the lock: close() writes to
        # the pair under it), so the selector is never closed under select().
        if self._selector is not None:
            self._selector.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def _run_spawned(self, fn: Any, args: tuple[Any, ...]) -> None:
        self._in_pool.active = True
        try:
            fn(*args)
        except Exception:
            log.exception("spawned %r raised", fn)
