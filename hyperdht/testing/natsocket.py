"""An emulated NAT on a real UDP socket: a demo and test fixture.

Not part of the protocol library: ``hyperdht demo``, ``examples/server.py
--nat`` and the tests use it to show and check hole punching on one
machine, where there is no real NAT.

:class:`NATSocket` wraps a bound UDP socket and behaves like a
port-restricted NAT (RFC 4787 "address and port-dependent filtering"): a
datagram is delivered only if it comes from an address the socket has sent
to before; every other one is silently dropped. There is no address
translation (loopback has no public side), only the filtering, which is
what makes hole punching necessary: a stranger's ping never arrives until
the node behind the "NAT" has sent something to the stranger, which is
exactly what a hole punch through a referrer arranges. The filter applies
when a datagram is read, not when it arrives; a driver reads at once, so
that only differs from a real NAT for a socket nobody is reading.

Pass it to a node as ``HyperDHT(socket=NATSocket.bind("127.0.0.1"))``; it
offers what :class:`hyperdht.drivers.base.SocketLike` asks for, plus
``fileno()``, ``setblocking()`` and timeouts, delegated to the wrapped
socket, so either driver can wait on it (the gevent driver waits for
readability and then calls this object's own ``recvfrom``).

The simulator in :mod:`hyperdht.testing` has a complete NAT model
(:class:`~hyperdht.testing.NAT`: mappings, filtering kinds, timeouts); this
module is the small real-socket version.
"""

from __future__ import annotations

import logging
import socket as _socket
from typing import Any

from ..drivers import BACKENDS
from ..errors import ArgumentError

__all__ = ["NATSocket", "nat_socket"]

log = logging.getLogger(__name__)


def _key(address: Any) -> tuple[str, int]:
    # recvfrom gives 2-tuples (IPv4) or 4-tuples (IPv6); sendto may get an
    # Address, a tuple or a 4-tuple: compare on (host, port) only.
    return (str(address[0]), int(address[1]))


class _FilteringSocket:
    """The filter itself; see the module docstring."""

    def __init__(self, sock: Any) -> None:
        self._inner = sock
        self._sent_to: set[tuple[str, int]] = set()
        #: Datagrams dropped because they came from an unknown address.
        self.dropped = 0

    @property
    def socket(self) -> Any:
        """The wrapped socket."""
        return self._inner

    def allows(self, address: Any) -> bool:
        """True if datagrams from ``address`` (host, port) get through."""
        return _key(address) in self._sent_to

    def sendto(self, data: bytes, address: Any, /) -> int:
        """Send ``data``; from now on ``address`` may send to us."""
        self._sent_to.add(_key(address))
        sent: int = self._inner.sendto(data, address)
        return sent

    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]:
        """Return the next datagram from an allowed address, dropping the
        others. Raises what the wrapped socket raises (BlockingIOError when
        it is non-blocking and nothing allowed is waiting, TimeoutError)."""
        while True:
            data, address = self._inner.recvfrom(bufsize)
            if _key(address) in self._sent_to:
                return data, address
            self.dropped += 1
            log.debug("NAT dropped %d bytes from %s:%s", len(data), address[0], address[1])

    def getsockname(self) -> Any:
        """The wrapped socket's local address."""
        return self._inner.getsockname()

    def settimeout(self, timeout: float | None) -> None:
        """Set the wrapped socket's timeout."""
        self._inner.settimeout(timeout)

    def gettimeout(self) -> float | None:
        """The wrapped socket's timeout."""
        timeout: float | None = self._inner.gettimeout()
        return timeout

    def close(self) -> None:
        """Close the wrapped socket."""
        self._inner.close()

    def __enter__(self) -> _FilteringSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        host, port = self.getsockname()[:2]
        return f"<{type(self).__name__} {host}:{port} allows {len(self._sent_to)}>"


class NATSocket(_FilteringSocket):
    """A UDP socket behind an emulated port-restricted NAT (see the module
    docstring). Wraps a bound stdlib socket; ``fileno()`` and
    ``setblocking()`` are the wrapped socket's, so a driver can select on
    it. Never blocks in non-blocking mode, even when it drops datagrams."""

    @classmethod
    def bind(cls, host: str = "127.0.0.1", port: int = 0) -> NATSocket:
        """A new IPv4 UDP socket bound to ``host:port`` (0: any free port),
        wrapped. Raises OSError when binding fails."""
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        return cls(sock)

    def fileno(self) -> int:
        """The wrapped socket's descriptor."""
        fd: int = self._inner.fileno()
        return fd

    def setblocking(self, flag: bool) -> None:
        """Set the wrapped socket's blocking mode."""
        self._inner.setblocking(flag)


def nat_socket(backend: str, host: str = "127.0.0.1", port: int = 0) -> NATSocket:
    """A bound NAT-emulating socket for ``backend`` (one of
    :data:`hyperdht.drivers.BACKENDS`: the same :class:`NATSocket` serves
    all). Raises ArgumentError (a ValueError) for another backend, OSError
    when binding fails."""
    if backend not in BACKENDS:
        raise ArgumentError(f"backend: must be one of {BACKENDS}, got {backend!r}")
    return NATSocket.bind(host, port)
