"""Admission scenario for ``python -m bpstream.demo admission``: a Limiter live.

Twelve worker threads want to run jobs of 40-120 ms as often as they can. A
``Limiter(max_concurrent=3, rate=40, burst=3)`` admits them: the view shows the slots in
use, how many wait, utilization and grants. Halfway through the limit is raised to 6
(waiters are admitted at once), then the rate lowered to 20/s (the rate becomes the
bottleneck). The check: no more jobs ran at once than the limit allowed at the time.
"""

from __future__ import annotations

import random
import threading
import time

import bpstream
from bpstream._demos.live import Bar, LiveView, Number, Text

WORKERS = 12


def admission(quick: bool = False) -> bool:
    phase_seconds = 1.0 if quick else 2.0
    limiter = bpstream.Limiter(max_concurrent=3, rate=40, burst=3)
    stop = threading.Event()
    lock = threading.Lock()
    running = 0
    over_limit = 0
    done = 0

    def worker(seed: int) -> None:
        nonlocal running, over_limit, done
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                token = limiter.acquire(timeout=0.2)
            except TimeoutError:
                continue
            with token:
                with lock:
                    running += 1
                    over_limit += running > limiter.capacity
                time.sleep(rng.uniform(0.04, 0.12))
                with lock:
                    running -= 1
                    done += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    fields = [
        Bar("in_flight", of="capacity", label="in flight"),
        Number("waiting"),
        Bar("utilization", of=1.0),
        Number("granted"),
        Text("limits"),
    ]
    print(f"{WORKERS} workers, jobs of 40-120 ms, Limiter(max_concurrent=3, rate=40, burst=3)")
    for t in threads:
        t.start()
    phases = [
        (3, 40.0, "max_concurrent=3, rate=40/s"),
        (6, 40.0, "max_concurrent=6, rate=40/s"),
        (6, 20.0, "max_concurrent=6, rate=20/s"),
    ]
    samples: list[tuple[str, float, int]] = []
    try:
        with LiveView("admission: a Limiter", fields) as view:
            for max_concurrent, rate, label in phases:
                limiter.max_concurrent = max_concurrent
                limiter.rate = rate
                view.log(f"limits now: {label}")
                before = limiter.stats()["granted"]
                started = time.monotonic()
                while time.monotonic() - started < phase_seconds:
                    st = limiter.stats()
                    view.update(in_flight=limiter.in_flight, capacity=limiter.capacity,
                                waiting=limiter.waiting, utilization=limiter.utilization,
                                granted=st["granted"], limits=label)
                    time.sleep(0.1)
                grants = limiter.stats()["granted"] - before
                samples.append((label, grants / (time.monotonic() - started), limiter.waiting))
    finally:
        stop.set()
        for t in threads:
            t.join()
    for label, per_second, waiting in samples:
        print(f"   {label:<28} admitted {per_second:5.1f} jobs/s, {waiting} waiting at the end")
    st = limiter.stats()
    print(f"   granted {st['granted']}, timed out {st['timed_out']}, jobs done {done}; "
          f"jobs running above the limit: {over_limit}")
    return over_limit == 0 and limiter.in_flight == 0
