"""asyncio puts on a stream with flow control, a rate, or policy="adaptive" (issue 9 for aput).

What a user can observe: an aput that may wait is delayed once while THROTTLED and waits
while PAUSED (or while full, then PAUSED) like a blocking put, suspending only its task (a
heartbeat task keeps ticking); a timeout shorter than the delay ends it with Full at the
deadline, counted as rejected; a cancelled one stores nothing; timeout 0 is never delayed;
a rate paces it one permit per item (refusing timeout 0 without a token); an adaptive
stream fed by an async producer backs its rate off; aput_many is gated once per call (as
put_many) on a stream that is only gated.
"""

import asyncio
import threading
import time

import pytest

import bpstream
from bpstream import AIMD, FlowControl, FlowState, ManualClock, TokenBucket

WITHIN = 10.0  # generous bound on anything that must happen "soon"
FAST = FlowControl(min_delay=0.001, max_delay=0.100)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def filled(depth, capacity=100, flow=FAST, policy="block", **kw):
    s = bpstream.BoundedStream(capacity, policy, flow=flow, **kw)
    for i in range(depth):
        s.put_nowait(i)
    return s


class Heartbeat:
    """A task ticking every millisecond: proof the loop is free while an aput waits."""

    def __init__(self):
        self.ticks = 0
        self.task = asyncio.create_task(self._beat())

    async def _beat(self):
        while True:
            await asyncio.sleep(0.001)
            self.ticks += 1

    def stop(self):
        self.task.cancel()


async def spin(n=20):
    for _ in range(n):
        await asyncio.sleep(0)


# ------------------------------------------------------------------------- the flow gate


def test_plain_streams_keep_the_fast_path():
    assert bpstream.BoundedStream(4)._async_flow == 0
    assert bpstream.BoundedStream(4)._pacing is None
    assert filled(0)._async_flow != 0


def test_throttled_aput_waits_the_delay_with_the_loop_free():
    s = filled(90, flow=FlowControl(min_delay=0.001, max_delay=0.2))
    assert s.flow_state is FlowState.THROTTLED

    async def main():
        beat = Heartbeat()
        start = time.monotonic()
        assert await s.aput("x") is True
        elapsed = time.monotonic() - start
        beat.stop()
        return elapsed, beat.ticks

    elapsed, ticks = run(main())
    assert 0.18 <= elapsed < WITHIN
    assert ticks >= 10
    st = s.stats()
    assert (st.depth, st.producer_waits, st.rejected) == (91, 0, 0)


def test_throttled_aput_with_timeout_zero_is_never_delayed():
    s = filled(90, flow=FlowControl(min_delay=0.5, max_delay=1.0))

    async def main():
        start = time.monotonic()
        assert await s.aput("x", timeout=0) is True
        return time.monotonic() - start

    assert run(main()) < 0.4
    assert len(s) == 91


def test_a_delay_longer_than_the_timeout_ends_with_full_at_the_deadline():
    s = filled(90, flow=FlowControl(min_delay=0.5, max_delay=1.0))

    async def main():
        start = time.monotonic()
        with pytest.raises(bpstream.Full):
            await s.aput("x", timeout=0.05)
        return time.monotonic() - start

    assert 0.045 <= run(main()) < 0.5
    st = s.stats()
    assert (st.depth, st.rejected, st.producer_waits) == (90, 1, 0)


def test_paused_aput_waits_for_a_consumer_to_bring_the_stream_to_the_pause_mark():
    s = filled(95)
    assert s.flow_state is FlowState.PAUSED

    async def main():
        beat = Heartbeat()
        task = asyncio.create_task(s.aput("x"))
        await asyncio.sleep(0.15)
        assert not task.done()  # PAUSED: waits however long
        assert len(s) == 95
        s.get_many(3)  # 92: still PAUSED
        await asyncio.sleep(0.1)
        assert not task.done()
        s.get_many(2)  # 90: THROTTLED, delay 0.1 s, then stored
        assert await asyncio.wait_for(task, WITHIN) is True
        beat.stop()
        return beat.ticks

    assert run(main()) >= 20
    st = s.stats()
    assert (st.depth, st.rejected) == (91, 0)


