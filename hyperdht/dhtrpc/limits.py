"""What keeps a public node from being turned against others (sans-I/O).

Three defences, all deliberate differences from the reference (which has
none of them; see docs/PROTOCOL-NOTES.md):

* **Third-party sends are bounded** (on by default). A ``_ping`` carrying
  ``forwardRequest`` makes a node send a ping to any address, one carrying
  ``forwardResponse`` makes it send its answer to any address: anyone could
  aim a node's traffic at a victim. :class:`Limits` caps both per source
  host and per target host with token buckets (:class:`RateLimiter`). The
  figures (:data:`FORWARD_RATE` per second, bursts of :data:`FORWARD_BURST`)
  are far above what hole punching needs (one forwarded ping per punch,
  plus a few retries) and far below what makes a node a useful reflector.
* **An optional per-source rate limit** for everything served (off by
  default, as in the reference): ``rate_limit=`` on the node.
* **Routing-table diversity** (on by default): :func:`diversity_group`
  gives the (IP, /24 or /64) of a contact's address, and the table keeps
  at most :data:`MAX_PER_IP` contacts of one IP and :data:`MAX_PER_SUBNET`
  of one subnet in any bucket (after libtorrent's ``restrict_routing_ips``,
  which allows one per IP and one per /24). Addresses that are not global
  (loopback, private, link-local, the 198.18.0.0/15 benchmark range the
  simulator uses, unique-local IPv6) are exempt: many nodes on one
  loopback address, a LAN or a simulated network keep filling their tables.

Everything here takes ``now`` and never reads a clock; memory is bounded
(:data:`MAX_TRACKED` keys per limiter, the least recently used forgotten).
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from ..arguments import check_positive_int, check_positive_rate

__all__ = [
    "FORWARD_BURST",
    "FORWARD_RATE",
    "Limits",
    "MAX_PER_IP",
    "MAX_PER_SUBNET",
    "MAX_TRACKED",
    "RateLimiter",
    "diversity_group",
]

#: Third-party sends per second allowed per source host and per target host.
FORWARD_RATE = 16.0
#: Third-party sends a host may make (or receive) at once before the rate applies.
FORWARD_BURST = 64
#: Keys (hosts) a :class:`RateLimiter` remembers; the least recently seen
#: beyond this are forgotten (an idle bucket is full anyway).
MAX_TRACKED = 4096
#: Contacts of one global IP address allowed in one routing-table bucket.
MAX_PER_IP = 2
#: Contacts of one global /24 (IPv4) or /64 (IPv6) allowed in one bucket.
MAX_PER_SUBNET = 4


class RateLimiter:
    """Token buckets keyed by anything hashable (a host, mostly).

    Each key's bucket holds up to ``burst`` tokens and refills at ``rate``
    tokens per second; :meth:`allow` takes one token if there is one. At
    most ``max_keys`` buckets are kept, least recently used evicted first:
    O(1) per call, bounded memory.
    """

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    rate: float
    """Tokens added per second."""
    burst: float
    """Most tokens a bucket holds (a new key starts full)."""
    max_keys: int
    """Most buckets kept."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = MAX_TRACKED) -> None:
        """Raise ArgumentError unless ``rate`` and ``burst`` are positive
        numbers and ``max_keys`` a positive int."""
        self.rate = check_positive_rate(rate, "rate")
        self.burst = check_positive_rate(burst, "burst")
        self.max_keys = check_positive_int(max_keys, "max_keys")
        # key -> [tokens, time of the last refill]; least recently used first.
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()

    def __len__(self) -> int:
        """The number of keys currently tracked."""
        return len(self._buckets)

    def allow(self, key: Hashable, now: float) -> bool:
        """Take one token from ``key``'s bucket at ``now``: True if there was one."""
        buckets = self._buckets
        b = buckets.get(key)
        if b is None:
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
            buckets[key] = [self.burst - 1.0, now]
            return True
        buckets.move_to_end(key)
        tokens = b[0]
        elapsed = now - b[1]
        if elapsed > 0:
            tokens = min(self.burst, tokens + elapsed * self.rate)
            b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return True
        b[0] = tokens
        return False


@dataclass(frozen=True, slots=True)
class Limits:
    """The figures of a node's third-party limits (``limits=`` on the node).

    A forwarded ping (``forwardRequest``) and an answer sent to an address
    other than the requester's (``forwardResponse``) each take one token
    from the source host's bucket and one from the target host's; a send
    without both is dropped and counted in ``stats.drops`` as
    ``third_party_source`` or ``third_party_target``. ``Limits(enabled=False)``
    turns them off (the reference's behaviour).
    """

    #: Sends per second per source host.
    per_source_rate: float = FORWARD_RATE
    #: Burst per source host.
    per_source_burst: int = FORWARD_BURST
    #: Sends per second per target host.
    per_target_rate: float = FORWARD_RATE
    #: Burst per target host.
    per_target_burst: int = FORWARD_BURST
    #: Hosts remembered per limiter.
    max_tracked: int = MAX_TRACKED
    #: False: no third-party limits at all.
    enabled: bool = True

    def __post_init__(self) -> None:
        """Raise ArgumentError (naming the field) for a non-positive figure."""
        check_positive_rate(self.per_source_rate, "limits.per_source_rate")
        check_positive_rate(self.per_source_burst, "limits.per_source_burst")
        check_positive_rate(self.per_target_rate, "limits.per_target_rate")
        check_positive_rate(self.per_target_burst, "limits.per_target_burst")
        check_positive_int(self.max_tracked, "limits.max_tracked")


#: IPv4 networks that are not global (RFC 6890 and the multicast and
#: reserved blocks), as (network, mask) integers: contacts there are exempt.
_V4_EXEMPT = tuple(
    (int(net.network_address), int(net.netmask))
    for net in map(
        ipaddress.IPv4Network,
        (
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.88.99.0/24",
            "192.168.0.0/16",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "224.0.0.0/3",
        ),
    )
)
_V6_TAG = 1 << 128


@functools.lru_cache(maxsize=MAX_TRACKED)
def diversity_group(host: str) -> tuple[int, int] | None:
    """The (IP, subnet) a contact at ``host`` counts against in a bucket,
    as integers, or None when the address is exempt (not global: loopback,
    private, link-local, CGNAT, 198.18.0.0/15, documentation, multicast,
    unique-local IPv6 ...; or not an IP literal). The subnet is the /24 of
    an IPv4 address and the /64 of an IPv6 one (an IPv4-mapped IPv6
    address counts as IPv4). Results are cached (the last
    :data:`MAX_TRACKED` hosts: a busy node hears from the same hosts again
    and again); a miss costs a few integer operations for IPv4, the
    standard library's ``ipaddress`` for IPv6."""
    if ":" in host:
        return _v6_group(host)
    parts = host.split(".")
    if len(parts) == 4:
        if not all(p.isascii() and p.isdigit() for p in parts):
            return None
        octets = [int(p) for p in parts]
        if max(octets) > 255:
            return None
        n = (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]
        return _v4_group(n)
    return None


def _v4_group(n: int) -> tuple[int, int] | None:
    for net, mask in _V4_EXEMPT:
        if n & mask == net:
            return None
    return (n, n >> 8)


def _v6_group(host: str) -> tuple[int, int] | None:
    try:
        ip = ipaddress.IPv6Address(host)
    except ValueError:
        return None
    if ip.ipv4_mapped is not None:
        return _v4_group(int(ip.ipv4_mapped))
    if not ip.is_global:
        return None
    n = int(ip)
    return (_V6_TAG | n, _V6_TAG | (n >> 64))
