"""Pipeline: thread stages joined by bounded streams; per-stage and end-to-end reports."""

from __future__ import annotations

import random
import threading
import time

import pytest

import bpstream
from bpstream import Pipeline, Stage
from support import WAKE_WITHIN

BLOCKER_WAIT = 10.0


def wait_until(condition, within=WAKE_WITHIN):
    end = time.monotonic() + within
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition never held")
        time.sleep(0.005)


def pipeline_threads(name):
    return [t for t in threading.enumerate() if t.name.startswith(name + ":")]


def assert_stage_chain(report):
    """Each stage balances, what a stage handed on is what the next was offered, and the
    top report is the end-to-end sum."""
    assert report.balanced, report
    for stage in report.stages:
        assert stage.balanced, stage
    for before, after in zip(report.stages, report.stages[1:]):
        assert before.processed == after.produced
    assert report.produced == report.stages[0].produced
    assert report.processed == report.stages[-1].processed
    for field in ("failed", "dropped", "discarded", "abandoned", "workers", "joined", "aborted"):
        assert getattr(report, field) == sum(getattr(s, field) for s in report.stages), field


def test_three_stages_transform_and_drain():
    out = []
    lock = threading.Lock()

    def sink(x):
        with lock:
            out.append(x)

    stages = [Stage(lambda x: x * 2, workers=3), Stage(lambda x: x + 1, capacity=4), Stage(sink, workers=1)]
    with Pipeline(stages, name="p3") as pipe:
        assert pipe.feed(range(500)) == 500
    report = pipe.report
    assert sorted(out) == [2 * i + 1 for i in range(500)]
    assert (report.produced, report.processed, report.workers, report.joined) == (500, 500, 6, 6)
    assert report.reason == "drained" and len(report.stages) == 3
    assert_stage_chain(report)
    assert pipeline_threads("p3") == []
    assert "p3" in report.table() and report.table().count("\n") == 4


def test_none_is_handed_on_like_any_value():
    got = []
    with Pipeline([Stage(lambda x: None), Stage(got.append, workers=1)]) as pipe:
        pipe.feed(range(5))
    assert got == [None] * 5 and pipe.report.processed == 5


def test_deadline_counts_finished_but_not_handed_on_as_discarded():
    release = threading.Event()
    blocker = lambda x: release.wait(BLOCKER_WAIT)  # noqa: E731
    pipe = Pipeline(
        [Stage(lambda x: x, workers=1, capacity=4, name="a"), Stage(blocker, workers=1, capacity=1, name="b")],
        name="pdl",
    )
    try:
        pipe.feed(range(7))
        # b's worker holds 0, b's stream holds 1, a's worker holds 2 (blocked handing on),
        # a's stream holds 3..6.
        wait_until(lambda: pipe.pending == 4 and len(pipe._run.stages[1].stream) == 1)
        time.sleep(0.05)
        t0 = time.monotonic()
        report = pipe.shutdown(deadline=0.3)
        assert time.monotonic() - t0 < 2.0
        a, b = report.stages
        assert (a.produced, a.processed, a.discarded, a.abandoned, a.joined) == (7, 2, 5, 0, 1)
        assert (b.produced, b.processed, b.discarded, b.abandoned, b.aborted) == (2, 0, 1, 1, 1)
        assert (report.produced, report.processed, report.discarded, report.abandoned) == (7, 0, 6, 1)
        assert report.deadline_hit and report.reason == "deadline"
        assert_stage_chain(report)
    finally:
        release.set()
    wait_until(lambda: not pipeline_threads("pdl"))


def test_failures_are_counted_in_their_stage():
    def picky(x):
        if x % 4 == 0:
            raise ValueError(x)
        return x

    got = []
    with Pipeline([Stage(picky, workers=2), Stage(got.append, workers=1)]) as pipe:
        pipe.feed(range(40))
    report = pipe.report
    assert report.stages[0].failed == 10 and report.stages[1].failed == 0
    assert report.failed == 10 and report.processed == 30 == len(got)
    assert len(report.errors) == 10 and len(report.stages[0].errors) == 10
    assert_stage_chain(report)


def test_fail_fast_stops_every_stage():
    def boom(x):
        if x == 5:
            raise RuntimeError("boom")
        return x

    pipe = Pipeline([Stage(boom, workers=1, capacity=100), Stage(lambda x: time.sleep(0.001))], fail_fast=True)
    pipe.feed(range(100))
    wait_until(lambda: pipe._run.failure is not None)
    with pytest.raises(bpstream.Closed):
        pipe.submit(1)
    report = pipe.shutdown()
    assert report.reason == "fail_fast" and report.failed == 1 and report.discarded > 0
    assert_stage_chain(report)


def test_reject_stage_counts_refused_hand_offs_as_dropped():
    release = threading.Event()
    seen = []

    def slow(x):
        release.wait(BLOCKER_WAIT)
        seen.append(x)

    pipe = Pipeline([Stage(lambda x: x, workers=1, capacity=10), Stage(slow, workers=1, capacity=1, policy="reject")])
    pipe.feed(range(6))
    wait_until(lambda: pipe.pending == 0)
    time.sleep(0.05)
    release.set()
    report = pipe.shutdown()
    second = report.stages[1]
    assert second.produced == 6 and second.processed == len(seen) and second.dropped == 6 - len(seen)
    assert 1 <= len(seen) <= 2
    assert_stage_chain(report)


def test_cancel_pending_discards_every_backlog():
    release = threading.Event()
    pipe = Pipeline([Stage(lambda x: release.wait(BLOCKER_WAIT) and x, workers=1, capacity=50), Stage(lambda x: x)])
    pipe.feed(range(30))
    threading.Timer(0.2, release.set).start()
    report = pipe.shutdown(cancel_pending=True)
    assert report.reason == "cancelled" and report.processed == 0
    assert report.stages[0].discarded == 30  # 29 buffered + the one in hand, not handed on
    assert_stage_chain(report)


@pytest.mark.parametrize("seed", range(8))
def test_pipeline_conservation_under_random_failures_and_deadlines(seed):
    rng = random.Random(1000 + seed)
    policies = ["block", "drop_newest", "drop_oldest", "reject"]

    def make(fail_rate):
        def fn(x):
            if rng.random() < 0.2:
                time.sleep(0.001)
            if fail_rate and random.random() < fail_rate:
                raise RuntimeError(x)
            return x

        return fn

    stages = [
        Stage(make(rng.choice([0, 0.1])), workers=rng.randint(1, 3), capacity=rng.randint(1, 16),
              policy="block" if i == 0 else rng.choice(policies))
        for i in range(rng.randint(1, 4))
    ]
    name = f"prand{seed}"
    pipe = Pipeline(stages, name=name)
    items = rng.randint(0, 300)
    pipe.feed(range(items))
    report = pipe.shutdown(deadline=rng.choice([None, 0, 0.01, 0.1]), cancel_pending=rng.random() < 0.3)
    assert len(pipeline_threads(name)) <= report.aborted  # no thread left but the abandoned
    assert report.produced == items
    assert_stage_chain(report)
    wait_until(lambda: not pipeline_threads(name))


def test_bad_stages():
    with pytest.raises(ValueError):
        Pipeline([])
    with pytest.raises(TypeError):
        Pipeline([lambda x: x])
    with pytest.raises(TypeError):
        Stage("nope")
    with pytest.raises(ValueError):
        Stage(print, workers=0)
    with pytest.raises(ValueError):
        Stage(print, policy="sometimes")
    assert Stage(print, policy="drop_oldest").policy is bpstream.Policy.DROP_OLDEST
