"""Iteration behaves like repeated get() (README: "`for item in stream` blocks like `get`"):
FIFO with other consumers, len() and Stats count only what was delivered, an immediate close
ends the loop, nothing is lost when a loop is left early, and the bound is never exceeded."""

import gc

import pytest

import bpstream
from support import POLICY_NAMES, check_identity, drain, finishes

N = 100


def filled(make_stream, policy="block", capacity=1000, n=N):
    s = make_stream(capacity, policy)
    assert s.put_many(range(n)) == n
    return s


def test_break_loses_nothing_and_keeps_order(make_stream):
    s = filled(make_stream)
    for x in s:
        if x == 9:
            break
    del x
    gc.collect()
    assert drain(s) == list(range(10, N))
    st = s.stats()
    check_identity(st)
    assert (st.produced, st.consumed, st.depth) == (N, N, 0)


def test_get_after_next_is_the_next_item(make_stream):
    """One consumer mixing next() and get() sees one FIFO."""
    s = filled(make_stream)
    it = iter(s)
    assert next(it) == 0
    assert s.get_nowait() == 1
    assert next(it) == 2
    assert s.get_many(2) == [3, 4]


def test_get_many_spans_the_read_ahead_and_the_stream(make_stream):
    """get_many takes the loop's read-ahead first, then what is in the stream, in order."""
    s = filled(make_stream, n=1000)
    it = iter(s)
    assert next(it) == 0  # the loop reads ahead a batch (a quarter of the capacity)
    assert s.get_many(600) == list(range(1, 601))
    assert s.get_many(1000, timeout=0) == list(range(601, 1000))
    assert len(s) == 0
    check_identity(s.stats())


def test_get_many_of_frames_spans_the_read_ahead_and_the_stream(tmp_path):
    path = tmp_path / "lines.txt"
    lines = [b"line %d\n" % i for i in range(1000)]
    path.write_bytes(b"".join(lines))
    with bpstream.read_lines(path, capacity=1000) as s:
        it = iter(s)
        assert next(it) == lines[0]
        got = []
        while len(got) < 999:
            got += s.get_many(600, timeout=30)
        assert got == lines[1:]
        with pytest.raises(bpstream.Closed):  # the reader closed it at end of file: drained
            s.get_many(10, timeout=30)


def test_two_iterators_share_one_fifo(make_stream):
    s = filled(make_stream)
    a, b = iter(s), iter(s)
    rescue = lambda: s.close(immediate=True)  # noqa: E731  (if b waits for items a holds)
    got = [finishes(next, it, rescue=rescue) for it in (a, b, a, b)]
    assert got == [0, 1, 2, 3]


def test_len_and_stats_count_only_delivered_items(make_stream):
    s = filled(make_stream)
    it = iter(s)
    assert next(it) == 0
    assert len(s) == N - 1
    st = s.stats()
    check_identity(st)
    assert (st.consumed, st.depth) == (1, N - 1)


def test_immediate_close_ends_a_loop(make_stream):
    s = filled(make_stream)
    it = iter(s)
    assert next(it) == 0
    s.close(immediate=True)
    assert list(it) == []
    st = s.stats()
    check_identity(st)
    assert (st.consumed, st.dropped_on_close) == (1, N - 1)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_leaving_a_loop_never_overfills_the_stream(make_stream, policy):
    """A producer tops the stream up while a loop is between items; when the loop is left
    the stream must still respect its capacity."""
    cap = 64
    s = filled(make_stream, policy, capacity=cap, n=cap)
    it = iter(s)
    assert next(it) == 0
    refill = 0
    while len(s) < cap:
        s.put(1000 + refill, timeout=0)
        refill += 1
    del it
    gc.collect()
    st = s.stats()
    check_identity(st)
    assert len(s) <= cap and st.peak_depth <= cap, f"depth {len(s)}, peak {st.peak_depth}, capacity {cap}"


def test_block_policy_loop_left_early_delivers_everything_once(make_stream):
    cap = 64
    s = filled(make_stream, "block", capacity=cap, n=cap)
    it = iter(s)
    delivered = [next(it)]
    refill = []
    while True:
        try:
            s.put(1000 + len(refill), timeout=0)
        except bpstream.Full:
            break
        refill.append(1000 + len(refill))
    del it
    gc.collect()
    delivered += drain(s)
    assert delivered == list(range(cap)) + refill


def test_a_loop_holding_an_item_never_starves_a_blocked_producer(make_stream):
    """A put waiting for room gets the room of the items a loop already received, even
    while the loop holds on to its current item (as a get() loop would)."""
    import threading

    s = make_stream(8)
    finished = threading.Event()

    def produce():
        for i in range(9):  # the ninth put must wait for room
            s.put(i)
        finished.set()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    assert wait_until_true(lambda: s.stats().producer_waits == 1), "the ninth put never waited"
    for x in s:
        assert x == 0
        assert finished.wait(5), "the producer stayed blocked while the loop held item 0"
        break
    producer.join(5)
    assert drain(s) == list(range(1, 9))
    check_identity(s.stats())


def wait_until_true(predicate, timeout=5.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()
