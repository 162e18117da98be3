"""bpstream.Queue is a drop-in for queue.Queue.

Most tests run the same script on both classes: the queue.Queue run proves the expectations are
the standard library's, the bpstream.Queue run checks the drop-in. Shutdown (Python 3.13
semantics) is compared where queue.Queue has it and checked on bpstream.Queue everywhere.
"""

import queue
import random
import threading

import pytest

import bpstream
from support import Call, assert_timed_out, do_blocking_test, finishes, timed_raise

HAS_SHUTDOWN = hasattr(queue.Queue, "shutdown")


@pytest.fixture(params=[queue.Queue, bpstream.Queue], ids=["queue.Queue", "bpstream.Queue"])
def Q(request):
    return request.param


@pytest.fixture(
    params=[
        pytest.param(
            (queue.Queue, getattr(queue, "ShutDown", None)),
            id="queue.Queue",
            marks=pytest.mark.skipif(not HAS_SHUTDOWN, reason="queue.Queue.shutdown is Python 3.13+"),
        ),
        pytest.param((bpstream.Queue, bpstream.ShutDown), id="bpstream.Queue"),
    ]
)
def SQ(request):
    """(queue class, its ShutDown exception) for the shutdown tests."""
    return request.param


def rescuer(q):
    """Unblocks a stuck bpstream.Queue call (queue.Queue calls in these tests never get stuck)."""
    return (lambda: q.shutdown(immediate=True)) if isinstance(q, bpstream.Queue) else None


# ----------------------------------------------------------------------- basic behaviour


def test_put_get_sizes(Q):
    q = Q(3)
    assert q.maxsize == 3
    assert (q.qsize(), q.empty(), q.full()) == (0, True, False)
    assert q.put(1) is None
    assert q.put(2, True, None) is None
    assert q.put_nowait(3) is None
    assert (q.qsize(), q.empty(), q.full()) == (3, False, True)
    with pytest.raises(queue.Full):
        q.put(4, block=False)
    with pytest.raises(queue.Full):
        q.put_nowait(4)
    with pytest.raises(queue.Full):
        q.put(4, timeout=0)
    assert [q.get(), q.get_nowait(), q.get(block=False)] == [1, 2, 3]
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0)
    assert (q.qsize(), q.empty(), q.full()) == (0, True, False)


def test_timeouts(Q):
    q = Q(1)
    elapsed, _ = timed_raise(queue.Empty, q.get, timeout=0.2)
    assert_timed_out(elapsed, 0.2)
    q.put("a")
    elapsed, _ = timed_raise(queue.Full, q.put, "b", True, 0.2)
    assert_timed_out(elapsed, 0.2)
    assert q.qsize() == 1


@pytest.mark.parametrize("maxsize", [0, -1])
def test_unbounded(Q, maxsize):
    q = Q(maxsize)
    for i in range(1000):
        q.put_nowait(i)
    assert (q.qsize(), q.full()) == (1000, False)
    assert [q.get_nowait() for _ in range(1000)] == list(range(1000))


def test_default_is_unbounded(Q):
    q = Q()
    assert q.maxsize == 0
    for i in range(100):
        q.put(i, block=False)
    assert not q.full()


def test_negative_timeout(Q):
    q = Q(2)
    q.put(1)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.put(2, timeout=-1)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.get(timeout=-1)
    assert q.qsize() == 1
    # Without blocking the timeout is ignored.
    q.put(2, block=False, timeout=-1)
    assert q.get(False, -1) == 1
    assert q.qsize() == 1


def test_get_blocks_until_put(Q):
    q = Q()
    assert do_blocking_test(q.get, lambda: q.put("x"), rescue=rescuer(q)) == "x"


def test_put_blocks_until_get(Q):
    q = Q(1)
    q.put("a")
    taken = []
    do_blocking_test(lambda: q.put("b"), lambda: taken.append(q.get()), rescue=rescuer(q))
    assert taken == ["a"] and q.get_nowait() == "b"


# --------------------------------------------------------------------- task_done / join


def test_join_returns_at_once_without_unfinished_tasks(Q):
    q = Q()
    finishes(q.join, rescue=rescuer(q))
    q.put(1)
    q.task_done()
    finishes(q.join, rescue=rescuer(q))


