"""Native producers feeding a BoundedStream through bpstream's C API capsule.

The producer is the shipped example extension (examples/native_producer/tokens.c), built
once per session against bpstream.get_include(): a pthread that never takes the GIL, puts
byte frames, and stops when a put says the stream is closed. Each test checks what the
Python consumer (and the producer's own counters) can observe: frames in order, as bytes;
backpressure; errors ending the stream; cancellation travelling back to the producer from
every way a consumer can stop; and Python objects in the same stream released exactly once.
"""

import errno
import gc
import queue
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest

import bpstream
from native_support import Resources, wait_until
from support import (
    BLOCK_PROBE,
    WAKE_WITHIN,
    Item,
    check_identity,
    refcount_deltas,
    refcounts,
)

# A count no test ever reaches: the producer runs until the consumer stops it.
FOREVER = 10**12


@pytest.fixture
def producers():
    """register(p, stream) -> p; at teardown the stream is closed immediately (which
    releases a producer a failed test left blocked) and the producer must end, so no test
    leaves a native thread behind for the next one."""
    started = []

    def register(p, stream):  # stream None: the test drops the stream itself
        started.append((p, stream))
        return p

    yield register
    for p, stream in started:
        if stream is not None:
            stream.close(immediate=True)
        assert p.join(WAKE_WITHIN), "a native producer never ended"


def frames(n, prefix="token"):
    return [f"{prefix}{i} ".encode() for i in range(n)]


def decode(values):
    return [int.from_bytes(v, "little") for v in values]


def assert_cancelled(p):
    assert p.join(WAKE_WITHIN), "the producer did not notice the consumer had stopped"
    assert p.done
    assert "closed" in p.last_status, p.last_status


# ----------------------------------------------------------------------------- delivery


@pytest.mark.parametrize("capacity", [1, 8, 1024])
def test_frames_arrive_in_order_as_bytes_then_the_loop_ends(tokens, make_stream, producers, capacity):
    s = make_stream(capacity)
    p = producers(tokens.start(s, 500), s)
    got = list(s)  # ends only when the producer closes the stream
    assert got == frames(500)
    assert all(type(x) is bytes for x in got)
    assert p.join(WAKE_WITHIN)
    assert p.produced == 500
    assert p.last_status == "ok"
    assert s.closed
    st = s.stats()
    check_identity(st)
    assert (st.produced, st.consumed, st.dropped, st.depth) == (500, 500, 0, 0)
    with pytest.raises(bpstream.Closed):
        s.get_nowait()


def test_prefix_is_used(tokens, make_stream, producers):
    s = make_stream(8)
    producers(tokens.start(s, 3, prefix="tok-"), s)
    assert list(s) == [b"tok-0 ", b"tok-1 ", b"tok-2 "]


def test_count_frames_decode_to_a_counter_in_order(tokens, make_stream, producers):
    n = 50_000
    s = make_stream(1024)
    p = producers(tokens.count(s, n, batch=64), s)
    got = list(s)
    assert all(len(x) == 8 for x in got)
    assert decode(got) == list(range(n))
    assert p.join(WAKE_WITHIN)
    assert p.produced == n
    st = s.stats()
    check_identity(st)
    assert (st.produced, st.consumed, st.dropped, st.depth) == (n, n, 0, 0)


def test_count_frames_through_get_and_get_many(tokens, make_stream, producers):
    n = 3000
    s = make_stream(16)
    producers(tokens.count(s, n, batch=7), s)
    got = [s.get(timeout=WAKE_WITHIN) for _ in range(10)]
    while True:
        try:
            batch = s.get_many(100, timeout=WAKE_WITHIN)
        except bpstream.Closed:
            break
        assert 1 <= len(batch) <= 100
        got.extend(batch)
    assert decode(got) == list(range(n))
    check_identity(s.stats())


def test_zero_count_just_closes(tokens, make_stream, producers):
    s = make_stream(4)
    p = producers(tokens.start(s, 0), s)
    assert list(s) == []
    assert p.join(WAKE_WITHIN)
    assert p.produced == 0


