"""Adversarial review of issue 10's pure-Python pieces: each test here failed before the
fix it names (Kanban, FanOut, AsyncFanOut, Pipeline)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest

from bpstream import AsyncFanOut, Kanban


def run(coro, within=10.0):
    async def bounded():
        return await asyncio.wait_for(coro, within)  # a hang fails the test, not the suite

    return asyncio.run(bounded())


# --- Kanban: an infinite (or huge) timeout means "wait as long as it takes" ---------------


@pytest.mark.parametrize("timeout", [float("inf"), 1e300, sys.float_info.max])
def test_pull_with_an_infinite_timeout_waits_for_room(timeout):
    board = Kanban({"a": 1})
    board.add(1)
    board.add(2)
    assert board.pull(1)
    freer = threading.Timer(0.1, board.pull, args=(1,))
    freer.start()
    try:
        assert board.pull(2, timeout=timeout) is True  # was OverflowError
    finally:
        freer.join()
    assert board.items("a") == [2]


@pytest.mark.parametrize("timeout", [float("inf"), 1e300])
def test_apull_with_an_infinite_timeout_waits_for_room(timeout):
    async def scenario():
        board = Kanban({"a": 1})
        board.add(1)
        board.add(2)
        assert board.pull(1)
        asyncio.get_running_loop().call_later(0.1, board.pull, 1)
        assert await board.apull(2, timeout=timeout) is True
        return board.items("a")

    assert run(scenario()) == [2]


# --- AsyncFanOut: a worker's exception never kills its task ------------------------------


def test_a_worker_raising_cancelled_error_of_its_own_counts_as_failed_and_the_task_goes_on():
    # A worker awaiting something that was cancelled (a cancelled future, a sub-task
    # cancelled elsewhere) raises CancelledError although its task was never cancelled.
    # That is the worker's failure, not a cancellation of the fan-out: before the fix each
    # such item killed a task, and with every task dead feed() waited forever.
    async def scenario():
        async def work(x):
            if x % 2 == 0:
                future = asyncio.get_running_loop().create_future()
                future.cancel()
                await future

        async with AsyncFanOut(work, workers=2, capacity=2) as fan:
            assert await fan.feed(range(20)) == 20
        return fan.report

    report = run(scenario())
    assert (report.produced, report.processed, report.failed) == (20, 10, 10)
    assert (report.joined, report.aborted) == (2, 0)
    assert report.balanced and report.reason == "drained"
    assert all(isinstance(e, asyncio.CancelledError) for e in report.errors)


class Custom(BaseException):
    pass


def test_a_worker_raising_a_base_exception_counts_as_failed_and_the_task_goes_on():
    async def scenario():
        async def work(x):
            if x < 5:
                raise Custom(x)

        async with AsyncFanOut(work, workers=2, capacity=2) as fan:
            assert await fan.feed(range(20)) == 20
        return fan.report

    report = run(scenario())
    assert (report.produced, report.processed, report.failed) == (20, 15, 5)
    assert (report.joined, report.aborted) == (2, 0)
    assert report.balanced
    assert sorted(e.args[0] for e in report.errors) == [0, 1, 2, 3, 4]


def test_a_task_cancelled_at_the_deadline_is_still_cancelled_not_failed():
    # The other side of the CancelledError rule: the deadline's own cancellation ends the
    # task and its item is abandoned, not failed.
    async def scenario():
        async def work(x):
            await asyncio.sleep(30)

        fan = AsyncFanOut(work, workers=2, capacity=8)
        await fan.feed(range(5))
        await asyncio.sleep(0.05)
        return await fan.shutdown(deadline=0.1)

    report = run(scenario())
    assert (report.failed, report.abandoned, report.discarded, report.aborted) == (0, 2, 3, 2)
    assert report.balanced and report.deadline_hit


# --- FanOut: a Ctrl-C while shutdown() joins the ended threads keeps the report ------------


def test_ctrl_c_while_shutdown_joins_its_threads_keeps_the_report(monkeypatch):
    # shutdown() ends by joining the worker threads that ended. A KeyboardInterrupt there
    # (a second Ctrl-C) escaped before the report was published: fan.report stayed None and
    # every later shutdown() (the with block's exit, too) waited forever for it.
    from bpstream import FanOut

    fan = FanOut(lambda x: None, workers=2, name="join-interrupt")
    fan.feed(range(10))
    real_join = threading.Thread.join
    shots = []

    def interrupted_join(thread, timeout=None):
        if not shots and thread.name.startswith("join-interrupt"):
            shots.append(thread)
            raise KeyboardInterrupt
        return real_join(thread, timeout)

    monkeypatch.setattr(threading.Thread, "join", interrupted_join)
    with pytest.raises(KeyboardInterrupt):
        fan.shutdown()
    monkeypatch.undo()
    assert shots, "the join was not reached"
    report = fan.report
    assert report is not None and report.balanced and report.produced == 10

    later = []
    caller = threading.Thread(target=lambda: later.append(fan.shutdown()), daemon=True)
    caller.start()
    caller.join(5.0)
    assert later == [report]


# --- AsyncFanOut: shutdown() awaited by one of its own tasks -------------------------------


def test_shutdown_awaited_from_a_worker_task_is_refused_not_a_deadlock():
    # It would wait for its own task to end: before the fix, forever (FanOut refuses the
    # same call from a worker thread with RuntimeError). A worker can still stop the
    # fan-out by starting the shutdown in a task of its own.
    async def scenario():
        stopper = []

        async def work(x):
            if x == 3:
                await fan.shutdown()
            if x == 4:
                stopper.append(asyncio.create_task(fan.shutdown()))

        fan = AsyncFanOut(work, workers=1, capacity=8)
        await fan.feed(range(5))
        report = await asyncio.wait_for(asyncio.shield(fan.shutdown()), 5)
        assert await stopper[0] is report
        return report

    report = run(scenario())
    assert (report.produced, report.processed, report.failed) == (5, 4, 1)
    assert isinstance(report.errors[0], RuntimeError) and "own" in str(report.errors[0])
    assert report.balanced and report.reason == "drained"


# --- AsyncFanOut: feed() of an endless iterable with a drop policy can be stopped ----------


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest", "drop_all"])
def test_feed_of_an_endless_iterable_with_a_shedding_policy_lets_other_tasks_run(policy):
    # A shedding policy never waits for room, so aput() never suspended: feed() of an
    # endless iterable kept the loop to itself, the worker tasks never ran (everything past
    # the capacity was shed) and the task that would shut the fan-out down never ran
    # either: the loop hung. feed() now gives the loop a turn whenever the stream is full.
    import itertools

    from bpstream import Closed

    async def scenario():
        seen = []

        async def work(x):
            seen.append(x)

        fan = AsyncFanOut(work, workers=2, capacity=4, policy=policy)

        async def stop_soon():
            await asyncio.sleep(0.1)
            return await fan.shutdown()

        stopper = asyncio.create_task(stop_soon())
        with pytest.raises(Closed):
            await fan.feed(itertools.count())
        report = await stopper
        return report, seen

    report, seen = run(scenario(), within=5.0)
    assert report.balanced and report.processed == len(seen) > 4


def test_a_submit_loop_with_a_shedding_policy_lets_other_tasks_run():
    from bpstream import Closed

    async def scenario():
        seen = []

        async def work(x):
            seen.append(x)

        fan = AsyncFanOut(work, workers=2, capacity=4, policy="drop_newest")

        async def stop_soon():
            await asyncio.sleep(0.1)
            return await fan.shutdown()

        stopper = asyncio.create_task(stop_soon())
        n = 0
        with pytest.raises(Closed):
            while True:
                await fan.submit(n)
                n += 1
        return await stopper, seen

    report, seen = run(scenario(), within=5.0)
    assert report.balanced and report.processed == len(seen) > 4


# --- conservation while several threads submit and several threads shut down ---------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("kind", ["fanout", "pipeline"])
def test_conservation_with_concurrent_submitters_and_concurrent_shutdowns(kind, seed):
    # Three producers submit until Closed while three threads call shutdown() with
    # different deadlines and cancel_pending; workers fail at random, some with
    # SystemExit or KeyboardInterrupt (a worker thread's BaseException is its failure).
    import random

    from bpstream import Closed, FanOut, Full, Pipeline, Stage

    rng = random.Random(seed)
    policy = rng.choice(["block", "drop_newest", "drop_oldest", "drop_all", "reject"])
    lock = threading.Lock()
    raised = []

    def work(x):
        r = random.random()
        if r < 0.3:
            error = rng.choice([ValueError, SystemExit, KeyboardInterrupt])(x)
            with lock:
                raised.append(x)
            raise error
        if r < 0.5:
            time.sleep(random.random() * 0.005)
        return x

    name = f"conc-{kind}-{seed}"
    if kind == "fanout":
        fan = FanOut(work, workers=rng.randint(1, 4), capacity=rng.choice([1, 4, 16]), policy=policy, name=name)
    else:
        fan = Pipeline(
            [
                Stage(work, workers=rng.randint(1, 3), capacity=rng.choice([1, 4]), policy=policy),
                Stage(work, workers=2, capacity=2, policy=rng.choice(["block", "drop_newest", "reject"])),
            ],
            name=name,
        )
    accepted = [0, 0, 0]

    def produce(slot):
        n = 0
        while True:
            try:
                fan.submit((slot, n))
                accepted[slot] += 1
            except Closed:
                return
            except Full:
                pass  # reject: the item stays with the caller, not produced
            n += 1

    reports = []

    def stop(deadline, cancel):
        reports.append(fan.shutdown(deadline=deadline, cancel_pending=cancel))

    producers = [threading.Thread(target=produce, args=(i,)) for i in range(3)]
    for t in producers:
        t.start()
    time.sleep(rng.random() * 0.05)
    stoppers = [
        threading.Thread(target=stop, args=(rng.choice([None, 0, 0.005, 0.05]), rng.random() < 0.3))
        for _ in range(3)
    ]
    for t in stoppers:
        t.start()
    for t in stoppers + producers:
        t.join(10)
        assert not t.is_alive()
    assert len(reports) == 3 and all(r is reports[0] for r in reports)
    report = reports[0]
    assert report is fan.report and report.balanced, report
    assert all(stage.balanced for stage in report.stages)
    assert report.produced == sum(accepted)
    assert report.failed <= len(raised)
    alive = [t for t in threading.enumerate() if t.name.startswith(name)]
    assert len(alive) <= report.aborted


# --- AsyncFanOut: worker tasks cancelled from outside ----------------------------------------


def test_shutdown_after_the_worker_tasks_were_cancelled_from_outside_is_balanced():
    # asyncio.run() ending without shutdown, or a "cancel every task" signal handler,
    # cancels the worker tasks. The shutdown after that found no task running and reported
    # "drained" and NOT balanced: the backlog no task would ever take was left uncounted and
    # the cancelled tasks counted as joined.
    async def work(x):
        await asyncio.sleep(30)

    fan = AsyncFanOut(work, workers=2, capacity=16)

    async def first_loop():
        await fan.feed(range(10))
        await asyncio.sleep(0.05)  # both tasks hold an item

    asyncio.run(first_loop())  # cancels the worker tasks as it ends
    report = asyncio.run(fan.shutdown())
    assert report.balanced, report
    assert (report.produced, report.abandoned, report.discarded) == (10, 2, 8)
    assert (report.joined, report.aborted) == (0, 2)
    assert report.reason == "interrupted"


def test_cancelling_every_task_then_shutting_down_is_balanced():
    async def scenario():
        async def work(x):
            await asyncio.sleep(30)

        fan = AsyncFanOut(work, workers=3, capacity=16)
        await fan.feed(range(10))
        await asyncio.sleep(0.05)
        for task in asyncio.all_tasks():  # a cancel-everything handler, the fan-out's share
            if task.get_name().startswith(fan.name):
                task.cancel()
        await asyncio.sleep(0.01)
        return await fan.shutdown()

    report = run(scenario())
    assert report.balanced, report
    assert (report.produced, report.abandoned, report.discarded, report.aborted) == (10, 3, 7, 3)
