"""The example server (server.py) as an asyncio program.

It announces KEY on the DHT (and again every 4-5 minutes, as announcements
expire) and answers application messages that arrive on the DHT's own UDP
port, all on the running event loop (no thread of its own).

    python examples/asyncio_server.py --bootstrap 127.0.0.1:49737 [--key KEYHEX] [--nat]

With --nat the server sits behind an emulated NAT that drops datagrams from
addresses it has not sent to, so clients must hole punch (see
asyncio_client.py). Stop it with Ctrl-C: it unannounces the key and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import signal

from hyperdht import HyperDHTError
from hyperdht.aio import AsyncHyperDHT
from hyperdht.testing.natsocket import NATSocket

DEFAULT_KEY = hashlib.sha256(b"hyperdht example").hexdigest()


async def serve(args: argparse.Namespace) -> None:
    key = bytes.fromhex(args.key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    # Behind a NAT nobody can reach us unsolicited, so we are ephemeral.
    sock = NATSocket.bind(args.host) if args.nat else None
    try:
        async with AsyncHyperDHT(
            bootstrap=[args.bootstrap], host=args.host, socket=sock, ephemeral=args.nat
        ) as dht:

            def on_message(data: bytes, sender: tuple[str, int]) -> None:
                # Runs on the loop for each datagram: keep it quick. Reply to
                # the sender's address exactly as seen (the punched path).
                print(f"got {data.decode()!r} from {sender[0]}:{sender[1]}", flush=True)
                dht.send_datagram(b"echo: " + data, sender)

            dht.on_datagram(on_message)
            while not stop.is_set():
                await dht.announce_discard(key)
                print(f"announced {key.hex()} on port {dht.address.port}", flush=True)
                with contextlib.suppress(asyncio.TimeoutError):  # re-announce every 4-5 minutes
                    await asyncio.wait_for(stop.wait(), random.uniform(240, 300))
            try:
                await dht.unannounce(key)  # so lookups stop returning us at once
                print("unannounced, bye", flush=True)
            except HyperDHTError as exc:  # e.g. the network is gone: it expires anyway
                print(f"unannounce failed: {exc}", flush=True)
    finally:
        if sock is not None:
            sock.close()  # a socket we pass in stays ours to close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="host:port of a DHT node")
    parser.add_argument("--key", default=DEFAULT_KEY, help="64 hex characters")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind")
    parser.add_argument("--nat", action="store_true", help="sit behind an emulated NAT")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