def test_python_objects_then_native_frames_in_order(tokens, make_stream, producers):
    s = make_stream(16)
    first = Item(1)
    s.put("text")
    s.put(first)
    s.put(None)
    p = producers(tokens.start(s, 40), s)
    got = list(s)
    assert got[:3] == ["text", first, None]
    assert got[1] is first
    assert got[3:] == frames(40)
    assert p.join(WAKE_WITHIN)
    st = s.stats()
    check_identity(st)
    assert (st.produced, st.consumed, st.depth) == (43, 43, 0)


def test_python_puts_interleave_with_a_running_producer(tokens, make_stream, producers):
    """A Python thread and a native thread feed one stream at once: each one's items keep
    their own order, and nothing is lost."""
    s = make_stream(8)
    p = producers(tokens.count(s, FOREVER, batch=5), s)

    def feed():
        for i in range(200):
            s.put(("py", i), timeout=WAKE_WITHIN)

    assert wait_until(lambda: len(s) == 8)  # the producer is running (and now blocked)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    got = []
    ours = 0
    for x in s:
        got.append(x)
        ours += isinstance(x, tuple)
        if ours == 200:
            break
    feeder.join(WAKE_WITHIN)
    s.close()
    assert_cancelled(p)
    got.extend(s)
    assert [x for x in got if isinstance(x, tuple)] == [("py", i) for i in range(200)]
    theirs = decode([x for x in got if isinstance(x, bytes)])
    assert theirs == list(range(len(theirs)))
    assert len(theirs) >= 8
    check_identity(s.stats())


def test_queue_and_subclasses_are_streams_too(tokens, producers):
    q = bpstream.Queue(4)
    producers(tokens.start(q, 6), q)
    assert [q.get(timeout=WAKE_WITHIN) for _ in range(6)] == frames(6)
    with pytest.raises(bpstream.Closed):
        q.get(timeout=WAKE_WITHIN)

    class Sub(bpstream.BoundedStream):
        pass

    s = Sub(4)
    producers(tokens.start(s, 6), s)
    assert list(s) == frames(6)


# ----------------------------------------------------------------------------- backpressure


def test_a_full_stream_holds_the_producer_back_until_the_consumer_reads(tokens, make_stream, producers):
    s = make_stream(4)
    p = producers(tokens.start(s, 100), s)
    assert wait_until(lambda: len(s) == 4), f"the producer never filled the stream: {s.stats()}"
    time.sleep(BLOCK_PROBE * 3)
    # Still held back: nothing beyond the capacity was taken, the thread has not ended.
    assert not p.done
    assert p.produced <= 4 + 1
    assert len(s) == 4
    st = s.stats()
    assert st.depth == 4
    assert st.produced == 4
    assert st.backpressure_events >= 1, st
    got = list(s)
    assert got == frames(100)
    assert p.join(WAKE_WITHIN)
    assert p.produced == 100
    st = s.stats()
    check_identity(st)
    assert st.peak_depth == 4


def test_count_batches_respect_the_capacity(tokens, make_stream, producers):
    s = make_stream(10)
    p = producers(tokens.count(s, 1000, batch=64), s)  # a batch larger than the stream
    assert wait_until(lambda: len(s) == 10)
    time.sleep(BLOCK_PROBE * 3)
    assert not p.done
    assert len(s) == 10
    assert p.produced <= 10
    assert decode(list(s)) == list(range(1000))
    assert p.join(WAKE_WITHIN)
    assert s.stats().peak_depth == 10


def test_drop_oldest_keeps_the_newest_frames(tokens, make_stream, producers):
    s = make_stream(8, "drop_oldest")
    p = producers(tokens.start(s, 10_000), s)
    # drop_oldest never waits: the producer runs to the end with nobody reading.
    assert p.join(WAKE_WITHIN)
    assert p.produced == 10_000
    assert list(s) == frames(10_000)[-8:]
    st = s.stats()
    check_identity(st)
    assert st.produced == 10_000
    assert st.dropped_evicted == 10_000 - 8
    assert st.consumed + st.dropped == st.produced


