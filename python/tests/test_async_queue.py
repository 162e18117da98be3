"""bpstream.AsyncQueue is a drop-in for asyncio.Queue, and the two faces of one queue.

Scripts run on both classes (the asyncio.Queue run proves the expectations are asyncio's);
shutdown follows Python 3.13's asyncio.Queue, checked on asyncio.Queue where it has it.
A hypothesis state machine compares the non-waiting calls and task accounting with a
model of asyncio.Queue's rules. Then: cancellation safety of put/get/join, join woken by a
task_done from a thread, the sync/async faces across a thread and a loop, two loops.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
import time
from collections import deque

import pytest

import bpstream

HAS_SHUTDOWN = hasattr(asyncio.Queue, "shutdown")
ShutDownErrors = (bpstream.Closed,) + ((asyncio.QueueShutDown,) if HAS_SHUTDOWN else ())


@pytest.fixture(params=[asyncio.Queue, bpstream.AsyncQueue], ids=["asyncio.Queue", "AsyncQueue"])
def Q(request):
    return request.param


@pytest.fixture(
    params=[
        pytest.param(asyncio.Queue, id="asyncio.Queue",
                     marks=pytest.mark.skipif(not HAS_SHUTDOWN, reason="asyncio.Queue.shutdown is 3.13+")),
        pytest.param(bpstream.AsyncQueue, id="AsyncQueue"),
    ]
)
def SQ(request):
    return request.param


def shutdown_error(q):
    return asyncio.QueueShutDown if isinstance(q, asyncio.Queue) else bpstream.Closed


def run(coro, timeout=10):
    async def bounded():
        async with asyncio.timeout(timeout):
            return await coro
    return asyncio.run(bounded())


# ---------------------------------------------------------------------------------------
# The API, side by side

def test_nowait_calls_without_a_loop(Q):
    q = Q(2)
    assert (q.maxsize, q.qsize(), q.empty(), q.full()) == (2, 0, True, False)
    q.put_nowait("a")
    q.put_nowait("b")
    assert (q.qsize(), q.empty(), q.full()) == (2, False, True)
    with pytest.raises(asyncio.QueueFull):
        q.put_nowait("c")
    assert [q.get_nowait(), q.get_nowait()] == ["a", "b"]
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()
    q.task_done()
    q.task_done()
    with pytest.raises(ValueError):
        q.task_done()


@pytest.mark.parametrize("maxsize, fits", [(1.3, 2), (0.5, 1), (2.0, 2), (-1.5, None),
                                           (float("inf"), None), (0, None), (-3, None)])
def test_maxsize_as_asyncio_reads_it(Q, maxsize, fits):
    q = Q(maxsize)
    assert q.maxsize == maxsize
    for i in range(fits or 50):
        q.put_nowait(i)
    assert q.full() == (fits is not None)
    if fits is not None:
        with pytest.raises(asyncio.QueueFull):
            q.put_nowait("one too many")


def test_exceptions_serve_both_faces():
    assert issubclass(bpstream.QueueFull, asyncio.QueueFull)
    assert issubclass(bpstream.QueueFull, queue.Full)
    assert issubclass(bpstream.QueueFull, bpstream.Full)
    assert issubclass(bpstream.QueueEmpty, asyncio.QueueEmpty)
    assert issubclass(bpstream.QueueEmpty, queue.Empty)
    q = bpstream.AsyncQueue(1)
    q.put_nowait(1)
    with pytest.raises(bpstream.Full):          # a bpstream user's except clause still works
        q.put_nowait(2)
    q.shutdown()
    with pytest.raises(ShutDownErrors):
        q.put_nowait(3)


@pytest.mark.skipif(not HAS_SHUTDOWN, reason="asyncio.QueueShutDown is 3.13+")
def test_closed_is_asyncio_queue_shutdown():
    assert issubclass(bpstream.Closed, asyncio.QueueShutDown)


def test_generic_alias_and_coroutine_functions():
    alias = bpstream.AsyncQueue[int]
    assert alias.__args__ == (int,)
    assert alias.__origin__ is bpstream.AsyncQueue
    q = bpstream.AsyncQueue()
    for name in ("put", "get", "join"):
        assert asyncio.iscoroutinefunction(getattr(q, name)), name
    assert "AsyncQueue" in repr(q) and "maxsize=0" in repr(q)


def test_put_returns_none_and_order(Q):
    async def main():
        q = Q()
        results = [await q.put(i) for i in (1, 3, 2)]
        assert results == [None, None, None]
        return [await q.get() for _ in range(3)]
    assert run(main()) == [1, 3, 2]


def test_a_put_wakes_a_waiting_getter_in_the_same_iteration(Q):
    # asyncio.Queue's scheduling: a getter woken by a put from its own loop has run by the
    # next sleep(0); so has a putter woken by a get.
    async def main():
        q = Q(1)
        got = []

        async def getter():
            got.append(await q.get())

        t = asyncio.create_task(getter())
        await asyncio.sleep(0)
        q.put_nowait("x")
        await asyncio.sleep(0)
        assert got == ["x"]
        await t
        q.put_nowait(1)
        put = asyncio.create_task(q.put(2))
        await asyncio.sleep(0)
        assert not put.done()
        assert q.get_nowait() == 1
        await asyncio.sleep(0)
        assert put.done() and q.qsize() == 1
    run(main())


def test_join_waits_for_every_task_done(Q):
    async def main():
        q = Q()
        for i in range(5):
            q.put_nowait(i)
        joined = asyncio.create_task(q.join())
        for _ in range(5):
            await asyncio.sleep(0)
            assert not joined.done()
            await q.get()
            q.task_done()
        await asyncio.sleep(0)
        assert joined.done()
        await q.join()  # nothing unfinished: at once
    run(main())


def test_shutdown_semantics(SQ):
    async def main():
        q = SQ(2)
        error = shutdown_error(q)
        q.put_nowait(1)
        q.put_nowait(2)
        putter = asyncio.create_task(q.put(3))
        await asyncio.sleep(0)
        q.shutdown()
        await asyncio.sleep(0)
        assert putter.done()
        with pytest.raises(error):
            await putter
        with pytest.raises(error):
            q.put_nowait(4)
        assert [await q.get(), q.get_nowait()] == [1, 2]   # drains, then raises
        with pytest.raises(error):
            await q.get()
        with pytest.raises(error):
            q.get_nowait()
        joined = asyncio.create_task(q.join())
        await asyncio.sleep(0)
        assert not joined.done()          # a shutdown finishes no task
        q.task_done()
        q.task_done()
        await asyncio.sleep(0)
        assert joined.done()
    run(main())


def test_shutdown_immediate_counts_discarded_items_done(SQ):
    async def main():
        q = SQ()
        error = shutdown_error(q)
        for i in range(3):
            q.put_nowait(i)
        assert await q.get() == 0
        getter_q = SQ()
        getter = asyncio.create_task(getter_q.get())
        joined = asyncio.create_task(q.join())
        await asyncio.sleep(0)
        q.shutdown(immediate=True)           # 3 unfinished -> 1 (the one got)
        getter_q.shutdown(immediate=True)
        await asyncio.sleep(0)
        assert q.qsize() == 0 and not joined.done()
        with pytest.raises(error):
            await getter
        with pytest.raises(error):
            q.get_nowait()
        q.task_done()
        await asyncio.sleep(0)
        assert joined.done()
        with pytest.raises(ValueError):
            q.task_done()
    run(main())


def test_policies_on_the_async_face():
    async def main():
        q = bpstream.AsyncQueue(2, policy="drop_oldest")
        for i in range(5):
            await q.put(i)
        assert [q.get_nowait(), q.get_nowait()] == [3, 4]
        r = bpstream.AsyncQueue(1, policy="reject")
        await r.put(1)
        with pytest.raises(asyncio.QueueFull):
            await r.put(2)
        with pytest.raises(asyncio.QueueFull):
            r.put_nowait(2)
    run(main())


# ---------------------------------------------------------------------------------------
# A model of asyncio.Queue's non-waiting rules (3.13 shutdown included), compared call by
# call with AsyncQueue, and its task accounting with bpstream's stats.

try:
    from hypothesis import settings, strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
except ImportError:  # pragma: no cover
    RuleBasedStateMachine = None

if RuleBasedStateMachine is not None:
    class AsyncQueueModel(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.maxsize = 3
            self.q = bpstream.AsyncQueue(self.maxsize)
            self.items, self.unfinished, self.shut, self.counter = deque(), 0, False, 0

        def outcome(self, call):
            try:
                return ("ok", call())
            except asyncio.QueueFull:
                return ("full", None)
            except asyncio.QueueEmpty:
                return ("empty", None)
            except bpstream.Closed:
                return ("shutdown", None)
            except ValueError:
                return ("too many", None)

        @rule()
        def put_nowait(self):
            self.counter += 1
            if self.shut:
                expected = ("shutdown", None)
            elif len(self.items) >= self.maxsize:
                expected = ("full", None)
            else:
                self.items.append(self.counter)
                self.unfinished += 1
                expected = ("ok", None)
            assert self.outcome(lambda: self.q.put_nowait(self.counter)) == expected

        @rule()
        def get_nowait(self):
            if self.items:
                expected = ("ok", self.items.popleft())
            else:
                expected = ("shutdown" if self.shut else "empty", None)
            assert self.outcome(self.q.get_nowait) == expected

        @rule()
        def task_done(self):
            if self.unfinished:
                self.unfinished -= 1
                expected = ("ok", None)
            else:
                expected = ("too many", None)
            assert self.outcome(self.q.task_done) == expected

        @rule(immediate=st.booleans())
        def shutdown(self, immediate):
            self.shut = True
            if immediate:
                while self.items:
                    self.items.popleft()
                    self.unfinished = max(self.unfinished - 1, 0)
            self.q.shutdown(immediate=immediate)

        @invariant()
        def same_state(self):
            assert self.q.qsize() == len(self.items)
            assert self.q.empty() == (not self.items)
            assert self.q.full() == (len(self.items) >= self.maxsize)
            assert self.q.stats().unfinished_tasks == self.unfinished

    AsyncQueueModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                                 deadline=None)
    TestAsyncQueueModel = AsyncQueueModel.TestCase


# ---------------------------------------------------------------------------------------
# Cancellation safety

def test_cancelled_waiters_lose_and_duplicate_nothing():
    """Thousands of gets and puts, a random third of them cancelled while waiting: every
    item is delivered exactly once, and every cancelled put stored nothing."""
    import random

    rng = random.Random(7)

    async def main():
        q = bpstream.AsyncQueue(4)
        stored, got = [], []
        next_id = iter(range(10**9))

        async def producer():
            for _ in range(600):
                item = next(next_id)
                task = asyncio.create_task(q.put(item))
                await asyncio.sleep(0)
                if not task.done() and rng.random() < 0.33:
                    task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    continue
                stored.append(item)

        async def consumer():
            while True:
                task = asyncio.create_task(q.get())
                await asyncio.sleep(0)
                if not task.done() and rng.random() < 0.33:
                    task.cancel()
                try:
                    item = await task
                except asyncio.CancelledError:
                    continue
                except bpstream.Closed:
                    return
                got.append(item)
                q.task_done()

        consumers = [asyncio.create_task(consumer()) for _ in range(3)]
        await asyncio.gather(producer(), producer())
        await q.join()
        q.shutdown()
        await asyncio.gather(*consumers)
        assert sorted(got) == sorted(stored)
        assert len(set(got)) == len(got)
        stats = q.stats()
        assert stats.produced == len(stored) == stats.consumed
    run(main(), timeout=60)


def test_cancelled_join_leaves_other_joiners_waiting():
    async def main():
        q = bpstream.AsyncQueue()
        q.put_nowait(1)
        first = asyncio.create_task(q.join())
        second = asyncio.create_task(q.join())
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        q.get_nowait()
        q.task_done()
        await asyncio.sleep(0)
        assert second.done()
    run(main())


def test_join_under_asyncio_timeout():
    async def main():
        q = bpstream.AsyncQueue()
        q.put_nowait(1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await q.join()
        q.get_nowait()
        q.task_done()
        await asyncio.wait_for(q.join(), 1)
    run(main())


# ---------------------------------------------------------------------------------------
# Mixed faces: one queue, threads and loops

def test_the_faces_are_one_queue():
    aq = bpstream.AsyncQueue(3)
    assert aq.async_q is aq
    assert isinstance(aq.sync_q, bpstream.Queue)
    assert aq.sync_q.sync_q is aq.sync_q
    assert aq.sync_q.async_q is aq
    q = bpstream.Queue(2)
    assert q.sync_q is q
    face = q.async_q
    assert face is q.async_q and isinstance(face, bpstream.AsyncQueue)
    assert face.sync_q is q and face.maxsize == 2
    q.put(1)
    assert face.qsize() == 1 and face.get_nowait() == 1
    q.maxsize = 5                       # the sync face's writable maxsize shows through
    assert face.maxsize == 5


def test_janus_style_thread_producer_async_consumer_and_join():
    """A thread puts through sync_q (blocking on a full queue), tasks consume through the
    async face and call task_done; a thread's join() and a task's join() both return."""
    async def main():
        q = bpstream.Queue(maxsize=8)     # `janus.Queue(8)` with only the import changed
        n = 2000

        def produce():
            for i in range(n):
                q.sync_q.put(i)
            q.sync_q.join()

        producer = threading.Thread(target=produce)
        producer.start()
        total = 0
        for _ in range(n):
            total += await q.async_q.get()
            q.async_q.task_done()
        await asyncio.wait_for(q.async_q.join(), 5)
        await asyncio.to_thread(producer.join, 5)
        assert not producer.is_alive()
        assert total == sum(range(n))
    run(main())


def test_task_done_from_a_thread_wakes_an_awaiting_join():
    async def main():
        q = bpstream.AsyncQueue()
        for i in range(3):
            q.put_nowait(i)
        joined = asyncio.create_task(q.join())
        await asyncio.sleep(0.01)
        assert not joined.done()

        def worker():
            while True:
                try:
                    q.sync_q.get(timeout=0.2)
                except bpstream.Empty:
                    return
                time.sleep(0.005)
                q.sync_q.task_done()

        thread = threading.Thread(target=worker)
        thread.start()
        started = time.monotonic()
        await asyncio.wait_for(joined, 5)
        assert time.monotonic() - started < 2
        thread.join()
    run(main())


def test_async_producer_thread_consumer():
    async def main():
        q = bpstream.AsyncQueue(4)
        got = []

        def consume():
            while True:
                try:
                    got.append(q.sync_q.get(timeout=5))
                except bpstream.Closed:
                    return
                q.sync_q.task_done()

        thread = threading.Thread(target=consume)
        thread.start()
        for i in range(500):
            await q.put(i)        # waits on the loop while the thread is behind
        await q.join()
        q.shutdown()
        await asyncio.to_thread(thread.join, 5)
        assert got == list(range(500))
    run(main())


def test_two_loops_in_two_threads_share_one_queue():
    q = bpstream.AsyncQueue(16)
    n = 3000
    got = []
    errors = []

    def loop_thread(coro_fn):
        try:
            asyncio.run(coro_fn())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    async def producer():
        for i in range(n):
            await q.put(i)
        await q.join()
        q.shutdown()

    async def consumer():
        while True:
            try:
                item = await q.get()
            except bpstream.Closed:
                return
            got.append(item)
            q.task_done()

    threads = [threading.Thread(target=loop_thread, args=(producer,)),
               threading.Thread(target=loop_thread, args=(consumer,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and not any(t.is_alive() for t in threads)
    assert got == list(range(n))
