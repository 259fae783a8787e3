"""Compact binary encodings of peer addresses and DHT nodes.

Follows mafintosh's ``ipv4-peers`` (the encoding dht-rpc and hyperdht put on
the wire) and the Go port's ``ipencoding`` package (which adds an IPv6
variant):

* a *peer* is an IP address followed by a big-endian 16-bit port: 6 bytes for
  IPv4 (4 + 2), 18 bytes for IPv6 (16 + 2);
* a *node* is an id (32 bytes in the DHT) followed by a peer: 38 bytes for
  IPv4, 50 for IPv6;
* a list is the plain concatenation of its entries, with no count or framing.

The codecs are strict where the reference is lenient: a buffer whose length
is not a whole number of entries, or any entry with port 0, raises
:class:`~hyperdht.errors.DecodeError` instead of being truncated or half
decoded. Encoding refuses anything that cannot be represented exactly (a host
of the wrong family, a port outside 1-65535, an id of the wrong length) with a
:class:`ValueError` naming the offending value.

The IPv4 codecs only accept dotted-quad IPv4 text (``"127.0.0.1"``; no
``"127.1"``, leading zeros or hex). The IPv6 codecs accept any IPv6 text that
:func:`socket.inet_pton` does, including the IPv4-mapped form
``"::ffff:1.2.3.4"`` (what a dual-stack socket reports for an IPv4 sender),
but not bare dotted IPv4, so that mixing up the two families is an error
rather than a silent conversion; scoped addresses (``"fe80::1%eth0"``) are
rejected because the scope cannot be encoded. Decoded IPv6 hosts are in the
compressed form :func:`socket.inet_ntop` gives.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from .errors import ArgumentError, DecodeError

__all__ = [
    "Address",
    "Node",
    "PeerCodec",
    "NodeCodec",
    "IPV4_PEER",
    "IPV6_PEER",
    "IPV4_NODE",
    "IPV6_NODE",
    "peer_codec",
    "node_codec",
    "BytesLike",
    "ID_LENGTH",
    "pack_ipv4",
]

BytesLike = bytes | bytearray | memoryview
"""What the decoders accept: any contiguous byte buffer."""

#: Bytes in a DHT node id, a query target and a peer-discovery key.
ID_LENGTH = 32

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop
_inet_ntoa = socket.inet_ntoa


class Address(NamedTuple):
    """A UDP endpoint: ``(host, port)``, accepted as is by :meth:`socket.socket.sendto`."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Node:
    """A DHT node: its id and the address it can be reached at."""

    id: bytes
    address: Address

    @property
    def host(self) -> str:
        """The node's host, ``address.host``."""
        return self.address.host

    @property
    def port(self) -> int:
        """The node's port, ``address.port``."""
        return self.address.port


def _family_name(ipv6: bool) -> str:
    return "IPv6" if ipv6 else "IPv4"


def _pack_address(addr: tuple[str, int], ipv6: bool) -> bytes:
    """Encode one ``(host, port)``; raise ValueError naming what is wrong."""
    try:
        host, port = addr
    except (TypeError, ValueError):
        raise ArgumentError(f"address must be a (host, port) pair, got {addr!r}") from None
    if type(port) is not int or not 0 < port < 65536:
        # bool is an int subclass; type() rather than isinstance() keeps it out.
        raise ArgumentError(f"port must be an int in 1-65535, got {port!r}")
    if not isinstance(host, str):
        raise ArgumentError(f"host must be a str, got {host!r}")
    try:
        packed = _inet_pton(_AF_INET6 if ipv6 else _AF_INET, host)
    except (OSError, ValueError):
        hint = ""
        if ipv6 and _is_ipv4(host):
            mapped = "::ffff:" + host
            hint = f" (the IPv6 codec takes IPv4 in mapped form: {mapped!r})"
        raise ArgumentError(f"not an {_family_name(ipv6)} address: {host!r}{hint}") from None
    return packed + port.to_bytes(2, "big")


def pack_ipv4(host: str) -> bytes | None:
    """The 4 bytes of a dotted-quad IPv4 ``host``, or None when it is not
    one (strict: exactly four decimal parts, as :func:`socket.inet_pton`)."""
    try:
        return _inet_pton(_AF_INET, host)
    except (OSError, ValueError, TypeError):
        return None


def _is_ipv4(host: str) -> bool:
    try:
        _inet_pton(_AF_INET, host)
    except (OSError, ValueError):
        return False
    return True


