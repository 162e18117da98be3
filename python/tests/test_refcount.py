"""Every way an item can leave the stream gives its reference back exactly once.

Two views: sys.getrefcount deltas on items the test also holds (the stream owns exactly one
reference while it holds an item, none afterwards), and weak references to items only the
stream holds (they die the moment the stream lets go).
"""

import gc
import sys
import weakref

import pytest

import bpstream
from support import Item, drain, finishes, refcount_deltas, refcounts


def rc(x):
    gc.collect()  # drop reference cycles through tracebacks of exceptions just caught
    return sys.getrefcount(x)


class Holder:
    """Collects items and weak references to them; each item is held by the stream alone."""

    def __init__(self, n):
        items = [Item(i) for i in range(n)]
        self.refs = [weakref.ref(x) for x in items]
        self.items = items

    def hand_over(self):
        items, self.items = self.items, None
        return items

    def alive(self):
        return [r() is not None for r in self.refs]


# ------------------------------------------------------------------------ taken by the caller


def test_put_then_get(make_stream):
    s = make_stream(2)
    x = Item()
    base = rc(x)
    s.put(x)
    assert rc(x) == base + 1
    y = s.get()
    assert y is x
    del y
    assert rc(x) == base


def test_get_many(make_stream):
    s = make_stream(4)
    items = [Item(i) for i in range(3)]
    base = refcounts(items)
    assert s.put_many(items) == 3
    assert refcount_deltas(items, base) == [1, 1, 1]
    got = s.get_many(10)
    assert got == items
    del got
    assert refcount_deltas(items, base) == [0, 0, 0]


def test_iteration(make_stream):
    s = make_stream(4)
    items = [Item(i) for i in range(3)]
    base = refcounts(items)
    s.put_many(items)
    s.close()
    for y in s:
        pass
    del y
    assert refcount_deltas(items, base) == [0, 0, 0]


def test_weakly_referenced_items_die_when_consumed(make_stream):
    s = make_stream(4)
    h = Holder(3)
    s.put_many(h.hand_over())
    assert h.alive() == [True, True, True]
    s.get()
    assert h.alive() == [False, True, True]
    s.get_many(1)
    assert h.alive() == [False, False, True]
    s.close()
    for last in s:
        pass
    del last
    assert h.alive() == [False, False, False]


def test_many_round_trips_do_not_leak(make_stream):
    s = make_stream(8)
    x = Item()
    base = rc(x)
    for _ in range(1000):
        s.put(x)
        s.put_many([x, x])
        s.get()
        s.get_many(2)
    assert rc(x) == base


# ------------------------------------------------------------------- dropped by the stream


def test_evicted_items_are_released(make_stream):
    s = make_stream(2, "drop_oldest")
    h = Holder(2)
    for x in h.hand_over():
        s.put(x)
    del x
    strong = Item()
    base = rc(strong)
    s.put(strong)  # evicts item 0
    assert h.alive() == [False, True]
    s.put("y")  # evicts item 1
    s.put("z")  # evicts strong
    assert h.alive() == [False, False]
    assert rc(strong) == base


def test_cleared_items_are_released(make_stream):
    s = make_stream(2, "drop_all")
    h = Holder(2)
    s.put_many(h.hand_over())
    keep = Item()
    s.put(keep)
    assert h.alive() == [False, False]
    assert s.get() is keep


def test_shed_item_stays_with_the_caller(make_stream):
    s = make_stream(1, "drop_newest")
    s.put("kept")
    x = Item()
    base = rc(x)
    for _ in range(100):
        assert s.put(x) is False
        assert s.put_nowait(x) is False
    assert s.put_many([x, x]) == 0
    assert rc(x) == base


@pytest.mark.parametrize(
    "policy, call",
    [
        ("reject", lambda s, x: s.put(x)),
        ("reject", lambda s, x: s.put_nowait(x)),
        ("block", lambda s, x: s.put_nowait(x)),
        ("block", lambda s, x: s.put(x, timeout=0)),
        ("block", lambda s, x: s.put(x, timeout=0.01)),
    ],
    ids=["reject-put", "reject-nowait", "block-nowait", "block-timeout0", "block-timed-out"],
)
def test_rejected_item_stays_with_the_caller(make_stream, policy, call):
    s = make_stream(1, policy)
    s.put("kept")
    x = Item()
    base = rc(x)
    for _ in range(20):
        with pytest.raises(bpstream.Full):
            call(s, x)
    assert rc(x) == base


