"""Each overflow policy, deterministically: what put returns or raises, which items survive in
which order, and the exact Stats counters after each step (no threads, no waiting)."""

import queue

import pytest

import bpstream
from support import assert_stats, drain, finishes

FULL = "Full"

# Seven put_nowait calls (items 1..7) into an empty stream of capacity 3.
SEVEN_PUTS = {
    "block": dict(
        returns=[True, True, True, FULL, FULL, FULL, FULL],
        survivors=[1, 2, 3],
        stats=dict(produced=3, rejected=4, depth=3, peak_depth=3, unfinished_tasks=3),
    ),
    "drop_oldest": dict(
        returns=[True] * 7,
        survivors=[5, 6, 7],
        stats=dict(produced=7, dropped_evicted=4, depth=3, peak_depth=3, backpressure_events=4, unfinished_tasks=3),
    ),
    "drop_newest": dict(
        returns=[True, True, True, False, False, False, False],
        survivors=[1, 2, 3],
        stats=dict(produced=7, dropped_shed=4, depth=3, peak_depth=3, backpressure_events=4, unfinished_tasks=3),
    ),
    "reject": dict(
        returns=[True, True, True, FULL, FULL, FULL, FULL],
        survivors=[1, 2, 3],
        stats=dict(produced=3, rejected=4, depth=3, peak_depth=3, unfinished_tasks=3),
    ),
    # 1 2 3 | 4 clears [1 2 3] | 5 6 | 7 clears [4 5 6]
    "drop_all": dict(
        returns=[True] * 7,
        survivors=[7],
        stats=dict(produced=7, dropped_cleared=6, depth=1, peak_depth=3, backpressure_events=2, unfinished_tasks=1),
    ),
}


def put_outcome(stream, item, **kwargs):
    try:
        return stream.put(item, **kwargs)
    except bpstream.Full:
        return FULL


@pytest.mark.parametrize("policy", sorted(SEVEN_PUTS))
def test_overflow_without_waiting(make_stream, policy):
    case = SEVEN_PUTS[policy]
    s = make_stream(3, policy)
    returns = [put_outcome(s, i, timeout=0) for i in range(1, 8)]
    assert returns == case["returns"]
    assert len(s) == len(case["survivors"])
    assert_stats(s, **case["stats"])

    assert drain(s) == case["survivors"]
    after = dict(case["stats"], consumed=len(case["survivors"]), depth=0)
    assert_stats(s, **after)


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest", "reject", "drop_all"])
def test_non_blocking_policies_never_wait(make_stream, policy):
    """With timeout=None (wait forever) a full stream still answers at once."""
    s = make_stream(2, policy)
    s.put("a")
    s.put("b")
    outcome = finishes(put_outcome, s, "c", rescue=lambda: s.close(immediate=True))
    assert outcome == {"drop_oldest": True, "drop_newest": False, "reject": FULL, "drop_all": True}[policy]
    st = s.stats()
    assert st.producer_waits == 0
    assert st.producer_wait_seconds == 0


def test_put_returns_true_not_just_truthy(make_stream):
    s = make_stream(2)
    assert s.put(1) is True
    assert s.put_nowait(2) is True


def test_drop_newest_returns_false_and_keeps_backlog_order(make_stream):
    s = make_stream(2, "drop_newest")
    assert s.put("a") is True
    assert s.put("b") is True
    assert s.put("c") is False
    assert s.put_nowait("d") is False
    assert s.get() == "a"
    assert s.put("e") is True
    assert drain(s) == ["b", "e"]
    assert_stats(s, produced=5, consumed=3, dropped_shed=2, peak_depth=2, backpressure_events=2, unfinished_tasks=3)


def test_drop_oldest_interleaved_with_gets(make_stream):
    s = make_stream(3, "drop_oldest")
    for i in (1, 2, 3):
        s.put(i)
    assert s.get() == 1
    s.put(4)  # room: nothing evicted
    s.put(5)  # evicts 2
    assert drain(s) == [3, 4, 5]
    assert_stats(
        s, produced=5, consumed=4, dropped_evicted=1, peak_depth=3, backpressure_events=1, unfinished_tasks=4
    )


def test_drop_all_clears_only_when_full(make_stream):
    s = make_stream(3, "drop_all")
    s.put(1)
    s.put(2)
    assert s.get() == 1
    s.put(3)
    s.put(4)  # depth 3 now, nothing cleared yet
    assert len(s) == 3
    s.put(5)  # clears 2 3 4
    assert drain(s) == [5]
    assert_stats(
        s, produced=5, consumed=2, dropped_cleared=3, peak_depth=3, backpressure_events=1, unfinished_tasks=2
    )


