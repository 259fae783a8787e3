"""A minimal, callback-based future for the sans-I/O core.

The protocol core never blocks and never owns a thread, so it cannot use
:class:`concurrent.futures.Future` (whose ``result()`` blocks on a thread
condition, which would freeze a gevent hub). A :class:`Future` here is only
a box with callbacks: the core resolves it synchronously from
``receive_datagram`` or ``handle_timer``; a driver (thread, gevent or the
simulator) implements *waiting* for it (see
:meth:`hyperdht.drivers.base.Driver.wait`).

Callbacks run in the thread that resolves the future, in registration
order; one registered on a finished future runs at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import StateError

__all__ = ["Future", "InvalidStateError"]

T = TypeVar("T")


class InvalidStateError(StateError):
    """The future is not in the state the call needs (done / not done)."""


_PENDING = object()


class Future(Generic[T]):
    """A result that will be set later, once, with callbacks.

    Not thread-safe by itself: the core resolves futures while the driver
    holds its lock, and waiting goes through the driver.
    """

    __slots__ = ("_callbacks", "_canceller", "_exception", "_result")

    def __init__(self) -> None:
        self._result: object = _PENDING
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[Future[T]], None]] | None = []
        self._canceller: Callable[[], None] | None = None

    def done(self) -> bool:
        """True once a result or an exception is set."""
        return self._callbacks is None

    def result(self) -> T:
        """The result; raises the stored exception, or
        :class:`InvalidStateError` if the future is not done yet."""
        if self._callbacks is not None:
            raise InvalidStateError("future is not done")
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[return-value]

    def exception(self) -> BaseException | None:
        """The stored exception (None on success); raises
        :class:`InvalidStateError` if the future is not done yet."""
        if self._callbacks is not None:
            raise InvalidStateError("future is not done")
        return self._exception

    def add_done_callback(self, fn: Callable[[Future[T]], None]) -> None:
        """Call ``fn(self)`` when done (at once if already done)."""
        if self._callbacks is None:
            fn(self)
        else:
            self._callbacks.append(fn)

    def set_canceller(self, fn: Callable[[], None] | None) -> None:
        """Have :meth:`cancel` call ``fn()``: the producer's way to withdraw
        the work behind this future (and resolve it, typically with
        :class:`~hyperdht.errors.RequestCancelled`)."""
        self._canceller = fn

    def cancel(self) -> bool:
        """Withdraw the work behind a pending future through its canceller;
        True if one ran, False when the future is done or has none."""
        fn = self._canceller
        if self._callbacks is None or fn is None:
            return False
        self._canceller = None
        fn()
        return True

    def set_result(self, result: T) -> None:
        """Resolve with ``result``; raises :class:`InvalidStateError` if done."""
        self._finish(result, None)

    def set_exception(self, exc: BaseException) -> None:
        """Resolve with ``exc``; raises :class:`InvalidStateError` if done."""
        self._finish(None, exc)

    def _finish(self, result: object, exc: BaseException | None) -> None:
        callbacks = self._callbacks
        if callbacks is None:
            raise InvalidStateError("future is already done")
        self._result = result
        self._exception = exc
        self._callbacks = None
        self._canceller = None
        for fn in callbacks:
            fn(self)

    def __repr__(self) -> str:
        if self._callbacks is not None:
            state = "pending"
        elif self._exception is not None:
            state = f"exception={self._exception!r}"
        else:
            state = f"result={self._result!r}"
        return f"<Future {state}>"
