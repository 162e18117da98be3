"""asyncio on rate controllers and limiters: the waiting half of aacquire / async with.

The C half (_rate.c, _limiter.c) grants at once when it can (an awaitable already done).
Only a call that must wait comes here. It waits with a core TICKET (bpstream.h): a place in
the same first-come-first-served line as blocking threads, so tasks and threads are served
in arrival order and nobody barges. The rules are _aio.py's:

- A waiter is woken, never handed permits: the woken task polls its ticket, and only a poll
  that says "granted" takes them. So a task cancelled while waiting (or woken, then
  cancelled) takes nothing; releasing its ungranted ticket passes its turn to the next.
- Wake-ups reuse _aio.py's per-loop eventfd (_LoopWaker): the core calls the ticket's
  notify on any thread (a thread releasing a slot, a rate change, a ManualClock moving)
  and it only writes that eventfd; the loop's reader callback runs dispatch() below,
  which resolves the future of every registered ticket that was notified.
- Time: on the monotonic clock nothing notifies a ticket when its permits come due, so
  the waiter also sleeps (loop.call_later) until the due time the poll gave, or its
  deadline. On a ManualClock every move notifies the tickets on it, so no timer is set;
  the timeout is measured on the controller's clock, as for blocking acquire() (a
  waiter with a timeout on a ManualClock re-reads it every MANUAL_DEADLINE_CHECK s).
"""

from __future__ import annotations

import asyncio
import math

from . import _aio

# A move of a ManualClock notifies only the tickets it makes due, not those whose timeout
# it passes: a waiter with a timeout on such a clock looks at the clock this often (real
# seconds). Only tests and simulations use a ManualClock.
MANUAL_DEADLINE_CHECK = 0.01


class _Tickets:
    """One event loop's waiting tickets (of any controller or limiter), in
    _LoopWaker.waiters beside the streams' _Waiters."""

    def __init__(self) -> None:
        self.futures: dict = {}

    def dispatch(self) -> None:
        for ticket, future in list(self.futures.items()):
            if ticket.take_pending() and not future.done():
                future.set_result(None)


def _loop_tickets(loop) -> tuple[_aio._LoopWaker, _Tickets]:
    loop_waker = _aio._loop_wakers.get(loop)
    if loop_waker is None:
        loop_waker = _aio._loop_wakers[loop] = _aio._LoopWaker(loop)
    tickets = getattr(loop_waker, "tickets", None)
    if tickets is None:
        tickets = loop_waker.tickets = _Tickets()
        loop_waker.waiters.add(tickets)
    return loop_waker, tickets


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


async def _wait_granted(owner, ticket, timeout, loop, tickets: _Tickets) -> float:
    """Polls `ticket` until it is granted; returns the seconds waited on the owner's clock.
    Raises TimeoutError when the timeout passes. Always releases the ticket: ungranted, it
    takes nothing (counted as timed out or cancelled)."""
    manual = owner.clock is not None
    start = owner._now()
    deadline = None if timeout is None else start + timeout
    timed_out = False
    try:
        while True:
            ticket.take_pending()  # a notify from now on wakes the wait below
            retry_ns = ticket.poll()
            if retry_ns == 0:
                return owner._now() - start
            now = owner._now()
            if deadline is not None and now >= deadline:
                timed_out = True
                raise TimeoutError
            delay = math.inf
            if not manual:
                if retry_ns > 0:
                    delay = retry_ns / 1e9
                if deadline is not None:
                    delay = min(delay, deadline - now)
            elif deadline is not None:
                delay = MANUAL_DEADLINE_CHECK
            future = loop.create_future()
            tickets.futures[ticket] = future
            timer = loop.call_later(delay, _wake, future) if delay != math.inf else None
            try:
                await future
            finally:
                del tickets.futures[ticket]
                if timer is not None:
                    timer.cancel()
    finally:
        ticket.release(timed_out)


async def rate_wait(controller, n: int, timeout) -> float:
    """controller.aacquire(n, timeout) found too few permits and may wait."""
    loop = asyncio.get_running_loop()
    loop_waker, tickets = _loop_tickets(loop)
    ticket = controller._enqueue(n, loop_waker.waker)
    return await _wait_granted(controller, ticket, timeout, loop, tickets)


async def limiter_wait(limiter, timeout, as_token: bool):
    """limiter.aacquire(timeout) (a Token) or `async with limiter` (None) must wait."""
    loop = asyncio.get_running_loop()
    loop_waker, tickets = _loop_tickets(loop)
    ticket = limiter._enqueue(loop_waker.waker)
    await _wait_granted(limiter, ticket, timeout, loop, tickets)
    # Granted: the slot is ours. No await between the grant and here, so no cancellation
    # can come between: the slot is handed to a Token (or to the async with block) at once.
    return limiter._adopt() if as_token else None
