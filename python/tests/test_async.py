"""asyncio on a BoundedStream: aget/aput, `async for`, `async with`.

What a user can observe: the same outcomes and exceptions as put/get for every policy;
no suspension when an item or room is there; waiting suspends the task, not the thread;
a cancelled get takes nothing and a cancelled put stores nothing, even in the thousands
and at random points; one stream shared at once by tasks on two loops in two threads,
plain threads and a native producer, exactly once; timeouts (asyncio.timeout, wait_for);
async waits counted in stats like thread waits; no fd, task or CPU left behind.
"""

import asyncio
import gc
import os
import random
import resource
import threading
import time

import pytest

import bpstream
from support import check_identity

WITHIN = 10.0  # generous bound on anything that must happen "soon"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def done_at_once(awaitable):
    """The awaitable's result if it completes without suspending (the fast path)."""
    iterator = awaitable.__await__()
    with pytest.raises(StopIteration) as stop:
        iterator.send(None)
    return stop.value.value


# ----------------------------------------------------------------------------- fast path


def test_an_item_or_room_already_there_needs_no_suspension():
    s = bpstream.BoundedStream(2)
    assert done_at_once(s.aput("a")) is True
    assert done_at_once(s.aput(("a", "tuple"))) is True  # a tuple result stays whole
    assert done_at_once(s.aget()) == "a"
    assert done_at_once(s.aget()) == ("a", "tuple")
    st = s.stats()
    assert (st.producer_waits, st.consumer_waits, st.rejected) == (0, 0, 0)


@pytest.mark.parametrize(
    "policy, result, kept",
    [("drop_newest", False, [0, 1]), ("drop_oldest", True, [1, 2]), ("drop_all", True, [2])],
)
def test_drop_policies_never_wait(policy, result, kept):
    s = bpstream.BoundedStream(2, policy)
    for i in range(2):
        done_at_once(s.aput(i))
    assert done_at_once(s.aput(2)) is result
    assert s.get_many(10) == kept


def test_reject_raises_full_at_the_await_and_counts_a_rejection():
    s = bpstream.BoundedStream(1, "reject")
    s.put(0)
    awaitable = s.aput(1)  # nothing raised at the call: at the await, like a coroutine
    with pytest.raises(bpstream.Full):
        done_at_once(awaitable)
    assert s.stats().rejected == 1 and s.stats().producer_waits == 0


def test_timeout_zero_is_nowait():
    s = bpstream.BoundedStream(1)
    with pytest.raises(bpstream.Empty):
        done_at_once(s.aget(timeout=0))
    s.put(0)
    with pytest.raises(bpstream.Full):
        done_at_once(s.aput(1, timeout=0))
    assert s.stats().rejected == 1


def test_bad_timeouts_raise_at_the_call():
    s = bpstream.BoundedStream(1)
    with pytest.raises(ValueError):
        s.aget(timeout=-1)
    with pytest.raises(ValueError):
        s.aput(1, timeout=float("nan"))
    with pytest.raises(TypeError):
        s.aget(timeout="1")


# ----------------------------------------------------------------------------- waiting


def test_task_to_task_in_order_with_backpressure():
    async def main():
        s = bpstream.BoundedStream(8)
        ahead = []

        async def produce():
            for i in range(2000):
                await s.aput(i)
                ahead.append(len(s))
            s.close()

        task = asyncio.create_task(produce())
        got = [x async for x in s]
        await task
        assert got == list(range(2000))
        assert max(ahead) <= 8
        st = s.stats()
        check_identity(st)
        assert st.producer_waits > 0 and st.consumer_waits > 0 and st.rejected == 0

    run(main())


def test_a_waiting_get_suspends_the_task_not_the_thread():
    async def main():
        s = bpstream.BoundedStream(1)
        getter = asyncio.create_task(s.aget())
        ticks = 0
        while not getter.done() and ticks < 20:
            await asyncio.sleep(0.001)  # the loop keeps running meanwhile
            ticks += 1
        assert ticks == 20 and not getter.done()
        await s.aput("x")
        assert await asyncio.wait_for(getter, WITHIN) == "x"

    run(main())


