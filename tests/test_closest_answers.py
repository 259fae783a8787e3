"""The memo of ``_find_node`` answers (``DHTCore._closest_encoded``).

Whatever the memo holds, every answer must be byte for byte what encoding
the K closest contacts (sorted by XOR over the whole table) gives, through
new contacts, removals, refreshes and contacts that move to a new address.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdht import messages
from hyperdht.dhtrpc import DHTCore
from hyperdht.dhtrpc import core as dhtcore
from hyperdht.dhtrpc.core import K
from hyperdht.ipencoding import Address, node_codec

NODES = node_codec(False)
CLIENT = Address("10.9.0.1", 7000)


def expected(core: DHTCore, target: bytes) -> bytes:
    t = int.from_bytes(target, "big")
    closest = sorted(core.nodes(), key=lambda n: int.from_bytes(n.id, "big") ^ t)[:K]
    return b"".join(NODES.encode(n) for n in closest)


def ping(core: DHTCore, id: bytes, address: Address, tid: int) -> None:
    req = messages.RpcRequest(command="_ping", id=id)
    core.receive_datagram(
        (0x8000 | tid).to_bytes(2, "big") + messages.encode_request(req), address, 0
    )
    core.datagrams_to_send()


def crafted_id(rng: random.Random, own: bytes, depth: int) -> bytes:
    """An id sharing exactly ``depth`` leading bits with ``own``."""
    bit = 255 - depth
    prefix = (int.from_bytes(own, "big") >> bit) ^ 1
    return ((prefix << bit) | rng.getrandbits(bit)).to_bytes(32, "big")


def targets_for(core: DHTCore, rng: random.Random) -> list[bytes]:
    """Random targets, and hand-made ones: our id, extremes, contacts' ids
    and ids one bit away from them."""
    out = [rng.randbytes(32) for _ in range(20)] + [core.id, bytes(32), b"\xff" * 32]
    for node in core.nodes()[:6]:
        v = int.from_bytes(node.id, "big")
        out.append(node.id)
        out += [(v ^ (1 << b)).to_bytes(32, "big") for b in rng.sample(range(256), 4)]
    return out


@pytest.fixture
def eager_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memoise from the first answer, in a small memo (so it also fills up)."""
    monkeypatch.setattr(dhtcore, "_ANSWERS_AFTER", 0)
    monkeypatch.setattr(dhtcore, "_ANSWERS_MAX", 64)


@pytest.mark.usefixtures("eager_memo")
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_answers_match_the_table_through_every_change(seed: int) -> None:
    rng = random.Random(seed)
    core = DHTCore(rng=rng, random_bytes=rng.randbytes)
    ids: list[bytes] = []
    port = 20000
    targets: list[bytes] = []
    for step in range(100):
        r = rng.random()
        if r < 0.45 or not ids:  # a new contact, in any of the first buckets
            ids.append(crafted_id(rng, core.id, rng.randrange(6)))
            port += 1
            ping(core, ids[-1], Address("127.0.0.1", port), step)
        elif r < 0.65:  # a known contact, from where it was (a refresh)
            id = rng.choice(ids)
            node = core.table.get(id)
            if node is not None:
                ping(core, id, node.address, step)
        elif r < 0.8:  # a known contact from a new address
            port += 1
            ping(core, rng.choice(ids), Address("127.0.0.1", port), step)
        else:
            node = core.table.get(rng.choice(ids))
            if node is not None:
                core._remove_node(node)
        if step % 20 == 0:  # the same targets again and again: memo hits
            targets = targets_for(core, rng)
        for target in targets:
            assert core._closest_encoded(target) == expected(core, target)


@pytest.mark.usefixtures("eager_memo")
def test_memoised_answers_travel_in_find_node_responses() -> None:
    rng = random.Random(3)
    core = DHTCore(rng=rng, random_bytes=rng.randbytes)
    for depth in range(4):
        for i in range(20):
            ping(
                core,
                crafted_id(rng, core.id, depth),
                Address("127.0.0.1", 30000 + 20 * depth + i),
                i,
            )
    targets = [rng.randbytes(32) for _ in range(200)]
    for tid, target in enumerate(targets * 2):
        req = messages.RpcRequest(command="_find_node", id=None, target=target)
        core.receive_datagram(
            (0x8000 | tid).to_bytes(2, "big") + messages.encode_request(req), CLIENT, 1
        )
        [(data, to, _)] = core.datagrams_to_send()
        assert to == CLIENT
        assert messages.decode_response(data[2:]).nodes == expected(core, target)
    assert 0 < len(core._answers) <= 64  # the memo was used, and stayed bounded


def test_the_memo_waits_for_a_quiet_table() -> None:
    """A table that keeps changing never memoises (no memory for nothing)."""
    rng = random.Random(4)
    core = DHTCore(rng=rng, random_bytes=rng.randbytes)
    for depth in range(4):  # full first buckets: answers that could be memoised
        for i in range(20):
            ping(
                core,
                crafted_id(rng, core.id, depth),
                Address("127.0.0.1", 30000 + 20 * depth + i),
                i,
            )
    for i in range(2 * dhtcore._ANSWERS_AFTER):  # a new contact before every answer
        ping(core, crafted_id(rng, core.id, 4 + i % 200), Address("127.0.0.1", 40000 + i), i)
        core._closest_encoded(rng.randbytes(32))
    assert core._answers == {}
    for _ in range(dhtcore._ANSWERS_AFTER + 50):
        target = rng.randbytes(32)
        assert core._closest_encoded(target) == expected(core, target)
    assert core._answers
