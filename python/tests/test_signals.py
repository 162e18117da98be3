"""Ctrl-C and other signals while a call is blocked.

Child interpreters get a real SIGINT while blocked in the main thread and must leave through
KeyboardInterrupt promptly (the spec promises 100 ms; we allow 1 s from signal to exception and
5 s overall), then prove that nothing was lost. In-process tests use SIGUSR1 with a handler that
raises `Interrupted`, so that a product bug cannot abort the pytest session itself.
"""

import re
import signal
import sys
import textwrap
import threading
import time

import pytest

import bpstream
from support import (
    WAKE_WITHIN,
    Child,
    Interrupted,
    Item,
    assert_stats,
    check_identity,
    drain,
    refcount_deltas,
    refcounts,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# The child's side: run a call that must block, print "ready" first, expect KeyboardInterrupt,
# then report how long after the parent's kill() the exception arrived (CLOCK_MONOTONIC is
# shared by every process, and the parent writes its send time on our stdin).
PRELUDE = """
import sys, time
import bpstream

def check_identity(st):
    assert st.produced == st.consumed + st.dropped + st.depth, st

def interrupted(call):
    try:
        print("ready", flush=True)
        result = call()
    except KeyboardInterrupt:
        caught = time.monotonic()
    else:
        print(f"returned {result!r}", flush=True)
        sys.exit(3)
    sent = float(sys.stdin.readline())
    print(f"latency={caught - sent:.6f}", flush=True)
"""

CHILDREN = {
    "get": """
        s = bpstream.BoundedStream(2)
        interrupted(s.get)
        st = s.stats()
        check_identity(st)
        assert (st.produced, st.consumed, st.depth) == (0, 0, 0), st
        assert s.put("after") is True and s.get_nowait() == "after"
        print("OK get", flush=True)
    """,
    "get-timeout": """
        s = bpstream.BoundedStream(2)
        interrupted(lambda: s.get(timeout=60))
        st = s.stats()
        check_identity(st)
        assert (st.produced, st.consumed, st.depth) == (0, 0, 0), st
        print("OK get-timeout", flush=True)
    """,
    "put": """
        class Item:
            pass

        s = bpstream.BoundedStream(1)
        s.put("first")
        item = Item()
        before = sys.getrefcount(item)
        interrupted(lambda: s.put(item))
        assert sys.getrefcount(item) == before, (sys.getrefcount(item), before)
        st = s.stats()
        check_identity(st)
        assert (st.produced, st.depth) == (1, 1), st
        assert s.get_nowait() == "first"
        try:
            s.get_nowait()
        except bpstream.Empty:
            pass
        else:
            raise AssertionError("the interrupted put stored its item")
        assert s.put(item) is True and s.get_nowait() is item
        print("OK put", flush=True)
    """,
    "for-loop": """
        s = bpstream.BoundedStream(4)
        s.put_many([1, 2])
        seen = []

        def loop():
            for x in s:
                seen.append(x)

        interrupted(loop)
        assert seen == [1, 2], seen
        st = s.stats()
        check_identity(st)
        assert (st.produced, st.consumed, st.depth) == (2, 2, 0), st
        s.put(3)
        assert next(iter(s)) == 3
        print("OK for-loop", flush=True)
    """,
    "queue-join": """
        q = bpstream.Queue()
        q.put(1)
        q.get()
        interrupted(q.join)
        assert q.stats().unfinished_tasks == 1
        q.task_done()
        q.join()
        print("OK queue-join", flush=True)
    """,
}


@pytest.mark.parametrize("name", sorted(CHILDREN))
def test_ctrl_c_interrupts_a_blocked_call(name):
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(CHILDREN[name])
    child = Child(code)
    try:
        child.wait_for_line("ready")
        time.sleep(0.3)  # let the child get into its wait
        sent = time.monotonic()
        child.send(f"{sent!r}\n")
        child.proc.send_signal(signal.SIGINT)
        returncode = child.wait(WAKE_WITHIN)
    finally:
        child.kill()
    out = "".join(child.stdout)
    assert returncode == 0, child.describe()
    latency = float(re.search(r"latency=([0-9.]+)", out).group(1))
    assert latency < 1.0, f"KeyboardInterrupt came {latency:.3f}s after SIGINT"
    assert f"OK {name}" in out, child.describe()


# ------------------------------------------------------------------ in-process, SIGUSR1


def interrupted(interrupter, s, call):
    """Run call in the main thread, expect Interrupted about 0.2 s later; return the latency."""
    # If the product never notices the signal, close the stream so the test fails, not hangs.
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
    latency = caught - shot.sent_at
    assert latency < 1.0, f"the handler's exception came {latency:.3f}s after the signal"
    return latency


def test_interrupted_get_takes_nothing(make_stream, interrupter):
    s = make_stream(2)
    interrupted(interrupter, s, s.get)
    waits = s.stats().consumer_waits
    assert waits in (0, 1)  # the cancelled wait may or may not be counted
    assert_stats(s, consumer_waits=waits)
    s.put("x")
    assert s.get_nowait() == "x"


def test_interrupted_put_leaves_the_item_with_the_caller(make_stream, interrupter):
    s = make_stream(1)
    s.put("first")
    item = Item()
    base = refcounts([item])
    interrupted(interrupter, s, lambda: s.put(item))
    assert refcounts([item]) == base
    assert drain(s) == ["first"]
    st = s.stats()
    check_identity(st)
    assert (st.produced, st.consumed, st.depth) == (1, 1, 0)


def test_interrupted_put_many_keeps_what_went_in(make_stream, interrupter):
    s = make_stream(2)
    items = [Item(i) for i in range(4)]
    base = refcounts(items)
    interrupted(interrupter, s, lambda: s.put_many(items))
    assert refcount_deltas(items, base) == [1, 1, 0, 0]
    assert drain(s) == items[:2]
    assert refcount_deltas(items, base) == [0, 0, 0, 0]


def test_interrupted_get_many_and_iteration(make_stream, interrupter):
    s = make_stream(4)
    interrupted(interrupter, s, lambda: s.get_many(3))
    s.put(1)
    seen = []

    def loop():
        for x in s:
            seen.append(x)

    interrupted(interrupter, s, loop)
    assert seen == [1]
    st = s.stats()
    check_identity(st)
    assert (st.produced, st.consumed, st.depth) == (1, 1, 0)


def test_interrupted_queue_join(interrupter):
    q = bpstream.Queue()
    q.put(1)
    q.get()
    interrupted(interrupter, q, q.join)
    q.task_done()
    q.join()


def test_signal_handler_runs_while_blocked_and_the_wait_goes_on(make_stream):
    """A handler that returns normally does not end the wait (like PEP 475)."""
    s = make_stream(2)
    handled = []
    main_ident = threading.main_thread().ident
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: handled.append(time.monotonic()))
    try:

        def trigger():
            signal.pthread_kill(main_ident, signal.SIGUSR1)
            deadline = time.monotonic() + WAKE_WITHIN
            while not handled and time.monotonic() < deadline:
                time.sleep(0.01)
            put_at.append(time.monotonic())
            s.put("x")

        put_at = []
        timer = threading.Timer(0.2, trigger)
        timer.start()
        rescue = threading.Timer(0.2 + 2 * WAKE_WITHIN, lambda: s.close(immediate=True))
        rescue.start()
        try:
            assert s.get() == "x"
        finally:
            rescue.cancel()
            timer.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert handled, "the handler never ran"
    assert handled[0] < put_at[0], "the handler only ran after the get returned"


