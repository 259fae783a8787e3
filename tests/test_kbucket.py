"""Tests for hyperdht.kbucket.

The table is checked against two models: a literal port of tristanls'
k-bucket tree (nodes with ``left``/``right``/``dontSplit``, one bit per level)
for its shape, order and callbacks, and brute force (sort everything by
distance) for ``closest()``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdht.ipencoding import Address, Node
from hyperdht.kbucket import KBucket, distance


@dataclass(frozen=True, eq=False)
class C:
    """A contact; ``v`` tells versions of one id apart (identity matters, not equality)."""

    id: bytes
    v: int = 0


# -- the reference model: tristanls' tree, transcribed ----------------------


def bit(id: bytes, i: int) -> int:
    """tristanls' _determineNode: bits past the end of an id read as 0."""
    if i // 8 >= len(id):
        return 0
    return (id[i // 8] >> (7 - i % 8)) & 1


@dataclass(eq=False)
class TreeNode:
    contacts: list[C] | None = field(default_factory=list)
    dont_split: bool = False
    left: TreeNode | None = None
    right: TreeNode | None = None

    def child(self, id: bytes, i: int) -> TreeNode:
        node = self.right if bit(id, i) else self.left
        assert node is not None
        return node


class Model:
    """tristanls' KBucket with the documented differences of ours: the local id
    is never stored, the arbiter's winner is always moved to the end, and a
    bucket past every id's last bit stops splitting."""

    def __init__(self, local: bytes, k: int, ping_count: int, arbiter: Any = None) -> None:
        self.local = local
        self.k = k
        self.ping_count = ping_count
        self.arbiter = arbiter or (lambda incumbent, candidate: candidate)
        self.root = TreeNode()
        self.events: list[tuple[Any, ...]] = []
        self.max_len = len(local)

    def leaf(self, id: bytes) -> tuple[TreeNode, int]:
        node, i = self.root, 0
        while node.contacts is None:
            node = node.child(id, i)
            i += 1
        return node, i

    def add(self, c: C) -> None:
        if c.id == self.local:
            return
        self.max_len = max(self.max_len, len(c.id))
        while True:
            node, i = self.leaf(c.id)
            assert node.contacts is not None
            for j, old in enumerate(node.contacts):
                if old.id == c.id:
                    sel = self.arbiter(old, c)
                    del node.contacts[j]
                    node.contacts.append(sel)
                    self.events.append(("updated", old, sel))
                    return
            if len(node.contacts) < self.k:
                node.contacts.append(c)
                self.events.append(("added", c))
                return
            if node.dont_split or i >= 8 * self.max_len:
                self.events.append(("ping", node.contacts[: self.ping_count], c))
                return
            self.split(node, i)

    def split(self, node: TreeNode, i: int) -> None:
        assert node.contacts is not None
        node.left, node.right = TreeNode(), TreeNode()
        for c in node.contacts:
            cnode = node.child(c.id, i)
            assert cnode.contacts is not None
            cnode.contacts.append(c)
        node.contacts = None
        near = node.child(self.local, i)
        (node.right if near is node.left else node.left).dont_split = True  # type: ignore[union-attr]

    def remove(self, id: bytes) -> None:
        node, _ = self.leaf(id)
        assert node.contacts is not None
        for j, c in enumerate(node.contacts):
            if c.id == id:
                del node.contacts[j]
                self.events.append(("removed", c))
                return

    def buckets(self) -> list[list[C]]:
        out: list[list[C]] = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.contacts is None:
                assert node.left is not None and node.right is not None
                stack += [node.right, node.left]
            else:
                out.append(list(node.contacts))
        return out


def make_table(
    local: bytes, k: int, ping_count: int = 3, arbiter: Any = None
) -> tuple[Any, list[Any]]:
    events: list[tuple[Any, ...]] = []
    table: KBucket[C] = KBucket(
        local,
        k=k,
        ping_count=ping_count,
        arbiter=arbiter,
        on_added=lambda c: events.append(("added", c)),
        on_removed=lambda c: events.append(("removed", c)),
        on_updated=lambda a, b: events.append(("updated", a, b)),
        on_ping=lambda old, new: events.append(("ping", old, new)),
    )
    return table, events


def brute_closest(contacts: list[C], target: bytes, n: int) -> list[int]:
    return sorted(distance(c.id, target) for c in contacts)[:n]


def check_against(table: KBucket[C], model: Model, events: list[Any], targets: list[bytes]) -> None:
    assert events == model.events
    model_buckets = model.buckets()
    assert [b for b in table.buckets() if b] == [b for b in model_buckets if b]
    everything = [c for b in model_buckets for c in b]
    assert table.to_list() == everything
    assert list(table) == everything
    assert len(table) == table.count() == len(everything)
    assert all(len(b) <= table.k for b in table.buckets())
    assert table.local_id not in table
    assert table.get(table.local_id) is None
    for c in everything:
        assert c.id in table
        assert table.get(c.id) is c
    for target in targets:
        for n in (1, 2, 3, table.k, len(everything), len(everything) + 5):
            got = table.closest(target, n)
            assert [distance(c.id, target) for c in got] == brute_closest(everything, target, n)
            assert len({c.id for c in got}) == len(got)
            assert all(table.get(c.id) is c for c in got)
        got = table.closest(target)
        assert [distance(c.id, target) for c in got] == brute_closest(everything, target, 10**9)


# -- property tests ----------------------------------------------------------

ops_fixed = st.lists(
    st.tuples(st.sampled_from(["add", "add", "add", "remove"]), st.binary(min_size=2, max_size=2)),
    max_size=150,
)


@settings(max_examples=150, deadline=None)
@given(
    local=st.binary(min_size=2, max_size=2),
    k=st.integers(1, 5),
    ping_count=st.integers(1, 4),
    ops=ops_fixed,
    targets=st.lists(st.binary(min_size=2, max_size=2), min_size=1, max_size=4),
)
def test_matches_tristanls_tree_same_length(
    local: bytes, k: int, ping_count: int, ops: list[tuple[str, bytes]], targets: list[bytes]
) -> None:
    table, events = make_table(local, k, ping_count)
    model = Model(local, k, ping_count)
    for v, (op, id) in enumerate(ops):
        if op == "add":
            c = C(id, v)
            table.add(c)
            model.add(c)
        else:
            table.remove(id)
            model.remove(id)
    check_against(table, model, events, [*targets, local])


@settings(max_examples=150, deadline=None)
@given(
    local=st.binary(min_size=1, max_size=3),
    k=st.integers(1, 4),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["add", "add", "add", "remove"]), st.binary(min_size=0, max_size=3)
        ),
        max_size=120,
    ),
    targets=st.lists(st.binary(min_size=0, max_size=4), min_size=1, max_size=4),
)
def test_matches_tristanls_tree_mixed_lengths(
    local: bytes, k: int, ops: list[tuple[str, bytes]], targets: list[bytes]
) -> None:
    table, events = make_table(local, k)
    model = Model(local, k, 3)
    for v, (op, id) in enumerate(ops):
        if op == "add":
            c = C(id, v)
            table.add(c)
            model.add(c)
        else:
            table.remove(id)
            model.remove(id)
    check_against(table, model, events, [*targets, local])


