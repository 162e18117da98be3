"""Flow control and adaptive rate: what they cost, and how well the adaptive policy settles.

    .venv/bin/python python/benchmarks/bench_flow.py           # make bench, ~60 s
    .venv/bin/python python/benchmarks/bench_flow.py --quick   # smoke run

1. Handoff cost of ``flow=``: one producer thread, one consumer thread, N ints, the same
   stream with and without ``flow=FlowControl(...)``, big enough that it stays NORMAL
   (fill < 25%). Rounds alternate; the ratio of medians is reported (target >= 0.9x).
2. Adaptive convergence: a consumer fixed at 2,000 items/s, an unbounded producer,
   ``policy="adaptive"`` (its default AIMD(1000, increase=100, window=0.1)). After a
   settling time, over the last 5 s: the producer's rate against the consumer's (target
   within 10%), whether the stream was ever full (target never), and the rate limit's
   swing max/min (target <= 1.5x). Printed beside a plain "Netflix-style" AIMD (a decrease
   on every event, no cooldown) and beside adaptive with flow= throttling.

Nothing here is asserted: the machine is noisy; read the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

try:
    import bpstream
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    import bpstream

from bpstream import AIMD, BoundedStream, FlowControl


def handoff(n: int, flow: bool) -> float:
    """Items per second through a stream that stays NORMAL."""
    kwargs = {"flow": FlowControl()} if flow else {}
    stream = BoundedStream(4 * n, policy="block", **kwargs)

    def produce() -> None:
        put = stream.put
        for i in range(n):
            put(i)
        stream.close()

    def consume() -> None:
        for _ in stream:
            pass

    threads = [threading.Thread(target=consume), threading.Thread(target=produce)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    assert stream.stats().flow_state == bpstream.FlowState.NORMAL or not flow
    return n / elapsed


def bench_handoff(n: int, rounds: int) -> None:
    plain, flowed = [], []
    for _ in range(rounds):
        plain.append(handoff(n, flow=False))
        flowed.append(handoff(n, flow=True))
    p, f = statistics.median(plain), statistics.median(flowed)
    print(f"handoff, {n:,} items, {rounds} rounds (median items/s)")
    print(f"  without flow=           {p:>12,.0f}/s")
    print(f"  with flow= (NORMAL)     {f:>12,.0f}/s   ratio {f / p:.2f}x  (target >= 0.9x)")


def converge(label: str, consumer_rate: float, seconds: float, settle: float,
             **kwargs) -> None:
    """An unbounded producer against a consumer paced at consumer_rate items/s."""
    stream = BoundedStream(1024, **kwargs)
    stop = threading.Event()
    produced_at: list[tuple[float, int]] = []

    def produce() -> None:
        put = stream.put
        i = 0
        try:
            while not stop.is_set():
                put(i)
                i += 1
        except bpstream.Closed:
            pass

    def consume() -> None:
        interval = 1.0 / consumer_rate
        next_at = time.monotonic()
        get = stream.get
        try:
            while True:
                get()
                next_at += interval
                ahead = next_at - time.monotonic()
                if ahead > 0.001:
                    time.sleep(ahead)
        except bpstream.Closed:
            pass

    threads = [threading.Thread(target=consume), threading.Thread(target=produce)]
    start = time.monotonic()
    for t in threads:
        t.start()
    limits: list[float] = []
    full = 0
    samples = 0
    first = None
    while (now := time.monotonic()) - start < settle + seconds:
        time.sleep(0.05)
        s = stream.stats()
        if now - start >= settle:
            if first is None:
                first = (now, s.produced, s.consumed)
            samples += 1
            full += s.depth >= s.capacity
            if s.rate_limit is not None:
                limits.append(s.rate_limit)
    last = time.monotonic(), stream.stats().produced, stream.stats().consumed
    stop.set()
    stream.close(immediate=True)
    for t in threads:
        t.join()
    span = last[0] - first[0]
    p_rate = (last[1] - first[1]) / span
    c_rate = (last[2] - first[2]) / span
    swing = max(limits) / max(min(limits), 1e-9) if limits else float("nan")
    print(f"  {label:<34} producer {p_rate:7,.0f}/s ({p_rate / consumer_rate - 1:+6.1%} of "
          f"the consumer)  full {full}/{samples} samples  limit swing {swing:4.2f}x  "
          f"limit {min(limits, default=0):,.0f}..{max(limits, default=0):,.0f}")


def bench_adaptive(seconds: float, settle: float) -> None:
    rate = 2000.0
    print(f"adaptive convergence: consumer fixed at {rate:,.0f}/s, unbounded producer, "
          f"capacity 1024; measured over {seconds:g} s after {settle:g} s "
          "(targets: within 10%, never full, swing <= 1.5x)")
    converge("policy=adaptive (default AIMD)", rate, seconds, settle, policy="adaptive")
    converge("adaptive + flow=FlowControl()", rate, seconds, settle, policy="adaptive",
             flow=FlowControl())
    converge("Netflix-style AIMD (no cooldown)", rate, seconds, settle, policy="adaptive",
             rate=AIMD(1000, increase=100, window=0.1, cooldown=0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    if args.quick:
        bench_handoff(100_000, 3)
        bench_adaptive(1.0, 1.0)
    else:
        bench_handoff(1_000_000, 7)
        bench_adaptive(5.0, 5.0)


if __name__ == "__main__":
    main()
