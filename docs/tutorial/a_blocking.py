"""Tutorial, process A: announce a key, answer one datagram, then leave.

python a_blocking.py 127.0.0.1:49737          # reachable directly
python a_blocking.py 127.0.0.1:49737 --nat    # behind the emulated NAT
"""

from __future__ import annotations

import hashlib
import os
import queue
import sys

from hyperdht import Address, HyperDHT, QueryError
from hyperdht.testing.natsocket import NATSocket

# Keys are 32 bytes: the hash of a topic. TUTORIAL_TOPIC picks another
# topic, so that several runs of the tutorial can share a machine.
KEY = hashlib.sha256(os.environ.get("TUTORIAL_TOPIC", "hyperdht tutorial").encode()).digest()


def main() -> int:
    bootstrap, nat = sys.argv[1], "--nat" in sys.argv[2:]
    # --nat: a socket that drops datagrams from addresses it has not sent to.
    # A node behind a NAT is ephemeral: others cannot reach it unasked, so it
    # does not ask to be put in their routing tables.
    sock = NATSocket.bind("127.0.0.1") if nat else None
    inbox: queue.Queue[tuple[bytes, Address]] = queue.Queue()
    try:
        with HyperDHT(bootstrap=[bootstrap], host="127.0.0.1", socket=sock, ephemeral=nat) as node:
            # Called on the node's receiver thread: hand the datagram over.
            node.on_datagram(lambda data, sender: inbox.put((data, sender)))
            node.ready()  # joined: the bootstrap node answered
            for attempt in range(3):  # "find me under this key"
                try:
                    node.announce_discard(KEY)
                    break
                except QueryError:  # no node answered in time (a busy machine): again
                    if attempt == 2:
                        raise
            print(f"A: announced {KEY.hex()[:16]}... on port {node.address.port}", flush=True)

            data, sender = inbox.get(timeout=60)
            print(f"A: got {data!r} from {sender.host}:{sender.port}", flush=True)
            node.send_datagram(b"hello from A", sender)  # answer on the same path
            for attempt in range(3):  # lookups stop returning us at once
                try:
                    node.unannounce(KEY)
                    break
                except QueryError:  # as above: again
                    if attempt == 2:
                        raise
            print("A: unannounced, bye", flush=True)
    finally:
        if sock is not None:
            sock.close()  # a socket we pass in stays ours to close
    return 0


if __name__ == "__main__":
    sys.exit(main())
