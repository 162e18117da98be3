"""Model-based test: BoundedStream against what ONE FIFO under ONE lock gives.

README promises that the iterator's read-ahead is invisible: "one FIFO for every consumer",
`len()` and `stats()` exact, the read-ahead "reserved" so that the policies, the bound and
every counter behave as if each item stayed in the stream until delivered. `Model` below is
that promise written out: a deque and the counters of `bpstream.Stats`, changed as a single
lock over one FIFO would change them. A hypothesis state machine drives a BoundedStream and
the model side by side, every policy, capacities below and above the read-ahead batch (256
and capacity/4 for the lossless policies, 64 and capacity/16 for drop_oldest and drop_all),
and compares every call's result or exception, then `len()` and every exact `Stats` field.

What a step is. `len()` and `stats()` are not pure observers in the product: they absorb
the deliveries the iterator published without the lock. A check after each single call
would therefore hide faults that show only when a program makes its calls back to back
(`next(it)` then `put(x)`). So a step is a burst of 1-6 calls, run with only their results
compared, then `len()` and the whole `stats()` compared; an explicit "observe" call can sit
anywhere inside a burst as well. Hypothesis shrinks both the bursts and the calls.

Single-threaded, nothing may wait: a call that would wait in the model (a put into a full
'block' stream, a get from an empty open one) is made with timeout=0 instead, where the
model answers Full (counted in `rejected`) or Empty. Every other put is made with the
default timeout (None), so a put that parks although the model has room shows up as a
producer wait, as it does for users.
"""

import collections
import sys

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

import bpstream
from support import COUNTERS

POLICIES = ["block", "drop_oldest", "drop_newest", "reject", "drop_all"]
# Around every read-ahead batch size: 1 and 3 (no read-ahead), 16 and 32 (batches of 1-8),
# 100 (25 / 6), 1100 (256 / 64: the caps).
CAPACITIES = [1, 3, 16, 32, 100, 1100]

# Every Stats field the model knows exactly. The rest: producer/consumer_wait_seconds (0.0
# while nothing waited, checked below) and the rates (produced/consumed_per_second,
# window_seconds), which depend on the clock.
EXACT_FIELDS = COUNTERS + ("capacity", "closed")
CLOCK_FIELDS = ("producer_wait_seconds", "consumer_wait_seconds",
                "produced_per_second", "consumed_per_second", "window_seconds")
# The flow fields (issue 9) have their own reference model: test_model_flow.py drives the
# same operations and decides flow_state, throttle_events, pause_events and throttle_delay
# exactly; time_paused and recent_drop_rate depend on the clock; rate_limit is None here.
FLOW_FIELDS = ("flow_state", "throttle_events", "pause_events", "time_paused",
               "throttle_delay", "rate_limit", "recent_drop_rate")

SETTINGS = settings(
    max_examples=100,          # per policy: 500 programs in all
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # One failure per test, shrunk once: shrinking several distinct ones takes minutes here.
    # (The known faults each have a plain regression test below as well.)
    report_multiple_bugs=False,
)


def test_the_model_covers_every_stats_field():
    """A new Stats field must be added to the model (or, if clock-based, to CLOCK_FIELDS)."""
    assert set(bpstream.Stats.__match_args__) == set(EXACT_FIELDS) | set(CLOCK_FIELDS) | set(FLOW_FIELDS)


# ---------------------------------------------------------------------------- the model


