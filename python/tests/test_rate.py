"""Rate controllers (TokenBucket, SlidingWindow, AIMD) and ManualClock.

What a user can observe: every vector of the flow-control issue, checked on a ManualClock
(time moves only when the test says so); bad parameters raise ValueError/TypeError; a
refusal takes nothing and nobody barges past a waiter; waiters are granted in arrival
order, one wake-up per grant; a rate change re-plans sleepers at once; timeouts and Ctrl-C
end a wait having taken nothing; aacquire suspends the task, not the thread, and a
cancelled one takes nothing, beside thread waiters in one FIFO.
"""

import asyncio
import gc
import math
import signal
import sys
import threading
import time

import pytest

import bpstream
from bpstream import AIMD, ManualClock, SlidingWindow, TokenBucket
from support import WAKE_WITHIN, Call, Interrupted

WITHIN = 10.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def wait_until(predicate, within=WAKE_WITHIN):
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{predicate!r} still false after {within}s")
        time.sleep(0.002)


def waiting(controller):
    return controller.stats()["waiting"]


# ----------------------------------------------------------------------------- ManualClock


def test_manual_clock_moves_only_when_advanced():
    clock = ManualClock()
    start = clock.now()
    assert clock.time == start
    time.sleep(0.01)
    assert clock.now() == start
    clock.advance(0.25)
    assert clock.now() == pytest.approx(start + 0.25, abs=1e-9)
    assert clock.time == clock.now()
    clock.advance(0)
    assert clock.now() == pytest.approx(start + 0.25, abs=1e-9)


@pytest.mark.parametrize("bad", [-1, -0.001, float("nan"), float("-inf")])
def test_manual_clock_never_goes_back(bad):
    clock = ManualClock()
    with pytest.raises(ValueError):
        clock.advance(bad)


def test_manual_clock_rejects_non_numbers():
    with pytest.raises(TypeError):
        ManualClock().advance("1")
    with pytest.raises(TypeError):
        TokenBucket(1, 1, clock=object())


# ----------------------------------------------------------------------------- TokenBucket


def test_token_bucket_vector_ten_then_refused_then_one_per_10ms():
    clock = ManualClock()
    bucket = TokenBucket(100, 10, clock=clock)
    assert [bucket.try_acquire() for _ in range(10)] == [True] * 10
    assert bucket.try_acquire() is False
    assert bucket.retry_after() == pytest.approx(0.010, abs=1e-6)
    for _ in range(5):
        clock.advance(0.010)
        assert bucket.try_acquire() is True
        assert bucket.try_acquire() is False
    clock.advance(0.005)
    assert bucket.try_acquire() is False
    assert bucket.retry_after() == pytest.approx(0.005, abs=1e-6)
    st = bucket.stats()
    assert (st["granted"], st["refused"], st["waiting"]) == (15, 7, 0)
    assert st["rate"] == 100


def test_tokens_never_exceed_the_burst_after_idling():
    clock = ManualClock()
    bucket = TokenBucket(100, 10, clock=clock)
    clock.advance(3600)
    assert [bucket.try_acquire() for _ in range(11)] == [True] * 10 + [False]


def test_try_acquire_n_is_all_or_nothing():
    clock = ManualClock()
    bucket = TokenBucket(10, 5, clock=clock)
    assert bucket.try_acquire(3) is True
    assert bucket.try_acquire(3) is False  # two left: takes nothing
    assert bucket.retry_after(3) == pytest.approx(0.1, abs=1e-6)
    assert bucket.try_acquire(2) is True
    assert bucket.retry_after(1) == pytest.approx(0.1, abs=1e-6)


def test_start_empty_waits_for_the_first_token():
    clock = ManualClock()
    bucket = TokenBucket(4, 2, start_full=False, clock=clock)
    assert bucket.try_acquire() is False
    assert bucket.retry_after() == pytest.approx(0.25, abs=1e-6)
    clock.advance(0.25)
    assert bucket.try_acquire() is True


def test_more_than_the_burst_can_never_be_granted():
    bucket = TokenBucket(100, 10, clock=ManualClock())
    with pytest.raises(ValueError, match="burst|never"):
        bucket.try_acquire(11)
    with pytest.raises(ValueError, match="burst|never"):
        bucket.acquire(11)
    with pytest.raises(ValueError):
        bucket.retry_after(11)
    assert bucket.try_acquire(10) is True  # nothing was taken by the errors