def test_drop_oldest_with_a_concurrent_consumer(tokens, make_stream, producers):
    n = 20_000
    s = make_stream(4, "drop_oldest")
    p = producers(tokens.count(s, n, batch=16), s)
    got = []
    for x in s:
        got.append(int.from_bytes(x, "little"))
        if len(got) % 100 == 0:
            time.sleep(0.001)  # a consumer slower than the producer
    assert p.join(WAKE_WITHIN)
    assert got, "the consumer saw nothing"
    assert got[-1] == n - 1, "the consumer did not see the newest frame last"
    assert got == sorted(set(got)), "frames out of order or repeated"
    st = s.stats()
    check_identity(st)
    assert st.produced == n
    assert st.consumed == len(got)
    assert st.consumed + st.dropped == st.produced
    assert st.dropped == st.dropped_evicted


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "code, exc_type",
    [(errno.ENOENT, FileNotFoundError), (errno.EACCES, PermissionError), (errno.EIO, OSError)],
)
def test_an_os_error_ends_the_for_loop_after_every_frame(tokens, make_stream, producers, code, exc_type):
    s = make_stream(8)
    p = producers(tokens.start(s, 5, error_errno=code, error_message="no such token"), s)
    got = []
    with pytest.raises(exc_type) as info:
        for x in s:
            got.append(x)
    assert got == frames(5)
    assert type(info.value) is exc_type
    assert info.value.errno == code
    assert info.value.strerror == "no such token"
    assert p.join(WAKE_WITHIN)
    # Sticky: every later get, and a new loop, raise it again.
    with pytest.raises(exc_type) as again:
        s.get(timeout=WAKE_WITHIN)
    assert again.value.errno == code
    with pytest.raises(exc_type):
        list(s)
    check_identity(s.stats())


def test_an_os_error_reaches_get(tokens, make_stream, producers):
    s = make_stream(2)  # smaller than the frames: the error waits behind them
    producers(tokens.start(s, 6, error_errno=errno.ENOENT, error_message="model file gone"), s)
    got = [s.get(timeout=WAKE_WITHIN) for _ in range(6)]
    assert got == frames(6)
    for call in (lambda: s.get(timeout=WAKE_WITHIN), s.get, s.get_nowait):
        with pytest.raises(FileNotFoundError) as info:
            call()
        assert info.value.errno == errno.ENOENT
        assert info.value.strerror == "model file gone"


def test_a_message_without_errno_is_a_producer_error(tokens, make_stream, producers):
    s = make_stream(8)
    p = producers(tokens.start(s, 3, error_message="the model crashed"), s)
    got = []
    with pytest.raises(bpstream.ProducerError) as info:
        for x in s:
            got.append(x)
    assert got == frames(3)
    assert str(info.value) == "the model crashed"
    assert not isinstance(info.value, OSError)
    assert p.join(WAKE_WITHIN)
    with pytest.raises(bpstream.ProducerError, match="^the model crashed$"):
        s.get(timeout=WAKE_WITHIN)
    with pytest.raises(bpstream.ProducerError, match="^the model crashed$"):
        s.get(timeout=WAKE_WITHIN)


def test_an_error_on_an_empty_stream_raises_at_once(tokens, make_stream, producers):
    s = make_stream(8)
    p = producers(tokens.start(s, 0, error_errno=errno.ECONNRESET, error_message="peer went away"), s)
    assert p.join(WAKE_WITHIN)
    with pytest.raises(ConnectionResetError):
        s.get(timeout=WAKE_WITHIN)


# ----------------------------------------------------------------------------- cancellation


def blocked_producer(tokens, stream, **kwargs):
    """Starts a producer that never ends on its own and waits until it fills the stream."""
    p = tokens.start(stream, FOREVER, **kwargs)
    assert wait_until(lambda: len(stream) == stream.capacity), stream.stats()
    time.sleep(BLOCK_PROBE)
    assert not p.done, "the producer ended on its own"
    return p


def test_close_wakes_a_producer_blocked_in_put(tokens):
    res = Resources()
    s = bpstream.BoundedStream(4)
    try:
        p = blocked_producer(tokens, s)
        res.assert_grew(threads=1)
        s.close()
        assert_cancelled(p)
        # A plain close keeps what was buffered for the consumer.
        assert list(s) == frames(4)
        check_identity(s.stats())
    finally:
        s.close(immediate=True)
    del p, s
    res.assert_back()


def test_close_immediate_wakes_the_producer_and_discards(tokens):
    res = Resources()
    s = bpstream.BoundedStream(4)
    try:
        p = blocked_producer(tokens, s)
        s.close(immediate=True)
        assert_cancelled(p)
        assert list(s) == []
        st = s.stats()
        check_identity(st)
        assert st.dropped_on_close == 4
    finally:
        s.close(immediate=True)
    del p, s
    res.assert_back()


