"""FanOut: worker threads over one bounded stream, and the structured, reported shutdown.

Every report is checked against what the workers observably did (the items they saw,
finished and raised on), not only against its own sums."""

from __future__ import annotations

import gc
import random
import signal
import sys
import threading
import time

import pytest

import bpstream
from support import WAKE_WITHIN, Child, Interrupted

BLOCKER_WAIT = 10.0  # a "10 s" task: waits on an Event, so the abandoned thread ends early


def worker_threads(name):
    return [t for t in threading.enumerate() if t.name.startswith(name + "-")]


def wait_until(condition, within=WAKE_WITHIN):
    end = time.monotonic() + within
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition never held")
        time.sleep(0.005)


def assert_no_workers_left(name, within=WAKE_WITHIN):
    wait_until(lambda: not worker_threads(name), within)


# --- the vectors ---------------------------------------------------------------------


def test_four_workers_thousand_items_block_policy():
    seen = []
    with bpstream.FanOut(seen.append, workers=4, capacity=64, name="vec1") as fan:
        assert fan.feed(range(1000)) == 1000
    report = fan.report
    assert (report.produced, report.processed, report.failed) == (1000, 1000, 0)
    assert (report.dropped, report.discarded, report.abandoned) == (0, 0, 0)
    assert (report.workers, report.joined, report.aborted) == (4, 4, 0)
    assert report.balanced and report.reason == "drained" and not report.deadline_hit
    assert sorted(seen) == list(range(1000))
    assert worker_threads("vec1") == []  # joined: gone by the time shutdown returned


def test_deadline_abandons_the_busy_thread_and_discards_the_backlog():
    release = threading.Event()
    started = threading.Event()
    finished = []

    def work(item):
        if item == 0:
            started.set()
            release.wait(BLOCKER_WAIT)
        else:
            time.sleep(0.02)
        finished.append(item)

    fan = bpstream.FanOut(work, workers=4, capacity=1000, name="vec2")
    try:
        fan.submit(0)
        assert started.wait(WAKE_WITHIN)
        assert fan.feed(range(1, 500)) == 499
        t0 = time.monotonic()
        report = fan.shutdown(deadline=0.5)
        took = time.monotonic() - t0
        assert 0.45 <= took < 2.0, took
        assert report.deadline_hit and report.reason == "deadline"
        assert (report.workers, report.joined, report.aborted) == (4, 3, 1)
        assert report.abandoned == 1  # item 0, in the abandoned thread's hands
        assert report.processed == len(finished)  # frozen at the deadline
        assert report.discarded > 0  # the backlog still buffered
        assert report.produced == 500 and report.balanced
        assert [t.name for t in worker_threads("vec2")] != []  # the abandoned one, reported
        assert len(worker_threads("vec2")) == 1
    finally:
        release.set()
    assert_no_workers_left("vec2")  # ends on its own once its call returns
    assert finished.count(0) == 1 and report.processed == len(finished) - 1


# --- shutdown: idempotence, intake, external stop ----------------------------------------------


def test_shutdown_is_idempotent_and_the_report_is_kept():
    fan = bpstream.FanOut(lambda x: None, workers=2)
    assert fan.report is None
    fan.feed(range(10))
    first = fan.shutdown()
    assert fan.report is first
    assert fan.shutdown() is first
    assert fan.shutdown(deadline=0, cancel_pending=True) is first
    assert "balanced" in str(first) and "processed" in str(first)


def test_submit_and_feed_after_shutdown_raise_closed():
    fan = bpstream.FanOut(lambda x: None, workers=1)
    fan.shutdown()
    with pytest.raises(bpstream.Closed):
        fan.submit(1)
    with pytest.raises(bpstream.Closed):
        fan.feed([1, 2])
    with pytest.raises(bpstream.Closed):
        fan.feed(iter([1, 2]))
    assert fan.report.produced == 0 and fan.report.balanced


