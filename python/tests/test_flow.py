"""Flow control from Python (issue 9, section 1): the flow states at every boundary of the
issue's vectors, hysteresis, exact transition counts, the throttle delay and the pause seen
by puts that may wait (and never by put_nowait), timeouts ending a delay at the deadline,
Ctrl-C during a delay and a pause, a native producer paced, callbacks (in order, outside the
lock, calling back into the stream, exceptions reported), and health().
"""

import os
import threading
import time

import pytest

import bpstream
from bpstream import FlowControl, FlowState
from support import WAKE_WITHIN, Interrupted, check_identity

FAST = FlowControl(min_delay=0.001, max_delay=0.100)


def filled(depth, capacity=100, flow=None, policy="block"):
    s = bpstream.BoundedStream(capacity, policy, flow=flow)
    for i in range(depth):
        s.put_nowait(i)
    return s


# ------------------------------------------------------------------------------ states


@pytest.mark.parametrize("depth, state, delay", [
    (0, FlowState.NORMAL, 0.0),
    (69, FlowState.NORMAL, 0.0),
    (70, FlowState.THROTTLED, 0.001),
    (80, FlowState.THROTTLED, 0.0505),
    (90, FlowState.THROTTLED, 0.100),
    (91, FlowState.PAUSED, 0.0),
    (100, FlowState.DROPPING, 0.0),
])
def test_boundaries_of_the_issue(depth, state, delay):
    s = filled(depth, flow=FAST)
    assert s.flow_state is state
    st = s.stats()
    assert st.flow_state is state
    assert st.throttle_delay == pytest.approx(delay, abs=1e-12)


def test_hysteresis_vector_of_the_issue():
    s = filled(95, flow=FlowControl(hysteresis=0.05))
    assert s.flow_state is FlowState.PAUSED
    s.get_many(7)  # 88
    assert s.flow_state is FlowState.PAUSED
    s.get_many(4)  # 84
    assert s.flow_state is FlowState.THROTTLED
    s.get_many(19)  # 65: not below 0.70 - 0.05
    assert s.flow_state is FlowState.THROTTLED
    s.get()  # 64
    assert s.flow_state is FlowState.NORMAL


def test_states_are_reported_without_flow_control_and_nothing_waits():
    s = filled(95, policy="drop_oldest")
    assert s.flow_state is FlowState.PAUSED
    start = time.monotonic()
    for i in range(10):
        s.put(i, timeout=30)
    assert time.monotonic() - start < WAKE_WITHIN
    st = s.stats()
    assert st.flow_state is FlowState.DROPPING
    assert (st.throttle_events, st.pause_events) == (1, 1)
    assert st.rate_limit is None
    check_identity(st)


def test_unbounded_stream_is_always_normal():
    q = bpstream.Queue()
    for i in range(1000):
        q.put(i)
    assert q.stats().flow_state is FlowState.NORMAL


def test_transitions_are_counted_exactly_and_time_paused_grows():
    s = bpstream.BoundedStream(10, flow=FlowControl(min_delay=0, max_delay=0))
    for _ in range(3):
        s.put_many(list(range(10)), timeout=0)  # NORMAL -> DROPPING in one batch: a pause
        time.sleep(0.05)
        s.get_many(2)  # 8: THROTTLED
        s.get_many(8)  # 0: NORMAL
    for _ in range(2):
        for i in range(7):
            s.put_nowait(i)  # 7: a throttle event
        s.get_many(7)
    st = s.stats()
    assert (st.throttle_events, st.pause_events) == (2, 3)
    assert 0.1 < st.time_paused < 10
    assert st.flow_state is FlowState.NORMAL


def test_bad_flow_arguments():
    with pytest.raises(ValueError):
        FlowControl(throttle_at=0.9, pause_at=0.5)
    with pytest.raises(ValueError):
        FlowControl(hysteresis=1)
    with pytest.raises(ValueError):
        FlowControl(min_delay=-1)
    with pytest.raises(ValueError):
        FlowControl(max_delay=float("inf"))
    with pytest.raises(TypeError):
        FlowControl(throttle_at="high")
    with pytest.raises(TypeError):
        bpstream.BoundedStream(10, flow={"throttle_at": 0.5})
    assert bpstream.BoundedStream(10, flow=None).flow_state is FlowState.NORMAL
    assert FlowControl() == FlowControl(0.70, 0.90, 0.0, 0.5, 0.0)
    assert "throttle_at=0.7" in repr(FlowControl())


