"""close(), close(immediate=True), draining, iteration's end, and the context manager."""

import weakref

import pytest

import bpstream
from support import Call, Item, assert_stats, counters, do_blocking_test, finishes, refcounts


def test_buffered_items_are_delivered_after_close(make_stream):
    s = make_stream(4)
    s.put_many([1, 2])
    assert s.closed is False
    assert s.close() is None
    assert s.closed is True
    with pytest.raises(bpstream.Closed):
        s.put(3)
    with pytest.raises(bpstream.Closed):
        s.put_nowait(3)
    assert s.get() == 1
    assert s.get_many(5) == [2]
    rescue = lambda: s.close(immediate=True)  # noqa: E731
    # Closed and drained: every get says Closed at once, never Empty, never waits.
    for call, args in [
        (s.get, ()),
        (s.get_nowait, ()),
        (s.get, (30,)),
        (s.get_many, (3,)),
        (s.get_many, (3, 0)),
    ]:
        with pytest.raises(bpstream.Closed):
            finishes(call, *args, rescue=rescue)
    st = assert_stats(s, produced=2, consumed=2, peak_depth=2, unfinished_tasks=2)
    assert st.closed is True


def test_iteration_ends_after_close_and_drain(make_stream):
    s = make_stream(4)
    s.put_many("abc")
    s.close()
    assert list(s) == ["a", "b", "c"]
    assert list(s) == []


def test_for_loop_in_a_consumer_thread_ends_on_close(make_stream):
    s = make_stream(4)
    consumer = Call(list, s)
    for i in range(100):
        s.put(i, timeout=5)
    s.close()
    assert consumer.outcome() == list(range(100))
    st = s.stats()
    assert (st.produced, st.consumed, st.depth) == (100, 100, 0)


def test_close_wakes_a_blocked_getter(make_stream):
    s = make_stream(2)
    with pytest.raises(bpstream.Closed):
        do_blocking_test(s.get, s.close, rescue=lambda: s.close(immediate=True))
    assert s.stats().consumer_waits == 1


def test_close_wakes_a_blocked_putter_and_leaves_it_the_item(make_stream):
    s = make_stream(1)
    s.put("a")
    item = Item()
    base = refcounts([item])
    with pytest.raises(bpstream.Closed):
        do_blocking_test(lambda: s.put(item), s.close, rescue=lambda: s.close(immediate=True))
    assert refcounts([item]) == base
    assert list(s) == ["a"]  # the buffered item is still delivered
    st = s.stats()
    assert (st.produced, st.consumed, st.depth, st.producer_waits) == (1, 1, 0, 1)


def test_close_wakes_a_blocked_put_many_with_accepted(make_stream):
    s = make_stream(2)
    with pytest.raises(bpstream.Closed) as info:
        do_blocking_test(lambda: s.put_many([1, 2, 3, 4]), s.close, rescue=lambda: s.close(immediate=True))
    assert info.value.accepted == 2
    assert list(s) == [1, 2]


@pytest.mark.parametrize("immediate", [False, True])
def test_close_wakes_every_waiter(make_stream, immediate):
    full = make_stream(1)
    full.put("x")
    empty = make_stream(1)
    putters = [Call(full.put, i) for i in range(3)]
    getters = [Call(empty.get) for _ in range(2)] + [Call(empty.get_many, 4), Call(list, empty)]
    for call in putters + getters:
        call.assert_blocked()
    full.close(immediate=immediate)
    empty.close(immediate=immediate)
    for call in putters + getters[:3]:
        with pytest.raises(bpstream.Closed):
            call.outcome()
    assert getters[3].outcome() == []
    assert drain_or_closed(full) == ([] if immediate else ["x"])


def drain_or_closed(s):
    out = []
    while True:
        try:
            out.append(s.get_nowait())
        except bpstream.Closed:
            return out


def test_immediate_close_discards_and_releases_the_backlog(make_stream):
    s = make_stream(4)
    items = [Item(i) for i in range(3)]
    refs = [weakref.ref(x) for x in items]
    s.put_many(items)
    del items
    assert all(r() is not None for r in refs)
    s.close(immediate=True)
    assert all(r() is None for r in refs)
    assert len(s) == 0
    with pytest.raises(bpstream.Closed):
        s.get_nowait()
    st = assert_stats(s, produced=3, dropped_on_close=3, peak_depth=3)
    assert st.closed is True


def test_close_is_idempotent(make_stream):
    s = make_stream(4)
    s.put_many([1, 2, 3])
    s.close()
    before = counters(s)
    s.close()
    assert counters(s) == before
    assert s.get() == 1
    # A later immediate close still discards what is left...
    s.close(immediate=True)
    assert_stats(s, produced=3, consumed=1, dropped_on_close=2, peak_depth=3, unfinished_tasks=1)
    # ...and closing again changes nothing.
    s.close(immediate=True)
    s.close()
    assert_stats(s, produced=3, consumed=1, dropped_on_close=2, peak_depth=3, unfinished_tasks=1)


def test_close_on_a_drop_policy_stream(make_stream):
    s = make_stream(2, "drop_oldest")
    s.put_many([1, 2, 3])
    s.close()
    with pytest.raises(bpstream.Closed):
        s.put(4)
    assert list(s) == [2, 3]
    assert_stats(s, produced=3, consumed=2, dropped_evicted=1, peak_depth=2, backpressure_events=1, unfinished_tasks=2)


def test_put_many_on_closed_stream(make_stream):
    s = make_stream(4)
    s.close()
    with pytest.raises(bpstream.Closed) as info:
        s.put_many([1, 2])
    assert info.value.accepted == 0
    assert_stats(s)


def test_context_manager_closes_without_discarding():
    with bpstream.BoundedStream(4) as s:
        assert isinstance(s, bpstream.BoundedStream)
        assert s.closed is False
        s.put_many([1, 2])
    assert s.closed is True
    assert list(s) == [1, 2]


def test_context_manager_closes_and_propagates_errors():
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with bpstream.BoundedStream(4) as s:
            s.put(1)
            raise Boom
    assert s.closed is True
    assert list(s) == [1]


def test_enter_returns_the_stream_itself():
    s = bpstream.BoundedStream(2)
    with s as entered:
        assert entered is s