def test_timeouts_end_waits_with_empty_and_full_counted_like_threads():
    async def main():
        s = bpstream.BoundedStream(1)
        start = time.monotonic()
        with pytest.raises(bpstream.Empty):
            await s.aget(timeout=0.05)
        assert 0.04 <= time.monotonic() - start < WITHIN
        await s.aput(0)
        with pytest.raises(bpstream.Full):
            await s.aput(1, timeout=0.05)
        st = s.stats()
        assert (st.consumer_waits, st.producer_waits, st.rejected) == (1, 1, 1)
        assert st.backpressure_events == 1
        assert st.producer_wait_seconds >= 0.04 and st.consumer_wait_seconds >= 0.04
        assert s.get_nowait() == 0 and len(s) == 0

    run(main())


@pytest.mark.parametrize("how", ["asyncio.timeout", "wait_for"])
def test_asyncio_timeouts_work_on_every_awaitable(how):
    async def expire(awaitable):
        if how == "wait_for":
            await asyncio.wait_for(awaitable, 0.05)
        else:
            async with asyncio.timeout(0.05):
                await awaitable

    async def main():
        s = bpstream.BoundedStream(1)
        with pytest.raises(TimeoutError):
            await expire(s.aget())
        await s.aput(0)
        with pytest.raises(TimeoutError):
            await expire(s.aput(1))
        with pytest.raises(TimeoutError):
            await expire(s.aput_many([1, 2]))
        assert s.get_many(10) == [0]  # nothing stored by the expired puts
        with pytest.raises(TimeoutError):
            await expire(s.aget_many(3))
        with pytest.raises(TimeoutError):
            await expire(s.__aiter__().__anext__())
        await s.aput(5)
        assert await s.aget() == 5  # nothing taken by the expired gets

    run(main())


