"""The announced-peer store: two generations, bounded size, expiry, order."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from hyperdht.discovery.store import DEFAULT_MAX_AGE, DEFAULT_MAX_SIZE, PeerStore, StoredPeer


def peer(i: int) -> StoredPeer:
    return StoredPeer(bytes([10, 0, i >> 8 & 0xFF, i & 0xFF, 0x1F, 0x90]))


def key(i: int) -> bytes:
    return i.to_bytes(32, "big")


def stored(store: PeerStore, k: bytes, now: float = 0.0) -> set[bytes]:
    return {p.peer for p in store.iterate(k, now)}


def items(store: PeerStore) -> tuple[int, int]:
    """(keys plus entries, entries) held in both generations: what memory
    holds. Reads the generations directly: nothing public exposes them."""
    gens = (store._current, store._previous)
    stored = sum(len(v) for gen in gens for v in gen.values())
    return stored + sum(len(gen) for gen in gens), stored


def test_defaults() -> None:
    store = PeerStore()
    assert store.max_size == DEFAULT_MAX_SIZE == 65536
    assert store.max_age == DEFAULT_MAX_AGE == 15 * 60


def test_put_iterate_delete() -> None:
    store = PeerStore()
    k = key(1)
    assert not store.has(k) and stored(store, k) == set()
    store.put(k, "10.0.0.1:8080", peer(1), 0.0)
    store.put(k, "10.0.0.2:8080", peer(2), 0.0)
    assert store.has(k)
    assert stored(store, k) == {peer(1).peer, peer(2).peer}
    assert len(store) == 3  # one key, two entries
    store.put(k, "10.0.0.1:8080", peer(3), 1.0)  # same id: replaced
    assert stored(store, k) == {peer(3).peer, peer(2).peer}
    assert len(store) == 3
    store.delete(k, "10.0.0.1:8080")
    assert stored(store, k) == {peer(2).peer}
    store.delete(k, "nobody")
    store.delete(key(9), "nobody")
    store.delete(k, "10.0.0.2:8080")
    assert not store.has(k)
    assert len(store) == 0


def test_two_generations() -> None:
    store = PeerStore(max_size=4)
    store.put(key(0), "a", peer(0), 0.0)
    store.put(key(0), "b", peer(1), 0.0)  # size 3
    store.put(key(1), "a", peer(2), 0.0)  # size 5 > 4: rotates
    assert len(store) == 0
    # The previous generation is still read.
    assert stored(store, key(0)) == {peer(0).peer, peer(1).peer}
    assert stored(store, key(1)) == {peer(2).peer}
    # Refreshing an old entry moves it to the current generation, once.
    store.put(key(0), "a", peer(5), 1.0)
    assert stored(store, key(0)) == {peer(5).peer, peer(1).peer}
    assert [p.peer for p in store.iterate(key(0), 1.0)].count(peer(5).peer) == 1
    # Delete reaches both generations.
    store.delete(key(0), "b")
    assert stored(store, key(0)) == {peer(5).peer}
    # Two more rotations and everything old is gone.
    for i in range(10, 20):
        store.put(key(i), "x", peer(i), 2.0)
    assert not store.has(key(0)) and not store.has(key(1))


def test_flood_of_a_million_announces_stays_bounded() -> None:
    max_size = DEFAULT_MAX_SIZE
    store = PeerStore(max_size=max_size)
    value = peer(1)
    rng = random.Random(1)
    first = last = b""
    size = rotations = 0
    for i in range(1_000_000):
        last = rng.randbytes(32)
        first = first or last
        store.put(last, "203.0.113.1:4000", value, float(i))
        previous, size = size, len(store)
        assert size <= max_size
        # Memory peaks just before and just after a rotation: count then.
        if size >= max_size - 1 or size < previous:
            total, entries = items(store)
            assert entries <= 2 * max_size
            assert total <= 2 * max_size + 2  # a put adds a key and an entry
            rotations += size < previous
    assert rotations == 1_000_000 * 2 // (max_size + 2)
    # The latest announcement is readable, long-gone ones are forgotten.
    assert store.has(last) and not store.has(first)


def test_flood_on_one_key_stays_bounded() -> None:
    store = PeerStore(max_size=1000)
    k = key(7)
    for i in range(20_000):
        store.put(k, f"10.0.{i >> 8}.{i & 0xFF}:1", peer(i), 0.0)
        assert len(store) <= 1000
        if i % 97 == 0:
            assert items(store)[1] <= 2 * 1000
    assert 0 < len(list(store.iterate(k, 0.0))) <= 2000


def test_iteration_order_is_random() -> None:
    store = PeerStore(rng=random.Random(3))
    k = key(1)
    for i in range(4):
        store.put(k, str(i), peer(i), 0.0)
    orders = Counter(tuple(p.peer for p in store.iterate(k, 0.0)) for _ in range(4800))
    assert len(orders) == 24  # every permutation shows up
    firsts = Counter(order[0] for order in orders.elements())
    for count in firsts.values():
        assert 1000 < count < 1400  # about 1200 each


def test_expiry() -> None:
    store = PeerStore(max_age=60.0)
    k = key(1)
    store.put(k, "old", peer(1), 0.0)
    store.put(k, "new", peer(2), 30.0)
    assert stored(store, k, 60.0) == {peer(1).peer, peer(2).peer}
    assert stored(store, k, 60.5) == {peer(2).peer}
    store.put(k, "old", peer(1), 61.0)  # re-announced: fresh again
    assert stored(store, k, 91.0) == {peer(1).peer}
    assert stored(store, k, 200.0) == set()


def test_expiry_applies_to_the_previous_generation() -> None:
    store = PeerStore(max_size=2, max_age=10.0)
    store.put(key(0), "a", peer(0), 0.0)
    store.put(key(1), "a", peer(1), 5.0)  # rotates: key 0 is in the previous generation
    assert stored(store, key(0), 9.0) == {peer(0).peer}
    assert stored(store, key(0), 11.0) == set()


@pytest.mark.parametrize(
    "kw", [{"max_size": 0}, {"max_size": -1}, {"max_size": 1.5}, {"max_age": 0}, {"max_age": -5}]
)
def test_bad_arguments(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PeerStore(**kw)  # type: ignore[arg-type]
