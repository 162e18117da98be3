"""asyncio on a BoundedStream: the waiting half of aget/aput/async for.

The C half (_aio.c) returns an awaitable that is already done whenever an item or room is
there. Only a call that must wait comes here. The rules:

- A waiter is woken, never handed an item: the woken task retries the non-blocking call.
  So a task cancelled while waiting takes nothing (get) and stores nothing (put), and one
  cancelled after its wake-up passes the wake-up on to the next waiter, if any.
- Per event loop, one eventfd (_bpstream._Waker) the loop watches with add_reader. Per
  (stream, loop) one core readiness watch (_Watch) and two FIFO lists of futures, getters
  and putters (_Waiters). The watch is armed only while someone waits; whichever thread
  makes an armed readiness true (a native producer too, without the GIL) writes the
  eventfd; the loop's callback wakes the first waiter of each kind concerned.
- A woken waiter that succeeds and leaves others waiting re-arms for them (chain wake-up):
  one readiness edge may stand for many items.
- An async wait is accounted in the stats like a thread's (producer_waits, consumer_waits,
  their times, a put that times out as rejected), and only a wait counts.
- join (bpstream.AsyncQueue): the same watch, armed for TASKS_DONE (no unfinished tasks;
  the core notifies where a task_done, from any thread, or an immediate shutdown's
  discards bring them to 0). Like asyncio.Queue's Event, it wakes every joiner of the loop.
- Flow control (flow=, rate=, policy="adaptive"): an aput that may wait passes the rate and
  the flow gate as a blocking put does, suspending its task (aput_flow, at the end).
- Same-thread wake-ups (see _aio.c): dispatch_due() runs a due dispatch at once, so a
  task woken by a call on its own loop's thread runs in the same iteration.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import time
import weakref

from . import _bpstream

READABLE, WRITABLE, CLOSED, TASKS_DONE = 1, 2, 4, 8

# bpstream.Closed subclasses queue.ShutDown (3.13+); it is asyncio.QueueShutDown too, from
# the moment bpstream's asyncio half is imported (so `import bpstream` never imports
# asyncio): every awaitable that can raise it imports this module first.
if hasattr(asyncio, "QueueShutDown") and not issubclass(_bpstream.Closed, asyncio.QueueShutDown):
    _bpstream.Closed.__bases__ = (queue.ShutDown, asyncio.QueueShutDown)

take_due = _bpstream._Waker.take_due
_get_running_loop = asyncio._get_running_loop
PUT_WAITS, PUT_WAITED, PUT_GAVE_UP, GET_WAITS, GET_WAITED = 1, 2, 3, 4, 5


class _LoopWaker:
    """One event loop's eventfd and the waiters of every stream waiting on that loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.waker = _bpstream._Waker()
        self.waiters: set[_Waiters] = set()
        loop.add_reader(self.waker.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        self.waker.drain()
        for waiters in list(self.waiters):
            waiters.dispatch()


_loop_wakers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker]" = (
    weakref.WeakKeyDictionary()
)


class _Waiters:
    """The tasks of one loop waiting on one stream: getters and putters, oldest first."""

    def __init__(self, stream, loop_waker: _LoopWaker):
        self.watch = stream._watch(loop_waker.waker)
        self.loop_waker = loop_waker
        self.getters: collections.deque[asyncio.Future] = collections.deque()
        self.putters: collections.deque[asyncio.Future] = collections.deque()
        self.joiners: collections.deque[asyncio.Future] = collections.deque()

    def dispatch(self) -> None:
        events = self.watch.take_pending()
        if events & TASKS_DONE:
            self._wake_all(self.joiners)
        if events & CLOSED:
            self._wake_all(self.getters)
            self._wake_all(self.putters)
            return
        if events & READABLE:
            self.wake_next(self.getters)
        if events & WRITABLE:
            self.wake_next(self.putters)

    @staticmethod
    def wake_next(queue: collections.deque) -> None:
        while queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(None)
                return

    @staticmethod
    def _wake_all(queue: collections.deque) -> None:
        while queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(None)

    def rearm_for_next(self, queue: collections.deque, events: int, ready: bool = False) -> None:
        """A waiter succeeded: if others wait and what they wait for already holds, wake
        the next now; else the watch is armed and the next transition wakes it. `ready`:
        the caller knows it holds (items in the stream object's read-ahead, which the
        core's buffer does not show)."""
        if queue and (ready or self.watch.arm(events)):
            self.wake_next(queue)


