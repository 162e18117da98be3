"""Defects found by an adversarial review (a hostile user's programs), one test each.

Every test here failed on main when it was written; each names the promise it checks.
"""

import asyncio
import gc
import time

import pytest

import bpstream

WITHIN = 10.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


# ------------------------------------------------------------- async wake-ups and timeouts


@pytest.mark.parametrize("kind", ["get", "put"])
def test_a_waiter_woken_then_timed_out_passes_its_wake_up_on(kind):
    # A waits with a timeout, B without. One item (or one slot) appears; the loop is
    # then late, so A's wake-up and A's deadline fall in the same loop iteration. A may
    # give up (Empty/Full), but the wake-up it received must go to B: "a waiter that was
    # woken and then cancelled passes its wake-up on, so no other waiter is stranded".
    async def main():
        s = bpstream.BoundedStream(1)
        if kind == "put":
            s.put("filler")

        async def waiter(timeout):
            try:
                if kind == "get":
                    return await s.aget(timeout=timeout)
                return await s.aput("new", timeout=timeout)
            except (bpstream.Empty, bpstream.Full) as exc:
                return type(exc).__name__

        a = asyncio.create_task(waiter(0.05))
        await asyncio.sleep(0)
        b = asyncio.create_task(waiter(None))
        await asyncio.sleep(0.01)
        if kind == "get":
            s.put_nowait("x")   # notifies: the loop's eventfd is written
        else:
            s.get_nowait()
        time.sleep(0.1)         # the loop is late: A's deadline passes too
        await a
        # B must complete: the item (or room) is there and B is the only waiter left.
        result = await asyncio.wait_for(b, WITHIN)
        assert result == ("x" if kind == "get" else True)

    run(main())


# ------------------------------------------------------------- per-loop bookkeeping


def test_streams_that_waited_on_a_long_lived_loop_leave_nothing_behind():
    # A server's loop lives for days; per-request streams (from_iter, one per request)
    # each make a task wait once. The loop's bookkeeping must not keep every stream's
    # waiter record (and its core watch) until the loop dies: that leaks memory and makes
    # every later wake-up on the loop walk all of them.
    from bpstream import _aio

    async def main():
        loop = asyncio.get_running_loop()
        for _ in range(200):
            s = bpstream.BoundedStream(4)
            with pytest.raises(bpstream.Empty):
                await s.aget(timeout=0.0001)
            del s
        gc.collect()
        return len(_aio._loop_wakers[loop].waiters)

    assert run(main()) <= 1


# ------------------------------------------------------------- async outcomes match sync


def test_aput_many_with_timeout_zero_on_a_full_stream_counts_no_wait():
    # "The same outcomes and exceptions as put" and "only a wait counts": put_many(...,
    # timeout=0) and aput(..., timeout=0) on a full block stream reject without waiting;
    # aput_many(..., timeout=0) must not count a producer wait or a backpressure event.
    async def main():
        sync, async_ = bpstream.BoundedStream(1), bpstream.BoundedStream(1)
        sync.put(0)
        async_.put(0)
        with pytest.raises(bpstream.Full) as sync_exc:
            sync.put_many([1, 2], timeout=0)
        with pytest.raises(bpstream.Full) as async_exc:
            await async_.aput_many([1, 2], timeout=0)
        assert async_exc.value.accepted == sync_exc.value.accepted == 0
        fields = ("rejected", "producer_waits", "backpressure_events", "produced", "depth")
        a, b = sync.stats(), async_.stats()
        assert [getattr(b, f) for f in fields] == [getattr(a, f) for f in fields]

    run(main())


def test_a_timeout_too_large_for_a_float_waits_like_the_sync_call():
    # get(timeout=10**400) waits without limit; aget/aget_many/aput must not raise
    # OverflowError instead ("the same outcomes and exceptions as put/get").
    async def main():
        s = bpstream.BoundedStream(1)
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, s.put_nowait, "a")
        assert await asyncio.wait_for(s.aget(timeout=10**400), WITHIN) == "a"
        loop.call_later(0.01, s.put_nowait, "b")
        assert await asyncio.wait_for(s.aget_many(5, timeout=10**400), WITHIN) == ["b"]
        s.put_nowait("c")
        loop.call_later(0.01, s.get_nowait)
        assert await asyncio.wait_for(s.aput("d", timeout=10**400), WITHIN) is True

    run(main())