def test_external_shutdown_wakes_a_blocked_submit():
    release = threading.Event()
    fan = bpstream.FanOut(lambda x: release.wait(BLOCKER_WAIT), workers=1, capacity=1, name="ext1")
    try:
        fan.submit(0)
        wait_until(lambda: fan.pending == 0)  # the worker holds 0
        fan.submit(1)  # fills the stream
        reports = []
        stopper = threading.Timer(0.2, lambda: reports.append(fan.shutdown(deadline=0.2)))
        stopper.start()
        with pytest.raises(bpstream.Closed):
            fan.submit(2)  # blocked until the other thread's shutdown closes the stream
        stopper.join(WAKE_WITHIN)
        report = reports[0]
        assert report is fan.report and report.balanced
        assert (report.produced, report.discarded, report.abandoned, report.aborted) == (2, 1, 1, 1)
    finally:
        release.set()
    assert_no_workers_left("ext1")


def test_external_shutdown_cuts_a_draining_shutdown_short():
    release = threading.Event()
    fan = bpstream.FanOut(lambda x: release.wait(BLOCKER_WAIT), workers=2, capacity=100, name="ext2")
    try:
        fan.feed(range(50))
        threading.Timer(0.3, lambda: fan.shutdown(deadline=0)).start()
        t0 = time.monotonic()
        report = fan.shutdown()  # no deadline: would drain 50 ten-second tasks
        assert time.monotonic() - t0 < 3.0
        assert report.reason == "deadline" and report.deadline_hit and report.balanced
        assert (report.aborted, report.abandoned, report.discarded) == (2, 2, 48)
    finally:
        release.set()
    assert_no_workers_left("ext2")


def test_shutdown_from_a_worker_is_refused():
    errors = []
    box = {}

    def work(item):
        try:
            box["fan"].shutdown()
        except RuntimeError as exc:
            errors.append(exc)

    fan = box["fan"] = bpstream.FanOut(work, workers=1)
    fan.submit(1)
    report = fan.shutdown()
    assert len(errors) == 1 and "own workers" in str(errors[0])
    assert report.processed == 1 and report.balanced


def test_cancel_pending_discards_the_backlog_and_finishes_items_in_hand():
    release = threading.Event()
    done = []

    def work(item):
        release.wait(BLOCKER_WAIT)
        done.append(item)

    fan = bpstream.FanOut(work, workers=2, capacity=100, name="cancel")
    fan.feed(range(20))
    wait_until(lambda: fan.pending == 18)
    threading.Timer(0.2, release.set).start()
    report = fan.shutdown(cancel_pending=True)
    assert report.reason == "cancelled" and not report.deadline_hit
    assert (report.processed, report.discarded, report.abandoned) == (2, 18, 0)
    assert (report.joined, report.aborted) == (2, 0) and report.balanced
    assert sorted(done) == [0, 1]


def test_an_exception_in_the_with_block_cancels_the_backlog():
    release = threading.Event()
    with pytest.raises(ZeroDivisionError):
        with bpstream.FanOut(lambda x: release.wait(BLOCKER_WAIT), workers=1, capacity=10) as fan:
            fan.feed(range(5))
            threading.Timer(0.2, release.set).start()
            1 / 0
    report = fan.report
    assert report.reason == "cancelled" and report.balanced
    assert report.discarded >= 3 and report.processed + report.discarded == 5


# --- failures ---------------------------------------------------------------------------------


def test_worker_exceptions_are_counted_kept_and_the_rest_goes_on():
    def work(item):
        if item % 10 == 0:
            raise ValueError(item)

    with bpstream.FanOut(work, workers=3) as fan:
        fan.feed(range(100))
    report = fan.report
    assert (report.processed, report.failed) == (90, 10) and report.balanced
    assert sorted(e.args[0] for e in report.errors) == list(range(0, 100, 10))
    assert all(isinstance(e, ValueError) for e in report.errors)


def test_fail_fast_stops_intake_and_discards_the_backlog():
    gate = threading.Event()

    def work(item):
        gate.wait(BLOCKER_WAIT)
        if item == 3:
            raise KeyError(item)

    fan = bpstream.FanOut(work, workers=1, capacity=100, fail_fast=True)
    fan.feed(range(50))
    gate.set()
    wait_until(lambda: fan._run.failure is not None)
    with pytest.raises(bpstream.Closed) as caught:
        fan.submit(99)
    assert isinstance(caught.value.__cause__, KeyError)
    report = fan.shutdown()
    assert report.reason == "fail_fast" and report.balanced
    assert (report.produced, report.processed, report.failed, report.discarded) == (50, 3, 1, 46)


