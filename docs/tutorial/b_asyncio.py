"""Tutorial, process B on asyncio: look the key up, connect, say hello.

python b_asyncio.py 127.0.0.1:49737
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys

from hyperdht import Address
from hyperdht.aio import AsyncHyperDHT

# Keys are 32 bytes: the hash of a topic. TUTORIAL_TOPIC picks another
# topic, so that several runs of the tutorial can share a machine.
KEY = hashlib.sha256(os.environ.get("TUTORIAL_TOPIC", "hyperdht tutorial").encode()).digest()


async def main(bootstrap: str) -> int:
    inbox: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
    async with AsyncHyperDHT(bootstrap=[bootstrap], host="127.0.0.1", ephemeral=True) as node:
        node.on_datagram(lambda data, sender: inbox.put_nowait((data, sender)))
        responses = [response async for response in node.lookup(KEY)]
        for response in responses:
            for peer in response.peers:
                where = f"{response.node.host}:{response.node.port}"
                print(f"B: {where} says {peer.host}:{peer.port} announced the key", flush=True)
                address = await node.connect(peer, response.node)
                print(f"B: connected, {address.host}:{address.port} answered", flush=True)
                node.send_datagram(b"hello from B", address)
                data, sender = await asyncio.wait_for(inbox.get(), 10)
                print(f"B: got {data!r} from {sender.host}:{sender.port}", flush=True)
                return 0
    print("B: nobody announced the key", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