@pytest.mark.parametrize(
    "args, kwargs, exc",
    [
        ((0, 1), {}, ValueError),
        ((-1, 1), {}, ValueError),
        ((float("nan"), 1), {}, ValueError),
        ((1, 0), {}, ValueError),
        ((1, -3), {}, ValueError),
        (("1", 1), {}, TypeError),
        ((1, "1"), {}, TypeError),
        ((1, 1.5), {}, TypeError),
        ((1,), {}, TypeError),
        ((1, 1), {"clock": 3}, TypeError),
        ((1, 1), {"nope": 3}, TypeError),
    ],
)
def test_token_bucket_bad_parameters(args, kwargs, exc):
    with pytest.raises(exc):
        TokenBucket(*args, **kwargs)


@pytest.mark.parametrize("n", [0, -1])
def test_n_below_one_is_a_value_error(n):
    bucket = TokenBucket(1, 1, clock=ManualClock())
    with pytest.raises(ValueError):
        bucket.try_acquire(n)
    with pytest.raises(ValueError):
        bucket.acquire(n)


def test_acquire_returns_at_once_with_zero_wait_when_tokens_are_there():
    bucket = TokenBucket(100, 2, clock=ManualClock())
    assert bucket.acquire() == 0.0
    assert bucket.acquire(timeout=0) == 0.0


def test_acquire_timeout_zero_never_waits():
    bucket = TokenBucket(1, 1, clock=ManualClock())
    bucket.try_acquire()
    with pytest.raises(TimeoutError):
        bucket.acquire(timeout=0)
    assert bucket.stats()["timed_out"] == 1


def test_acquire_waits_for_the_clock_and_reports_the_wait():
    clock = ManualClock()
    bucket = TokenBucket(10, 1, clock=clock)
    assert bucket.try_acquire()
    call = Call(bucket.acquire)
    wait_until(lambda: waiting(bucket) == 1)
    call.assert_blocked()
    clock.advance(0.05)
    call.assert_blocked()  # half a token: still waiting
    clock.advance(0.05)
    assert call.outcome() == pytest.approx(0.1, abs=1e-6)
    st = bucket.stats()
    assert (st["granted"], st["waiting"]) == (2, 0)
    assert st["total_wait"] == pytest.approx(0.1, abs=1e-6)


def test_acquire_times_out_on_the_system_clock_taking_nothing():
    bucket = TokenBucket(0.5, 1)  # the next token is 2 s away
    assert bucket.try_acquire()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        bucket.acquire(timeout=0.1)
    elapsed = time.monotonic() - start
    assert 0.09 <= elapsed < WAKE_WITHIN
    st = bucket.stats()
    assert (st["granted"], st["timed_out"], st["waiting"]) == (1, 1, 0)


def test_a_timeout_shorter_than_the_plan_fails_at_once_or_at_its_deadline():
    """A wait that cannot be granted before its deadline need not sit out the timeout, but
    must never be granted early nor fail before it is sure."""
    bucket = TokenBucket(1, 1)
    bucket.try_acquire()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        bucket.acquire(timeout=0.2)
    assert time.monotonic() - start < 0.2 + WAKE_WITHIN


def test_system_clock_pacing_is_roughly_the_rate():
    bucket = TokenBucket(200, 1)
    start = time.monotonic()
    waited = sum(bucket.acquire() for _ in range(41))
    elapsed = time.monotonic() - start
    assert elapsed >= 0.2 - 0.01  # 40 tokens at 200/s after the first
    assert elapsed < 0.2 + WAKE_WITHIN
    assert waited <= elapsed + 0.01


def test_refuses_while_others_wait_no_barging():
    clock = ManualClock()
    bucket = TokenBucket(10, 2, clock=clock)
    assert bucket.try_acquire(2)
    call = Call(bucket.acquire, 2)
    wait_until(lambda: waiting(bucket) == 1)
    clock.advance(0.1)  # one token: the waiter wants two, and try_acquire(1) must not barge
    assert bucket.try_acquire() is False
    clock.advance(0.1)
    assert call.outcome() == pytest.approx(0.2, abs=1e-6)
    assert bucket.try_acquire() is False


