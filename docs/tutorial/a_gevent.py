"""Tutorial, process A on gevent: announce a key, answer one datagram, leave.

    python a_gevent.py 127.0.0.1:49737 [--nat]

The same program as a_blocking.py in a gevent program: backend="gevent" runs
the node on greenlets and gevent sockets (no monkey-patching needed), and a
gevent queue hands datagrams over.
"""

from __future__ import annotations

import hashlib
import os
import sys

import gevent.queue

from hyperdht import Address, HyperDHT, QueryError
from hyperdht.testing.natsocket import NATSocket

# Keys are 32 bytes: the hash of a topic. TUTORIAL_TOPIC picks another
# topic, so that several runs of the tutorial can share a machine.
KEY = hashlib.sha256(os.environ.get("TUTORIAL_TOPIC", "hyperdht tutorial").encode()).digest()


def main() -> int:
    bootstrap, nat = sys.argv[1], "--nat" in sys.argv[2:]
    sock = NATSocket.bind("127.0.0.1") if nat else None
    inbox: gevent.queue.Queue[tuple[bytes, Address]] = gevent.queue.Queue()
    try:
        with HyperDHT(
            bootstrap=[bootstrap], host="127.0.0.1", socket=sock, ephemeral=nat, backend="gevent"
        ) as node:
            node.on_datagram(lambda data, sender: inbox.put((data, sender)))  # on a greenlet
            node.ready()
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
            node.send_datagram(b"hello from A", sender)
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
            sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