def test_breaking_out_and_dropping_the_stream_stops_the_producer(tokens):
    res = Resources()
    s = bpstream.BoundedStream(4)
    p = tokens.start(s, FOREVER)
    got = []
    for x in s:
        got.append(x)
        if len(got) == 10:
            break
    assert got == frames(10)
    assert not p.done
    ref = weakref.ref(s)
    del s
    gc.collect()
    assert ref() is None
    assert_cancelled(p)
    del p
    res.assert_back()


def test_garbage_collecting_a_stream_in_a_cycle_stops_the_producer(tokens):
    res = Resources()
    gc.disable()  # the collection must be ours, at the point we choose
    try:
        s = bpstream.BoundedStream(4)
        s.put([s])  # the stream holds a list that holds the stream
        p = blocked_producer(tokens, s)
        ref = weakref.ref(s)
        del s
        assert not p.join(BLOCK_PROBE), "the cycle should keep the stream (and the producer) alive"
        assert ref() is not None
        gc.collect()
        assert ref() is None, "the stream in a cycle was not collected"
        assert_cancelled(p)
    finally:
        gc.enable()
    del p
    res.assert_back()


@pytest.mark.parametrize("how", ["with", "del"])
def test_a_rate_limited_producer_stops_when_the_consumer_stops_early(tokens, how):
    """The LLM token-streaming pattern: read a few tokens, decide you have enough, stop."""
    res = Resources()
    s = bpstream.BoundedStream(64)
    p = tokens.start(s, FOREVER, rate=50)
    got = []
    if how == "with":
        with s:
            for tok in s:
                got.append(tok)
                if len(got) == 3:
                    break
        assert s.closed
    else:
        for tok in s:
            got.append(tok)
            if len(got) == 3:
                break
        del s
        gc.collect()
    assert got == frames(3)
    assert_cancelled(p)
    assert p.produced < 1000
    del p
    res.assert_back()


def test_a_producer_started_on_a_closed_stream_stops_at_once(tokens):
    res = Resources()
    s = bpstream.BoundedStream(4)
    s.close()
    p = tokens.start(s, FOREVER)
    assert_cancelled(p)
    assert p.produced == 0
    assert list(s) == []
    del p, s
    res.assert_back()


def test_a_finished_producer_leaves_nothing_behind(tokens):
    res = Resources()
    s = bpstream.BoundedStream(4)
    p = tokens.start(s, 100)
    assert list(s) == frames(100)
    assert p.join(WAKE_WITHIN)
    del p, s
    res.assert_back()


# ----------------------------------------------------------------------------- the capsule


def test_the_c_api_is_a_named_capsule():
    import ctypes

    capi = bpstream._bpstream._C_API
    assert type(capi).__name__ == "PyCapsule"
    is_valid = ctypes.pythonapi.PyCapsule_IsValid
    is_valid.restype = ctypes.c_int
    is_valid.argtypes = [ctypes.py_object, ctypes.c_char_p]
    assert is_valid(capi, b"bpstream._bpstream._C_API") == 1
    assert is_valid(capi, b"bpstream._C_API") == 0


@pytest.mark.parametrize("bad", [object(), None, [], queue.Queue(4), "stream", bpstream.Policy.BLOCK])
def test_start_on_a_non_stream_raises_type_error(tokens, bad):
    res = Resources()
    with pytest.raises(TypeError):
        tokens.start(bad, 5)
    with pytest.raises(TypeError):
        tokens.count(bad, 5)
    res.assert_back()  # no thread was started


def test_get_include_holds_both_headers():
    include = Path(bpstream.get_include())
    assert include.is_dir()
    assert (include / "bpstream_capi.h").is_file()
    assert (include / "bpstream.h").is_file()
    assert "BPSTREAM_CAPI_NAME" in (include / "bpstream_capi.h").read_text()


# ----------------------------------------------------------------------------- refcounts


def test_python_objects_consumed_next_to_frames_are_released_once(tokens, make_stream, producers):
    items = [Item(i) for i in range(5)]
    base = refcounts(items)
    s = make_stream(8)
    s.put_many(items)  # (a for loop's variable would keep the last item alive)
    producers(tokens.start(s, 50), s)
    got = list(s)
    assert got[:5] == items
    assert got[5:] == frames(50)
    del got
    assert refcount_deltas(items, base) == [0] * 5