def _waiters(stream) -> _Waiters:
    loop = asyncio.get_running_loop()
    loop_waker = _loop_wakers.get(loop)
    if loop_waker is None:
        loop_waker = _loop_wakers[loop] = _LoopWaker(loop)
    table = stream._async_waiters
    if table is None:
        table = stream._async_waiters = weakref.WeakKeyDictionary()
    waiters = table.get(loop)
    if waiters is None:
        waiters = table[loop] = _Waiters(stream, loop_waker)
        loop_waker.waiters.add(waiters)
        # Forgotten when the loop OR the stream dies, whichever first: a long-lived loop
        # must not keep every stream that ever waited on it (nor walk them all per wake-up).
        forget = weakref.finalize(loop, _forget, weakref.ref(loop_waker), waiters)
        weakref.finalize(stream, forget)
    return waiters


def _forget(loop_waker_ref, waiters: _Waiters) -> None:
    loop_waker = loop_waker_ref()
    if loop_waker is not None:
        loop_waker.waiters.discard(waiters)
    waiters.watch.close()


async def _wait_ready(waiters: _Waiters, queue: collections.deque, events: int,
                      deadline: float | None, front: bool) -> bool:
    """Waits until woken for `events` (True) or until the deadline (False). Cancellation
    propagates; a wake-up it had already received is passed on first."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    if front:
        queue.appendleft(future)
    else:
        queue.append(future)
    if waiters.watch.arm(events):  # ready now: do not wait
        _discard(queue, future)
        return True
    try:
        if deadline is None:
            await future
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await future
            except TimeoutError:
                if future.done() and not future.cancelled():
                    waiters.wake_next(queue)  # woken, then timed out: pass the wake-up on
                return False
        return True
    except BaseException:
        if future.done() and not future.cancelled():
            waiters.wake_next(queue)  # woken, then cancelled: pass the wake-up on
        raise
    finally:
        _discard(queue, future)


def _discard(queue: collections.deque, future: asyncio.Future) -> None:
    try:
        queue.remove(future)
    except ValueError:
        pass


def _deadline(timeout) -> float | None:
    if timeout is None:
        return None
    try:
        return time.monotonic() + timeout
    except OverflowError:  # an int beyond any float (10**400): no limit, as get() reads it
        return None


async def aget_wait(stream, timeout):
    """stream.aget() found nothing and may wait."""
    return await _take_waiting(stream, stream.get_nowait, timeout)


async def _take_waiting(stream, take, timeout):
    """Waits for the stream to be readable, then retries take() (a non-blocking get, or
    get_many), until it returns, the deadline passes (Empty) or the task is cancelled."""
    waiters = _waiters(stream)
    deadline = _deadline(timeout)
    started = time.monotonic()
    stream._account(GET_WAITS, 0.0)
    woken = False
    try:
        while True:
            try:
                result = take()
            except _bpstream.Empty:
                pass
            except Exception:
                # Closed (and drained), or the producer's error: the next getter may have
                # been left waiting on a watch this call's arm() consumed. Pass it on.
                waiters.wake_next(waiters.getters)
                raise
            else:
                # len() counts the read-ahead too: a batch taken by this get may hold the
                # items the next waiter needs, out of the core buffer's (and arm's) sight.
                waiters.rearm_for_next(waiters.getters, READABLE, ready=len(stream) > 0)
                if take_due():
                    dispatch_due()
                return result
            if not await _wait_ready(waiters, waiters.getters, READABLE, deadline, front=woken):
                raise _bpstream.Empty
            woken = True
    finally:
        stream._account(GET_WAITED, time.monotonic() - started)


def dispatch_due() -> None:
    """A notify ran on this thread for a loop it runs (take_due() was true): dispatch the
    running loop's waiters now rather than at its next iteration."""
    loop = _get_running_loop()
    if loop is not None:
        loop_waker = _loop_wakers.get(loop)
        if loop_waker is not None:
            loop_waker._on_readable()


async def join_wait(stream) -> None:
    """AsyncQueue.join(): waits until no task is unfinished. Woken means done (as with
    asyncio.Queue's Event: a put after the wake-up does not hold it back)."""
    waiters = _waiters(stream)
    future = asyncio.get_running_loop().create_future()
    waiters.joiners.append(future)
    try:
        if waiters.watch.arm(TASKS_DONE) & TASKS_DONE:
            return
        await future
    finally:
        _discard(waiters.joiners, future)


