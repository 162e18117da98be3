"""bpstream.Kanban: pull-only stages with per-stage WIP limits (issue 10, section 2).

What a user can observe: where each item is (count, items, stage_of), whether a pull moved
it (True/False, at once or after a wait), the order waiting pulls are served in, the errors,
and stats(). Timing bounds are generous (the machine is noisy); nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import textwrap
import threading
import time

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bpstream import Kanban
from support import WAKE_WITHIN, Child

STAGES = {"ready": 5, "in_progress": 3, "review": 2}


def board_with(stages=None, items=()):
    board = Kanban(dict(STAGES if stages is None else stages))
    for item in items:
        board.add(item)
    return board


def wait_until(predicate, within=WAKE_WITHIN):
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def start(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------ construction


def test_stages_in_order_with_their_limits_and_unbounded_ends():
    board = board_with()
    assert board.stages == ("ready", "in_progress", "review")
    assert [board.limit(s) for s in board.stages] == [5, 3, 2]
    assert board.limit("backlog") is None and board.limit("done") is None
    assert board.has_capacity("backlog") and board.has_capacity("done")
    assert all(board.count(s) == 0 for s in ("backlog", *board.stages, "done"))


@pytest.mark.parametrize(
    "stages",
    [
        {},
        {"ready": 0},
        {"ready": -1},
        {"ready": 1.5},
        {"ready": True},
        {"ready": None},
        {"ready": "3"},
        {"backlog": 2},
        {"done": 2},
        {"": 2},
        {1: 2},
    ],
)
def test_bad_stages_raise_value_error(stages):
    with pytest.raises(ValueError):
        Kanban(stages)


def test_stages_must_be_a_mapping():
    with pytest.raises(TypeError):
        Kanban([("ready", 2)])


def test_unknown_stage_names_raise_value_error():
    board = board_with()
    for query in (board.count, board.limit, board.has_capacity, board.items):
        with pytest.raises(ValueError, match="no stage 'qa'"):
            query("qa")


# ------------------------------------------------------------------ the vectors


def test_add_puts_work_in_the_backlog_in_order():
    board = board_with(items=["a", "b", "c"])
    assert board.items("backlog") == ["a", "b", "c"]
    assert board.count("backlog") == 3
    assert board.stage_of("b") == "backlog"


def test_pull_moves_one_stage_at_a_time_then_to_done():
    board = board_with(items=["a"])
    seen = []
    for _ in range(4):
        assert board.pull("a") is True
        seen.append(board.stage_of("a"))
    assert seen == ["ready", "in_progress", "review", "done"]
    assert board.items("done") == ["a"]


def test_leaving_a_stage_frees_its_slot_at_once():
    # ready 1 -> pulled into in_progress -> ready has room again.
    board = board_with({"ready": 1, "in_progress": 3}, items=["a", "b"])
    assert board.pull("a") is True
    assert board.has_capacity("ready") is False
    assert board.pull("b", timeout=0) is False
    assert board.pull("a") is True  # into in_progress
    assert board.has_capacity("ready") is True
    assert board.pull("b", timeout=0) is True
    assert board.items("ready") == ["b"] and board.items("in_progress") == ["a"]


def test_a_full_stage_refuses_without_waiting_at_timeout_zero():
    board = board_with({"ready": 2}, items="abc")
    assert board.pull("a", timeout=0) and board.pull("b", timeout=0)
    t0 = time.monotonic()
    for _ in range(100):
        assert board.pull("c", timeout=0) is False
    assert time.monotonic() - t0 < 1.0  # 100 refusals, none of them waited
    assert board.stage_of("c") == "backlog" and board.count("ready") == 2


def test_pull_times_out_with_false_and_moves_nothing():
    board = board_with({"ready": 1}, items="ab")
    board.pull("a")
    t0 = time.monotonic()
    assert board.pull("b", timeout=0.2) is False
    waited = time.monotonic() - t0
    assert 0.19 <= waited < WAKE_WITHIN
    assert board.stage_of("b") == "backlog"
    assert board.stats().stages["ready"].waiting == 0
    assert board.pull("a") and board.pull("b", timeout=0)  # nothing stale left behind


def test_pulling_out_of_the_last_stage_always_has_room():
    board = board_with({"only": 1}, items=range(50))
    for i in range(50):
        assert board.pull(i, timeout=0) is True
        assert board.pull(i, timeout=0) is True
    assert board.count("done") == 50 and board.count("only") == 0


def test_pulling_a_done_or_unknown_item_raises_value_error():
    board = board_with({"ready": 1}, items=["a"])
    board.pull("a")
    board.pull("a")
    with pytest.raises(ValueError, match="already done"):
        board.pull("a")
    with pytest.raises(ValueError, match="not on the board"):
        board.pull("zzz")
    with pytest.raises(ValueError, match="not on the board"):
        board.pull("zzz", timeout=0)
    assert board.items("done") == ["a"]


def test_adding_an_item_twice_raises_value_error_until_cleared():
    board = board_with({"ready": 1}, items=["a"])
    with pytest.raises(ValueError, match="already on the board"):
        board.add("a")
    board.pull("a")
    with pytest.raises(ValueError):
        board.add("a")
    board.pull("a")  # done: still on the board
    with pytest.raises(ValueError):
        board.add("a")
    assert board.clear_done() == ["a"]
    assert "a" not in board and board.count("done") == 0
    assert board.stats().done == 1  # finished items keep counting
    board.add("a")  # a new piece of work with the same name
    assert board.stage_of("a") == "backlog"


def test_items_are_identified_like_dict_keys():
    board = board_with({"ready": 2})
    board.add(1)
    with pytest.raises(ValueError):
        board.add(1.0)  # equal and same hash: the same item
    with pytest.raises(TypeError):
        board.add(["unhashable"])
    board.add((1, 2))
    assert board.pull((1, 2), timeout=0)
    assert board.items("ready") == [(1, 2)]


def test_items_lists_a_stage_in_order_of_arrival():
    board = board_with({"ready": 5}, items="edcba")
    for name in "cae":
        board.pull(name)
    assert board.items("ready") == ["c", "a", "e"]
    assert board.items("backlog") == ["d", "b"]


def test_a_second_pull_of_a_waiting_item_raises_value_error():
    board = board_with({"ready": 1}, items="ab")
    board.pull("a")
    waiter = start(board.pull, "b", 5.0)
    wait_until(lambda: board.stats().stages["ready"].waiting == 1)
    with pytest.raises(ValueError, match="already has a pull waiting"):
        board.pull("b", timeout=0)
    board.pull("a")
    waiter.join(WAKE_WITHIN)
    assert board.stage_of("b") == "ready"


@pytest.mark.parametrize("timeout", [-1, float("nan")])
def test_bad_timeouts_raise_value_error(timeout):
    board = board_with(items="a")
    with pytest.raises(ValueError):
        board.pull("a", timeout=timeout)
    assert board.stage_of("a") == "backlog"


def test_stats_count_wip_throughput_and_time_in_stage_with_a_manual_clock():
    now = [100.0]
    board = Kanban({"ready": 2, "doing": 1}, clock=lambda: now[0])
    board.add_many("abc")
    board.pull("a")
    board.pull("b")
    now[0] += 2.0
    board.pull("a")  # a: 2 s in ready
    now[0] += 3.0
    board.pull("a")  # a: 3 s in doing -> done
    board.pull("b")  # b: 5 s in ready
    s = board.stats()
    ready, doing = s.stages["ready"], s.stages["doing"]
    assert (ready.wip, ready.limit, ready.entered, ready.left) == (0, 2, 2, 2)
    assert ready.mean_time == pytest.approx(3.5)
    assert (doing.wip, doing.limit, doing.entered, doing.left) == (1, 1, 2, 1)
    assert doing.mean_time == pytest.approx(3.0)
    assert (s.backlog, s.done, s.added) == (1, 1, 3)
    assert s.elapsed == pytest.approx(5.0)
    assert ready.throughput == pytest.approx(2 / 5.0)
    assert doing.throughput == pytest.approx(1 / 5.0)


def test_clock_may_be_an_object_with_now():
    class Clock:
        t = 0.0

        def now(self):
            return self.t

    clock = Clock()
    board = Kanban({"ready": 1}, clock=clock)
    board.add("a")
    board.pull("a")
    clock.t = 4.0
    board.pull("a")
    assert board.stats().stages["ready"].mean_time == pytest.approx(4.0)
    with pytest.raises(TypeError):
        Kanban({"ready": 1}, clock=42)


def test_a_clock_that_raises_leaves_the_board_as_it_was():
    broken = {"now": False}

    def clock():
        if broken["now"]:
            raise RuntimeError("clock broke")
        return 0.0

    board = Kanban({"ready": 1}, clock=clock)
    board.add("a")
    broken["now"] = True
    with pytest.raises(RuntimeError):
        board.add("b")
    with pytest.raises(RuntimeError):
        board.pull("a")
    assert "b" not in board and board.items("backlog") == ["a"] and board.count("ready") == 0
    broken["now"] = False
    assert board.pull("a", timeout=0) and board.items("ready") == ["a"]


# ------------------------------------------------------------------ waiting, fairness


def test_a_blocked_pull_proceeds_when_the_slot_frees():
    board = board_with({"ready": 1, "doing": 1}, items="ab")
    board.pull("a")
    result = {}
    t = start(lambda: result.update(b=board.pull("b", timeout=10)))
    wait_until(lambda: board.stats().stages["ready"].waiting == 1)
    assert board.stage_of("b") == "backlog"
    board.pull("a")
    t.join(WAKE_WITHIN)
    assert result == {"b": True} and board.items("ready") == ["b"]


def test_waiters_are_served_in_arrival_order_and_nobody_barges():
    n = 20
    board = board_with({"ready": 1, "doing": n + 1}, items=range(n + 1))
    board.pull(0)
    order = []
    threads = []
    for i in range(1, n + 1):  # each starts waiting after the previous one queued
        threads.append(start(lambda i=i: board.pull(i, timeout=30) and order.append(i)))
        wait_until(lambda i=i: board.stats().stages["ready"].waiting == i)
    assert not board.has_capacity("ready")
    for expected_head in range(0, n):
        # Free the slot by moving the item in ready on; the first waiter takes it.
        (current,) = board.items("ready")
        assert current == expected_head
        board.pull(current)
        # While the woken waiter has not run yet, a newcomer may not take the slot.
        board.add(f"late{expected_head}")
        assert board.pull(f"late{expected_head}", timeout=0) is False
        wait_until(lambda e=expected_head: board.items("ready") == [e + 1])
    for t in threads:
        t.join(WAKE_WITHIN)
    assert order == list(range(1, n + 1))


def test_slots_freed_together_go_to_as_many_waiters_in_arrival_order():
    board = board_with({"ready": 3, "doing": 20}, items=range(12))
    for i in range(3):
        board.pull(i)
    results = {}
    threads = []
    for i in range(3, 12):
        threads.append(start(lambda i=i: results.update({i: board.pull(i, timeout=30)})))
        wait_until(lambda i=i: board.stats().stages["ready"].waiting == i - 2)
    for batch in ([3, 4, 5], [6, 7, 8], [9, 10, 11]):
        for item in board.items("ready"):  # three slots free at once
            board.pull(item)
        wait_until(lambda batch=batch: board.items("ready") == batch)
        assert board.stats().stages["ready"].waiting == 11 - batch[-1]
    for t in threads:
        t.join(WAKE_WITHIN)
    assert results == {i: True for i in range(3, 12)}


def test_each_freed_slot_wakes_exactly_one_waiter(monkeypatch):
    # White-box: count the wake-ups sent to waiting pulls and the waits that returned. With
    # ten waiters and ten slots freed one by one, a herd (or a wake-up lost and made up by a
    # timeout) would show as more of either than ten.
    board = board_with({"ready": 1, "doing": 20}, items=range(11))
    board.pull(0)
    counts = {"notify": 0, "woke": 0}

    class CountingCondition(threading.Condition):
        def notify(self, n=1):
            if self._lock is board._lock:
                counts["notify"] += 1
            super().notify(n)

        def wait(self, timeout=None):
            try:
                return super().wait(timeout)
            finally:
                if self._lock is board._lock:
                    counts["woke"] += 1

    monkeypatch.setattr(threading, "Condition", CountingCondition)
    threads = []
    for i in range(1, 11):
        threads.append(start(board.pull, i, 30.0))
        wait_until(lambda i=i: board.stats().stages["ready"].waiting == i)
    for head in range(0, 10):
        wait_until(lambda head=head: board.items("ready") == [head])
        board.pull(head)
    for t in threads:
        t.join(WAKE_WITHIN)
    assert board.items("ready") == [10]
    assert counts == {"notify": 10, "woke": 10}


def test_a_cascade_of_waiters_moves_down_the_board():
    # Every stage full and a waiter for each: finishing one item lets each waiter move.
    board = board_with({"a": 1, "b": 1, "c": 1}, items=["x", "y", "z", "w"])
    for item, pulls in (("x", 3), ("y", 2), ("z", 1)):
        for _ in range(pulls):
            board.pull(item)
    threads = [start(board.pull, item, 10.0) for item in ("y", "z", "w")]
    wait_until(lambda: sum(s.waiting for s in board.stats().stages.values()) == 3)
    board.pull("x")  # c -> done
    for t in threads:
        t.join(WAKE_WITHIN)
    assert [board.items(s) for s in ("a", "b", "c", "done")] == [["w"], ["z"], ["y"], ["x"]]


def test_many_threads_pulling_items_through_never_exceed_a_limit():
    stages = {"ready": 3, "doing": 2, "review": 1}
    board = Kanban(stages)
    n = 200
    board.add_many(range(n))
    violations = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            s = board.stats()
            for name, limit in stages.items():
                if s.stages[name].wip > limit:
                    violations.append((name, s.stages[name].wip))

    def worker(items):
        for item in items:
            for _ in range(4):
                assert board.pull(item, timeout=30)

    watcher = start(watch)
    workers = [start(worker, range(k, n, 8)) for k in range(8)]
    for t in workers:
        t.join(60)
    stop.set()
    watcher.join(WAKE_WITHIN)
    assert violations == []
    assert board.count("done") == n
    s = board.stats()
    assert all(st.entered == st.left == n and st.wip == 0 for st in s.stages.values())


# ------------------------------------------------------------------ asyncio


def test_apull_moves_at_once_and_times_out_like_pull():
    async def main():
        board = board_with({"ready": 1}, items="ab")
        assert await board.apull("a") is True
        assert await board.apull("b", timeout=0) is False
        t0 = time.monotonic()
        assert await board.apull("b", timeout=0.2) is False
        assert time.monotonic() - t0 >= 0.19
        with pytest.raises(ValueError):
            await board.apull("nope")
        assert board.stats().stages["ready"].waiting == 0
        return board

    board = asyncio.run(main())
    assert board.stage_of("b") == "backlog"


def test_apull_waits_without_blocking_the_loop():
    async def main():
        board = board_with({"ready": 1}, items="ab")
        await board.apull("a")
        task = asyncio.create_task(board.apull("b"))
        ticks = 0
        while board.stats().stages["ready"].waiting == 0:
            await asyncio.sleep(0.001)
        for _ in range(20):
            await asyncio.sleep(0.001)
            ticks += 1
        assert not task.done()
        await board.apull("a")
        assert await asyncio.wait_for(task, WAKE_WITHIN) is True
        return board, ticks

    board, ticks = asyncio.run(main())
    assert ticks == 20 and board.items("ready") == ["b"]


def test_a_cancelled_apull_moves_nothing_and_passes_its_wake_up_on():
    async def main():
        board = board_with({"ready": 1}, items="abc")
        await board.apull("a")
        first = asyncio.create_task(board.apull("b"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(board.apull("c"))
        while board.stats().stages["ready"].waiting < 2:
            await asyncio.sleep(0.001)
        # Free the slot (wakes `first`), then cancel `first` before it runs.
        board.pull("a")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await asyncio.wait_for(second, WAKE_WITHIN) is True
        return board

    board = asyncio.run(main())
    assert board.stage_of("b") == "backlog"  # the cancelled pull moved nothing
    assert board.items("ready") == ["c"]
    assert board.pull("b", timeout=0) is False and board.pull("c") and board.pull("b", timeout=0)


def test_a_cancelled_waiting_apull_leaves_the_queue():
    async def main():
        board = board_with({"ready": 1}, items="ab")
        await board.apull("a")
        task = asyncio.create_task(board.apull("b"))
        while board.stats().stages["ready"].waiting == 0:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert board.stats().stages["ready"].waiting == 0
        await board.apull("a")
        assert board.has_capacity("ready")
        assert await board.apull("b", timeout=0) is True

    asyncio.run(main())


def test_threads_and_tasks_share_one_fifo_queue():
    board = board_with({"ready": 1, "doing": 20}, items=range(9))
    board.pull(0)
    order = []

    async def main():
        loop = asyncio.get_running_loop()
        tasks = []
        threads = []
        for i in range(1, 9):
            if i % 2:
                threads.append(start(lambda i=i: board.pull(i, timeout=30) and order.append(i)))
            else:
                async def apull(i=i):
                    assert await board.apull(i, timeout=30)
                    order.append(i)

                tasks.append(loop.create_task(apull()))
            while board.stats().stages["ready"].waiting < i:
                await asyncio.sleep(0.001)
        for head in range(0, 8):
            while board.items("ready") != [head]:
                await asyncio.sleep(0.001)
            # A thread frees the slot, as a worker would.
            await asyncio.to_thread(board.pull, head)
        await asyncio.wait_for(asyncio.gather(*tasks), WAKE_WITHIN)
        for t in threads:
            t.join(WAKE_WITHIN)

    asyncio.run(main())
    assert order == list(range(1, 9))


def test_many_tasks_and_threads_pull_everything_through():
    stages = {"ready": 2, "doing": 2}
    board = Kanban(stages)
    n = 120
    board.add_many(range(n))

    def thread_worker(items):
        for item in items:
            for _ in range(3):
                assert board.pull(item, timeout=30)

    async def task_worker(items):
        for item in items:
            for _ in range(3):
                assert await board.apull(item, timeout=30)

    async def main():
        threads = [start(thread_worker, range(k, n, 6)) for k in range(3)]
        await asyncio.wait_for(
            asyncio.gather(*(task_worker(range(k, n, 6)) for k in range(3, 6))), 60
        )
        for t in threads:
            t.join(60)

    asyncio.run(main())
    assert board.count("done") == n


# ------------------------------------------------------------------ Ctrl-C

CHILD = """
import sys, time
import bpstream