def near_id(rng: random.Random, local: bytes) -> bytes:
    """A 32-byte id sharing a random-length prefix with *local* (spreads over buckets)."""
    p = rng.randrange(256)
    x = rng.getrandbits(256) | (1 << (255 - p))
    x &= (1 << (256 - p)) - 1
    return (int.from_bytes(local, "big") ^ x).to_bytes(32, "big")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), k=st.sampled_from([1, 3, 20]), size=st.integers(0, 600))
def test_closest_equals_brute_force_32_byte_ids(seed: int, k: int, size: int) -> None:
    rng = random.Random(seed)
    local = rng.randbytes(32)
    table: KBucket[C] = KBucket(local, k=k)
    for _ in range(size):
        table.add(C(near_id(rng, local) if rng.random() < 0.8 else rng.randbytes(32)))
    everything = table.to_list()
    assert all(len(b) <= k for b in table.buckets())
    for _ in range(10):
        target = rng.choice([rng.randbytes(32), near_id(rng, local), local])
        t = int.from_bytes(target, "big")
        for n in (1, 20, 50):
            expected = sorted(everything, key=lambda c: int.from_bytes(c.id, "big") ^ t)[:n]
            assert table.closest(target, n) == expected


@settings(max_examples=100, deadline=None)
@given(
    local=st.binary(min_size=1, max_size=2),
    k=st.integers(1, 4),
    ops=st.lists(
        st.tuples(st.booleans(), st.binary(min_size=1, max_size=2), st.booleans()), max_size=100
    ),
)
def test_count_equals_added_minus_removed(
    local: bytes, k: int, ops: list[tuple[bool, bytes, bool]]
) -> None:
    """Count what the callbacks report: every stored contact was announced by
    on_added, every rejected one by on_ping, every removal by on_removed."""
    table, events = make_table(local, k)
    stored: set[bytes] = set()
    for is_add, id, _ in ops:
        before = len(events)
        if is_add:
            table.add(C(id))
            if id == local:
                assert len(events) == before
                continue
            (kind, *_rest) = events[-1]
            if id in stored:
                assert kind == "updated"
            elif kind == "added":
                stored.add(id)
            else:
                assert kind == "ping"
                assert id not in table
        else:
            removed = table.remove(id)
            if id in stored:
                assert removed is not None and removed.id == id
                assert events[-1] == ("removed", removed)
                stored.discard(id)
            else:
                assert removed is None and len(events) == before
        assert len(table) == len(stored)
        assert {c.id for c in table} == stored


