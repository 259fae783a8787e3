"""Tutorial, process A on asyncio: announce a key, answer one datagram, leave.

    python a_asyncio.py 127.0.0.1:49737 [--nat]

The same program as a_blocking.py on hyperdht.aio: the node runs on the
running event loop, with no thread of its own; every request is awaited.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys

from hyperdht import Address, QueryError
from hyperdht.aio import AsyncHyperDHT
from hyperdht.testing.natsocket import NATSocket

# Keys are 32 bytes: the hash of a topic. TUTORIAL_TOPIC picks another
# topic, so that several runs of the tutorial can share a machine.
KEY = hashlib.sha256(os.environ.get("TUTORIAL_TOPIC", "hyperdht tutorial").encode()).digest()


async def main(bootstrap: str, nat: bool) -> int:
    sock = NATSocket.bind("127.0.0.1") if nat else None
    inbox: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
    try:
        async with AsyncHyperDHT(
            bootstrap=[bootstrap], host="127.0.0.1", socket=sock, ephemeral=nat
        ) as node:
            # Called on the loop for each datagram: never block in it.
            node.on_datagram(lambda data, sender: inbox.put_nowait((data, sender)))
            await node.ready()
            for attempt in range(3):  # "find me under this key"
                try:
                    await node.announce_discard(KEY)
                    break
                except QueryError:  # no node answered in time (a busy machine): again
                    if attempt == 2:
                        raise
            print(f"A: announced {KEY.hex()[:16]}... on port {node.address.port}", flush=True)

            data, sender = await asyncio.wait_for(inbox.get(), 60)
            print(f"A: got {data!r} from {sender.host}:{sender.port}", flush=True)
            node.send_datagram(b"hello from A", sender)
            for attempt in range(3):  # lookups stop returning us at once
                try:
                    await node.unannounce(KEY)
                    break
                except QueryError:  # as above: again
                    if attempt == 2:
                        raise
            print("A: unannounced, bye", flush=True)
    finally:
        if sock is not None:
            sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], "--nat" in sys.argv[2:])))
