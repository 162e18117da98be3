"""AsyncFanOut: asyncio tasks over one bounded stream, and the same reported shutdown."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

import bpstream
from bpstream import AsyncFanOut


def run(coro):
    return asyncio.run(coro)


def others():
    """Tasks of the running loop besides the current one."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


def test_four_tasks_thousand_items():
    async def scenario():
        seen = []

        async def work(x):
            seen.append(x)

        async with AsyncFanOut(work, workers=4, capacity=64) as fan:
            assert await fan.feed(range(1000)) == 1000
        report = fan.report
        assert (report.produced, report.processed, report.joined, report.aborted) == (1000, 1000, 4, 0)
        assert report.balanced and report.reason == "drained"
        assert sorted(seen) == list(range(1000))
        assert others() == set()

    run(scenario())


def test_deadline_cancels_the_busy_task_and_discards_the_backlog():
    async def scenario():
        finished = []
        cancelled = []

        async def work(x):
            try:
                await asyncio.sleep(10 if x == 0 else 0.02)
            except asyncio.CancelledError:
                cancelled.append(x)
                raise
            finished.append(x)

        fan = AsyncFanOut(work, workers=4, capacity=1000)
        await fan.submit(0)
        await asyncio.sleep(0.01)
        await fan.feed(range(1, 500))
        t0 = time.monotonic()
        report = await fan.shutdown(deadline=0.5)
        assert 0.45 <= time.monotonic() - t0 < 2.0
        assert report.deadline_hit and report.reason == "deadline"
        assert (report.workers, report.joined, report.aborted, report.abandoned) == (4, 3, 1, 1)
        assert cancelled == [0] and report.processed == len(finished)
        assert report.discarded > 0 and report.produced == 500 and report.balanced
        assert others() == set()  # the cancelled task is gone too

    run(scenario())


def test_idempotent_closed_after_and_concurrent_shutdown_tightens():
    async def scenario():
        gate = asyncio.Event()

        async def work(x):
            await gate.wait()

        fan = AsyncFanOut(work, workers=2, capacity=100)
        await fan.feed(range(20))
        drain = asyncio.create_task(fan.shutdown())  # would wait for the gate forever
        await asyncio.sleep(0.1)
        assert not drain.done()
        t0 = time.monotonic()
        report = await fan.shutdown(deadline=0.05)
        assert time.monotonic() - t0 < 2.0
        assert await drain is report and fan.report is report
        assert await fan.shutdown() is report
        assert report.reason == "deadline" and (report.aborted, report.abandoned, report.discarded) == (2, 2, 18)
        with pytest.raises(bpstream.Closed):
            await fan.submit(1)
        with pytest.raises(bpstream.Closed):
            await fan.feed([1])
        assert others() == set()

    run(scenario())


def test_cancelling_the_shutdown_aborts_and_keeps_the_report():
    async def scenario():
        async def work(x):
            await asyncio.sleep(10)

        fan = AsyncFanOut(work, workers=2, capacity=10)
        await fan.feed(range(5))
        waiter = asyncio.create_task(fan.shutdown())
        await asyncio.sleep(0.1)
        waiter.cancel()  # what asyncio.run does to the main task on Ctrl-C
        with pytest.raises(asyncio.CancelledError):
            await waiter
        report = fan.report
        assert report.reason == "interrupted" and report.balanced
        assert (report.aborted, report.abandoned, report.discarded) == (2, 2, 3)
        assert others() == set()

    run(scenario())


def test_exception_in_async_with_cancels_the_backlog():
    async def scenario():
        done = []

        async def work(x):
            await asyncio.sleep(0.05)
            done.append(x)

        with pytest.raises(ZeroDivisionError):
            async with AsyncFanOut(work, workers=1, capacity=10) as fan:
                await fan.feed(range(5))
                await asyncio.sleep(0.01)
                1 / 0
        report = fan.report
        assert report.reason == "cancelled" and report.balanced
        assert report.processed == len(done) == 1 and report.discarded == 4

    run(scenario())


