"""A Kademlia routing table: k-buckets in a binary tree around the local id.

Follows tristanls' ``k-bucket`` (the table dht-rpc uses) and the Go port's
``kbucket`` package. Contacts are any objects with a ``bytes`` ``id``; the
table orders them by the XOR distance of their ids to a target, compared as
big-endian unsigned numbers.

Shape of the tree
-----------------
The table starts as one bucket. When a bucket is full and a new contact
arrives, the bucket splits on the next bit of the id, but only if its range
holds the local id; the other half is marked "don't split" (tristanls'
``dontSplit``) and stays a single bucket for ever. So the tree is always a
comb: at depth ``d`` one leaf ("far bucket" ``d``) holds the contacts whose
ids first differ from the local id at bit ``d``, and the other branch goes on
towards the local id, ending in the one leaf that may still split (the "near
bucket"). This module stores exactly that tree, as a list of far buckets
indexed by depth plus the near bucket, which lets :meth:`KBucket.add` find a
contact's bucket with one XOR instead of one step per level.

Ids of any length may be mixed, as in tristanls: bits past the end of an id
read as 0 when placing it in the tree, and :func:`distance` between ids of
different lengths treats the missing bytes as differing in every bit.

A full bucket that cannot split does not take the new contact; instead
``on_ping(old, new)`` is called with the ``ping_count`` least recently seen
contacts of that bucket, so the owner can ping them and, if one does not
answer, :meth:`KBucket.remove` it and :meth:`KBucket.add` the new contact.

Diversity (optional, not in tristanls): with ``group`` and ``group_limits``
a new contact is refused (``on_rejected``) when its bucket already holds
``group_limits[i]`` contacts whose ``group(contact)[i]`` equals its own, for
any ``i``: e.g. groups (IP, /24) with limits (2, 4), after libtorrent's
``restrict_routing_ips``. A refused contact never triggers ``on_ping``: once
a host has its share of a bucket, its further ids neither enter it nor make
the owner ping (and so evict) the contacts it holds. ``group`` returning
None exempts a contact; a contact's groups are taken when it is first
stored (an update of a known id keeps them). Checks are O(1): each bucket
keeps a count per group.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Hashable, Iterator, Sequence
from itertools import islice
from typing import Generic, Protocol, TypeVar

from .errors import ArgumentError, ArgumentTypeError

__all__ = ["Contact", "KBucket", "distance"]


class Contact(Protocol):
    """What the table stores: any object with a ``bytes`` ``id`` (e.g. ``ipencoding.Node``)."""

    @property
    def id(self) -> bytes:
        """The contact's id."""
        ...


C = TypeVar("C", bound=Contact)

# first_diff() of an id that equals the local id once both are zero-padded:
# such an id never leaves the near bucket, however deep the tree goes.
_NEVER = 1 << 62

# closest_key() gives up on a bucket whose ids need a longer window than
# this to tell apart: its key space (2 ** bits) would be too large to memoise.
_MAX_WINDOW = 14
# closest_key()'s "no window computed for this bucket yet".
_UNKNOWN = (-1, -1)


def distance(a: bytes, b: bytes) -> int:
    """Return the XOR distance between two ids as a non-negative int.

    For ids of equal length this is their XOR read as a big-endian number.
    For ids of different lengths it is tristanls' definition: XOR over the
    common prefix, then a 0xff byte for each byte the shorter id lacks (done
    here exactly, where JavaScript loses precision past 53 bits).
    """
    la = len(a)
    lb = len(b)
    if la == lb:
        return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    m = min(la, lb)
    extra = 8 * (max(la, lb) - m)
    x = int.from_bytes(a[:m], "big") ^ int.from_bytes(b[:m], "big")
    return (x << extra) | ((1 << extra) - 1)


