"""Parsing the addresses users type: ``"host:port"``, ``"[::1]:port"``,
``"host"`` (default port) or ``(host, port)`` tuples."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from .errors import ArgumentError
from .ipencoding import Address

__all__ = ["DEFAULT_PORT", "parse_address", "resolve_address"]

#: The port a bootstrap address without one gets (hyperdht's CLI convention).
DEFAULT_PORT = 49737


def _port(value: Any, what: str, text: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ArgumentError(f"{what}: bad port in {text!r}") from None
    if isinstance(value, bool) or not 0 < port < 65536:
        raise ArgumentError(f"{what}: port must be 1-65535 in {text!r}")
    return port


def parse_address(value: Any, *, what: str = "address", default_port: int | None = None) -> Address:
    """Parse ``value`` into an :class:`Address` without resolving names.

    ``default_port`` is used for a bare host; without it a port is required.
    Raises ValueError naming ``what`` and the bad value.
    """
    if isinstance(value, tuple) and len(value) >= 2:
        host, port = value[0], value[1]
        if not isinstance(host, str) or not host:
            raise ArgumentError(f"{what}: bad host in {value!r}")
        return Address(host, _port(port, what, value))
    if not isinstance(value, str) or not value.strip():
        raise ArgumentError(f"{what}: expected 'host:port' or (host, port), got {value!r}")
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ArgumentError(f"{what}: unclosed '[' in {value!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ArgumentError(f"{what}: bad address {value!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        host, port_text = text, None  # a bare IPv6 address
    else:
        host, port_text = text, None
    if not host:
        raise ArgumentError(f"{what}: missing host in {value!r}")
    if port_text is None or port_text == "":
        if default_port is None:
            raise ArgumentError(f"{what}: missing port in {value!r}")
        return Address(host, default_port)
    return Address(host, _port(port_text, what, value))


def resolve_address(addr: Address, *, ipv6: bool = False, what: str = "address") -> Address:
    """Turn a host name into an IP address of the right family (responses
    are matched by address, so we must send to the IP we expect answers
    from). IP literals pass through; raises ValueError when it fails."""
    host = addr.host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if ipv6 and ip.version == 4:
            raise ArgumentError(f"{what}: {host} is IPv4 but this node is IPv6")
        if not ipv6 and ip.version == 6:
            raise ArgumentError(f"{what}: {host} is IPv6 but this node is IPv4 (use ipv6=True)")
        return Address(str(ip), addr.port)
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, addr.port, family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise ArgumentError(f"{what}: cannot resolve {host!r}: {exc}") from None
    return Address(str(infos[0][4][0]), addr.port)
