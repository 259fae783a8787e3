"""Pieces the thread and gevent drivers share: binding, addresses, sending,
and :class:`SocketDriver`, their common base (flush, clock, error counting).

Nothing here owns a thread or a greenlet; each driver module keeps its own
receiver, timer, lock and way of waking the timer.
"""

from __future__ import annotations

import abc
import errno
import logging
import socket as _socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..datagram import Datagram
from ..ipencoding import Address
from .base import Driver, Endpoint

__all__ = [
    "RECV_BATCH",
    "RECV_BUFSIZE",
    "SEND_ERRORS",
    "SocketDriver",
    "bind_udp",
    "send_datagrams",
    "send_with_ttl",
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


def send_datagrams(sock: Any, datagrams: Iterable[Datagram]) -> int:
    """Send each ``(data, addr, options)`` on ``sock``; return how many
    sends failed.

    ``options.ttl`` sets the IP TTL (IPv6: unicast hop limit) for that one
    datagram and restores the socket's previous value right after. A
    failure is logged at debug and skipped, never raised: UDP is lossy
    anyway and one bad destination must not stop the others.
    """
    errors = 0
    sendto = sock.sendto
    for data, addr, options in datagrams:
        try:
            if options is None or options.ttl is None:
                sendto(data, addr)
            else:
                send_with_ttl(sock, data, addr, options.ttl)
        except SEND_ERRORS as exc:
            errors += 1
            log.debug("sendto %r (%d bytes) failed: %s", addr, len(data), exc)
    return errors


def _ttl_option(sock: Any) -> tuple[int, int]:
    if getattr(sock, "family", _socket.AF_INET) == _socket.AF_INET6:
        return _socket.IPPROTO_IPV6, _socket.IPV6_UNICAST_HOPS
    return _socket.IPPROTO_IP, _socket.IP_TTL


def send_with_ttl(sock: Any, data: bytes, addr: Any, ttl: int) -> None:
    """``sock.sendto(data, addr)`` with the IP TTL set to ``ttl`` for this
    datagram only. Raises what ``setsockopt``/``sendto`` raise."""
    if not hasattr(sock, "setsockopt"):
        raise OSError(errno.EOPNOTSUPP, f"{type(sock).__name__} cannot set a per-datagram TTL")
    level, option = _ttl_option(sock)
    previous = sock.getsockopt(level, option)
    sock.setsockopt(level, option, ttl)
    try:
        sock.sendto(data, addr)
    finally:
        sock.setsockopt(level, option, previous)


class SocketDriver(Driver):
    """What the thread and gevent drivers share. A subclass sets ``lock``,
    ``_sock``, ``_address``, ``_endpoint``, ``_deadline`` and ``_closing``,
    and says how to wake its timer (:meth:`_wake_timer`)."""

    lock: Any
    _sock: Any
    _address: Address
    _endpoint: Endpoint | None
    _deadline: float | None
    _closing: bool
    send_errors: int
    endpoint_errors: int

    @property
    def address(self) -> Address:
        """The local (host, port) the socket is bound to."""
        return self._address

    @property
    def socket(self) -> Any:
        """The socket the driver reads and sends on (e.g. to set options);
        see the driver's module docstring for caller-supplied sockets."""
        return self._sock

    def now(self) -> float:
        """Seconds on :func:`time.monotonic`."""
        return time.monotonic()

    def flush(self) -> None:
        """Send the endpoint's queued datagrams (failures are counted in
        ``send_errors``, never raised) and wake the timer if the deadline
        moved earlier. A no-op before ``start()`` and after ``close()``."""
        with self.lock:
            endpoint = self._endpoint
            if endpoint is None or self._closing:
                return
            datagrams = endpoint.datagrams_to_send()
            if datagrams:
                self.send_errors += send_datagrams(self._sock, datagrams)
            deadline = endpoint.get_timer()
            old = self._deadline
            self._deadline = deadline
            if deadline is not None and (old is None or deadline < old):
                self._wake_timer()

    @abc.abstractmethod
    def _wake_timer(self) -> None:
        """Make the timer re-read ``_deadline`` now (called with the lock)."""

    def _safe_flush(self) -> None:
        try:
            self.flush()
        except Exception:
            self._endpoint_error("datagrams_to_send/get_timer")

    def _endpoint_error(self, what: str) -> None:
        self.endpoint_errors += 1
        log.exception("endpoint.%s raised (driver on %s)", what, self._address)
