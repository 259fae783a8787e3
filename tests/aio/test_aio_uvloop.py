"""The asyncio API on uvloop (an optional extra: skipped when it is not
installed, required under CI=true)."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os

import pytest

from hyperdht.aio import AsyncHyperDHT, collect_stream
from hyperdht.discovery import collect_peers

from .conftest import LOCAL, TIMEOUT


async def _scenario() -> type:
    loop_type = type(asyncio.get_running_loop())
    async with AsyncHyperDHT(host=LOCAL) as boot:
        entry = f"{LOCAL}:{boot.address.port}"
        nodes = [AsyncHyperDHT(host=LOCAL, bootstrap=[entry]) for _ in range(4)]
        try:
            for node in nodes:
                await asyncio.wait_for(node.ready(), TIMEOUT)
            key = hashlib.sha256(b"uvloop").digest()
            await asyncio.wait_for(nodes[0].announce_discard(key), TIMEOUT)
            found = await asyncio.wait_for(collect_stream(nodes[3].lookup(key)), TIMEOUT)
            assert collect_peers(found) == [nodes[0].address]
            assert await asyncio.wait_for(nodes[1].ping(boot.address), TIMEOUT) == nodes[1].address
        finally:
            for node in nodes:
                await node.close()
    return loop_type


def test_announce_and_lookup_on_uvloop() -> None:
    if importlib.util.find_spec("uvloop") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but uvloop is not installed")
        pytest.skip("uvloop is not installed (pip install hyperdht[uvloop])")
    import uvloop

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(_scenario()) is uvloop.Loop
    finally:
        loop.close()
