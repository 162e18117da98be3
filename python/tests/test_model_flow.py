"""A pure-Python reference model decides the flow fields of every Stats snapshot.

Hypothesis drives random programs of non-waiting operations (put_nowait, put_many with
timeout 0, get_nowait, get_many, an immediate close) on streams of every policy, several
capacities and several flow marks (given as flow=, or the default marks when not given),
and after every step checks flow_state, throttle_events, pause_events and throttle_delay
against the model, which classifies each depth the stream passes through with the issue's
rules (test_model_stream.py's approach, for the flow fields it leaves out).
"""

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

import bpstream
from bpstream import FlowControl, FlowState

NORMAL, THROTTLED, PAUSED, DROPPING = range(4)

CONTROLS = [
    None,  # the default marks, reported only
    FlowControl(min_delay=0.001, max_delay=0.100),
    FlowControl(hysteresis=0.05),
    FlowControl(throttle_at=0.5, pause_at=0.5),
    FlowControl(throttle_at=0.3, pause_at=0.6, min_delay=0.0, max_delay=1.0, hysteresis=0.1),
]
CAPACITIES = [1, 3, 10, 16, 100]
POLICIES = ["block", "drop_oldest", "drop_newest", "reject", "drop_all"]


class FlowModel:
    """The issue's rules, depth by depth: entries at their marks, exits below mark - h."""

    def __init__(self, control, capacity):
        self.c = control or FlowControl()
        self.cap = capacity
        self.state = NORMAL
        self.throttle_events = 0
        self.pause_events = 0

    def fill(self, depth):
        return depth / self.cap

    def rises_to(self, depth):
        f = self.fill(depth)
        if depth >= self.cap:
            return DROPPING
        if f > self.c.pause_at:
            return PAUSED
        if f >= self.c.throttle_at:
            return THROTTLED
        return NORMAL

    def leaves(self, state, depth):
        """Whether `state` is left downwards at `depth`."""
        f, h = self.fill(depth), self.c.hysteresis
        if state == DROPPING:
            return depth < self.cap if h == 0 else f < 1 - h
        if state == PAUSED:
            return f <= self.c.pause_at if h == 0 else f < self.c.pause_at - h
        if state == THROTTLED:
            return f < self.c.throttle_at if h == 0 else f < self.c.throttle_at - h
        return False

    def observe(self, depth):
        old = self.state
        new = max(old, self.rises_to(depth))
        if new == old:
            while new > NORMAL and self.leaves(new, depth):
                new -= 1
        if new == old:
            return
        if old == NORMAL and new == THROTTLED:
            self.throttle_events += 1
        if old < PAUSED <= new:
            self.pause_events += 1
        self.state = new

    def delay(self, depth):
        if self.state != THROTTLED:
            return 0.0
        span = self.c.pause_at - self.c.throttle_at
        frac = min(max((self.fill(depth) - self.c.throttle_at) / span, 0), 1) if span > 0 else 0
        return self.c.min_delay + (self.c.max_delay - self.c.min_delay) * frac


class FlowMachine(RuleBasedStateMachine):
    @initialize(policy=st.sampled_from(POLICIES), capacity=st.sampled_from(CAPACITIES),
                control=st.sampled_from(CONTROLS))
    def setup(self, policy, capacity, control):
        self.policy = policy
        self.cap = capacity
        self.s = bpstream.BoundedStream(capacity, policy, flow=control)
        self.model = FlowModel(control, capacity)
        self.depth = 0
        self.closed = False
        self.n = 0

    def _store_one_when_full(self):
        """One put on a full stream, as the policy says; returns False when it ends a batch."""
        if self.policy in ("block", "reject", "drop_newest"):
            return False
        if self.policy == "drop_all":
            self.depth = 1  # cleared, then stored
            self.model.observe(self.depth)
        return True  # drop_oldest: evicted and stored, the depth unchanged

    @rule()
    def put_nowait(self):
        self.n += 1
        try:
            self.s.put_nowait(self.n)
        except (bpstream.Full, bpstream.Closed):
            pass
        if self.closed:
            return
        if self.depth < self.cap:
            self.depth += 1
            self.model.observe(self.depth)
        else:
            self._store_one_when_full()

    @rule(k=st.integers(1, 40))
    def put_many(self, k):
        try:
            self.s.put_many(list(range(k)), timeout=0)
        except (bpstream.Full, bpstream.Closed):
            pass
        if self.closed:
            return
        left = k
        while left:
            room = self.cap - self.depth
            if room > 0:  # as many as fit, in one step
                stored = min(room, left)
                self.depth += stored
                left -= stored
                self.model.observe(self.depth)
                continue
            if not self._store_one_when_full():
                break
            left -= 1

    @rule()
    def get_nowait(self):
        try:
            self.s.get_nowait()
        except (bpstream.Empty, bpstream.Closed):
            return
        self.depth -= 1
        self.model.observe(self.depth)

    @rule(k=st.integers(1, 40))
    def get_many(self, k):
        try:
            got = self.s.get_many(k, timeout=0)
        except (bpstream.Empty, bpstream.Closed):
            return
        self.depth -= len(got)
        self.model.observe(self.depth)

    @rule()
    def close_immediately(self):
        self.s.close(immediate=True)
        self.closed = True
        self.depth = 0
        self.model.observe(0)

    def teardown(self):
        if hasattr(self, "s"):
            self.check()

    @rule()
    def check(self):
        st_ = self.s.stats()
        assert st_.depth == self.depth
        assert st_.flow_state is FlowState(self.model.state), (st_, self.model.state)
        assert self.s.flow_state is FlowState(self.model.state)
        assert (st_.throttle_events, st_.pause_events) == (
            self.model.throttle_events, self.model.pause_events)
        assert st_.throttle_delay == pytest.approx(self.model.delay(self.depth), abs=1e-9)


def test_flow_fields_follow_the_model():
    run_state_machine_as_test(FlowMachine, settings=settings(
        max_examples=150, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
