"""Helpers shared by the bpstream tests: payload objects, stats checks, blocking probes,
and a runner for child interpreters.

Every time bound here is generous on purpose: a slow, loaded CI machine must never fail a
correct product. The suite checks that things happen (a call blocked, a call woke, a timeout
was not cut short), never how fast.
"""

from __future__ import annotations

import gc
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time

import bpstream

# How long a call must stay in flight before we accept that it is blocked.
BLOCK_PROBE = 0.1
# How long a call that was just unblocked may take to return (or a child to exit).
WAKE_WITHIN = 5.0
# Clock rounding tolerated when checking that a timeout was not cut short.
TIMEOUT_SLACK = 0.01

# The integer counters of bpstream.Stats. Rates, window and wait seconds vary with time and
# are checked separately.
COUNTERS = (
    "produced",
    "consumed",
    "dropped",
    "dropped_shed",
    "dropped_evicted",
    "dropped_cleared",
    "dropped_on_close",
    "rejected",
    "depth",
    "peak_depth",
    "backpressure_events",
    "producer_waits",
    "consumer_waits",
    "unfinished_tasks",
)
DROP_REASONS = ("dropped_shed", "dropped_evicted", "dropped_cleared", "dropped_on_close")
POLICY_NAMES = ("block", "drop_oldest", "drop_newest", "reject", "drop_all")


class Interrupted(Exception):
    """Raised by the tests' SIGUSR1 handler (see the `interrupter` fixture)."""


class Item:
    """A payload that can be weakly referenced and has no __dict__ (no hidden references)."""

    __slots__ = ("n", "__weakref__")

    def __init__(self, n=0):
        self.n = n

    def __repr__(self):
        return f"Item({self.n})"


def refcounts(items):
    """sys.getrefcount of each item. Indexing, not zip(): a zip iterator keeps its last tuple
    (and so the current item) alive, which would add one to every count."""
    gc.collect()  # drop reference cycles through tracebacks of exceptions just caught
    return [sys.getrefcount(items[i]) for i in range(len(items))]


def refcount_deltas(items, base):
    now = refcounts(items)
    return [now[i] - base[i] for i in range(len(items))]


# ----------------------------------------------------------------------------- stats


def check_identity(st):
    """The two identities every Stats snapshot must satisfy."""
    assert st.produced == st.consumed + st.dropped + st.depth, st
    assert st.dropped == sum(getattr(st, f) for f in DROP_REASONS), st


def counters(stream):
    """The integer counters of one snapshot, as a dict (checked for the identities)."""
    st = stream.stats()
    check_identity(st)
    return {f: getattr(st, f) for f in COUNTERS}


def assert_stats(stream, **expected):
    """Assert EVERY counter: the ones named equal their value, all others are 0.

    `dropped` defaults to the sum of the dropped_* reasons given. Returns the snapshot.
    """
    unknown = set(expected) - set(COUNTERS)
    assert not unknown, f"not a counter: {unknown}"
    want = dict.fromkeys(COUNTERS, 0)
    want["dropped"] = sum(expected.get(f, 0) for f in DROP_REASONS)
    want.update(expected)
    st = stream.stats()
    check_identity(st)
    got = {f: getattr(st, f) for f in COUNTERS}
    assert got == want
    return st


def drain(stream):
    """Everything buffered, oldest first, without waiting."""
    out = []
    while True:
        try:
            out.append(stream.get_nowait())
        except bpstream.Empty:
            return out


# ----------------------------------------------------------------------------- timing


def timed_raise(exc_type, fn, *args, **kwargs):
    """Call fn, assert it raises exc_type, return (seconds taken, the exception)."""
    start = time.monotonic()
    try:
        fn(*args, **kwargs)
    except exc_type as exc:
        return time.monotonic() - start, exc
    raise AssertionError(f"{fn!r} did not raise {exc_type.__name__}")


def assert_timed_out(elapsed, timeout):
    """A timeout must not be cut short, and must end eventually."""
    assert elapsed >= timeout - TIMEOUT_SLACK, f"gave up after {elapsed:.3f}s, timeout {timeout}s"
    assert elapsed < timeout + WAKE_WITHIN, f"took {elapsed:.3f}s for a {timeout}s timeout"


# ----------------------------------------------------------------------------- blocking


class _TriggerThread(threading.Thread):
    """Sleeps, sets `started`, runs the trigger; rescues the blocked caller if it never wakes."""

    def __init__(self, trigger, finished, rescue, probe):
        super().__init__(daemon=True)
        self.trigger = trigger
        self.finished = finished
        self.rescue = rescue
        self.probe = probe
        self.started = threading.Event()
        self.error = None
        self.rescued = False

    def run(self):
        time.sleep(self.probe)
        self.started.set()
        try:
            self.trigger()
        except BaseException as exc:  # reported by do_blocking_test
            self.error = exc
        if not self.finished.wait(WAKE_WITHIN):
            self.rescued = True
            if self.rescue is not None:
                self.rescue()