def _length_error(what: str, length: int, size: int, ipv6: bool) -> DecodeError:
    return DecodeError(
        f"{_family_name(ipv6)} {what} buffer of {length} bytes is not a whole number "
        f"of {size}-byte entries"
    )


def _port_zero_error(what: str, index: int) -> DecodeError:
    return DecodeError(f"{what} entry {index} has port 0")


class PeerCodec:
    """Encodes addresses as IP + big-endian port: 6 bytes (IPv4) or 18 (IPv6)."""

    __slots__ = ("_iter_unpack", "_unpack", "ipv6", "size")

    ipv6: bool
    """Whether this codec encodes IPv6 (else IPv4) addresses."""
    size: int
    """Bytes per encoded address."""

    def __init__(self, ipv6: bool = False) -> None:
        """Make a codec for IPv6 peers if *ipv6*, else for IPv4 peers."""
        self.ipv6 = bool(ipv6)
        ip_len = 16 if self.ipv6 else 4
        self.size = ip_len + 2
        fmt = struct.Struct(f">{ip_len}sH")
        self._unpack = fmt.unpack
        self._iter_unpack = fmt.iter_unpack

    def __repr__(self) -> str:
        return f"PeerCodec(ipv6={self.ipv6})"

    def encode(self, addr: tuple[str, int]) -> bytes:
        """Encode one ``(host, port)``.

        Raises ValueError if the host is not an address of this codec's family
        or the port is not an int in 1-65535.
        """
        return _pack_address(addr, self.ipv6)

    def decode(self, buf: BytesLike) -> Address:
        """Decode a buffer holding exactly one address.

        Raises DecodeError if the buffer is not exactly :attr:`size` bytes or
        the port is 0.
        """
        if len(buf) != self.size:
            raise DecodeError(
                f"{_family_name(self.ipv6)} peer must be {self.size} bytes, got {len(buf)}"
            )
        ip, port = self._unpack(buf)
        if port == 0:
            raise _port_zero_error("peer", 0)
        return Address(_inet_ntop(_AF_INET6, ip) if self.ipv6 else _inet_ntoa(ip), port)

    def encode_list(self, addrs: Iterable[tuple[str, int]]) -> bytes:
        """Encode addresses back to back; raises ValueError like :meth:`encode`."""
        ipv6 = self.ipv6
        return b"".join([_pack_address(addr, ipv6) for addr in addrs])

    def decode_list(self, buf: BytesLike) -> list[Address]:
        """Decode a concatenation of addresses (an empty buffer is an empty list).

        Raises DecodeError if the length is not a multiple of :attr:`size` or
        any entry has port 0.
        """
        if len(buf) % self.size:
            raise _length_error("peer list", len(buf), self.size, self.ipv6)
        if self.ipv6:
            out = [Address(_inet_ntop(_AF_INET6, ip), port) for ip, port in self._iter_unpack(buf)]
        else:
            out = [Address(_inet_ntoa(ip), port) for ip, port in self._iter_unpack(buf)]
        for i, addr in enumerate(out):
            if not addr[1]:
                raise _port_zero_error("peer", i)
        return out


