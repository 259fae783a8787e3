"""One I/O thread and one timer heap for many thread-backend drivers.

A :class:`Hub` runs one daemon thread, ``hyperdht-hub``, that waits in one
:mod:`selectors` selector on the sockets of every registered
:class:`~hyperdht.drivers.thread.ThreadDriver` and on one timer heap holding
each driver's next deadline. A thousand nodes in one process then cost one
thread instead of two thousand that fight for the GIL.

How it is shared (the guarantees of the thread driver stay the same):

* Every call into an endpoint still happens with *that driver's* lock held;
  user calls come from any thread, callbacks (``receive_datagram``,
  ``handle_timer``) run on the hub thread, blocking calls wait on events.
* The hub's own lock guards only the selector's registrations, the heap and
  the wake-up flag. It is taken after a driver's lock (``flush()`` arms the
  timer with the driver's lock held) and the hub thread never takes a
  driver's lock while holding it, so the two cannot deadlock.
* A wake-up socketpair lets another thread interrupt the selector: to arm a
  deadline earlier than the one the hub sleeps towards, to register a
  socket, or to make the hub notice that its last driver left.
* The heap holds ``(deadline, seq, registration)``; a
  :class:`Registration` remembers the seq of the entry armed last, so an
  older entry (its deadline moved earlier,
  or the driver closed) is *stale* and dropped when it comes up. When the
  heap grows past twice the live entries (plus :data:`HEAP_SLACK`) it is
  compacted, so stale entries stay bounded.
* The thread starts with the first :meth:`Hub.register` and exits when the
  last driver unregisters; a later register starts a fresh one.
* ``spawn()`` of its drivers runs on one pool of at most
  :data:`SPAWN_WORKERS` threads per hub (created on first use, shut down
  with the hub thread), not a pool per driver: a thousand nodes that each
  spawn once would otherwise keep a thousand idle threads, and create them
  from the hub thread. The cost is that slow spawned callables (handlers run
  with ``inline_handlers=False``) of all the hub's nodes share these
  workers.

A driver's ``close()`` unregisters only its socket and forgets only its
timer entry; because the hub checks the driver's closing flag under the
driver's lock before every callback, none of the driver's callbacks can run
once ``close()`` has set it. ``close()`` called on the hub thread itself
(from inside a callback) simply returns: it never waits for the hub.

**Fork.** :func:`default_hub` belongs to the process that created it: in a
child process (after :func:`os.fork`), :func:`default_hub` returns a fresh
hub with no drivers and no thread (the parent's hub thread does not exist
in the child). Drivers inherited from the parent must not be used there.

Everything from :mod:`threading`, :mod:`socket` and :mod:`selectors` is
looked up at call time, so under ``gevent.monkey.patch_all()`` the hub runs
as a greenlet like the rest of the thread driver.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import os
import selectors
import socket as _socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = [
    "HEAP_SLACK",
    "TimerHeap",
    "JOIN_SLICE",
    "MAX_WAIT",
    "SPAWN_WORKERS",
    "Hub",
    "Registration",
    "default_hub",
]

log = logging.getLogger(__name__)

#: Stale heap entries tolerated beyond twice the live ones before the heap
#: is compacted.
HEAP_SLACK = 64

#: How often :meth:`Hub.join_if_idle` re-checks that the hub is still idle.
JOIN_SLICE = 0.1

#: Threads in a hub's pool for the ``spawn()`` of all its drivers.
SPAWN_WORKERS = 16

#: Longest single wait of the hub: a far deadline just costs a re-check.
MAX_WAIT = 3600.0


class Registration:
    """One driver's membership of a :class:`Hub`, made by
    :meth:`Hub.register`: its socket, the two callbacks the hub thread runs
    (``on_readable()`` when the socket is readable, ``on_timer()`` when the
    armed deadline comes up), and its timer entry, which only the hub
    changes (under its lock)."""

    __slots__ = ("_armed", "_seq", "on_readable", "on_timer", "sock")

    def __init__(
        self, sock: Any, on_readable: Callable[[], object], on_timer: Callable[[], object]
    ) -> None:
        #: The watched socket.
        self.sock = sock
        #: Run on the hub thread when ``sock`` is readable.
        self.on_readable = on_readable
        #: Run on the hub thread when the armed deadline came up.
        self.on_timer = on_timer
        self._seq: int | None = None  # of the live heap entry, if any
        self._armed = math.inf

    @property
    def armed(self) -> float | None:
        """The deadline of the live timer entry, or None. Read without the
        hub's lock it may be stale, never wrong for long: an entry that
        comes up always runs ``on_timer()``, which re-arms."""
        return self._armed if self._seq is not None else None

    def __repr__(self) -> str:
        return f"<Registration {self.on_readable!r}>"


class TimerHeap:
    """The one timer heap a hub keeps for all its members: at most one live
    entry per member, the member's ``_seq`` naming it (``None``: not armed)
    and ``_armed`` its deadline. Re-arming earlier leaves the old entry
    stale; stale entries are skipped when they come up, and the heap is
    rebuilt once it holds more than twice the live entries plus
    :data:`HEAP_SLACK`, so it stays bounded however often members re-arm.
    Not thread-safe: the hub serialises the calls. Shared by
    :class:`Hub` and :class:`hyperdht.drivers.gevent_hub.GeventHub`."""

    __slots__ = ("_entries", "_live", "_seq")

    def __init__(self) -> None:
        self._entries: list[tuple[float, int, Any]] = []
        self._live = 0
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Entries, stale ones included."""
        return len(self._entries)

    def first(self) -> float | None:
        """The earliest entry's deadline (it may be stale), or None."""
        entries = self._entries
        return entries[0][0] if entries else None

    def arm(self, member: Any, deadline: float) -> bool:
        """Give ``member`` an entry at ``deadline``; False (and nothing
        done) if it already has one at or before ``deadline``."""
        if member._seq is not None:
            if member._armed <= deadline:
                return False
        else:
            self._live += 1
        seq = next(self._seq)
        member._seq = seq
        member._armed = deadline
        entries = self._entries
        heapq.heappush(entries, (deadline, seq, member))
        if len(entries) > 2 * self._live + HEAP_SLACK:
            self._entries = [entry for entry in entries if entry[2]._seq == entry[1]]
            heapq.heapify(self._entries)
        return True

    def cancel(self, member: Any) -> None:
        """Forget ``member``'s entry, if it has one."""
        if member._seq is not None:
            member._seq = None
            self._live -= 1

    def pop_due(self, now: float) -> list[Any]:
        """Remove and return the members whose entries are due at ``now``,
        earliest first (each is no longer armed)."""
        entries = self._entries
        pop = heapq.heappop
        due: list[Any] = []
        while entries and entries[0][0] <= now:
            _, seq, member = pop(entries)
            if member._seq == seq:
                member._seq = None
                self._live -= 1
                due.append(member)
        return due

    def clear(self) -> None:
        """Drop every entry (members' ``_seq`` are left to their owner)."""
        self._entries.clear()
        self._live = 0


