"""Drivers: what runs a sans-I/O core on a real (or simulated) socket.

``backend="thread"`` (default), ``backend="gevent"`` and
``backend="asyncio"`` (for :mod:`hyperdht.aio`) are the built-in ones,
listed once in :data:`DRIVER_CLASSES`; any object with
``create_driver(...)`` (see :class:`hyperdht.drivers.base.Backend`) works
too, such as a host of :class:`hyperdht.testing.Network`.

The modules: :mod:`~hyperdht.drivers.base` (the contract: transport and
waiting), :mod:`~hyperdht.drivers.socket` (what the socket drivers share),
:mod:`~hyperdht.drivers.thread` (with :mod:`~hyperdht.drivers.hub`, the
I/O thread its drivers share), :mod:`~hyperdht.drivers.gevent` (with
:mod:`~hyperdht.drivers.gevent_hub`, the worker greenlet its drivers share)
and :mod:`~hyperdht.drivers.asyncio`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..errors import ArgumentError
from .base import Backend, Driver, Endpoint, Event, SocketLike, Transport, Waiting

__all__ = [
    "BACKENDS",
    "DRIVER_CLASSES",
    "Backend",
    "Driver",
    "Endpoint",
    "Event",
    "SocketLike",
    "Transport",
    "Waiting",
    "create_driver",
    "driver_class",
]

#: The built-in backends: name -> ``"module:Class"`` of its driver, imported
#: only when first used (gevent is optional). The class is called as
#: ``Class(host=, port=, ipv6=, socket=)``. A new backend is one entry here.
DRIVER_CLASSES: Mapping[str, str] = MappingProxyType(
    {
        "thread": "hyperdht.drivers.thread:ThreadDriver",
        "gevent": "hyperdht.drivers.gevent:GeventDriver",
        "asyncio": "hyperdht.drivers.asyncio:AsyncioDriver",
    }
)

#: The names ``backend=`` accepts, in order of preference (the first is the
#: default); for command-line choices.
BACKENDS: tuple[str, ...] = tuple(DRIVER_CLASSES)


def driver_class(name: str) -> type[Driver]:
    """The driver class of the built-in backend ``name``, imported now.

    Raises ArgumentError (a ValueError) for an unknown name, listing the
    known ones, and BackendUnavailable (an ImportError) when the backend's
    library is missing (the message says what to install).
    """
    try:
        where = DRIVER_CLASSES[name]
    except KeyError:
        raise ArgumentError(
            f"backend: unknown backend {name!r} (expected one of {BACKENDS} or a Backend object)"
        ) from None
    module, _, attr = where.partition(":")
    cls: type[Driver] = getattr(importlib.import_module(module), attr)
    return cls


def create_driver(
    backend: Any,
    *,
    host: str,
    port: int,
    ipv6: bool = False,
    socket: SocketLike | None = None,
) -> Driver:
    """Create a driver for ``backend`` (a name of :data:`BACKENDS`, or a
    :class:`Backend`).

    Raises ArgumentError (a ValueError) for an unknown backend name or an
    object without ``create_driver()``, and BindError (an OSError) when the
    socket cannot be bound.
    """
    if isinstance(backend, str):
        return driver_class(backend)(host=host, port=port, ipv6=ipv6, socket=socket)  # type: ignore[call-arg]
    if not hasattr(backend, "create_driver"):
        raise ArgumentError(
            f"backend: {backend!r} is neither a backend name ({BACKENDS}) nor has create_driver()"
        )
    driver: Driver = backend.create_driver(host=host, port=port, ipv6=ipv6, socket=socket)
    return driver