def run_with_handler(s, handler, call):
    """Install `handler` for SIGUSR1, send it to the main thread 0.2 s into call(), and return
    call()'s result. A rescue timer closes the stream if nothing else ends the call."""
    main_ident = threading.main_thread().ident
    previous = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(0.2, signal.pthread_kill, (main_ident, signal.SIGUSR1))
    rescue = threading.Timer(0.2 + WAKE_WITHIN, lambda: s.close(immediate=True))
    try:
        timer.start()
        rescue.start()
        try:
            return call()
        finally:
            rescue.cancel()
            timer.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_handler_that_closes_the_stream_ends_a_for_loop(make_stream):
    """The SIGTERM-handler pattern: a handler closes the stream the main thread consumes."""
    s = make_stream(4)
    s.put_many([1, 2])
    seen = []

    def consume():
        for item in s:
            seen.append(item)
        return time.monotonic()

    start = time.monotonic()
    ended = run_with_handler(s, lambda signum, frame: s.close(), consume)
    assert seen == [1, 2]
    assert ended - start < 0.2 + WAKE_WITHIN, "the loop was ended by the rescue, not the handler"
    assert s.stats().dropped_on_close == 0


def test_handler_that_puts_an_item_wakes_the_get(make_stream):
    s = make_stream(4)
    got = run_with_handler(s, lambda signum, frame: s.put("from handler"), s.get)
    assert got == "from handler"
    assert s.stats().dropped_on_close == 0
