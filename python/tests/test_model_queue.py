"""Model-based test: bpstream.Queue against queue.Queue with Python 3.13's shutdown.

`Reference` is the standard library's queue.Queue (its own put/get/task_done bookkeeping,
on this Python), given what 3.13 added, as Lib/queue.py of 3.13 does it: shutdown first in
put (ShutDown whatever the arguments), "shut down and empty" first in get, the timeout
checked only when block is true (and, for put, only when maxsize > 0), and
shutdown(immediate=True) emptying the queue and counting each discarded item as done
(never below 0). For the policies only bpstream.Queue has, it does on a full queue what the
README's policy table says, under the same lock: 'drop_oldest' evicts the oldest item and
'drop_all' clears them all (each counts as done), 'drop_newest' discards the new item
(put returns None, nothing to be done), 'reject' raises Full at once.

A hypothesis state machine drives both side by side: every call's result or exception
(ValueError messages included) is compared, then qsize(), empty(), full(),
unfinished_tasks, maxsize and is_shutdown; maxsize 0, negative, 1, small, and above the
read-ahead batch (256), and writable. bpstream.Queue is also a BoundedStream, so iteration
(with its read-ahead) is driven too, where the reference answers as get() would.
As in test_model_stream.py a step is a burst of calls made back to back, and nothing may
wait: a call that would wait in the reference is made with timeout=0 instead.
"""

import queue
import sys

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

import bpstream

POLICIES = ["block", "drop_oldest", "drop_newest", "reject", "drop_all"]
MAXSIZES = [0, -1, 1, 3, 16, 1100]
TIMEOUT_MESSAGE = "'timeout' must be a non-negative number"

SETTINGS = settings(
    max_examples=60,           # per policy: 300 programs in all
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    report_multiple_bugs=False,
)


class ShutDown(Exception):
    """3.13's queue.ShutDown, for the reference on any Python."""


class WouldWait(AssertionError):
    """The machine asked the reference for a call that would wait: a bug of the test."""


class Reference(queue.Queue):
    """queue.Queue plus Python 3.13's shutdown, plus bpstream's overflow policies."""

    def __init__(self, maxsize=0, policy="block"):
        super().__init__(maxsize)
        self.policy = policy
        self.is_shutdown = False

    def _full(self):
        return 0 < self.maxsize <= self._qsize()

    def _finish(self, count):
        self.unfinished_tasks = max(0, self.unfinished_tasks - count)

    def put(self, item, block=True, timeout=None):
        with self.not_full:
            if self.is_shutdown:
                raise ShutDown
            if self.maxsize > 0 and block and timeout is not None and timeout < 0:
                raise ValueError(TIMEOUT_MESSAGE)
            if self._full():
                if self.policy == "block":
                    if block and (timeout is None or timeout > 0):
                        raise WouldWait("put would wait")
                    raise queue.Full
                if self.policy == "reject":
                    raise queue.Full
                if self.policy == "drop_newest":
                    return None
                if self.policy == "drop_oldest":
                    self._get()
                    self._finish(1)
                else:  # drop_all
                    cleared = self._qsize()
                    self.queue.clear()
                    self._finish(cleared)
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()

    def get(self, block=True, timeout=None):
        with self.not_empty:
            if self.is_shutdown and not self._qsize():
                raise ShutDown
            if block and timeout is not None and timeout < 0:
                raise ValueError(TIMEOUT_MESSAGE)
            if not self._qsize():
                if block and (timeout is None or timeout > 0):
                    raise WouldWait("get would wait")
                raise queue.Empty
            item = self._get()
            self.not_full.notify()
            return item

    def shutdown(self, immediate=False):
        with self.mutex:
            self.is_shutdown = True
            if immediate:
                while self._qsize():
                    self._get()
                    if self.unfinished_tasks > 0:
                        self.unfinished_tasks -= 1
                self.all_tasks_done.notify_all()
            self.not_empty.notify_all()
            self.not_full.notify_all()

    def would_wait_put(self, block, timeout):
        return (self.policy == "block" and not self.is_shutdown and self._full() and block
                and (timeout is None or timeout > 0))

    def would_wait_get(self, block, timeout):
        return (not self._qsize() and not self.is_shutdown and block
                and (timeout is None or timeout > 0))


