"""The thread engine under FanOut and Pipeline: stages of worker threads over bounded
streams, and their structured shutdown.

STRUCTURE
 A run is a chain of stages (a FanOut is a chain of one). Stage i owns stream i, whose
 capacity is the stage's WIP limit, and N daemon threads iterating it. A stage that is not
 the last hands fn(item) on with stream i+1's put (so the next stage's policy applies:
 block waits, drop_* shed, reject refuses).

WHO CLOSES WHAT
 shutdown() closes stream 0 (draining). The last worker of stage i to end closes stream i+1
 (draining): a stage drains only once everything upstream has. At the deadline (and on
 cancel_pending, fail_fast, an interrupt) every stream is closed with immediate=True, in
 stage order: backlogs are discarded, workers waiting on a stream wake and end, a worker
 handing on gets Closed (its finished item counts as discarded). A worker still inside the
 user's function cannot be stopped (Python cannot kill a thread): it is abandoned, its
 item counted as abandoned; it ends on its own when the function returns, since every
 stream it could touch is closed by then.

 Workers reference the _Run, never the FanOut/Pipeline object, so a FanOut dropped without
 shutdown() is collected and its finalizer closes stream 0: the workers drain and end.

PER-ITEM COST
 `for item in stream` (the stream's read-ahead: a batch per core call), the call, then one
 increment of a list only this worker writes (or, mid-pipeline, one put). No lock, no
 Future, no shared counter per item; `cond` is taken when a worker ends, on a fail_fast
 failure, and by shutdown(). The counters become a report as _shutdown.py explains.
"""

from __future__ import annotations

import threading
import time

from ._bpstream import BoundedStream, Closed, Full, Policy
from ._shutdown import MAX_ERRORS, ShutdownReport, stage_report

#: After the deadline closes every stream, how long shutdown() still waits for workers
#: that were only waiting on a stream (they end within microseconds) before it reports
#: the ones still running as abandoned.
GRACE = 0.05
#: Longest single wait of shutdown(): it rechecks its deadline (which a later shutdown()
#: call may move closer) at least this often, and answers Ctrl-C in between.
SLICE = 0.1
#: feed() hands a list, tuple or range to a block stream this many items per put_many.
CHUNK = 256

# A worker's counters, written only by that worker (the ended flag under cond).
PROCESSED, FAILED, UNPASSED, ENDED = range(4)


def check_workers(workers) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"workers must be an int, not {type(workers).__name__}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return workers


def check_deadline(deadline):
    if deadline is None:
        return None
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
        raise TypeError(f"deadline must be a number of seconds or None, not {type(deadline).__name__}")
    if not deadline >= 0:  # also refuses NaN
        raise ValueError(f"deadline must be >= 0 seconds, got {deadline}")
    return float(deadline)


def _sink_loop(fn, source, counts, on_error):
    for item in source:
        try:
            fn(item)
        except BaseException as exc:  # noqa: BLE001 - a worker's failure is counted, kept
            counts[FAILED] += 1
            on_error(exc)
        else:
            counts[PROCESSED] += 1


def _pass_loop(fn, source, put, counts, on_error):
    # processed is not counted here: the next stream's stats count every hand-off exactly.
    for item in source:
        try:
            result = fn(item)
        except BaseException as exc:  # noqa: BLE001
            counts[FAILED] += 1
            on_error(exc)
            continue
        try:
            put(result)
        except Closed:
            counts[UNPASSED] += 1  # closed at once downstream: finished, not handed on
        except Full:
            pass  # refused by a reject stage: its stats count it (rejected)


class _Stage:
    """One stage at run time: its stream, its workers and their counters."""

    __slots__ = ("name", "fn", "stream", "workers", "threads", "counts", "running", "errors")

    def __init__(self, fn, workers, capacity, policy, name):
        self.name = name
        self.fn = fn
        self.stream = BoundedStream(capacity, policy)
        self.workers = check_workers(workers)
        self.threads: list[threading.Thread] = []
        self.counts = [[0, 0, 0, 0] for _ in range(workers)]
        self.running = 0
        self.errors: list[BaseException] = []


