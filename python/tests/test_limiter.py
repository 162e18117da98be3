"""bpstream.Limiter: admission by work in progress and rate, atomically.

What a user can observe: at least one limit; a refusal takes nothing (neither a slot nor a
rate token); tokens are context managers whose release is idempotent, and a forgotten one
gives its slot back with a ResourceWarning; waiters are granted in arrival order, nobody
barges, one wake-up per grant; raising max_concurrent or rate grants waiters at once;
timeouts and Ctrl-C take nothing; the async face suspends the task and a cancelled
aacquire takes nothing; tokens leak no references.
"""

import asyncio
import gc
import math
import signal
import sys
import threading
import time
import warnings
import weakref

import pytest

from bpstream import Limiter, ManualClock
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


# ----------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({}, ValueError),
        (dict(max_concurrent=0), ValueError),
        (dict(max_concurrent=-2), ValueError),
        (dict(max_concurrent=1.5), TypeError),
        (dict(rate=0), ValueError),
        (dict(rate=-1), ValueError),
        (dict(rate=float("nan")), ValueError),
        (dict(rate="1"), TypeError),
        (dict(rate=1, burst=0), ValueError),
        (dict(max_concurrent=1, burst=3), ValueError),  # a burst without a rate
        (dict(max_concurrent=1, clock=5), TypeError),
    ],
)
def test_bad_parameters(kwargs, exc):
    with pytest.raises(exc):
        Limiter(**kwargs)


def test_properties_of_a_concurrency_limiter():
    limiter = Limiter(max_concurrent=3)
    assert (limiter.capacity, limiter.max_concurrent, limiter.in_flight, limiter.available) == (3, 3, 0, 3)
    assert limiter.rate is None
    assert limiter.utilization == 0.0
    a, b = limiter.acquire(), limiter.acquire()
    assert (limiter.in_flight, limiter.available, limiter.waiting) == (2, 1, 0)
    assert limiter.utilization == pytest.approx(2 / 3)
    a.release()
    b.release()
    assert limiter.in_flight == 0
    assert "Limiter" in repr(limiter)


def test_a_rate_only_limiter_has_burst_one_by_default():
    clock = ManualClock()
    limiter = Limiter(rate=10, clock=clock)
    assert limiter.max_concurrent is None
    assert limiter.rate == 10
    first = limiter.try_acquire()
    assert first is not None
    first.release()
    assert limiter.try_acquire() is None  # burst 1: the next token is 0.1 s away
    assert limiter.retry_after() == pytest.approx(0.1, abs=1e-6)
    clock.advance(0.1)
    limiter.try_acquire().release()


# ----------------------------------------------------------------------------- the vector


def test_admission_is_all_or_nothing():
    """Limiter(max_concurrent=1, rate=1, burst=5): hold one token; three refused
    try_acquire() calls leave 4 rate tokens."""
    clock = ManualClock()
    limiter = Limiter(max_concurrent=1, rate=1, burst=5, clock=clock)
    held = limiter.try_acquire()
    assert held is not None
    assert [limiter.try_acquire() for _ in range(3)] == [None, None, None]
    held.release()
    for _ in range(4):  # the four rate tokens left
        token = limiter.try_acquire()
        assert token is not None
        token.release()
    assert limiter.try_acquire() is None  # out of rate tokens: the slot is untouched
    assert limiter.in_flight == 0
    st = limiter.stats()
    assert (st["granted"], st["refused"]) == (5, 4)


def test_a_rate_refusal_leaves_the_slot():
    clock = ManualClock()
    limiter = Limiter(max_concurrent=2, rate=1, burst=1, clock=clock)
    first = limiter.try_acquire()
    assert limiter.try_acquire() is None  # no rate token
    assert limiter.in_flight == 1 and limiter.available == 1
    clock.advance(1.0)
    second = limiter.try_acquire()
    assert second is not None
    first.release()
    second.release()


# ----------------------------------------------------------------------------- tokens


