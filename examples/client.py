"""A client that finds a server by its key and talks to it.

It looks KEY up, then for each peer found: connects to it through the node
that returned the peer (the referrer, which the peer has talked to;
``connect`` punches a hole whichever side is behind a NAT), sends a message
to the address that answered and waits for the reply. Exits 0 after the first
successful exchange, 1 if no peer could be reached.

    python examples/client.py --bootstrap 127.0.0.1:49737 [--key KEYHEX]
"""

from __future__ import annotations

import argparse
import hashlib
import queue
import sys

from hyperdht import Address, HyperDHT, RequestTimeout

DEFAULT_KEY = hashlib.sha256(b"hyperdht example").hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="host:port of a DHT node")
    parser.add_argument("--key", default=DEFAULT_KEY, help="64 hex characters")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind")
    args = parser.parse_args()
    key = bytes.fromhex(args.key)

    # A short-lived client: ephemeral, so nobody adds it to a routing table.
    with HyperDHT(bootstrap=[args.bootstrap], host=args.host, ephemeral=True) as dht:
        replies: queue.Queue[tuple[bytes, Address]] = queue.Queue()
        dht.on_datagram(lambda data, sender: replies.put((data, sender)))

        # Each answer names the node that gave it: remember it as the
        # referrer of the peers it listed.
        referrers: dict[Address, Address] = {}
        for response in dht.lookup(key):
            for peer in response.peers:
                referrers.setdefault(peer, response.node)
        print(f"found {len(referrers)} peer(s) for {key.hex()[:16]}...", flush=True)

        for peer, referrer in referrers.items():
            try:
                # connect() punches a hole whichever side is behind a NAT;
                # use the address it returns: a NAT may map the punched
                # path to another port than the announced one.
                address = dht.connect(peer, referrer)
            except RequestTimeout:
                print(f"connect to {peer.host}:{peer.port}: failed", flush=True)
                continue
            print(
                f"connect to {peer.host}:{peer.port} through {referrer.host}:{referrer.port}: "
                f"open to {address.host}:{address.port}",
                flush=True,
            )

            dht.send_datagram(b"hello", address)
            try:
                data, sender = replies.get(timeout=5)
            except queue.Empty:
                print(f"no reply from {address.host}:{address.port}", flush=True)
                continue
            print(f"reply from {sender.host}:{sender.port}: {data.decode()!r}", flush=True)
            return 0

    print("no peer could be reached", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