def test_reject_raises_full_catchable_as_queue_full(make_stream):
    s = make_stream(1, "reject")
    s.put("kept")
    with pytest.raises(queue.Full):
        s.put("x")
    with pytest.raises(bpstream.Full):  # the policy rejects; the timeout is never waited for
        finishes(s.put, "x", timeout=30, rescue=lambda: s.close(immediate=True))
    assert s.get() == "kept"
    assert s.put("y") is True
    assert_stats(s, produced=2, consumed=1, rejected=2, depth=1, peak_depth=1, unfinished_tasks=2)


@pytest.mark.parametrize("policy", sorted(SEVEN_PUTS))
def test_capacity_one(make_stream, policy):
    s = make_stream(1, policy)
    returns = [put_outcome(s, i, timeout=0) for i in (1, 2, 3)]
    survivors = drain(s)
    expected = {
        "block": ([True, FULL, FULL], [1]),
        "reject": ([True, FULL, FULL], [1]),
        "drop_newest": ([True, False, False], [1]),
        "drop_oldest": ([True, True, True], [3]),
        "drop_all": ([True, True, True], [3]),
    }[policy]
    assert (returns, survivors) == expected


def test_fifo_order_across_wraparound(make_stream):
    s = make_stream(4)
    out = []
    for i in range(100):
        s.put(i, timeout=0)
        if len(s) == 4:
            out += [s.get_nowait() for _ in range(3)]
    out += drain(s)
    assert out == list(range(100))


def test_peak_depth_is_the_maximum_ever(make_stream):
    s = make_stream(10)
    for i in range(6):
        s.put(i)
    drain(s)
    s.put("x")
    st = s.stats()
    assert (st.depth, st.peak_depth) == (1, 6)


def test_any_object_is_an_item(make_stream):
    s = make_stream(8)
    marker = object()
    for item in (None, 0, "", marker, s, (), [1]):
        s.put(item)
    got = drain(s)
    assert got[:3] == [None, 0, ""]
    assert got[3] is marker and got[4] is s
    assert got[5:] == [(), [1]]


# ------------------------------------------------------------------- put_many / get_many


@pytest.mark.parametrize(
    "policy, returned, survivors, stats",
    [
        ("drop_oldest", 5, [3, 4, 5], dict(produced=5, dropped_evicted=2, backpressure_events=2, unfinished_tasks=3)),
        ("drop_newest", 3, [1, 2, 3], dict(produced=5, dropped_shed=2, backpressure_events=2, unfinished_tasks=3)),
        ("drop_all", 5, [4, 5], dict(produced=5, dropped_cleared=3, backpressure_events=1, unfinished_tasks=2)),
    ],
)
def test_put_many_counts_enqueued_items(make_stream, policy, returned, survivors, stats):
    s = make_stream(3, policy)
    assert s.put_many([1, 2, 3, 4, 5]) == returned
    assert drain(s) == survivors
    assert_stats(s, consumed=len(survivors), peak_depth=3, **stats)


def test_put_many_reject_reports_accepted(make_stream):
    s = make_stream(3, "reject")
    with pytest.raises(bpstream.Full) as info:
        s.put_many([1, 2, 3, 4, 5])
    assert info.value.accepted == 3
    assert drain(s) == [1, 2, 3]
    st = s.stats()
    assert (st.produced, st.consumed, st.depth) == (3, 3, 0)
    assert st.rejected >= 1


def test_put_many_block_timeout_zero_reports_accepted(make_stream):
    s = make_stream(3)
    s.put(0)
    with pytest.raises(bpstream.Full) as info:
        s.put_many([1, 2, 3, 4], timeout=0)
    assert info.value.accepted == 2
    assert drain(s) == [0, 1, 2]
    st = s.stats()
    assert (st.produced, st.producer_waits) == (3, 0)


def test_put_many_accepts_any_iterable(make_stream):
    s = make_stream(10)
    assert s.put_many(i for i in range(3)) == 3
    assert s.put_many(range(3, 5)) == 2
    assert s.put_many(()) == 0
    assert s.put_many("ab") == 2
    assert drain(s) == [0, 1, 2, 3, 4, "a", "b"]


def test_get_many_returns_up_to_max_items_in_order(make_stream):
    s = make_stream(8)
    s.put_many(range(1, 6))
    first = s.get_many(2)
    assert type(first) is list and first == [1, 2]
    assert s.get_many(10) == [3, 4, 5]
    with pytest.raises(bpstream.Empty):
        s.get_many(3, timeout=0)
    assert_stats(s, produced=5, consumed=5, peak_depth=5, unfinished_tasks=5)


def test_get_many_with_a_huge_max_items(make_stream):
    """max_items is an upper bound, not an allocation size."""
    s = make_stream(8)
    s.put_many([1, 2, 3])
    assert s.get_many(2**40) == [1, 2, 3]
