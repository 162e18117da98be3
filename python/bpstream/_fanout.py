"""FanOut: one producer, N worker threads, one bounded stream between them, and a
structured, reported shutdown. The engine (threads, counters, shutdown) is _workers.py."""

from __future__ import annotations

import weakref

from ._workers import ThreadFront


class FanOut(ThreadFront):
    """``workers`` threads call ``worker(item)`` on every item submitted, pulling from one
    ``BoundedStream(capacity, policy)``: the capacity is how much work may wait, the policy
    what a submit into a full stream does (block waits: backpressure; drop_newest,
    drop_oldest, drop_all shed and count; reject raises ``Full``).

        with bpstream.FanOut(handle, workers=8, capacity=256) as fan:
            fan.feed(requests)             # or fan.submit(request) per item
        print(fan.report)                  # produced 1000 processed 1000 ... balanced

    shutdown(deadline=None, cancel_pending=False) -> ShutdownReport:
      1. stops intake: later submit()/feed() raise ``bpstream.Closed``;
      2. closes the stream and lets the workers drain the backlog (cancel_pending=True
         discards the backlog at once instead; items already in a worker's hands finish);
      3. when ``deadline`` seconds have passed, stops waiting: what is still buffered is
         discarded (counted), and a worker still inside ``worker(item)`` is abandoned and
         reported (``aborted``; its item ``abandoned``). Python cannot kill a thread: an
         abandoned worker is a daemon thread that keeps running until ``worker(item)``
         returns, then ends on its own (it can take no further item);
      4. returns the ShutdownReport, also kept in ``fan.report``.

    shutdown() is idempotent: a later call returns the same report; a call from another
    thread while one is under way waits for it, after moving its deadline closer if its own
    is sooner (so an external stop can cut a draining shutdown short). Ctrl-C (or any
    exception a signal handler raises) while shutdown() waits aborts at once as if the
    deadline had passed: the report (reason "interrupted") is kept in ``fan.report`` and the
    KeyboardInterrupt goes on. Calling shutdown() from a worker raises RuntimeError (it
    would wait for itself).

    Leaving the ``with`` block shuts down: with no deadline when the block ended normally;
    with cancel_pending=True (no deadline; reason "cancelled") when it raised an Exception,
    so the backlog of a failed batch is not worked off; at once (deadline 0, reason
    "interrupted") on KeyboardInterrupt or SystemExit. The exception then goes on.

    A worker's exception counts as failed and is kept in ``report.errors`` (the first
    100); the other items go on. With ``fail_fast=True`` the first failure stops the
    fan-out instead: intake stops, the backlog is discarded, later submits raise
    ``Closed`` (its ``__cause__`` is the failure), and the report's reason is "fail_fast".

    A FanOut dropped without shutdown() closes its stream when collected: its workers
    drain the backlog and end.
    """

    def __init__(self, worker, workers=4, capacity=64, policy="block", *, fail_fast=False, name=None):
        if not callable(worker):
            raise TypeError(f"worker must be callable, not {type(worker).__name__}")
        label = name if name is not None else f"FanOut({getattr(worker, '__name__', 'worker')})"
        self._setup([(worker, workers, capacity, policy, label)], fail_fast, str(label), staged=False)
        self._finalizer = weakref.finalize(self, self._run.release)

    @property
    def workers(self) -> int:
        return self._run.stages[0].workers

    @property
    def capacity(self) -> int:
        return self._stream.capacity

    @property
    def policy(self):
        return self._stream.policy

    def __repr__(self) -> str:
        state = self.report.reason if self.report is not None else "running"
        return (
            f"<FanOut {self.name!r} workers={self.workers} capacity={self.capacity} "
            f"policy={self.policy.value} pending={self.pending} {state}>"
        )