async def aqput_wait(stream, item) -> None:
    """AsyncQueue.put found a full block queue: waits (result None, as asyncio.Queue.put)."""
    await aput_wait(stream, item, None)
    if take_due():
        dispatch_due()


async def anext_wait(stream):
    """`async for` found nothing and waits (without limit); ends once closed and drained."""
    try:
        return await aget_wait(stream, None)
    except _bpstream.Closed:
        raise StopAsyncIteration from None


async def aput_wait(stream, item, timeout):
    """stream.aput() found a full block stream and may wait (nothing counted yet)."""
    waiters = _waiters(stream)
    deadline = _deadline(timeout)
    started = time.monotonic()
    stream._account(PUT_WAITS, 0.0)
    outcome = PUT_WAITED
    woken = False
    try:
        while True:
            if woken or waiters.watch.arm(WRITABLE):
                try:
                    stored = stream._try_put(item)
                except _bpstream.Full:
                    pass
                except Exception:
                    waiters.wake_next(waiters.putters)  # Closed: as in _take_waiting
                    raise
                else:
                    waiters.rearm_for_next(waiters.putters, WRITABLE)
                    return stored
            if not await _wait_ready(waiters, waiters.putters, WRITABLE, deadline, front=woken):
                outcome = PUT_GAVE_UP
                raise _bpstream.Full
            woken = True
    finally:
        stream._account(outcome, time.monotonic() - started)


async def aget_many_wait(stream, max_items, timeout):
    """stream.aget_many() found nothing and may wait: for one item, then a batch."""
    return await _take_waiting(stream, lambda: stream.get_many(max_items, timeout=0), timeout)


async def aput_many(stream, iterable, timeout):
    """stream.aput_many(): each item through aput (done at once while there is room).
    Flow control as put_many's: a stream that is only gated gates the call once, before
    its first item; a paced one paces (and gates) item by item, one permit each."""
    deadline = _deadline(timeout)
    stored = 0
    gate_once = (stream._async_flow & (ASYNC_FLOW_GATED | ASYNC_FLOW_PACED)) == ASYNC_FLOW_GATED
    gated = False
    try:
        for item in iterable:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if gate_once and remaining != 0.0:
                if not gated:
                    gated = True
                    await _pass_flow_gate(stream, deadline)
                    remaining = None if deadline is None else max(deadline - time.monotonic(), 1e-9)
                put = _put_after_gate(stream, item, remaining)
            else:
                put = stream.aput(item, timeout=remaining)   # 0: put_nowait, no wait counted
            if await put:
                stored += 1
    except BaseException as exc:
        try:
            exc.accepted = stored
        except AttributeError:
            pass
        raise
    return stored


# --- Flow control and pacing for asyncio puts --------------------------------------------
#
# A stream with flow=, rate= or policy="adaptive" (stream._async_flow != 0) delays and paces
# an aput that may wait as the core does a blocking put (FlowGate.swift), but the task, not
# the thread, waits. The C half completes such a put at once when it passes now (a permit
# there, taken; the gate NORMAL; room) and sends it here otherwise, with `permitted` when
# it took its permit already. The order is the core's: one permit from the rate
# (rate.aacquire, FIFO with the threads waiting on it), then the flow gate (bps_stream_flow_gate answers what
# it would do: THROTTLED -> one asyncio.sleep of the delay; PAUSED -> wait until the state
# falls below PAUSED; DROPPING (full, block) -> wait for room, then ask again), then the
# usual put (waiting for room if the stream is full). Accounting as the core's: a timeout
# passed on the rate or in the gate is one rejected put (_flow_gave_up; a delay longer than
# the time left ends with Full at the deadline); only a wait for room is a producer wait.
# An adaptive stream's rate hears what the core would tell it: backpressure when the put
# waited for room (the core itself reports entering PAUSED), success when the rate held
# the put and it was stored in NORMAL.
#
# Cancellation: waiting for the permit, the put takes nothing (aacquire's rule); once the
# permit is taken, a cancelled put stores nothing and its permit stays spent (the rate
# controllers cannot take a grant back; a blocking put that times out after its permit
# spends it the same way).
#
# PAUSED is polled (the gate query absorbs the consumers' deliveries, so each look is
# exact), every 1 ms at first, doubling to 20 ms (the bounds of the core's backstop
# recheck): a blocking put is also woken by the falling transition; an async one is not
# (no readiness event for "flow resumed"), so it may pass up to 20 ms late.

