"""The example client (client.py) as an asyncio program.

It looks KEY up, then for each peer found: connects to it through the
node that returned the peer (``connect`` punches a hole whichever side is
behind a NAT); then sends a message to the address that answered and
awaits the reply. Exits 0 after the first successful exchange, 1 if no
peer could be reached.

    python examples/asyncio_client.py --bootstrap 127.0.0.1:49737 [--key KEYHEX]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys

from hyperdht import Address, RequestTimeout
from hyperdht.aio import AsyncHyperDHT

DEFAULT_KEY = hashlib.sha256(b"hyperdht example").hexdigest()


async def run(args: argparse.Namespace) -> int:
    key = bytes.fromhex(args.key)
    # A short-lived client: ephemeral, so nobody adds it to a routing table.
    async with AsyncHyperDHT(bootstrap=[args.bootstrap], host=args.host, ephemeral=True) as dht:
        replies: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        dht.on_datagram(lambda data, sender: replies.put_nowait((data, sender)))

        # Each answer names the node that gave it: the referrer of its peers.
        referrers: dict[Address, Address] = {}
        async for response in dht.lookup(key):
            for peer in response.peers:
                referrers.setdefault(peer, response.node)
        print(f"found {len(referrers)} peer(s) for {key.hex()[:16]}...", flush=True)

        for peer, referrer in referrers.items():
            try:
                # Through the referrer whichever side is behind a NAT; use
                # the address that answered: a NAT may map the path to
                # another port than the announced one.
                address = await dht.connect(peer, referrer)
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
                data, sender = await asyncio.wait_for(replies.get(), 5)
            except asyncio.TimeoutError:
                print(f"no reply from {address.host}:{address.port}", flush=True)
                continue
            print(f"reply from {sender.host}:{sender.port}: {data.decode()!r}", flush=True)
            return 0

    print("no peer could be reached", flush=True)
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="host:port of a DHT node")
    parser.add_argument("--key", default=DEFAULT_KEY, help="64 hex characters")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
