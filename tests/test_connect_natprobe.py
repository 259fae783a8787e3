"""The opener-TTL probe (hyperdht.dhtrpc.natprobe) on loopback, and its
parsing of the error queue."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Generator

import pytest

from hyperdht.dhtrpc import natprobe

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR is Linux")


@linux_only
def test_loopback_is_reached_at_the_first_hop() -> None:
    """127.0.0.1 is our own address: the first probe reaches it and the
    kernel answers port-unreachable (discard port, nothing listens)."""
    assert natprobe.probe_nat_hops("127.0.0.1", wait=5.0) == 1


def test_an_unusable_address_gives_none() -> None:
    assert natprobe.probe_nat_hops("not-an-ip", wait=0.0) is None


def _ee(origin: int, icmp_type: int) -> list[tuple[int, int, bytes]]:
    return [(0, 11, natprobe._EE.pack(113, origin, icmp_type, 0, 0, 0, 0) + bytes(16))]


@pytest.mark.parametrize(
    ("origin", "icmp_type", "kind"),
    [(2, 11, "expired"), (2, 3, "reached"), (3, 3, "expired"), (3, 1, "reached"), (2, 5, None)],
)
def test_icmp_kinds(origin: int, icmp_type: int, kind: str | None) -> None:
    assert natprobe._icmp_kind(_ee(origin, icmp_type)) == kind


def test_probe_payload_names_its_ttl() -> None:
    assert natprobe._probe_ttl(natprobe._PREFIX + b"3") == 3
    assert natprobe._probe_ttl(b"other") is None
    assert natprobe._probe_ttl(natprobe._PREFIX + b"x") is None


@linux_only
def test_the_probe_as_steps_under_asyncio() -> None:
    """nat_hop_probe() sends at once, then only asks for pauses: awaited
    with asyncio.sleep it gives the blocking probe's answer."""

    async def measure() -> int | None:
        steps = natprobe.nat_hop_probe("127.0.0.1", wait=5.0)
        try:
            while True:
                await asyncio.sleep(next(steps))
        except StopIteration as stop:
            result: int | None = stop.value
            return result

    assert asyncio.run(measure()) == 1


def test_an_unusable_address_asks_for_no_pause() -> None:
    steps = natprobe.nat_hop_probe("not-an-ip", wait=5.0)
    with pytest.raises(StopIteration) as stop:
        next(steps)
    assert stop.value.value is None


def test_run_blocking_pauses_between_reads() -> None:
    def steps() -> Generator[float, None, int | None]:
        yield 0.25
        yield 0.5
        return 3

    pauses: list[float] = []
    assert natprobe.run_blocking(steps(), pauses.append) == 3
    assert pauses == [0.25, 0.5]