# -- closest() against a model of the pre-cache algorithm --------------------


def model_walk(node: TreeNode, target: bytes, i: int = 0) -> list[list[C]]:
    """The buckets nearest-first for *target*: depth first, target's side first."""
    if node.contacts is not None:
        return [node.contacts]
    assert node.left is not None and node.right is not None
    first, second = (node.right, node.left) if bit(target, i) else (node.left, node.right)
    return model_walk(first, target, i + 1) + model_walk(second, target, i + 1)


def model_closest(model: Model, target: bytes, n: int | None) -> list[C]:
    """tristanls' closest() as this module had it before the int caches: with
    one id length (the target's) walk buckets until >= n contacts, sort those
    by XOR, take n; otherwise sort everything by distance (stable, walk order)."""
    buckets = model_walk(model.root, target)
    everything = [c for b in buckets for c in b]
    if n is None:
        n = len(everything)
    if n == 0 or not everything:
        return []
    if {len(c.id) for c in everything} == {len(target)}:
        t = int.from_bytes(target, "big")
        found: list[C] = []
        for b in buckets:
            found.extend(b)
            if len(found) >= n:
                break
        found.sort(key=lambda c: int.from_bytes(c.id, "big") ^ t)
        return found[:n]
    everything.sort(key=lambda c: distance(c.id, target))
    return everything[:n]


def same_contacts(got: list[C], want: list[C]) -> bool:
    return len(got) == len(want) and all(a is b for a, b in zip(got, want, strict=True))


