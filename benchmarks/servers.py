"""The Python servers that ``suite.py`` measures, one per process.

``python benchmarks/servers.py KIND [ID]`` binds a UDP socket on 127.0.0.1,
prints one JSON line ``{"port": N, "pid": P}``, serves until a line (or end
of file) arrives on stdin, then prints ``{"table": T}`` (the routing-table
size; null for the bare servers) and exits. ``ID`` (64 hex digits) is the
node id of the DHT kinds (random without it; the suite gives every server
of a round the same one); the bare kinds ignore it. KIND is:

* ``thread`` / ``gevent``: a :class:`hyperdht.DHT` node on that backend;
  ``thread-private``: a thread-backend node on threads of its own
  (``ThreadBackend(hub=False)``) instead of the shared hub.
* ``echo``: a bare pure-Python loop that sends every request back with the
  request bit cleared (the least a Python UDP server can do per datagram).
* ``protobuf``: a bare loop that decodes each request with
  :mod:`hyperdht.messages` and encodes a response of the same shape as a
  node's (``_ping``: id, 6-byte address, 32-byte token; ``_find_node``: id,
  20 nodes, token) from constants: no routing table, no tokens, no tids.

The last two bound what pure Python can do on one core; the suite runs
each of these pinned to one core.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
from typing import Any

HOST = "127.0.0.1"
KINDS = ("thread", "thread-private", "gevent", "echo", "protobuf")

log = logging.getLogger("benchmarks.servers")


def say(obj: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed (the suite reads it)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def echo_loop(sock: socket.socket) -> None:
    """Answer every datagram with itself, request bit cleared."""
    recvfrom = sock.recvfrom
    sendto = sock.sendto
    while True:
        try:
            data, addr = recvfrom(65536)
        except OSError:
            return
        if len(data) < 2 or not data[0] & 0x80:
            continue
        sendto(bytes((data[0] & 0x7F,)) + data[1:], addr)


def protobuf_loop(sock: socket.socket) -> None:
    """Decode each request, encode a node-shaped response (no DHT logic)."""
    from hyperdht import messages
    from hyperdht.errors import DecodeError

    node_id = os.urandom(32)
    token = os.urandom(32)
    nodes = os.urandom(20 * 38)
    decode = messages.decode_request
    encode = messages.encode_response
    response = messages.RpcResponse
    recvfrom = sock.recvfrom
    sendto = sock.sendto
    while True:
        try:
            data, addr = recvfrom(65536)
        except OSError:
            return
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
        sendto(bytes((data[0] & 0x7F, data[1])) + encode(res), addr)


def serve_bare(kind: str) -> int:
    """Run the echo or protobuf loop in a thread until stdin says stop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    loop = echo_loop if kind == "echo" else protobuf_loop
    threading.Thread(target=loop, args=(sock,), daemon=True).start()
    say({"port": sock.getsockname()[1], "pid": os.getpid()})
    sys.stdin.readline()
    say({"table": None})
    return 0


def serve_node(backend: str, node_id: bytes | None = None) -> int:
    """Run one :class:`hyperdht.DHT` node (id ``node_id``, random if None)
    until stdin says stop."""
    from hyperdht import DHT
    from hyperdht.drivers.thread import ThreadBackend

    # "thread-private": receiver and timer threads of its own, not the hub.
    node = DHT(
        id=node_id,
        host=HOST,
        backend=ThreadBackend(hub=False) if backend == "thread-private" else backend,
    )
    say({"port": node.address.port, "pid": os.getpid()})
    if backend == "gevent":
        from gevent.socket import wait_read

        wait_read(sys.stdin.fileno())  # lets the node's greenlets run meanwhile
    sys.stdin.readline()
    say({"table": len(node.nodes()), "served": dict(node.stats.requests_served)})
    node.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``servers.py KIND [ID]``."""
    args = sys.argv[1:] if argv is None else argv
    node_id = None
    if len(args) == 2:
        try:
            node_id = bytes.fromhex(args[1])
        except ValueError:
            node_id = b""
    if (
        not 1 <= len(args) <= 2
        or args[0] not in KINDS
        or (node_id is not None and len(node_id) != 32)
    ):
        print(f"usage: servers.py {{{'|'.join(KINDS)}}} [ID: 64 hex digits]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    if args[0] in ("echo", "protobuf"):
        return serve_bare(args[0])
    return serve_node(args[0], node_id)


if __name__ == "__main__":
    sys.exit(main())
