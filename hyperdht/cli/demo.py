"""``hyperdht demo``: hole punching through an emulated NAT, on 127.0.0.1.

With no setup at all, the demo starts a small network in this process (a
bootstrap node, three relay nodes, a node behind an emulated NAT and a
client, all on 127.0.0.1), then walks through what hyperdht is for:

1. the NATed node announces a key;
2. the client looks the key up and learns the NATed node's address, and
   which node told it (the *referrer*);
3. a direct ping to the NATed node times out: its NAT drops datagrams from
   addresses it has not sent to (:mod:`hyperdht.testing.natsocket`);
4. the client hole punches through the referrer, which forwards the ping to
   the NATed node (the NAT lets the referrer in); the NATed node answers the
   client directly, which opens its NAT towards the client;
5. the two exchange application datagrams on the punched path
   (``send_datagram`` / ``on_datagram``).

Each step is printed; the demo exits 0, or 1 with a one-line error naming
the step that failed. It takes about a second.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..discovery import HyperDHT
from ..errors import HyperDHTError, RequestTimeout
from ..ipencoding import Address
from ..testing.natsocket import NATSocket, nat_socket
from .errors import CommandError
from .options import add_backend, new_parser
from .output import configure_logging, format_address, say
from .runtime import driver_of, open_node, require_backend, run_main

__all__ = ["DemoError", "exchange", "main", "run"]

log = logging.getLogger(__name__)

PROG = "hyperdht demo"
HOST = "127.0.0.1"
#: The key the NATed node announces.
KEY = hashlib.sha256(b"hyperdht demo").digest()
RELAYS = 3
#: Request timeout of the demo's nodes: loopback answers in microseconds, so
#: a short one keeps the failing ping (about 1.5 timeouts) quick.
NODE_TIMEOUT = 0.4
#: Upper bound for any one step; only a broken run waits this long.
STEP_TIMEOUT = 5.0
PING = b"hello from the client"
PONG = b"hello back from behind the NAT"


class DemoError(CommandError):
    """A demo step failed; the message says which and why (exit status 1)."""


def run(backend: str = "thread", say: Callable[[str], None] = say) -> None:
    """Run the demo on ``backend`` (one of :data:`hyperdht.drivers.BACKENDS`),
    reporting each step through ``say``. Raises DemoError when a step fails,
    CommandError when the backend is not installed or sockets cannot be
    bound."""
    require_backend(backend)
    nodes: list[HyperDHT] = []
    nat_sock: NATSocket | None = None
    step = 0

    def next_step(text: str) -> None:
        nonlocal step
        step += 1
        say(f"{step:2d}. {text}")

    def fail(text: str) -> NoReturn:
        raise DemoError(f"step {step + 1}: {text}")

    def start(**kwargs: Any) -> HyperDHT:
        node = open_node(host=HOST, backend=backend, timeout=NODE_TIMEOUT, **kwargs)
        nodes.append(node)
        return node

    def join(node: HyperDHT, what: str) -> None:
        if not node.ready(STEP_TIMEOUT):
            fail(f"{what} did not finish bootstrapping in {STEP_TIMEOUT:.0f} s")

    try:
        say(f"hyperdht demo ({backend} backend), everything on {HOST}")

        boot = start()
        bootstrap = [format_address(boot.address)]
        next_step(f"bootstrap node listening on {format_address(boot.address)}")

        relays = [start(bootstrap=bootstrap) for _ in range(RELAYS)]
        for relay in relays:
            join(relay, "a relay node")
        listed = ", ".join(format_address(r.address) for r in relays)
        next_step(f"{RELAYS} relay nodes joined: {listed}")

        # The NATed node is ephemeral, like a real node behind a NAT: nobody
        # puts it in a routing table, so only the nodes it contacted itself
        # (the ones it announced to) can reach it.
        try:
            nat_sock = nat_socket(backend, HOST)
        except OSError as exc:
            raise CommandError(exc.strerror or str(exc)) from None
        natted = start(bootstrap=bootstrap, ephemeral=True, socket=nat_sock)
        join(natted, "the NATed node")
        next_step(
            f"node N listening on {format_address(natted.address)} behind an emulated NAT "
            "(it drops datagrams from addresses it has not sent to)"
        )

        stream = natted.announce(KEY)
        for _ in stream:
            pass
        if stream.error is not None:
            fail(f"announce failed: {stream.error}")
        next_step(f"N announced key {KEY.hex()[:16]}... (stored by {stream.commits} nodes)")

        client = start(bootstrap=bootstrap, ephemeral=True)
        join(client, "the client")
        referrer = None
        for result in client.lookup(KEY):
            if natted.address in result.peers:
                referrer = result.node
                break
        if referrer is None:
            fail(f"the lookup did not return N ({format_address(natted.address)})")
        next_step(
            f"client C on {format_address(client.address)} looked the key up: peer "
            f"{format_address(natted.address)}, returned by {format_address(referrer)} "
            "(the referrer)"
        )

        dropped = nat_sock.dropped
        started = time.monotonic()
        try:
            client.ping(natted.address)
        except RequestTimeout:
            waited = time.monotonic() - started
            next_step(
                f"C pings N directly: no answer after {waited:.1f} s (RequestTimeout), "
                f"its NAT dropped {nat_sock.dropped - dropped} datagram(s) from C"
            )
        else:
            fail("the direct ping to N was answered: the NAT emulation is not working")

        try:
            punched = client.holepunch(natted.address, referrer)
        except HyperDHTError as exc:
            fail(f"hole punch through {format_address(referrer)} failed: {exc!r}")
        next_step(
            f"C hole punches through {format_address(referrer)}: N answered from "
            f"{format_address(punched)}, its NAT now lets C in"
        )

        exchange(natted, client, punched, fail)
        next_step(f"C -> N on the punched path: {PING.decode()!r}")
        next_step(f"N -> C: {PONG.decode()!r}")
        say("demo finished: C reached N through its NAT by hole punching")
    finally:
        for node in reversed(nodes):
            node.close()
        if nat_sock is not None:
            nat_sock.close()


def exchange(
    natted: HyperDHT, client: HyperDHT, punched: Address, fail: Callable[[str], NoReturn]
) -> None:
    """Send PING from the client to the NATed node on ``punched`` and PONG
    back, with application datagrams on the DHT's own port; ``fail`` is
    called when a message does not arrive in time."""
    got_ping = driver_of(natted).new_event()
    got_pong = driver_of(client).new_event()
    received: dict[str, tuple[bytes, Address]] = {}

    def on_natted(data: bytes, sender: Address) -> None:
        received["ping"] = (data, sender)
        natted.send_datagram(PONG, sender)  # reply to whoever wrote
        got_ping.set()

    def on_client(data: bytes, sender: Address) -> None:
        received["pong"] = (data, sender)
        got_pong.set()

    natted.on_datagram(on_natted)
    client.on_datagram(on_client)
    client.send_datagram(PING, punched)
    if not got_ping.wait(STEP_TIMEOUT) or received["ping"][0] != PING:
        fail("N did not receive the client's message")
    if not got_pong.wait(STEP_TIMEOUT) or received["pong"][0] != PONG:
        fail("C did not receive N's reply")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hyperdht demo``; returns the exit status."""

    def body() -> int:
        parser = new_parser(
            PROG,
            "Start a small network on 127.0.0.1 and show a hole punch to a "
            "node behind an emulated NAT. Needs no setup.",
        )
        add_backend(parser, default="thread")
        parser.add_argument("--verbose", action="store_true", help="log the library's debug output")
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        configure_logging(logging.DEBUG if args.verbose else logging.WARNING)
        run(args.backend)
        return 0

    return run_main(PROG, body)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
