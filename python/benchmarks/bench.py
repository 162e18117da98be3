"""Throughput of a thread-to-thread handoff: bpstream against the standard library.

    .venv/bin/python python/benchmarks/bench.py            # make bench, ~45-90 s
    .venv/bin/python python/benchmarks/bench.py --quick    # smoke run, a few seconds

Every contender runs in this one process, in the same run, so the ratios compare
like with like. Each one moves N ints from one producer thread to one consumer
thread (or, for the ceiling, through a deque in a single thread) and is timed
from starting the threads to joining both. Contenders run round-robin for
--repeat rounds; the table reports the best and the median round in items/s,
and ratios (of the best) against queue.Queue and against the deque ceiling; the
target lines judge the handoff on the median of its ratios within each round.

Each contender uses its fastest idiomatic form: bound methods hoisted into
locals, `for ... in repeat(None, n)` loops, no per-item work beyond receiving
the item (a batch consumer loops over its batch, as a per-item consumer does).

Optional peers from PyPI (janus) run when importable and are skipped otherwise.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import platform
import queue
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from itertools import repeat
from typing import Callable

try:
    import bpstream
except ImportError:  # run from a checkout without installing: use python/bpstream
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    import bpstream

CAPACITY = 1024
HANG_SECONDS = 120.0  # a single round taking longer than this is reported as a hang

Body = Callable[[], None]


class Hang(RuntimeError):
    pass


def run_threads(produce: Body, consume: Body) -> float:
    """Runs produce and consume on two threads; returns the wall time in seconds."""
    errors: list[BaseException] = []

    def guard(fn: Body) -> Body:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # reported by the caller
                errors.append(e)
        return run

    threads = [threading.Thread(target=guard(consume), daemon=True),
               threading.Thread(target=guard(produce), daemon=True)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_SECONDS)
    elapsed = time.perf_counter() - t0
    if any(t.is_alive() for t in threads):
        raise Hang(f"threads still running after {HANG_SECONDS:.0f} s")
    if errors:
        raise errors[0]
    return elapsed


# --- contenders: each takes n and returns the elapsed seconds for n items ---------

def bp_stream_iter(n: int, flow=None) -> float:
    s = bpstream.BoundedStream(CAPACITY, flow=flow)

    def produce() -> None:
        put = s.put
        for i in range(n):
            put(i)
        s.close()

    def consume() -> None:
        for _ in s:
            pass

    elapsed = run_threads(produce, consume)
    check_stream(s, n)
    return elapsed


def bp_stream_iter_flow(n: int) -> float:
    """The handoff with flow control on, marks at full: NORMAL until the stream is full
    (issue 9: flow= in NORMAL costs at most 10% of the handoff)."""
    return bp_stream_iter(n, bpstream.FlowControl(throttle_at=1.0, pause_at=1.0, max_delay=0.0))


def bp_stream_get(n: int) -> float:
    s = bpstream.BoundedStream(CAPACITY)

    def produce() -> None:
        put = s.put
        for i in range(n):
            put(i)

    def consume() -> None:
        get = s.get
        for _ in repeat(None, n):
            get()

    elapsed = run_threads(produce, consume)
    check_stream(s, n)
    return elapsed


def bp_queue(n: int) -> float:
    q = bpstream.Queue(maxsize=CAPACITY)
    return per_item(q.put, q.get, n, q)


def std_queue(n: int) -> float:
    q: queue.Queue = queue.Queue(maxsize=CAPACITY)
    return per_item(q.put, q.get, n, q)


def std_simple_queue(n: int) -> float:
    q: queue.SimpleQueue = queue.SimpleQueue()
    return per_item(q.put, q.get, n, q)


def per_item(put: Callable, get: Callable, n: int, q) -> float:
    def produce() -> None:
        for i in range(n):
            put(i)

    def consume() -> None:
        for _ in repeat(None, n):
            get()

    elapsed = run_threads(produce, consume)
    if not q.empty():
        raise AssertionError(f"{q!r} not drained")
    return elapsed


def deque_ceiling(n: int) -> float:
    d: collections.deque = collections.deque()
    append = d.append
    popleft = d.popleft
    t0 = time.perf_counter()
    for i in range(n):
        append(i)
        popleft()
    return time.perf_counter() - t0


def bp_batch(batch: int) -> Callable[[int], float]:
    def bench(n: int) -> float:
        s = bpstream.BoundedStream(CAPACITY)

        def produce() -> None:
            put_many = s.put_many
            for start in range(0, n, batch):
                put_many(range(start, min(start + batch, n)))

        def consume() -> None:
            get_many = s.get_many
            got = 0
            while got < n:
                items = get_many(batch)
                for _ in items:
                    pass
                got += len(items)

        elapsed = run_threads(produce, consume)
        check_stream(s, n)
        return elapsed
    return bench


def janus_sync(n: int) -> float:
    import asyncio

    import janus

    async def main() -> float:
        q = janus.Queue(maxsize=CAPACITY)  # needs a running loop; the loop stays live
        sync = q.sync_q
        elapsed = await asyncio.to_thread(per_item, sync.put, sync.get, n, sync)
        q.close()
        await q.wait_closed()
        return elapsed

    return asyncio.run(main())


def check_stream(s, n: int) -> None:
    st = s.stats()
    if not (st.produced == n and st.consumed == n and st.dropped == 0 and st.depth == 0):
        raise AssertionError(f"items lost or duplicated: n={n} stats={st}")


def have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# --- bookkeeping and report -------------------------------------------------------

@dataclass
class Contender:
    group: str
    name: str
    fn: Callable[[int], float]
    scale: float = 1.0  # slow optional peers move fewer items
    skip: str = ""  # why it does not run, if it does not
    rates: list[float] = field(default_factory=list)
    error: str = ""

    def n(self, n: int) -> int:
        return max(1000, int(n * self.scale))

    @property
    def best(self) -> float:
        return max(self.rates) if self.rates else 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0


HANDOFF = "bpstream.BoundedStream(1024), consumer `for x in s`"
FLOW_HANDOFF = "  the same with flow=FlowControl(throttle_at=1.0, pause_at=1.0)"
QUEUE = "queue.Queue(maxsize=1024)"
DEQUE = "collections.deque append+popleft"

GROUPS = {
    "a": "(a) one producer thread -> one consumer thread, one item per call",
    "b": "(b) ceiling: producer and consumer in one thread, no locking",
    "c": "(c) batching: one producer thread -> one consumer thread",
}


def contenders() -> list[Contender]:
    janus_skip = "" if have("janus") else "skipped: janus not installed"
    return [
        Contender("a", HANDOFF, bp_stream_iter),
        Contender("a", FLOW_HANDOFF, bp_stream_iter_flow),
        Contender("a", "bpstream.BoundedStream(1024), consumer get() loop", bp_stream_get),
        Contender("a", "bpstream.Queue(maxsize=1024)", bp_queue),
        Contender("a", QUEUE, std_queue),
        Contender("a", "queue.SimpleQueue (unbounded, C)", std_simple_queue),
        Contender("a", "janus.Queue(maxsize=1024).sync_q", janus_sync, 0.25, janus_skip),
        Contender("b", DEQUE, deque_ceiling),
        Contender("c", "bpstream.BoundedStream(1024), put_many/get_many 64", bp_batch(64)),
        Contender("c", "bpstream.BoundedStream(1024), put_many/get_many 256", bp_batch(256)),
    ]


def fmt_rate(r: float) -> str:
    return f"{r:,.0f}" if r else "-"


def fmt_ratio(r: float, ref: float) -> str:
    if not (r and ref):
        return "-"
    x = r / ref
    return f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def report(cs: list[Contender], n: int) -> None:
    by_name = {c.name: c for c in cs}
    qq = by_name[QUEUE].best
    dq = by_name[DEQUE].best
    headers = ("contender", "n", "best items/s", "median items/s", "vs queue.Queue", "vs deque")
    rows: list[tuple[str, ...] | str] = []
    group = ""
    for c in cs:
        if c.group != group:
            group = c.group
            rows.append(GROUPS[group])
        if c.skip or c.error:
            rows.append((c.name, f"{c.n(n):,}", c.skip or c.error, "", "", ""))
        else:
            rows.append((c.name, f"{c.n(n):,}", fmt_rate(c.best), fmt_rate(c.median),
                         fmt_ratio(c.best, qq), fmt_ratio(c.best, dq)))
    cells = [r for r in rows if isinstance(r, tuple)]
    # a skip/error message spans the numeric columns; keep it out of their widths
    widths = [max([len(headers[0]), *(len(r[0]) + 2 for r in cells)])]
    for i in range(1, len(headers)):
        widths.append(max([len(headers[i]), *(len(r[i]) for r in cells if r[3])]))

    def line(r: tuple[str, ...]) -> str:
        if not r[3]:  # message row
            return f"  {r[0]}".ljust(widths[0]) + "  " + r[1].rjust(widths[1]) + "  " + r[2]
        return "  ".join([f"  {r[0]}".ljust(widths[0])]
                         + [v.rjust(w) for v, w in zip(r[1:], widths[1:])])

    print("  ".join([headers[0].ljust(widths[0])]
                    + [h.rjust(w) for h, w in zip(headers[1:], widths[1:])]))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(r if isinstance(r, str) else line(r))

    # The targets are judged on ratios within each round (this host's speed drifts by up
    # to 2x over seconds; a fast spell of one contender's best round should not meet a
    # slow spell of the other's): the median over the rounds.
    handoff = by_name[HANDOFF].rates

    def paired(ref: list[float]) -> float:
        ratios = [a / b for a, b in zip(handoff, ref) if a and b]
        return statistics.median(ratios) if ratios else 0.0

    print()
    print(f"handoff vs queue.Queue: {fmt_ratio(paired(by_name[QUEUE].rates), 1.0)} (target >= 20x)")
    if FLOW_HANDOFF in by_name:
        flow_ratio = [a / b for a, b in zip(by_name[FLOW_HANDOFF].rates, handoff) if a and b]
        if flow_ratio:
            print(f"handoff with flow= (NORMAL) vs without: {statistics.median(flow_ratio):.2f}x"
                  " (target >= 0.9x)")
    print(f"handoff vs deque ceiling: {fmt_ratio(paired(by_name[DEQUE].rates), 1.0)} (target >= 0.4x)")
    print(f"  (handoff = {HANDOFF}; median over the rounds of the ratio within a round;"
          f" the table's ratios compare best rounds)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small N, one round")
    ap.add_argument("-n", type=int, default=None, help="items per contender (default 2,000,000)")
    ap.add_argument("--repeat", type=int, default=None, help="rounds (default 5)")
    args = ap.parse_args(argv)
    n = args.n or (50_000 if args.quick else 2_000_000)
    rounds = args.repeat or (1 if args.quick else 5)

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    print("bpstream throughput benchmark")
    print(f"  Python {platform.python_version()} ({platform.python_implementation()}, "
          f"{platform.machine()}, {platform.system()}), bpstream {bpstream.__version__}")
    print(f"  CPUs: {os.cpu_count()} (usable: {affinity}), "
          f"switch interval {sys.getswitchinterval() * 1e3:g} ms")
    print(f"  N = {n:,} items per contender, {rounds} round(s), round-robin; "
          f"capacity {CAPACITY}")
    print()

    cs = contenders()
    t_start = time.perf_counter()
    for _ in range(rounds):
        for c in cs:
            if c.skip or c.error:
                continue
            gc.collect()
            try:
                elapsed = c.fn(c.n(n))
            except Hang as e:
                c.error = f"HUNG: {e}"
                continue
            except Exception as e:
                c.error = f"FAILED: {type(e).__name__}: {e}"
                continue
            c.rates.append(c.n(n) / elapsed)
    total = time.perf_counter() - t_start

    report(cs, n)
    print(f"\ntotal benchmark time: {total:.1f} s")
    failed = [c for c in cs if c.error]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
