"""examples/server.py in a gevent program: the same server on greenlets.

``backend="gevent"`` runs the node's receiver and timer as greenlets, so
its blocking calls (announce, unannounce) only block the calling greenlet
and the rest of the program keeps running. No monkey-patching is needed.

    python examples/gevent_server.py --bootstrap 127.0.0.1:49737 [--key KEYHEX] [--nat]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import signal

import gevent
import gevent.event

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

    # The gevent flavour of the emulated NAT (a gevent socket underneath).
    sock = NATSocket.bind(args.host) if args.nat else None
    dht = HyperDHT(
        bootstrap=[args.bootstrap],
        host=args.host,
        socket=sock,
        ephemeral=args.nat,
        backend="gevent",
    )

    def on_message(data: bytes, sender: tuple[str, int]) -> None:
        print(f"got {data.decode()!r} from {sender[0]}:{sender[1]}", flush=True)
        dht.send_datagram(b"echo: " + data, sender)

    dht.on_datagram(on_message)

    # Signals the gevent way: the handler runs in a greenlet, and waiting on
    # a gevent event lets the node's greenlets run meanwhile.
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGINT, stop.set)
    gevent.signal_handler(signal.SIGTERM, stop.set)
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
            sock.close()


if __name__ == "__main__":
    main()