class NodeCodec:
    """Encodes nodes as id + peer: ``id_length + 6`` bytes (IPv4) or ``+ 18`` (IPv6)."""

    __slots__ = ("_iter_unpack", "_unpack", "id_length", "ipv6", "size")

    ipv6: bool
    """Whether node addresses are IPv6 (else IPv4)."""
    id_length: int
    """Bytes per node id."""
    size: int
    """Bytes per encoded node."""

    def __init__(self, id_length: int = ID_LENGTH, ipv6: bool = False) -> None:
        """Make a codec for nodes with *id_length*-byte ids and IPv6 or IPv4 addresses.

        Raises ValueError if *id_length* is not a positive int.
        """
        if type(id_length) is not int or id_length < 1:
            raise ArgumentError(f"id_length must be a positive int, got {id_length!r}")
        self.ipv6 = bool(ipv6)
        self.id_length = id_length
        ip_len = 16 if self.ipv6 else 4
        self.size = id_length + ip_len + 2
        fmt = struct.Struct(f">{id_length}s{ip_len}sH")
        self._unpack = fmt.unpack
        self._iter_unpack = fmt.iter_unpack

    def __repr__(self) -> str:
        return f"NodeCodec(id_length={self.id_length}, ipv6={self.ipv6})"

    def encode(self, node: Node) -> bytes:
        """Encode one node.

        Raises ValueError if the id is not bytes of :attr:`id_length`, or the
        address cannot be encoded (see :meth:`PeerCodec.encode`).
        """
        node_id = node.id
        if not isinstance(node_id, (bytes, bytearray)):
            raise ArgumentError(f"node id must be bytes, got {type(node_id).__name__}")
        if len(node_id) != self.id_length:
            raise ArgumentError(
                f"node id must be {self.id_length} bytes, got {len(node_id)}: "
                f"{bytes(node_id).hex()}"
            )
        return bytes(node_id) + _pack_address(node.address, self.ipv6)

    def decode(self, buf: BytesLike) -> Node:
        """Decode a buffer holding exactly one node.

        Raises DecodeError if the buffer is not exactly :attr:`size` bytes or
        the port is 0.
        """
        if len(buf) != self.size:
            raise DecodeError(
                f"{_family_name(self.ipv6)} node must be {self.size} bytes, got {len(buf)}"
            )
        node_id, ip, port = self._unpack(buf)
        if port == 0:
            raise _port_zero_error("node", 0)
        host = _inet_ntop(_AF_INET6, ip) if self.ipv6 else _inet_ntoa(ip)
        return Node(node_id, Address(host, port))

    def encode_list(self, nodes: Iterable[Node]) -> bytes:
        """Encode nodes back to back; raises ValueError like :meth:`encode`."""
        encode = self.encode
        return b"".join([encode(node) for node in nodes])

    def decode_list(self, buf: BytesLike) -> list[Node]:
        """Decode a concatenation of nodes (an empty buffer is an empty list).

        Raises DecodeError if the length is not a multiple of :attr:`size` or
        any entry has port 0.
        """
        if len(buf) % self.size:
            raise _length_error("node list", len(buf), self.size, self.ipv6)
        entries = list(self._iter_unpack(buf))
        for i, entry in enumerate(entries):
            if not entry[2]:
                raise _port_zero_error("node", i)
        if self.ipv6:
            return [Node(i, Address(_inet_ntop(_AF_INET6, ip), p)) for i, ip, p in entries]
        return [Node(i, Address(_inet_ntoa(ip), p)) for i, ip, p in entries]

    def decode_raw(self, buf: BytesLike) -> list[tuple[bytes, bytes, int]]:
        """Like :meth:`decode_list` (same checks, same errors) but returns
        ``(id, packed_ip, port)`` tuples, leaving the text form of the host
        to :meth:`host`: for callers that drop most entries unseen (a query
        keeps only the closest of every 20 nodes it is told of)."""
        if len(buf) % self.size:
            raise _length_error("node list", len(buf), self.size, self.ipv6)
        entries = list(self._iter_unpack(buf))
        for i, entry in enumerate(entries):
            if not entry[2]:
                raise _port_zero_error("node", i)
        return entries

    def host(self, packed_ip: bytes) -> str:
        """The text form of a packed address from :meth:`decode_raw`."""
        return _inet_ntop(_AF_INET6, packed_ip) if self.ipv6 else _inet_ntoa(packed_ip)


IPV4_PEER = PeerCodec(ipv6=False)
"""The 6-byte IPv4 peer codec (what dht-rpc and hyperdht use on the wire)."""
IPV6_PEER = PeerCodec(ipv6=True)
"""The 18-byte IPv6 peer codec."""
IPV4_NODE = NodeCodec(ID_LENGTH, ipv6=False)
"""The 38-byte IPv4 node codec, 32-byte ids (the ``nodes`` field of dht-rpc)."""
IPV6_NODE = NodeCodec(ID_LENGTH, ipv6=True)
"""The 50-byte IPv6 node codec, 32-byte ids."""


def peer_codec(ipv6: bool) -> PeerCodec:
    """Return the shared peer codec for IPv6 if *ipv6*, else for IPv4."""
    return IPV6_PEER if ipv6 else IPV4_PEER


def node_codec(ipv6: bool, id_length: int = ID_LENGTH) -> NodeCodec:
    """Return a node codec for the family and id length (shared when ``id_length`` is 32).

    Raises ValueError if *id_length* is not a positive int.
    """
    if id_length == ID_LENGTH and type(id_length) is int:
        return IPV6_NODE if ipv6 else IPV4_NODE
    return NodeCodec(id_length, ipv6=ipv6)
