"""CPU cost of serving one request on the sans-I/O core, without sockets.

The same workload as ``suite.py``'s serve rate, minus the kernel: a
:class:`hyperdht.dhtrpc.core.DHTCore` whose table holds 80 contacts (four
full k-buckets) plus one client, fed 4,096 pre-encoded ``_ping`` or
``_find_node`` requests (random targets) in batches of 64, draining
``datagrams_to_send()`` after each batch as the socket drivers do. The
``protobuf`` kind runs ``servers.py``'s bare protobuf responder on the
same requests (decode, encode a node-shaped answer from constants).

It prints the CPU microseconds per request (best of ``--rounds``, each
of ``--requests``). ``--profile`` prints a cProfile of one run instead.
Under ``valgrind --tool=callgrind`` use ``--requests`` with ``--rounds 1``
and divide the instruction count by it (subtract a run with
``--requests 0`` to remove the start-up):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/bench_serve_core.py --kind node --command _find_node \\
        --requests 20000 --rounds 1

Run: ``python benchmarks/bench_serve_core.py [--kind node|protobuf]
[--command _ping|_find_node] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import socket
import sys
import time
from collections.abc import Callable

from hyperdht import messages
from hyperdht.dhtrpc.core import DHTCore
from hyperdht.errors import DecodeError
from hyperdht.ipencoding import Address

CLIENT = Address("127.0.0.1", 40000)
BATCH = 64
POOL = 4096


def crafted_id(rng: random.Random, own: bytes, depth: int) -> bytes:
    """An id sharing exactly ``depth`` leading bits with ``own`` (as suite.py)."""
    n = int.from_bytes(own, "big")
    bit = 255 - depth
    prefix = (n >> bit) ^ 1
    return ((prefix << bit) | rng.getrandbits(bit)).to_bytes(32, "big")


def datagram(tid: int, req: messages.RpcRequest) -> bytes:
    """A request datagram: request bit, tid, payload."""
    return (0x8000 | tid).to_bytes(2, "big") + messages.encode_request(req)


def seeded_core(rng: random.Random) -> DHTCore:
    """A core with the suite's 80 seeded contacts (from distinct ports)."""
    core = DHTCore(id=rng.randbytes(32), rng=rng, random_bytes=rng.randbytes)
    for depth in range(4):
        for i in range(20):
            req = messages.RpcRequest("_ping", id=crafted_id(rng, core.id, depth))
            core.receive_datagram(datagram(i, req), Address("127.0.0.1", 20000 + 20 * depth + i), 0)
    core.datagrams_to_send()
    return core


def pool(command: str, client_id: bytes, rng: random.Random) -> list[bytes]:
    """``POOL`` request datagrams of ``command`` from one client."""
    out = []
    for i in range(POOL):
        target = rng.randbytes(32) if command == "_find_node" else None
        out.append(datagram(i, messages.RpcRequest(command, id=client_id, target=target)))
    return out


def node_runner(command: str, rng: random.Random) -> Callable[[int], None]:
    """Serve ``n`` requests on a seeded core."""
    core = seeded_core(rng)
    requests = pool(command, crafted_id(rng, core.id, 8), rng)
    receive = core.receive_datagram
    drain = core.datagrams_to_send

    def run(n: int) -> None:
        now = 1.0
        for i in range(n):
            receive(requests[i & (POOL - 1)], CLIENT, now)
            if i % BATCH == BATCH - 1:
                drain()
        drain()
        assert core.stats.requests_served[command] >= n

    return run


def protobuf_runner(command: str, rng: random.Random) -> Callable[[int], None]:
    """``servers.py``'s bare protobuf responder, minus the socket."""
    requests = pool(command, rng.randbytes(32), rng)
    node_id = os.urandom(32)
    token = os.urandom(32)
    nodes = os.urandom(20 * 38)
    decode = messages.decode_request
    encode = messages.encode_response
    response = messages.RpcResponse
    out: list[tuple[bytes, Address]] = []

    def run(n: int) -> None:
        for i in range(n):
            data = requests[i & (POOL - 1)]
            addr = CLIENT
            if len(data) < 2 or not data[0] & 0x80:
                continue
            try:
                req = decode(data[2:])
            except DecodeError:
                continue
            if req.command == "_find_node":
                res = response(id=node_id, nodes=nodes, roundtrip_token=token)
            else:
                host, port = addr
                value = socket.inet_aton(host) + port.to_bytes(2, "big")
                res = response(id=node_id, value=value, roundtrip_token=token)
            out.append((bytes((data[0] & 0x7F, data[1])) + encode(res), addr))
            if len(out) >= BATCH:
                out.clear()

    return run


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=("node", "protobuf"), default="node")
    p.add_argument("--command", choices=("_ping", "_find_node"), default="_find_node")
    p.add_argument("--requests", type=int, default=50000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--profile", action="store_true", help="print a cProfile of one round")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    make = node_runner if args.kind == "node" else protobuf_runner
    run = make(args.command, rng)
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(run, args.requests)
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(25)
        return 0
    best = float("inf")
    for _ in range(args.rounds):
        t0 = time.process_time()
        run(args.requests)
        best = min(best, time.process_time() - t0)
    if args.requests:
        us = 1e6 * best / args.requests
        print(f"{args.kind} {args.command}: {us:.2f} us/request (best of {args.rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
