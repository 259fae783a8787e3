"""One greenlet and one timer heap shared by many gevent drivers.

With ``backend="gevent"`` every node used to run two greenlets of its own,
a receiver blocked in ``wait_read`` (a fresh libev watcher per wait) and a
timer blocked in ``Event.wait(timeout)`` (a fresh :class:`gevent.Timeout`
per wait, *raised* into the greenlet when it expires). A thousand idle
nodes then cost a thousand timeouts raised every maintenance period, and
every datagram two greenlet switches plus a watcher created and destroyed.
A :class:`GeventHub` serves all the gevent drivers of one gevent hub (one
OS thread) instead:

* each driver's socket has one **persistent** libev read watcher; its
  callback (run by the gevent hub, never blocking) only queues the driver
  and schedules one wake-up of the worker per loop iteration, so the
  sockets that became readable together are served in one batch;
* one **worker greenlet** runs the queued drivers' ``on_readable()`` and
  the due drivers' ``on_timer()``, each with the driver's lock held (the
  worker is a greenlet, so waiting for a lock, or a handler that yields,
  just suspends it);
* one **heap** of ``(deadline, seq, registration)`` holds the timers, with
  one libev timer for the earliest. A :class:`Registration` remembers the
  seq of its live entry, so an older entry (its deadline moved earlier, or
  the driver closed) is *stale* and skipped when it comes up; the heap is
  compacted when it grows past twice the live entries plus
  :data:`HEAP_SLACK`.

Everything happens in the thread of the gevent hub, so no lock guards the
hub's state. The worker starts with the first :meth:`GeventHub.register`
and exits when the last driver unregisters; a later register starts a fresh
one. A driver's ``close()`` unregisters only its own socket and forgets
only its own timer entry.

The cost of sharing, as with the thread backend's :mod:`~hyperdht.drivers.hub`:
an inline handler that blocks (cooperatively) holds up every node of the
hub, not just its own. ``GeventDriver(hub=False)`` gives a node private
greenlets instead.

:func:`default_hub` is per gevent hub (per thread), and belongs to the
process that created it (a child after ``fork`` gets a fresh one).
"""

from __future__ import annotations

import logging
import math
import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
import gevent.hub

from .hub import HEAP_SLACK, TimerHeap

__all__ = ["HEAP_SLACK", "MAX_WAIT", "GeventHub", "Registration", "default_hub"]

log = logging.getLogger(__name__)

#: Longest single sleep of the worker: a far deadline just costs a re-check.
MAX_WAIT = 3600.0

_READ = 1  # libev's EV_READ


class Registration:
    """One driver's membership of a :class:`GeventHub`, made by
    :meth:`GeventHub.register`: its socket's descriptor, the two callbacks
    the worker runs (``on_readable()`` when the socket is readable,
    ``on_timer()`` when the armed deadline comes up), and its timer entry,
    which only the hub changes."""

    __slots__ = (
        "_active",
        "_armed",
        "_queued",
        "_seq",
        "_watcher",
        "fileno",
        "on_readable",
        "on_timer",
    )

    def __init__(
        self, fileno: int, on_readable: Callable[[], object], on_timer: Callable[[], object]
    ) -> None:
        #: The watched descriptor.
        self.fileno = fileno
        #: Run by the worker when the descriptor is readable.
        self.on_readable = on_readable
        #: Run by the worker when the armed deadline came up.
        self.on_timer = on_timer
        self._watcher: Any = None
        self._active = True
        self._queued = False  # in the hub's ready queue
        self._seq: int | None = None  # of the live heap entry, if any
        self._armed = math.inf

    @property
    def armed(self) -> float | None:
        """The deadline of the live timer entry, or None."""
        return self._armed if self._seq is not None else None

    @property
    def active(self) -> bool:
        """Whether the registration still stands (False once unregistered)."""
        return self._active

    def __repr__(self) -> str:
        return f"<Registration fd={self.fileno} {self.on_readable!r}>"


