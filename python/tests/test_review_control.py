"""Adversarial review of the rate controllers, ManualClock and Limiter/Token: each test
here failed before the fix it names (see the commit that added it)."""

import os
import textwrap

import pytest

import bpstream
from support import run_python


def run_child_script(code, timeout=45):
    proc = run_python(textwrap.dedent(code), timeout=timeout)
    assert proc.returncode == 0, f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


# --- fork while an asyncio task waits ---------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("kind", ["limiter", "bucket"])
def test_a_child_forked_while_a_task_waits_is_not_blocked_by_the_parents_ticket(kind):
    """The main thread's event loop waits in aacquire; another thread forks. In the child
    that loop never runs again, so its ticket must not stay in line: the child's waiting
    count is 0 and it is admitted at once when permits are there (before: waiting 1,
    try_acquire refused forever, acquire timed out)."""
    out = run_child_script(f"""
        import asyncio, os, threading, time, bpstream
        kind = {kind!r}
        if kind == "limiter":
            ctl = bpstream.Limiter(max_concurrent=1)
            held = ctl.acquire()
            free = held.release
        else:
            clock = bpstream.ManualClock()
            ctl = bpstream.TokenBucket(1, 1, clock=clock)
            assert ctl.try_acquire()
            free = lambda: clock.advance(1)
        def waiting():
            return ctl.waiting if kind == "limiter" else ctl.stats()["waiting"]
        def forker():
            while waiting() != 1:
                time.sleep(0.01)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    w = waiting()
                    free()
                    got = ctl.try_acquire()
                    cancelled = ctl.stats()["cancelled"]
                    print("child", w, bool(got), cancelled, flush=True)
                    code = 0
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            free()
        async def main():
            t = threading.Thread(target=forker)
            t.start()
            got = await ctl.aacquire(timeout=20)
            if kind == "limiter":
                got.release()
            await asyncio.to_thread(t.join)
            print("parent", waiting(), flush=True)
        asyncio.run(main())
    """)
    assert "child 0 True 1" in out, out
    assert "parent 0" in out, out


# --- bool is not a number of permits, slots or a rate -----------------------------------

@pytest.mark.parametrize("make", [
    lambda: bpstream.Limiter(max_concurrent=True),
    lambda: bpstream.Limiter(rate=True),
    lambda: bpstream.Limiter(rate=1, burst=True),
    lambda: bpstream.TokenBucket(True, 10),
    lambda: bpstream.TokenBucket(10, True),
    lambda: bpstream.SlidingWindow(True, 1.0),
    lambda: bpstream.SlidingWindow(5, True),
    lambda: bpstream.AIMD(True),
])
def test_constructors_refuse_bool(make):
    with pytest.raises(TypeError):
        make()


def test_setters_and_calls_refuse_bool():
    limiter = bpstream.Limiter(max_concurrent=2, rate=10)
    with pytest.raises(TypeError):
        limiter.max_concurrent = True
    with pytest.raises(TypeError):
        limiter.rate = True
    assert (limiter.max_concurrent, limiter.rate) == (2, 10.0)
    for controller in (bpstream.TokenBucket(10, 5), bpstream.SlidingWindow(5, 1.0),
                       bpstream.AIMD(10)):
        with pytest.raises(TypeError):
            controller.rate = True
        with pytest.raises(TypeError):
            controller.try_acquire(True)
        with pytest.raises(TypeError):
            controller.retry_after(False)
        assert controller.stats()["granted"] == 0
    with pytest.raises(TypeError):
        bpstream.ManualClock().advance(True)


# --- an event loop closed while a task waits --------------------------------------------

def test_a_loop_closed_while_a_task_waits_does_not_hold_the_line_forever():
    """loop.close() with a task still waiting in aacquire (no asyncio.run to cancel it):
    its ticket must leave the line (counted as cancelled) and the loop must be freed, at
    the latest when any later async wait starts (before: waiting stayed 1, try_acquire
    was refused forever, and the closed loop was kept alive through the ticket's future)."""
    import asyncio
    import gc
    import weakref

    limiter = bpstream.Limiter(max_concurrent=1)
    held = limiter.acquire()
    loop = asyncio.new_event_loop()
    task = loop.create_task(limiter.aacquire())
    loop.run_until_complete(asyncio.sleep(0.05))
    assert limiter.waiting == 1
    loop.close()
    loop_ref = weakref.ref(loop)
    del task, loop

    other = bpstream.Limiter(max_concurrent=1)
    other_held = other.acquire()

    async def a_later_wait():
        with pytest.raises(TimeoutError):
            await other.aacquire(timeout=0.01)

    asyncio.run(a_later_wait())
    other_held.release()
    gc.collect()
    assert limiter.waiting == 0
    assert limiter.stats()["cancelled"] == 1
    held.release()
    token = limiter.try_acquire()
    assert token is not None
    token.release()
    assert limiter.stats()["in_flight"] == 0
    assert loop_ref() is None


