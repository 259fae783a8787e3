"""Pieces the thread and gevent drivers share: binding, addresses, sending.

Nothing here owns a thread, a greenlet or a clock; each driver module keeps
its own receiver, timer and lock, and calls these helpers.
"""

from __future__ import annotations

import logging
import socket as _socket
from collections.abc import Callable, Iterable
from typing import Any

from ..ipencoding import Address

__all__ = [
    "RECV_BATCH",
    "RECV_BUFSIZE",
    "SEND_ERRORS",
    "bind_udp",
    "send_datagrams",
    "sockname_address",
]

log = logging.getLogger(__name__)

#: Larger than any UDP payload, so a datagram is never truncated.
RECV_BUFSIZE = 65536
#: Datagrams a receiver handles per lock hold (then it flushes once).
RECV_BATCH = 64

#: What ``sendto`` raises for a destination that cannot be sent to: OSError
#: for the network (EPERM, ENETUNREACH, EMSGSIZE, a full buffer, gaierror),
#: ValueError/OverflowError for an address the socket module rejects (a port
#: out of range, a malformed IDNA host). All are per-datagram drops.
SEND_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, OverflowError)


def sockname_address(sockname: Any) -> Address:
    """Convert what ``getsockname``/``recvfrom`` return (a 2-tuple for IPv4,
    a 4-tuple for IPv6) to an Address."""
    return Address(sockname[0], sockname[1])


def bind_udp(factory: Callable[[int, int], Any], host: str, port: int, ipv6: bool) -> Any:
    """Create a UDP socket with ``factory(family, type)`` and bind it.

    ``factory`` is passed in (``socket.socket`` looked up at call time, or
    ``gevent.socket.socket``) so a monkey-patched program gets its own.

    Raises OSError (same errno) whose message names the address, e.g. when
    the port is in use; the socket is closed first.
    """
    family = _socket.AF_INET6 if ipv6 else _socket.AF_INET
    sock = factory(family, _socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        shown = f"[{host}]:{port}" if ipv6 else f"{host}:{port}"
        raise OSError(exc.errno, f"cannot bind UDP socket to {shown}: {exc.strerror}") from exc
    return sock


def send_datagrams(
    sendto: Callable[[bytes, Any], Any], datagrams: Iterable[tuple[bytes, Any]]
) -> int:
    """Send each ``(data, addr)``; return how many sends failed.

    A failure is logged at debug and skipped, never raised: UDP is lossy
    anyway and one bad destination must not stop the others.
    """
    errors = 0
    for data, addr in datagrams:
        try:
            sendto(data, addr)
        except SEND_ERRORS as exc:
            errors += 1
            log.debug("sendto %r (%d bytes) failed: %s", addr, len(data), exc)
    return errors