class Model:
    """One FIFO of undelivered items under one lock, and the Stats counters it implies.

    - `produced` counts stored and shed items; `rejected` counts failed puts (reject policy,
      a put on a full 'block' stream that may not wait); a put on a closed stream counts
      nothing.
    - `unfinished_tasks` goes up per stored item and down per item evicted, cleared or
      discarded by an immediate close (never below 0); a get does not change it.
    - `backpressure_events`: one per shed or evicted item, one per clear, one per put that
      waited (none here: nothing waits).
    - `peak_depth`: the most undelivered items ever buffered at once.
    """

    def __init__(self, capacity, policy):
        self.capacity = capacity
        self.policy = policy
        self.items = collections.deque()
        self.closed = False
        self.n = dict.fromkeys(
            ("produced", "consumed", "dropped_shed", "dropped_evicted", "dropped_cleared",
             "dropped_on_close", "rejected", "peak_depth", "backpressure_events",
             "producer_waits", "consumer_waits", "unfinished_tasks"), 0)

    def __len__(self):
        return len(self.items)

    def full(self):
        return len(self.items) >= self.capacity

    def stats(self):
        n = dict(self.n)
        n["dropped"] = (n["dropped_shed"] + n["dropped_evicted"] + n["dropped_cleared"]
                        + n["dropped_on_close"])
        n["depth"] = len(self.items)
        n["capacity"] = self.capacity
        n["closed"] = self.closed
        return n

    def _store(self, item):
        self.items.append(item)
        self.n["produced"] += 1
        self.n["unfinished_tasks"] += 1
        self.n["peak_depth"] = max(self.n["peak_depth"], len(self.items))

    def _finish(self, count):
        self.n["unfinished_tasks"] = max(0, self.n["unfinished_tasks"] - count)

    def _put_one(self, item):
        """'stored', 'shed', 'full' or 'closed', as one locked put that may not wait."""
        if self.closed:
            return "closed"
        if not self.full():
            self._store(item)
            return "stored"
        if self.policy in ("block", "reject"):
            self.n["rejected"] += 1
            return "full"
        self.n["backpressure_events"] += 1
        if self.policy == "drop_newest":
            self.n["produced"] += 1
            self.n["dropped_shed"] += 1
            return "shed"
        if self.policy == "drop_oldest":
            self.items.popleft()
            self.n["dropped_evicted"] += 1
            self._finish(1)
        else:  # drop_all
            cleared = len(self.items)
            self.items.clear()
            self.n["dropped_cleared"] += cleared
            self._finish(cleared)
        self._store(item)
        return "stored"

    def put(self, item):
        result = self._put_one(item)
        if result == "closed":
            return ("raise", "Closed", None)
        if result == "full":
            return ("raise", "Full", None)
        return ("ok", result == "stored")

    def put_many(self, items):
        taken = 0
        for item in items:
            result = self._put_one(item)
            if result == "closed":
                return ("raise", "Closed", taken)
            if result == "full":
                return ("raise", "Full", taken)
            taken += result == "stored"
        return ("ok", taken)

    def get(self):
        if self.items:
            self.n["consumed"] += 1
            return ("ok", self.items.popleft())
        return ("raise", "Closed" if self.closed else "Empty", None)

    def get_many(self, max_items):
        if not self.items:
            return self.get()
        taken = [self.items.popleft() for _ in range(min(max_items, len(self.items)))]
        self.n["consumed"] += len(taken)
        return ("ok", taken)

    def next(self):
        """next(iterator): like get(), but StopIteration once closed and drained."""
        result = self.get()
        return ("raise", "StopIteration", None) if result[1] == "Closed" else result

    def close(self, immediate):
        self.closed = True
        if immediate:
            discarded = len(self.items)
            self.items.clear()
            self.n["dropped_on_close"] += discarded
            self._finish(discarded)
        return ("ok", None)


def outcome(call, *args, **kwargs):
    """("ok", result) or ("raise", exception name, its .accepted if a batch put had one)."""
    try:
        return ("ok", call(*args, **kwargs))
    except StopIteration:
        return ("raise", "StopIteration", None)
    except bpstream.Full as exc:
        return ("raise", "Full", getattr(exc, "accepted", None))
    except bpstream.Empty as exc:
        return ("raise", "Empty", getattr(exc, "accepted", None))
    except bpstream.Closed as exc:
        return ("raise", "Closed", getattr(exc, "accepted", None))


# ------------------------------------------------------------------------ the machine

# One call of a burst. Tuples, so a shrunk counterexample prints as a readable program.
ARGS = {
    "put": [st.sampled_from(["default", "timeout=None", "timeout=0", "put_nowait"])],
    "put_many": [st.sampled_from(["small", "fill", "over", "capacity"]), st.integers(0, 8),
                 st.sampled_from(["default", "timeout=0"])],
    "get": [st.sampled_from(["default", "get_nowait", "timeout=0"])],
    "get_many": [st.sampled_from(["small", "len", "over", "all"]), st.integers(0, 8),
                 st.sampled_from(["default", "timeout=0"])],
    "iter": [],
    "next": [st.integers(0, 2)],
    "del_iter": [st.integers(0, 2)],
    "for_loop": [st.integers(1, 6), st.booleans()],
    "close": [st.booleans()],
    "observe": [],
}
# How often each call comes up (out of 100). A close ends the interesting part of a program
# (everything after it is draining), so it is rare; teardown closes and drains anyway.
WEIGHTS = {"put": 20, "put_many": 12, "get": 10, "get_many": 8, "iter": 8, "next": 18,
           "del_iter": 5, "for_loop": 10, "observe": 8, "close": 1}
OPS = st.one_of([st.tuples(st.just(name), *ARGS[name])
                 for name, weight in WEIGHTS.items() for _ in range(weight)])