class _Run:
    """Stages of threads and the one shutdown that ends them (see the module docstring)."""

    def __init__(self, specs, *, fail_fast, label, staged):
        # specs: (fn, workers, capacity, policy, name) per stage, in order. staged: the
        # report lists the stages (a Pipeline, even of one stage), else it is the one stage.
        self.label = label
        self.staged = staged
        self.fail_fast = bool(fail_fast)
        self.stages = [_Stage(*spec) for spec in specs]
        self.cond = threading.Condition()
        self.running = 0
        self.failure: BaseException | None = None
        self.errors: list[BaseException] = []
        # shutdown state, under cond
        self.driving = False
        self.abort_at: float | None = None  # monotonic; None: no deadline
        self.cancel = False
        self.interrupted = False
        self.done = threading.Event()
        self.report: ShutdownReport | None = None
        self.worker_threads: set[threading.Thread] = set()
        try:
            for index, stage in enumerate(self.stages):
                for slot in range(stage.workers):
                    self._start(index, slot)
        except BaseException:
            self.close_all(immediate=True)
            raise

    def _start(self, index, slot):
        stage = self.stages[index]
        thread = threading.Thread(
            target=self._work,
            args=(index, stage.counts[slot]),
            name=f"{self.label}:{stage.name}-{slot}" if self.staged else f"{self.label}-{slot}",
            daemon=True,  # an abandoned worker must not keep the interpreter from exiting
        )
        with self.cond:
            stage.running += 1
            self.running += 1
        stage.threads.append(thread)
        self.worker_threads.add(thread)
        try:
            thread.start()
        except BaseException:
            with self.cond:
                stage.running -= 1
                self.running -= 1
            stage.threads.pop()
            stage.workers = len(stage.threads)
            raise

    # --- worker side ---------------------------------------------------------------------

    def _work(self, index, counts):
        stages = self.stages
        stage = stages[index]
        errors = stage.errors

        def on_error(exc):
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(exc)
                errors.append(exc)
            if self.fail_fast:
                self.fail(exc)

        try:
            if index + 1 < len(stages):
                _pass_loop(stage.fn, stage.stream, stages[index + 1].stream.put, counts, on_error)
            else:
                _sink_loop(stage.fn, stage.stream, counts, on_error)
        finally:
            with self.cond:
                counts[ENDED] = 1
                stage.running -= 1
                self.running -= 1
                last_out = stage.running == 0
                self.cond.notify_all()
            if last_out and index + 1 < len(stages):
                stages[index + 1].stream.close()  # upstream is done: the next stage drains

    def fail(self, exc):
        """fail_fast: the first failure discards every backlog; intake stops."""
        with self.cond:
            if self.failure is not None:
                return
            self.failure = exc
            self.cond.notify_all()
        self.close_all(immediate=True)

    def close_all(self, immediate):
        for stage in self.stages:
            stage.stream.close(immediate=immediate)

    def release(self):
        """The owner was collected without shutdown(): stop intake, let the workers drain."""
        self.stages[0].stream.close()

    # --- shutdown --------------------------------------------------------------------------

    def shutdown(self, deadline=None, cancel_pending=False, interrupted=False):
        deadline = check_deadline(deadline)
        started = time.monotonic()
        if threading.current_thread() in self.worker_threads:
            raise RuntimeError(
                f"{self.label}: shutdown() called from one of its own workers would wait for "
                "itself; call it from another thread"
            )
        with self.cond:
            if self.report is not None:
                return self.report
            if deadline is not None:
                target = started + deadline
                if self.abort_at is None or target < self.abort_at:
                    self.abort_at = target
            self.cancel = self.cancel or bool(cancel_pending)
            self.interrupted = self.interrupted or interrupted
            secondary = self.driving
            self.driving = True
            self.cond.notify_all()
        if secondary:
            return self._await_report()
        return self._drive(started)

    def _await_report(self):
        # Another thread drives the shutdown; this call's deadline was merged into its own.
        try:
            while not self.done.wait(SLICE):
                pass
        except BaseException:
            with self.cond:  # interrupted while waiting: make the driver stop now
                self.interrupted = True
                self.cond.notify_all()
            raise
        return self.report

    def _drive(self, started):
        deadline_hit = False
        interrupt: BaseException | None = None
        try:
            self.stages[0].stream.close()
            deadline_hit = self._wait_for_workers()
        except BaseException as exc:  # Ctrl-C (or a signal handler's exception) while waiting
            interrupt = exc
        with self.cond:
            stragglers = self.running > 0
        if stragglers:
            self.close_all(immediate=True)
            interrupt = self._grace(interrupt)
        while True:  # a second Ctrl-C must not lose the report: retry the (brief) bookkeeping
            try:
                report = self._make_report(started, deadline_hit, interrupt is not None)
                break
            except BaseException as exc:  # noqa: BLE001
                interrupt = interrupt or exc
        try:
            for stage in self.stages:
                for thread, counts in zip(stage.threads, stage.counts):
                    if counts[ENDED]:
                        thread.join(1.0)  # past its last line: ends within microseconds
        except BaseException as exc:  # noqa: BLE001 - a Ctrl-C here must not lose the report:
            interrupt = interrupt or exc  # every later shutdown() would wait for it forever
        self.report = report
        self.done.set()
        if interrupt is not None:
            raise interrupt
        return report

    def _wait_for_workers(self) -> bool:
        """Wait until every worker ended (False) or the deadline passed (True)."""
        cancelled = False
        while True:
            with self.cond:
                while True:
                    if self.running == 0:
                        return False
                    if self.interrupted:
                        return False
                    if self.cancel and not cancelled:
                        break
                    if self.abort_at is not None:
                        left = self.abort_at - time.monotonic()
                        if left <= 0:
                            return True
                        self.cond.wait(min(left, SLICE))
                    else:
                        self.cond.wait(SLICE)
            cancelled = True
            self.close_all(immediate=True)  # cancel_pending: the backlog goes at once

    def _grace(self, interrupt):
        end = time.monotonic() + GRACE
        try:
            with self.cond:
                while self.running > 0:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    self.cond.wait(left)
        except BaseException as exc:  # noqa: BLE001 - a second Ctrl-C only cuts the grace
            interrupt = interrupt or exc
        return interrupt

    def _make_report(self, started, deadline_hit, interrupted) -> ShutdownReport:
        stages = self.stages
        # Every stream is closed and empty now: their stats are final. Counters after them.
        stats = [stage.stream.stats() for stage in stages]
        with self.cond:
            aborted = [stage.running for stage in stages]
            errors = tuple(self.errors)
            failure = self.failure
            interrupted = interrupted or self.interrupted
        if interrupted:
            reason = "interrupted"
        elif failure is not None:
            reason = "fail_fast"
        elif deadline_hit:
            reason = "deadline"
        elif self.cancel:
            reason = "cancelled"
        else:
            reason = "drained"
        elapsed = time.monotonic() - started
        reports = []
        for index, stage in enumerate(stages):
            counts = stage.counts
            last = index + 1 == len(stages)
            if last:
                processed = sum(c[PROCESSED] for c in counts)
            else:  # every hand-off, exactly: stored or shed by the next stream, or refused
                processed = stats[index + 1].produced + stats[index + 1].rejected
            reports.append(
                stage_report(
                    stage.name,
                    stats[index],
                    offered_extra=stats[index].rejected if index else 0,
                    processed=processed,
                    failed=sum(c[FAILED] for c in counts),
                    unpassed=sum(c[UNPASSED] for c in counts),
                    workers=stage.workers,
                    aborted=aborted[index],
                    deadline_hit=deadline_hit,
                    elapsed=elapsed,
                    reason=reason,
                    errors=tuple(stage.errors),
                )
            )
        if not self.staged:
            only = reports[0]
            return ShutdownReport(**{**only.__dict__, "name": self.label, "errors": errors})
        return ShutdownReport(
            produced=reports[0].produced,
            processed=reports[-1].processed,
            failed=sum(r.failed for r in reports),
            dropped=sum(r.dropped for r in reports),
            discarded=sum(r.discarded for r in reports),
            abandoned=sum(r.abandoned for r in reports),
            workers=sum(r.workers for r in reports),
            joined=sum(r.joined for r in reports),
            aborted=sum(r.aborted for r in reports),
            deadline_hit=deadline_hit,
            elapsed=elapsed,
            reason=reason,
            errors=errors,
            stages=tuple(reports),
            name=self.label,
        )