class Hub:
    """One selector thread and one timer heap shared by many drivers (see
    the module docstring). Use :func:`default_hub` unless a test or an
    application wants a separate one; the methods are for drivers.

    ``name`` is the name of the hub thread.
    """

    def __init__(self, name: str = "hyperdht-hub") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: Any = None
        self._wake_w: Any = None
        self._thread: threading.Thread | None = None
        self._members = 0
        self._timers = TimerHeap()
        # When the hub thread plans to wake (-inf while it is busy, so nobody
        # needs to wake it) and whether a wake-up byte is already pending.
        self._wake_at = -math.inf
        self._woken = False
        self._pool: ThreadPoolExecutor | None = None
        self._in_pool = threading.local()

    # -- what a driver calls ------------------------------------------------------

    @property
    def thread(self) -> threading.Thread | None:
        """The hub thread while it runs, else None."""
        return self._thread

    @property
    def members(self) -> int:
        """How many drivers are registered."""
        return self._members

    @property
    def timer_entries(self) -> int:
        """Entries in the timer heap, stale ones included (bounded: see the
        module docstring)."""
        return len(self._timers)

    def on_hub_thread(self) -> bool:
        """Whether the caller runs on the hub thread (inside a callback)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def register(
        self, sock: Any, on_readable: Callable[[], object], on_timer: Callable[[], object]
    ) -> Registration:
        """Watch ``sock`` (non-blocking, with ``fileno()``): run
        ``on_readable()`` on the hub thread whenever it is readable, and
        ``on_timer()`` whenever a deadline armed with :meth:`arm` comes up.
        Starts the hub thread if it is not running. Raises what the
        selector raises for a bad descriptor (ValueError, OSError)."""
        member = Registration(sock, on_readable, on_timer)
        with self._lock:
            if self._thread is None:
                self._start()
            assert self._selector is not None
            self._selector.register(sock.fileno(), selectors.EVENT_READ, member)
            self._members += 1
            self._wake()  # a select()-based selector only sees it next time
        return member

    def in_pool(self) -> bool:
        """Whether the caller runs on a thread of the hub's spawn pool."""
        return bool(getattr(self._in_pool, "active", False))

    def spawn(self, fn: Callable[..., object], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` on the hub's pool; its future (cancel it to
        drop the call if it has not started)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=SPAWN_WORKERS,
                    thread_name_prefix=f"{self.name}-spawn",
                    initializer=self._mark_pool_thread,
                )
            return self._pool.submit(fn, *args)

    def unregister(self, member: Registration) -> threading.Thread | None:
        """Stop watching ``member``'s socket and forget its timer entry
        (call before closing the socket). Returns the hub thread when
        ``member`` was the last one (it is
        exiting; join it unless on it, see :meth:`join_if_idle`), else None."""
        with self._lock:
            selector = self._selector
            if selector is not None:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    selector.unregister(member.sock.fileno())
            self._timers.cancel(member)
            self._members -= 1
            if self._members > 0:
                return None
            self._timers.clear()
            thread = self._thread
            self._wake()
            return thread

    def arm(self, member: Registration, deadline: float) -> None:
        """Have ``member.on_timer()`` run at ``deadline`` (monotonic); a
        no-op if an entry at or before ``deadline`` is already armed."""
        with self._lock:
            if self._timers.arm(member, deadline) and deadline < self._wake_at:
                self._wake()

    def join_if_idle(self, thread: threading.Thread) -> None:
        """Wait until ``thread`` (what :meth:`unregister` returned) has
        exited, or until another driver registered and it goes on serving;
        then, if the hub is still idle, shut the spawn pool down and wait
        for its threads (unless called from one of them)."""
        self._join_thread(thread)
        with self._lock:
            pool = self._pool if self._members == 0 else None
            self._pool = None if pool is not None else self._pool
        if pool is not None:
            pool.shutdown(wait=not self.in_pool())

    def _join_thread(self, thread: threading.Thread) -> None:
        while True:
            thread.join(JOIN_SLICE)
            if not thread.is_alive():
                return
            with self._lock:
                if self._members > 0 and self._thread is thread:
                    return

    # -- internals ----------------------------------------------------------------

    def _mark_pool_thread(self) -> None:
        self._in_pool.active = True

    def _start(self) -> None:
        # With the lock: a fresh selector and wake-up pair for this run.
        self._wake_r, self._wake_w = _socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        selector = self._selector = selectors.DefaultSelector()
        selector.register(self._wake_r.fileno(), selectors.EVENT_READ, None)
        self._woken = False
        self._wake_at = -math.inf
        thread = self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        thread.start()

    def _wake(self) -> None:
        # With the lock.
        if not self._woken and self._wake_w is not None and not self.on_hub_thread():
            self._woken = True
            with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
                self._wake_w.send(b"\0")

    def _run(self) -> None:
        lock = self._lock
        clock = time.monotonic
        timers = self._timers
        selector = self._selector
        wake_r = self._wake_r
        assert selector is not None
        select = selector.select
        while True:
            with lock:
                if self._members <= 0:
                    self._stop(selector)
                    return
                first = timers.first()
                timeout = MAX_WAIT if first is None else max(0.0, min(first - clock(), MAX_WAIT))
                self._wake_at = clock() + timeout
            try:
                events = select(timeout)
            except (OSError, ValueError):  # a descriptor closed under select()
                log.debug("hub select() failed", exc_info=True)
                events = []
            self._wake_at = -math.inf
            for key, _ in events:
                member = key.data
                if member is None:
                    with lock:
                        with contextlib.suppress(OSError):
                            while wake_r.recv(4096):
                                pass
                        self._woken = False
                    continue
                try:
                    member.on_readable()
                except Exception:
                    log.exception("hub: on_readable of %r raised", member)
            with lock:
                due: list[Registration] = timers.pop_due(clock())
            for member in due:
                try:
                    member.on_timer()
                except Exception:
                    log.exception("hub: on_timer of %r raised", member)

    def _stop(self, selector: selectors.BaseSelector) -> None:
        # With the lock: the last driver left; a later register starts anew.
        selector.close()
        for sock in (self._wake_r, self._wake_w):
            sock.close()
        self._selector = self._wake_r = self._wake_w = None
        self._thread = None
        self._timers.clear()


_default: Hub | None = None
_default_pid = -1
_default_lock = threading.Lock()


def _forget_after_fork() -> None:
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def default_hub() -> Hub:
    """The process-wide hub the thread driver uses by default (a fresh one
    in a child process after ``fork``)."""
    global _default, _default_pid
    with _default_lock:
        if _default is None or _default_pid != os.getpid():
            _default = Hub()
            _default_pid = os.getpid()
        return _default