class StreamMachine(RuleBasedStateMachine):
    """One BoundedStream and its Model; `policy` is fixed per test (see the tests below)."""

    policy = None

    def __init__(self):
        super().__init__()
        self.stream = self.model = None
        self.iterators = []   # held only here: `del_iter` really ends a loop
        self.counter = 0
        self.passed = False   # every step so far matched (teardown then drains and compares)

    @initialize(capacity=st.sampled_from(CAPACITIES))
    def create(self, capacity):
        self.stream = bpstream.BoundedStream(capacity, self.policy)
        self.model = Model(capacity, self.policy)
        self.observe()
        self.passed = True

    def teardown(self):
        """After a program that passed: end every loop and drain, in both, comparing every
        item (which items a policy dropped shows only when they are taken)."""
        self.iterators.clear()
        if self.stream is None:
            return
        if self.passed:
            self.observe()
            self.expect(outcome(self.stream.close), self.model.close(False), "close()")
            self.do_get_many("all", 0, "default")
            self.observe()
        self.stream.close(immediate=True)

    def new_item(self):
        self.counter += 1
        return self.counter

    def observe(self):
        s, m = self.stream, self.model
        assert (len(s), s.closed) == (len(m), m.closed), "(len(), closed): stream, model"
        stats = s.stats()
        expected = m.stats()
        diff = {f: (getattr(stats, f), expected[f]) for f in EXACT_FIELDS
                if getattr(stats, f) != expected[f]}
        assert not diff, f"stats() differ, field: (stream, model): {diff}"
        # Nothing ever waits in this single-threaded program.
        assert (stats.producer_wait_seconds, stats.consumer_wait_seconds) == (0.0, 0.0)

    def expect(self, actual, expected, what):
        assert actual == expected, f"{what}: stream gave {actual!r}, model {expected!r}"

    # A put the model says must wait is made with timeout=0 (see the module docstring).
    def would_wait(self, count=1):
        m = self.model
        return m.policy == "block" and not m.closed and len(m) + count > m.capacity

    def do_put(self, how, item):
        s = self.stream
        if how in ("default", "timeout=None") and self.would_wait():
            how = "timeout=0"
        if how == "default":
            actual = outcome(s.put, item)
        elif how == "timeout=None":
            actual = outcome(s.put, item, timeout=None)
        elif how == "timeout=0":
            actual = outcome(s.put, item, timeout=0)
        else:
            actual = outcome(s.put_nowait, item)
        self.expect(actual, self.model.put(item), f"put({item}) [{how}]")

    def do_put_many(self, kind, k, how):
        m = self.model
        room = max(0, m.capacity - len(m))
        n = {"small": k, "fill": room, "over": room + 1 + k, "capacity": m.capacity}[kind]
        items = [self.new_item() for _ in range(n)]
        if how == "default" and self.would_wait(n):
            how = "timeout=0"
        kwargs = {"timeout": 0} if how == "timeout=0" else {}
        actual = outcome(self.stream.put_many, items, **kwargs)
        self.expect(actual, m.put_many(items), f"put_many({n} items) [{how}]")

    def do_get(self, how):
        s, m = self.stream, self.model
        if how == "default" and not m.items and not m.closed:
            how = "timeout=0"
        if how == "default":
            actual = outcome(s.get)
        elif how == "get_nowait":
            actual = outcome(s.get_nowait)
        else:
            actual = outcome(s.get, timeout=0)
        self.expect(actual, m.get(), f"get() [{how}]")

    def do_get_many(self, kind, k, how):
        m = self.model
        n = {"small": k + 1, "len": max(1, len(m)), "over": len(m) + k + 1, "all": 10**9}[kind]
        if how == "default" and not m.items and not m.closed:
            how = "timeout=0"
        kwargs = {"timeout": 0} if how == "timeout=0" else {}
        actual = outcome(self.stream.get_many, n, **kwargs)
        self.expect(actual, m.get_many(n), f"get_many({n}) [{how}]")

    def do_next(self, index):
        m = self.model
        if not self.iterators or (not m.items and not m.closed):
            return   # no loop, or it would wait forever
        it = self.iterators[index % len(self.iterators)]
        self.expect(outcome(next, it), m.next(), "next(it)")

    def do_for_loop(self, count, feed):
        """`for x in stream:` take `count` items (feeding each back with put(x) if `feed`),
        then `break`: the loop's own iterator, dropped at the break."""
        s, m = self.stream, self.model
        if len(m) < count and not m.closed:
            return   # the loop would wait forever
        taken = []
        x = None
        for x in s:
            expected = m.next()
            self.expect(("ok", x), expected, f"for-loop item {len(taken)}")
            taken.append(x)
            if feed:
                self.do_put("default", x)
            if len(taken) == count:
                break
        else:
            self.expect(("raise", "StopIteration", None), m.next(), "for-loop end")
        del x   # the loop's iterator died at the break (CPython frees it at once)

    @rule(ops=st.lists(OPS, min_size=1, max_size=6))
    def burst(self, ops):
        self.passed = False
        for op in ops:
            name, args = op[0], op[1:]
            if name == "put":
                self.do_put(args[0], self.new_item())
            elif name == "put_many":
                self.do_put_many(*args)
            elif name == "get":
                self.do_get(*args)
            elif name == "get_many":
                self.do_get_many(*args)
            elif name == "iter":
                if len(self.iterators) < 3:
                    self.iterators.append(iter(self.stream))
            elif name == "next":
                self.do_next(*args)
            elif name == "del_iter":
                if self.iterators:
                    del self.iterators[args[0] % len(self.iterators)]
            elif name == "for_loop":
                self.do_for_loop(*args)
            elif name == "close":
                self.expect(outcome(self.stream.close, immediate=args[0]),
                            self.model.close(args[0]), f"close(immediate={args[0]})")
            else:
                self.observe()
        self.observe()
        self.passed = True