def test_join_blocks_until_every_task_is_done(Q):
    q = Q()
    q.put(1)
    q.put(2)
    q.get()
    q.get()
    joiner = Call(q.join)
    joiner.assert_blocked()
    q.task_done()
    joiner.assert_blocked()
    q.task_done()
    joiner.outcome()


def test_join_blocks_in_the_main_thread(Q):
    q = Q()
    q.put(1)
    q.get()
    do_blocking_test(q.join, q.task_done, rescue=rescuer(q))


def test_task_done_too_many_times(Q):
    q = Q()
    with pytest.raises(ValueError, match=r"task_done\(\) called too many times"):
        q.task_done()
    q.put(1)
    q.task_done()
    with pytest.raises(ValueError, match=r"task_done\(\) called too many times"):
        q.task_done()
    finishes(q.join, rescue=rescuer(q))


def test_worker_pattern_from_the_queue_docs(Q):
    q = Q(8)
    done = []

    def worker():
        while True:
            item = q.get()
            if item is None:
                q.task_done()
                return
            done.append(item)
            q.task_done()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    for i in range(200):
        q.put(i)
    q.put(None)
    finishes(q.join, rescue=rescuer(q))
    t.join(5)
    assert done == list(range(200))


# ----------------------------------------------------------------------------- maxsize


def test_maxsize_is_writable(Q):
    q = Q(1)
    q.put(1)
    assert q.full()
    q.maxsize = 2
    assert q.maxsize == 2 and not q.full()
    q.put_nowait(2)
    assert q.full()
    q.maxsize = 0  # unbounded
    assert not q.full()
    q.put_nowait(3)
    q.maxsize = 1  # below the size: everything is kept, nothing more fits
    assert q.qsize() == 3 and q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(4)
    assert q.get() == 1 and q.get() == 2
    assert q.full()
    assert q.get() == 3
    assert not q.full()
    q.put_nowait(5)
    assert q.get_nowait() == 5


@pytest.mark.parametrize("maxsize", [0, -1, -5])
def test_non_positive_maxsize_reads_back_as_given(Q, maxsize):
    q = Q(maxsize)
    assert q.maxsize == maxsize
    q.maxsize = 3
    q.maxsize = maxsize
    assert q.maxsize == maxsize and not q.full()


def test_growing_maxsize_wakes_a_blocked_putter():
    q = bpstream.Queue(1)
    q.put("a")
    do_blocking_test(lambda: q.put("b"), lambda: setattr(q, "maxsize", 2), rescue=rescuer(q))
    assert [q.get_nowait(), q.get_nowait()] == ["a", "b"]


# ------------------------------------------------------------------- differential script


def transcript(Q, seed, steps=3000):
    """Random non-blocking operations; the observable outcome of each, in order."""
    rng = random.Random(seed)
    q = Q(3)
    log = []
    for step in range(steps):
        op = rng.choice(["put", "put", "get", "get", "sizes", "task_done", "maxsize", "put0", "get0"])
        try:
            if op == "put":
                out = q.put_nowait(step)
            elif op == "put0":
                out = q.put(step, timeout=0)
            elif op == "get":
                out = q.get_nowait()
            elif op == "get0":
                out = q.get(True, 0)
            elif op == "sizes":
                out = (q.qsize(), q.empty(), q.full(), q.maxsize)
            elif op == "task_done":
                out = q.task_done()
            else:
                q.maxsize = rng.choice([0, 1, 2, 3, 5])
                out = None
        except queue.Full:
            out = "Full"
        except queue.Empty:
            out = "Empty"
        except ValueError as exc:
            out = f"ValueError: {exc}"
        log.append((op, out))
    return log


@pytest.mark.parametrize("seed", range(3))
def test_same_transcript_as_queue_queue(seed):
    assert transcript(bpstream.Queue, seed) == transcript(queue.Queue, seed)


# ------------------------------------------------------------------------- bpstream only


def test_exceptions_are_the_standard_ones():
    assert issubclass(bpstream.Full, queue.Full)
    assert issubclass(bpstream.Empty, queue.Empty)
    assert bpstream.ShutDown is bpstream.Closed
    if HAS_SHUTDOWN:
        assert issubclass(bpstream.Closed, queue.ShutDown)
    else:
        assert issubclass(bpstream.Closed, Exception)


