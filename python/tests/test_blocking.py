"""Blocking put/get really block (BlockingTestMixin pattern), wake when the other side acts,
honour their timeouts, and are counted in the wait statistics."""

import math
import time

import pytest

import bpstream
from support import (
    BLOCK_PROBE,
    Call,
    assert_stats,
    assert_timed_out,
    do_blocking_test,
    drain,
    finishes,
    timed_raise,
)


def closer(s):
    return lambda: s.close(immediate=True)


# ------------------------------------------------------------------------- get side


@pytest.mark.parametrize("timeout", [None, 30, math.inf, 1e12], ids=["none", "30s", "inf", "1e12"])
def test_get_blocks_until_put(make_stream, timeout):
    s = make_stream(3)
    got = do_blocking_test(lambda: s.get(timeout=timeout), lambda: s.put("x"), rescue=closer(s))
    assert got == "x"
    st = assert_stats(s, produced=1, consumed=1, peak_depth=1, consumer_waits=1, unfinished_tasks=1)
    assert st.consumer_wait_seconds >= BLOCK_PROBE / 2
    assert st.producer_wait_seconds == 0


def test_get_times_out_with_empty(make_stream):
    s = make_stream(3)
    elapsed, _ = timed_raise(bpstream.Empty, s.get, timeout=0.25)
    assert_timed_out(elapsed, 0.25)
    st = assert_stats(s, consumer_waits=1)
    assert st.consumer_wait_seconds >= 0.2


def test_get_many_blocks_until_items_arrive(make_stream):
    s = make_stream(8)
    got = do_blocking_test(lambda: s.get_many(5), lambda: s.put_many([1, 2, 3]), rescue=closer(s))
    assert 1 <= len(got) <= 3
    assert got + drain(s) == [1, 2, 3]
    assert s.stats().consumer_waits == 1


def test_get_many_times_out_with_empty(make_stream):
    s = make_stream(3)
    elapsed, _ = timed_raise(bpstream.Empty, s.get_many, 4, timeout=0.2)
    assert_timed_out(elapsed, 0.2)
    assert s.stats().consumer_waits == 1


def test_iteration_blocks_until_put(make_stream):
    s = make_stream(3)
    it = iter(s)
    got = do_blocking_test(lambda: next(it), lambda: s.put("x"), rescue=closer(s))
    assert got == "x"


# ------------------------------------------------------------------------- put side


@pytest.mark.parametrize("timeout", [None, 30, math.inf, 1e12], ids=["none", "30s", "inf", "1e12"])
def test_put_blocks_until_get(make_stream, timeout):
    s = make_stream(1)
    s.put("a")
    taken = []
    result = do_blocking_test(lambda: s.put("b", timeout=timeout), lambda: taken.append(s.get()), rescue=closer(s))
    assert result is True
    assert taken == ["a"]
    assert drain(s) == ["b"]
    st = assert_stats(
        s, produced=2, consumed=2, peak_depth=1, producer_waits=1, backpressure_events=1, unfinished_tasks=2
    )
    assert st.producer_wait_seconds >= BLOCK_PROBE / 2
    assert st.consumer_wait_seconds == 0


def test_put_times_out_with_full(make_stream):
    s = make_stream(1)
    s.put("a")
    elapsed, _ = timed_raise(bpstream.Full, s.put, "b", timeout=0.25)
    assert_timed_out(elapsed, 0.25)
    assert drain(s) == ["a"]
    # The put had to wait (a backpressure event) and then failed (rejected, never produced).
    st = assert_stats(
        s,
        produced=1,
        consumed=1,
        peak_depth=1,
        rejected=1,
        producer_waits=1,
        backpressure_events=1,
        unfinished_tasks=1,
    )
    assert st.producer_wait_seconds >= 0.2


def test_put_many_blocks_until_room(make_stream):
    s = make_stream(2)
    taken = []
    count = do_blocking_test(
        lambda: s.put_many([1, 2, 3, 4]), lambda: taken.extend([s.get(), s.get()]), rescue=closer(s)
    )
    assert count == 4
    assert taken + drain(s) == [1, 2, 3, 4]
    assert s.stats().producer_waits >= 1