class GeventHub:
    """One worker greenlet, persistent read watchers and one timer heap
    shared by many gevent drivers (see the module docstring). Use
    :func:`default_hub` unless a test or an application wants a separate
    one; the methods are for drivers, called from the gevent hub's thread.

    ``name`` is the name of the worker greenlet.
    """

    def __init__(self, name: str = "hyperdht-gevent-hub") -> None:
        self.name = name
        self._greenlet: Any = None
        self._members = 0
        self._ready: deque[Registration] = deque()
        self._timers = TimerHeap()
        # While the worker sleeps: its waiter, and when it plans to wake
        # (-inf while it runs, so nobody needs to wake it).
        self._waiter: Any = None
        self._wake_at = -math.inf
        self._wake_scheduled = False
        self._loop: Any = None
        #: Times the worker woke up (for a datagram, a timer, or a driver
        #: that armed an earlier deadline): what an idle swarm costs.
        self.wakeups = 0

    # -- what a driver calls ------------------------------------------------------

    @property
    def greenlet(self) -> Any:
        """The worker greenlet while it runs, else None."""
        return self._greenlet

    @property
    def members(self) -> int:
        """How many drivers are registered."""
        return self._members

    @property
    def timer_entries(self) -> int:
        """Entries in the timer heap, stale ones included (bounded: see the
        module docstring)."""
        return len(self._timers)

    def on_worker(self) -> bool:
        """Whether the caller runs on the worker greenlet (inside a callback)."""
        return self._greenlet is not None and gevent.getcurrent() is self._greenlet

    def register(
        self, fileno: int, on_readable: Callable[[], object], on_timer: Callable[[], object]
    ) -> Registration:
        """Watch descriptor ``fileno`` (of a non-blocking socket): run
        ``on_readable()`` on the worker whenever it is readable, and
        ``on_timer()`` whenever a deadline armed with :meth:`arm` comes up.
        Starts the worker if it is not running. Raises what libev raises
        for a bad descriptor (ValueError)."""
        loop = gevent.get_hub().loop
        if self._loop is None:
            self._loop = loop
        member = Registration(fileno, on_readable, on_timer)
        watcher = loop.io(fileno, _READ)
        member._watcher = watcher
        watcher.start(self._readable, member)
        self._members += 1
        if self._greenlet is None or self._greenlet.dead:
            self._start()
        return member

    def unregister(self, member: Registration) -> None:
        """Stop watching ``member``'s descriptor and forget its timer entry
        (call before closing the socket). When it was the last member the
        worker ends: right away, or (when the caller is the worker) as soon
        as the callback returns."""
        if not member._active:
            return
        member._active = False
        watcher, member._watcher = member._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()
        self._timers.cancel(member)
        self._members -= 1
        if self._members > 0:
            return
        self._timers.clear()
        self._ready.clear()
        worker = self._greenlet
        if worker is None or worker.dead or gevent.getcurrent() is worker:
            return
        # Interrupts it wherever it waits (its waiter, a lock of a driver).
        self._greenlet = None
        worker.kill(block=gevent.getcurrent() is not gevent.get_hub())

    def arm(self, member: Registration, deadline: float) -> None:
        """Have ``member.on_timer()`` run at ``deadline`` (monotonic); a
        no-op if an entry at or before ``deadline`` is already armed, or if
        ``member`` is no longer registered."""
        if not member._active:
            return
        if self._timers.arm(member, deadline) and deadline < self._wake_at:
            self._wake()

    # -- internals ----------------------------------------------------------------

    def _start(self) -> None:
        worker = gevent.Greenlet(self._run)
        worker.name = self.name
        self._greenlet = worker
        worker.start()

    def _readable(self, member: Registration) -> None:
        # Run by the gevent hub (must not block): queue, and wake the worker
        # once for everything that became readable in this loop iteration.
        if not member._queued and member._active:
            member._queued = True
            self._ready.append(member)
            if self._waiter is not None:
                self._wake()

    def _wake(self) -> None:
        if not self._wake_scheduled and self._waiter is not None:
            self._wake_scheduled = True
            self._loop.run_callback(self._resume)

    def _resume(self) -> None:
        # A callback of the gevent hub's loop.
        self._wake_scheduled = False
        waiter = self._waiter
        if waiter is not None:
            waiter.switch(None)

    def _sleep(self, timeout: float) -> None:
        loop = self._loop
        waiter = gevent.hub.Waiter()
        timer = loop.timer(timeout)
        # update=True: relative to the current time, not the loop's cached
        # one, so the timer does not fire early and cost a second wake-up.
        timer.start(waiter.switch, None, update=True)
        self._waiter = waiter
        self._wake_at = time.monotonic() + timeout
        try:
            waiter.get()
        finally:
            self.wakeups += 1
            self._waiter = None
            self._wake_at = -math.inf
            timer.close()

    def _run(self) -> None:
        ready = self._ready
        clock = time.monotonic
        timers = self._timers
        try:
            while self._members > 0:
                while ready:
                    member = ready.popleft()
                    member._queued = False
                    if member._active:
                        try:
                            member.on_readable()
                        except Exception:
                            log.exception("gevent hub: on_readable of %r raised", member)
                first = timers.first()
                if first is not None and first <= clock():
                    for member in timers.pop_due(clock()):
                        if member._active:
                            try:
                                member.on_timer()
                            except Exception:
                                log.exception("gevent hub: on_timer of %r raised", member)
                if self._members <= 0:
                    break
                if ready:
                    # Queued while a callback waited (a lock, a full send buffer).
                    gevent.sleep(0)
                    continue
                first = timers.first()
                timeout = MAX_WAIT if first is None else max(0.0, min(first - clock(), MAX_WAIT))
                self._sleep(timeout)
        finally:
            if self._greenlet is gevent.getcurrent():
                self._greenlet = None


_hubs: weakref.WeakKeyDictionary[Any, GeventHub] = weakref.WeakKeyDictionary()
_pid = os.getpid()


def default_hub() -> GeventHub:
    """The :class:`GeventHub` of the calling thread's gevent hub, which
    ``backend="gevent"`` uses (a fresh one in a child process after
    ``fork``)."""
    global _pid
    if _pid != os.getpid():
        _hubs.clear()
        _pid = os.getpid()
    key = gevent.get_hub()
    hub = _hubs.get(key)
    if hub is None:
        hub = _hubs[key] = GeventHub()
    return hub