board = bpstream.Kanban({"ready": 1, "doing": 1})
board.add_many(["a", "b"])
board.pull("a")
print("ready", flush=True)
try:
    board.pull("b"%s)
except KeyboardInterrupt:
    caught = time.monotonic()
else:
    print("returned", flush=True)
    sys.exit(3)
sent = float(sys.stdin.readline())
print(f"latency={caught - sent:.6f}", flush=True)
assert board.stage_of("b") == "backlog", board
assert board.stats().stages["ready"].waiting == 0
assert board.pull("a") and board.pull("b", timeout=0)
print("OK", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("timeout", ["", ", timeout=60"])
def test_ctrl_c_interrupts_a_blocked_pull_and_it_moved_nothing(timeout):
    child = Child(textwrap.dedent(CHILD % timeout))
    try:
        child.wait_for_line("ready")
        time.sleep(0.3)  # let the child get into its wait
        child.send(f"{time.monotonic()!r}\n")
        child.proc.send_signal(signal.SIGINT)
        returncode = child.wait(WAKE_WITHIN)
    finally:
        child.kill()
    out = "".join(child.stdout)
    assert returncode == 0, child.describe()
    latency = float(re.search(r"latency=([0-9.]+)", out).group(1))
    assert latency < 1.0, f"KeyboardInterrupt came {latency:.3f}s after SIGINT"
    assert "OK" in out, child.describe()


# ------------------------------------------------------------------ model


class Model:
    """The board as a reader of the issue sees it, without threads (pulls use timeout=0)."""

    def __init__(self, limits):
        self.names = ["backlog", *limits, "done"]
        self.limits = [None, *limits.values(), None]
        self.places = [[] for _ in self.names]
        self.where = {}

    def add(self, item):
        if item in self.where:
            return "ValueError"
        self.where[item] = 0
        self.places[0].append(item)
        return None

    def pull(self, item):
        if item not in self.where or self.where[item] == len(self.names) - 1:
            return "ValueError"
        src = self.where[item]
        dst = src + 1
        limit = self.limits[dst]
        if limit is not None and len(self.places[dst]) >= limit:
            return False
        self.places[src].remove(item)
        self.places[dst].append(item)
        self.where[item] = dst
        return True

    def clear_done(self):
        done = self.places[-1]
        for item in done:
            del self.where[item]
        self.places[-1] = []
        return done


ITEMS = st.integers(0, 7)


class KanbanMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        limits = {"ready": 2, "doing": 1, "review": 2}
        self.board = Kanban(limits)
        self.model = Model(limits)
        self.finished = 0

    @staticmethod
    def outcome(call, *args):
        try:
            return call(*args)
        except ValueError:
            return "ValueError"

    @rule(item=ITEMS)
    def add(self, item):
        assert self.outcome(self.board.add, item) == self.model.add(item)

    @rule(item=ITEMS)
    def pull(self, item):
        expected = self.model.pull(item)
        assert self.outcome(self.board.pull, item, 0) == expected
        self.finished += expected is True and self.model.where[item] == len(self.model.names) - 1

    @rule(item=ITEMS)
    def apull(self, item):
        expected = self.model.pull(item)
        got = self.outcome(lambda: asyncio.run(self.board.apull(item, timeout=0)))
        assert got == expected
        self.finished += expected is True and self.model.where[item] == len(self.model.names) - 1

    @precondition(lambda self: self.model.places[-1])
    @rule()
    def clear_done(self):
        assert self.board.clear_done() == self.model.clear_done()

    @invariant()
    def same_board(self):
        for i, name in enumerate(self.model.names):
            assert self.board.items(name) == self.model.places[i], name
            assert self.board.count(name) == len(self.model.places[i])
            limit = self.model.limits[i]
            assert self.board.has_capacity(name) == (limit is None or len(self.model.places[i]) < limit)
        s = self.board.stats()
        assert s.backlog == len(self.model.places[0]) and s.done == self.finished
        for name, stage in s.stages.items():
            assert stage.entered - stage.left == stage.wip == len(self.model.places[self.model.names.index(name)])
            assert stage.waiting == 0


KanbanMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_kanban_matches_its_model = KanbanMachine.TestCase
