"""A scriptable UDP endpoint, run inside a lab namespace by :class:`lab.UdpAgent`.

Binds ``0.0.0.0:PORT`` and prints ``READY <port>``.  Then:

* every datagram received is printed as ``RECV <ip> <port> <payload>``; with
  ``--echo`` it is also answered with ``ECHO <ip> <port> <payload>`` (what the
  agent saw as the sender's address);
* with ``--icmp``, every ICMP error about a datagram it sent (``IP_RECVERR``:
  time exceeded, port unreachable, ...) is printed as
  ``ICMP <offender-ip> <type> <code> <dst-ip> <dst-port> <payload>``;
* stdin commands: ``send <ip> <port> <payload>`` and ``sendttl <ttl> <ip>
  <port> <payload>`` (the same with that IP TTL for this datagram) print
  ``SENT <ip> <port> <payload>`` once sendto() returned, or ``ERR ...``;
  ``quit``.  EOF on stdin also quits.

Standalone (stdlib only), so it runs under any interpreter in any namespace.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import struct
import sys
import threading

_lock = threading.Lock()
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
SO_EE_ORIGIN_ICMP = 2
#: struct sock_extended_err: errno, origin, type, code, pad, info, data.
_EE = struct.Struct("=IBBBBII")


def say(line: str) -> None:
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def drain_errors(sock: socket.socket) -> None:
    """Print every queued ICMP error (``MSG_ERRQUEUE`` never blocks)."""
    while True:
        try:
            data, ancdata, _flags, dst = sock.recvmsg(65535, 1024, socket.MSG_ERRQUEUE)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return
            raise
        for level, kind, cdata in ancdata:
            if level != socket.IPPROTO_IP or kind != IP_RECVERR or len(cdata) < _EE.size:
                continue
            _errno, origin, icmp_type, code, _pad, _info, _data = _EE.unpack_from(cdata)
            if origin != SO_EE_ORIGIN_ICMP:
                continue
            # SO_EE_OFFENDER: a sockaddr_in right after the struct.
            offender = socket.inet_ntoa(cdata[_EE.size + 4 : _EE.size + 8])
            payload = data.decode("utf-8", "replace")
            say(f"ICMP {offender} {icmp_type} {code} {dst[0]} {dst[1]} {payload}")


def receiver(sock: socket.socket, echo: bool, icmp: bool) -> None:
    while True:
        try:
            data, (ip, port) = sock.recvfrom(65535)
        except OSError:
            # An ICMP error surfaces here once (EHOSTUNREACH, ECONNREFUSED...);
            # with IP_RECVERR its details wait in the error queue.
            if icmp:
                drain_errors(sock)
            continue
        payload = data.decode("utf-8", "replace")
        say(f"RECV {ip} {port} {payload}")
        if echo and not payload.startswith("ECHO"):
            try:
                sock.sendto(f"ECHO {ip} {port} {payload}".encode(), (ip, port))
            except OSError as exc:
                say(f"ERR echo {exc}")


def sendto(sock: socket.socket, data: bytes, addr: tuple[str, int], retry: bool) -> None:
    try:
        sock.sendto(data, addr)
    except OSError:
        # With IP_RECVERR a pending ICMP error fails the next send once, and
        # nothing is sent (the error is consumed): send again.
        if not retry:
            raise
        sock.sendto(data, addr)


def send(
    sock: socket.socket, ip: str, port: int, payload: str, ttl: int | None, icmp: bool
) -> None:
    try:
        if ttl is None:
            sendto(sock, payload.encode(), (ip, port), icmp)
        else:
            previous = sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            try:
                sendto(sock, payload.encode(), (ip, port), icmp)
            finally:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, previous)
    except OSError as exc:
        say(f"ERR send {ip} {port} {exc}")
    else:
        say(f"SENT {ip} {port} {payload}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--echo", action="store_true")
    ap.add_argument("--icmp", action="store_true", help="report ICMP errors (IP_RECVERR)")
    args = ap.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if args.icmp:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    sock.bind(("0.0.0.0", args.port))
    threading.Thread(target=receiver, args=(sock, args.echo, args.icmp), daemon=True).start()
    say(f"READY {sock.getsockname()[1]}")
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        if parts[0] == "send" and len(parts) == 4:
            send(sock, parts[1], int(parts[2]), parts[3], None, args.icmp)
        elif parts[0] == "sendttl" and len(parts) == 5:
            send(sock, parts[2], int(parts[3]), parts[4], int(parts[1]), args.icmp)
        else:
            say(f"ERR bad command {line.strip()!r}")
    os._exit(0)


if __name__ == "__main__":
    main()