def test_paused_aput_times_out_with_full_counted_as_rejected():
    s = filled(95)

    async def main():
        start = time.monotonic()
        with pytest.raises(bpstream.Full):
            await s.aput("x", timeout=0.1)
        return time.monotonic() - start

    assert 0.09 <= run(main()) < WITHIN
    st = s.stats()
    assert (st.depth, st.rejected, st.producer_waits) == (95, 1, 0)


def test_full_block_stream_waits_for_room_then_for_the_pause_mark():
    s = filled(100)
    assert s.flow_state is FlowState.DROPPING

    async def main():
        task = asyncio.create_task(s.aput("x"))
        await asyncio.sleep(0.05)
        s.get()  # 99: room, but PAUSED
        await asyncio.sleep(0.15)
        assert not task.done()
        assert len(s) == 99
        s.get_many(9)  # 90: THROTTLED
        assert await asyncio.wait_for(task, WITHIN) is True

    run(main())
    st = s.stats()
    assert st.depth == 91
    assert st.producer_waits == 1  # the wait for room, as a blocking put's


@pytest.mark.parametrize("depth", [90, 95])
def test_a_cancelled_aput_in_the_delay_or_the_pause_stores_nothing(depth):
    s = filled(depth, flow=FlowControl(min_delay=1.0, max_delay=2.0))

    async def main():
        task = asyncio.create_task(s.aput("x"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)

    run(main())
    assert len(s) == depth
    assert "x" not in s.get_many(100)


def test_aput_many_on_a_gated_stream_is_gated_once_per_call():
    s = filled(90, flow=FlowControl(min_delay=0.001, max_delay=0.2))

    async def main():
        start = time.monotonic()
        # Gated per item, the second would wait in PAUSED (91) until the timeout.
        assert await s.aput_many(["a", "b", "c"], timeout=5) == 3
        return time.monotonic() - start

    assert 0.18 <= run(main()) < 4
    assert len(s) == 93


def test_closing_ends_a_paused_aput_with_closed():
    s = filled(95)

    async def main():
        task = asyncio.create_task(s.aput("x"))
        await asyncio.sleep(0.05)
        s.close()
        with pytest.raises(bpstream.Closed):
            await asyncio.wait_for(task, WITHIN)

    run(main())


def test_uvloop_throttled_aput():
    uvloop = pytest.importorskip("uvloop")
    s = filled(90, flow=FlowControl(min_delay=0.001, max_delay=0.1))

    async def main():
        beat = Heartbeat()
        start = time.monotonic()
        await s.aput("x")
        beat.stop()
        return time.monotonic() - start, beat.ticks

    elapsed, ticks = uvloop.run(main())
    assert 0.09 <= elapsed < WITHIN
    assert ticks >= 5


# --------------------------------------------------------------------------- the rate


def test_aput_takes_one_permit_per_item_and_waits_for_the_clock():
    clock = ManualClock()
    bucket = TokenBucket(10, 2, clock=clock)
    s = bpstream.BoundedStream(100, rate=bucket)

    async def main():
        await s.aput(0)
        await s.aput(1)  # the burst: no wait
        task = asyncio.create_task(s.aput(2))
        await spin()
        assert not task.done()  # no token: paced
        assert len(s) == 2
        clock.advance(0.1)
        assert await asyncio.wait_for(task, WITHIN) is True
        with pytest.raises(bpstream.Full):  # timeout 0: a token only if there
            await s.aput(3, timeout=0)

    run(main())
    st = s.stats()
    assert (st.depth, st.rejected) == (3, 1)
    assert bucket.stats()["granted"] == 3


def test_aput_many_on_a_paced_stream_takes_a_permit_per_item():
    clock = ManualClock()
    bucket = TokenBucket(10, 2, clock=clock)
    s = bpstream.BoundedStream(100, rate=bucket)

    async def main():
        task = asyncio.create_task(s.aput_many(range(4)))
        await spin()
        assert len(s) == 2
        clock.advance(0.1)
        await spin()
        assert len(s) == 3
        clock.advance(0.1)
        assert await asyncio.wait_for(task, WITHIN) == 4

    run(main())
    assert bucket.stats()["granted"] == 4


def test_aput_on_the_rate_times_out_with_full_counted_as_rejected():
    bucket = TokenBucket(0.5, 1)  # the system clock: the timeout is the rate's too
    s = bpstream.BoundedStream(100, rate=bucket)

    async def main():
        await s.aput(0)
        start = time.monotonic()
        with pytest.raises(bpstream.Full):
            await s.aput(1, timeout=0.1)
        return time.monotonic() - start

    assert 0.09 <= run(main()) < WITHIN
    st = s.stats()
    assert (st.depth, st.rejected) == (1, 1)


def test_a_cancelled_aput_waiting_for_a_permit_takes_none():
    clock = ManualClock()
    bucket = TokenBucket(10, 1, clock=clock)
    s = bpstream.BoundedStream(100, rate=bucket)

    async def main():
        await s.aput(0)
        task = asyncio.create_task(s.aput(1))
        await spin()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        clock.advance(0.1)
        assert await s.aput(2, timeout=0) is True  # the token was left for this one

    run(main())
    assert s.get_many(10) == [0, 2]


# ----------------------------------------------------------------------- adaptive


def test_adaptive_stream_with_an_async_producer_backs_off():
    aimd = AIMD(1000, increase=100, window=0.1)
    s = bpstream.BoundedStream(50, "adaptive", rate=aimd)
    stop = threading.Event()

    def consume():  # about 200 items/s
        while not stop.is_set():
            try:
                s.get(timeout=0.1)
            except (bpstream.Empty, bpstream.Closed):
                continue
            time.sleep(0.005)

    consumer = threading.Thread(target=consume)
    consumer.start()

    async def main():
        beat = Heartbeat()
        deadline = time.monotonic() + 1.5
        n = 0
        while time.monotonic() < deadline:
            await s.aput(n, timeout=1)
            n += 1
        beat.stop()
        return beat.ticks

    try:
        ticks = run(main())
    finally:
        stop.set()
        consumer.join()
    assert ticks > 0
    assert aimd.limit < 1000  # backed off from its start
    assert aimd.stats()["decreases"] >= 1


def test_adaptive_default_rate_is_held_by_the_stream():
    s = bpstream.BoundedStream(100, "adaptive")
    assert isinstance(s._pacing, AIMD)
    assert s.stats().rate_limit == 1000.0

    async def main():
        for i in range(5):
            assert await s.aput(i) is True

    run(main())
    assert s.get_many(10) == [0, 1, 2, 3, 4]


def test_adaptive_rate_grows_while_async_puts_it_holds_go_through_in_normal():
    aimd = AIMD(50, increase=50, window=0.05)
    s = bpstream.BoundedStream(100_000, "adaptive", rate=aimd)

    async def main():
        deadline = time.monotonic() + 1.0
        n = 0
        while time.monotonic() < deadline:
            await s.aput(n, timeout=2)
            n += 1
        return n

    produced = run(main())
    assert s.flow_state is FlowState.NORMAL
    assert aimd.stats()["increases"] >= 3
    assert aimd.limit >= 200
    assert produced < 50_000  # paced: an unpaced loop does far more


def test_adaptive_rate_hears_no_success_from_puts_stored_outside_normal():
    aimd = AIMD(50, increase=50, window=0.05)
    s = bpstream.BoundedStream(100, "adaptive", rate=aimd)  # no flow=: states reported only
    for i in range(95):
        s._try_put(i)  # unpaced (the fill, not the test): 95, PAUSED
    assert s.flow_state is FlowState.PAUSED
    before = aimd.stats()["increases"]

    async def main():
        for _ in range(4):  # back to back: each held by the rate, stored while PAUSED
            await s.aput("x", timeout=2)
        await asyncio.sleep(0.12)  # windows close
        await s.aput("y", timeout=2)

    run(main())
    assert len(s) == 100
    assert aimd.stats()["increases"] == before


def done_at_once(awaitable):
    """The awaitable's result if it completes without suspending (the fast path)."""
    iterator = awaitable.__await__()
    with pytest.raises(StopIteration) as stop:
        iterator.send(None)
    return stop.value.value


def test_paced_aput_with_a_token_there_needs_no_suspension():
    bucket = TokenBucket(10, 3, clock=ManualClock())
    s = bpstream.BoundedStream(100, flow=FAST, rate=bucket)
    assert done_at_once(s.aput(1)) is True
    assert done_at_once(s.aput(2, timeout=1)) is True
    assert bucket.stats()["granted"] == 2
    assert s.get_many(5) == [1, 2]


def test_a_paced_and_throttled_aput_takes_exactly_one_permit():
    bucket = TokenBucket(10, 100, clock=ManualClock())
    s = filled(90, flow=FlowControl(min_delay=0.001, max_delay=0.1), rate=bucket)
    assert bucket.stats()["granted"] == 90

    async def main():
        start = time.monotonic()
        assert await s.aput("x") is True  # a token at once, then the delay
        return time.monotonic() - start

    assert 0.09 <= run(main()) < WITHIN
    assert bucket.stats()["granted"] == 91
    assert len(s) == 91


def test_a_paced_aput_facing_a_full_stream_waits_for_room_with_its_permit():
    bucket = TokenBucket(10, 100, clock=ManualClock())
    s = bpstream.BoundedStream(2, rate=bucket)

    async def main():
        await s.aput(0)
        await s.aput(1)
        task = asyncio.create_task(s.aput(2))
        await spin()
        assert not task.done()
        assert s.get() == 0
        assert await asyncio.wait_for(task, WITHIN) is True

    run(main())
    assert bucket.stats()["granted"] == 3
    st = s.stats()
    assert (st.depth, st.producer_waits) == (2, 1)


def test_random_cancellations_on_a_gated_paced_stream_lose_and_duplicate_nothing():
    import random
    rng = random.Random(9)
    s = bpstream.BoundedStream(20, flow=FlowControl(min_delay=0.001, max_delay=0.01),
                               rate=TokenBucket(5000, 5))
    got = []

    async def consumer():
        # Start once the putters have brought the stream to its throttle mark (14 of 20), so
        # the gate is in play whatever this host's speed (on a fast one the consumer could
        # otherwise keep the stream below the mark for the whole run).
        started = time.monotonic()
        while len(s) < 14 and not s.closed and time.monotonic() - started < WITHIN:
            await asyncio.sleep(0.001)
        while True:
            try:
                got.append(await s.aget())
            except bpstream.Closed:
                return
            if rng.random() < 0.3:
                await asyncio.sleep(0.002)

    async def main():
        reader = asyncio.create_task(consumer())
        results = {}
        tasks = {}
        async def putter(i):  # aput(i) called when the task runs (the fast path puts then)
            return await s.aput(i)

        for i in range(400):
            tasks[i] = asyncio.create_task(putter(i))
            if rng.random() < 0.5:
                await asyncio.sleep(rng.random() * 0.003)
            victim = rng.randrange(i + 1)
            if rng.random() < 0.3:
                tasks[victim].cancel()
        for i, task in tasks.items():
            try:
                results[i] = await task
            except asyncio.CancelledError:
                results[i] = None
        s.close()
        await asyncio.wait_for(reader, WITHIN)
        return results

    results = run(main())
    stored = sorted(i for i, r in results.items() if r is True)
    assert sorted(got) == stored  # every stored item once; no cancelled one
    assert len(got) == len(set(got))
    assert any(r is None for r in results.values())
    st = s.stats()
    assert st.rejected == 0
    assert st.throttle_events > 0  # the gate was in play