# ------------------------------------------------------------------------------ delays


def test_throttle_delay_is_taken_by_puts_that_may_wait_only():
    s = filled(7, capacity=10, flow=FlowControl(min_delay=0.2, max_delay=0.2))
    start = time.monotonic()
    s.put("slow", timeout=10)
    assert time.monotonic() - start >= 0.19
    start = time.monotonic()
    s.put_nowait("fast")
    s.put("fast too", timeout=0)
    assert time.monotonic() - start < 0.15
    assert len(s) == 10


def test_a_delay_longer_than_the_timeout_fails_full_at_the_deadline():
    s = filled(8, capacity=10, flow=FlowControl(min_delay=5, max_delay=5))
    start = time.monotonic()
    with pytest.raises(bpstream.Full):
        s.put("x", timeout=0.2)
    took = time.monotonic() - start
    assert 0.19 <= took < 4
    st = s.stats()
    assert (st.depth, st.rejected) == (8, 1)


def test_pause_is_released_by_a_consumer_and_by_close():
    s = filled(95, flow=FlowControl(min_delay=0, max_delay=0))
    done = threading.Event()
    t = threading.Thread(target=lambda: (s.put("late"), done.set()))
    t.start()
    assert not done.wait(0.2)
    s.get_many(4)  # 91: still PAUSED
    assert not done.wait(0.1)
    s.get()  # 90: THROTTLED
    assert done.wait(WAKE_WITHIN)
    t.join()
    assert len(s) == 91

    s.put_many(list(range(4)), timeout=0)  # 95
    outcome = []

    def put():
        try:
            s.put("never")
        except bpstream.Closed:
            outcome.append("closed")

    t = threading.Thread(target=put)
    t.start()
    time.sleep(0.1)
    s.close()
    t.join(WAKE_WITHIN)
    assert outcome == ["closed"]


def test_put_many_takes_one_delay_per_call():
    s = filled(70, flow=FlowControl(min_delay=0.2, max_delay=0.2))
    start = time.monotonic()
    s.put_many(list(range(15)))
    took = time.monotonic() - start
    assert 0.19 <= took < 2.5
    assert len(s) == 85


def _interrupt(interrupter, s, call):
    rescue = threading.Timer(0.2 + WAKE_WITHIN, lambda: s.close(immediate=True))
    rescue.daemon = True
    rescue.start()
    shot = interrupter(0.2)
    try:
        with pytest.raises(Interrupted):
            call()
        caught = time.monotonic()
    finally:
        rescue.cancel()
    assert shot.sent_at is not None
    assert caught - shot.sent_at < 1.0


@pytest.mark.parametrize("depth", [8, 10], ids=["throttle-delay", "pause"])
def test_ctrl_c_during_a_delay_or_a_pause(interrupter, depth):
    s = filled(depth, capacity=10, flow=FlowControl(min_delay=30, max_delay=30))
    _interrupt(interrupter, s, lambda: s.put("x"))
    assert len(s) == depth
    assert not s.closed


def test_a_native_reader_is_paced(tmp_path):
    s = bpstream.BoundedStream(10, flow=FlowControl(min_delay=0.2, max_delay=0.2))
    r, w = os.pipe()

    def write():  # one line per read: the reader puts each as a call of its own
        for i in range(10):
            os.write(w, b"%d\n" % i)
            time.sleep(0.02)
        os.close(w)

    writer = threading.Thread(target=write)
    start = time.monotonic()
    s._start_reader(r, True, 4096)
    writer.start()
    deadline = start + 2 * WAKE_WITHIN
    while len(s) < 7 and time.monotonic() < deadline:
        time.sleep(0.001)
    reached7 = time.monotonic()
    while len(s) < 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    reached10 = time.monotonic()
    assert len(s) == 10
    # The reader's put of line 8 waited 0.2 s (THROTTLED at 7 of 10); the lines read
    # meanwhile go in one batch put, gated once more: at least two delays.
    assert reached10 - reached7 >= 0.35
    assert [int(x) for x in s] == list(range(10))
    writer.join()


# ------------------------------------------------------------------------------ callbacks