def test_token_is_a_context_manager_and_release_is_idempotent():
    limiter = Limiter(max_concurrent=1)
    with limiter.acquire() as token:
        assert limiter.in_flight == 1
        assert limiter.try_acquire() is None
    assert limiter.in_flight == 0
    token.release()
    token.release()
    assert limiter.in_flight == 0
    again = limiter.try_acquire()
    assert again is not None
    again.release()


def test_with_limiter():
    limiter = Limiter(max_concurrent=2)
    with limiter:
        assert limiter.in_flight == 1
        with limiter:
            assert limiter.in_flight == 2
        assert limiter.in_flight == 1
    assert limiter.in_flight == 0
    with pytest.raises(KeyError):
        with limiter:
            raise KeyError
    assert limiter.in_flight == 0


def test_a_forgotten_token_gives_its_slot_back_with_a_resource_warning():
    limiter = Limiter(max_concurrent=1)
    token = limiter.acquire()
    with pytest.warns(ResourceWarning):
        del token
        gc.collect()
    assert limiter.in_flight == 0
    limiter.try_acquire().release()


def test_a_released_token_warns_nothing():
    limiter = Limiter(max_concurrent=1)
    token = limiter.acquire()
    token.release()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del token
        gc.collect()


def test_tokens_leak_no_references():
    limiter = Limiter(max_concurrent=4)
    base = sys.getrefcount(limiter)
    for _ in range(1000):
        with limiter.acquire():
            pass
        token = limiter.try_acquire()
        token.release()
        del token
        with limiter:
            pass
    gc.collect()
    assert sys.getrefcount(limiter) == base
    ref = weakref.ref(limiter)
    held = limiter.acquire()
    del limiter
    gc.collect()
    assert ref() is not None  # a live token keeps its limiter
    held.release()
    del held
    gc.collect()
    assert ref() is None


# ----------------------------------------------------------------------------- waiting


def test_acquire_waits_for_a_slot():
    limiter = Limiter(max_concurrent=1)
    held = limiter.acquire()
    call = Call(limiter.acquire)
    wait_until(lambda: limiter.waiting == 1)
    call.assert_blocked()
    held.release()
    token = call.outcome()
    assert limiter.in_flight == 1
    token.release()


def test_acquire_timeout_takes_nothing():
    limiter = Limiter(max_concurrent=1)
    held = limiter.acquire()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        limiter.acquire(timeout=0.1)
    assert 0.09 <= time.monotonic() - start < WAKE_WITHIN
    with pytest.raises(TimeoutError):
        limiter.acquire(timeout=0)
    st = limiter.stats()
    assert (st["timed_out"], st["in_flight"], st["waiting"]) == (2, 1, 0)
    held.release()


def test_no_barging_at_the_instant_a_slot_frees():
    limiter = Limiter(max_concurrent=1)
    held = limiter.acquire()
    call = Call(limiter.acquire)
    wait_until(lambda: limiter.waiting == 1)
    held.release()
    assert limiter.try_acquire() is None  # the slot is the waiter's
    call.outcome().release()
    limiter.try_acquire().release()


def test_fifo_with_many_waiters_and_one_wake_up_per_grant():
    limiter = Limiter(max_concurrent=1)
    held = limiter.acquire()
    order = []
    tokens = {}

    def waiter(i):
        token = limiter.acquire()
        order.append(i)
        tokens[i] = token

    threads = []
    for i in range(20):
        thread = threading.Thread(target=waiter, args=(i,), daemon=True)
        thread.start()
        threads.append(thread)
        wait_until(lambda: limiter.waiting == i + 1)
    base = limiter.stats()["wakeups"]
    held.release()
    for i in range(20):
        wait_until(lambda: len(order) == i + 1)
        tokens[i].release()
    for thread in threads:
        thread.join(WAKE_WITHIN)
    assert order == list(range(20))
    assert limiter.stats()["wakeups"] - base == 20