ASYNC_FLOW_GATED, ASYNC_FLOW_PACED, ASYNC_FLOW_ADAPTIVE = 1, 2, 4
FLOW_NORMAL, FLOW_THROTTLED, FLOW_PAUSED, FLOW_DROPPING = 0, 1, 2, 3
_PAUSE_POLL_FIRST, _PAUSE_POLL_LIMIT = 0.001, 0.020


def _gave_up(stream) -> None:
    stream._flow_gave_up()
    raise _bpstream.Full


async def aput_flow(stream, item, timeout, permitted=False):
    """stream.aput() with a timeout != 0 on a gated or paced stream (see above), or one
    that took its permit at once (`permitted`) and now waits in the gate or for room."""
    deadline = _deadline(timeout)
    flags = stream._async_flow
    rate = stream._pacing if flags & ASYNC_FLOW_PACED else None
    held_by_rate = False
    if rate is not None and not permitted:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            _gave_up(stream)
        try:
            held_by_rate = await rate.aacquire(1, timeout=remaining) > 0
        except (TimeoutError, ValueError):
            _gave_up(stream)   # timed out, or never grantable: as the core's putPaced
    waited_for_room = [False]
    stored = False
    try:
        if flags & ASYNC_FLOW_GATED:
            await _pass_flow_gate(stream, deadline, waited_for_room)
        remaining = None if deadline is None else max(deadline - time.monotonic(), 1e-9)
        stored = await _put_after_gate(stream, item, remaining, waited_for_room)
        return stored
    finally:
        if flags & ASYNC_FLOW_ADAPTIVE and rate is not None:
            _feedback(stream, rate, waited_for_room[0], held_by_rate and stored)


def _feedback(stream, rate, waited_for_room: bool, held_and_stored: bool) -> None:
    """An adaptive stream's feedback to its rate, after the put (the core's giveFeedback)."""
    if waited_for_room:
        on_backpressure = getattr(rate, "on_backpressure", None)
        if on_backpressure is not None:
            on_backpressure()
    elif held_and_stored and stream.flow_state == FLOW_NORMAL:  # the state, gated or not
        on_success = getattr(rate, "on_success", None)
        if on_success is not None:
            on_success()


async def _put_after_gate(stream, item, remaining, waited_for_room=None):
    """The put once gate and rate are passed: at once if there is room, else (block)
    waiting for room with what is left of the timeout (a producer wait)."""
    try:
        return stream._try_put(item)
    except _bpstream.Full:
        if stream.policy not in ("block", "adaptive"):
            raise
    if waited_for_room is not None:
        waited_for_room[0] = True
    return await aput_wait(stream, item, remaining)


async def _pass_flow_gate(stream, deadline, waited_for_room=None) -> None:
    """Passes the flow gate (see above); raises Full (one rejected put) at the deadline."""
    delayed = False
    poll = _PAUSE_POLL_FIRST
    while True:
        state, delay_ns = stream._flow_gate()
        if state == FLOW_NORMAL:
            return
        now = time.monotonic()
        if state == FLOW_THROTTLED:
            if delayed or delay_ns <= 0:
                return
            delayed = True
            delay = delay_ns / 1e9
            if deadline is not None and now + delay > deadline:
                await asyncio.sleep(max(deadline - now, 0.0))
                _gave_up(stream)
            await asyncio.sleep(delay)
        elif state == FLOW_DROPPING:
            if waited_for_room is not None:
                waited_for_room[0] = True
            await _wait_for_room(stream, deadline)
            poll = _PAUSE_POLL_FIRST
        else:  # PAUSED
            if deadline is not None and now >= deadline:
                _gave_up(stream)
            wait = poll if deadline is None else min(poll, deadline - now)
            await asyncio.sleep(wait)
            poll = min(poll * 2, _PAUSE_POLL_LIMIT)


async def _wait_for_room(stream, deadline) -> None:
    """The gate found the block stream full: waits for room as aput_wait does (a producer
    wait; its timeout is one rejected put, Full), without putting: the gate asks again."""
    waiters = _waiters(stream)
    started = time.monotonic()
    stream._account(PUT_WAITS, 0.0)
    outcome = PUT_WAITED
    try:
        if not await _wait_ready(waiters, waiters.putters, WRITABLE, deadline, front=False):
            outcome = PUT_GAVE_UP
            raise _bpstream.Full
        # Woken (or room already): the wake-up may be for more than this put. Pass it on.
        waiters.rearm_for_next(waiters.putters, WRITABLE)
    finally:
        stream._account(outcome, time.monotonic() - started)