def do_blocking_test(block, trigger, *, rescue=None, probe=BLOCK_PROBE):
    """CPython's BlockingTestMixin pattern.

    `block()` runs in the calling thread (under pytest: the main thread, which takes the
    extension's signal-polling wait path). A trigger thread sleeps `probe` seconds, sets its
    `started` event and calls `trigger()`. If `block()` ends before `started` is set it never
    blocked. If it has not ended WAKE_WITHIN seconds after the trigger, `rescue()` (for example
    an immediate close) is called so that a product bug fails the test instead of hanging the
    suite. Returns block()'s result or re-raises its exception, after those checks.
    """
    finished = threading.Event()
    thread = _TriggerThread(trigger, finished, rescue, probe)
    start = time.monotonic()
    thread.start()
    outcome, exc = None, None
    try:
        outcome = block()
    except BaseException as error:
        exc = error
    elapsed = time.monotonic() - start
    blocked = thread.started.is_set()  # read before the join: the trigger may still be asleep
    finished.set()
    thread.join(WAKE_WITHIN)
    assert blocked, f"{block!r} did not block: ended after {elapsed:.3f}s with {exc or outcome!r}"
    assert elapsed >= probe - TIMEOUT_SLACK
    assert not thread.rescued, f"{block!r} did not wake within {WAKE_WITHIN}s of the trigger"
    assert not thread.is_alive(), "trigger did not return"
    if thread.error is not None:
        raise AssertionError(f"trigger raised {thread.error!r}") from thread.error
    if exc is not None:
        raise exc
    return outcome


class Call:
    """Runs fn(*args) in a daemon thread, for tests that need several blocked calls at once."""

    def __init__(self, fn, *args, **kwargs):
        self.fn = fn
        self.result = None
        self.exc = None
        self.entered = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=args, kwargs=kwargs, daemon=True)
        self.thread.start()
        assert self.entered.wait(WAKE_WITHIN)

    def _run(self, *args, **kwargs):
        self.entered.set()
        try:
            self.result = self.fn(*args, **kwargs)
        except BaseException as exc:
            self.exc = exc
        finally:
            self.done.set()

    def assert_blocked(self, probe=BLOCK_PROBE):
        assert not self.done.wait(probe), f"{self.fn!r} did not block: {self.exc or self.result!r}"

    def outcome(self, within=WAKE_WITHIN):
        """Wait for the call to end; return its result or re-raise its exception."""
        assert self.done.wait(within), f"{self.fn!r} still blocked after {within}s"
        self.thread.join(within)
        if self.exc is not None:
            raise self.exc
        return self.result


def finishes(fn, *args, within=WAKE_WITHIN, rescue=None, **kwargs):
    """Run a call that must not block; returns its result or re-raises its exception."""
    call = Call(fn, *args, **kwargs)
    if not call.done.wait(within):
        if rescue is not None:
            rescue()
        raise AssertionError(f"{fn!r} blocked (still running after {within}s)")
    return call.outcome()


# ----------------------------------------------------------------------------- children


def child_env():
    """The environment for a child interpreter that imports the same bpstream as we do."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(bpstream.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_python(code, timeout=60):
    """Run code in a fresh interpreter; return the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
    )


class Child:
    """A child interpreter whose stdout lines are collected by a reader thread."""

    def __init__(self, code):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        self.lines = queue.Queue()
        self.stdout = []
        self.stderr = []
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr, None), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(stream, sink, lines):
        for line in stream:
            sink.append(line)
            if lines is not None:
                lines.put(line.rstrip("\n"))
        if lines is not None:
            lines.put(None)

    def describe(self):
        return f"stdout={''.join(self.stdout)!r}\nstderr={''.join(self.stderr)}"

    def wait_for_line(self, expected, within=30.0):
        deadline = time.monotonic() + within
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"child never printed {expected!r}\n{self.describe()}") from None
            if line is None:
                self.wait(WAKE_WITHIN)
                raise AssertionError(f"child exited before printing {expected!r}\n{self.describe()}")
            if line == expected:
                return

    def send(self, text):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def wait(self, within):
        """Wait for the child to exit; kill it and fail if it takes longer than `within`."""
        try:
            self.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"child still running {within}s later\n{self.describe()}") from None
        for reader in self._readers:
            reader.join(WAKE_WITHIN)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for reader in self._readers:
            reader.join(WAKE_WITHIN)