def test_raising_max_concurrent_grants_waiters_at_once():
    limiter = Limiter(max_concurrent=1)
    held = limiter.acquire()
    calls = [Call(limiter.acquire) for _ in range(3)]
    wait_until(lambda: limiter.waiting == 3)
    limiter.max_concurrent = 4
    tokens = [call.outcome() for call in calls]
    assert (limiter.in_flight, limiter.waiting, limiter.capacity) == (4, 0, 4)
    limiter.max_concurrent = 2  # below in_flight: no new admission until two leave
    assert limiter.try_acquire() is None
    for token in tokens:
        token.release()
    held.release()
    assert limiter.in_flight == 0
    with pytest.raises(ValueError):
        limiter.max_concurrent = 0


def test_raising_the_rate_grants_waiters_at_once():
    limiter = Limiter(rate=0.01)  # the next token is 100 s away
    limiter.try_acquire().release()
    call = Call(limiter.acquire, timeout=60)
    wait_until(lambda: limiter.waiting == 1)
    limiter.rate = 1000
    call.outcome().release()
    assert limiter.rate == 1000


def test_interrupted_acquire_takes_nothing(interrupter):
    limiter = Limiter(max_concurrent=1)
    held = limiter.acquire()
    shot = interrupter(0.2)
    with pytest.raises(Interrupted):
        limiter.acquire()
    assert time.monotonic() - shot.sent_at < 1.0
    assert (limiter.in_flight, limiter.waiting) == (1, 0)
    held.release()
    limiter.try_acquire().release()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_interrupts_acquire():
    import re

    from support import Child

    child = Child("""
import sys, time
import bpstream
limiter = bpstream.Limiter(max_concurrent=1)
held = limiter.acquire()
print("ready", flush=True)
try:
    limiter.acquire()
except KeyboardInterrupt:
    caught = time.monotonic()
else:
    sys.exit(3)
sent = float(sys.stdin.readline())
assert (limiter.in_flight, limiter.waiting) == (1, 0)
held.release()
limiter.try_acquire().release()
print(f"latency={caught - sent:.6f}", flush=True)
print("OK", flush=True)
""")
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


def test_stats():
    limiter = Limiter(max_concurrent=2)
    a = limiter.acquire()
    b = limiter.try_acquire()
    assert limiter.try_acquire() is None
    st = limiter.stats()
    assert st == {
        "granted": 2, "refused": 1, "timed_out": 0, "cancelled": 0, "released": 0,
        "in_flight": 2, "waiting": 0, "utilization": 1.0, "total_wait": 0.0, "wakeups": 0,
        "max_concurrent": 2, "rate": None, "burst": None, "tokens": 0.0,
    }
    a.release()
    b.release()
    assert limiter.stats()["released"] == 2


# ----------------------------------------------------------------------------- asyncio


def done_at_once(awaitable):
    iterator = awaitable.__await__()
    with pytest.raises(StopIteration) as stop:
        iterator.send(None)
    return stop.value.value


def test_aacquire_fast_path_and_async_with():
    limiter = Limiter(max_concurrent=1)
    token = done_at_once(limiter.aacquire())
    assert limiter.in_flight == 1
    token.release()

    async def main():
        async with limiter:
            assert limiter.in_flight == 1
        assert limiter.in_flight == 0
        async with await limiter.aacquire() as held:
            assert limiter.in_flight == 1
        assert limiter.in_flight == 0
        held.release()

    run(main())


def test_aacquire_waits_and_times_out():
    limiter = Limiter(max_concurrent=1)
    held = limiter.acquire()

    async def main():
        with pytest.raises(TimeoutError):
            await limiter.aacquire(timeout=0.05)
        task = asyncio.create_task(limiter.aacquire())
        await asyncio.sleep(0.02)
        assert not task.done() and limiter.waiting == 1
        held.release()
        token = await asyncio.wait_for(task, WITHIN)
        assert limiter.in_flight == 1
        token.release()

    run(main())
    st = limiter.stats()
    assert (st["timed_out"], st["in_flight"], st["waiting"]) == (1, 0, 0)


