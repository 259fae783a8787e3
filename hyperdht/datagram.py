"""What a sans-I/O core hands to its driver: outgoing datagrams.

Every core's ``datagrams_to_send()`` returns a list of :data:`Datagram`
triples ``(data, address, options)``. ``options`` is None for an ordinary
datagram (the socket's defaults apply), or a :class:`SendOptions` that the
driver applies to that one datagram only, e.g. a low IP TTL for a NAT
opener that must expire before it reaches the far side's router.

This module sits below both the cores and the drivers, so neither imports
the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ipencoding import Address

__all__ = ["Datagram", "SendOptions"]


@dataclass(frozen=True, slots=True)
class SendOptions:
    """Per-datagram send options.

    ``ttl``: the IP time-to-live (IPv6: hop limit) of this datagram, 1-255;
    None keeps the socket's default.
    """

    ttl: int | None = None

    def __post_init__(self) -> None:
        ttl = self.ttl
        if ttl is not None and (
            not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= 255
        ):
            from .errors import ArgumentError

            raise ArgumentError(f"ttl must be an integer 1-255, got {ttl!r}")


#: ``(data, address, options)``: one datagram a core wants sent.
Datagram = tuple[bytes, Address, "SendOptions | None"]
