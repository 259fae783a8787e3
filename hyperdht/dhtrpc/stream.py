"""Blocking iteration over a query's results, and helpers that drain one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from ..drivers.base import Driver
from ..errors import QueryError
from .query import Query
from .types import QueryResponse

__all__ = ["QueryStream", "collect_stream", "collect_values", "discard_stream"]

T = TypeVar("T")


class QueryStream(Generic[T]):
    """An iterator of results that yields as responses arrive.

    Iterating never raises for a failed query: once exhausted, check
    :attr:`error` (or use :func:`collect_stream`, which raises it).
    :attr:`responses`, :attr:`commits` and :attr:`warnings` describe the
    run. :meth:`close` cancels the query. Iterate it from one thread at a
    time.
    """

    def __init__(self, driver: Driver, query: Query) -> None:
        self._driver = driver
        self._query = query
        self._event = driver.new_event()
        with driver.lock:
            query.on_change = self._event.set

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        query = self._query
        lock = self._driver.lock
        while True:
            with lock:
                if query.results:
                    item: T = query.results.popleft()
                    return item
                if query.done:
                    raise StopIteration
                self._event.clear()
            self._event.wait(None)

    @property
    def query(self) -> Query:
        """The core's query this stream reads (another waiting model, such
        as :mod:`hyperdht.aio`, streams it its own way)."""
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

    def __enter__(self) -> QueryStream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def collect_stream(stream: QueryStream[T]) -> list[T]:
    """Drain ``stream`` and return every result; raises the stream's
    :class:`QueryError` (carrying the results that did arrive) on failure."""
    items = list(stream)
    error = stream.error
    if error is not None:
        raise QueryError(str(error), items)
    return items


def collect_values(stream: QueryStream[QueryResponse]) -> list[bytes | None]:
    """Like :func:`collect_stream` but returns only each response's value."""
    return [r.value for r in collect_stream(stream)]


def discard_stream(stream: QueryStream[Any]) -> None:
    """Drain ``stream`` ignoring results; raises its :class:`QueryError`."""
    collect_stream(stream)