@pytest.fixture(autouse=True)
def hang_guard():
    """Overrides conftest's 60 s hang guard: a failing state machine is shrunk, which can
    take a few minutes on a busy machine. The guard stays, with a longer limit."""
    import faulthandler

    report = getattr(sys.modules.get("conftest"), "_hang_report", None)
    if report is None:
        yield
        return
    faulthandler.dump_traceback_later(600, exit=True, file=report)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.mark.parametrize("policy", POLICIES)
def test_stream_matches_one_fifo_under_one_lock(policy):
    machine = type(f"StreamMachine_{policy}", (StreamMachine,), {"policy": policy})
    run_state_machine_as_test(machine, settings=SETTINGS)


# ----------------------------------------------- regressions the model found (issue 7, §6)
# Each is the shrunk form of a counterexample, kept as a plain test.


def test_drop_oldest_evicts_the_oldest_item_even_when_read_ahead():
    s = bpstream.BoundedStream(32, "drop_oldest")
    s.put_many(range(32))
    it = iter(s)
    assert next(it) == 0          # the loop has read ahead 1 (and maybe more)
    assert s.put(100) is True     # the room 0 left
    assert s.put(101) is True     # full: evicts the oldest undelivered item, 1
    assert (s.get_nowait(), s.get_nowait()) == (2, 3)
    st = s.stats()
    assert (st.dropped_evicted, st.dropped_shed, st.depth) == (1, 0, 30)


def test_drop_oldest_never_sheds_when_everything_is_read_ahead():
    """Only a shrunk Queue.maxsize can put the whole depth in the read-ahead."""
    q = bpstream.Queue(1100, policy="drop_oldest")   # read-ahead batch 64
    q.put_many(range(64))
    it = iter(q)
    assert next(it) == 0          # the loop has read ahead 1..63, the whole depth
    q.maxsize = 16
    q.put(100)                    # over the bound: evicts the oldest undelivered item, 1
    assert q.get_nowait() == 2
    st = q.stats()
    assert (st.dropped_evicted, st.dropped_shed, st.depth) == (1, 0, 62)


def test_drop_all_clears_read_ahead_items_too():
    s = bpstream.BoundedStream(32, "drop_all")
    s.put_many(range(32))
    it = iter(s)
    assert next(it) == 0
    s.put(100)
    s.put(101)                    # full: clears every undelivered item, read ahead or not
    assert s.get_many(100) == [101]
    st = s.stats()
    assert (st.dropped_cleared, st.consumed, st.depth) == (32, 2, 0)


def test_put_into_room_a_loop_delivered_never_waits():
    s = bpstream.BoundedStream(16)
    s.put_many(range(16))
    for x in s:
        s.put(x)                  # next() delivered one item: there is room, no wait
        break
    st = s.stats()
    assert (st.producer_waits, st.backpressure_events, st.producer_wait_seconds) == (0, 0, 0.0)
    assert (st.depth, st.peak_depth) == (16, 16)


def test_peak_depth_counts_only_undelivered_items():
    s = bpstream.BoundedStream(16)
    it = iter(s)
    s.put(1)
    assert next(it) == 1
    s.put(2)
    assert s.stats().peak_depth == 1
