"""Drivers: what runs a sans-I/O core on a real (or simulated) socket.

``backend="thread"`` (default) and ``backend="gevent"`` are the built-in
ones; any object with ``create_driver(...)`` (see
:class:`hyperdht.drivers.base.Backend`) works too.
"""

from __future__ import annotations

from typing import Any

from .base import Backend, Driver, Endpoint, Event, SocketLike

__all__ = ["Backend", "Driver", "Endpoint", "Event", "SocketLike", "create_driver"]

BACKENDS = ("thread", "gevent")


def create_driver(
    backend: Any,
    *,
    host: str,
    port: int,
    ipv6: bool = False,
    socket: SocketLike | None = None,
) -> Driver:
    """Create a driver for ``backend`` ("thread", "gevent" or a Backend).

    Raises ValueError for an unknown backend name, and OSError when the
    socket cannot be bound.
    """
    if isinstance(backend, str):
        if backend == "thread":
            from .thread import ThreadDriver

            return ThreadDriver(host=host, port=port, ipv6=ipv6, socket=socket)
        if backend == "gevent":
            from .gevent import GeventDriver

            return GeventDriver(host=host, port=port, ipv6=ipv6, socket=socket)
        raise ValueError(
            f"backend: unknown backend {backend!r} (expected one of {BACKENDS} or a Backend object)"
        )
    if not hasattr(backend, "create_driver"):
        raise ValueError(f"backend: {backend!r} is neither a backend name nor has create_driver()")
    driver: Driver = backend.create_driver(host=host, port=port, ipv6=ipv6, socket=socket)
    return driver
