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
- Time: the ticket carries its timeout (ticket.set_timeout, on the controller's clock,
  counted from its enqueue), so the core times it as it times a blocking acquire(): a
  poll after it passed raises TimeoutError. On the monotonic clock nothing notifies a
  ticket when its permits come due or its timeout passes, so the waiter sleeps
  (loop.call_later) for the time the poll gave (the sooner of the two). On a ManualClock
  every move notifies the tickets it makes due or whose timeout it passes, so no timer
  is set at all.
- Fork: a child inherits the tickets of every loop. Only a loop on the forking thread can
  run in the child; the tickets of the others would hold their place in line forever, so
  the child releases them (counted as cancelled) at once (_forget_dead_tickets).
- A loop closed while tasks still waited (loop.close() without cancelling them) would do
  the same: the next async wait to start, on any loop, releases those tickets and drops
  their futures so the loop can be freed (_forget_closed_loops). A blocking call
  that must wait sweeps too (acquire(), `with limiter:`), before it joins the line.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading

from . import _aio


class _Tickets:
    """One event loop's waiting tickets (of any controller or limiter), in
    _LoopWaker.waiters beside the streams' _Waiters."""

    def __init__(self) -> None:
        self.futures: dict = {}
        # The loop's thread (created on it); every ticket of this loop from its enqueue
        # until its release.
        self.thread = threading.get_ident()
        self.live: set = set()

    def dispatch(self) -> None:
        for ticket, future in list(self.futures.items()):
            if ticket.take_pending() and not future.done():
                future.set_result(None)


def _loop_tickets(loop) -> tuple[_aio._LoopWaker, _Tickets]:
    _forget_closed_loops()
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
    timed_out = False
    try:
        if timeout is not None:
            ticket.set_timeout(timeout)
        while True:
            ticket.take_pending()  # a notify from now on wakes the wait below
            try:
                retry_ns = ticket.poll()
            except TimeoutError:
                timed_out = True
                raise
            if retry_ns == 0:
                return owner._now() - start
            # > 0: permits due or timeout passing then (a ManualClock notifies instead).
            delay = retry_ns / 1e9 if retry_ns > 0 and not manual else math.inf
            future = loop.create_future()
            tickets.futures[ticket] = future
            timer = loop.call_later(delay, _wake, future) if delay != math.inf else None
            try:
                await future
            finally:
                tickets.futures.pop(ticket, None)  # gone if its loop was closed
                if timer is not None:
                    timer.cancel()
    finally:
        tickets.live.discard(ticket)
        ticket.release(timed_out)


async def rate_wait(controller, n: int, timeout) -> float:
    """controller.aacquire(n, timeout) found too few permits and may wait."""
    loop = asyncio.get_running_loop()
    loop_waker, tickets = _loop_tickets(loop)
    ticket = controller._enqueue(n, loop_waker.waker)
    tickets.live.add(ticket)
    try:
        return await _wait_granted(controller, ticket, timeout, loop, tickets)
    except ValueError:
        # The limit was lowered below n while it waited (the ticket left the line):
        # raise the controller's own words for this n, as a blocking acquire does.
        controller.retry_after(n)
        raise


async def limiter_wait(limiter, timeout, as_token: bool):
    """limiter.aacquire(timeout) (a Token) or `async with limiter` (None) must wait."""
    loop = asyncio.get_running_loop()
    loop_waker, tickets = _loop_tickets(loop)
    ticket = limiter._enqueue(loop_waker.waker)
    tickets.live.add(ticket)
    await _wait_granted(limiter, ticket, timeout, loop, tickets)
    # Granted: the slot is ours. No await between the grant and here, so no cancellation
    # can come between: the slot is handed to a Token (or to the async with block) at once.
    return limiter._adopt() if as_token else None


def _release_all(tickets: _Tickets) -> None:
    """Release every ticket of a loop that will never run them again (each takes
    nothing, counted as cancelled) and drop their futures, which hold that loop."""
    for ticket in list(tickets.live):
        ticket.release(False)
    tickets.live.clear()
    tickets.futures.clear()


def _forget_closed_loops() -> None:
    """A loop closed while tasks waited (loop.close() without cancelling them, unlike
    asyncio.run) would keep their tickets first in line forever, and through their
    futures keep itself alive in _aio._loop_wakers. Run before every async wait starts."""
    for loop, loop_waker in list(_aio._loop_wakers.items()):
        tickets = getattr(loop_waker, "tickets", None)
        if tickets is not None and tickets.live and loop.is_closed():
            _release_all(tickets)


def _forget_dead_tickets() -> None:
    """In a forked child: release the tickets of loops that ran on other threads of the
    parent (those loops cannot run here). A ticket released here takes nothing; its
    coroutine, if it is ever closed, releases it again, which does nothing."""
    me = threading.get_ident()
    for loop_waker in list(_aio._loop_wakers.values()):
        tickets = getattr(loop_waker, "tickets", None)
        if tickets is not None and tickets.thread != me:
            _release_all(tickets)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_dead_tickets)