@settings(max_examples=300, deadline=None)
@given(
    local=st.binary(min_size=2, max_size=2),
    k=st.integers(1, 4),
    keep_incumbent=st.booleans(),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["add", "add", "add", "remove", "closest", "closest"]),
            # Mostly the local id's length; now and then another length,
            # which turns the caches off until it is removed again.
            st.one_of(
                st.binary(min_size=2, max_size=2),
                st.binary(min_size=2, max_size=2),
                st.binary(min_size=2, max_size=2),
                st.binary(min_size=0, max_size=3),
            ),
            st.sampled_from([None, 0, 1, 2, 3, 4, 5, 8, 100]),
        ),
        max_size=200,
    ),
)
def test_closest_interleaved_with_changes_matches_model(
    local: bytes,
    k: int,
    keep_incumbent: bool,
    ops: list[tuple[str, bytes, int | None]],
) -> None:
    """closest() between every kind of change (new, refreshed with a new
    object, removed, splits, a second id length coming and going) returns the
    very contacts, in the same order, as the pre-cache algorithm."""
    arbiter = (lambda incumbent, candidate: incumbent) if keep_incumbent else None
    table, _ = make_table(local, k, arbiter=arbiter)
    model = Model(local, k, 3, arbiter=arbiter)
    for v, (op, id, n) in enumerate(ops):
        if op == "add":
            c = C(id, v)
            table.add(c)
            model.add(c)
        elif op == "remove":
            table.remove(id)
            model.remove(id)
        else:
            assert same_contacts(table.closest(id, n), model_closest(model, id, n))
        # The local id and a fixed-length target after every step keep the
        # caches warm while the table changes under them.
        for target in (local, id + bytes(2 - len(id)) if len(id) < 2 else id[:2]):
            assert same_contacts(table.closest(target, 2), model_closest(model, target, 2))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), k=st.sampled_from([1, 3, 20]))
def test_closest_32_byte_ids_under_churn_matches_model(seed: int, k: int) -> None:
    """A DHT-shaped table (32-byte ids spread over the buckets) under random
    adds, refreshes and removes, queried all along, against the model."""
    rng = random.Random(seed)
    local = rng.randbytes(32)
    table: KBucket[C] = KBucket(local, k=k)
    model = Model(local, k, 3)
    known: list[bytes] = []
    for v in range(400):
        r = rng.random()
        if r < 0.5 or not known:
            id = near_id(rng, local) if rng.random() < 0.8 else rng.randbytes(32)
            known.append(id)
        elif r < 0.7:
            id = rng.choice(known)  # a refresh: a new object for a known id
        else:
            id = rng.choice(known)
            table.remove(id)
            model.remove(id)
            continue
        c = C(id, v)
        table.add(c)
        model.add(c)
        if v % 7 == 0:
            target = rng.choice([rng.randbytes(32), near_id(rng, local), local, id])
            n = rng.choice([1, 20, 21, 50, None])
            assert same_contacts(table.closest(target, n), model_closest(model, target, n))


# -- closest_key(): equal keys, equal answers ----------------------------------


def check_keys(table: KBucket[C], targets: list[bytes], n: int) -> int:
    """Every two targets with one key get the same closest(); returns how
    many targets had a key."""
    first: dict[Any, list[C]] = {}
    keyed = 0
    for target in targets:
        key = table.closest_key(target, n)
        if key is None:
            continue
        keyed += 1
        got = table.closest(target, n)
        want = first.setdefault(key, got)
        assert same_contacts(got, want), (key, target)
    return keyed


def window_neighbours(table: KBucket[C], rng: random.Random) -> list[bytes]:
    """Hand-made targets: each contact's id, and ids one bit away from it
    (in every position, so in and around every bucket's window)."""
    out = []
    for c in table.to_list()[:12]:
        v = int.from_bytes(c.id, "big")
        bits = 8 * len(c.id)
        out.append(c.id)
        for b in rng.sample(range(bits), min(bits, 24)):
            out.append((v ^ (1 << b)).to_bytes(len(c.id), "big"))
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), k=st.sampled_from([1, 2, 3, 20]), n=st.sampled_from([1, 3, 20]))
def test_closest_key_equal_keys_mean_equal_answers(seed: int, k: int, n: int) -> None:
    rng = random.Random(seed)
    local = rng.randbytes(32)
    table: KBucket[C] = KBucket(local, k=k)
    known: list[bytes] = []
    for step in range(300):
        if known and rng.random() < 0.2:
            table.remove(known.pop(rng.randrange(len(known))))
        else:
            id = near_id(rng, local) if rng.random() < 0.7 else rng.randbytes(32)
            known.append(id)
            table.add(C(id, step))
        if step % 50 == 49:
            targets = [rng.randbytes(32) for _ in range(300)]
            targets += [local, bytes(32), b"\xff" * 32, *window_neighbours(table, rng)]
            check_keys(table, targets, n)


