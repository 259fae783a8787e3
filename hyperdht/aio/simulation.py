"""Run asyncio code against the simulated network (:mod:`hyperdht.testing`).

An :class:`~hyperdht.aio.AsyncDHT` whose ``backend`` is a host of a
:class:`~hyperdht.testing.Network` runs on the simulator's driver: its
datagrams and timers are events of the network, on the virtual clock. The
blocking API advances that clock whenever it waits; an asyncio program
awaits instead, so :func:`run_network` does the advancing: it runs the
program as a task and, each time the program is waiting, lets the event
loop run a few turns and then the network one event. Minutes of protocol
take milliseconds, deterministically for a seed. The program must wait
only on the DHT (or on other tasks), never on the loop's clock
(``asyncio.sleep(5)`` is real time: use ``network.call_later`` instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from ..errors import StateError

if TYPE_CHECKING:
    from ..testing import Network

__all__ = ["APP_TURNS", "run_network"]

T = TypeVar("T")

#: Event-loop turns the program gets after every network event (a future
#: the event resolved wakes its awaiting task on the next turn; chains of
#: tasks need a few more).
APP_TURNS = 4


async def run_network(network: Network, main: Awaitable[T]) -> T:
    """Run ``main`` to completion with ``network``'s virtual clock advancing
    while it waits, and return its result (or raise its exception).

    Raises StateError (a RuntimeError) for a simulated deadlock: ``main``
    still waits but nothing is left scheduled on the network. Cancelling
    the task that awaits this cancels ``main``.
    """
    task = asyncio.ensure_future(main)
    try:
        while True:
            for _ in range(APP_TURNS):
                if task.done():
                    return task.result()
                await asyncio.sleep(0)  # one turn of the loop, not a wait
            if task.done():
                return task.result()
            if not network.step():
                raise StateError(
                    "simulated deadlock: the program still waits, but nothing is "
                    "scheduled on the network any more"
                )
    finally:
        if not task.done():
            task.cancel()
