"""The overload scenarios: one fast producer, one slow consumer, five policies; then a
native reader feeding a slow asyncio task.

`policies`: the same scenario runs once per policy. A producer thread calls put() as fast
as it can for a fixed time, stamping each item with the time it was made. A consumer thread
takes items in batches and spends a fixed time "working" on each one, so it keeps up with
only a tiny fraction of the offered load. While a run goes, a status line shows the stream's
depth and its stats(); at the end a table compares the policies and checks the accounting
identity

    produced == consumed + dropped + depth

on each stream's final stats. The "avg age" column is how old an item was when the consumer
got it during the overload: it tells fresh-data policies from keep-the-backlog ones.

`native_reader_async`: a native reader thread feeds a slow `async for` task through a
`block` stream, with a heartbeat task on the same loop showing the loop stays free.

On a terminal the status line refreshes in place; otherwise plain lines only (no escape
codes, no carriage returns). Each returns whether every check held.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass

import bpstream
from bpstream import BoundedStream, Closed, Full

POLICIES = ("block", "drop_oldest", "drop_newest", "reject", "drop_all")

# What each policy is for: one line each, printed under the table.
TAKEAWAYS = {
    "block": "lossless backpressure: the producer is slowed to the consumer's pace. "
    "For work that must not be lost (jobs, writes, file chunks).",
    "drop_oldest": "keeps the newest items, evicting stale ones. "
    "For latest-value feeds (sensor readings, prices, UI state).",
    "drop_newest": "keeps the backlog in order and sheds new arrivals (put() returns False). "
    "For event/log streams where overload may lose the tail.",
    "reject": "fails fast: put() raises Full and the caller decides (retry, 503, fall back). "
    "For admission control with an explicit signal.",
    "drop_all": "clears the whole backlog when full and starts again from the newest item. "
    "For streams where a backlog is obsolete as a whole (jump to live).",
}

CAPACITY = 256
BATCH = 32  # the consumer takes up to this many items per get_many()
WORK_PER_ITEM = 0.0005  # seconds of simulated work per consumed item (~2,000 items/s)
REFRESH = 0.1  # seconds between live status refreshes
BAR_WIDTH = 12


@dataclass
class Run:
    """One policy's run: the final stats plus what the two threads saw."""

    policy: str
    stats: bpstream.Stats
    offered: int  # put() calls the producer made
    caught_full: int  # Full exceptions the producer caught
    taken: int  # items the consumer received
    aged: int  # of those, items received while the producer still ran
    age_sum: float  # sum over aged items of (time received - time made)
    snapshot_faults: int  # live snapshots where the identity did not hold

    @property
    def identity_holds(self) -> bool:
        s = self.stats
        return s.produced == s.consumed + s.dropped + s.depth and self.snapshot_faults == 0

    @property
    def counts_agree(self) -> bool:
        # What the threads counted must match what the stream counted.
        s = self.stats
        return (
            self.caught_full == s.rejected
            and self.offered == s.produced + s.rejected
            and self.taken == s.consumed
        )


def identity(s: bpstream.Stats) -> bool:
    return s.produced == s.consumed + s.dropped + s.depth


def producer(stream: BoundedStream, deadline: float, out: dict) -> None:
    put = stream.put
    clock = time.perf_counter
    offered = caught = 0
    try:
        while True:
            now = clock()
            if now >= deadline:
                break
            offered += 1
            try:
                put(now)  # the item is its own birth time
            except Full:
                caught += 1  # reject: the caller owns the overload decision
    except Closed:
        offered -= 1  # interrupted (Ctrl-C path): that put never happened
    out["offered"] = offered
    out["caught_full"] = caught