class KBucket(Generic[C]):
    """A routing table of contacts, at most ``k`` per bucket, closest first on demand.

    ``add`` a contact whenever it is seen; ``closest(target, n)`` gives the
    ``n`` contacts nearest to ``target``. Within a bucket contacts are kept
    least recently seen first; adding a known id moves it to the end.

    Callbacks (all optional, all called after the table has changed, so they
    may modify the table):

    * ``arbiter(incumbent, candidate) -> winner`` picks which of two contacts
      with the same id to keep; by default the candidate (newer) wins;
    * ``on_added(contact)``: a new contact was stored;
    * ``on_removed(contact)``: a contact was removed by :meth:`remove`;
    * ``on_updated(incumbent, selection)``: a known id was added again and
      ``selection`` (the arbiter's pick) now stands for it;
    * ``on_ping(old_contacts, new_contact)``: ``new_contact`` was not stored
      because its bucket is full and cannot split; ``old_contacts`` are that
      bucket's ``ping_count`` least recently seen contacts;
    * ``on_rejected(contact)``: a new contact was refused by the diversity
      rule (``group``, see the module docstring).
    """

    __slots__ = (
        "_by_int",
        "_counts",
        "_far",
        "_group_limits",
        "_group_of",
        "_lengths",
        "_local_int",
        "_local_len",
        "_max_len",
        "_near",
        "_where",
        "_windows",
        "arbiter",
        "changes",
        "group",
        "k",
        "local_id",
        "on_added",
        "on_ping",
        "on_rejected",
        "on_removed",
        "on_updated",
        "ping_count",
    )

    local_id: bytes
    """The id the tree is built around; never stored as a contact."""
    k: int
    """Maximum contacts per bucket."""
    ping_count: int
    """How many contacts ``on_ping`` gets."""
    group: Callable[[C], Sequence[Hashable] | None] | None
    """The diversity groups of a contact (None: no diversity rule)."""
    changes: int
    """Counts the changes that can alter a :meth:`closest` answer (a contact
    stored, removed, or replaced by another object for its id; a split):
    equal counts mean equal answers, the contract of :meth:`closest_key`."""

    def __init__(
        self,
        local_id: bytes,
        *,
        k: int = 20,
        ping_count: int = 3,
        arbiter: Callable[[C, C], C] | None = None,
        on_added: Callable[[C], object] | None = None,
        on_removed: Callable[[C], object] | None = None,
        on_updated: Callable[[C, C], object] | None = None,
        on_ping: Callable[[list[C], C], object] | None = None,
        group: Callable[[C], Sequence[Hashable] | None] | None = None,
        group_limits: Sequence[int] = (),
        on_rejected: Callable[[C], object] | None = None,
    ) -> None:
        """Make an empty table around *local_id*.

        Raises ValueError if *local_id* is not non-empty bytes, *k* or
        *ping_count* is not an int >= 1, or a *group_limits* entry is not.
        """
        if not isinstance(local_id, bytes) or not local_id:
            raise ArgumentError(f"local_id must be non-empty bytes, got {local_id!r}")
        if type(k) is not int or k < 1:
            raise ArgumentError(f"k must be an int >= 1, got {k!r}")
        if type(ping_count) is not int or ping_count < 1:
            raise ArgumentError(f"ping_count must be an int >= 1, got {ping_count!r}")
        self.local_id = local_id
        self.k = k
        self.ping_count = ping_count
        self.arbiter = arbiter
        self.on_added = on_added
        self.on_removed = on_removed
        self.on_updated = on_updated
        self.on_ping = on_ping
        for limit in group_limits:
            if type(limit) is not int or limit < 1:
                raise ArgumentError(f"group_limits must be ints >= 1, got {group_limits!r}")
        self.group = group
        self._group_limits = tuple(group_limits)
        # Diversity bookkeeping: the groups of each stored contact (taken
        # when it is first stored) and, per bucket (by identity), how many
        # contacts of each (position, group) it holds: O(1) checks.
        self._group_of: dict[bytes, tuple[Hashable, ...]] = {}
        self._counts: dict[int, dict[tuple[int, Hashable], int]] = {}
        self.on_rejected = on_rejected
        self._local_int = int.from_bytes(local_id, "big")
        self._local_len = len(local_id)
        # Buckets are dicts id -> contact; insertion order is the
        # least-recently-seen order (oldest first).
        self._far: list[dict[bytes, C]] = []
        self._near: dict[bytes, C] = {}
        # id -> the bucket holding it, so known ids need no tree lookup.
        self._where: dict[bytes, dict[bytes, C]] = {}
        # id length -> number of stored contacts with ids of that length;
        # closest() can only prune the walk when they all match the target's.
        self._lengths: dict[int, int] = {}
        # Longest id ever seen (local id included): past 8 * this many bits
        # every id reads as zeros, so splitting further cannot separate any.
        self._max_len = len(local_id)
        # closest()'s candidates, per bucket (by identity) that it has
        # visited: int(id) -> contact, so a call sorts ints with a C-level
        # key (``t.__xor__``) instead of converting every id again. Kept
        # exact on every change; only while all stored ids have one length
        # (two lengths may give one int), dropped when a second appears.
        self._by_int: dict[int, dict[int, C]] = {}
        # closest_key()'s windows, per bucket (by identity): (shift, mask)
        # of the fewest bits below the bucket's common prefix that still
        # tell its ids apart. Dropped when the bucket's ids change.
        self._windows: dict[int, tuple[int, int] | None] = {}
        self.changes = 0

    def __repr__(self) -> str:
        return (
            f"KBucket(local_id={self.local_id.hex()}, k={self.k}, "
            f"contacts={len(self._where)}, depth={len(self._far)})"
        )

    # -- lookups ---------------------------------------------------------

    def _first_diff(self, id: bytes) -> int:
        """Index of the first bit where *id* and the local id differ (zero-padded)."""
        n = len(id)
        local_len = self._local_len
        if n == local_len:
            x = int.from_bytes(id, "big") ^ self._local_int
            bits = 8 * n
        elif n < local_len:
            x = (int.from_bytes(id, "big") << (8 * (local_len - n))) ^ self._local_int
            bits = 8 * local_len
        else:
            x = int.from_bytes(id, "big") ^ (self._local_int << (8 * (n - local_len)))
            bits = 8 * n
        return bits - x.bit_length() if x else _NEVER

    def get(self, id: bytes) -> C | None:
        """Return the contact with this id, or None."""
        bucket = self._where.get(id)
        return None if bucket is None else bucket[id]

    def __contains__(self, id: object) -> bool:
        """Whether a contact with this id is stored."""
        try:
            return id in self._where
        except TypeError:  # unhashable
            return False

    def count(self) -> int:
        """Return the number of stored contacts."""
        return len(self._where)

    def __len__(self) -> int:
        """The number of stored contacts."""
        return len(self._where)

    def __iter__(self) -> Iterator[C]:
        """Iterate over a snapshot of all contacts, in :meth:`to_list` order."""
        return iter(self.to_list())

    def to_list(self) -> list[C]:
        """Return all contacts, bucket by bucket in tree order (lowest ids' bucket first)."""
        out: list[C] = []
        for bucket in self._walk(bytes(self._local_len)):
            out.extend(bucket.values())
        return out

    def buckets(self) -> list[list[C]]:
        """Return the contents of every bucket, in tree order (for inspection and stats)."""
        return [list(bucket.values()) for bucket in self._walk(bytes(self._local_len))]

    # -- changes ---------------------------------------------------------

    def add(self, contact: C) -> None:
        """Add or refresh a contact (call on every message from it).

        A known id is replaced by the arbiter's pick, which becomes the most
        recently seen of its bucket (``on_updated``). A new contact is stored
        (``on_added``) if its bucket has room or can split; otherwise
        ``on_ping`` is called and the contact is dropped. A new contact that
        the diversity rule refuses is dropped with ``on_rejected`` (and no
        ``on_ping``). A contact with the local id is ignored.

        Raises TypeError if ``contact.id`` is not bytes, ValueError if the
        arbiter returns a contact with another id.
        """
        cid = contact.id
        if type(cid) is not bytes:
            raise ArgumentTypeError(f"contact.id must be bytes, got {type(cid).__name__}")
        bucket = self._where.get(cid)
        if bucket is not None:
            incumbent = bucket[cid]
            if self.arbiter is None:
                selection = contact
            else:
                selection = self.arbiter(incumbent, contact)
                if selection.id != cid:
                    raise ArgumentError("arbiter returned a contact with a different id")
            del bucket[cid]
            bucket[cid] = selection
            if selection is not incumbent:
                self.changes += 1
                if self._by_int:
                    cache = self._by_int.get(id(bucket))
                    if cache is not None:
                        cache[int.from_bytes(cid, "big")] = selection
            if self.on_updated is not None:
                self.on_updated(incumbent, selection)
            return
        if cid == self.local_id:
            return

        n = len(cid)
        if n > self._max_len:
            self._max_len = n
        fd = self._first_diff(cid)
        k = self.k
        group = self.group
        groups = None
        if group is not None and self._group_limits:
            g = group(contact)
            if g is not None:
                groups = tuple(g)[: len(self._group_limits)]
        while True:
            depth = len(self._far)
            if fd < depth:
                bucket = self._far[fd]
                if len(bucket) >= k:
                    break
            else:
                bucket = self._near
                if len(bucket) >= k:
                    if depth >= 8 * self._max_len:
                        break
                    self._split()
                    continue
            if groups is not None and self._crowded(bucket, groups):
                self._reject(contact)
                return
            bucket[cid] = contact
            if groups is not None:
                self._group_of[cid] = groups
                self._count(bucket, groups, 1)
            self._where[cid] = bucket
            self.changes += 1
            if self._windows:
                self._windows.pop(id(bucket), None)
            lengths = self._lengths
            if n in lengths:
                lengths[n] += 1
                if self._by_int:
                    cache = self._by_int.get(id(bucket))
                    if cache is not None:
                        cache[int.from_bytes(cid, "big")] = contact
            else:
                lengths[n] = 1
                self._by_int.clear()
            if self.on_added is not None:
                self.on_added(contact)
            return
        if groups is not None and self._crowded(bucket, groups):
            self._reject(contact)
            return
        if self.on_ping is not None:
            self.on_ping(list(islice(bucket.values(), self.ping_count)), contact)

    def _crowded(self, bucket: dict[bytes, C], groups: tuple[Hashable, ...]) -> bool:
        """Whether *bucket* already holds as many contacts of one of *groups* as allowed."""
        counts = self._counts.get(id(bucket))
        if not counts:
            return False
        limits = self._group_limits
        return any(counts.get((i, g), 0) >= limits[i] for i, g in enumerate(groups))

    def _count(self, bucket: dict[bytes, C], groups: tuple[Hashable, ...], delta: int) -> None:
        counts = self._counts.setdefault(id(bucket), {})
        for i, g in enumerate(groups):
            key = (i, g)
            n = counts.get(key, 0) + delta
            if n:
                counts[key] = n
            else:
                del counts[key]

    def _reject(self, contact: C) -> None:
        if self.on_rejected is not None:
            self.on_rejected(contact)

    def _split(self) -> None:
        """Split the near bucket on the next bit: who differs there moves to a new far bucket."""
        d = len(self._far)
        far: dict[bytes, C] = {}
        near = self._near
        self.changes += 1
        self._by_int.pop(id(near), None)
        self._windows.pop(id(near), None)
        first_diff = self._first_diff
        where = self._where
        group_of = self._group_of
        for cid in [cid for cid in near if first_diff(cid) == d]:
            far[cid] = near.pop(cid)
            where[cid] = far
            groups = group_of.get(cid)
            if groups is not None:
                self._count(near, groups, -1)
                self._count(far, groups, 1)
        self._far.append(far)

    def remove(self, id: bytes) -> C | None:
        """Remove and return the contact with this id (None if absent); calls ``on_removed``.

        Buckets never merge back, as in tristanls.
        """
        bucket = self._where.pop(id, None)
        if bucket is None:
            return None
        contact = bucket.pop(id)
        self.changes += 1
        if self._windows:
            self._windows.pop(builtins.id(bucket), None)
        if self._by_int:
            cache = self._by_int.get(builtins.id(bucket))
            if cache is not None:
                del cache[int.from_bytes(id, "big")]
        groups = self._group_of.pop(id, None)
        if groups is not None:
            self._count(bucket, groups, -1)
        n = len(id)
        left = self._lengths[n] - 1
        if left:
            self._lengths[n] = left
        else:
            del self._lengths[n]
        if self.on_removed is not None:
            self.on_removed(contact)
        return contact

    # -- closest ---------------------------------------------------------

    def _walk(self, target: bytes) -> Iterator[dict[bytes, C]]:
        """Yield the buckets nearest-first for *target*: a depth-first walk of the
        tree that at each node enters the child on the target's side first.

        For ids as long as the target, every contact of a bucket yielded
        earlier is closer to the target than every contact of one yielded
        later (their lowest common ancestor splits on a bit where the earlier
        one agrees with the target and the later one does not).
        """
        far = self._far
        depth = len(far)
        local_len = self._local_len
        tlen = len(target)
        # target XOR local id, both zero-padded to the same width.
        width = max(tlen, local_len)
        x = (int.from_bytes(target, "big") << (8 * (width - tlen))) ^ (
            self._local_int << (8 * (width - local_len))
        )
        top = 8 * width - 1
        deferred: list[dict[bytes, C]] = []
        for d in range(min(depth, top + 1)):
            if (x >> (top - d)) & 1:
                # The target differs from the local id here: the far bucket
                # is on its side, the rest of the tree on the other.
                if far[d]:
                    yield far[d]
            elif far[d]:
                deferred.append(far[d])
        # Past the target's and local id's bits both read 0: the target
        # follows the local id, far buckets there come last.
        deferred.extend(b for b in far[top + 1 :] if b)
        yield self._near
        yield from reversed(deferred)

    def closest(self, target: bytes, n: int | None = None) -> list[C]:
        """Return up to *n* contacts (all if None) nearest to *target*, nearest first.

        Nearness is :func:`distance`. Only the buckets nearest to the target
        are visited and sorted when every stored id is as long as *target*
        (the normal case); with mixed lengths all contacts are sorted.

        Raises TypeError if *target* is not bytes, ValueError if *n* is negative.
        """
        if not isinstance(target, bytes):
            raise ArgumentTypeError(f"target must be bytes, got {type(target).__name__}")
        total = len(self._where)
        if n is None:
            n = total
        elif n < 0:
            raise ArgumentError(f"n must be >= 0, got {n!r}")
        if n == 0 or total == 0:
            return []
        lengths = self._lengths
        tlen = len(target)
        if len(lengths) == 1 and tlen in lengths:
            return self._closest_same_length(target, n)
        everything = [c for bucket in self._walk(target) for c in bucket.values()]
        everything.sort(key=lambda c: distance(c.id, target))
        return everything[:n]

    def _candidates(self, bucket: dict[bytes, C]) -> dict[int, C]:
        """*bucket* as int(id) -> contact, cached (see ``_by_int``)."""
        cache = self._by_int.get(id(bucket))
        if cache is None:
            from_bytes = int.from_bytes
            cache = self._by_int[id(bucket)] = {from_bytes(i, "big"): c for i, c in bucket.items()}
        return cache

    def _closest_same_length(self, target: bytes, n: int) -> list[C]:
        """closest() when every stored id is as long as *target* (and n >= 1).

        The same contacts in the same order as sorting the buckets that
        :meth:`_walk` yields until they hold *n* contacts (tristanls'
        ``closest``): distinct ids of one length have distinct distances,
        so the order is unique. The walk is inlined: most targets differ
        from the local id early, and their first bucket holds enough.
        """
        t = int.from_bytes(target, "big")
        _, bucket = self._lead(t, len(target))
        if len(bucket) >= n:
            cands = self._candidates(bucket)
        else:
            cands = {}
            for bucket in self._walk(target):
                cands.update(self._candidates(bucket))
                if len(cands) >= n:
                    break
        keys = sorted(cands, key=t.__xor__)
        if len(keys) > n:
            del keys[n:]
        return list(map(cands.__getitem__, keys))

    def _lead(self, t: int, tlen: int) -> tuple[int, dict[bytes, C]]:
        """The first bucket :meth:`_walk` visits for the target ``t`` (its
        int, ``tlen`` bytes long), unless that bucket is an empty far bucket
        (the walk skips those): the far bucket at the first bit where the
        target leaves the local id's path, else the near bucket. Returns
        (its index in ``_far``, -1 for the near bucket; the bucket)."""
        far = self._far
        local_len = self._local_len
        if tlen == local_len:
            x = t ^ self._local_int
            width = tlen
        else:
            width = tlen if tlen > local_len else local_len
            x = (t << (8 * (width - tlen))) ^ (self._local_int << (8 * (width - local_len)))
        d = 8 * width - x.bit_length()
        if x and d < len(far):
            return d, far[d]
        return -1, self._near

    def _window(self, bucket: dict[bytes, C]) -> tuple[int, int] | None:
        """(shift, mask) such that ``(id >> shift) & mask`` differs for every
        two ids of *bucket*, and every id agrees above the window; None when
        that takes more than ``_MAX_WINDOW`` bits. Cached per bucket."""
        key = id(bucket)
        if key in self._windows:
            return self._windows[key]
        ints = list(self._candidates(bucket))
        first = ints[0]
        diff = 0
        for v in ints:
            diff |= v ^ first
        top = diff.bit_length()  # every id agrees on the bits from here up
        bits = min(top, max(1, (len(ints) - 1).bit_length()))
        while len({v >> (top - bits) for v in ints}) < len(ints):
            bits += 1
        window = None if bits > _MAX_WINDOW else (top - bits, (1 << bits) - 1)
        self._windows[key] = window
        return window

    def closest_key(self, target: bytes, n: int) -> Hashable | None:
        """A small key for ``closest(target, n)``, or None.

        While :attr:`changes` stays the same, two targets with equal keys
        get the same answer from :meth:`closest` (the same contacts in the
        same order), so a caller may memoise what it derives from an answer
        (e.g. its encoding) under the key. There is a key when every stored
        id is as long as *target* and the target's first bucket alone holds
        *n* contacts: the answer is then that bucket in the order of the
        target's bits in the few positions that tell the bucket's ids apart
        (see ``_window``), so a bucket of 20 has some 2**8 keys, not one per
        target. None otherwise (ask :meth:`closest`); never raises.
        """
        lengths = self._lengths
        if (
            len(lengths) != 1
            or type(target) is not bytes
            or len(target) not in lengths
            or type(n) is not int
            or n < 1
        ):
            return None
        t = int.from_bytes(target, "big")
        if len(target) == self._local_len:
            # _lead's equal-length case inlined (keep the two in step):
            # this runs for every _find_node a node answers.
            x = t ^ self._local_int
            index = 8 * len(target) - x.bit_length()
            far = self._far
            if x and index < len(far):
                bucket = far[index]
            else:
                index, bucket = -1, self._near
        else:
            index, bucket = self._lead(t, len(target))
        if len(bucket) < n:
            return None
        window = self._windows.get(id(bucket), _UNKNOWN)
        if window is _UNKNOWN:
            window = self._window(bucket)
        if window is None:
            return None
        return (index, n, (t >> window[0]) & window[1])
