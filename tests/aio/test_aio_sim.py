"""The asyncio API on the simulator (virtual clock, NATs) through
:func:`hyperdht.aio.run_network`: deterministic, and minutes of protocol
in milliseconds."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from typing import Any

import pytest

from hyperdht.aio import AsyncHyperDHT, collect_stream, run_network
from hyperdht.discovery import collect_peers
from hyperdht.errors import RequestTimeout, StateError
from hyperdht.testing import Network

BOOT = "198.18.0.1:49737"


async def _scenario(net: Network) -> dict[str, Any]:
    rng = random.Random(7)
    boot = AsyncHyperDHT(
        id=rng.randbytes(32), backend=net.host("198.18.0.1"), port=49737, ephemeral=True
    )
    natted = AsyncHyperDHT(
        id=rng.randbytes(32),
        backend=net.host("10.0.0.2", nat=net.nat("198.18.0.9")),
        bootstrap=[BOOT],
    )
    nodes = [
        AsyncHyperDHT(id=rng.randbytes(32), backend=net.host(), bootstrap=[BOOT]) for _ in range(20)
    ]
    client = AsyncHyperDHT(
        id=rng.randbytes(32), backend=net.host(), bootstrap=[BOOT], ephemeral=True
    )
    # A stranger to the NAT (the client's lookup itself opened the NAT to it).
    fresh = AsyncHyperDHT(id=rng.randbytes(32), backend=net.host(), ephemeral=True)
    everyone = [boot, *nodes, natted, client, fresh]
    try:
        for node in everyone[1:]:
            await node.ready()
        key = hashlib.sha256(b"sim").digest()
        await natted.announce_discard(key)
        results = await collect_stream(client.lookup(key))
        peer = collect_peers(results)[0]
        referrer = next(r.node for r in results if peer in r.peers)
        with pytest.raises(RequestTimeout):
            await fresh.ping(peer)  # the NAT drops it
        punched = await fresh.holepunch(peer, referrer)
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        natted.on_datagram(lambda data, addr: got.done() or got.set_result(data))
        fresh.send_datagram(b"through the hole", punched)
        return {"peer": peer, "punched": punched, "message": await got, "now": net.now}
    finally:
        for node in everyone:
            await node.close()


async def test_announce_lookup_and_holepunch_in_virtual_time() -> None:
    started = time.monotonic()
    net = Network(seed=3, latency=0.01)
    first = await run_network(net, _scenario(net))
    assert first["message"] == b"through the hole"
    assert first["peer"].host == "198.18.0.9" and first["punched"].host == "198.18.0.9"
    assert first["now"] > 1.0  # the ping timeout alone is a virtual second
    assert time.monotonic() - started < 10.0


async def test_the_same_seed_gives_the_same_run() -> None:
    runs = []
    for _ in range(2):
        net = Network(seed=5, latency=0.01)
        runs.append(await run_network(net, _scenario(net)))
    assert runs[0] == runs[1]  # including the virtual time it all took


async def test_a_program_waiting_on_nothing_is_a_simulated_deadlock() -> None:
    net = Network(seed=1)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(StateError, match="deadlock"):
        await run_network(net, never)