def test_fifo_with_many_waiting_threads_one_wake_up_per_grant():
    clock = ManualClock()
    bucket = TokenBucket(100, 1, clock=clock)
    assert bucket.try_acquire()
    order = []
    lock = threading.Lock()

    def waiter(i):
        bucket.acquire()
        with lock:
            order.append(i)

    threads = []
    for i in range(16):
        thread = threading.Thread(target=waiter, args=(i,), daemon=True)
        thread.start()
        threads.append(thread)
        wait_until(lambda: waiting(bucket) == i + 1)  # arrival order is known
    steps = []
    for i in range(16):
        before = bucket.stats()["wakeups"]
        clock.advance(0.01)
        wait_until(lambda: len(order) == i + 1)
        wait_until(lambda: waiting(bucket) == 15 - i)
        time.sleep(0.005)  # a herd would show up here
        steps.append(bucket.stats()["wakeups"] - before)
    for thread in threads:
        thread.join(WAKE_WITHIN)
    assert order == list(range(16))
    # No herd: each grant wakes the granted thread once, at its time; nobody else.
    assert steps == [1] * 16
    assert bucket.stats()["granted"] == 17


def test_no_herd_on_the_system_clock():
    bucket = TokenBucket(200, 1)
    assert bucket.try_acquire()
    base = bucket.stats()["wakeups"]
    threads = [threading.Thread(target=bucket.acquire, daemon=True) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAKE_WITHIN)
    st = bucket.stats()
    assert (st["granted"], st["waiting"]) == (17, 0)
    # About one wake-up per grant (a thread may look once more if it arrives while the
    # line moves); a herd would wake every sleeper on every grant: over a hundred here.
    assert st["wakeups"] - base <= 2 * 16


def test_one_wake_up_per_grant_when_the_tokens_are_there_at_once():
    clock = ManualClock()
    bucket = TokenBucket(100, 16, clock=clock)
    assert bucket.try_acquire(16)
    calls = []
    for i in range(16):
        calls.append(Call(bucket.acquire))
        wait_until(lambda: waiting(bucket) == i + 1)
    base = bucket.stats()["wakeups"]
    clock.advance(1.0)  # sixteen tokens at once: each waiter is woken once, in turn
    for call in calls:
        call.outcome()
    assert bucket.stats()["wakeups"] - base == 16


def test_a_rate_change_wakes_sleepers_at_once():
    bucket = TokenBucket(0.01, 1)  # the next token is 100 s away
    assert bucket.try_acquire()
    call = Call(bucket.acquire, timeout=60)
    wait_until(lambda: waiting(bucket) == 1)
    call.assert_blocked()
    start = time.monotonic()
    bucket.rate = 1000.0
    assert bucket.rate == 1000.0
    call.outcome(within=WAKE_WITHIN)
    assert time.monotonic() - start < WAKE_WITHIN
    assert bucket.stats()["rate"] == 1000.0


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "x", None])
def test_bad_rate_assignment(bad):
    bucket = TokenBucket(1, 1, clock=ManualClock())
    with pytest.raises((ValueError, TypeError)):
        bucket.rate = bad
    assert bucket.rate == 1


def test_interrupted_acquire_takes_nothing(interrupter):
    clock = ManualClock()
    bucket = TokenBucket(10, 1, clock=clock)
    assert bucket.try_acquire()
    shot = interrupter(0.2)
    with pytest.raises(Interrupted):
        bucket.acquire()
    assert time.monotonic() - shot.sent_at < 1.0
    st = bucket.stats()
    assert (st["granted"], st["waiting"]) == (1, 0)
    clock.advance(0.1)
    assert bucket.try_acquire() is True