def test_callbacks_once_per_transition_in_order_and_back_into_the_stream():
    s = bpstream.BoundedStream(10)
    seen = []

    def callback(old, new, fill):
        st = s.stats()  # calls back into the stream: no deadlock
        seen.append((old, new, fill, st.depth))
        if new is FlowState.DROPPING and len(seen) == 2:
            s.get()

    handle = s.on_flow_change(callback)
    for i in range(10):
        s.put(i)
    assert [(o.name, n.name, f, d) for o, n, f, d in seen] == [
        ("NORMAL", "THROTTLED", 0.7, 7),
        ("THROTTLED", "DROPPING", 1.0, 10),
        ("DROPPING", "THROTTLED", 0.9, 9),
    ]
    handle.remove()
    handle.remove()
    s.put(1)
    s.get_many(10)
    assert len(seen) == 3


def test_callbacks_from_a_native_producer_thread():
    s = bpstream.BoundedStream(4)
    seen = []
    lock = threading.Lock()

    def callback(old, new, fill):
        with lock:
            seen.append(new)

    s.on_flow_change(callback)  # the stream keeps the registration
    r, w = os.pipe()
    os.write(w, b"a\nb\nc\nd\n")
    os.close(w)
    s._start_reader(r, True, 4096)
    deadline = time.monotonic() + WAKE_WITHIN
    while not seen and time.monotonic() < deadline:
        time.sleep(0.005)
    # One read, one batch put by the reader's thread: NORMAL -> DROPPING at once.
    assert seen[0] is FlowState.DROPPING
    assert list(s) == [b"a\n", b"b\n", b"c\n", b"d\n"]


def test_a_failing_callback_is_reported_and_never_breaks_the_put():
    s = bpstream.BoundedStream(2)
    reports = []
    import sys

    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: reports.append(u.exc_value)
    try:
        handle = s.on_flow_change(lambda old, new, fill: 1 / 0)
        s.put(1)
        s.put(2)
        handle.remove()
    finally:
        sys.unraisablehook = old_hook
    assert len(s) == 2
    assert reports and all(isinstance(e, ZeroDivisionError) for e in reports)
    with pytest.raises(TypeError):
        s.on_flow_change(42)


def test_a_stream_with_a_callback_referring_to_it_is_collected():
    import gc
    import weakref

    s = bpstream.BoundedStream(2)
    s.on_flow_change(lambda old, new, fill: s.stats())
    ref = weakref.ref(s)
    del s
    gc.collect()
    assert ref() is None


# ------------------------------------------------------------------------------ health


@pytest.mark.parametrize("dropped, status", [
    (0, "healthy"), (99, "healthy"), (100, "warning"), (300, "warning"), (301, "unhealthy"),
])
def test_health_status_from_the_drop_rate(dropped, status):
    s = bpstream.BoundedStream(1, "drop_newest")
    s.put(0)
    for i in range(dropped):
        s.put(i)  # each one shed
    for i in range(1000 - dropped - 1):
        s.get()
        s.put(i)
    st = s.stats()
    assert (st.produced, st.dropped) == (1000, dropped)
    h = s.health()
    assert h.status == status
    assert h.drop_rate == pytest.approx(dropped / 1000)
    assert 0 <= h.recent_drop_rate <= 1
    assert isinstance(h.recommendation, bpstream.Recommendation)
    if status == "healthy":
        assert h.recommendation.action == "none"
    else:
        assert h.recommendation.action == ("act" if status == "unhealthy" else "watch")
        assert "consumer too slow" in h.recommendation.reason
        assert "raise capacity" in h.recommendation.suggestion


def test_health_of_an_empty_stream_and_bad_thresholds():
    s = bpstream.BoundedStream(4)
    assert s.health() == bpstream.Health("healthy", 0.0, 0.0, s.health().recommendation)
    with pytest.raises(ValueError):
        s.health(warning=0.5, unhealthy=0.2)
    with pytest.raises(TypeError):
        s.health(warning="x")


def test_flow_states_print_as_their_names_and_compare_as_ints():
    state = bpstream.FlowState.PAUSED
    assert str(state) == "PAUSED" and f"{state:>8}" == "  PAUSED"
    assert state == 2 and bpstream.FlowState(3) is bpstream.FlowState.DROPPING
