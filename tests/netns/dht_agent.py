"""A HyperDHT node driven over stdin/stdout JSON lines, run inside a lab namespace.

Usage::

    python dht_agent.py [--backend thread|gevent] [--host H] [--port N]
                        [--bootstrap host:port]... [--ephemeral] [--timeout S]

Starts ``HyperDHT(...)``, waits for its initial bootstrap (if any) and prints
``READY <port> <json>`` (the json has ``host``, ``port``, ``id``, ``nodes``).
Then it reads one JSON command per line::

    {"seq": 1, "cmd": "ping", "addr": ["198.18.0.1", 4000]}

and answers each with exactly one line, ``seq`` first::

    {"seq": 1, "ok": true, "address": ["198.18.0.20", 5000]}
    {"seq": 1, "ok": false, "error": "RequestTimeout", "message": "..."}

Commands (addresses are ``[host, port]``, keys 64 hex digits, data UTF-8):

* ``announce {key}`` / ``lookup {key}`` -> ``results``: list of
  ``{node, peers, local_peers}`` (one per :class:`QueryResponse`);
* ``ping {addr}`` -> ``address`` (ours, as the node saw it);
* ``holepunch {peer, referrer}`` -> ``address`` the answer came from;
* ``connect {peer, referrer?, opener_ttl?, timeout?}`` -> ``address`` that
  answered and ``seconds`` the call took (``HyperDHT.connect``);
* ``send {addr, data}`` -> ``{}`` once ``send_datagram`` returned;
* ``opener {addr, data, ttl}`` -> ``{}``: one application datagram sent from
  the DHT's own socket with IP TTL ``ttl`` (the low-TTL opener: it opens our
  NAT towards ``addr`` and expires before the far NAT);
* ``recv {wait}`` -> ``data``, ``from``: the next application datagram
  (queued since start; ``error: "Timeout"`` when none came in time);
* ``stats`` -> a few counters, ``natted`` and the measured ``opener_ttl``;
  ``close`` -> ``{}``, then the process exits.

Commands run concurrently (one thread, or one greenlet with ``--backend
gevent``, each), so a ``recv`` can wait while another command runs.  EOF on
stdin closes the node and exits.  With gevent nothing is monkey-patched: stdin
is read through a cooperative file object and every DHT call happens on the
hub's thread, as the driver requires.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import sys
import threading
import time
from typing import Any

from hyperdht import HyperDHT

_out_lock = threading.Lock()  # never held across a greenlet switch (write does not yield)


def say(line: str) -> None:
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def addr_json(addr: Any) -> list[Any]:
    return [addr[0], int(addr[1])]


def addr_arg(value: Any, what: str) -> tuple[str, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{what} must be [host, port], got {value!r}")
    return str(value[0]), int(value[1])


def key_arg(value: Any) -> bytes:
    key = bytes.fromhex(str(value))
    if len(key) != 32:
        raise ValueError(f"key must be 32 bytes (64 hex digits), got {value!r}")
    return key


def results_json(stream: Any) -> list[dict[str, Any]]:
    out = []
    for r in stream:
        out.append(
            {
                "node": addr_json(r.node),
                "peers": [addr_json(p) for p in r.peers],
                "local_peers": [addr_json(p) for p in r.local_peers],
            }
        )
    error = getattr(stream, "error", None)
    if error is not None and not out:
        raise error
    return out


class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.backend = args.backend
        if self.backend == "gevent":
            import gevent
            import gevent.queue

            self._spawn = gevent.spawn
            self.inbox: Any = gevent.queue.Queue()
        else:
            self._spawn = self._spawn_thread
            self.inbox = queue.Queue()
        self.dht = HyperDHT(
            bootstrap=args.bootstrap,
            host=args.host,
            port=args.port,
            ephemeral="auto" if args.ephemeral == "auto" else args.ephemeral == "true",
            backend=self.backend,
            timeout=args.timeout,
        )
        self.dht.on_datagram(lambda data, addr: self.inbox.put((bytes(data), addr)))

    @staticmethod
    def _spawn_thread(fn: Any, *args: Any) -> None:
        threading.Thread(target=fn, args=args, daemon=True).start()

    def ready_line(self, timeout: float) -> str:
        ok = self.dht.ready(timeout)
        addr = self.dht.address
        info = {
            "host": addr.host,
            "port": addr.port,
            "id": self.dht.id.hex(),
            "bootstrapped": ok,
            "nodes": len(self.dht.nodes()),
            "backend": self.backend,
        }
        return f"READY {addr.port} {json.dumps(info)}"

    # -- commands ----------------------------------------------------------------

    def cmd_announce(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"results": results_json(self.dht.announce(key_arg(msg["key"])))}

    def cmd_lookup(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"results": results_json(self.dht.lookup(key_arg(msg["key"])))}

    def cmd_ping(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"address": addr_json(self.dht.ping(addr_arg(msg["addr"], "addr")))}

    def cmd_holepunch(self, msg: dict[str, Any]) -> dict[str, Any]:
        peer = addr_arg(msg["peer"], "peer")
        referrer = addr_arg(msg["referrer"], "referrer")
        return {"address": addr_json(self.dht.holepunch(peer, referrer))}

    def cmd_connect(self, msg: dict[str, Any]) -> dict[str, Any]:
        peer = addr_arg(msg["peer"], "peer")
        referrer = msg.get("referrer")
        ref = None if referrer is None else addr_arg(referrer, "referrer")
        ttl = msg.get("opener_ttl")
        timeout = msg.get("timeout")
        t0 = time.monotonic()
        addr = self.dht.connect(
            peer,
            ref,
            opener_ttl=None if ttl is None else int(ttl),
            timeout=None if timeout is None else float(timeout),
        )
        return {"address": addr_json(addr), "seconds": round(time.monotonic() - t0, 4)}

    def cmd_send(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.dht.send_datagram(str(msg["data"]).encode(), addr_arg(msg["addr"], "addr"))
        return {}

    def cmd_opener(self, msg: dict[str, Any]) -> dict[str, Any]:
        addr = addr_arg(msg["addr"], "addr")
        ttl = int(msg["ttl"])
        data = b"\xff\xff\xff" + str(msg.get("data", "opener")).encode()  # a datagram frame
        driver = self.dht.driver
        sock = driver.socket
        with driver.locked():  # no other datagram may go out with this TTL
            previous = sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            try:
                sock.sendto(data, addr)
            finally:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, previous)
        return {}

    def cmd_recv(self, msg: dict[str, Any]) -> dict[str, Any]:
        try:
            data, addr = self.inbox.get(timeout=float(msg.get("wait", 5.0)))
        except queue.Empty:  # gevent.queue.Empty is the same class
            raise TimeoutError("no datagram in time") from None
        return {"data": data.decode("utf-8", "replace"), "from": addr_json(addr)}

    def cmd_stats(self, msg: dict[str, Any]) -> dict[str, Any]:
        s = self.dht.stats
        return {
            "datagrams_in": s.datagrams_in,
            "datagrams_out": s.datagrams_out,
            "timeouts": s.timeouts,
            "forwarded": s.forwarded,
            "drops": dict(s.drops),
            "natted": self.dht.core.natted,
            "opener_ttl": self.dht.core.opener_ttl,
            "reachability": self.dht.reachability,
            "ephemeral": self.dht.ephemeral,
            "probes": dict(s.reachability_probes),
        }

    def handle(self, msg: dict[str, Any]) -> None:
        seq = msg.get("seq")
        cmd = msg.get("cmd")
        try:
            fn = getattr(self, f"cmd_{cmd}", None) if isinstance(cmd, str) else None
            if fn is None:
                raise ValueError(f"unknown command {cmd!r}")
            reply: dict[str, Any] = {"seq": seq, "ok": True, **fn(msg)}
        except Exception as exc:
            name = "Timeout" if type(exc) is TimeoutError else type(exc).__name__
            reply = {"seq": seq, "ok": False, "error": name, "message": str(exc)}
        say(json.dumps(reply))

    def serve(self, lines: Any) -> None:
        for raw in lines:
            line = raw.decode() if isinstance(raw, bytes) else raw
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
                if not isinstance(msg, dict):
                    raise ValueError("a command must be a JSON object")
            except ValueError as exc:
                bad = {"seq": None, "ok": False, "error": "BadCommand", "message": str(exc)}
                say(json.dumps(bad))
                continue
            if msg.get("cmd") == "close":
                self.dht.close()
                say(json.dumps({"seq": msg.get("seq"), "ok": True}))
                return
            self._spawn(self.handle, msg)
        self.dht.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("thread", "gevent"), default="thread")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bootstrap", action="append", default=[])
    ap.add_argument(
        "--ephemeral",
        nargs="?",
        const="true",
        default="auto",
        choices=("auto", "true", "false"),
    )
    ap.add_argument("--timeout", type=float, default=1.0, help="request timeout (s)")
    ap.add_argument("--ready-timeout", type=float, default=10.0)
    args = ap.parse_args()

    agent = Agent(args)
    say(agent.ready_line(args.ready_timeout))
    if args.backend == "gevent":
        from gevent.fileobject import FileObjectPosix

        agent.serve(FileObjectPosix(sys.stdin.fileno(), "rb", close=False))
    else:
        agent.serve(sys.stdin)
    sys.stdout.flush()
    os._exit(0)  # do not wait for command threads still blocked somewhere


if __name__ == "__main__":
    main()