def test_close_wakes_every_waiter():
    async def main():
        s = bpstream.BoundedStream(1)
        getters = [asyncio.create_task(s.aget()) for _ in range(3)]
        await asyncio.sleep(0.01)
        full = bpstream.BoundedStream(1)
        full.put(0)
        putters = [asyncio.create_task(full.aput(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        s.close()
        full.close()
        for task in getters + putters:
            with pytest.raises(bpstream.Closed):
                await asyncio.wait_for(task, WITHIN)
        assert full.get_many(10) == [0]

    run(main())


def test_async_with_closes_and_async_for_drains_then_ends():
    async def main():
        async with bpstream.BoundedStream(4) as s:
            await s.aput(1)
            await s.aput(2)
        assert s.closed
        assert [x async for x in s] == [1, 2]
        with pytest.raises(bpstream.Closed):
            await s.aget()
        with pytest.raises(bpstream.Closed):
            await s.aput(3)

    run(main())


def test_breaking_out_of_async_for_loses_nothing():
    async def main():
        s = bpstream.BoundedStream(1000)
        s.put_many(range(500))
        got = []
        async for x in s:
            got.append(x)
            if len(got) == 10:
                break
        gc.collect()
        assert got + s.get_many(1000) == list(range(500))

    run(main())


# ----------------------------------------------------------------------------- threads


def test_threads_and_tasks_wake_each_other():
    async def main():
        s = bpstream.BoundedStream(4)
        n = 20_000

        def produce():
            for i in range(n):
                s.put(i)
            s.close()

        thread = threading.Thread(target=produce)
        thread.start()
        got = [x async for x in s]
        thread.join(WITHIN)
        assert got == list(range(n))

        back = bpstream.BoundedStream(4)
        received = []

        def consume():
            received.extend(back)

        thread = threading.Thread(target=consume)
        thread.start()
        for i in range(n):
            await back.aput(i)
        back.close()
        await asyncio.get_running_loop().run_in_executor(None, thread.join, WITHIN)
        assert received == list(range(n))

    run(main())


def test_a_sync_for_loop_frees_room_for_an_async_producer_at_once():
    """The for loop's read-ahead publishes deliveries without the lock: an async producer
    waiting for room must still get it per item, not per read-ahead batch."""
    s = bpstream.BoundedStream(64)
    s.put_many(range(64))
    started = threading.Event()
    results = []

    def produce():
        async def main():
            started.set()
            results.append(await s.aput("late", timeout=WITHIN))
        asyncio.run(main())

    thread = threading.Thread(target=produce)
    thread.start()
    started.wait(WITHIN)
    time.sleep(0.05)
    it = iter(s)
    assert next(it) == 0  # the read-ahead takes a batch; one item delivered
    thread.join(WITHIN)
    assert results == [True]
    assert len(s) == 64


def test_two_loops_two_threads_and_a_native_producer_share_one_stream(tokens):
    n = 200_000
    s = bpstream.BoundedStream(32)
    seen = {"loop1": [], "loop2": [], "thread": []}

    def loop_consumer(name):
        async def main():
            async for frame in s:
                seen[name].append(int.from_bytes(frame, "little"))
        asyncio.run(main())

    def thread_consumer():
        for frame in s:
            seen["thread"].append(int.from_bytes(frame, "little"))

    threads = [threading.Thread(target=loop_consumer, args=("loop1",)),
               threading.Thread(target=loop_consumer, args=("loop2",)),
               threading.Thread(target=thread_consumer)]
    for t in threads:
        t.start()

    accepted = []

    async def python_producer():
        # Beside the native producer, which closes the stream when it is done: the puts
        # that raced its close raise Closed and stored nothing.
        for i in range(n, n + 5000):
            try:
                await s.aput(i.to_bytes(8, "little"))
            except bpstream.Closed:
                return
            accepted.append(i)
    producer = tokens.count(s, n, batch=16)
    run(python_producer())
    assert producer.join(60)  # closes the stream when done
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    everything = seen["loop1"] + seen["loop2"] + seen["thread"]
    assert sorted(everything) == list(range(n)) + accepted, "lost or duplicated"
    print(f"{len(accepted)} Python items in beside {n} native frames")
    assert all(len(v) > 0 for v in seen.values()), {k: len(v) for k, v in seen.items()}
    check_identity(s.stats())


def test_read_lines_feeds_an_async_for(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(50_000)))

    async def main():
        n = 0
        async for line in bpstream.read_lines(str(path), capacity=16):
            assert line == b"line %d\n" % n
            n += 1
        return n

    assert run(main()) == 50_000


# ----------------------------------------------------------------------------- cancellation


def test_a_cancelled_get_takes_nothing_and_a_cancelled_put_stores_nothing():
    async def main():
        s = bpstream.BoundedStream(1)
        getter = asyncio.create_task(s.aget())
        await asyncio.sleep(0.01)
        getter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getter
        s.put("kept")
        assert s.get_nowait() == "kept"
        s.put("full")
        putter = asyncio.create_task(s.aput("never"))
        await asyncio.sleep(0.01)
        putter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await putter
        assert s.get_many(10) == ["full"]

    run(main())


def test_a_woken_then_cancelled_getter_passes_its_wake_up_on():
    async def main():
        s = bpstream.BoundedStream(4)
        first = asyncio.create_task(s.aget())
        second = asyncio.create_task(s.aget())
        await asyncio.sleep(0.01)
        s.put("item")  # wakes the first (from this thread: through the eventfd)
        await asyncio.sleep(0)  # the wake-up is in flight...
        first.cancel()  # ...and the first is cancelled before it runs
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError) or results[0] == "item"
        if isinstance(results[0], asyncio.CancelledError):
            assert results[1] == "item"
        else:
            second.cancel()

    for _ in range(20):
        run(main())


def test_thousands_of_random_cancellations_lose_and_duplicate_nothing():
    rng = random.Random(7)

    async def main():
        s = bpstream.BoundedStream(3)
        stored, consumed = [], []
        next_id = 0

        async def putter(i):
            await s.aput(i)
            stored.append(i)

        async def getter():
            consumed.append(await s.aget())

        tasks = []
        for step in range(3000):
            if rng.random() < 0.5:
                tasks.append(asyncio.create_task(putter(next_id)))
                next_id += 1
            else:
                tasks.append(asyncio.create_task(getter()))
            if rng.random() < 0.3:
                await asyncio.sleep(0)
            if tasks and rng.random() < 0.4:
                rng.choice(tasks).cancel()
        await asyncio.sleep(0.01)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        rest = s.get_many(100) if len(s) else []
        assert sorted(consumed + rest) == sorted(stored), "lost or duplicated items"
        assert len(set(consumed)) == len(consumed)
        st = s.stats()
        check_identity(st)
        assert st.produced == len(stored)

    run(main())


# ----------------------------------------------------------------------------- resources


def test_no_fd_task_or_watch_is_left_behind():
    def fds():
        return len(os.listdir("/proc/self/fd"))

    async def once():
        s = bpstream.BoundedStream(1)
        getter = asyncio.create_task(s.aget())
        await asyncio.sleep(0)
        await s.aput(1)
        assert await getter == 1

    run(once())
    gc.collect()
    before = fds()
    for _ in range(50):
        run(once())
    gc.collect()
    assert fds() <= before + 1
    assert not [t for t in gc.get_objects() if isinstance(t, asyncio.Task) and not t.done()]


def test_an_idle_waiting_get_uses_no_cpu():
    async def main():
        s = bpstream.BoundedStream(1)
        getter = asyncio.create_task(s.aget())
        await asyncio.sleep(0.01)
        before = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(1.0)
        after = resource.getrusage(resource.RUSAGE_SELF)
        getter.cancel()
        return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

    used = run(main())
    print(f"CPU while idle-waiting 1 s: {used * 1000:.1f} ms")
    assert used < 0.2


# ----------------------------------------------------------------------------- other loops


def test_uvloop():
    uvloop = pytest.importorskip("uvloop")

    async def main():
        s = bpstream.BoundedStream(2)
        thread = threading.Thread(target=lambda: [s.put(i) for i in range(1000)] and s.close())
        thread.start()
        got = [x async for x in s]
        thread.join(WITHIN)
        return got

    assert uvloop.run(main()) == list(range(1000))


def test_anyio_asyncio_backend():
    anyio = pytest.importorskip("anyio")

    async def main():
        s = bpstream.BoundedStream(2)
        got = []

        async def consume():
            async for x in s:
                got.append(x)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            for i in range(500):
                await s.aput(i)
            s.close()
        return got

    assert anyio.run(main, backend="asyncio") == list(range(500))


# ----------------------------------------------------------------------------- batches


def test_aput_many_and_aget_many():
    async def main():
        s = bpstream.BoundedStream(4)
        assert await s.aput_many(range(3)) == 3
        assert await s.aget_many(10) == [0, 1, 2]
        waiting = asyncio.create_task(s.aget_many(10))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        s.put_many([7, 8])
        assert await asyncio.wait_for(waiting, WITHIN) == [7, 8]
        with pytest.raises(bpstream.Full) as info:
            await s.aput_many(range(10), timeout=0.05)
        assert info.value.accepted == 4 and len(s) == 4
        with pytest.raises(ValueError):
            s.aget_many(0)

        async def consume():
            got = []
            while len(got) < 1000:
                got += await s.aget_many(7)
            return got

        s.get_many(10)
        consumer = asyncio.create_task(consume())
        assert await s.aput_many(range(1000)) == 1000  # waits for room as it goes
        assert await asyncio.wait_for(consumer, WITHIN) == list(range(1000))

    run(main())