class ThreadFront:
    """What FanOut and Pipeline share: intake (submit, feed), shutdown, the with block."""

    _run: _Run

    def _setup(self, specs, fail_fast, label, staged):
        self._run = _Run(specs, fail_fast=fail_fast, label=label, staged=staged)
        first = self._run.stages[0].stream
        self._stream = first
        self._put = first.put
        self._bulk = first.policy == Policy.BLOCK

    @property
    def name(self) -> str:
        return self._run.label

    @property
    def report(self) -> ShutdownReport | None:
        """The ShutdownReport once shut down, else None."""
        return self._run.report

    @property
    def pending(self) -> int:
        """Items waiting in the first stream (not yet taken by a worker)."""
        return len(self._stream)

    def _closed(self) -> Closed:
        failure = self._run.failure
        if failure is not None:
            error = Closed(f"{self.name} stopped by fail_fast after {failure!r}")
            error.__cause__ = failure
            return error
        return Closed(f"{self.name} is shut down: it takes no more items")

    def submit(self, item, timeout=None) -> bool:
        """Hand one item to the workers. With the block policy, waits for room (up to
        ``timeout`` seconds, then ``bpstream.Full``). Returns True when stored, False when
        the drop_newest policy shed it (a drop_oldest put evicts an older item instead);
        either way it counts as produced, and a shed or evicted item as dropped. The reject
        policy raises ``bpstream.Full`` and the item stays yours (not produced). Raises
        ``bpstream.Closed`` once shutdown has begun (or fail_fast stopped the intake)."""
        try:
            return self._put(item, timeout)
        except Closed:
            raise self._closed() from self._run.failure

    def feed(self, iterable) -> int:
        """Submit every item of ``iterable`` in order; returns how many were submitted
        (produced, shed ones included). A list, tuple or range goes to a block stream in
        batches of 256 (one lock per batch); any other iterable is submitted item by item
        as it yields, so a slow generator's items are not held back. Raises like submit()."""
        count = 0
        try:
            if self._bulk and isinstance(iterable, (list, tuple, range)):
                put_many = self._stream.put_many
                for start in range(0, len(iterable), CHUNK):
                    chunk = iterable[start : start + CHUNK]
                    put_many(chunk)
                    count += len(chunk)
            else:
                put = self._put
                for item in iterable:
                    put(item)
                    count += 1
        except Closed:
            raise self._closed() from self._run.failure
        return count

    def shutdown(self, deadline: float | None = None, cancel_pending: bool = False) -> ShutdownReport:
        """Stop intake, let the workers drain, and report (see the class docstring)."""
        report = self._run.shutdown(deadline, cancel_pending)
        self._finalizer.detach()
        return report

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.shutdown()
        elif issubclass(exc_type, Exception):
            self.shutdown(cancel_pending=True)
        else:  # KeyboardInterrupt, SystemExit: abort now
            self._run.shutdown(0, cancel_pending=True, interrupted=True)
            self._finalizer.detach()
        return False