CHILD = """
import sys, time
import bpstream
clock = bpstream.ManualClock()
bucket = bpstream.{kind}
assert bucket.try_acquire()
print("ready", flush=True)
try:
    bucket.acquire()
except KeyboardInterrupt:
    caught = time.monotonic()
else:
    sys.exit(3)
sent = float(sys.stdin.readline())
st = bucket.stats()
assert (st["granted"], st["waiting"]) == (1, 0), st
clock.advance(100)
assert bucket.try_acquire()
print(f"latency={{caught - sent:.6f}}", flush=True)
print("OK", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(
    "kind",
    ["TokenBucket(1, 1, clock=clock)", "SlidingWindow(1, 1.0, clock=clock)", "AIMD(1, clock=clock)"],
)
def test_ctrl_c_interrupts_acquire(kind):
    import re

    from support import Child

    child = Child(CHILD.format(kind=kind))
    try:
        child.wait_for_line("ready")
        time.sleep(0.3)
        sent = time.monotonic()
        child.send(f"{sent!r}\n")
        child.proc.send_signal(signal.SIGINT)
        returncode = child.wait(WAKE_WITHIN)
    finally:
        child.kill()
    out = "".join(child.stdout)
    assert returncode == 0, child.describe()
    assert float(re.search(r"latency=([0-9.]+)", out).group(1)) < 1.0
    assert "OK" in out


# ----------------------------------------------------------------------------- SlidingWindow


def test_sliding_window_vector():
    clock = ManualClock()
    window = SlidingWindow(5, 1.0, clock=clock)
    for _ in range(5):
        assert window.try_acquire() is True
        clock.advance(0.1)
    # t = 0.5: five hits in the last second
    assert window.try_acquire() is False
    assert window.retry_after() == pytest.approx(0.5, abs=1e-6)
    clock.advance(0.4)  # t = 0.9: the hit at 0.0 is still inside
    assert window.try_acquire() is False
    clock.advance(0.1)  # t = 1.0: it left
    assert window.try_acquire() is True
    assert window.try_acquire() is False  # the hit at 0.1 is still inside
    st = window.stats()
    assert (st["granted"], st["refused"], st["limit"]) == (6, 3, 5)


def test_a_refusal_is_not_logged():
    clock = ManualClock()
    window = SlidingWindow(1, 1.0, clock=clock)
    assert window.try_acquire()
    for _ in range(9):
        clock.advance(0.1)
        assert window.try_acquire() is False  # if logged, these would push the window on
    clock.advance(0.1)
    assert window.try_acquire() is True


def test_retry_after_counts_the_waiters_ahead():
    """retry_after answers for a newcomer: the waiters in line are served first."""
    clock = ManualClock()
    bucket = TokenBucket(100, 2, clock=clock)
    assert bucket.try_acquire(2)
    assert bucket.retry_after() == pytest.approx(0.010, abs=1e-6)
    first = Call(bucket.acquire)
    wait_until(lambda: waiting(bucket) == 1)
    assert bucket.retry_after() == pytest.approx(0.020, abs=1e-6)  # its token, then ours
    second = Call(bucket.acquire, 2)
    wait_until(lambda: waiting(bucket) == 2)
    assert bucket.retry_after(2) == pytest.approx(0.050, abs=1e-6)  # 1 + 2 + 2 tokens
    clock.advance(0.03)
    assert first.outcome() == pytest.approx(0.03, abs=1e-6)
    assert second.outcome() == pytest.approx(0.03, abs=1e-6)
    assert bucket.retry_after() == pytest.approx(0.010, abs=1e-6)

    # A window: each waiter ahead logs its grant, which must leave before a later one.
    window = SlidingWindow(2, 1.0, clock=clock)
    assert window.try_acquire() and window.try_acquire()
    assert window.retry_after() == pytest.approx(1.0, abs=1e-6)
    a, b = Call(window.acquire), None
    wait_until(lambda: waiting(window) == 1)
    assert window.retry_after() == pytest.approx(1.0, abs=1e-6)  # both log entries leave at 1.0
    b = Call(window.acquire)
    wait_until(lambda: waiting(window) == 2)
    assert window.retry_after() == pytest.approx(2.0, abs=1e-6)  # then a and b's grants must leave
    clock.advance(1.0)
    a.outcome(), b.outcome()
    assert window.retry_after() == pytest.approx(1.0, abs=1e-6)


def test_sliding_window_n_and_retry_after():
    clock = ManualClock()
    window = SlidingWindow(4, 2.0, clock=clock)
    assert window.try_acquire(2)
    clock.advance(0.5)
    assert window.try_acquire(2)
    clock.advance(0.5)
    assert window.try_acquire(1) is False
    assert window.retry_after(1) == pytest.approx(1.0, abs=1e-6)  # the two at 0.0 leave at 2.0
    assert window.retry_after(3) == pytest.approx(1.5, abs=1e-6)  # then the two at 0.5 at 2.5
    with pytest.raises(ValueError):
        window.try_acquire(5)


def test_sliding_window_acquire_waits_for_the_oldest_hit_to_leave():
    clock = ManualClock()
    window = SlidingWindow(2, 1.0, clock=clock)
    assert window.try_acquire(2)
    call = Call(window.acquire)
    wait_until(lambda: waiting(window) == 1)
    clock.advance(0.5)
    call.assert_blocked()
    clock.advance(0.5)
    assert call.outcome() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "args, exc",
    [((0, 1.0), ValueError), ((5, 0), ValueError), ((5, -1), ValueError),
     ((1.5, 1.0), TypeError), (("5", 1.0), TypeError), ((5, float("nan")), ValueError)],
)
def test_sliding_window_bad_parameters(args, exc):
    with pytest.raises(exc):
        SlidingWindow(*args)


# ----------------------------------------------------------------------------- AIMD


def test_aimd_vector_halves_once_per_episode_then_grows_per_used_window():
    clock = ManualClock()
    aimd = AIMD(100, clock=clock)
    assert aimd.limit == 100
    aimd.on_backpressure()
    assert aimd.limit == 50
    aimd.on_backpressure()  # the same window: one congestion episode
    assert aimd.limit == 50
    clock.advance(1.0)
    for _ in range(10):
        aimd.on_success()
        clock.advance(1.0)
    assert aimd.limit == pytest.approx(60)
    assert aimd.rate == pytest.approx(60)


def test_aimd_windows_without_success_do_not_grow():
    clock = ManualClock()
    aimd = AIMD(10, clock=clock)
    clock.advance(5.0)
    assert aimd.limit == 10
    aimd.on_success()
    clock.advance(1.0)
    aimd.on_success()
    clock.advance(1.0)
    assert aimd.limit == pytest.approx(12)


def test_aimd_bounds():
    clock = ManualClock()
    aimd = AIMD(4, minimum=3, maximum=5, clock=clock)
    aimd.on_backpressure()
    assert aimd.limit == 3  # 2 is below the minimum
    for _ in range(5):
        aimd.on_success()
        clock.advance(1.0)
    assert aimd.limit == 5


def test_aimd_cooldown_lets_a_later_episode_back_off_again():
    clock = ManualClock()
    aimd = AIMD(100, cooldown=0.5, clock=clock)
    aimd.on_backpressure()
    clock.advance(0.25)
    aimd.on_backpressure()
    assert aimd.limit == 50
    clock.advance(0.5)
    aimd.on_backpressure()
    assert aimd.limit == 25


def test_aimd_paces_at_its_limit():
    clock = ManualClock()
    aimd = AIMD(10, clock=clock)
    assert aimd.try_acquire() is True
    granted = sum(aimd.try_acquire() for _ in range(100))
    assert granted <= 10
    assert aimd.retry_after() <= 0.1 + 1e-6


@pytest.mark.parametrize(
    "kwargs",
    [dict(decrease=0), dict(decrease=1), dict(decrease=1.5), dict(increase=0),
     dict(increase=-1), dict(minimum=10, maximum=5), dict(minimum=0),
     dict(window=0), dict(cooldown=-1)],
)
def test_aimd_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        AIMD(7, **kwargs)


def test_aimd_initial_must_be_a_number():
    with pytest.raises(TypeError):
        AIMD("fast")
    with pytest.raises(ValueError):
        AIMD(0)


# ----------------------------------------------------------------------------- asyncio


def done_at_once(awaitable):
    iterator = awaitable.__await__()
    with pytest.raises(StopIteration) as stop:
        iterator.send(None)
    return stop.value.value


def test_aacquire_with_tokens_there_needs_no_suspension():
    bucket = TokenBucket(100, 2, clock=ManualClock())
    assert done_at_once(bucket.aacquire()) == 0.0
    assert done_at_once(bucket.aacquire(1, timeout=0)) == 0.0


def test_aacquire_bad_arguments_raise_at_the_call():
    bucket = TokenBucket(100, 2, clock=ManualClock())
    with pytest.raises(ValueError):
        bucket.aacquire(3)
    with pytest.raises(ValueError):
        bucket.aacquire(timeout=-1)


@pytest.mark.parametrize("make", [
    lambda clock: TokenBucket(10, 1, clock=clock),
    lambda clock: SlidingWindow(1, 0.1, clock=clock),
])
def test_aacquire_waits_for_the_clock_suspending_only_the_task(make):
    clock = ManualClock()
    controller = make(clock)
    assert controller.try_acquire()

    async def main():
        task = asyncio.create_task(controller.aacquire())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not task.done()
        assert waiting(controller) == 1
        ticks = 0
        while not task.done():  # the loop runs while the task waits
            ticks += 1
            if ticks == 5:
                clock.advance(0.1)
            await asyncio.sleep(0.001)
        return await task

    assert run(main()) == pytest.approx(0.1, abs=1e-6)
    assert waiting(controller) == 0


def test_aacquire_timeout_on_the_system_clock():
    bucket = TokenBucket(0.5, 1)
    bucket.try_acquire()

    async def main():
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            await bucket.aacquire(timeout=0.1)
        return time.monotonic() - start

    assert 0.09 <= run(main()) < WAKE_WITHIN
    st = bucket.stats()
    assert (st["granted"], st["timed_out"], st["waiting"]) == (1, 1, 0)


def test_aacquire_on_the_system_clock_is_granted_in_time():
    bucket = TokenBucket(20, 1)
    bucket.try_acquire()

    async def main():
        start = time.monotonic()
        waited = await bucket.aacquire()
        return waited, time.monotonic() - start

    waited, elapsed = run(main())
    assert 0.04 <= elapsed < WAKE_WITHIN
    assert 0.0 < waited <= elapsed + 0.01


def test_async_waits_are_not_refusals():
    """stats() is exact: an aacquire that has to wait counts as its grant, timeout or
    cancellation, never as a try_acquire refusal."""
    clock = ManualClock()
    bucket = TokenBucket(10, 1, clock=clock)
    bucket.try_acquire()
    assert bucket.try_acquire() is False  # the one real refusal

    async def main():
        granted = asyncio.create_task(bucket.aacquire())
        cancelled = asyncio.create_task(bucket.aacquire())
        await asyncio.sleep(0.01)
        assert waiting(bucket) == 2
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        with pytest.raises(TimeoutError):
            await bucket.aacquire(timeout=0)
        clock.advance(0.1)
        await asyncio.wait_for(granted, WITHIN)

    run(main())
    st = bucket.stats()
    assert (st["granted"], st["refused"], st["cancelled"], st["timed_out"], st["waiting"]) == (2, 1, 1, 1, 0)


def test_aacquire_timeout_on_a_manual_clock_is_timed_by_the_clock():
    """The ticket carries its timeout: the waiting task sets no timer (no polling on real
    time), and the clock move that passes its timeout ends it."""
    clock = ManualClock()
    bucket = TokenBucket(1, 1, clock=clock)
    bucket.try_acquire()

    async def main():
        loop = asyncio.get_running_loop()
        timers = []
        call_later = loop.call_later

        def counting_call_later(delay, callback, *args, **kwargs):
            if getattr(callback, "__module__", "").startswith("bpstream"):
                timers.append(delay)
            return call_later(delay, callback, *args, **kwargs)

        loop.call_later = counting_call_later
        task = asyncio.create_task(bucket.aacquire(timeout=0.5))
        await asyncio.sleep(0.05)
        assert waiting(bucket) == 1
        assert timers == [], "a timer polls the clock"
        clock.advance(0.4)
        await asyncio.sleep(0.02)
        assert not task.done()
        clock.advance(0.1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(task, WITHIN)

    run(main())
    st = bucket.stats()
    assert (st["granted"], st["timed_out"], st["waiting"]) == (1, 1, 0)


def test_a_promoted_head_is_planned_at_promotion_not_when_it_runs():
    """Outcomes on a ManualClock do not depend on scheduling: a ticket promoted to the head
    at 0.01 (its token due at 0.02) is granted dated 0.02 even if its task first runs after
    the clock jumped to 0.51, so the bucket has refilled its one token by then."""
    clock = ManualClock()
    bucket = TokenBucket(100, 1, clock=clock)
    bucket.try_acquire()

    async def main():
        head = Call(bucket.acquire)
        wait_until(lambda: waiting(bucket) == 1)
        task = asyncio.create_task(bucket.aacquire())
        await asyncio.sleep(0.02)
        assert waiting(bucket) == 2
        clock.advance(0.01)
        head.outcome()  # granted at 0.01; the task is promoted but cannot run (loop busy)
        clock.advance(0.5)
        await asyncio.wait_for(task, WITHIN)
        assert bucket.try_acquire() is True, "the task's grant was dated when it ran"

    run(main())


def test_a_cancelled_aacquire_takes_nothing():
    clock = ManualClock()
    bucket = TokenBucket(10, 1, clock=clock)
    bucket.try_acquire()

    async def main():
        first = asyncio.create_task(bucket.aacquire())
        second = asyncio.create_task(bucket.aacquire())
        await asyncio.sleep(0.01)
        assert waiting(bucket) == 2
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert waiting(bucket) == 1
        clock.advance(0.1)
        await asyncio.wait_for(second, WITHIN)  # the token goes to the next in line
        assert bucket.try_acquire() is False

    run(main())
    st = bucket.stats()
    assert (st["granted"], st["waiting"]) == (2, 0)


def test_asyncio_timeout_cancels_cleanly():
    bucket = TokenBucket(0.01, 1)
    bucket.try_acquire()

    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await bucket.aacquire()

    run(main())
    assert waiting(bucket) == 0
    bucket.rate = 1e6
    time.sleep(0.01)
    assert bucket.try_acquire() is True


def test_thread_and_task_waiters_share_one_fifo():
    clock = ManualClock()
    bucket = TokenBucket(100, 1, clock=clock)
    bucket.try_acquire()
    order = []

    async def main():
        loop = asyncio.get_running_loop()

        async def task_waiter(name):
            await bucket.aacquire()
            order.append(name)

        def thread_waiter(name):
            bucket.acquire()
            order.append(name)

        threads, tasks = [], []
        for i in range(6):
            name = f"{'task' if i % 2 == 0 else 'thread'}{i}"
            if i % 2 == 0:
                tasks.append(asyncio.create_task(task_waiter(name)))
            else:
                thread = threading.Thread(target=thread_waiter, args=(name,), daemon=True)
                thread.start()
                threads.append(thread)
            deadline = time.monotonic() + WITHIN
            while waiting(bucket) != i + 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.002)
        for i in range(6):
            clock.advance(0.01)
            deadline = time.monotonic() + WITHIN
            while len(order) != i + 1:
                assert time.monotonic() < deadline, order
                await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        for thread in threads:
            await loop.run_in_executor(None, thread.join, WITHIN)

    run(main())
    assert order == [f"{'task' if i % 2 == 0 else 'thread'}{i}" for i in range(6)]


def test_many_random_cancellations_lose_nothing():
    import random

    clock = ManualClock()
    bucket = TokenBucket(1000, 1, clock=clock)
    bucket.try_acquire()
    rng = random.Random(7)

    async def main():
        tasks = [asyncio.create_task(bucket.aacquire()) for _ in range(200)]
        await asyncio.sleep(0.01)
        for task in rng.sample(tasks, 100):
            task.cancel()
        await asyncio.sleep(0.01)
        granted = 0
        while granted < 100:
            clock.advance(0.001)
            done = sum(1 for t in tasks if t.done() and not t.cancelled())
            deadline = time.monotonic() + WITHIN
            while sum(1 for t in tasks if t.done() and not t.cancelled()) == done:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.001)
            granted = sum(1 for t in tasks if t.done() and not t.cancelled())
        await asyncio.gather(*tasks, return_exceptions=True)
        return sum(1 for t in tasks if not t.cancelled())

    assert run(main()) == 100
    st = bucket.stats()
    assert (st["granted"], st["waiting"]) == (101, 0)


# ----------------------------------------------------------------------------- misc


@pytest.mark.parametrize("make", [
    lambda: TokenBucket(5, 2),
    lambda: SlidingWindow(5, 1.0),
    lambda: AIMD(5),
])
def test_repr_and_stats_keys(make):
    controller = make()
    assert type(controller).__name__ in repr(controller)
    st = controller.stats()
    for key in ("granted", "refused", "timed_out", "waiting", "total_wait", "wakeups", "rate"):
        assert key in st, key


def test_controllers_are_freed():
    import weakref

    clock = ManualClock()
    refs = []
    for make in (lambda: TokenBucket(5, 2, clock=clock), lambda: SlidingWindow(5, 1.0, clock=clock),
                 lambda: AIMD(5, clock=clock)):
        controller = make()
        controller.try_acquire()
        refs.append(weakref.ref(controller))
        del controller
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_aacquire_timeout_on_a_manual_clock_passes_when_the_clock_does():
    clock = ManualClock()
    bucket = TokenBucket(1, 1, clock=clock)
    bucket.try_acquire()

    async def main():
        task = asyncio.create_task(bucket.aacquire(timeout=0.5))
        await asyncio.sleep(0.05)
        assert not task.done()  # real time passing is not the clock's time
        clock.advance(0.6)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(task, WITHIN)

    run(main())
    st = bucket.stats()
    assert (st["timed_out"], st["cancelled"], st["waiting"], st["granted"]) == (1, 0, 0, 1)


@pytest.mark.parametrize("make, faster", [
    (lambda: SlidingWindow(1, 100.0), 0.02),   # limit round(0.02 * 100) = 2: room at once
    (lambda: AIMD(0.01, minimum=0.01), 1000.0),
])
def test_a_rate_change_wakes_sleepers_of_every_kind(make, faster):
    controller = make()
    assert controller.try_acquire()
    call = Call(controller.acquire, timeout=60)
    wait_until(lambda: waiting(controller) == 1)
    call.assert_blocked()
    controller.rate = faster
    call.outcome(within=WAKE_WITHIN)
    assert controller.rate == pytest.approx(faster)


def test_sliding_window_rate_below_one_per_window_is_refused():
    window = SlidingWindow(5, 1.0, clock=ManualClock())
    with pytest.raises(ValueError, match="window"):
        window.rate = 0.4  # round(0.4 * 1.0) = 0 permits per window
    assert window.limit == 5


def test_aimd_rate_assignment_is_clamped_to_its_bounds():
    aimd = AIMD(10, minimum=2, maximum=50, clock=ManualClock())
    aimd.rate = 1000
    assert aimd.limit == 50
    aimd.rate = 0.5
    assert aimd.limit == 2


def test_tasks_on_the_system_clock_are_paced_in_order():
    bucket = TokenBucket(50, 1)
    bucket.try_acquire()
    order = []

    async def main():
        async def one(i):
            await bucket.aacquire()
            order.append(i)

        start = time.monotonic()
        tasks = []
        for i in range(5):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0)  # each joins the line before the next
        await asyncio.wait_for(asyncio.gather(*tasks), WITHIN)
        return time.monotonic() - start

    elapsed = run(main())
    assert order == [0, 1, 2, 3, 4]
    assert elapsed >= 5 / 50 - 0.01  # five tokens at 50/s
    st = bucket.stats()
    assert (st["granted"], st["waiting"]) == (6, 0)


def test_waiting_tasks_leave_no_references_behind():
    clock = ManualClock()
    bucket = TokenBucket(1000, 1, clock=clock)
    bucket.try_acquire()

    async def main():
        for _ in range(200):
            task = asyncio.create_task(bucket.aacquire())
            cancelled = asyncio.create_task(bucket.aacquire())
            await asyncio.sleep(0)
            cancelled.cancel()
            clock.advance(0.001)
            await task
            await asyncio.gather(cancelled, return_exceptions=True)
            clock.advance(0.001)
            assert bucket.try_acquire()

    base = sys.getrefcount(bucket)
    run(main())
    gc.collect()
    assert sys.getrefcount(bucket) == base  # every ticket released its controller
    assert bucket.stats()["waiting"] == 0
