"""Flow-control scenarios for ``python -m bpstream.demo`` (issue: watermarks, rates, health).

Each scenario is a plain function: it runs a producer thread and a consumer thread against
one stream for a few seconds, shows the stream live (depth bar, rate limit, drops,
throughput, flow state) and prints what it shows at the end. They return True when every
check they make holds (the accounting identity, the stream never over capacity).

    python -m bpstream.demo blocking
    python -m bpstream.demo adaptive --plot adaptive.png
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import bpstream
from bpstream import BoundedStream, Closed, Full

RateFn = Callable[[float], float]  # seconds since start -> items per second


@dataclass
class Sample:
    t: float
    depth: int
    capacity: int
    produced_per_s: float
    consumed_per_s: float
    rate_limit: float | None
    flow_state: str
    dropped: int


@dataclass
class Outcome:
    name: str
    offered: int = 0
    stats: bpstream.Stats | None = None
    samples: list[Sample] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        s = self.stats
        return s is not None and s.produced == s.consumed + s.dropped + s.depth

    @property
    def max_depth(self) -> int:
        return max((x.depth for x in self.samples), default=0)

    def latency(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))]


def _live(title: str, capacity: int):
    from bpstream._demos.live import Bar, LiveView, Number, Text

    return LiveView(title, [
        Bar("depth", of="capacity"),
        Text("rate_limit", label="rate limit"),
        Number("dropped"),
        Number("in_per_s", unit="/s", label="in"),
        Number("out_per_s", unit="/s", label="out"),
        Text("flow_state", label="flow"),
    ])


def _paced_producer(
    stream: BoundedStream, rate: RateFn, seconds: float, out: Outcome, stop: threading.Event
) -> None:
    """Offers items at rate(t) per second (held back whenever a put waits)."""
    start = time.monotonic()
    put = stream.put
    next_at = start
    offered = 0
    try:
        while not stop.is_set():
            now = time.monotonic()
            t = now - start
            if t >= seconds:
                break
            r = rate(t)
            if r <= 0:
                time.sleep(0.02)
                next_at = time.monotonic()
                continue
            if next_at > now:
                time.sleep(next_at - now)
            offered += 1
            try:
                put(time.monotonic(), timeout=1.0)
            except Full:
                pass  # reject / a paced put's refusal: counted by the stream
            next_at = max(next_at + 1.0 / r, time.monotonic() - 0.05)
    except Closed:
        pass
    out.offered = offered


def _paced_consumer(stream: BoundedStream, rate: RateFn, out: Outcome) -> None:
    """Takes items, spending 1/rate(t) seconds of "work" on each."""
    start = time.monotonic()
    latencies = out.latencies
    for stamp in stream:
        now = time.monotonic()
        latencies.append(now - stamp)
        r = rate(now - start)
        time.sleep(1.0 / r if r > 0 else 0.02)


def run(
    name: str,
    stream: BoundedStream,
    produce: RateFn,
    consume: RateFn,
    seconds: float,
    title: str,
    live: bool = True,
) -> Outcome:
    """Runs one producer and one consumer against `stream` for `seconds`, sampling it."""
    out = Outcome(name)
    stop = threading.Event()
    prod = threading.Thread(target=_paced_producer, args=(stream, produce, seconds, out, stop))
    cons = threading.Thread(target=_paced_consumer, args=(stream, consume, out))
    start = time.monotonic()
    prod.start()
    cons.start()
    try:
        view = _live(title, stream.capacity) if live else None
        if view is not None:
            view.__enter__()
        try:
            while prod.is_alive():
                prod.join(0.1)
                s = stream.stats()
                sample = Sample(
                    t=time.monotonic() - start,
                    depth=s.depth,
                    capacity=s.capacity,
                    produced_per_s=s.produced_per_second,
                    consumed_per_s=s.consumed_per_second,
                    rate_limit=s.rate_limit,
                    flow_state=str(s.flow_state),
                    dropped=s.dropped,
                )
                out.samples.append(sample)
                if view is not None:
                    view.update(
                        depth=s.depth,
                        capacity=s.capacity,
                        rate_limit="-" if s.rate_limit is None else f"{s.rate_limit:,.0f}/s",
                        dropped=s.dropped,
                        in_per_s=s.produced_per_second,
                        out_per_s=s.consumed_per_second,
                        flow_state=sample.flow_state,
                    )
        finally:
            if view is not None:
                view.__exit__(None, None, None)
    except KeyboardInterrupt:
        stop.set()
        stream.close(immediate=True)
        prod.join()
        cons.join()
        raise
    stream.close()
    cons.join()
    out.stats = stream.stats()
    return out


def _report(out: Outcome, capacity: int) -> bool:
    s = out.stats
    assert s is not None
    ok = out.balanced and out.max_depth <= capacity
    print(
        f"   offered {out.offered}, produced {s.produced}, consumed {s.consumed}, "
        f"dropped {s.dropped}, rejected {s.rejected}; max depth {out.max_depth}/{capacity}; "
        f"latency p50 {out.latency(0.5) * 1000:.0f} ms, p99 {out.latency(0.99) * 1000:.0f} ms"
    )
    print(f"   produced == consumed + dropped + depth: {'held' if out.balanced else 'BROKEN'}")
    return ok


# -- scenarios ---------------------------------------------------------------------------

def blocking() -> bool:
    """A producer offering 200/s against a consumer doing 50/s, policy block."""
    print("blocking: producer 200/s, consumer 50/s, capacity 20, policy block")
    stream = BoundedStream(20, policy="block")
    out = run("block", stream, lambda t: 200, lambda t: 50, 4.0, "blocking (capacity 20)")
    ok = _report(out, 20)
    print("   nothing lost: the producer was held to the consumer's pace "
          f"({out.offered} offered in 4 s instead of 800).")
    return ok


def drop_oldest() -> bool:
    """The same load with drop_oldest: the producer is never held; stale items go."""
    print("drop-oldest: producer 200/s, consumer 50/s, capacity 20, policy drop_oldest")
    stream = BoundedStream(20, policy="drop_oldest")
    out = run("drop_oldest", stream, lambda t: 200, lambda t: 50, 4.0, "drop oldest")
    ok = _report(out, 20)
    print("   the producer ran free; the consumer saw the freshest items, "
          f"{out.stats.dropped} stale ones were evicted (counted, released).")
    return ok


def _wave(low: float, high: float, period: float, phase: float = 0.0) -> RateFn:
    mid, amp = (low + high) / 2, (high - low) / 2
    return lambda t: mid + amp * math.sin(2 * math.pi * t / period + phase)


def adaptive(plot: str | None = None, quick: bool = False) -> bool:
    """policy="adaptive": an AIMD rate limit that follows a varying consumer."""
    print("adaptive: producer 50-200/s, consumer 30-150/s (varying), capacity 40, "
          "policy adaptive (AIMD)")
    aimd = bpstream.AIMD(100, minimum=10, maximum=400, increase=10, decrease=0.7, window=0.25)
    stream = BoundedStream(40, policy="adaptive", rate=aimd)
    produce = _wave(50, 200, 5.0)
    consume = _wave(30, 150, 8.0, phase=1.0)
    seconds = 4.0 if quick else 12.0
    out = run("adaptive", stream, produce, consume, seconds, "adaptive AIMD (capacity 40)")
    ok = _report(out, 40)
    tail = out.samples[len(out.samples) // 2:]
    full = sum(1 for x in out.samples if x.depth >= 40)
    a = aimd.stats()
    print(f"   rate limit now {stream.stats().rate_limit:,.0f}/s; samples at full: "
          f"{full}/{len(out.samples)}; AIMD increases {a['increases']}, decreases {a['decreases']}")
    if tail:
        gap = [abs((x.rate_limit or 0) - x.consumed_per_s) for x in tail]
        print(f"   second half: mean |rate limit - consumer rate| = {sum(gap) / len(gap):.0f}/s")
    if plot:
        _plot_adaptive(out, consume, plot)
    return ok


def _plot_adaptive(out: Outcome, consume: RateFn, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("   --plot needs matplotlib: pip install matplotlib")
        return
    t = [x.t for x in out.samples]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(t, [x.rate_limit or 0 for x in out.samples], label="rate limit (items/s)")
    ax.plot(t, [consume(x) for x in t], label="consumer capacity (items/s)", linestyle="--")
    ax.plot(t, [x.consumed_per_s for x in out.samples], label="consumed (items/s)", alpha=0.7)
    ax.set_xlabel("seconds")
    ax.set_ylabel("items per second")
    ax2 = ax.twinx()
    ax2.fill_between(t, [x.depth / x.capacity for x in out.samples], alpha=0.15, color="gray",
                     label="fill")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("fill")
    ax.legend(loc="upper left")
    ax.set_title("bpstream adaptive policy: the rate limit follows the consumer")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"   plot written to {path}")


def token_bucket() -> bool:
    """A bursty producer (0-500/s) paced by a TokenBucket(50/s, burst 20), consumer 50/s."""
    print("token-bucket: bursty producer 0-500/s, consumer 50/s, "
          "rate=TokenBucket(50, burst=20), capacity 30")
    bucket = bpstream.TokenBucket(50, 20)
    stream = BoundedStream(30, policy="block", rate=bucket)

    def bursty(t: float) -> float:
        return 500.0 if int(t * 2) % 3 == 0 else 0.0  # 0.5 s bursts every 1.5 s

    out = run("token bucket", stream, bursty, lambda t: 50, 6.0, "token bucket 50/s")
    ok = _report(out, 30)
    b = bucket.stats()
    print(f"   bursts of 500/s reached the stream at 50/s (after a burst of 20): max depth "
          f"{out.max_depth}/30; the bucket granted {b['granted']}, producers waited "
          f"{b['total_wait']:.1f} s in all, {b['wakeups']} wake-ups")
    return ok


def flow_states() -> bool:
    """The throttle curve, a pause and resume, and health turning unhealthy."""
    flow = bpstream.FlowControl(throttle_at=0.70, pause_at=0.90, min_delay=0.001,
                                max_delay=0.100)
    print("flow-states: capacity 100, FlowControl(throttle_at=0.70, pause_at=0.90, "
          "min_delay=0.001, max_delay=0.100)")
    stream = BoundedStream(100, policy="block", flow=flow)
    seen: list[tuple[str, str, float]] = []
    handle = stream.on_flow_change(lambda old, new, fill: seen.append(
        (str(old), str(new), fill)))
    print("   the throttle curve (a put's delay at each depth):")
    for depth in range(100):
        if depth in (69, 70, 80, 90, 91, 99):
            s = stream.stats()
            print(f"     depth {s.depth:>3}: {str(s.flow_state):<9} "
                  f"delay {s.throttle_delay * 1000:6.2f} ms")
        stream.put_nowait(depth)  # put_nowait is never delayed: fill to the mark at once
    s = stream.stats()
    print(f"     depth {s.depth:>3}: {str(s.flow_state)}")
    # Pause and resume: a waiting put is held while PAUSED, released below the pause mark.
    stream.get_nowait()  # 99: PAUSED (above 0.90, not full)
    start = time.monotonic()
    waited: list[float] = []

    def held_put() -> None:
        t0 = time.monotonic()
        stream.put("late", timeout=5.0)
        waited.append(time.monotonic() - t0)

    th = threading.Thread(target=held_put)
    th.start()
    time.sleep(0.3)
    print(f"   a put at depth 99 is held ({str(stream.flow_state)}) "
          f"{time.monotonic() - start:.1f} s ...")
    for _ in range(10):
        stream.get_nowait()
    th.join()
    print(f"   ... and resumes once the consumer brings the stream to the pause mark "
          f"(held {waited[0]:.2f} s)")
    handle.remove()
    print("   transitions seen by on_flow_change: "
          + ", ".join(f"{a}->{b} at {f:.2f}" for a, b, f in seen))
    st = stream.stats()
    print(f"   throttle_events {st.throttle_events}, pause_events {st.pause_events}, "
          f"time_paused {st.time_paused:.2f} s")
    stream.close()
    # Health: a drop_newest stream whose consumer keeps up, then falls behind.
    lossy = BoundedStream(10, policy="drop_newest")
    steps = []
    for i in range(100):  # the consumer keeps up: nothing dropped
        lossy.put(i)
        lossy.get_nowait()
    steps.append(lossy.health())
    for i in range(40):  # the consumer stops: 10 stored, 30 shed
        lossy.put(i)
    steps.append(lossy.health())
    for i in range(200):  # and stays stopped
        lossy.put(i)
    steps.append(lossy.health())
    print("   health: " + " -> ".join(f"{h.status} (drop rate {h.drop_rate:.2f})" for h in steps))
    h2 = steps[-1]
    print(f"   recommendation: {h2.recommendation.action}: {h2.recommendation.reason}; "
          f"{h2.recommendation.suggestion}")
    return (bool(seen) and [h.status for h in steps] == ["healthy", "warning", "unhealthy"]
            and st.pause_events >= 1)


def strategies(quick: bool = False) -> bool:
    """One overload, six strategies side by side."""
    seconds = 1.0 if quick else 1.5
    print(f"strategies: producer 400/s, consumer 100/s, capacity 50, {seconds:g} s each")
    rows = []
    configs = [
        ("block", dict(policy="block")),
        ("drop_oldest", dict(policy="drop_oldest")),
        ("drop_newest", dict(policy="drop_newest")),
        ("flow (throttle)", dict(policy="block", flow=bpstream.FlowControl(
            min_delay=0.002, max_delay=0.02))),
        ("token bucket 100/s", dict(policy="block", rate=bpstream.TokenBucket(100, 10))),
        ("adaptive", dict(policy="adaptive", rate=bpstream.AIMD(
            200, minimum=10, increase=10, decrease=0.7, window=0.2))),
    ]
    ok = True
    for name, kwargs in configs:
        stream = BoundedStream(50, **kwargs)
        out = run(name, stream, lambda t: 400, lambda t: 100, seconds, name, live=False)
        ok = ok and out.balanced and out.max_depth <= 50
        full = sum(1 for x in out.samples if x.depth >= 50) / max(1, len(out.samples))
        rows.append((name, out.offered, out.stats.produced, out.stats.consumed,
                     out.stats.dropped, f"{full:.0%}", f"{out.latency(0.5) * 1000:.0f} ms"))
    header = ("strategy", "offered", "produced", "consumed", "dropped", "time full", "p50 age")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print("   " + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("   " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print("   block/flow/rates hold the producer back (nothing lost); drop policies keep it "
          "free and count what they shed; adaptive keeps the buffer off full.")
    return ok
