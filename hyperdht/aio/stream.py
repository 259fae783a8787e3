"""Async iteration over a query's results, and helpers that drain one.

The asyncio twin of :mod:`hyperdht.dhtrpc.stream`: the same core
:class:`~hyperdht.dhtrpc.query.Query` underneath, awaited instead of
waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

from ..dhtrpc.query import Query
from ..dhtrpc.types import QueryResponse
from ..drivers.base import Driver
from ..errors import QueryError

__all__ = ["AsyncQueryStream", "collect_stream", "collect_values", "discard_stream"]

T = TypeVar("T")


class AsyncQueryStream(Generic[T]):
    """An async iterator of results that yields as responses arrive.

    Iterating never raises for a failed query: once exhausted, check
    :attr:`error` (or use :func:`collect_stream`, which raises it).
    Cancelling the task that awaits the next result cancels the query (and
    nothing else); so do :meth:`aclose` and ``async with``. Iterate it on
    the event loop's thread, from one task at a time.
    """

    def __init__(self, driver: Driver, query: Query) -> None:
        self._driver = driver
        self._query = query
        self._waiter: asyncio.Future[None] | None = None
        with driver.lock:
            query.on_change = self._changed

    def _changed(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        query = self._query
        while True:
            if query.results:
                item: T = query.results.popleft()
                return item
            if query.done:
                raise StopAsyncIteration
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            except asyncio.CancelledError:
                self.close()
                raise
            finally:
                self._waiter = None

    @property
    def query(self) -> Query:
        """The core's query this stream reads."""
        return self._query

    @property
    def done(self) -> bool:
        """True once the query has ended (results may still be buffered)."""
        return self._query.done

    @property
    def error(self) -> QueryError | None:
        """None, or the :class:`QueryError` that ended the query."""
        return self._query.error

    @property
    def responses(self) -> int:
        """Number of responses received (also those not yielded)."""
        return self._query.responses

    @property
    def commits(self) -> int:
        """Number of commit-phase responses of an update."""
        return self._query.commits

    @property
    def warnings(self) -> list[BaseException]:
        """Single requests that failed (timeouts, ...): not fatal."""
        return list(self._query.warnings)

    def close(self) -> None:
        """Cancel the query; iteration then ends without an error."""
        with self._driver.locked():
            self._query.destroy()

    async def aclose(self) -> None:
        """Cancel the query (what ``async with`` does on exit)."""
        self.close()

    async def __aenter__(self) -> AsyncQueryStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


async def collect_stream(stream: AsyncQueryStream[T]) -> list[T]:
    """Drain ``stream`` and return every result; raises the stream's
    :class:`QueryError` (carrying the results that did arrive) on failure."""
    items = [item async for item in stream]
    error = stream.error
    if error is not None:
        raise QueryError(str(error), items)
    return items


async def collect_values(stream: AsyncQueryStream[QueryResponse]) -> list[bytes | None]:
    """Like :func:`collect_stream` but returns only each response's value."""
    return [r.value for r in await collect_stream(stream)]


async def discard_stream(stream: AsyncQueryStream[Any]) -> None:
    """Drain ``stream`` ignoring results; raises its :class:`QueryError`."""
    await collect_stream(stream)