def test_closest_key_keys_a_full_bucket() -> None:
    """A target whose first bucket alone holds n contacts gets a key, the
    same for every target that differs from it only below the bucket's
    window (the memoised path of the test above does run)."""
    rng = random.Random(7)
    local = rng.randbytes(32)
    table: KBucket[C] = KBucket(local, k=20)
    for v in range(200):
        table.add(C(rng.randbytes(32), v))
    across = int.from_bytes(local, "big") ^ (1 << 255)  # differs at bit 0 only
    target = across.to_bytes(32, "big")
    key = table.closest_key(target, 20)
    assert key is not None
    assert table.closest_key((across ^ 1).to_bytes(32, "big"), 20) == key


@settings(max_examples=200, deadline=None)
@given(
    local=st.binary(min_size=1, max_size=2),
    k=st.integers(1, 4),
    ops=st.lists(
        st.tuples(st.sampled_from(["add", "add", "remove"]), st.binary(min_size=0, max_size=3)),
        max_size=60,
    ),
    targets=st.lists(st.binary(min_size=0, max_size=3), max_size=30),
    n=st.integers(-1, 6),
)
def test_closest_key_with_any_ids_and_arguments(
    local: bytes, k: int, ops: list[tuple[str, bytes]], targets: list[bytes], n: int
) -> None:
    """Mixed lengths, empty ids, n <= 0: a key only where it is sound, no raise."""
    table, _ = make_table(local, k)
    for v, (op, id) in enumerate(ops):
        if op == "add":
            table.add(C(id, v))
        else:
            table.remove(id)
        for target in targets:
            key = table.closest_key(target, n)
            if n < 1 or {len(c.id) for c in table} != {len(target)}:
                assert key is None
        check_keys(table, targets, n)
    assert table.closest_key("ab", 1) is None  # type: ignore[arg-type]
    assert table.closest_key(local, 1.0) is None  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    local=st.binary(min_size=2, max_size=2),
    k=st.integers(1, 4),
    keep_incumbent=st.booleans(),
    ops=st.lists(
        st.tuples(st.sampled_from(["add", "add", "remove"]), st.binary(min_size=1, max_size=3)),
        max_size=80,
    ),
)
def test_changes_counts_every_change_of_an_answer(
    local: bytes, k: int, keep_incumbent: bool, ops: list[tuple[str, bytes]]
) -> None:
    """If any closest() answer differs after an operation, ``changes`` moved."""
    arbiter = (lambda incumbent, candidate: incumbent) if keep_incumbent else None
    table, _ = make_table(local, k, arbiter=arbiter)
    targets = [local, b"\x00\x00", b"\xff\xff", b"\x00", b"\x12\x34\x56"]

    def answers() -> list[list[C]]:
        return [table.closest(t, m) for t in targets for m in (1, 2, 5)]

    for v, (op, id) in enumerate(ops):
        before, count = answers(), table.changes
        if op == "add":
            table.add(C(id, v))
        else:
            table.remove(id)
        after = answers()
        if not all(same_contacts(a, b) for a, b in zip(before, after, strict=True)):
            assert table.changes > count


# -- examples ----------------------------------------------------------------


def test_local_id_is_never_stored() -> None:
    table, events = make_table(b"\x00\x01", 2)
    table.add(C(b"\x00\x01"))
    assert len(table) == 0 and events == [] and b"\x00\x01" not in table
    assert table.closest(b"\x00\x01") == []