def test_a_cancelled_aacquire_takes_nothing():
    limiter = Limiter(max_concurrent=1)
    held = limiter.acquire()

    async def main():
        first = asyncio.create_task(limiter.aacquire())
        second = asyncio.create_task(limiter.aacquire())
        await asyncio.sleep(0.01)
        assert limiter.waiting == 2
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        held.release()
        token = await asyncio.wait_for(second, WITHIN)
        assert limiter.in_flight == 1
        token.release()
        assert limiter.in_flight == 0

    run(main())


def test_threads_and_tasks_share_one_fifo():
    limiter = Limiter(max_concurrent=1)
    held = limiter.acquire()
    order = []

    async def main():
        loop = asyncio.get_running_loop()

        async def task_waiter(name):
            token = await limiter.aacquire()
            order.append(name)
            await asyncio.sleep(0.001)
            token.release()

        def thread_waiter(name):
            token = limiter.acquire()
            order.append(name)
            time.sleep(0.001)
            token.release()

        tasks, threads = [], []
        for i in range(8):
            name = f"{'task' if i % 2 == 0 else 'thread'}{i}"
            if i % 2 == 0:
                tasks.append(asyncio.create_task(task_waiter(name)))
            else:
                thread = threading.Thread(target=thread_waiter, args=(name,), daemon=True)
                thread.start()
                threads.append(thread)
            deadline = time.monotonic() + WITHIN
            while limiter.waiting != i + 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.002)
        held.release()
        await asyncio.wait_for(asyncio.gather(*tasks), WITHIN)
        for thread in threads:
            await loop.run_in_executor(None, thread.join, WITHIN)

    run(main())
    assert order == [f"{'task' if i % 2 == 0 else 'thread'}{i}" for i in range(8)]
    assert limiter.in_flight == 0


def test_many_tasks_through_a_small_limiter():
    limiter = Limiter(max_concurrent=3)
    peak = 0

    async def worker():
        nonlocal peak
        async with limiter:
            peak = max(peak, limiter.in_flight)
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(worker() for _ in range(300)))

    run(main())
    assert peak == 3
    st = limiter.stats()
    assert (st["granted"], st["in_flight"], st["waiting"]) == (300, 0, 0)


# ----------------------------------------------------------------------------- C API


