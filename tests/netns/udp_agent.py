"""A scriptable UDP endpoint, run inside a lab namespace by :class:`lab.UdpAgent`.

Binds ``0.0.0.0:PORT`` and prints ``READY <port>``.  Then:

* every datagram received is printed as ``RECV <ip> <port> <payload>``; with
  ``--echo`` it is also answered with ``ECHO <ip> <port> <payload>`` (what the
  agent saw as the sender's address);
* stdin commands: ``send <ip> <port> <payload>`` (prints ``SENT ...`` once
  sendto() returned, or ``ERR ...``), ``quit``.  EOF on stdin also quits.

Standalone (stdlib only), so it runs under any interpreter in any namespace.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading

_lock = threading.Lock()


def say(line: str) -> None:
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def receiver(sock: socket.socket, echo: bool) -> None:
    while True:
        try:
            data, (ip, port) = sock.recvfrom(65535)
        except OSError:
            # e.g. ICMP errors surfacing as ECONNREFUSED: keep listening.
            continue
        payload = data.decode("utf-8", "replace")
        say(f"RECV {ip} {port} {payload}")
        if echo and not payload.startswith("ECHO"):
            try:
                sock.sendto(f"ECHO {ip} {port} {payload}".encode(), (ip, port))
            except OSError as exc:
                say(f"ERR echo {exc}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--echo", action="store_true")
    args = ap.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", args.port))
    threading.Thread(target=receiver, args=(sock, args.echo), daemon=True).start()
    say(f"READY {sock.getsockname()[1]}")
    for line in sys.stdin:
        parts = line.split(maxsplit=3)
        if not parts:
            continue
        if parts[0] == "quit":
            break
        if parts[0] == "send" and len(parts) == 4:
            ip, port, payload = parts[1], int(parts[2]), parts[3].strip()
            try:
                sock.sendto(payload.encode(), (ip, port))
            except OSError as exc:
                say(f"ERR send {ip} {port} {exc}")
            else:
                say(f"SENT {ip} {port} {payload}")
        else:
            say(f"ERR bad command {line.strip()!r}")
    os._exit(0)


if __name__ == "__main__":
    main()