def test_queue_is_a_bounded_stream():
    q = bpstream.Queue(4)
    assert isinstance(q, bpstream.BoundedStream)
    assert q.capacity == 4 and q.policy == "block"
    assert bpstream.Queue(0).stats().capacity is None


def test_policy_is_keyword_only():
    with pytest.raises(TypeError):
        bpstream.Queue(2, "drop_oldest")


def test_evicted_items_count_as_done():
    q = bpstream.Queue(2, policy="drop_oldest")
    for i in range(5):
        assert q.put(i, block=False) is None
    assert q.stats().unfinished_tasks == 2
    assert [q.get(), q.get()] == [3, 4]
    joiner = Call(q.join)
    joiner.assert_blocked()
    q.task_done()
    q.task_done()
    joiner.outcome()
    with pytest.raises(ValueError):
        q.task_done()


def test_cleared_items_count_as_done():
    q = bpstream.Queue(2, policy="drop_all")
    for i in range(3):
        q.put(i)
    assert q.stats().unfinished_tasks == 1
    assert q.get() == 2
    q.task_done()
    finishes(q.join, rescue=rescuer(q))


# ----------------------------------------------------------------------------- shutdown


def test_shutdown_lets_consumers_drain(SQ):
    Q, ShutDown = SQ
    q = Q(4)
    q.put(1)
    q.put(2)
    assert q.is_shutdown is False
    q.shutdown()
    assert q.is_shutdown is True
    with pytest.raises(ShutDown):
        q.put(3)
    with pytest.raises(ShutDown):
        q.put(3, block=False)
    assert q.qsize() == 2
    assert q.get() == 1
    assert q.get(block=False) == 2
    for kwargs in ({}, {"block": False}, {"timeout": 30}):
        with pytest.raises(ShutDown):
            finishes(q.get, rescue=rescuer(q), **kwargs)


def test_shutdown_wakes_a_blocked_getter(SQ):
    Q, ShutDown = SQ
    q = Q()
    with pytest.raises(ShutDown):
        do_blocking_test(q.get, q.shutdown, rescue=rescuer(q))


def test_shutdown_wakes_a_blocked_putter(SQ):
    Q, ShutDown = SQ
    q = Q(1)
    q.put(1)
    with pytest.raises(ShutDown):
        do_blocking_test(lambda: q.put(2), q.shutdown, rescue=rescuer(q))
    assert q.get() == 1


def test_immediate_shutdown_discards_and_releases_join(SQ):
    Q, ShutDown = SQ
    q = Q(4)
    for i in range(3):
        q.put(i)
    do_blocking_test(q.join, lambda: q.shutdown(immediate=True), rescue=rescuer(q))
    assert q.qsize() == 0 and q.is_shutdown
    with pytest.raises(ShutDown):
        q.get(block=False)
    with pytest.raises(ValueError):
        q.task_done()


def test_plain_shutdown_does_not_release_join(SQ):
    Q, ShutDown = SQ
    q = Q()
    q.put(1)
    joiner = Call(q.join)
    joiner.assert_blocked()
    q.shutdown()
    joiner.assert_blocked()
    assert q.get() == 1
    q.task_done()
    joiner.outcome()


def test_items_taken_but_not_done_still_hold_join(SQ):
    Q, ShutDown = SQ
    q = Q()
    q.put(1)
    q.put(2)
    assert q.get() == 1
    q.shutdown(immediate=True)  # discards 2 and its task; 1 is still being worked on
    joiner = Call(q.join)
    joiner.assert_blocked()
    q.task_done()
    joiner.outcome()


def test_shutdown_twice_then_immediate(SQ):
    Q, ShutDown = SQ
    q = Q()
    q.put(1)
    q.put(2)
    q.shutdown()
    q.shutdown()
    assert q.qsize() == 2
    q.shutdown(immediate=True)
    assert q.qsize() == 0
    finishes(q.join, rescue=rescuer(q))


def test_immediate_shutdown_counts_discards():
    q = bpstream.Queue(4)
    q.put_nowait("a")
    q.put_nowait("b")
    q.shutdown(immediate=True)
    st = q.stats()
    assert (st.dropped_on_close, st.depth, st.unfinished_tasks, st.closed) == (2, 0, 0, True)
    assert q.closed is True


