"""How a command runs: its nodes, background tasks, signals, exit status.

Threads or greenlets are the driver's business: a command waits on events
from its node's driver (``driver.new_event()``) and runs background work
with ``driver.spawn()`` (:class:`Task`, :func:`map_bounded`), so the same
code runs on either backend. What is not a driver's job lives here, once:

* :class:`StopSignal` -- SIGINT/SIGTERM as an event the command's main
  loop waits on (:func:`gevent.signal_handler` with gevent, so the main
  greenlet keeps waiting cooperatively; :mod:`signal` with threads);
* :func:`open_node` -- a :class:`~hyperdht.discovery.HyperDHT` whose
  failures become :class:`~hyperdht.cli.errors.UsageError` or
  :class:`~hyperdht.cli.errors.CommandError`;
* :func:`run_main` -- a command's body with its errors turned into one
  line on stderr and the exit status (2 usage, 1 failure, 130 interrupted).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..discovery import HyperDHT
from ..drivers import Driver, Event
from ..errors import ArgumentError, StateError
from .errors import CommandError, UsageError
from .output import say_error

__all__ = [
    "StopSignal",
    "Task",
    "driver_of",
    "map_bounded",
    "open_node",
    "require_backend",
    "run_main",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


def require_backend(backend: str) -> None:
    """Check that ``backend`` can run here, before anything starts. Raises
    CommandError for ``"gevent"`` when gevent is not installed."""
    if backend == "gevent":
        try:
            import gevent  # noqa: F401
        except ImportError:
            raise CommandError(
                "--backend gevent needs gevent, which is not installed "
                "(pip install hyperdht[gevent])"
            ) from None


_loop_backend: Any = None


def _backend(name: Any) -> Any:
    """What ``backend=`` gets for ``--backend NAME``. For ``asyncio`` that is
    one event loop in a thread of its own, shared by every node of the
    process: the command's blocking code then runs unchanged on the
    asyncio driver (its waits are threading events, its spawns the loop's
    executor)."""
    global _loop_backend
    if name != "asyncio":
        return name
    if _loop_backend is None:
        from ..drivers.asyncio import LoopBackend

        _loop_backend = LoopBackend.in_thread()
    return _loop_backend


def open_node(**options: Any) -> HyperDHT:
    """``HyperDHT(**options)``. Raises UsageError for values the node refuses,
    CommandError when its socket cannot be bound or its backend imported."""
    if "backend" in options:
        options["backend"] = _backend(options["backend"])
    try:
        return HyperDHT(**options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise CommandError(exc.strerror or str(exc)) from None
    except ImportError as exc:
        raise CommandError(str(exc)) from None


def driver_of(node: HyperDHT) -> Driver:
    """The driver that runs ``node``: where a command gets its events and
    background tasks."""
    return node.driver


class Task:
    """``fn(*args)`` in the background on ``driver`` (``driver.spawn``); an
    exception it raises is logged. :meth:`join` waits on an event of the same
    driver, so it cooperates with the backend. Closing the driver ends a task
    that still runs (gevent) or waits for it (threads): a task must stop when
    the node it uses is closed."""

    def __init__(self, driver: Driver, fn: Callable[..., Any], *args: Any, name: str) -> None:
        self.name = name
        self._done = driver.new_event()
        driver.spawn(self._run, fn, args)

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%s failed", self.name)
        finally:
            self._done.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the task has finished (True) or ``timeout`` passes."""
        return self._done.wait(timeout)

    def is_alive(self) -> bool:
        """True until the task has finished."""
        return not self._done.is_set()


def map_bounded(
    fn: Callable[[T], bool], items: Sequence[T], drivers: Sequence[Driver]
) -> list[bool]:
    """``[fn(x) for x in items]`` with one worker task per driver in
    ``drivers``, each taking the next item when it is done with one, so at
    most ``len(drivers)`` calls run at once. An item whose call raised (the
    error is logged) counts as False. Raises ArgumentError when there are
    items but no driver."""
    if items and not drivers:
        raise ArgumentError("drivers: map_bounded needs at least one driver")
    results = [False] * len(items)
    pending = iter(enumerate(items))
    # Only held around next(): never across a switch, so a plain lock also
    # serves greenlets.
    take = threading.Lock()

    def worker() -> None:
        while True:
            with take:
                item = next(pending, None)
            if item is None:
                return
            index, value = item
            try:
                results[index] = fn(value)
            except Exception:
                log.exception("%r failed", fn)

    tasks = [Task(d, worker, name="hyperdht-worker") for d in drivers[: len(items)]]
    for task in tasks:
        task.join()
    return results


class StopSignal:
    """SIGINT and SIGTERM as a stop request, from construction until
    :meth:`restore` (or the end of a ``with`` block). The first signal sets
    it; a second one exits the process at once (status 128 + signal).

    Install it before anything starts, so that no signal goes unhandled;
    :meth:`attach` then gives it the event it is waited on with.
    """

    def __init__(self, prog: str, backend: str) -> None:
        self.prog = prog
        #: The signal that requested the stop, or None.
        self.signum: int | None = None
        self._requested = False
        self._event: Event | None = None
        self._restore: list[Callable[[], None]] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            if backend == "gevent":
                import gevent

                handle = gevent.signal_handler(signum, self._on_signal, signum)
                self._restore.append(handle.cancel)
            else:
                old = signal.signal(signum, self._on_stdlib_signal)
                self._restore.append(_restorer(signum, old))

    def _on_stdlib_signal(self, signum: int, _frame: Any) -> None:
        self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        if self.signum is not None:
            # Shutting down already and asked again: do not make them wait.
            os.write(2, f"{self.prog}: second signal, exiting now\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        self.set()

    def attach(self, driver: Driver) -> None:
        """Wait with an event of ``driver`` from now on (set at once if a stop
        was requested before)."""
        event = driver.new_event()
        self._event = event
        if self._requested:
            event.set()

    def set(self) -> None:
        """Request a stop without a signal (e.g. when the work is done)."""
        self._requested = True
        if self._event is not None:
            self._event.set()

    def is_set(self) -> bool:
        """True once a stop was requested."""
        return self._requested

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a stop is requested (True) or ``timeout`` passes.
        Raises StateError before :meth:`attach`."""
        if self._event is None:
            raise StateError("StopSignal.wait() before attach()")
        return self._event.wait(timeout)

    def restore(self) -> None:
        """Put the previous signal handlers back."""
        while self._restore:
            self._restore.pop()()

    def __enter__(self) -> StopSignal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def _restorer(signum: int, handler: Any) -> Callable[[], None]:
    def restore() -> None:
        signal.signal(signum, handler)

    return restore


def run_main(prog: str, body: Callable[[], int]) -> int:
    """Run a command's ``body`` and return its exit status; a UsageError is
    one line on stderr and status 2, a CommandError status 1, an interrupt
    status 130. ``--help``/``--version`` exit from argparse as usual."""
    try:
        return body()
    except UsageError as exc:
        say_error(prog, str(exc))
        return 2
    except CommandError as exc:
        say_error(prog, str(exc))
        return 1
    except KeyboardInterrupt:
        say_error(prog, "interrupted")
        return 130
