"""The timer heap the thread hub and the gevent hub share (``hub.TimerHeap``).

The heap is pure data: no clock, no thread, no socket. Its members are
:class:`~hyperdht.drivers.hub.Registration` objects (the gevent hub's have
the same ``_seq`` / ``_armed`` slots). The hand-written cases pin each rule
(arm earlier / later, stale entries, cancel, due order, the compaction
bound); the property test runs random operation sequences against a
dictionary model, with enough re-arms to compact many times, and checks
after every operation that nothing live was lost or delayed and nothing
stale came back.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdht.drivers.hub import HEAP_SLACK, Registration, TimerHeap


def member(name: str = "m") -> Registration:
    return Registration(None, lambda: name, lambda: name)


def test_an_empty_heap_has_no_first_and_nothing_due() -> None:
    heap = TimerHeap()
    assert len(heap) == 0
    assert heap.first() is None
    assert heap.pop_due(math.inf) == []


def test_arm_gives_a_member_one_entry() -> None:
    heap, m = TimerHeap(), member()
    assert heap.arm(m, 5.0)
    assert m.armed == 5.0
    assert len(heap) == 1
    assert heap.first() == 5.0


def test_arming_at_or_after_the_armed_deadline_is_a_no_op() -> None:
    heap, m = TimerHeap(), member()
    heap.arm(m, 5.0)
    assert not heap.arm(m, 5.0)
    assert not heap.arm(m, 9.0)
    assert m.armed == 5.0
    assert len(heap) == 1
    assert heap.pop_due(8.0) == [m]  # at 5, not at 9


def test_arming_earlier_leaves_the_old_entry_stale() -> None:
    heap, m = TimerHeap(), member()
    heap.arm(m, 5.0)
    assert heap.arm(m, 2.0)
    assert m.armed == 2.0
    assert len(heap) == 2  # the entry at 5 is still there, stale
    assert heap.first() == 2.0
    assert heap.pop_due(1.999) == []
    assert heap.pop_due(2.0) == [m]  # due at exactly its deadline
    assert m.armed is None
    assert heap.first() == 5.0  # the stale one (first() may be stale)
    assert heap.pop_due(5.0) == []  # skipped: it does not run twice
    assert len(heap) == 0


def test_a_stale_entry_never_runs_a_re_armed_member_early() -> None:
    heap, m = TimerHeap(), member()
    heap.arm(m, 5.0)
    heap.arm(m, 2.0)
    assert heap.pop_due(2.0) == [m]
    heap.arm(m, 7.0)  # armed again, later than the stale entry at 5
    assert heap.pop_due(6.0) == []
    assert m.armed == 7.0
    assert heap.pop_due(7.0) == [m]


def test_a_member_that_ran_can_be_armed_later_than_before() -> None:
    heap, m = TimerHeap(), member()
    heap.arm(m, 2.0)
    assert heap.pop_due(2.0) == [m]
    assert heap.arm(m, 7.0)
    assert heap.pop_due(6.0) == []
    assert heap.pop_due(7.0) == [m]


def test_cancel_forgets_the_entry_and_a_later_arm_starts_afresh() -> None:
    heap, a, b = TimerHeap(), member("a"), member("b")
    heap.arm(a, 1.0)
    heap.arm(b, 2.0)
    heap.cancel(a)
    heap.cancel(a)  # twice: nothing more
    assert a.armed is None
    assert heap.pop_due(10.0) == [b]
    heap.cancel(b)  # not armed any more: nothing
    heap.arm(a, 20.0)  # later than the cancelled deadline: armed all the same
    assert a.armed == 20.0
    assert heap.pop_due(20.0) == [a]


def test_due_members_come_earliest_first_then_in_arming_order() -> None:
    heap = TimerHeap()
    ms = [member(str(i)) for i in range(6)]
    for m, deadline in zip(ms, [3.0, 1.0, 2.0, 1.0, 9.0, 2.0], strict=True):
        heap.arm(m, deadline)
    assert heap.pop_due(2.5) == [ms[1], ms[3], ms[2], ms[5]]
    assert heap.pop_due(3.0) == [ms[0]]
    assert [m.armed for m in ms] == [None, None, None, None, 9.0, None]
    assert heap.first() == 9.0


def test_negative_infinity_and_infinity_deadlines() -> None:
    heap, now, never = TimerHeap(), member("now"), member("never")
    heap.arm(never, math.inf)
    heap.arm(now, -math.inf)  # the core's "at once"
    assert heap.pop_due(0.0) == [now]
    assert heap.pop_due(1e300) == []
    assert heap.first() == math.inf


def test_stale_entries_stay_below_twice_the_live_ones_plus_the_slack() -> None:
    heap = TimerHeap()
    ms = [member(str(i)) for i in range(3)]
    deadline = 1e6
    for _ in range(20 * HEAP_SLACK):
        for m in ms:
            deadline -= 1.0
            heap.arm(m, deadline)
            assert len(heap) <= 2 * 3 + HEAP_SLACK
    # Compaction kept exactly the live entries: each runs once, at its time.
    assert sorted(m.armed for m in ms if m.armed is not None) == [
        deadline,
        deadline + 1,
        deadline + 2,
    ]
    assert heap.pop_due(deadline + 2) == [ms[2], ms[1], ms[0]]
    assert heap.pop_due(math.inf) == []


def test_cancelled_entries_are_compacted_away_by_the_next_arms() -> None:
    heap = TimerHeap()
    ms = [member(str(i)) for i in range(4 * HEAP_SLACK)]
    for i, m in enumerate(ms):
        heap.arm(m, float(i))
    for m in ms[1:]:
        heap.cancel(m)
    keep = member("keep")
    heap.arm(keep, 0.5)  # 1 + 4*HEAP_SLACK entries, 2 live: compacts
    assert len(heap) == 2
    assert heap.pop_due(math.inf) == [ms[0], keep]


def test_clear_drops_every_entry() -> None:
    heap, a, b = TimerHeap(), member("a"), member("b")
    heap.arm(a, 1.0)
    heap.arm(b, 1.0)
    heap.arm(a, 0.5)
    heap.clear()
    assert len(heap) == 0
    assert heap.first() is None
    assert heap.pop_due(math.inf) == []


def test_the_gevent_hub_uses_the_same_heap_and_slack() -> None:
    gevent_hub = pytest.importorskip("hyperdht.drivers.gevent_hub")
    assert gevent_hub.TimerHeap is TimerHeap
    assert gevent_hub.HEAP_SLACK == HEAP_SLACK


# -- against a model ---------------------------------------------------------------

MEMBERS = 5

# (op, member index, time): arm at time, cancel, or pop everything due at
# time (pops use a clock that never goes back, as the hubs' does).
operations = st.lists(
    st.tuples(
        st.sampled_from(["arm", "arm", "arm", "cancel", "pop"]),
        st.integers(0, MEMBERS - 1),
        st.integers(0, 40),
    ),
    max_size=600,
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_the_heap_behaves_like_a_dict_of_earliest_deadlines(
    ops: list[tuple[str, int, int]],
) -> None:
    heap = TimerHeap()
    ms = [member(str(i)) for i in range(MEMBERS)]
    model: dict[int, tuple[float, int]] = {}  # member -> (deadline, arm order)
    order = 0
    now = -1.0
    for op, i, t in ops:
        if op == "arm":
            deadline = now + t / 4  # ties and re-arms, some already due
            armed = heap.arm(ms[i], deadline)
            assert armed == (i not in model or deadline < model[i][0])
            if armed:
                order += 1
                model[i] = (deadline, order)
            assert len(heap) <= 2 * len(model) + HEAP_SLACK
        elif op == "cancel":
            heap.cancel(ms[i])
            model.pop(i, None)
        else:
            now += t / 8
            due = sorted((k for k, (d, _) in model.items() if d <= now), key=lambda k: model[k])
            assert heap.pop_due(now) == [ms[k] for k in due]
            for k in due:
                del model[k]
        assert [m.armed for m in ms] == [
            model[k][0] if k in model else None for k in range(MEMBERS)
        ]
        live = min((d for d, _ in model.values()), default=None)
        first = heap.first()
        # first() may be a stale entry's, never later than the earliest live one.
        assert (first is None) == (len(heap) == 0)
        assert live is None or (first is not None and first <= live)
    assert heap.pop_due(math.inf) == [ms[k] for k in sorted(model, key=lambda k: model[k])]
