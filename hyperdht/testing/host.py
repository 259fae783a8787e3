"""A machine on the simulated network: an IP address and its bound ports.

A :class:`Host` is a :class:`hyperdht.drivers.base.Backend`: pass it as
``backend=`` and every socket the library opens is a
:class:`~hyperdht.testing.driver.SimDriver` bound on it.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..errors import ArgumentError, BindError
from ..ipencoding import Address
from .driver import SimDriver

if TYPE_CHECKING:
    # Annotations only: the Network creates hosts (a run-time import of it
    # here would be a cycle); a NAT is only passed in.
    from ..drivers.base import SocketLike
    from .nat import NAT
    from .network import Network

__all__ = ["Host"]

_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
# Ephemeral ports, as Linux and the IANA suggest.
_EPHEMERAL_FIRST = 49152
_EPHEMERAL_LAST = 65535


class Host:
    """A machine with one IP address, public or behind a :class:`NAT`.

    Create it with :meth:`Network.host`.
    """

    __slots__ = ("_hops", "_ip", "_nat", "_network", "_next_port", "_ports")

    def __init__(self, network: Network, ip: str, nat: NAT | None, hops: int = 0) -> None:
        """Use :meth:`Network.host` rather than calling this directly.
        Raises ArgumentError for a negative ``hops``."""
        if not isinstance(hops, int) or isinstance(hops, bool) or hops < 0:
            raise ArgumentError(f"hops: must be an integer >= 0, got {hops!r}")
        self._hops = hops
        self._network = network
        self._ip = ip
        self._nat = nat
        self._ports: dict[int, SimDriver] = {}
        self._next_port = _EPHEMERAL_FIRST

    @property
    def network(self) -> Network:
        """The network this host is on."""
        return self._network

    @property
    def ip(self) -> str:
        """The host's own IP (a private one when it is behind a NAT)."""
        return self._ip

    @property
    def hops(self) -> int:
        """Routers between this host and its NAT (behind one) or the
        network's core (public); they count against a datagram's TTL."""
        return self._hops

    @property
    def nat(self) -> NAT | None:
        """The NAT in front of this host, or None for a public host."""
        return self._nat

    @property
    def ports(self) -> list[int]:
        """The ports currently bound, in ascending order."""
        return sorted(self._ports)

    def create_driver(
        self,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        ipv6: bool = False,
        socket: SocketLike | None = None,
    ) -> SimDriver:
        """Bind a simulated UDP socket on this host (the Backend method).

        ``host`` is the bind address: a wildcard (``""``, ``"0.0.0.0"``,
        ``"::"``) or this host's IP. ``port`` 0 picks a free ephemeral port.
        Raises BindError (an OSError: EADDRINUSE, EADDRNOTAVAIL or
        EAFNOSUPPORT) like a real bind, and ArgumentError (a ValueError) for
        a port out of range or a ``socket`` (the simulator has no real
        sockets).
        """
        if socket is not None:
            raise ArgumentError("socket: the simulated network cannot use a real socket")
        if not 0 <= port <= 65535:
            raise ArgumentError(f"port: must be in 0..65535, got {port!r}")
        if host not in _WILDCARDS and host != self._ip:
            raise BindError(
                errno.EADDRNOTAVAIL, f"cannot bind {host!r} on simulated host {self._ip}"
            )
        if ipv6 != (":" in self._ip):
            family = "IPv6" if ipv6 else "IPv4"
            raise BindError(
                errno.EAFNOSUPPORT, f"simulated host {self._ip} has no {family} address"
            )
        if port == 0:
            port = self._ephemeral_port()
        elif port in self._ports:
            raise BindError(errno.EADDRINUSE, f"{self._ip}:{port} is already bound")
        driver = SimDriver(self, Address(self._ip, port))
        self._ports[port] = driver
        return driver

    def __repr__(self) -> str:
        where = f" behind {self._nat.public_ip}" if self._nat is not None else ""
        return f"<Host {self._ip}{where} ports={len(self._ports)}>"

    def driver_at(self, port: int) -> SimDriver | None:
        """The driver bound on ``port``, or None (where the network
        delivers a datagram)."""
        return self._ports.get(port)

    def unbind(self, driver: SimDriver) -> None:
        """Free the port ``driver`` is bound on (its ``close()`` calls
        this); nothing if another driver holds it by now."""
        port = driver.address[1]
        if self._ports.get(port) is driver:
            del self._ports[port]

    def _ephemeral_port(self) -> int:
        ports = self._ports
        port = self._next_port
        for _ in range(_EPHEMERAL_LAST - _EPHEMERAL_FIRST + 1):
            nxt = port + 1 if port < _EPHEMERAL_LAST else _EPHEMERAL_FIRST
            if port not in ports:
                self._next_port = nxt
                return port
            port = nxt
        raise BindError(errno.EADDRINUSE, f"no free ephemeral port on simulated host {self._ip}")