def test_failures_fail_fast_and_async_iterables():
    async def scenario():
        async def work(x):
            if x % 3 == 0:
                raise ValueError(x)

        async def numbers():
            for i in range(30):
                yield i

        async with AsyncFanOut(work, workers=2) as fan:
            assert await fan.feed(numbers()) == 30
        assert (fan.report.processed, fan.report.failed) == (20, 10) and fan.report.balanced
        assert sorted(e.args[0] for e in fan.report.errors) == list(range(0, 30, 3))

        async def slow_fail(x):
            await asyncio.sleep(0.001)
            if x == 2:
                raise KeyError(x)

        fan = AsyncFanOut(slow_fail, workers=1, capacity=100, fail_fast=True)
        await fan.feed(range(50))
        with pytest.raises(bpstream.Closed) as caught:
            for _ in range(200):
                await fan.submit(0)
                await asyncio.sleep(0.005)
        assert isinstance(caught.value.__cause__, KeyError)
        report = await fan.shutdown()
        assert report.reason == "fail_fast" and report.failed == 1 and report.balanced

    run(scenario())


@pytest.mark.parametrize("seed", range(10))
def test_conservation_under_random_failures_and_deadlines(seed):
    rng = random.Random(seed)

    async def scenario():
        finished, raised = [], []

        async def work(i):
            if rng.random() < 0.3:
                await asyncio.sleep(rng.choice([0, 0.001, 0.005]))
            if rng.random() < 0.2:
                raised.append(i)
                raise RuntimeError(i)
            finished.append(i)

        workers = rng.randint(1, 6)
        fan = AsyncFanOut(work, workers=workers, capacity=rng.randint(1, 32),
                          policy=rng.choice(["block", "drop_newest", "drop_oldest", "drop_all"]))
        items = rng.randint(0, 300)
        await fan.feed(range(items))
        report = await fan.shutdown(deadline=rng.choice([None, 0, 0.005, 0.05]), cancel_pending=rng.random() < 0.3)
        assert report.balanced and report.produced == items and report.workers == workers
        # Tasks end or are cancelled inside shutdown: the counts are final and exact.
        assert report.processed == len(finished) and report.failed == len(raised)
        assert report.abandoned <= report.aborted
        assert others() == set()

    run(scenario())


def test_a_blocking_function_is_refused():
    with pytest.raises(TypeError, match="async function"):
        AsyncFanOut(lambda x: None)
    with pytest.raises(ValueError):
        AsyncFanOut(asyncio.sleep, workers=0)


def test_unused_fanout_shuts_down_cleanly():
    async def scenario():
        fan = AsyncFanOut(asyncio.sleep, workers=3)
        report = await fan.shutdown()
        assert (report.produced, report.joined, report.reason) == (0, 3, "drained")
        assert others() == set()

    run(scenario())


def test_ctrl_c_under_asyncio_run_aborts_the_fanout():
    # asyncio.run answers SIGINT by cancelling the main task: the `async with` exits with
    # CancelledError, aborts at once, and asyncio.run raises KeyboardInterrupt.
    import signal

    from support import WAKE_WITHIN, Child

    child = Child(
        """
        import asyncio, bpstream
        box = {}

        async def work(x):
            await asyncio.sleep(30)

        async def main():
            async with bpstream.AsyncFanOut(work, workers=2, capacity=10) as fan:
                box["fan"] = fan
                await fan.feed(range(6))
                print("ready", flush=True)
                await asyncio.sleep(30)

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            r = box["fan"].report
            print(f"report {r.reason} {r.balanced} {r.aborted} {r.abandoned} {r.discarded}", flush=True)
        """
    )
    child.wait_for_line("ready")
    child.proc.send_signal(signal.SIGINT)
    child.wait_for_line("report interrupted True 2 2 4")
    child.wait(WAKE_WITHIN)
    assert child.proc.returncode == 0, child.describe()
