"""The kanban scenario: a board with WIP limits, worker threads pulling items through, live.

Board: backlog -> ready (5) -> in_progress (3) -> review (2) -> done. A planner pulls work
from the backlog into ready as soon as ready has room; four developers each take an item
from ready, pull it into in_progress (three slots: one developer always waits), work on it,
then pull it into review; two reviewers review and pull it into done. Review is the
slowest step, so its limit holds developers back (a finished item waits in in_progress
until review has room), in_progress stays full, ready fills, and the planner waits: the
bottleneck's limit propagates upstream with nothing pushed. Checks: every item done, and no
snapshot ever saw a stage above its limit.
"""

from __future__ import annotations

import queue
import random
import threading
import time

from bpstream import Kanban

from .live import Bar, LiveView, Number, Text

STAGES = {"ready": 5, "in_progress": 3, "review": 2}
DEVELOPERS = 4
REVIEWERS = 2
DEVELOP_SECONDS = (0.15, 0.35)  # uniform: ~12 items/s from 3 developers at work
REVIEW_SECONDS = (0.15, 0.25)  # uniform: ~10 items/s from 2 reviewers: the bottleneck


def kanban(quick: bool = False) -> bool:
    items = 12 if quick else 45  # about 1.5 s or 5 s
    board = Kanban(STAGES)
    board.add_many(f"job-{i:02d}" for i in range(items))
    in_ready: queue.Queue = queue.Queue()  # items in ready, in order: developers take them
    in_review: queue.Queue = queue.Queue()  # items in review: reviewers take them
    busy = {"developing": 0, "reviewing": 0}
    busy_lock = threading.Lock()

    def note(role: str, delta: int) -> None:
        with busy_lock:
            busy[role] += delta

    def planner() -> None:
        for item in board.items("backlog"):
            board.pull(item)  # waits while ready is full
            in_ready.put(item)
        for _ in range(DEVELOPERS):
            in_ready.put(None)

    def developer(seed: int) -> None:
        rng = random.Random(seed)
        while (item := in_ready.get()) is not None:
            board.pull(item)  # into in_progress: waits for one of its slots
            note("developing", 1)
            time.sleep(rng.uniform(*DEVELOP_SECONDS))
            note("developing", -1)
            board.pull(item)  # into review: waits (holding the in_progress slot) while full
            in_review.put(item)

    def reviewer(seed: int) -> None:
        rng = random.Random(seed)
        while (item := in_review.get()) is not None:
            note("reviewing", 1)
            time.sleep(rng.uniform(*REVIEW_SECONDS))
            note("reviewing", -1)
            board.pull(item)  # into done: always room

    print(f"board: backlog -> {' -> '.join(f'{s} ({n})' for s, n in STAGES.items())} -> done; "
          f"{items} items, {DEVELOPERS} developers, {REVIEWERS} reviewers (review is the bottleneck)")
    fields = [
        Number("backlog"),
        *(Bar(stage, of=limit) for stage, limit in STAGES.items()),
        Number("done"),
        Number("throughput", unit="/s"),
        Text("waiting", label="waiting pulls"),
    ]
    developers = [threading.Thread(target=developer, args=(i,), daemon=True) for i in range(DEVELOPERS)]
    reviewers = [threading.Thread(target=reviewer, args=(100 + i,), daemon=True) for i in range(REVIEWERS)]
    threads = [threading.Thread(target=planner, daemon=True), *developers, *reviewers]
    over_limit = []
    started = time.monotonic()
    with LiveView("kanban", fields) as view:
        for t in threads:
            t.start()
        reviewers_told = False
        while board.stats().done < items:
            s = board.stats()
            for name, stage in s.stages.items():
                if stage.wip > stage.limit:
                    over_limit.append((name, stage.wip))
            waiting = ", ".join(f"{st.waiting} for {name}" for name, st in s.stages.items() if st.waiting)
            elapsed = max(time.monotonic() - started, 1e-9)
            view.update(backlog=s.backlog, done=s.done, throughput=s.done / elapsed,
                        waiting=waiting or "none",
                        **{name: stage.wip for name, stage in s.stages.items()})
            if not reviewers_told and not any(t.is_alive() for t in developers):
                for _ in range(REVIEWERS):
                    in_review.put(None)
                reviewers_told = True
            time.sleep(0.05)
        s = board.stats()
        view.update(backlog=s.backlog, done=s.done, waiting="none",
                    throughput=s.done / (time.monotonic() - started),
                    **{name: stage.wip for name, stage in s.stages.items()})
    for _ in range(REVIEWERS):
        in_review.put(None)
    for t in threads:
        t.join(5)

    print(f"{'stage':<12} {'limit':>5} {'entered':>7} {'left':>5} {'mean time':>9} {'throughput':>11}")
    for name, stage in s.stages.items():
        print(f"{name:<12} {stage.limit:>5} {stage.entered:>7} {stage.left:>5} "
              f"{stage.mean_time:>8.2f}s {stage.throughput:>9.1f}/s")
    all_done = s.done == items and all(st.wip == 0 for st in s.stages.values())
    print(f"{s.done} of {items} items done in {s.elapsed:.1f} s; "
          f"WIP limits held on every snapshot: {'yes' if not over_limit else 'NO ' + repr(over_limit[:3])}")
    return all_done and not over_limit