def test_python_objects_evicted_by_native_puts_are_released_once(tokens, make_stream, producers):
    """drop_oldest: the native producer's puts evict the Python objects. Their release runs
    on the producer thread, which must take the GIL; the main thread keeps running Python
    code (holding the GIL most of the time) while that happens."""
    items = [Item(i) for i in range(4)]
    base = refcounts(items)
    s = make_stream(4, "drop_oldest")
    s.put_many(items)  # (a for loop's variable would keep the last item alive)
    p = producers(tokens.start(s, 100), s)
    deadline = time.monotonic() + WAKE_WITHIN
    while not p.done and time.monotonic() < deadline:
        sum(range(1000))  # busy in Python, not waiting in join()
    assert p.join(WAKE_WITHIN)
    assert refcount_deltas(items, base) == [0] * 4
    assert list(s) == frames(100)[-4:]
    st = s.stats()
    check_identity(st)
    assert st.dropped_evicted == 100


def test_evicted_objects_held_only_by_the_stream_die(tokens, make_stream, producers):
    s = make_stream(3, "drop_oldest")
    refs = []
    for i in range(3):
        x = Item(i)
        refs.append(weakref.ref(x))
        s.put(x)
    del x
    assert all(r() is not None for r in refs)
    p = producers(tokens.start(s, 3), s)
    assert p.join(WAKE_WITHIN)
    assert [r() for r in refs] == [None, None, None]
    assert list(s) == frames(3)


@pytest.mark.parametrize("immediate", [True, False])
def test_python_objects_discarded_on_close_are_released_once(tokens, producers, immediate):
    items = [Item(i) for i in range(3)]
    base = refcounts(items)
    s = bpstream.BoundedStream(8)
    s.put_many(items)  # (a for loop's variable would keep the last item alive)
    p = producers(blocked_producer(tokens, s), None)
    s.close(immediate=immediate)
    assert_cancelled(p)
    if immediate:
        assert refcount_deltas(items, base) == [0] * 3
        assert s.stats().dropped_on_close == 8
    # A plain close leaves them buffered; dropping the stream releases them.
    del s
    gc.collect()
    assert refcount_deltas(items, base) == [0] * 3


def test_python_objects_in_a_dropped_stream_are_released_once(tokens, producers):
    items = [Item(i) for i in range(3)]
    base = refcounts(items)
    s = bpstream.BoundedStream(8)
    s.put_many(items)  # (a for loop's variable would keep the last item alive)
    p = producers(blocked_producer(tokens, s), None)
    del s
    gc.collect()
    assert_cancelled(p)
    assert refcount_deltas(items, base) == [0] * 3


# ----------------------------------------------------------------------------- prefetching


def test_breaking_out_of_a_for_loop_loses_nothing(tokens, make_stream, producers):
    s = make_stream(1024)  # big enough for the iterator to prefetch a batch
    p = producers(tokens.count(s, 1000), s)
    assert p.join(WAKE_WITHIN)
    for first in s:
        break
    assert decode([first]) == [0]
    # The iterator's prefetched items went back to the front of the stream.
    assert len(s) == 999
    st = s.stats()
    check_identity(st)
    assert (st.consumed, st.depth) == (1, 999)
    rest = list(s)
    assert decode([first] + rest) == list(range(1000))
    st = s.stats()
    check_identity(st)
    assert (st.produced, st.consumed, st.dropped, st.depth) == (1000, 1000, 0, 0)


def test_many_short_loops_over_a_live_producer_lose_nothing(tokens, make_stream, producers):
    n = 20_000
    s = make_stream(1024)
    obj = Item(-1)
    s.put(obj)
    producers(tokens.count(s, n, batch=32), s)
    got = []
    for take in range(1, 10_000):
        k = 0
        for x in s:
            got.append(x)
            k += 1
            if k == take % 50 + 1:
                break
        else:
            break  # closed and drained
    assert got[0] is obj
    assert decode(got[1:]) == list(range(n))
    st = s.stats()
    check_identity(st)
    assert (st.produced, st.consumed, st.depth) == (n + 1, n + 1, 0)
