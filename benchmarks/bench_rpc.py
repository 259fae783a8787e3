"""How many requests per second one DHT node answers on loopback.

The node runs in a child process (so the client does not compete with it
for the GIL) on 127.0.0.1 with the chosen backend. The client is a single
loop over a few plain UDP sockets, each keeping a window of encoded
``_ping`` or ``_find_node`` requests in flight and sending a new one for
each answer; a request unanswered after a second counts as lost and frees
its slot. Before measuring, the node learns 200 contacts (pings carrying
random ids), so a ``_find_node`` answer lists 20 nodes (about 830 bytes).

Each round lasts ``--seconds`` or ``--max-requests`` answers, whichever
comes first; the median answered/s over the rounds is printed per command.

``--backend`` takes a comma-separated list (``thread,asyncio``): each
backend gets its own node process and the rounds alternate between them,
so the figures side by side share the machine's noise; each line then
also shows the ratio to the first backend. ``asyncio`` runs the node as
:class:`hyperdht.aio.AsyncDHT` on the default event loop, ``uvloop`` the
same on uvloop.

Run: ``python benchmarks/bench_rpc.py [--backend thread,gevent,asyncio,uvloop] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import selectors
import socket
import statistics
import sys
import time
from typing import Any

from hyperdht import messages

HOST = "127.0.0.1"
LOST_AFTER = 1.0


BACKENDS = ("thread", "gevent", "asyncio", "uvloop")


def report(stats: Any, cpu_start: float) -> dict[str, Any]:
    """What the node tells the parent: its counters and the CPU seconds it
    used since it started listening (less sensitive to a loaded machine
    than the rates)."""
    return {
        "served": dict(stats.requests_served),
        "drops": dict(stats.drops),
        "cpu": time.process_time() - cpu_start,
    }


async def serve_async(conn: Any) -> None:
    """Child process, asyncio: the node on the running loop until the
    parent says stop."""
    from hyperdht.aio import AsyncDHT

    async with AsyncDHT(host=HOST) as node:
        cpu_start = time.process_time()
        conn.send(node.address.port)
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        loop.add_reader(conn.fileno(), lambda: readable.done() or readable.set_result(None))
        await readable
        loop.remove_reader(conn.fileno())
        conn.recv()
        conn.send(report(node.stats, cpu_start))


def serve(backend: str, conn: Any) -> None:
    """Child process: run one node until the parent says stop, then report
    its counters."""
    if backend == "asyncio":
        asyncio.run(serve_async(conn))
        return
    if backend == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
        loop.run_until_complete(serve_async(conn))
        loop.close()
        return
    from hyperdht.dhtrpc import DHT

    node = DHT(host=HOST, backend=backend)
    cpu_start = time.process_time()
    conn.send(node.address.port)
    if backend == "gevent":
        from gevent.socket import wait_read

        wait_read(conn.fileno())  # lets the node's greenlets run meanwhile
    conn.recv()
    conn.send(report(node.stats, cpu_start))
    node.close()


class Client:
    """Plain UDP sockets keeping ``window`` requests each in flight."""

    def __init__(self, to: tuple[str, int], sockets: int, window: int) -> None:
        self.to = to
        self.window = window
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.pending: list[dict[int, float]] = []
        self.next_tid: list[int] = []
        for i in range(sockets):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((HOST, 0))
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, i)
            self.socks.append(sock)
            self.pending.append({})
            self.next_tid.append(random.randrange(0x8000))

    def close(self) -> None:
        self.selector.close()
        for sock in self.socks:
            sock.close()

    def send(self, i: int, payload: bytes, now: float) -> None:
        tid = self.next_tid[i]
        self.next_tid[i] = (tid + 1) & 0x7FFF
        try:
            self.socks[i].sendto((0x8000 | tid).to_bytes(2, "big") + payload, self.to)
        except BlockingIOError:
            return  # socket buffer full: the slot is refilled later
        self.pending[i][tid] = now

    def round(self, payload: bytes, seconds: float, max_requests: int) -> tuple[float, int]:
        """Run one measuring round; return (answered per second, lost)."""
        for p in self.pending:
            p.clear()
        start = now = time.perf_counter()
        for i in range(len(self.socks)):
            for _ in range(self.window):
                self.send(i, payload, now)
        answered = lost = 0
        deadline = start + seconds
        next_sweep = start + 0.1
        while now < deadline and answered < max_requests:
            for key, _ in self.selector.select(0.05):
                i = key.data
                sock = self.socks[i]
                pending = self.pending[i]
                while True:
                    try:
                        data = sock.recv(4096)
                    except BlockingIOError:
                        break
                    if len(data) < 2 or data[0] & 0x80:
                        continue  # not a response (e.g. the node pinging us)
                    if pending.pop(((data[0] << 8) | data[1]) & 0x7FFF, None) is None:
                        continue
                    answered += 1
                    self.send(i, payload, now)
            now = time.perf_counter()
            if now >= next_sweep:
                next_sweep = now + 0.1
                for i, pending in enumerate(self.pending):
                    stale = [t for t, sent in pending.items() if now - sent > LOST_AFTER]
                    for tid in stale:
                        del pending[tid]
                        lost += 1
                    for _ in range(self.window - len(pending)):
                        self.send(i, payload, now)
        elapsed = time.perf_counter() - start
        # Let the answers still in flight arrive so the next round starts clean.
        drain_until = time.perf_counter() + LOST_AFTER
        while any(self.pending) and time.perf_counter() < drain_until:
            for key, _ in self.selector.select(0.05):
                pending = self.pending[key.data]
                try:
                    while True:
                        data = self.socks[key.data].recv(4096)
                        if len(data) >= 2 and not data[0] & 0x80:
                            pending.pop(((data[0] << 8) | data[1]) & 0x7FFF, None)
                except BlockingIOError:
                    pass
        return answered / elapsed, lost

    def teach(self, contacts: int) -> None:
        """Make the node store ``contacts`` nodes (pings with random ids)."""
        rng = random.Random(1)
        sock = self.socks[0]
        sock.setblocking(True)
        sock.settimeout(2.0)
        for _ in range(contacts):
            req = messages.RpcRequest("_ping", id=rng.randbytes(32))
            sock.sendto(b"\x80\x00" + messages.encode_request(req), self.to)
            while True:
                data = sock.recv(4096)
                if not data[0] & 0x80:
                    break
        sock.setblocking(False)


PAYLOADS = {
    "_ping": messages.encode_request(messages.RpcRequest("_ping", id=os.urandom(32))),
    "_find_node": messages.encode_request(
        messages.RpcRequest("_find_node", id=os.urandom(32), target=os.urandom(32))
    ),
}


class Server:
    """One backend's node in a child process, and a client aimed at it."""

    def __init__(self, backend: str, sockets: int, window: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.backend = backend
        self.parent, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(backend, child), daemon=True)
        self.process.start()
        if not self.parent.poll(30):
            self.process.kill()
            raise SystemExit(f"the {backend} node did not start")
        self.client = Client((HOST, self.parent.recv()), sockets, window)
        self.client.teach(200)

    def stop(self) -> dict[str, Any] | None:
        self.client.close()
        self.parent.send("stop")
        report = self.parent.recv() if self.parent.poll(30) else None
        self.process.join(30)
        return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend", default="thread", help=f"comma-separated, of {', '.join(BACKENDS)} (thread)"
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="length of a round (2)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per command (5)")
    parser.add_argument("--sockets", type=int, default=4, help="client sockets (4)")
    parser.add_argument("--window", type=int, default=16, help="requests in flight per socket")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="cap per round")
    parser.add_argument(
        "--command", choices=("_ping", "_find_node", "both"), default="both", help="what to send"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 short round")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 0.3, 1
    if args.seconds <= 0 or args.rounds < 1 or args.sockets < 1 or args.window < 1:
        parser.error("--seconds, --rounds, --sockets and --window must be positive")
    backends = args.backend.split(",")
    for name in backends:
        if name not in BACKENDS:
            parser.error(f"--backend: {name!r} is not one of {', '.join(BACKENDS)}")
    commands = ["_ping", "_find_node"] if args.command == "both" else [args.command]

    servers: list[Server] = []
    reports: dict[str, Any] = {}
    try:
        for name in backends:
            servers.append(Server(name, args.sockets, args.window))
        print(
            f"backend {args.backend}, {args.sockets} sockets x {args.window} in flight, "
            f"{args.rounds} round(s) of {args.seconds:g} s"
        )
        for command in commands:
            rates: dict[str, list[float]] = {s.backend: [] for s in servers}
            lost = dict.fromkeys(rates, 0)
            for _ in range(args.rounds):
                for server in servers:  # alternate: the backends share the noise
                    rate, n_lost = server.client.round(
                        PAYLOADS[command], args.seconds, args.max_requests
                    )
                    rates[server.backend].append(rate)
                    lost[server.backend] += n_lost
            first = statistics.median(rates[backends[0]])
            for name, values in rates.items():
                median = statistics.median(values)
                shown = ", ".join(f"{r:,.0f}" for r in values)
                ratio = f"  {median / first:.2f}x {backends[0]}" if len(backends) > 1 else ""
                print(
                    f"{command:<11} {name:<8} median {median:>9,.0f} answered/s{ratio}"
                    f"  (rounds: {shown}; lost {lost[name]})"
                )
    finally:
        for server in servers:
            reports[server.backend] = server.stop()
    for name, report in reports.items():
        if report is not None:
            served = sum(report["served"].values())
            per = report["cpu"] / served * 1e6 if served else float("nan")
            print(
                f"{name} node served {report['served']}, drops {report['drops'] or 'none'}, "
                f"{per:.1f} us of CPU per request"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
