"""Many producers and consumers at once: nothing lost, nothing duplicated, per-producer order
kept, and the Stats identities hold in snapshots taken while everything runs."""

import threading
import time

import pytest

import bpstream
from support import check_identity

PRODUCERS = 4
CONSUMERS = 4
PER_PRODUCER = 20_000
CAPACITY = 64
JOIN_WITHIN = 60.0

LOSSY = {"drop_oldest": "dropped_evicted", "drop_newest": "dropped_shed", "drop_all": "dropped_cleared"}


class Worker(threading.Thread):
    def __init__(self, fn, *args):
        super().__init__(target=None, daemon=True)
        self.fn, self.args, self.error = fn, args, None

    def run(self):
        try:
            self.fn(*self.args)
        except BaseException as exc:
            self.error = exc


def produce(s, p):
    base = p * PER_PRODUCER
    for start in range(base, base + PER_PRODUCER, 50):
        if p % 2:
            for i in range(start, start + 50):
                s.put(i)
        else:  # half the producers use put_many
            assert s.put_many(range(start, start + 50)) >= 0
        # Let the consumers in: with a lossy policy nothing else makes a producer wait,
        # and one GIL switch interval (5 ms) is enough to run far ahead of them.
        time.sleep(0)


def consume(s, c, out):
    if c % 2:
        for item in s:
            out.append(item)
    else:
        while True:
            try:
                out.extend(s.get_many(16))
            except bpstream.Closed:
                return


def monitor(s, stop, snapshots):
    while not stop.is_set():
        st = s.stats()
        check_identity(st)
        assert st.depth <= CAPACITY and st.peak_depth <= CAPACITY, st
        snapshots.append(st)
        time.sleep(0.0005)


def run(policy):
    s = bpstream.BoundedStream(CAPACITY, policy)
    seen = [[] for _ in range(CONSUMERS)]
    stop = threading.Event()
    snapshots = []
    watcher = Worker(monitor, s, stop, snapshots)
    consumers = [Worker(consume, s, c, seen[c]) for c in range(CONSUMERS)]
    producers = [Worker(produce, s, p) for p in range(PRODUCERS)]
    watcher.start()
    for t in consumers + producers:
        t.start()
    try:
        for t in producers:
            t.join(JOIN_WITHIN)
            assert not t.is_alive(), "a producer is stuck"
        s.close()
        for t in consumers:
            t.join(JOIN_WITHIN)
            assert not t.is_alive(), "a consumer is stuck after close"
    finally:
        stop.set()
        s.close(immediate=True)
        watcher.join(JOIN_WITHIN)
    errors = [t.error for t in [watcher] + consumers + producers if t.error is not None]
    if errors:
        raise errors[0]
    assert snapshots, "the monitor took no snapshot"
    for earlier, later in zip(snapshots, snapshots[1:]):
        assert later.produced >= earlier.produced and later.consumed >= earlier.consumed
    return s.stats(), seen


def assert_per_producer_order(seen):
    """Each consumer sees each producer's items in the order they were put (FIFO)."""
    for out in seen:
        last = {}
        for item in out:
            p = item // PER_PRODUCER
            assert item > last.get(p, -1), f"{item} after {last[p]}"
            last[p] = item


def test_block_policy_delivers_every_item_exactly_once():
    st, seen = run("block")
    everything = sorted(x for out in seen for x in out)
    assert everything == list(range(PRODUCERS * PER_PRODUCER))
    assert_per_producer_order(seen)
    total = PRODUCERS * PER_PRODUCER
    assert (st.produced, st.consumed, st.dropped, st.rejected, st.depth) == (total, total, 0, 0, 0)
    assert 1 <= st.peak_depth <= CAPACITY
    check_identity(st)


@pytest.mark.parametrize("policy", sorted(LOSSY))
def test_lossy_policies_account_for_every_item(policy):
    st, seen = run(policy)
    everything = [x for out in seen for x in out]
    assert len(everything) == len(set(everything)), "an item was delivered twice"
    assert set(everything) <= set(range(PRODUCERS * PER_PRODUCER))
    assert_per_producer_order(seen)
    total = PRODUCERS * PER_PRODUCER
    assert st.produced == total
    assert st.consumed == len(everything)
    assert st.consumed + st.dropped == st.produced
    assert st.dropped == getattr(st, LOSSY[policy])
    assert (st.rejected, st.depth, st.producer_waits) == (0, 0, 0)
    check_identity(st)


class Tracked:
    """Counts live instances, so a test can prove every item was released."""

    live = 0
    lock = threading.RLock()  # __del__ may run inside __init__ (a GC pass) on the same thread

    def __init__(self):
        with Tracked.lock:
            Tracked.live += 1

    def __del__(self):
        with Tracked.lock:
            Tracked.live -= 1


@pytest.mark.parametrize("policy", ["block", "drop_oldest", "drop_all"])
def test_immediate_close_under_load_releases_every_item(policy):
    """Producers and consumers hammer the stream while it is closed immediately: afterwards
    every item ever made is gone and the counters add up."""
    live_before = Tracked.live
    s = bpstream.BoundedStream(32, policy)

    def producer():
        while True:
            try:
                s.put(Tracked(), timeout=5)
            except bpstream.Closed:
                return

    def consumer():
        while True:
            try:
                s.get_many(8, timeout=5)
            except bpstream.Closed:
                return

    workers = [Worker(producer) for _ in range(3)] + [Worker(consumer) for _ in range(2)]
    for t in workers:
        t.start()
    time.sleep(0.2)
    s.close(immediate=True)
    for t in workers:
        t.join(JOIN_WITHIN)
        assert not t.is_alive(), "a worker is stuck after close(immediate=True)"
    errors = [t.error for t in workers if t.error is not None]
    if errors:
        raise errors[0]
    st = s.stats()
    check_identity(st)
    assert st.depth == 0 and st.closed is True
    assert st.produced > 0
    assert st.produced == st.consumed + st.dropped
    assert Tracked.live == live_before, f"{Tracked.live - live_before} items were never released"
