"""The simulator's event queue runs events in exactly a binary heap's order,
and ``Network(pause_gc=True)`` pauses the cyclic collector only while the
loop runs."""

from __future__ import annotations

import gc
import heapq
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdht.errors import StateError
from hyperdht.testing import Network
from hyperdht.testing.network import _BUCKETS_PER_SECOND, _EventQueue

_SLOT = 1.0 / _BUCKETS_PER_SECOND


def _noop() -> None:
    pass


# Offsets from the latest popped time: the same instant, sub-slot and
# slot-boundary steps, typical link delays, timers, the past, far and inf.
_offsets = st.one_of(
    st.just(0.0),
    st.sampled_from([_SLOT, -_SLOT, _SLOT / 2, 2 * _SLOT, 0.01, 0.015, 0.25, 5.0, -1.0]),
    st.floats(min_value=-0.01, max_value=0.05, allow_nan=False),
    st.floats(min_value=0.0, max_value=1e9, allow_nan=False),
    st.just(math.inf),
)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), _offsets),
        st.tuples(st.just("pop"), _offsets),
        st.tuples(st.just("first"), st.just(0.0)),
    ),
    max_size=300,
)


@settings(max_examples=1000, deadline=None)
@given(_ops)
def test_event_queue_pops_in_heap_order(ops: list[tuple[str, float]]) -> None:
    queue = _EventQueue()
    heap: list[tuple[float, int, Any, tuple[Any, ...]]] = []
    now = 0.0
    seq = 0
    for op, offset in ops:
        if op == "push":
            seq += 1
            entry = (now + offset, seq, _noop, ())
            queue.push(entry)
            heapq.heappush(heap, entry)
        elif op == "pop":
            horizon = now + offset
            expected = heap[0] if heap and heap[0][0] <= horizon else None
            if expected is not None:
                heapq.heappop(heap)
                now = max(now, expected[0]) if expected[0] < math.inf else now
            assert queue.pop(horizon) == expected
        else:
            assert queue.first_time() == (heap[0][0] if heap else math.inf)
        assert len(queue) == len(heap)
    while heap:
        assert queue.pop(math.inf) == heapq.heappop(heap)
    assert queue.pop(math.inf) is None
    assert len(queue) == 0


def test_event_queue_negative_times_come_first() -> None:
    # int() rounds a tiny negative time's slot towards 0; the queue must not.
    queue = _EventQueue()
    tiny = (-2.2e-309, 1, _noop, ())
    queue.push(tiny)
    assert queue.pop(-2.2e-309) == tiny
    late, early = (0.5, 2, _noop, ()), (-1.0, 3, _noop, ())
    queue.push(late)
    queue.push(early)
    assert [queue.pop(1.0), queue.pop(1.0), queue.pop(1.0)] == [early, late, None]


def test_event_queue_ties_run_in_scheduling_order() -> None:
    queue = _EventQueue()
    entries = [(0.5, seq, _noop, ()) for seq in range(1, 50)]
    for entry in reversed(entries[25:]):  # insertion order is not seq order
        queue.push(entry)
    for entry in entries[:25]:
        queue.push(entry)
    assert [queue.pop(1.0) for _ in entries] == sorted(entries)


def test_events_scheduled_while_running_keep_their_order() -> None:
    # A callback at t schedules at t (after what is due then), inside the
    # current slot and in the next one; all in (time, order) order.
    net = Network(seed=1)
    ran: list[str] = []

    def first() -> None:
        ran.append("first")
        net.schedule(net.now, ran.append, "same instant")
        net.schedule(net.now + _SLOT / 4, ran.append, "same slot")
        net.schedule(net.now + _SLOT, ran.append, "next slot")

    net.schedule(1.0, first)
    net.schedule(1.0, ran.append, "tie, scheduled before")
    net.schedule(1.0 + _SLOT / 8, ran.append, "in between")
    assert net.run() == 6
    assert ran == [
        "first",
        "tie, scheduled before",
        "same instant",
        "in between",
        "same slot",
        "next slot",
    ]


def test_run_until_leaves_the_clock_at_the_horizon_before_a_later_event() -> None:
    net = Network(seed=1)
    ran: list[float] = []
    net.schedule(2.0, lambda: ran.append(net.now))
    assert net.run(until=1.0) == 0
    assert net.now == 1.0
    # Scheduled now, for a slot before the one the queue looked at.
    net.schedule(1.5, lambda: ran.append(net.now))
    assert net.run() == 2
    assert ran == [1.5, 2.0]
    assert net.pending == 0


def test_pause_gc_pauses_only_while_the_loop_runs() -> None:
    assert gc.isenabled()
    net = Network(seed=1, pause_gc=True)
    seen: list[bool] = []
    net.schedule(0.0, lambda: seen.append(gc.isenabled()))
    net.run()
    assert seen == [False]
    assert gc.isenabled()

    def boom() -> None:
        raise RuntimeError("boom")

    net.schedule(net.now, boom)
    with pytest.raises(RuntimeError, match="boom"):
        net.run()
    assert gc.isenabled()  # restored when a callback raises too


def test_pause_gc_off_by_default_and_leaves_a_disabled_collector_off() -> None:
    net = Network(seed=1)
    assert net.pause_gc is False
    seen: list[bool] = []
    net.schedule(0.0, lambda: seen.append(gc.isenabled()))
    net.run()
    assert seen == [True]
    net.pause_gc = True
    gc.disable()
    try:
        net.schedule(net.now, lambda: seen.append(gc.isenabled()))
        net.run()
        assert seen == [True, False]
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_pause_gc_reentrant_wait_still_raises() -> None:
    net = Network(seed=1, pause_gc=True)
    errors: list[BaseException] = []

    def nested() -> None:
        try:
            net.run()
        except StateError as exc:
            errors.append(exc)

    net.schedule(0.0, nested)
    net.run()
    assert len(errors) == 1
    assert gc.isenabled()