def test_put_on_closed_stream_leaves_the_item(make_stream):
    s = make_stream(2)
    s.close()
    x = Item()
    base = rc(x)
    for _ in range(20):
        with pytest.raises(bpstream.Closed):
            s.put(x)
        with pytest.raises(bpstream.Closed):
            s.put_many([x, x])
    assert rc(x) == base


def test_immediate_close_releases_the_backlog(make_stream):
    s = make_stream(4)
    h = Holder(2)
    s.put_many(h.hand_over())
    strong = Item()
    base = rc(strong)
    s.put(strong)
    s.close(immediate=True)
    assert h.alive() == [False, False]
    assert rc(strong) == base


def test_deleting_the_stream_releases_what_it_holds():
    s = bpstream.BoundedStream(4)
    h = Holder(3)
    s.put_many(h.hand_over())
    strong = Item()
    base = rc(strong)
    s.put(strong)
    stream_ref = weakref.ref(s)
    del s  # no cycle: freed right here, without the cyclic collector
    assert stream_ref() is None
    assert h.alive() == [False, False, False]
    assert rc(strong) == base


@pytest.mark.parametrize("policy", ["reject", "block"])
def test_put_many_partial_failure(make_stream, policy):
    s = make_stream(2, policy)
    items = [Item(i) for i in range(4)]
    base = refcounts(items)
    with pytest.raises(bpstream.Full) as info:
        s.put_many(items, timeout=0)
    assert info.value.accepted == 2
    del info
    assert refcount_deltas(items, base) == [1, 1, 0, 0]
    assert drain(s) == items[:2]
    assert refcount_deltas(items, base) == [0, 0, 0, 0]


def test_put_many_partial_failure_from_a_generator(make_stream):
    s = make_stream(2, "reject")
    items = [Item(i) for i in range(4)]
    base = refcounts(items)
    with pytest.raises(bpstream.Full) as info:
        s.put_many(x for x in items)
    assert info.value.accepted == 2
    del info
    assert refcount_deltas(items, base) == [1, 1, 0, 0]


def test_exceptions_do_not_leak_the_stream(make_stream):
    s = make_stream(1, "reject")
    base = rc(s)
    s.put(1)
    for _ in range(50):
        with pytest.raises(bpstream.Full):
            s.put(2)
        s.stats()
        repr(s)
        len(s)
    s.get()
    for _ in range(50):
        with pytest.raises(bpstream.Empty):
            s.get_nowait()
    s.close()
    for _ in range(50):
        with pytest.raises(bpstream.Closed):
            s.get()
    list(s)
    assert rc(s) == base


# ---------------------------------------------------------------------- re-entrancy


class Reporter:
    """An item whose finalizer calls back into a stream (allowed: releases run unlocked)."""

    def __init__(self, stream, log):
        self.stream = stream
        self.log = log

    def __del__(self):
        self.log.append((len(self.stream), self.stream.stats().depth))


@pytest.mark.parametrize("how", ["evict", "clear", "close"])
def test_release_may_call_back_into_the_stream(make_stream, how):
    policy = {"evict": "drop_oldest", "clear": "drop_all", "close": "block"}[how]
    s = make_stream(2, policy)
    log = []
    s.put(Reporter(s, log))
    s.put(Reporter(s, log))

    def drop():
        if how == "close":
            s.close(immediate=True)
        else:
            s.put("new")

    finishes(drop, rescue=lambda: s.close(immediate=True))
    assert log, "dropped items were not released"
    assert all(a == b for a, b in log)


# ------------------------------------------------------------------------------ cycles


class Node:
    pass


def test_item_referencing_its_stream_is_collected():
    s = bpstream.BoundedStream(2)
    n = Node()
    n.stream = s
    s.put(n)
    refs = weakref.ref(s), weakref.ref(n)
    del s, n
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_stream_inside_itself_is_collected():
    s = bpstream.BoundedStream(2)
    s.put(s)
    ref = weakref.ref(s)
    del s
    gc.collect()
    assert ref() is None


def test_subclass_instance_cycle_is_collected():
    class MyStream(bpstream.BoundedStream):
        pass

    s = MyStream(2)
    s.me = s  # a cycle through the instance dict
    n = Node()
    n.stream = s
    s.put(n)
    refs = weakref.ref(s), weakref.ref(n)
    del s, n
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_queue_cycle_is_collected():
    q = bpstream.Queue()
    n = Node()
    n.q = q
    q.put(n)
    refs = weakref.ref(q), weakref.ref(n)
    del q, n
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_gc_sees_items_inside_the_stream():
    s = bpstream.BoundedStream(2)
    n = Node()
    s.put(n)
    assert any(r is n for r in gc.get_referents(s))
    s.get()
