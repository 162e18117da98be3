"""Bridges between sync and async code: bpstream.from_aiter and bpstream.from_iter.

Each test checks what a user sees: every item, in order; a producer held back by a slow
consumer (never more than capacity + 1 items ahead: the stream's capacity plus the one in
the producer's hand); the producer's exception in place; and the background thread gone
(the async generator's finally run, the iterator closed) after close(), leaving a `with`
block, or dropping the stream. Thread and fd counts come from /proc (native_support).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import time
import warnings

import pytest

import bpstream
from bpstream import _bridges
from native_support import Resources, wait_until
from support import BLOCK_PROBE, WAKE_WITHIN, check_identity


class Tracker:
    """What a producer did: items produced, whether its cleanup ran."""

    def __init__(self):
        self.produced = 0
        self.finally_ran = threading.Event()
        self.cancelled = False


async def agen(n, tracker=None, delay=0.0):
    try:
        for i in range(n):
            if tracker is not None:
                tracker.produced += 1
            yield i
            if delay:
                await asyncio.sleep(delay)
    except asyncio.CancelledError:
        if tracker is not None:
            tracker.cancelled = True
        raise
    finally:
        if tracker is not None:
            tracker.finally_ran.set()


def sgen(n, tracker=None, delay=0.0):
    try:
        for i in range(n):
            if tracker is not None:
                tracker.produced += 1
            yield i
            if delay:
                time.sleep(delay)
    finally:
        if tracker is not None:
            tracker.finally_ran.set()


def bridge_thread(stream) -> threading.Thread:
    return stream._bridge.thread


# --- from_aiter ---------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [1, 3, 64, 1024])
def test_from_aiter_delivers_every_item_in_order(capacity):
    stream = bpstream.from_aiter(agen(5000), capacity=capacity)
    assert list(stream) == list(range(5000))
    assert isinstance(stream, bpstream.BoundedStream)
    assert stream.closed
    check_identity(stream.stats())
    assert stream.stats().consumed == 5000


def test_from_aiter_accepts_any_async_iterable_and_rejects_others_at_once():
    class Countdown:
        def __init__(self, n):
            self.n = n

        def __aiter__(self):
            return self

        async def __anext__(self):
            if self.n == 0:
                raise StopAsyncIteration
            self.n -= 1
            return self.n

    assert list(bpstream.from_aiter(Countdown(4))) == [3, 2, 1, 0]
    with pytest.raises(TypeError):
        bpstream.from_aiter([1, 2, 3])
    with pytest.raises(ValueError):
        bpstream.from_aiter(agen(1), capacity=0)
    with pytest.raises(ValueError):
        bpstream.from_aiter(agen(1), policy="nope")


def test_from_aiter_slow_consumer_holds_the_async_producer_back():
    capacity = 4
    tracker = Tracker()
    stream = bpstream.from_aiter(agen(60, tracker), capacity=capacity)
    ahead = []
    for consumed, item in enumerate(stream, 1):
        assert item == consumed - 1
        time.sleep(0.002)  # a slow consumer
        ahead.append(tracker.produced - consumed)
    assert consumed == 60
    assert max(ahead) <= capacity + 1, max(ahead)
    assert max(ahead) >= capacity - 1  # it did run ahead as far as the stream allows
    stats = stream.stats()
    assert stats.producer_waits > 0 and stats.producer_wait_seconds > 0
    assert stats.peak_depth <= capacity


def test_from_aiter_early_exit_runs_the_generators_finally_and_leaves_no_thread():
    resources = Resources()
    tracker = Tracker()
    with bpstream.from_aiter(agen(10**9, tracker), capacity=8) as stream:
        thread = bridge_thread(stream)
        for item in stream:
            if item == 20:
                break
        resources.assert_grew(threads=1)
    # __exit__ closed the stream and joined the thread: the cleanup is over
    assert tracker.finally_ran.is_set()
    assert not thread.is_alive()
    assert tracker.produced <= 21 + 8 + 1
    resources.assert_back()


def test_from_aiter_close_cancels_a_producer_awaiting_its_source():
    """The producer is not waiting for room but awaiting the LLM's next token (for an
    hour): close() cancels it there, and its finally runs before close() returns."""
    tracker = Tracker()
    stream = bpstream.from_aiter(agen(10, tracker, delay=3600), capacity=8)
    assert stream.get(timeout=WAKE_WITHIN) == 0
    time.sleep(BLOCK_PROBE)
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < _bridges.JOIN_TIMEOUT
    assert tracker.cancelled and tracker.finally_ran.is_set()
    assert not bridge_thread(stream).is_alive()
    with pytest.raises(bpstream.Closed):
        stream.get_nowait()


def test_from_aiter_close_before_the_loop_starts_still_closes_the_iterable():
    for _ in range(20):
        tracker = Tracker()
        stream = bpstream.from_aiter(agen(10**9, tracker), capacity=2)
        stream.close(immediate=True)
        assert not bridge_thread(stream).is_alive()
        assert tracker.produced <= 3


@pytest.mark.parametrize("where", ["waiting_for_room", "awaiting_the_source"])
def test_dropping_a_from_aiter_stream_stops_its_thread(where):
    resources = Resources()
    tracker = Tracker()
    if where == "waiting_for_room":
        stream = bpstream.from_aiter(agen(10**9, tracker), capacity=4)
        assert wait_until(lambda: tracker.produced >= 5)  # 4 in the stream, 1 in hand
    else:
        stream = bpstream.from_aiter(agen(10**9, tracker, delay=3600), capacity=4)
        assert stream.get(timeout=WAKE_WITHIN) == 0
    thread = bridge_thread(stream)
    time.sleep(BLOCK_PROBE)
    assert thread.is_alive()
    del stream  # the thread held no reference: this frees the stream
    assert tracker.finally_ran.wait(WAKE_WITHIN)
    thread.join(WAKE_WITHIN)
    assert not thread.is_alive()
    resources.assert_back()


def test_a_from_aiter_stream_in_a_reference_cycle_stops_its_thread_when_collected():
    tracker = Tracker()
    stream = bpstream.from_aiter(agen(10**9, tracker), capacity=4)
    stream.me = stream  # a cycle: only the collector frees it
    thread = bridge_thread(stream)
    assert wait_until(lambda: tracker.produced >= 5)
    del stream
    gc.collect()
    thread.join(WAKE_WITHIN)
    assert not thread.is_alive() and tracker.finally_ran.is_set()


def test_from_aiter_producer_exception_is_raised_in_place():
    class TokenLimit(Exception):
        pass

    async def failing():
        yield "a"
        yield "b"
        raise TokenLimit("context window exceeded")

    stream = bpstream.from_aiter(failing())
    it = iter(stream)
    assert next(it) == "a" and next(it) == "b"
    with pytest.raises(TokenLimit, match="context window exceeded") as first:
        next(it)
    # its own traceback, through the generator's frame
    names = [frame.name for frame in first.traceback]
    assert "failing" in names
    with pytest.raises(TokenLimit) as again:  # every later get raises it too
        stream.get()
    assert again.value is first.value
    check_identity(stream.stats())


def test_from_aiter_cancellation_from_inside_the_iterable_reaches_the_consumer():
    async def cancelled_inside():
        yield 1
        raise asyncio.CancelledError("the upstream request was cancelled")

    stream = bpstream.from_aiter(cancelled_inside())
    assert stream.get() == 1
    with pytest.raises(asyncio.CancelledError, match="upstream"):
        stream.get()


def test_from_aiter_error_after_the_consumer_stopped_is_dropped():
    async def failing_on_close():
        try:
            yield 1
            yield 2
        finally:
            raise RuntimeError("cleanup failed")

    with bpstream.from_aiter(failing_on_close(), capacity=1) as stream:
        assert stream.get() == 1
    # the consumer closed first: nothing more reaches it; the thread still ended
    assert not bridge_thread(stream).is_alive()


def test_from_aiter_with_a_drop_policy_never_waits():
    stream = bpstream.from_aiter(agen(1000), capacity=4, policy="drop_newest")
    assert wait_until(lambda: stream.closed)  # the producer ran to its end, unhindered
    assert list(stream) == [0, 1, 2, 3]
    stats = stream.stats()
    assert stats.dropped_shed == 996 and stats.producer_waits == 0
    stream = bpstream.from_aiter(agen(1000), capacity=4, policy="reject")
    assert wait_until(lambda: stream.closed)
    assert list(stream) == [0, 1, 2, 3] and stream.stats().rejected == 996


def test_from_aiter_runs_in_the_callers_context():
    request_id = contextvars.ContextVar("request_id", default=None)

    async def tagged():
        yield request_id.get()

    request_id.set("req-42")
    assert list(bpstream.from_aiter(tagged())) == ["req-42"]


def test_from_aiter_iterable_that_ignores_cancellation_keeps_its_thread_until_it_gives_up(
    monkeypatch,
):
    monkeypatch.setattr(_bridges, "JOIN_TIMEOUT", 0.1)
    done = threading.Event()

    async def stubborn():
        try:
            yield 1
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # ignores cancellation for a while
            yield 2  # and even offers more: refused
            yield 3
        finally:
            done.set()

    stream = bpstream.from_aiter(stubborn())
    assert stream.get(timeout=WAKE_WITHIN) == 1
    time.sleep(BLOCK_PROBE)
    with pytest.warns(RuntimeWarning, match="ignored cancellation"):
        stream.close()
    thread = bridge_thread(stream)
    assert thread.is_alive()
    thread.join(WAKE_WITHIN)  # it gives up: the thread ends on its own
    assert not thread.is_alive() and done.is_set()
    with pytest.raises(bpstream.Closed):
        stream.get_nowait()  # 2 and 3 were refused


def test_many_from_aiter_streams_leave_no_thread_or_fd():
    resources = Resources()
    for i in range(50):
        with bpstream.from_aiter(agen(10**9), capacity=2) as stream:
            assert stream.get() == 0
        stream = bpstream.from_aiter(agen(i))
        assert list(stream) == list(range(i))
        stream.close()
    del stream
    resources.assert_back()


# --- from_iter ----------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [1, 64])
def test_from_iter_feeds_async_for_in_order(capacity):
    async def main():
        stream = bpstream.from_iter(range(5000), capacity=capacity)
        return [item async for item in stream], stream

    items, stream = asyncio.run(main())
    assert items == list(range(5000))
    check_identity(stream.stats())
    with pytest.raises(TypeError):
        bpstream.from_iter(42)


def test_from_iter_slow_async_consumer_holds_the_thread_back():
    capacity = 4
    tracker = Tracker()

    async def main():
        stream = bpstream.from_iter(sgen(40, tracker), capacity=capacity)
        ahead = []
        consumed = 0
        async for _ in stream:
            consumed += 1
            await asyncio.sleep(0.002)
            ahead.append(tracker.produced - consumed)
        return ahead, stream.stats()

    ahead, stats = asyncio.run(main())
    assert len(ahead) == 40
    assert max(ahead) <= capacity + 1, max(ahead)
    assert stats.producer_waits > 0


def test_from_iter_exception_reaches_the_async_consumer_in_place():
    def rows():
        yield "row 1"
        yield "row 2"
        raise ConnectionResetError("database went away")

    async def main():
        got = []
        with pytest.raises(ConnectionResetError, match="went away"):
            async for row in bpstream.from_iter(rows()):
                got.append(row)
        return got

    assert asyncio.run(main()) == ["row 1", "row 2"]


def test_from_iter_close_stops_its_thread_and_closes_the_generator():
    resources = Resources()
    tracker = Tracker()
    stream = bpstream.from_iter(sgen(10**9, tracker), capacity=4)
    thread = bridge_thread(stream)
    assert wait_until(lambda: tracker.produced >= 5)  # full: the thread waits for room
    time.sleep(BLOCK_PROBE)
    assert tracker.produced == 5
    stream.close()
    assert not thread.is_alive() and tracker.finally_ran.is_set()
    resources.assert_back()


def test_async_with_from_iter_awaits_the_threads_end():
    tracker = Tracker()

    async def main():
        ticks = 0

        async def ticker():  # the loop stays free while __aexit__ waits
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.create_task(ticker())
        async with bpstream.from_iter(sgen(10**9, tracker, delay=0.05), capacity=2) as s:
            async for item in s:
                if item == 1:
                    break
            thread = bridge_thread(s)
            before = ticks
        tick_task.cancel()
        return thread, ticks - before

    thread, ticks_during_exit = asyncio.run(main())
    assert not thread.is_alive() and tracker.finally_ran.is_set()
    assert ticks_during_exit > 0  # the thread was in time.sleep: the loop kept running


def test_dropping_a_from_iter_stream_stops_its_thread():
    tracker = Tracker()
    stream = bpstream.from_iter(sgen(10**9, tracker), capacity=4)
    thread = bridge_thread(stream)
    assert wait_until(lambda: tracker.produced >= 5)
    del stream
    thread.join(WAKE_WITHIN)
    assert not thread.is_alive() and tracker.finally_ran.is_set()


def test_cancelling_the_async_consumer_of_from_iter_loses_nothing():
    """A consumer task cancelled while it awaits the next item takes nothing: a new
    consumer gets every item, in order; closing afterwards stops the thread."""
    tracker = Tracker()

    async def main():
        stream = bpstream.from_iter(sgen(30, tracker, delay=0.01), capacity=4)
        got = []

        async def consume():
            async for item in stream:
                got.append(item)

        for _ in range(5):
            task = asyncio.create_task(consume())
            await asyncio.sleep(0.015)  # mostly while the thread sleeps: the task waits
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await consume()
        return got, stream

    got, stream = asyncio.run(main())
    assert got == list(range(30))
    check_identity(stream.stats())
    bridge_thread(stream).join(WAKE_WITHIN)
    assert not bridge_thread(stream).is_alive() and tracker.finally_ran.is_set()


def test_from_iter_next_that_blocks_delays_the_stop_until_it_returns(monkeypatch):
    monkeypatch.setattr(_bridges, "JOIN_TIMEOUT", 0.1)
    release = threading.Event()
    tracker = Tracker()

    def slow_source():
        try:
            yield "first"
            release.wait(WAKE_WITHIN)  # a next() that blocks (a silent socket)
            yield "late"
        finally:
            tracker.finally_ran.set()

    stream = bpstream.from_iter(slow_source())
    assert stream.get(timeout=WAKE_WITHIN) == "first"
    time.sleep(BLOCK_PROBE)
    with pytest.warns(RuntimeWarning, match="next"):
        stream.close()
    thread = bridge_thread(stream)
    assert thread.is_alive()
    release.set()
    thread.join(WAKE_WITHIN)
    assert not thread.is_alive() and tracker.finally_ran.is_set()
    with pytest.raises(bpstream.Closed):
        stream.get_nowait()  # "late" was discarded


# --- the stream's error slot, used by both bridges -----------------------------------------


def test_close_with_error_raises_the_exception_itself_after_the_items():
    stream = bpstream.BoundedStream(4)
    stream.put(1)
    error = KeyError("missing")
    assert stream._close_with_error(error) is True
    assert stream._close_with_error(ValueError("second")) is False  # already closed
    assert stream.closed
    with pytest.raises(bpstream.Closed):
        stream.put(2)
    assert stream.get() == 1
    for _ in range(3):  # every get raises it, with a traceback that does not grow
        with pytest.raises(KeyError) as raised:
            stream.get()
        assert raised.value is error
    assert error.__traceback__ is None or len(list(_tb_frames(error))) <= 1

    async def aget():
        return await stream.aget()

    with pytest.raises(KeyError):
        asyncio.run(aget())
    with pytest.raises(TypeError):
        bpstream.BoundedStream(1)._close_with_error("not an exception")


def _tb_frames(exc):
    tb = exc.__traceback__
    while tb is not None:
        yield tb
        tb = tb.tb_next


def test_close_with_error_releases_the_exception_with_the_stream():
    import weakref

    class Boom(Exception):
        pass

    stream = bpstream.BoundedStream(1)
    error = Boom()
    ref = weakref.ref(error)
    stream._close_with_error(error)
    del error
    assert ref() is not None
    del stream
    gc.collect()
    assert ref() is None


def test_warnings_are_not_raised_by_well_behaved_bridges():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with bpstream.from_aiter(agen(10**9)) as stream:
            stream.get()
        with bpstream.from_iter(sgen(10**9)) as stream:
            stream.get()