# ------------------------------------------- drop-in details (issue 7): timeouts, shutdown


@pytest.mark.parametrize("maxsize", [0, -1])
def test_unbounded_put_ignores_the_timeout(Q, maxsize):
    """queue.Queue.put reads the timeout only when maxsize > 0 (it never waits otherwise)."""
    q = Q(maxsize)
    assert q.put(1, timeout=-1) is None
    assert q.put(2, True, -0.5) is None
    assert q.put(3, block=False, timeout=-1) is None
    assert q.put(4, timeout="not a number") is None
    assert [q.get_nowait() for _ in range(4)] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.get(timeout=-1)      # get checks it whatever the maxsize


def test_bounded_put_checks_the_timeout_only_when_blocking(Q):
    q = Q(2)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.put(1, timeout=-1)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.put(1, True, -1)
    assert q.qsize() == 0
    q.put(1, block=False, timeout=-1)
    q.put(2, False, -1)
    with pytest.raises(queue.Full):
        q.put(3, block=False, timeout=-1)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.get(timeout=-1)      # items there: the timeout is still checked
    assert q.get(block=False, timeout=-1) == 1


@pytest.mark.parametrize("maxsize", [0, 2])
def test_shutdown_is_checked_before_the_timeout(SQ, maxsize):
    """3.13: put checks shutdown first; get checks "shut down and empty" first."""
    Q, ShutDown = SQ
    q = Q(maxsize)
    q.put(1)
    q.shutdown()
    for args, kwargs in [((), {"timeout": -1}), ((True, -1), {}), ((False, -1), {}),
                         ((), {"block": True, "timeout": -0.5})]:
        with pytest.raises(ShutDown):
            q.put(2, *args, **kwargs)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.get(timeout=-1)      # not drained yet: the timeout is checked, nothing taken
    assert q.qsize() == 1
    assert q.get() == 1
    for args, kwargs in [((), {"timeout": -1}), ((True, -1), {}), ((False, -1), {})]:
        with pytest.raises(ShutDown):
            q.get(*args, **kwargs)


def test_immediate_shutdown_then_negative_timeouts(SQ):
    Q, ShutDown = SQ
    q = Q(3)
    q.put(1)
    q.shutdown(immediate=True)
    with pytest.raises(ShutDown):
        q.put(2, timeout=-1)
    with pytest.raises(ShutDown):
        q.get(timeout=-1)


# ------------------------------------------------------------------- unfinished_tasks


def test_unfinished_tasks_attribute(Q):
    q = Q(3)
    assert q.unfinished_tasks == 0
    q.put(1)
    q.put(2)
    assert q.unfinished_tasks == 2
    assert q.get() == 1
    assert q.unfinished_tasks == 2      # a get does not finish a task
    q.task_done()
    assert q.unfinished_tasks == 1
    q.task_done()
    assert q.unfinished_tasks == 0
    with pytest.raises(ValueError):
        q.task_done()
    assert q.unfinished_tasks == 0


def test_unfinished_tasks_after_immediate_shutdown(SQ):
    Q, ShutDown = SQ
    q = Q()
    for i in range(3):
        q.put(i)
    assert q.get() == 0
    q.shutdown(immediate=True)          # 1 and 2 discarded: done; 0 is still being worked on
    assert q.unfinished_tasks == 1


def test_unfinished_tasks_counts_drops_as_done_and_matches_stats():
    q = bpstream.Queue(2, policy="drop_oldest")
    for i in range(5):
        q.put(i)                        # 3 evicted: done
    assert q.unfinished_tasks == 2 == q.stats().unfinished_tasks
    q = bpstream.Queue(2, policy="drop_newest")
    for i in range(5):
        q.put(i)                        # 3 shed: never became tasks
    assert q.unfinished_tasks == 2 == q.stats().unfinished_tasks


def test_unfinished_tasks_is_read_only():
    """queue.Queue's own methods are what write it, under a mutex bpstream.Queue does not
    have; task_done() lowers it."""
    q = bpstream.Queue()
    q.put(1)
    with pytest.raises(AttributeError):
        q.unfinished_tasks = 0
    with pytest.raises(AttributeError):
        del q.unfinished_tasks
    assert q.unfinished_tasks == 1
    assert "task_done" in type(q).unfinished_tasks.__doc__
