"""A server that clients find by a key instead of an address.

It announces KEY on the DHT (and again every 4-5 minutes, as announcements
expire) and answers application messages that arrive on the DHT's own UDP
port. Using that port matters: it is the one a hole punch opens.

    python examples/server.py --bootstrap 127.0.0.1:49737 [--key KEYHEX] [--nat]

With --nat the server sits behind an emulated NAT that drops datagrams from
addresses it has not sent to, so clients must hole punch (see client.py).
Stop it with Ctrl-C: it unannounces the key and exits.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import signal
import threading

from hyperdht import HyperDHT, HyperDHTError
from hyperdht.testing.natsocket import NATSocket

DEFAULT_KEY = hashlib.sha256(b"hyperdht example").hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="host:port of a DHT node")
    parser.add_argument("--key", default=DEFAULT_KEY, help="64 hex characters")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind")
    parser.add_argument("--nat", action="store_true", help="sit behind an emulated NAT")
    args = parser.parse_args()
    key = bytes.fromhex(args.key)

    # Behind a NAT nobody can reach us unsolicited, so we are ephemeral: we
    # do not ask to be put in other nodes' routing tables.
    sock = NATSocket.bind(args.host) if args.nat else None
    dht = HyperDHT(bootstrap=[args.bootstrap], host=args.host, socket=sock, ephemeral=args.nat)

    def on_message(data: bytes, sender: tuple[str, int]) -> None:
        # Runs on the DHT's receiver: keep it quick. Reply to the sender's
        # address exactly as seen (after a hole punch that is the open path).
        print(f"got {data.decode()!r} from {sender[0]}:{sender[1]}", flush=True)
        dht.send_datagram(b"echo: " + data, sender)

    dht.on_datagram(on_message)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while True:
            dht.announce_discard(key)
            print(f"announced {key.hex()} on port {dht.address.port}", flush=True)
            if stop.wait(random.uniform(240, 300)):  # re-announce every 4-5 minutes
                break
        try:
            dht.unannounce(key)  # so lookups stop returning us at once
            print("unannounced, bye", flush=True)
        except HyperDHTError as exc:  # e.g. the network is gone: it expires anyway
            print(f"unannounce failed: {exc}", flush=True)
    finally:
        dht.close()
        if sock is not None:
            sock.close()  # a socket we pass in stays ours to close


if __name__ == "__main__":
    main()
