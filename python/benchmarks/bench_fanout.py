"""Fan-out of tiny tasks: bpstream.FanOut against concurrent.futures.ThreadPoolExecutor.

    .venv/bin/python python/benchmarks/bench_fanout.py            # make bench, ~20-40 s
    .venv/bin/python python/benchmarks/bench_fanout.py --quick    # smoke run, a few seconds

Each contender hands N ints to W worker threads whose function does nothing, and is timed
from the first hand-off until every item was worked and the workers were joined
(pool/fan-out creation included). The target (issue 10): FanOut at least 3x the items per
second of ThreadPoolExecutor with the same number of workers, through submit() and
through map(). Contenders run round-robin for --repeat rounds; the table shows each one's
best and median round; the ratio lines are the median over rounds of the ratio within a
round (this host is noisy: see README "Numbers").

  FanOut.feed     fan.feed(range(N))     (a range goes in batches of 256: one lock per batch)
  FanOut.submit   fan.submit(i) per item
  TPE.submit      pool.submit(noop, i) per item, then shutdown(wait=True)
  TPE.map         list(pool.map(noop, range(N)))
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

try:
    import bpstream
except ImportError:  # run from a checkout without installing: use python/bpstream
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    import bpstream

CAPACITY = 1024


def noop(item):
    return None


def fanout_feed(n, workers):
    t0 = time.perf_counter()
    with bpstream.FanOut(noop, workers=workers, capacity=CAPACITY) as fan:
        fan.feed(range(n))
    elapsed = time.perf_counter() - t0
    assert fan.report.processed == n and fan.report.balanced, fan.report
    return elapsed


def fanout_submit(n, workers):
    t0 = time.perf_counter()
    with bpstream.FanOut(noop, workers=workers, capacity=CAPACITY) as fan:
        submit = fan.submit
        for i in range(n):
            submit(i)
    elapsed = time.perf_counter() - t0
    assert fan.report.processed == n and fan.report.balanced, fan.report
    return elapsed


def tpe_submit(n, workers):
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        submit = pool.submit
        for i in range(n):
            submit(noop, i)
    return time.perf_counter() - t0


def tpe_map(n, workers):
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(noop, range(n)):
            pass
    return time.perf_counter() - t0


CONTENDERS = {
    "FanOut.feed": fanout_feed,
    "FanOut.submit": fanout_submit,
    "TPE.submit": tpe_submit,
    "TPE.map": tpe_map,
}
TARGETS = [  # (ours, theirs, at least)
    ("FanOut.feed", "TPE.submit", 3.0),
    ("FanOut.feed", "TPE.map", 3.0),
    ("FanOut.submit", "TPE.submit", 3.0),
    ("FanOut.submit", "TPE.map", 3.0),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N, 2 rounds")
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args(argv)
    n = args.items or (20_000 if args.quick else 200_000)
    rounds = args.repeat or (2 if args.quick else 5)
    print(f"fan-out of {n:,} no-op tasks to {args.workers} worker threads, {rounds} rounds, "
          f"Python {sys.version.split()[0]}, bpstream {bpstream.__version__}")
    rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for _ in range(rounds):
        for name, run in CONTENDERS.items():
            rates[name].append(n / run(n, args.workers))
    width = max(map(len, CONTENDERS))
    print(f"{'contender':<{width}}  {'best items/s':>14}  {'median items/s':>14}")
    for name in CONTENDERS:
        print(f"{name:<{width}}  {max(rates[name]):>14,.0f}  {statistics.median(rates[name]):>14,.0f}")
    print()
    for ours, theirs, target in TARGETS:
        ratios = [a / b for a, b in zip(rates[ours], rates[theirs])]
        ratio = statistics.median(ratios)
        verdict = "met" if ratio >= target else "NOT met"
        print(f"{ours} / {theirs}: {ratio:.1f}x within rounds (target {target:.0f}x: {verdict})")


if __name__ == "__main__":
    main()
