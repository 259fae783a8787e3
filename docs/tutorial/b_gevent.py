"""Tutorial, process B on gevent: look the key up, connect, say hello.

python b_gevent.py 127.0.0.1:49737
"""

from __future__ import annotations

import hashlib
import os
import sys

import gevent.queue

from hyperdht import Address, HyperDHT, collect_stream

# Keys are 32 bytes: the hash of a topic. TUTORIAL_TOPIC picks another
# topic, so that several runs of the tutorial can share a machine.
KEY = hashlib.sha256(os.environ.get("TUTORIAL_TOPIC", "hyperdht tutorial").encode()).digest()


def main() -> int:
    bootstrap = sys.argv[1]
    inbox: gevent.queue.Queue[tuple[bytes, Address]] = gevent.queue.Queue()
    with HyperDHT(
        bootstrap=[bootstrap], host="127.0.0.1", ephemeral=True, backend="gevent"
    ) as node:
        node.on_datagram(lambda data, sender: inbox.put((data, sender)))
        for response in collect_stream(node.lookup(KEY)):
            for peer in response.peers:
                where = f"{response.node.host}:{response.node.port}"
                print(f"B: {where} says {peer.host}:{peer.port} announced the key", flush=True)
                address = node.connect(peer, response.node)
                print(f"B: connected, {address.host}:{address.port} answered", flush=True)
                node.send_datagram(b"hello from B", address)
                data, sender = inbox.get(timeout=10)
                print(f"B: got {data!r} from {sender.host}:{sender.port}", flush=True)
                return 0
    print("B: nobody announced the key", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