def consumer(stream: BoundedStream, deadline: float, out: dict) -> None:
    get_many = stream.get_many
    clock = time.perf_counter
    sleep = time.sleep
    taken = aged = 0
    age_sum = 0.0
    while True:
        try:
            batch = get_many(BATCH)
        except Closed:
            break
        n = len(batch)
        now = clock()
        if now < deadline:  # ages under overload only, not while draining after it
            age_sum += n * now - sum(batch)
            aged += n
        taken += n
        sleep(WORK_PER_ITEM * n)
    out.update(taken=taken, aged=aged, age_sum=age_sum)


def compact(n: float) -> str:
    """12,345 / 123.4k / 12.35M: keeps the live line short."""
    if n < 100_000:
        return f"{n:,.0f}"
    if n < 1_000_000:
        return f"{n / 1e3:.1f}k"
    return f"{n / 1e6:.2f}M"


def status_line(policy: str, s: bpstream.Stats) -> str:
    filled = round(BAR_WIDTH * s.depth / CAPACITY)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    if s.rejected:
        lost = f"rejected {compact(s.rejected):>6}"
    else:
        lost = f"dropped {compact(s.dropped):>7}"
    return (
        f"{policy:<11} [{bar}] {s.depth:>3}/{CAPACITY}  produced {compact(s.produced):>6}"
        f"  consumed {compact(s.consumed):>5}  {lost}"
        f"  in {compact(s.produced_per_second):>6}/s  out {compact(s.consumed_per_second):>5}/s"
    )


def run_policy(policy: str, seconds: float, live: bool) -> Run:
    stream = BoundedStream(CAPACITY, policy=policy)
    p_out: dict = {}
    c_out: dict = {}
    deadline = time.perf_counter() + seconds
    threads = [
        threading.Thread(target=consumer, args=(stream, deadline, c_out), daemon=True),
        threading.Thread(target=producer, args=(stream, deadline, p_out), daemon=True),
    ]
    faults = 0
    width = shutil.get_terminal_size().columns - 1
    try:
        for t in threads:
            t.start()
        prod = threads[1]
        while True:
            prod.join(REFRESH)
            s = stream.stats()
            faults += not identity(s)
            if not prod.is_alive():
                break
            if live:
                sys.stdout.write("\r" + status_line(policy, s)[:width] + "\x1b[K")
                sys.stdout.flush()
        # The status line keeps the state at the end of the overload (a full
        # stream, rates); the table uses the stats after the consumer drained.
        line = status_line(policy, s)
        stream.close()  # the consumer drains what is left, then sees Closed
        threads[0].join()
    except KeyboardInterrupt:
        stream.close(immediate=True)  # wakes both threads
        raise
    final = stream.stats()
    print(("\r" + line[:width] + "\x1b[K") if live else line, flush=True)
    return Run(
        policy=policy,
        stats=final,
        offered=p_out["offered"],
        caught_full=p_out["caught_full"],
        taken=c_out["taken"],
        aged=c_out["aged"],
        age_sum=c_out["age_sum"],
        snapshot_faults=faults,
    )


def format_age(seconds: float) -> str:
    ms = seconds * 1000.0
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def print_table(runs: list[Run]) -> None:
    headers = ("policy", "produced", "consumed", "dropped", "rejected", "peak depth",
               "avg age", "identity holds")
    rows = []
    for r in runs:
        s = r.stats
        age = format_age(r.age_sum / r.aged) if r.aged else "-"
        ok = "yes" if r.identity_holds else "NO"
        rows.append((r.policy, f"{s.produced:,}", f"{s.consumed:,}", f"{s.dropped:,}",
                     f"{s.rejected:,}", f"{s.peak_depth:,}", age, ok))
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def fmt(cells) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:]))
        return "  ".join((first, *rest))

    print(fmt(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))


def _seconds(quick: bool, seconds: float | None) -> float:
    seconds = seconds if seconds is not None else (0.3 if quick else 2.0)
    if not 0 < seconds <= 5:
        raise ValueError("--seconds must be in (0, 5]")
    return seconds