# --- policies: dropped comes from the stream's stats ------------------------------------------


@pytest.mark.parametrize(
    "policy, kept, returns",
    [
        ("drop_newest", [0, 1, 2, 3, 4], [True] * 4 + [False] * 15),
        ("drop_oldest", [0, 16, 17, 18, 19], [True] * 19),
    ],
)
def test_drop_policies_count_what_they_dropped(policy, kept, returns):
    holding = threading.Event()
    release = threading.Event()
    seen = []

    def work(item):
        if item == 0:
            holding.set()
            release.wait(BLOCKER_WAIT)
        seen.append(item)

    fan = bpstream.FanOut(work, workers=1, capacity=4, policy=policy)
    assert fan.submit(0) is True
    assert holding.wait(WAKE_WITHIN)
    assert [fan.submit(i) for i in range(1, 20)] == returns
    release.set()
    report = fan.shutdown()
    assert seen == kept
    assert (report.produced, report.processed, report.dropped) == (20, 5, 15) and report.balanced


def test_reject_policy_leaves_the_item_with_the_caller():
    release = threading.Event()
    fan = bpstream.FanOut(lambda x: release.wait(BLOCKER_WAIT), workers=1, capacity=1, policy="reject")
    fan.submit(0)
    wait_until(lambda: fan.pending == 0)
    fan.submit(1)
    with pytest.raises(bpstream.Full):
        fan.submit(2)
    release.set()
    report = fan.shutdown()
    assert (report.produced, report.processed, report.dropped) == (2, 2, 0) and report.balanced


# --- conservation under random failures and deadlines -----------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_conservation_under_random_failures_and_deadlines(seed):
    rng = random.Random(seed)
    workers = rng.randint(1, 6)
    capacity = rng.randint(1, 32)
    policy = rng.choice(["block", "drop_newest", "drop_oldest", "drop_all"])
    items = rng.randint(0, 300)
    fail_rate = rng.choice([0.0, 0.1, 0.5])
    deadline = rng.choice([None, 0.0, 0.01, 0.05, 0.2])
    cancel = rng.random() < 0.3
    name = f"rand{seed}"
    lock = threading.Lock()
    finished, raised = [], []
    delays = [rng.choice([0, 0, 0.0005, 0.003]) for _ in range(items)]
    fails = [rng.random() < fail_rate for _ in range(items)]

    def work(i):
        if delays[i]:
            time.sleep(delays[i])
        if fails[i]:
            with lock:
                raised.append(i)
            raise RuntimeError(i)
        with lock:
            finished.append(i)

    fan = bpstream.FanOut(work, workers=workers, capacity=capacity, policy=policy, name=name)
    submitted = sum(1 for i in range(items) if fan.submit(i) in (True, False))
    report = fan.shutdown(deadline=deadline, cancel_pending=cancel)
    assert len(worker_threads(name)) <= report.aborted  # no thread left but the abandoned
    assert report.balanced, report
    assert report.produced == submitted == items
    assert report.workers == workers and report.joined + report.aborted == workers
    assert report.abandoned <= report.aborted
    # What the workers did, once every abandoned thread has ended on its own:
    assert_no_workers_left(name)
    assert report.processed <= len(finished) <= report.processed + report.abandoned
    assert report.failed <= len(raised) <= report.failed + report.abandoned
    assert len(finished) + len(raised) == report.processed + report.failed + report.abandoned
    stats_dropped = report.dropped
    assert len(set(finished) | set(raised)) == len(finished) + len(raised)  # each item once
    assert items - len(finished) - len(raised) == stats_dropped + report.discarded


# --- Ctrl-C -----------------------------------------------------------------------------------