def test_put_many_times_out_with_accepted(make_stream):
    s = make_stream(2)
    elapsed, exc = timed_raise(bpstream.Full, s.put_many, [1, 2, 3], timeout=0.2)
    assert_timed_out(elapsed, 0.2)
    assert exc.accepted == 2
    assert drain(s) == [1, 2]


def test_put_many_one_timeout_covers_the_whole_call(make_stream):
    """A consumer frees one slot every 0.2 s. Each single item would fit within 0.5 s, but ten
    items cannot all go in within 0.5 s: one timeout for the call means Full."""
    s = make_stream(1)
    stop = []

    def slow_consumer():
        while not stop:
            try:
                s.get(timeout=0.2)
            except bpstream.Empty:
                pass
            except bpstream.Closed:
                return
            if not stop:
                time.sleep(0.2)

    consumer = Call(slow_consumer)
    try:
        with pytest.raises(bpstream.Full) as info:
            s.put_many(range(10), timeout=0.5)
        assert 1 <= info.value.accepted < 10
    finally:
        stop.append(True)
        s.close(immediate=True)
        consumer.outcome()


# ------------------------------------------------------------------ timeout=0 / nowait


def test_zero_timeout_never_waits(make_stream):
    s = make_stream(1)
    rescue = closer(s)
    with pytest.raises(bpstream.Empty):
        finishes(s.get, timeout=0, rescue=rescue)
    with pytest.raises(bpstream.Empty):
        finishes(s.get_nowait, rescue=rescue)
    with pytest.raises(bpstream.Empty):
        finishes(s.get_many, 3, timeout=0, rescue=rescue)
    s.put("a")
    with pytest.raises(bpstream.Full):
        finishes(s.put, "b", timeout=0, rescue=rescue)
    with pytest.raises(bpstream.Full):
        finishes(s.put_nowait, "b", rescue=rescue)
    assert s.get_nowait() == "a"
    st = assert_stats(s, produced=1, consumed=1, peak_depth=1, rejected=2, unfinished_tasks=1)
    assert st.producer_wait_seconds == 0 and st.consumer_wait_seconds == 0


def test_nowait_succeeds_when_possible(make_stream):
    s = make_stream(2)
    assert s.put_nowait("a") is True
    assert s.get_nowait() == "a"
    assert_stats(s, produced=1, consumed=1, peak_depth=1, unfinished_tasks=1)


# ------------------------------------------------------------------ several waiters


def test_each_blocked_getter_gets_one_item(make_stream):
    s = make_stream(8)
    getters = [Call(s.get) for _ in range(3)]
    for call in getters:
        call.assert_blocked()
    s.put_many(["a", "b", "c"])
    assert sorted(call.outcome() for call in getters) == ["a", "b", "c"]
    peak = s.stats().peak_depth  # woken getters may race the put_many
    assert 1 <= peak <= 3
    st = assert_stats(s, produced=3, consumed=3, peak_depth=peak, consumer_waits=3, unfinished_tasks=3)
    assert st.consumer_wait_seconds >= 3 * BLOCK_PROBE / 2


def test_each_blocked_putter_gets_in_once(make_stream):
    s = make_stream(1)
    s.put("first")
    putters = [Call(s.put, name) for name in ("a", "b", "c")]
    for call in putters:
        call.assert_blocked()
    got = [s.get(timeout=5) for _ in range(4)]
    assert [call.outcome() for call in putters] == [True, True, True]
    assert got[0] == "first" and sorted(got[1:]) == ["a", "b", "c"]
    st = s.stats()
    # Our gets may or may not have had to wait for a woken putter: consumer_waits is 0..3.
    assert (st.produced, st.consumed, st.depth, st.peak_depth) == (4, 4, 0, 1)
    assert (st.producer_waits, st.backpressure_events, st.rejected, st.dropped) == (3, 3, 0, 0)


def test_stream_is_usable_while_a_call_is_blocked(make_stream):
    s = make_stream(2)
    getter = Call(s.get)
    getter.assert_blocked()
    rescue = closer(s)
    st = finishes(s.stats, rescue=rescue)
    assert st.depth == 0
    assert finishes(len, s, rescue=rescue) == 0
    assert "depth=0" in finishes(repr, s, rescue=rescue)
    s.put("x")
    assert getter.outcome() == "x"