@pytest.mark.parametrize("kind", ["limiter", "bucket"])
def test_a_blocking_acquire_is_not_stuck_behind_a_closed_loops_ticket(kind):
    """The same, with only a thread left to wait: it must not wait behind the dead ticket
    (before: acquire() timed out with the permits there; without a timeout it hung)."""
    import asyncio

    if kind == "limiter":
        ctl = bpstream.Limiter(max_concurrent=1)
        held = ctl.acquire()
        free = held.release
    else:  # the waiter's token is due 0.2 s from now, long after its loop is closed
        ctl = bpstream.TokenBucket(5, 1)
        assert ctl.try_acquire()
        free = lambda: None  # noqa: E731
    loop = asyncio.new_event_loop()
    task = loop.create_task(ctl.aacquire())
    loop.run_until_complete(asyncio.sleep(0.05))
    assert ctl.stats()["waiting"] == 1
    loop.close()
    del task, loop
    free()
    got = ctl.acquire(timeout=2)
    if kind == "limiter":
        got.release()
    stats = ctl.stats()
    assert (stats["waiting"], stats["cancelled"], stats["timed_out"]) == (0, 1, 0)


# --- n by keyword, as the spec writes it ------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda clock: bpstream.TokenBucket(1, 5, clock=clock),
    lambda clock: bpstream.SlidingWindow(5, 1.0, clock=clock),
])
def test_try_acquire_and_retry_after_take_n_by_keyword(make):
    """try_acquire(n=1) and retry_after(n=1), like acquire(n=1): before, n= was a
    TypeError ("takes no keyword arguments") on these two only."""
    controller = make(bpstream.ManualClock())
    assert controller.try_acquire(n=3) is True
    assert controller.try_acquire(n=3) is False
    assert controller.retry_after(n=3) > 0
    assert controller.retry_after(n=2) == 0.0
    assert controller.stats()["granted"] == 1
    with pytest.raises(TypeError):
        controller.try_acquire(m=1)
    with pytest.raises(TypeError):
        controller.retry_after(1, n=1)


# --- AIMD's parameter errors name the values --------------------------------------------

@pytest.mark.parametrize("kwargs, expected", [
    (dict(initial=100, minimum=0), "got 0"),
    (dict(initial=100, minimum=10, maximum=5), "maximum (5) must be at least minimum (10)"),
    (dict(initial=0.5), "initial must be between minimum (1) and maximum (inf), got 0.5"),
    (dict(initial=100, increase=-2), "got -2"),
    (dict(initial=100, decrease=1.5), "got 1.5"),
])
def test_aimd_parameter_errors_show_the_values(kwargs, expected):
    """Before: the messages read "got %g" (PyErr_Format has no %g)."""
    initial = kwargs.pop("initial")
    with pytest.raises(ValueError) as info:
        bpstream.AIMD(initial, **kwargs)
    assert expected in str(info.value)
    assert "%g" not in str(info.value)


# --- a sliding window's log is per grant, not per permit --------------------------------

def test_a_huge_sliding_window_grant_does_not_allocate_per_permit():
    """SlidingWindow(2**31, 1.0).try_acquire(2**31) aborted the process (16 GiB asked:
    one logged timestamp per permit). Run in a child: the failure is a crash."""
    out = run_child_script("""
        import bpstream
        clock = bpstream.ManualClock()
        window = bpstream.SlidingWindow(2**31, 1.0, clock=clock)
        assert window.try_acquire(2**31)
        assert not window.try_acquire()
        assert window.retry_after() == 1.0
        clock.advance(1)
        assert window.try_acquire(2**31)
        print("ok", window.stats()["granted"])
    """)
    assert "ok 2" in out


# --- a waiting aacquire whose n the limit was lowered below -----------------------------

def test_aacquire_whose_n_becomes_impossible_says_why_like_acquire():
    """limit lowered below a waiting task's n: the task gets the same ValueError as a
    blocking acquire ("n=4 can never be granted: ..."), not "invalid argument"."""
    import asyncio

    clock = bpstream.ManualClock()
    window = bpstream.SlidingWindow(5, 1.0, clock=clock)
    assert window.try_acquire(5)

    async def main():
        task = asyncio.ensure_future(window.aacquire(4))
        await asyncio.sleep(0.05)
        assert window.stats()["waiting"] == 1
        window.limit = 2
        with pytest.raises(ValueError, match="n=4 can never be granted"):
            await asyncio.wait_for(task, 5)

    asyncio.run(main())
    stats = window.stats()
    assert (stats["waiting"], stats["granted"], stats["cancelled"]) == (0, 1, 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_threads_wait_counts_only_what_it_has():
    """(Held already; kept as a guard.) Threads of the parent waiting in acquire are not
    counted as waiting in the child; a slot held through a Token the child has is still
    in flight there and comes back when the child releases it."""
    out = run_child_script("""
        import os, threading, time, bpstream
        limiter = bpstream.Limiter(max_concurrent=1)
        held = limiter.acquire()
        waiter = threading.Thread(target=lambda: limiter.acquire(timeout=20).release())
        waiter.start()
        while limiter.waiting != 1:
            time.sleep(0.01)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                before = (limiter.waiting, limiter.in_flight)
                held.release()
                token = limiter.acquire(timeout=5)
                token.release()
                s = limiter.stats()
                print("child", before, s["in_flight"], s["waiting"], flush=True)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        held.release()
        waiter.join()
        s = limiter.stats()
        print("parent", s["in_flight"], s["waiting"], s["granted"], flush=True)
    """)
    assert "child (0, 1) 0 0" in out, out
    assert "parent 0 0 2" in out, out
