"""AsyncFanOut: N asyncio tasks pulling from one bounded stream, and the same structured,
reported shutdown as FanOut (_workers.py), with tasks instead of threads.

ACCOUNTING
 Each task counts what it finished in a list only it writes; the report is made from the
 stream's stats once the stream is closed and empty (see _shutdown.py). A task cancelled at
 the deadline takes its item with it: consumed, never finished, so abandoned. `aget` and
 `async for` are cancellation-safe (a cancelled wait takes nothing), so a task cancelled
 while waiting for an item loses none.

ONE LOOP
 The tasks live on the loop that first used the fan-out (async with, submit, feed or
 shutdown). Every call must come from that loop; from another thread use
 asyncio.run_coroutine_threadsafe.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import weakref

from ._bpstream import BoundedStream, Closed, Policy
from ._shutdown import MAX_ERRORS, ShutdownReport, stage_report
from ._workers import CHUNK, FAILED, GRACE, PROCESSED, check_deadline, check_workers


async def _task_worker(fn, stream, counts, on_error):
    # Whatever the worker raises is its item's failure, and the task goes on to the next
    # item (a dead task would leave the stream without its consumer: with every task dead a
    # block submit waits forever). Only two things end the task: the cancellation of the task
    # itself (the deadline's, or asyncio.run's; task.cancelling() tells it apart from a
    # CancelledError the worker got from something else it awaited), and KeyboardInterrupt
    # or SystemExit, which asyncio passes on to whoever runs the loop.
    task = asyncio.current_task()
    async for item in stream:
        try:
            await fn(item)
        except (KeyboardInterrupt, SystemExit):
            raise
        except asyncio.CancelledError as exc:
            if task.cancelling():
                raise
            counts[FAILED] += 1
            on_error(exc)
        except BaseException as exc:  # noqa: BLE001 - counted and kept
            counts[FAILED] += 1
            on_error(exc)
        else:
            counts[PROCESSED] += 1


class AsyncFanOut:
    """``workers`` asyncio tasks await ``worker(item)`` (an ``async def`` function) on every
    item submitted, pulling from one ``BoundedStream(capacity, policy)``.

        async with bpstream.AsyncFanOut(fetch, workers=16, capacity=64) as fan:
            await fan.feed(urls)           # an iterable or an async iterable
        print(fan.report)

    ``await submit(item, timeout=None) -> bool``, ``await feed(items) -> int`` and
    ``report`` behave as FanOut's, awaiting room instead of blocking the thread.

    ``await shutdown(deadline=None, cancel_pending=False) -> ShutdownReport``: intake stops
    (later submits raise ``Closed``), the stream closes and the tasks drain it
    (cancel_pending=True discards the backlog at once instead). When ``deadline`` seconds
    have passed, what is still buffered is discarded (counted) and the tasks still busy are
    cancelled: ``aborted``, their items ``abandoned``. A task that suppresses its
    cancellation is waited for a further 50 ms, then left running and reported aborted all
    the same. Idempotent: a later call returns the same report; a concurrent call (another
    task) moves the deadline closer if its own is sooner and waits for the same report.
    If the task awaiting shutdown() is cancelled (as asyncio.run does on Ctrl-C), the
    fan-out aborts at once: the report (reason "interrupted") is kept in ``report`` and the
    CancelledError goes on.

    Leaving ``async with`` shuts down: with no deadline after a normal exit,
    cancel_pending=True after an Exception (reason "cancelled"), at once on cancellation,
    KeyboardInterrupt or SystemExit (reason "interrupted"). A worker's exception counts as
    failed and is kept in ``report.errors`` (the first 100), a CancelledError it raises
    while its task is not being cancelled included; ``fail_fast=True`` stops the
    fan-out at the first one, as FanOut's does. All calls belong to one event loop.
    Awaiting shutdown() in one of its own workers raises RuntimeError (it would wait for
    itself); a worker that wants to stop the fan-out starts it in a task of its own.
    """

    def __init__(self, worker, workers=4, capacity=64, policy="block", *, fail_fast=False, name=None):
        if not callable(worker):
            raise TypeError(f"worker must be callable, not {type(worker).__name__}")
        if inspect.isroutine(worker) and not inspect.iscoroutinefunction(worker):
            raise TypeError(
                f"AsyncFanOut needs an async function; {worker!r} is not one (use FanOut "
                "for blocking functions)"
            )
        self._fn = worker
        self._workers = check_workers(workers)
        self._stream = BoundedStream(capacity, policy)
        self._bulk = self._stream.policy == Policy.BLOCK
        self._name = str(name) if name is not None else f"AsyncFanOut({getattr(worker, '__name__', 'worker')})"
        self._fail_fast = bool(fail_fast)
        self._counts = [[0, 0, 0, 0] for _ in range(self._workers)]
        self._errors: list[BaseException] = []
        self._failure: list[BaseException] = []  # at most one: the failure fail_fast acted on
        self._tasks: list[asyncio.Task] | None = None
        # shutdown state (one loop: no lock)
        self._driving: asyncio.Future | None = None
        self._wake: asyncio.Future | None = None
        self._abort_at: float | None = None
        self._cancel = False
        self._interrupted = False
        self._report: ShutdownReport | None = None
        # Dropped without shutdown: the tasks drain the stream and end.
        self._finalizer = weakref.finalize(self, self._stream.close)

    # --- properties ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def capacity(self) -> int:
        return self._stream.capacity

    @property
    def policy(self) -> Policy:
        return self._stream.policy

    @property
    def pending(self) -> int:
        """Items waiting in the stream (not yet taken by a task)."""
        return len(self._stream)

    @property
    def report(self) -> ShutdownReport | None:
        """The ShutdownReport once shut down, else None."""
        return self._report

    def __repr__(self) -> str:
        state = self._report.reason if self._report is not None else "running"
        return (
            f"<AsyncFanOut {self._name!r} workers={self._workers} capacity={self.capacity} "
            f"policy={self.policy.value} pending={self.pending} {state}>"
        )

    # --- tasks -------------------------------------------------------------------------------

    def _start(self):
        loop = asyncio.get_running_loop()
        stream, errors, failure, fail_fast = self._stream, self._errors, self._failure, self._fail_fast

        def on_error(exc):  # references no self: a dropped fan-out can be collected
            if len(errors) < MAX_ERRORS:
                errors.append(exc)
            if fail_fast and not failure:
                failure.append(exc)
                stream.close(immediate=True)

        self._tasks = [
            loop.create_task(_task_worker(self._fn, stream, counts, on_error), name=f"{self._name}-{i}")
            for i, counts in enumerate(self._counts)
        ]

    def _closed(self) -> Closed:
        if self._failure:
            error = Closed(f"{self._name} stopped by fail_fast after {self._failure[0]!r}")
            error.__cause__ = self._failure[0]
            return error
        return Closed(f"{self._name} is shut down: it takes no more items")

    # --- intake ------------------------------------------------------------------------------

    async def submit(self, item, timeout=None) -> bool:
        """Hand one item to the tasks (see FanOut.submit); waiting for room suspends."""
        if self._tasks is None and self._driving is None:
            self._start()
        stream = self._stream
        if not self._bulk and len(stream) >= stream.capacity:
            await asyncio.sleep(0)  # a shedding aput never suspends: see feed()
        try:
            return await stream.aput(item, timeout)
        except Closed:
            raise self._closed() from (self._failure[0] if self._failure else None)

    async def feed(self, items) -> int:
        """Submit every item of an iterable or async iterable, in order; returns how many
        were submitted (see FanOut.feed)."""
        if self._tasks is None and self._driving is None:
            self._start()
        aput = self._stream.aput
        count = 0
        try:
            if hasattr(items, "__aiter__"):
                stream, shedding = self._stream, not self._bulk
                async for item in items:
                    if shedding and len(stream) >= stream.capacity:
                        await asyncio.sleep(0)  # see below: a shedding aput never suspends
                    await aput(item)
                    count += 1
            elif self._bulk and isinstance(items, (list, tuple, range)):
                aput_many = self._stream.aput_many
                for start in range(0, len(items), CHUNK):
                    chunk = items[start : start + CHUNK]
                    await aput_many(chunk)
                    count += len(chunk)
            elif self._bulk:
                for item in items:
                    await aput(item)
                    count += 1
            else:
                # A shedding policy never waits for room, so its aput never suspends: a
                # turn of the loop whenever the stream is full lets the tasks take items
                # (and another task shut down) instead of shedding all but `capacity` items
                # of a long feed, or hanging the loop on an endless one.
                stream, capacity = self._stream, self._stream.capacity
                for item in items:
                    if len(stream) >= capacity:
                        await asyncio.sleep(0)
                    await aput(item)
                    count += 1
        except Closed:
            raise self._closed() from (self._failure[0] if self._failure else None)
        return count

    # --- shutdown ----------------------------------------------------------------------------

    async def shutdown(self, deadline: float | None = None, cancel_pending: bool = False) -> ShutdownReport:
        """Stop intake, let the tasks drain, and report (see the class docstring)."""
        return await self._shutdown(deadline, cancel_pending, False)

    async def _shutdown(self, deadline, cancel_pending, interrupted):
        deadline = check_deadline(deadline)
        started = time.monotonic()
        if self._report is not None:
            return self._report
        if self._tasks is not None and asyncio.current_task() in self._tasks:
            # It would wait for its own task to end: forever without a deadline.
            raise RuntimeError(
                f"{self._name}: shutdown() awaited by one of its own workers would wait for "
                "itself; start it in a task of its own (asyncio.create_task(fan.shutdown()))"
            )
        if deadline is not None:
            target = started + deadline
            if self._abort_at is None or target < self._abort_at:
                self._abort_at = target
        self._cancel = self._cancel or bool(cancel_pending)
        self._interrupted = self._interrupted or interrupted
        if self._driving is not None:  # another task drives: wake it, wait for its report
            self._nudge()
            try:
                await asyncio.shield(self._driving)
            except asyncio.CancelledError:
                self._interrupted = True
                self._nudge()
                raise
            return self._report
        if self._tasks is None:
            self._start()  # never used: its tasks start, see the closed stream and end
        self._driving = asyncio.get_running_loop().create_future()
        return await self._drive(started)

    def _nudge(self):
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _drive(self, started):
        tasks = self._tasks
        deadline_hit = False
        interrupt: BaseException | None = None
        try:
            self._stream.close()
            deadline_hit = await self._wait_for_tasks()
        except BaseException as exc:  # cancelled (Ctrl-C under asyncio.run) or interrupted
            interrupt = exc
        cancelled: list[asyncio.Task] = []
        if any(not t.done() for t in tasks):
            self._stream.close(immediate=True)
            try:  # tasks only waiting for an item end on their own once the stream is closed
                await asyncio.wait([t for t in tasks if not t.done()], timeout=GRACE)
            except BaseException as exc:  # noqa: BLE001 - a second interrupt cuts the wait
                interrupt = interrupt or exc
            cancelled = [t for t in tasks if not t.done()]
            for task in cancelled:
                task.cancel()
            if cancelled:
                try:
                    await asyncio.wait(cancelled, timeout=GRACE)
                except BaseException as exc:  # noqa: BLE001
                    interrupt = interrupt or exc
        for task in tasks:  # retrieve what escaped a worker (none should): no "never retrieved"
            if task.done() and not task.cancelled():
                task.exception()
        # Tasks cancelled from outside (asyncio.run ending without shutdown, a handler that
        # cancels every task) ended without draining: what they left in the stream no task
        # will take. Discard it (counted), and count those tasks aborted: an interruption.
        outside = [t for t in tasks if t.cancelled() and t not in cancelled]
        self._stream.close(immediate=True)  # a no-op once drained
        self._report = self._make_report(
            started, deadline_hit, interrupt is not None or bool(outside), len(cancelled) + len(outside)
        )
        self._finalizer.detach()
        self._driving.set_result(None)
        if interrupt is not None:
            raise interrupt
        return self._report

    async def _wait_for_tasks(self) -> bool:
        """Wait until every task ended (False) or the deadline passed (True)."""
        loop = asyncio.get_running_loop()
        cancelled = False
        while True:
            pending = [t for t in self._tasks if not t.done()]
            if not pending or self._interrupted:
                return False
            if self._cancel and not cancelled:
                cancelled = True
                self._stream.close(immediate=True)
                continue
            timeout = None
            if self._abort_at is not None:
                timeout = self._abort_at - time.monotonic()
                if timeout <= 0:
                    return True
            self._wake = loop.create_future()
            try:
                await asyncio.wait([*pending, self._wake], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._wake.cancel()

    def _make_report(self, started, deadline_hit, interrupted, aborted) -> ShutdownReport:
        if interrupted or self._interrupted:
            reason = "interrupted"
        elif self._failure:
            reason = "fail_fast"
        elif deadline_hit:
            reason = "deadline"
        elif self._cancel:
            reason = "cancelled"
        else:
            reason = "drained"
        stats = self._stream.stats()  # closed and empty: final. Counters after it.
        counts = self._counts
        return stage_report(
            self._name,
            stats,
            offered_extra=0,
            processed=sum(c[PROCESSED] for c in counts),
            failed=sum(c[FAILED] for c in counts),
            unpassed=0,
            workers=self._workers,
            aborted=aborted,
            deadline_hit=deadline_hit,
            elapsed=time.monotonic() - started,
            reason=reason,
            errors=tuple(self._errors),
        )

    # --- async with ----------------------------------------------------------------------------

    async def __aenter__(self):
        if self._tasks is None and self._driving is None:
            self._start()
        return self

    async def __aexit__(self, exc_type, exc, tb):
        if exc_type is None:
            await self._shutdown(None, False, False)
        elif issubclass(exc_type, Exception):
            await self._shutdown(None, True, False)
        else:  # CancelledError, KeyboardInterrupt, SystemExit: abort now
            await self._shutdown(0, True, True)
        return False