@pytest.fixture(scope="module")
def limiter_capi(tmp_path_factory):
    """python/tests/native/limiter_capi.c: native threads admitted through the capsule."""
    import importlib.util
    import os
    import subprocess
    import sysconfig

    import bpstream

    source = os.path.join(os.path.dirname(__file__), "native", "limiter_capi.c")
    out = tmp_path_factory.mktemp("limiter_capi")
    target = str(out / ("limiter_capi" + sysconfig.get_config_var("EXT_SUFFIX")))
    command = [os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O2", "-Wall", "-Wextra",
               "-I" + sysconfig.get_paths()["include"], "-I" + bpstream.get_include(),
               source, "-o", target, "-lpthread"]
    try:
        subprocess.run(command, check=True)
    except FileNotFoundError as exc:
        pytest.skip(f"no C compiler: {exc}")
    spec = importlib.util.spec_from_file_location("limiter_capi", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("timeout_ns", [-1, 0])
def test_native_threads_are_admitted_through_the_capsule(limiter_capi, timeout_ns):
    limiter = Limiter(max_concurrent=3)
    admitted, timed_out, peak = limiter_capi.run(limiter, 8, 2000, timeout_ns)
    assert (admitted, timed_out) == (16000, 0)
    assert 1 <= peak <= 3
    st = limiter.stats()
    assert (st["granted"], st["released"], st["in_flight"], st["waiting"]) == (16000, 16000, 0, 0)


def test_native_and_python_admissions_share_the_slots(limiter_capi):
    limiter = Limiter(max_concurrent=3)
    held = [limiter.acquire(), limiter.acquire()]
    admitted, timed_out, peak = limiter_capi.run(limiter, 4, 500, -1)
    assert (admitted, timed_out, peak) == (2000, 0, 1)  # one slot left for the natives
    for token in held:
        token.release()
    assert limiter.in_flight == 0


def test_native_acquire_times_out_taking_nothing(limiter_capi):
    limiter = Limiter(max_concurrent=1)
    held = limiter.acquire()
    admitted, timed_out, peak = limiter_capi.run(limiter, 2, 3, 10_000_000)
    assert (admitted, timed_out, peak) == (0, 6, 0)
    assert (limiter.in_flight, limiter.waiting, limiter.stats()["timed_out"]) == (1, 0, 6)
    held.release()


def test_the_capsule_refuses_what_is_not_a_limiter(limiter_capi):
    with pytest.raises(TypeError, match="Limiter"):
        limiter_capi.run(object(), 1, 1, -1)
    import bpstream

    with pytest.raises(TypeError):
        limiter_capi.run(bpstream.TokenBucket(1, 1), 1, 1, -1)


def test_aacquire_timeout_on_a_manual_clock_behind_a_held_slot():
    clock = ManualClock()
    limiter = Limiter(max_concurrent=1, clock=clock)
    held = limiter.acquire()

    async def main():
        task = asyncio.create_task(limiter.aacquire(timeout=0.5))
        await asyncio.sleep(0.05)
        assert not task.done()
        clock.advance(0.6)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(task, WITHIN)

    run(main())
    st = limiter.stats()
    assert (st["timed_out"], st["cancelled"], st["waiting"], st["in_flight"]) == (1, 0, 0, 1)
    held.release()


def test_blocking_acquire_timeout_is_on_the_limiters_clock():
    clock = ManualClock()
    limiter = Limiter(max_concurrent=1, clock=clock)
    held = limiter.acquire()
    call = Call(limiter.acquire, timeout=0.5)
    wait_until(lambda: limiter.waiting == 1)
    call.assert_blocked(0.3)  # real time: the manual clock stands still
    clock.advance(0.5)
    with pytest.raises(TimeoutError):
        call.outcome()
    assert (limiter.in_flight, limiter.waiting) == (1, 0)
    held.release()


def test_retry_after_counts_the_waiters_ahead():
    clock = ManualClock()
    limiter = Limiter(rate=10, clock=clock)
    held = limiter.try_acquire()
    assert limiter.retry_after() == pytest.approx(0.1, abs=1e-6)
    call = Call(limiter.acquire)
    wait_until(lambda: limiter.waiting == 1)
    assert limiter.retry_after() == pytest.approx(0.2, abs=1e-6)
    clock.advance(0.1)
    call.outcome().release()
    held.release()
    slots = Limiter(max_concurrent=1, clock=clock)
    token = slots.acquire()
    assert slots.retry_after() == math.inf
    token.release()


def test_async_waits_are_counted():
    """A waiting aacquire is no refusal (its first try is uncounted): it counts as its
    grant; a cancelled one counts as cancelled, a timed-out one as timed out."""
    limiter = Limiter(max_concurrent=1)
    held = limiter.acquire()

    async def main():
        waiter = asyncio.create_task(limiter.aacquire())
        cancelled = asyncio.create_task(limiter.aacquire())
        await asyncio.sleep(0.01)
        cancelled.cancel()
        with pytest.raises(TimeoutError):
            await limiter.aacquire(timeout=0.01)
        held.release()
        (await asyncio.wait_for(waiter, WITHIN)).release()

    run(main())
    st = limiter.stats()
    assert (st["granted"], st["refused"], st["cancelled"], st["timed_out"]) == (2, 0, 1, 1)
    assert (st["in_flight"], st["waiting"], st["released"]) == (0, 0, 2)


def test_uvloop_waits_and_wakes():
    uvloop = pytest.importorskip("uvloop")
    limiter = Limiter(max_concurrent=1)
    held = limiter.acquire()

    async def main():
        task = asyncio.create_task(limiter.aacquire())
        await asyncio.sleep(0.01)
        assert not task.done()
        threading.Timer(0.02, held.release).start()  # a release from another thread
        token = await asyncio.wait_for(task, WITHIN)
        token.release()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    assert (limiter.in_flight, limiter.waiting) == (0, 0)