def test_on_ping_gets_least_recently_seen() -> None:
    table, events = make_table(b"\x00", 5, ping_count=3)
    far = [C(bytes([0x80 + i])) for i in range(5)]
    for c in far:
        table.add(c)
    table.add(C(b"\x01"))  # root splits: the five go to the far bucket, 0x01 stays near
    table.add(far[0])  # refresh: 0x80 becomes the most recently seen
    events.clear()
    new = C(b"\xff")
    table.add(new)
    assert events == [("ping", [far[1], far[2], far[3]], new)]
    assert b"\xff" not in table
    table.add(far[1])
    table.add(far[3])
    events.clear()
    table.add(new)
    assert events == [("ping", [far[2], far[4], far[0]], new)]


def test_ping_handler_may_evict_and_add() -> None:
    """dht-rpc's flow: on_ping pings the old ones; a dead one is replaced."""
    table: KBucket[C]

    def on_ping(old: list[C], new: C) -> None:
        table.remove(old[0].id)
        table.add(new)

    table = KBucket(b"\x00", k=2, ping_count=1, on_ping=on_ping)
    a, b, c = C(b"\x80"), C(b"\x81"), C(b"\x82")
    table.add(a)
    table.add(b)
    table.add(C(b"\x01"))
    table.add(c)
    assert a.id not in table and b.id in table and c.id in table
    assert [x.id for x in table.buckets()[-1]] == [b.id, c.id]


def test_default_arbiter_newer_wins_and_moves_to_end() -> None:
    table, events = make_table(b"\x00", 3)
    a1, b, a2 = C(b"\x10", 1), C(b"\x20"), C(b"\x10", 2)
    table.add(a1)
    table.add(b)
    table.add(a2)
    assert table.get(b"\x10") is a2
    assert table.to_list() == [b, a2]
    assert events[-1] == ("updated", a1, a2)


def test_custom_arbiter() -> None:
    def keep_highest(incumbent: C, candidate: C) -> C:
        return incumbent if incumbent.v > candidate.v else candidate

    table, events = make_table(b"\x00", 3, arbiter=keep_highest)
    a5, b, a3, a9 = C(b"\x10", 5), C(b"\x20"), C(b"\x10", 3), C(b"\x10", 9)
    table.add(a5)
    table.add(b)
    table.add(a3)
    assert table.get(b"\x10") is a5
    assert table.to_list() == [b, a5]  # the winner is moved to the end
    assert events[-1] == ("updated", a5, a5)
    table.add(a9)
    assert table.get(b"\x10") is a9
    assert events[-1] == ("updated", a5, a9)


def test_arbiter_must_keep_the_id() -> None:
    table: KBucket[C] = KBucket(b"\x00", arbiter=lambda a, b: C(b"\x99"))
    table.add(C(b"\x10"))
    with pytest.raises(ValueError, match="arbiter"):
        table.add(C(b"\x10"))


def test_remove() -> None:
    table, events = make_table(b"\x00", 3)
    c = C(b"\x10")
    table.add(c)
    assert table.remove(b"\x10") is c
    assert events[-1] == ("removed", c)
    assert table.remove(b"\x10") is None
    assert events[-1] == ("removed", c)
    assert len(table) == 0 and table.get(b"\x10") is None


def test_ids_equal_to_local_under_padding_do_not_split_for_ever() -> None:
    """tristanls recurses without end here; we stop splitting past the last bit."""
    table, events = make_table(b"\x00\x00", 1)
    table.add(C(b"\x00"))
    table.add(C(b"\x00\x00\x00"))
    assert [e[0] for e in events] == ["added", "ping"]
    assert len(table) == 1


def test_distance_like_tristanls() -> None:
    assert distance(b"\x01\x02", b"\x01\x03") == 1
    assert distance(b"\xff", b"\x00") == 255
    assert distance(b"\x00", b"\x00\x00") == 0xFF
    assert distance(b"\x01", b"\x00\x00\x00") == 0x01FFFF
    assert distance(b"", b"\x00") == 0xFF
    assert distance(b"\x12" * 32, b"\x12" * 32) == 0


