"""How many routers away is our own NAT? (The TTL of a NAT opener.)

A NAT opener must cross every NAT of ours and expire before the peer's; its
IP TTL is therefore (routers up to and including our outermost NAT) + 1.
:func:`probe_nat_hops` measures that count with datagrams addressed to our
own public IP (what a node that answered a ping saw us as), one per TTL
1..``max_ttl``, all at once. A router on the way that finds the TTL at 1
sends ICMP time-exceeded; the NAT that owns the address delivers the
datagram to itself and answers port-unreachable. Linux queues both on the
sending socket's error queue (``IP_RECVERR``, no root needed), with the
datagram's payload, which names its TTL. The answer is the smallest TTL
that reached the address. None when that cannot be told: not Linux, no ICMP
(a silent router or NAT), or no answer within ``wait`` seconds. The probes
go no further than our own NAT, so they never reach the peer's.

The I/O is split so that any waiting model can run it:
:func:`nat_hop_probe` sends the probes, then yields the pauses it wants
before each read of the answers; :func:`probe_nat_hops` (blocking) and
:mod:`hyperdht.aio` (``await asyncio.sleep``) only differ in how they
pause.
"""

from __future__ import annotations

import errno
import logging
import socket as _socket
import struct
import time
from collections.abc import Callable, Generator

__all__ = [
    "MAX_PROBE_TTL",
    "POLL_INTERVAL",
    "Pause",
    "nat_hop_probe",
    "probe_nat_hops",
    "run_blocking",
]

log = logging.getLogger(__name__)

#: The highest TTL probed: a home router, a carrier-grade NAT and the
#: routers between them are well within it.
MAX_PROBE_TTL = 8

_IP_RECVERR = getattr(_socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(_socket, "IPV6_RECVERR", 25)
_MSG_ERRQUEUE = getattr(_socket, "MSG_ERRQUEUE", 0x2000)
# struct sock_extended_err: errno, origin, type, code, pad, info, data.
_EE = struct.Struct("=IBBBBII")
_ORIGIN_ICMP = 2
_ORIGIN_ICMP6 = 3
_PREFIX = b"hyperdht-ttl-probe:"
_DISCARD_PORT = 9


#: Seconds between two reads of the error queue while answers are awaited.
POLL_INTERVAL = 0.002

#: What :func:`nat_hop_probe` yields: the seconds to pause before the next
#: read of the answers.
Pause = float


def nat_hop_probe(
    public_ip: str,
    *,
    ipv6: bool = False,
    max_ttl: int = MAX_PROBE_TTL,
    wait: float = 0.5,
) -> Generator[Pause, None, int | None]:
    """The probe as steps, for any waiting model: sends the probes at once
    (on the first ``next()``), then yields the seconds to pause before each
    read of the answers, and returns the answer (as
    :func:`probe_nat_hops`). The pause is the only wait: a blocking caller
    sleeps, an asyncio one awaits ``asyncio.sleep``. Closing the generator
    closes the probe's socket. Never raises for network errors."""
    family = _socket.AF_INET6 if ipv6 else _socket.AF_INET
    try:
        sock = _socket.socket(family, _socket.SOCK_DGRAM)
    except OSError:
        return None
    try:
        if ipv6:
            level, recverr, ttl_opt = _socket.IPPROTO_IPV6, _IPV6_RECVERR, _socket.IPV6_UNICAST_HOPS
        else:
            level, recverr, ttl_opt = _socket.IPPROTO_IP, _IP_RECVERR, _socket.IP_TTL
        try:
            sock.setsockopt(level, recverr, 1)
            sock.setblocking(False)
            for ttl in range(1, max_ttl + 1):
                sock.setsockopt(level, ttl_opt, ttl)
                _send(sock, _PREFIX + str(ttl).encode(), (public_ip, _DISCARD_PORT))
        except OSError as exc:
            log.debug("NAT hop probe to %s not possible: %s", public_ip, exc)
            return None
        answers = _Answers()
        deadline = time.monotonic() + wait
        while True:
            answers.read(sock)
            hops = answers.hops()
            if hops is not None:
                return hops
            if len(answers.expired) == max_ttl or time.monotonic() >= deadline:
                log.debug("NAT hop probe: no answer (expired at %s)", sorted(answers.expired))
                return None
            yield POLL_INTERVAL
    finally:
        sock.close()


def probe_nat_hops(
    public_ip: str,
    *,
    ipv6: bool = False,
    max_ttl: int = MAX_PROBE_TTL,
    wait: float = 0.5,
    pause: Callable[[float], object] = time.sleep,
) -> int | None:
    """Routers from this host up to and including the NAT that owns
    ``public_ip`` (1 for a host right behind its home router), or None.

    Blocks up to ``wait`` seconds; ``pause(seconds)`` waits between reads
    of the error queue (pass a cooperative one under gevent).
    :func:`nat_hop_probe` is the same probe for a caller that must not
    block. Never raises for network errors.
    """
    return run_blocking(nat_hop_probe(public_ip, ipv6=ipv6, max_ttl=max_ttl, wait=wait), pause)


def run_blocking(
    steps: Generator[Pause, None, int | None], pause: Callable[[float], object]
) -> int | None:
    """Run :func:`nat_hop_probe`'s ``steps`` to the end, pausing with
    ``pause(seconds)``; returns the answer."""
    try:
        while True:
            pause(next(steps))
    except StopIteration as stop:
        result: int | None = stop.value
        return result
    finally:
        steps.close()


def _send(sock: _socket.socket, data: bytes, addr: tuple[str, int]) -> None:
    # With IP_RECVERR an ICMP error about an earlier probe fails the next
    # send once (ECONNREFUSED, EHOSTUNREACH...); its details stay queued.
    for _ in range(4):
        try:
            sock.sendto(data, addr)
            return
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno not in _REPORTED:
                raise


_REPORTED = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.EPROTO}
)


class _Answers:
    """The ICMP answers read so far: TTLs that expired, TTLs that arrived."""

    __slots__ = ("expired", "reached")

    def __init__(self) -> None:
        self.expired: set[int] = set()
        self.reached: set[int] = set()

    def read(self, sock: _socket.socket) -> None:
        """Drain ``sock``'s error queue (never blocks)."""
        while True:
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(512, 512, _MSG_ERRQUEUE)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return
                continue  # a pending error reported once: read the queue again
            ttl = _probe_ttl(data)
            kind = _icmp_kind(ancdata)
            if ttl is None or kind is None:
                continue
            (self.expired if kind == "expired" else self.reached).add(ttl)

    def hops(self) -> int | None:
        """The smallest TTL that arrived, once every smaller one expired."""
        if self.reached:
            first = min(self.reached)
            if all(t in self.expired for t in range(1, first)):
                return first
        return None


def _probe_ttl(data: bytes) -> int | None:
    if not data.startswith(_PREFIX):
        return None
    try:
        return int(data[len(_PREFIX) :])
    except ValueError:
        return None


def _icmp_kind(ancdata: list[tuple[int, int, bytes]]) -> str | None:
    for _level, _type, cdata in ancdata:
        if len(cdata) < _EE.size:
            continue
        _errno, origin, icmp_type, _code, _pad, _info, _data = _EE.unpack_from(cdata)
        if origin == _ORIGIN_ICMP:
            if icmp_type == 11:
                return "expired"
            if icmp_type == 3:
                return "reached"
        elif origin == _ORIGIN_ICMP6:
            if icmp_type == 3:
                return "expired"
            if icmp_type == 1:
                return "reached"
    return None
