"""A pull-only kanban board: ordered stages, each with a work-in-progress (WIP) limit.

    board = Kanban({"ready": 5, "in_progress": 3, "review": 2})
    board.add("job-1")            # into the unbounded backlog
    board.pull("job-1")           # backlog -> ready, when ready has room (waits for it)
    board.pull("job-1", timeout=0)  # ready -> in_progress, only if there is room right now

Invariants (all kept under one lock, ``_lock``):
- Places are ``0`` = backlog, ``1..n`` = the stages in order, ``n + 1`` = done. An item's
  place is its token: it holds one slot of that stage, and leaving frees the slot at once.
- ``count(stage) <= limit(stage)`` for every stage, always.
- Waiters for a stage form a FIFO queue. A pull may move an item into a stage only when the
  stage has room AND no earlier pull waits for it (no barging); a waiter moves only from the
  head of its queue. A waiter is woken (notified) only when it is the head and there is room:
  one wake-up per pull that can now proceed, never a herd.
- A waiter performs its own move, under the lock, when it runs. A pull that is cancelled,
  interrupted (Ctrl-C) or timed out before that moved nothing; leaving the queue it passes
  its wake-up to the next waiter when there is room, so no wake-up is lost.
- Nothing outside the board (no caller code) runs under the lock; waking an asyncio waiter
  only schedules a callback on its loop (``call_soon_threadsafe``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Mapping

__all__ = ["Kanban", "KanbanStats", "StageStats"]

BACKLOG = "backlog"
DONE = "done"


@dataclass(frozen=True)
class StageStats:
    """One stage's numbers in :meth:`Kanban.stats`.

    ``wip`` items are in the stage now (at most ``limit``); ``entered`` and ``left`` count
    moves in and out since the board was made; ``throughput`` is ``left`` per second since
    then; ``mean_time`` is the mean time (seconds) items that left spent in the stage (0.0
    before any left); ``waiting`` is the number of pulls waiting for room in it."""

    name: str
    wip: int
    limit: int
    entered: int
    left: int
    throughput: float
    mean_time: float
    waiting: int


@dataclass(frozen=True)
class KanbanStats:
    """A snapshot of the board: ``stages`` in board order, ``backlog`` (items waiting to be
    pulled into the first stage), ``done`` (items ever finished, including cleared ones),
    ``added`` (items ever added) and ``elapsed`` (seconds since the board was made)."""

    stages: dict[str, StageStats]
    backlog: int
    done: int
    added: int
    elapsed: float


class _Waiter:
    """One pull waiting for room in stage ``target``. Either a thread (``cond``) or an
    asyncio task (``future`` on ``loop``). ``notified``: a wake-up was sent and not yet
    consumed (avoids sending a second one)."""

    __slots__ = ("item", "target", "cond", "loop", "future", "notified")

    def __init__(self, item, target, cond=None, loop=None, future=None):
        self.item = item
        self.target = target
        self.cond = cond
        self.loop = loop
        self.future = future
        self.notified = False


def _resolve(future) -> None:
    # Runs on the waiter's loop. The future may already be done (cancelled, or woken by
    # its own deadline timer): then there is nothing to do.
    if not future.done():
        future.set_result(None)


def _clock_function(clock) -> Callable[[], float]:
    if clock is None:
        return time.monotonic
    now = getattr(clock, "now", None)
    if callable(now):
        return now
    if callable(clock):
        return clock
    raise TypeError("clock must be a callable returning seconds or an object with now()")


class Kanban:
    """A pull-only kanban board with a WIP limit per stage; thread-safe, with ``apull``
    for asyncio. See the module docstring for the rules it keeps.

    Items are identified like dict keys: they must be hashable, and equal items are the
    same item (``1`` and ``1.0`` are one item). An item stays on the board from ``add``
    until ``clear_done()`` removes it from done; adding it again meanwhile raises
    ``ValueError``.

    ``clock``: what stats() times with: a callable returning seconds, or an object with a
    ``now()`` method (``bpstream.ManualClock``); ``time.monotonic`` by default. It is read
    under the board's lock, so it must not call back into the board. Timeouts of ``pull``
    and ``apull`` always run on real time (``time.monotonic``).
    """

    def __init__(self, stages: Mapping[str, int], *, clock: Any = None) -> None:
        if not isinstance(stages, Mapping):
            raise TypeError("stages must be a mapping of stage name to WIP limit")
        if not stages:
            raise ValueError("a board needs at least one stage")
        names: list[str] = []
        limits: list[int] = []
        for name, limit in stages.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"stage names must be non-empty strings, not {name!r}")
            if name in (BACKLOG, DONE):
                raise ValueError(f"{name!r} is reserved (the board's own backlog and done)")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"the WIP limit of {name!r} must be an int >= 1, not {limit!r}")
            names.append(name)
            limits.append(limit)
        self._now = _clock_function(clock)
        self._lock = threading.Lock()
        n = len(names)
        self._names = [BACKLOG, *names, DONE]
        self._index = {name: i for i, name in enumerate(self._names)}
        # Per place 0..n+1; limits of backlog and done are None (unbounded).
        self._limits: list[int | None] = [None, *limits, None]
        # item -> None, insertion ordered: the items of a place in order of arrival.
        self._places: list[dict[Hashable, None]] = [{} for _ in range(n + 2)]
        self._where: dict[Hashable, int] = {}  # item -> place
        self._since: dict[Hashable, float] = {}  # item -> when it entered its place
        self._pending: set = set()  # items with a pull waiting (one at a time per item)
        self._waiters: list[deque[_Waiter]] = [deque() for _ in range(n + 2)]
        self._entered = [0] * (n + 2)
        self._left = [0] * (n + 2)
        self._time_in = [0.0] * (n + 2)
        self._added = 0
        self._started = self._now()

    # ------------------------------------------------------------------ queries

    @property
    def stages(self) -> tuple[str, ...]:
        """The stage names in board order (without backlog and done)."""
        return tuple(self._names[1:-1])

    def _place(self, stage: str) -> int:
        try:
            return self._index[stage]
        except (KeyError, TypeError):
            raise ValueError(
                f"no stage {stage!r}: the board has {', '.join(map(repr, self._names))}"
            ) from None

    def count(self, stage: str) -> int:
        """Items in ``stage`` now (``"backlog"`` and ``"done"`` are accepted too)."""
        i = self._place(stage)
        with self._lock:
            return len(self._places[i])

    def limit(self, stage: str) -> int | None:
        """The WIP limit of ``stage``; None for the unbounded backlog and done."""
        return self._limits[self._place(stage)]

    def has_capacity(self, stage: str) -> bool:
        """Whether a pull into ``stage`` could take a slot now: the stage has room and no
        earlier pull waits for it. Always True for backlog and done."""
        i = self._place(stage)
        with self._lock:
            return self._has_room(i) and not self._waiters[i]

    def items(self, stage: str) -> list:
        """The items in ``stage``, in order of arrival."""
        i = self._place(stage)
        with self._lock:
            return list(self._places[i])

    def stage_of(self, item: Hashable) -> str:
        """The name of the place ``item`` is in; ValueError when it is not on the board."""
        with self._lock:
            where = self._where.get(item)
        if where is None:
            raise ValueError(f"{item!r} is not on the board")
        return self._names[where]

    def __contains__(self, item: Hashable) -> bool:
        with self._lock:
            return item in self._where

    def __len__(self) -> int:
        """Items on the board, backlog and done included."""
        with self._lock:
            return len(self._where)

    def stats(self) -> KanbanStats:
        """A consistent snapshot of every stage's WIP, limit, entered, left, throughput,
        mean time in stage and waiting pulls, plus the backlog and done counts."""
        with self._lock:
            now = self._now()
            elapsed = max(now - self._started, 0.0)
            stages = {}
            for i in range(1, len(self._names) - 1):
                left = self._left[i]
                stages[self._names[i]] = StageStats(
                    name=self._names[i],
                    wip=len(self._places[i]),
                    limit=self._limits[i],
                    entered=self._entered[i],
                    left=left,
                    throughput=left / elapsed if elapsed > 0 else 0.0,
                    mean_time=self._time_in[i] / left if left else 0.0,
                    waiting=len(self._waiters[i]),
                )
            return KanbanStats(
                stages=stages,
                backlog=len(self._places[0]),
                done=self._entered[-1],
                added=self._added,
                elapsed=elapsed,
            )

    def __repr__(self) -> str:
        with self._lock:
            parts = [f"backlog={len(self._places[0])}"]
            for i in range(1, len(self._names) - 1):
                parts.append(f"{self._names[i]}={len(self._places[i])}/{self._limits[i]}")
            parts.append(f"done={len(self._places[-1])}")
        return f"<Kanban {' '.join(parts)}>"

    # ------------------------------------------------------------------ changes

    def add(self, item: Hashable) -> None:
        """Put ``item`` in the backlog. ValueError when it is already on the board;
        TypeError when it is not hashable."""
        with self._lock:
            if item in self._where:
                raise ValueError(f"{item!r} is already on the board ({self._names[self._where[item]]})")
            now = self._now()
            self._where[item] = 0
            self._places[0][item] = None
            self._since[item] = now
            self._entered[0] += 1
            self._added += 1

    def add_many(self, items: Iterable[Hashable]) -> None:
        """``add`` each item in turn (those before a refused one stay added)."""
        for item in items:
            self.add(item)

    def clear_done(self) -> list:
        """Remove the finished items from the board and return them (in order of arrival).
        ``stats().done`` keeps counting them."""
        with self._lock:
            done = self._places[-1]
            cleared = list(done)
            for item in cleared:
                del self._where[item]
                del self._since[item]
            done.clear()
            return cleared

    def pull(self, item: Hashable, timeout: float | None = None) -> bool:
        """Move ``item`` into the next stage when that stage has room: True when moved,
        False when ``timeout`` seconds passed first (``timeout=0`` never waits; None waits
        as long as it takes). Pulling out of the last stage moves the item to done, which
        always has room. Waiting pulls are served in arrival order, per stage.

        ValueError when the item is not on the board, is already done, or already has a
        pull waiting. Ctrl-C (KeyboardInterrupt) ends a wait in the main thread; an
        interrupted pull moved nothing."""
        deadline = _deadline(timeout)
        with self._lock:
            target = self._target(item)
            if self._may_enter(target):
                self._move(item, target)
                return True
            if timeout == 0 or (deadline is not None and deadline <= time.monotonic()):
                return False  # timeout 0 never waits
            waiter = _Waiter(item, target, cond=threading.Condition(self._lock))
            self._enqueue(waiter)
            try:
                while True:
                    if self._is_head_with_room(waiter):
                        self._move(item, target)
                        self._dequeue(waiter, wake=False)
                        self._wake_head(target)  # room left after this move: the next may go
                        return True
                    if deadline is None:
                        waiter.cond.wait()
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            self._dequeue(waiter)
                            return False
                        # An infinite (or huge) timeout waits in the longest slice a lock
                        # allows (threading.TIMEOUT_MAX): wait() refuses longer ones.
                        waiter.cond.wait(min(remaining, threading.TIMEOUT_MAX))
                    waiter.notified = False
            except BaseException:
                # KeyboardInterrupt or another exception raised in the wait: nothing moved.
                if waiter in self._waiters[target]:
                    self._dequeue(waiter)
                raise

    async def apull(self, item: Hashable, timeout: float | None = None) -> bool:
        """The asyncio form of :meth:`pull`: same rules, waits without blocking the loop,
        shares the FIFO queues with threads. Cancellation-safe: a cancelled ``apull`` moved
        nothing, and a wake-up meant for it passes to the next waiter."""
        import asyncio  # here, so that `import bpstream` does not import asyncio

        loop = asyncio.get_running_loop()
        deadline = _deadline(timeout)
        with self._lock:
            target = self._target(item)
            if self._may_enter(target):
                self._move(item, target)
                return True
            if timeout == 0 or (deadline is not None and deadline <= time.monotonic()):
                return False  # timeout 0 never waits
            waiter = _Waiter(item, target, loop=loop, future=loop.create_future())
            self._enqueue(waiter)
        timer = None
        try:
            if deadline is not None:
                # The deadline wakes the future too; the loop below tells the two apart.
                timer = loop.call_later(
                    max(deadline - time.monotonic(), 0.0), lambda: _resolve(waiter.future)
                )
            while True:
                await waiter.future
                with self._lock:
                    waiter.notified = False
                    if self._is_head_with_room(waiter):
                        self._move(item, target)
                        self._dequeue(waiter, wake=False)
                        self._wake_head(target)  # room left after this move: the next may go
                        return True
                    if deadline is not None and deadline <= time.monotonic():
                        self._dequeue(waiter)
                        return False
                    waiter.future = loop.create_future()
                    if timer is not None:
                        timer.cancel()
                        timer = loop.call_later(
                            max(deadline - time.monotonic(), 0.0),
                            lambda: _resolve(waiter.future),
                        )
        except BaseException:
            with self._lock:
                if waiter in self._waiters[target]:
                    self._dequeue(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    # ------------------------------------------------------------------ under the lock

    def _target(self, item) -> int:
        """The place a pull of ``item`` moves it to; raises ValueError when it cannot."""
        where = self._where.get(item)
        if where is None:
            raise ValueError(f"{item!r} is not on the board (add it first)")
        if where == len(self._names) - 1:
            raise ValueError(f"{item!r} is already done")
        if item in self._pending:
            raise ValueError(f"{item!r} already has a pull waiting")
        return where + 1

    def _has_room(self, place: int) -> bool:
        limit = self._limits[place]
        return limit is None or len(self._places[place]) < limit

    def _may_enter(self, place: int) -> bool:
        # No barging: a new pull takes a slot only when nobody waits for this stage.
        return self._has_room(place) and not self._waiters[place]

    def _is_head_with_room(self, waiter: _Waiter) -> bool:
        queue = self._waiters[waiter.target]
        return queue[0] is waiter and self._has_room(waiter.target)

    def _enqueue(self, waiter: _Waiter) -> None:
        self._waiters[waiter.target].append(waiter)
        self._pending.add(waiter.item)

    def _dequeue(self, waiter: _Waiter, wake: bool = True) -> None:
        """Take ``waiter`` out of its queue. With ``wake`` (it gives up: timeout, Ctrl-C,
        cancellation) the next head is woken if it can proceed, so a wake-up meant for the
        one leaving is passed on, not lost."""
        self._waiters[waiter.target].remove(waiter)
        self._pending.discard(waiter.item)
        if wake:
            self._wake_head(waiter.target)

    def _move(self, item, target: int) -> None:
        source = target - 1
        now = self._now()  # first: a clock that raises leaves the board as it was
        del self._places[source][item]
        self._left[source] += 1
        self._time_in[source] += max(now - self._since[item], 0.0)
        self._places[target][item] = None
        self._where[item] = target
        self._since[item] = now
        self._entered[target] += 1
        # The slot the item left is free at once: the pull waiting first for it may go.
        self._wake_head(source)

    def _wake_head(self, place: int) -> None:
        queue = self._waiters[place]
        if not queue or not self._has_room(place):
            return
        head = queue[0]
        if head.notified:
            return
        head.notified = True
        if head.cond is not None:
            head.cond.notify()
        else:
            try:
                head.loop.call_soon_threadsafe(_resolve, head.future)
            except RuntimeError:
                # Its loop is closed: that pull can never run again. Drop it and wake the
                # next one instead.
                queue.popleft()
                self._pending.discard(head.item)
                self._wake_head(place)


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if timeout != timeout:
        raise ValueError("timeout must not be NaN")
    if timeout < 0:
        raise ValueError("timeout must be >= 0 or None")
    return time.monotonic() + timeout