def test_interrupt_during_shutdown_aborts_and_keeps_a_balanced_report(interrupter):
    release = threading.Event()
    fan = bpstream.FanOut(lambda x: release.wait(BLOCKER_WAIT), workers=2, capacity=10, name="sig1")
    try:
        fan.feed(range(6))
        shot = interrupter(0.3)
        with pytest.raises(Interrupted):
            fan.shutdown()
        assert time.monotonic() - shot.sent_at < 2.0
        report = fan.report
        assert report is not None and report.reason == "interrupted" and report.balanced
        assert (report.aborted, report.abandoned, report.discarded) == (2, 2, 4)
        assert fan.shutdown() is report
        assert len(worker_threads("sig1")) == 2  # exactly the reported abandoned ones
    finally:
        release.set()
    assert_no_workers_left("sig1")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_in_a_blocked_submit_inside_with_aborts_at_once():
    # KeyboardInterrupt (unlike an ordinary exception, which only cancels the backlog and
    # lets items in hand finish) leaves the with block at once: the busy worker is abandoned.
    child = Child(
        """
        import threading, time, bpstream
        release = threading.Event()
        try:
            with bpstream.FanOut(lambda x: release.wait(30), workers=1, capacity=2, name="kid") as fan:
                fan.submit(0)
                while fan.pending:
                    time.sleep(0.001)
                print("ready", flush=True)
                for i in range(1, 10):
                    fan.submit(i)  # blocks on the fourth: the stream is full
        except KeyboardInterrupt:
            r = fan.report
            left = [t for t in threading.enumerate() if t.name.startswith("kid-")]
            print(f"report {r.reason} {r.balanced} {r.produced} {r.abandoned} {r.discarded} {r.aborted} {len(left)}", flush=True)
            release.set()
        """
    )
    child.wait_for_line("ready")
    time.sleep(0.3)
    child.proc.send_signal(signal.SIGINT)
    child.wait_for_line("report interrupted True 3 1 2 1 1")
    child.wait(WAKE_WITHIN)
    assert child.proc.returncode == 0, child.describe()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_during_shutdown_in_a_child_process():
    child = Child(
        """
        import threading, time, bpstream
        release = threading.Event()
        fan = bpstream.FanOut(lambda x: release.wait(30), workers=3, capacity=50, name="kid")
        fan.feed(range(20))
        try:
            print("ready", flush=True)
            fan.shutdown()
        except KeyboardInterrupt:
            r = fan.report
            left = [t for t in threading.enumerate() if t.name.startswith("kid-")]
            print(f"report {r.reason} {r.balanced} {r.aborted} {r.abandoned} {r.discarded} {len(left)}", flush=True)
            release.set()
            for t in left:
                t.join(5)
            print("left", sum(t.is_alive() for t in left), flush=True)
        """
    )
    child.wait_for_line("ready")
    time.sleep(0.3)
    child.proc.send_signal(signal.SIGINT)
    child.wait_for_line("report interrupted True 3 3 17 3")
    child.wait_for_line("left 0")
    child.wait(WAKE_WITHIN)
    assert child.proc.returncode == 0, child.describe()


# --- arguments, lifetime ------------------------------------------------------------------------


def test_bad_arguments_are_clear_errors():
    with pytest.raises(TypeError):
        bpstream.FanOut("not callable")
    with pytest.raises(ValueError):
        bpstream.FanOut(print, workers=0)
    with pytest.raises(TypeError):
        bpstream.FanOut(print, workers="2")
    with pytest.raises(ValueError):
        bpstream.FanOut(print, policy="bogus")
    with pytest.raises(ValueError):
        bpstream.FanOut(print, capacity=0)
    fan = bpstream.FanOut(print, workers=1)
    with pytest.raises(ValueError):
        fan.shutdown(deadline=-1)
    with pytest.raises(TypeError):
        fan.shutdown(deadline="soon")
    assert fan.shutdown().balanced


def test_a_fanout_dropped_without_shutdown_lets_its_workers_end():
    seen = []
    fan = bpstream.FanOut(seen.append, workers=3, name="dropped")
    fan.feed(range(10))
    del fan
    gc.collect()
    assert_no_workers_left("dropped")
    assert sorted(seen) == list(range(10))


def test_repr_and_properties():
    fan = bpstream.FanOut(print, workers=2, capacity=8, policy="drop_oldest", name="props")
    assert (fan.workers, fan.capacity, fan.policy, fan.name) == (2, 8, bpstream.Policy.DROP_OLDEST, "props")
    assert "running" in repr(fan)
    fan.shutdown()
    assert "drained" in repr(fan)
