"""hyperdht on asyncio: :class:`AsyncDHT` and :class:`AsyncHyperDHT`.

The same sans-I/O cores as the blocking API, run by the asyncio driver
(:mod:`hyperdht.drivers.asyncio`) on the running event loop, with no thread
of their own; uvloop works too. Requests are awaited, streams are async
iterators of the same response objects, and handlers may be ``async def``::

    from hyperdht.aio import AsyncHyperDHT, collect_stream

    async with AsyncHyperDHT(bootstrap=["127.0.0.1:49737"]) as node:
        await node.ready()
        await node.announce_discard(key)
        async for response in node.lookup(key):
            for peer in response.peers:
                addr = await node.connect(peer, response.node)   # through NATs
                node.send_datagram(b"hello", addr)

Cancelling a task that awaits a request or iterates a stream cancels that
request or query, and nothing else. :func:`run_network` runs such a
program on the simulator (:mod:`hyperdht.testing`) in virtual time.
"""

from __future__ import annotations

from .discovery import AsyncHyperDHT
from .node import AsyncDHT, AsyncQueryHandler
from .simulation import run_network
from .stream import AsyncQueryStream, collect_stream, collect_values, discard_stream

__all__ = [
    "AsyncDHT",
    "AsyncHyperDHT",
    "AsyncQueryHandler",
    "AsyncQueryStream",
    "collect_stream",
    "collect_values",
    "discard_stream",
    "run_network",
]