def _live() -> bool:
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def policies(quick: bool = False, seconds: float | None = None) -> bool:
    """Five policies under the same overload, a table comparing them, the identity checked.
    ``seconds``: producer time per policy (default 2.0, or 0.3 with ``quick``)."""
    seconds = _seconds(quick, seconds)
    live = _live()
    print(f"bpstream {bpstream.__version__} overload demo: capacity {CAPACITY}")
    print(f"  producer: 1 thread, put() as fast as it can for {seconds:g} s per policy")
    print(f"  consumer: 1 thread, get_many({BATCH}) then {WORK_PER_ITEM * 1e3:g} ms of work "
          f"per item (at most ~{1 / WORK_PER_ITEM:,.0f} items/s)")
    print()
    runs = [run_policy(policy, seconds, live) for policy in POLICIES]

    print()
    print_table(runs)
    print()
    print("identity holds: produced == consumed + dropped + depth on the final stats() "
          "(and on every live snapshot)")
    print("avg age: time from put() to the consumer receiving the item, under overload")
    print()
    for r in runs:
        print(f"{r.policy:<11} {TAKEAWAYS[r.policy]}")

    failed = [r for r in runs if not (r.identity_holds and r.counts_agree)]
    for r in failed:
        print(f"CHECK FAILED for {r.policy}: stats={tuple(r.stats)} offered={r.offered} "
              f"caught_full={r.caught_full} taken={r.taken} "
              f"snapshot_faults={r.snapshot_faults}", file=sys.stderr)
    return not failed


def native_reader_async(quick: bool = False, seconds: float | None = None) -> bool:
    """The asyncio scenario (see run_async_scenario), for half the per-policy time, 1 s at least."""
    return run_async_scenario(max(_seconds(quick, seconds) / 2, 1.0), _live())


def run_async_scenario(seconds: float, live: bool) -> bool:
    """asyncio: a native reader thread (no GIL) reads a pipe that a writer floods, into a
    `block` stream an asyncio task consumes with `async for`, slowly. The reader is held
    back by the task (and the writer by the full pipe); the loop stays free meanwhile (a
    heartbeat task ticks beside the consumer). Returns whether every check held."""
    import asyncio

    read_fd, write_fd = os.pipe()
    stop = threading.Event()

    def writer() -> None:
        line = b"x" * 63 + b"\n"
        block = line * 256
        try:
            while not stop.is_set():
                os.write(write_fd, block)
        except OSError:
            pass  # the reader's side went away
        finally:
            os.close(write_fd)

    async def main() -> tuple[int, int, bpstream.Stats]:
        stream = bpstream.read_lines(read_fd, capacity=64)
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beat = asyncio.create_task(heartbeat())
        consumed = 0
        deadline = time.monotonic() + seconds
        next_status = 0.0
        async with stream:
            async for _line in stream:
                consumed += 1
                await asyncio.sleep(WORK_PER_ITEM)  # the slow consumer's work, awaited
                now = time.monotonic()
                if now >= next_status:
                    s = stream.stats()
                    text = (f"  async   depth {s.depth:>3}/64  consumed {compact(s.consumed):>6}  "
                            f"reader waits {compact(s.producer_waits):>5}  heartbeats {ticks}")
                    print(("\r" + text) if live else text, end="" if live else "\n", flush=True)
                    next_status = now + (0.1 if live else 0.5)
                if now >= deadline:
                    break
        beat.cancel()
        return consumed, ticks, stream.stats()

    print("asyncio: a native reader -> a slow `async for` task, with a heartbeat task beside it")
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        consumed, ticks, final = asyncio.run(main())
    finally:
        stop.set()
        os.close(read_fd)
    if live:
        print()
    ok = identity(final) and final.producer_waits > 0 and ticks > 0 and consumed > 0
    print(f"  consumed {consumed:,} lines; the reader waited {final.producer_waits:,} times "
          f"for the task (never more than 64 lines buffered: peak {final.peak_depth}); "
          f"the loop ran {ticks} heartbeats meanwhile; identity "
          f"{'holds' if identity(final) else 'BROKEN'}")
    return ok


