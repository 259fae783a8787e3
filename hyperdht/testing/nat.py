"""NAT emulation: address translation and inbound filtering.

A :class:`NAT` sits between a private LAN of hosts and the simulated public
network. It follows the vocabulary of RFC 4787:

* **mapping** decides which public port an outgoing datagram leaves from.
  ``"endpoint-independent"`` reuses one public port per internal socket for
  every destination (what makes hole punching work); ``"address-dependent"``
  allocates one per destination IP; ``"symmetric"`` (address-and-port
  dependent) one per destination IP and port, so the address a rendezvous
  server observes is useless to anybody else and hole punching fails.
* **filtering** decides which inbound datagrams a mapping lets through.
  ``"full-cone"`` admits anybody; ``"address-restricted"`` only IPs the
  internal socket has sent to through that mapping; ``"port-restricted"``
  only the exact IP and port it has sent to.

With a ``timeout``, a mapping (and each permission of its filter) expires
that many virtual seconds after the last *outbound* datagram that used it;
a later datagram then gets a fresh public port, as on a real NAT. Inbound
traffic does not refresh anything (RFC 4787 allows either; this is the
stricter choice, which shows whether an application sends keep-alives).

With ``keep_unsolicited=True`` the NAT also behaves like Linux conntrack
with MASQUERADE (the ``linux`` profile of the routed netns lab, see
tests/netns/NAT-REPORT.md): an inbound datagram that no mapping admits is
still kept as an *unreplied inbound entry* ``(remote, public port)`` for
:data:`UNREPLIED_TIMEOUT` seconds after the last such datagram, and an
outbound flow whose reply would be that entry's tuple (an internal socket
sending to that remote from that public port) cannot use the port: it gets
a public port of its own for that one destination. That is what makes a
direct datagram that arrives before the peer has sent anything "poison" the
NAT for the hole punch that follows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

from ..errors import ArgumentError, StateError
from ..ipencoding import Address

if TYPE_CHECKING:
    # Annotations only: hosts and the network hold NATs, not the reverse
    # (a run-time import of either here would be a cycle).
    from .host import Host
    from .network import Network

__all__ = [
    "NAT",
    "NATMapping",
    "MappingBehavior",
    "FilteringBehavior",
    "UNREPLIED_TIMEOUT",
]

#: How a :class:`NAT` picks the public port of an outgoing datagram.
MappingBehavior = Literal["endpoint-independent", "address-dependent", "symmetric"]
#: Which inbound datagrams a :class:`NAT` mapping admits.
FilteringBehavior = Literal["full-cone", "address-restricted", "port-restricted"]

_MAPPINGS = ("endpoint-independent", "address-dependent", "symmetric")
_FILTERINGS = ("full-cone", "address-restricted", "port-restricted")

#: Seconds an unreplied inbound entry lives after its last datagram (Linux's
#: ``nf_conntrack_udp_timeout``).
UNREPLIED_TIMEOUT = 30.0

# Public ports a NAT hands out, in order, wrapping around.
_FIRST_PORT = 20000
_LAST_PORT = 65535


class NATMapping(NamedTuple):
    """One live translation of a :class:`NAT`, for inspection."""

    #: The internal socket (private IP and port).
    internal: Address
    #: Where the NAT makes it appear on the public network.
    public: Address
    #: The destination the mapping is bound to: None for endpoint-independent
    #: mapping, its IP for address-dependent, ``(ip, port)`` for symmetric
    #: and for a flow remapped around an unreplied inbound entry.
    remote: str | tuple[str, int] | None
    #: Virtual time of the last outbound datagram through it.
    last_used: float


class _Mapping:
    __slots__ = ("flow", "internal", "key", "last_used", "permits", "public", "remote")

    def __init__(
        self,
        key: object,
        internal: Address,
        public: Address,
        remote: str | tuple[str, int] | None,
        now: float,
    ) -> None:
        self.key = key
        self.internal = internal
        self.public = public
        self.remote = remote
        self.last_used = now
        # remote IP, or (IP, port), -> virtual time it was last sent to.
        self.permits: dict[object, float] = {}
        #: A flow remapped around an unreplied inbound entry: it admits its
        #: one destination, whatever the filtering.
        self.flow = False


class NAT:
    """A NAT device: create it with :meth:`Network.nat`, then put hosts
    behind it with ``network.host(ip, nat=nat)``.

    The hosts behind one NAT form a LAN: they reach each other directly by
    their private IPs, and everybody else only through the NAT's public IP.
    """

    __slots__ = (
        "_by_port",
        "_filtering",
        "_full_cone",
        "_hairpin",
        "_hops",
        "_keep_unsolicited",
        "_lan",
        "_mapping",
        "_mappings",
        "_network",
        "_next_port",
        "_port_restricted",
        "_public_ip",
        "_timeout",
        "_unsolicited",
    )

    def __init__(
        self,
        network: Network,
        public_ip: str,
        *,
        mapping: MappingBehavior = "endpoint-independent",
        filtering: FilteringBehavior = "port-restricted",
        timeout: float | None = None,
        hairpin: bool = False,
        keep_unsolicited: bool = False,
        hops: int = 0,
    ) -> None:
        """Use :meth:`Network.nat` rather than calling this directly.

        Raises ArgumentError (a ValueError) for an unknown ``mapping`` or
        ``filtering``, a ``timeout`` that is not positive or a negative
        ``hops``.
        """
        if mapping not in _MAPPINGS:
            raise ArgumentError(f"mapping: expected one of {_MAPPINGS}, got {mapping!r}")
        if filtering not in _FILTERINGS:
            raise ArgumentError(f"filtering: expected one of {_FILTERINGS}, got {filtering!r}")
        if timeout is not None and not timeout > 0:
            raise ArgumentError(f"timeout: must be positive or None, got {timeout!r}")
        if not isinstance(hops, int) or isinstance(hops, bool) or hops < 0:
            raise ArgumentError(f"hops: must be an integer >= 0, got {hops!r}")
        self._keep_unsolicited = bool(keep_unsolicited)
        self._hops = hops
        # (remote, public port) -> virtual time of its last unreplied datagram.
        self._unsolicited: dict[tuple[tuple[str, int], int], float] = {}
        self._network = network
        self._public_ip = public_ip
        self._mapping: MappingBehavior = mapping
        self._filtering: FilteringBehavior = filtering
        self._timeout = timeout
        self._hairpin = hairpin
        self._lan: dict[str, Host] = {}
        self._mappings: dict[object, _Mapping] = {}
        self._by_port: dict[int, _Mapping] = {}
        self._next_port = _FIRST_PORT
        self._port_restricted = filtering == "port-restricted"
        self._full_cone = filtering == "full-cone"

    @property
    def network(self) -> Network:
        """The network this NAT is attached to."""
        return self._network

    @property
    def public_ip(self) -> str:
        """The NAT's address on the public network."""
        return self._public_ip

    @property
    def mapping(self) -> MappingBehavior:
        """The mapping behaviour (see the module docstring)."""
        return self._mapping

    @property
    def filtering(self) -> FilteringBehavior:
        """The filtering behaviour (see the module docstring)."""
        return self._filtering

    @property
    def timeout(self) -> float | None:
        """Idle seconds after which a mapping expires (None: never)."""
        return self._timeout

    @property
    def hairpin(self) -> bool:
        """Whether a host behind the NAT can reach the NAT's own public
        address (and so a neighbour through its public mapping)."""
        return self._hairpin

    @property
    def keep_unsolicited(self) -> bool:
        """Whether unsolicited inbound datagrams leave an unreplied entry
        that makes a clashing outbound flow change port (Linux conntrack;
        see the module docstring)."""
        return self._keep_unsolicited

    @property
    def hops(self) -> int:
        """Routers between this NAT's public side and the network's core
        (see :class:`Network`); they count against a datagram's TTL."""
        return self._hops

    def unreplied(self) -> list[tuple[tuple[str, int], int]]:
        """The live unreplied inbound entries, as ``(remote, public port)``
        (always empty unless :attr:`keep_unsolicited`)."""
        now = self._network.now
        return [k for k, t in self._unsolicited.items() if now - t <= UNREPLIED_TIMEOUT]

    @property
    def hosts(self) -> list[Host]:
        """The hosts behind this NAT, in creation order."""
        return list(self._lan.values())

    def mappings(self) -> list[NATMapping]:
        """The live (unexpired) translations, oldest public port first."""
        now = self._network.now
        timeout = self._timeout
        return [
            NATMapping(m.internal, m.public, m.remote, m.last_used)
            for m in sorted(self._mappings.values(), key=lambda m: m.public.port)
            if timeout is None or now - m.last_used <= timeout
        ]

    def __repr__(self) -> str:
        return (
            f"<NAT {self._public_ip} mapping={self._mapping} filtering={self._filtering}"
            f" hosts={len(self._lan)} mappings={len(self._mappings)}>"
        )

    # -- used by Network, on the hot path ------------------------------------

    def host_at(self, ip: str) -> Host | None:
        """The host with private address ``ip`` on this NAT's LAN, or None."""
        return self._lan.get(ip)

    def attach(self, host: Host) -> None:
        """Put ``host`` on this NAT's LAN (:meth:`Network.host` does it).
        Raises ArgumentError when its IP is taken there."""
        if host.ip in self._lan or host.ip == self._public_ip:
            raise ArgumentError(f"ip: {host.ip} is already in use")
        self._lan[host.ip] = host

    def egress(
        self, internal: Address, dst: tuple[str, int], now: float
    ) -> tuple[NAT | None, Address] | None:
        """Where a datagram from the LAN socket ``internal`` to ``dst``
        goes: ``(self, internal)`` when ``dst`` is on the LAN (no
        translation), ``(None, public source)`` to the public network
        (creating or refreshing a mapping), or None when it has no route
        (sent to the NAT's own address without hairpinning)."""
        ip = dst[0]
        if ip in self._lan:
            return self, internal
        if ip == self._public_ip and not self._hairpin:
            return None
        return None, self._outbound(internal, dst, now)

    def ingress(self, src: tuple[str, int], port: int, now: float) -> tuple[Host, Address] | None:
        """The LAN host and internal address a datagram from ``src`` to the
        public ``port`` goes to, or None if the NAT filters it out."""
        internal = self._inbound(src, port, now)
        if internal is None:
            return None
        return self._lan[internal[0]], internal

    def _outbound(self, internal: Address, dst: tuple[str, int], now: float) -> Address:
        """Translate a datagram from ``internal`` to ``dst``: the public
        source address it leaves with (creating or refreshing a mapping)."""
        if self._keep_unsolicited:
            flow = self._mappings.get(("flow", internal, (dst[0], dst[1])))
            if flow is not None:
                if self._timeout is None or now - flow.last_used <= self._timeout:
                    flow.last_used = now
                    flow.permits[(dst[0], dst[1])] = now
                    return flow.public
                self._expire(flow)
        mode = self._mapping
        remote: str | tuple[str, int] | None
        if mode == "endpoint-independent":
            key: object = internal
            remote = None
        elif mode == "symmetric":
            remote = (dst[0], dst[1])
            key = (internal, remote)
        else:
            remote = dst[0]
            key = (internal, remote)
        m = self._mappings.get(key)
        timeout = self._timeout
        if m is not None and timeout is not None and now - m.last_used > timeout:
            self._expire(m)
            m = None
        if m is None:
            m = _Mapping(
                key, internal, Address(self._public_ip, self._allocate_port()), remote, now
            )
            self._mappings[key] = m
            self._by_port[m.public.port] = m
        if self._keep_unsolicited and self._clashes(m, dst, now):
            return self._remap(internal, dst, now)
        m.last_used = now
        if self._port_restricted:
            m.permits[(dst[0], dst[1])] = now
        elif not self._full_cone:
            m.permits[dst[0]] = now
        return m.public

    def _clashes(self, m: _Mapping, dst: tuple[str, int], now: float) -> bool:
        """Whether a flow to ``dst`` through ``m`` would take the tuple of
        an unreplied inbound entry (no flow to ``dst`` exists on ``m`` yet,
        or the inbound datagram would have been admitted)."""
        key = ((dst[0], dst[1]), m.public.port)
        seen = self._unsolicited.get(key)
        if seen is None:
            return False
        if now - seen > UNREPLIED_TIMEOUT:
            del self._unsolicited[key]
            return False
        return (dst[0], dst[1]) not in m.permits

    def _remap(self, internal: Address, dst: tuple[str, int], now: float) -> Address:
        """A mapping of its own, on another public port, for the flow from
        ``internal`` to ``dst`` (Linux picks another source port when the
        tuple is in use)."""
        remote = (dst[0], dst[1])
        key = ("flow", internal, remote)
        m = _Mapping(key, internal, Address(self._public_ip, self._allocate_port()), remote, now)
        m.permits[remote] = now
        m.flow = True
        self._mappings[key] = m
        self._by_port[m.public.port] = m
        return m.public

    def _inbound(self, src: tuple[str, int], port: int, now: float) -> Address | None:
        """The internal address a datagram from ``src`` to the public
        ``port`` goes to, or None if the NAT filters it out."""
        internal = self._admit(src, port, now)
        if internal is None and self._keep_unsolicited:
            self._unsolicited[((src[0], src[1]), port)] = now
        return internal

    def _admit(self, src: tuple[str, int], port: int, now: float) -> Address | None:
        m = self._by_port.get(port)
        if m is None:
            return None
        timeout = self._timeout
        if timeout is not None and now - m.last_used > timeout:
            self._expire(m)
            return None
        if self._full_cone and not m.flow:
            return m.internal
        if m.flow:
            sent = m.permits.get((src[0], src[1]))
        else:
            sent = m.permits.get((src[0], src[1]) if self._port_restricted else src[0])
        if sent is None or (timeout is not None and now - sent > timeout):
            return None
        return m.internal

    def _expire(self, m: _Mapping) -> None:
        del self._mappings[m.key]
        del self._by_port[m.public.port]

    def _allocate_port(self) -> int:
        by_port = self._by_port
        port = self._next_port
        for _ in range(_LAST_PORT - _FIRST_PORT + 1):
            if port not in by_port:
                self._next_port = port + 1 if port < _LAST_PORT else _FIRST_PORT
                return port
            port = port + 1 if port < _LAST_PORT else _FIRST_PORT
        raise StateError(f"NAT {self._public_ip}: every public port is mapped")