def outcome(call, *args, **kwargs):
    """("ok", result) or ("raise", kind, detail): exceptions compared by what a user catches."""
    try:
        return ("ok", call(*args, **kwargs))
    except StopIteration:
        return ("raise", "StopIteration", None)
    except (ShutDown, bpstream.ShutDown):
        return ("raise", "ShutDown", None)
    except queue.Full:
        return ("raise", "Full", None)
    except queue.Empty:
        return ("raise", "Empty", None)
    except ValueError as exc:
        return ("raise", "ValueError", str(exc))


# Positional and keyword forms of block/timeout, as callers write them. OMIT: not passed.
OMIT = "omit"
BLOCKS = [OMIT, True, False]
TIMEOUTS = [OMIT, None, 0, 0.0, 0.5, -1, -0.5]

ARGS = {
    "put": [st.sampled_from(BLOCKS), st.sampled_from(TIMEOUTS), st.booleans()],
    "put_nowait": [],
    "get": [st.sampled_from(BLOCKS), st.sampled_from(TIMEOUTS), st.booleans()],
    "get_nowait": [],
    "task_done": [],
    "join": [],
    "set_maxsize": [st.sampled_from([0, -1, 1, 2, 3, 16, 300])],
    "iter": [],
    "next": [st.integers(0, 2)],
    "del_iter": [st.integers(0, 2)],
    "shutdown": [st.sampled_from([OMIT, False, True])],
    "observe": [],
}
WEIGHTS = {"put": 24, "put_nowait": 6, "get": 16, "get_nowait": 6, "task_done": 10,
           "join": 3, "set_maxsize": 3, "iter": 6, "next": 14, "del_iter": 4,
           "shutdown": 1, "observe": 7}
OPS = st.one_of([st.tuples(st.just(name), *ARGS[name])
                 for name, weight in WEIGHTS.items() for _ in range(weight)])


def call_args(block, timeout, keywords):
    """(args, kwargs) for put(item, ...) / get(...) with these block and timeout."""
    if keywords:
        kwargs = {}
        if block is not OMIT:
            kwargs["block"] = block
        if timeout is not OMIT:
            kwargs["timeout"] = timeout
        return (), kwargs
    if timeout is not OMIT:
        return (True if block is OMIT else block, timeout), {}
    return (() if block is OMIT else (block,)), {}


class QueueMachine(RuleBasedStateMachine):
    policy = None

    def __init__(self):
        super().__init__()
        self.q = self.ref = None
        self.iterators = []
        self.counter = 0
        self.passed = False

    @initialize(maxsize=st.sampled_from(MAXSIZES), pass_policy=st.booleans())
    def create(self, maxsize, pass_policy):
        if self.policy == "block" and not pass_policy:
            self.q = bpstream.Queue(maxsize)
        else:
            self.q = bpstream.Queue(maxsize, policy=self.policy)
        self.ref = Reference(maxsize, self.policy)
        self.observe()
        self.passed = True

    def teardown(self):
        """After a program that passed: end every loop, shut down and drain both."""
        self.iterators.clear()
        if self.q is None:
            return
        if self.passed:
            self.observe()
            self.compare("shutdown()", "shutdown")
            while self.ref.qsize():
                self.compare("get_nowait()", "get_nowait")
            self.compare("get_nowait()", "get_nowait")   # ShutDown in both
            self.observe()
        self.q.shutdown(immediate=True)

    def observe(self):
        q, ref = self.q, self.ref
        actual = (q.qsize(), q.empty(), q.full(), q.unfinished_tasks, q.maxsize, q.is_shutdown)
        expected = (ref.qsize(), ref.empty(), ref.full(), ref.unfinished_tasks, ref.maxsize,
                    ref.is_shutdown)
        assert actual == expected, (
            "(qsize, empty, full, unfinished_tasks, maxsize, is_shutdown): "
            f"bpstream.Queue {actual}, reference {expected}")

    def compare(self, what, method, *args, **kwargs):
        expected = outcome(getattr(self.ref, method), *args, **kwargs)
        actual = outcome(getattr(self.q, method), *args, **kwargs)
        assert actual == expected, f"{what}: bpstream.Queue {actual!r}, reference {expected!r}"

    def do_put(self, block, timeout, keywords):
        if self.ref.would_wait_put(True if block is OMIT else block,
                                   None if timeout is OMIT else timeout):
            timeout = 0
        self.counter += 1
        args, kwargs = call_args(block, timeout, keywords)
        self.compare(f"put({self.counter}, *{args}, **{kwargs})", "put", self.counter,
                     *args, **kwargs)

    def do_get(self, block, timeout, keywords):
        if self.ref.would_wait_get(True if block is OMIT else block,
                                   None if timeout is OMIT else timeout):
            timeout = 0
        args, kwargs = call_args(block, timeout, keywords)
        self.compare(f"get(*{args}, **{kwargs})", "get", *args, **kwargs)

    def do_next(self, index):
        ref = self.ref
        if not self.iterators or (not ref.qsize() and not ref.is_shutdown):
            return   # no loop, or it would wait forever
        it = self.iterators[index % len(self.iterators)]
        expected = outcome(ref.get_nowait)
        if expected[1] == "ShutDown":
            expected = ("raise", "StopIteration", None)
        actual = outcome(next, it)
        assert actual == expected, f"next(it): bpstream.Queue {actual!r}, reference {expected!r}"

    @rule(ops=st.lists(OPS, min_size=1, max_size=6))
    def burst(self, ops):
        self.passed = False
        for op in ops:
            name, args = op[0], op[1:]
            if name == "put":
                self.do_put(*args)
            elif name == "put_nowait":
                self.counter += 1
                self.compare(f"put_nowait({self.counter})", "put_nowait", self.counter)
            elif name == "get":
                self.do_get(*args)
            elif name == "get_nowait":
                self.compare("get_nowait()", "get_nowait")
            elif name == "task_done":
                self.compare("task_done()", "task_done")
            elif name == "join":
                if self.ref.unfinished_tasks == 0:   # else it would wait
                    self.compare("join()", "join")
            elif name == "set_maxsize":
                self.q.maxsize = self.ref.maxsize = args[0]
            elif name == "iter":
                if len(self.iterators) < 3:
                    self.iterators.append(iter(self.q))
            elif name == "next":
                self.do_next(*args)
            elif name == "del_iter":
                if self.iterators:
                    del self.iterators[args[0] % len(self.iterators)]
            elif name == "shutdown":
                if args[0] is OMIT:
                    self.compare("shutdown()", "shutdown")
                else:
                    self.compare(f"shutdown(immediate={args[0]})", "shutdown",
                                 immediate=args[0])
            else:
                self.observe()
        self.observe()
        self.passed = True


