"""Closing a stream ends every task waiting on it, however many wait.

Regression: with four tasks in `async for` over a stream that a producer filled and then
closed, the getter that found the stream closed and drained left with the wake-up, and two
tasks waited forever (the watch's readiness had been consumed by its arm())."""

import asyncio

import pytest

import bpstream


@pytest.mark.parametrize("consumers", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("mode", ["async for", "aget"])
def test_every_consumer_task_ends_after_close(mode, consumers):
    async def scenario():
        stream = bpstream.BoundedStream(64)

        async def consume():
            taken = 0
            if mode == "async for":
                async for _ in stream:
                    taken += 1
            else:
                while True:
                    try:
                        await stream.aget()
                    except bpstream.Closed:
                        break
                    taken += 1
            return taken

        tasks = [asyncio.create_task(consume()) for _ in range(consumers)]
        for i in range(1000):
            await stream.aput(i)
        stream.close()
        done, pending = await asyncio.wait(tasks, timeout=5)
        for task in pending:
            task.cancel()
        assert not pending, f"{len(pending)} of {consumers} tasks still waiting after close()"
        assert sum(task.result() for task in done) == 1000

    asyncio.run(scenario())


def test_every_putter_task_ends_after_close():
    async def scenario():
        stream = bpstream.BoundedStream(1)
        stream.put_nowait("full")

        async def produce(i):
            try:
                await stream.aput(i)
            except bpstream.Closed:
                return "closed"
            return "stored"

        tasks = [asyncio.create_task(produce(i)) for i in range(8)]
        await asyncio.sleep(0.01)
        assert stream.get_nowait() == "full"  # room for one: one putter stores
        await asyncio.sleep(0.01)
        stream.close()
        done, pending = await asyncio.wait(tasks, timeout=5)
        for task in pending:
            task.cancel()
        assert not pending
        assert sorted(task.result() for task in done) == ["closed"] * 7 + ["stored"]

    asyncio.run(scenario())