def test_works_with_nodes() -> None:
    table: KBucket[Node] = KBucket(bytes(32))
    nodes = [Node(bytes([i]) * 32, Address("10.0.0.1", 1000 + i)) for i in range(1, 40)]
    for node in nodes:
        table.add(node)
    target = bytes([5]) * 32
    assert table.closest(target, 1) == [nodes[4]]
    assert len(table.closest(target, 20)) == 20


def test_closest_arguments() -> None:
    table: KBucket[C] = KBucket(b"\x00")
    table.add(C(b"\x01"))
    assert table.closest(b"\x00", 0) == []
    with pytest.raises(ValueError, match="n must be"):
        table.closest(b"\x00", -1)
    with pytest.raises(TypeError, match="target"):
        table.closest("00", 1)  # type: ignore[arg-type]


def test_add_rejects_non_bytes_id() -> None:
    table: KBucket[Any] = KBucket(b"\x00")
    with pytest.raises(TypeError, match=r"contact\.id"):
        table.add(C("ab"))  # type: ignore[arg-type]
    assert "ab" not in table and [] not in table


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"local_id": b""}, "local_id"),
        ({"local_id": "abc"}, "local_id"),
        ({"local_id": bytearray(b"a")}, "local_id"),
        ({"local_id": b"a", "k": 0}, "k"),
        ({"local_id": b"a", "k": 2.0}, "k"),
        ({"local_id": b"a", "ping_count": 0}, "ping_count"),
    ],
)
def test_constructor_validation(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        KBucket(**kwargs)


def test_ids_longer_than_local_id_split_past_its_end() -> None:
    """Bits past the local id's end read as 0, so longer ids still spread out."""
    table, events = make_table(b"\x00", 1)
    table.add(C(b"\x00\x01"))
    table.add(C(b"\x00\x02"))
    table.add(C(b"\x00\x00\x01"))
    assert [e[0] for e in events] == ["added", "added", "added"]
    assert len(table) == 3


# -- the diversity rule -------------------------------------------------------


@dataclass(frozen=True, eq=False)
class G:
    """A contact with diversity groups (an "IP" and a "subnet"), or none."""

    id: bytes
    ip: int | None


def g_groups(c: G) -> tuple[int, int] | None:
    return None if c.ip is None else (c.ip, c.ip // 4)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.binary(min_size=2, max_size=2)),
        max_size=300,
    )
)
def test_diversity_counts_stay_exact_through_adds_splits_and_removes(
    ops: list[tuple[bool, bytes]],
) -> None:
    """Short ids and few "IPs" (a function of the id: a contact's groups are
    taken when it is first stored, an update keeps them) force splits and
    crowding; after every step no bucket holds more than the limits of one
    group, the per-bucket counts match a recount, and an exempt (None)
    contact is never refused."""
    rejected: list[G] = []
    t: KBucket[G] = KBucket(
        b"\x00\x00", k=6, group=g_groups, group_limits=(2, 3), on_rejected=rejected.append
    )
    for is_add, cid in ops:
        ip = None if cid[1] % 13 == 12 else cid[1] % 12
        if is_add:
            t.add(G(cid, ip))
        else:
            t.remove(cid)
        for bucket in t.buckets():
            ips = [c.ip for c in bucket if c.ip is not None]
            assert all(ips.count(i) <= 2 for i in ips)
            nets = [i // 4 for i in ips]
            assert all(nets.count(n) <= 3 for n in nets)
        for bucket in [*t._far, t._near]:
            recount: dict[tuple[int, Any], int] = {}
            for cid in bucket:
                for i, g in enumerate(t._group_of.get(cid, ())):
                    recount[(i, g)] = recount.get((i, g), 0) + 1
            assert t._counts.get(id(bucket), {}) == recount
    assert all(c.ip is not None for c in rejected)


def test_without_group_limits_groups_change_nothing() -> None:
    """A group function without limits refuses nobody (the tristanls table)."""
    t: KBucket[G] = KBucket(bytes(32), group=g_groups)
    for i in range(30):
        t.add(G(bytes([0x80 | i]) + bytes(31), 1))
    assert len(t) == 20