@pytest.fixture(autouse=True)
def hang_guard():
    """Overrides conftest's 60 s hang guard: shrinking a failure can take minutes here."""
    import faulthandler

    report = getattr(sys.modules.get("conftest"), "_hang_report", None)
    if report is None:
        yield
        return
    faulthandler.dump_traceback_later(600, exit=True, file=report)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.mark.parametrize("policy", POLICIES)
def test_queue_matches_queue_queue_with_313_shutdown(policy):
    machine = type(f"QueueMachine_{policy}", (QueueMachine,), {"policy": policy})
    run_state_machine_as_test(machine, settings=SETTINGS)


def test_reference_is_313_queue_where_there_is_one():
    """On 3.13+ the reference must agree with the real thing on the shutdown rules."""
    if not hasattr(queue.Queue, "shutdown"):
        pytest.skip("queue.Queue.shutdown is Python 3.13+")
    for make in (queue.Queue, Reference):
        q = make(2)
        q.put(1)
        q.shutdown()
        with pytest.raises((queue.ShutDown, ShutDown)):
            q.put(2, timeout=-1)
        with pytest.raises(ValueError):
            q.get(timeout=-1)          # not empty yet: the timeout is checked
        assert q.get() == 1
        with pytest.raises((queue.ShutDown, ShutDown)):
            q.get(timeout=-1)          # shut down and empty: ShutDown first
        assert q.unfinished_tasks == 1


# ------------------------------------------------- regressions the model found (issue 7, §6)


def test_drop_all_clears_read_ahead_items_when_maxsize_shrank():
    """Shrunk from the machine: the whole depth in the read-ahead, the bound lowered under
    it; a put must clear every undelivered item and store the new one (drop_all never sheds)."""
    q = bpstream.Queue(policy="drop_all")
    for i in (1, 2, 3):
        q.put(i)
    it = iter(q)
    assert next(it) == 1           # the loop has read ahead 2 and 3
    q.maxsize = 1
    q.put(4)
    assert (q.qsize(), q.unfinished_tasks) == (1, 2)   # 1 (not done yet) and 4
    assert q.get_nowait() == 4
    st = q.stats()
    assert (st.dropped_cleared, st.dropped_shed) == (2, 0)
