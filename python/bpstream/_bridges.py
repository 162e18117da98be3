"""Bridges between sync and async code: one background thread per bridge, a BoundedStream
between the two sides, backpressure both ways.

    from_aiter(aiterable)  an event loop in one thread drives an async iterable; sync code
                           iterates the returned stream (the bounded apply_sync_streaming)
    from_iter(iterable)    one thread drives a blocking iterator; asyncio code consumes the
                           returned stream with `async for`

THE THREAD NEVER KEEPS THE STREAM ALIVE
 The thread holds a weak reference to the stream, strong only for the length of one
 non-blocking call (_offer, _end). It never waits inside put() or aput(), whose frames
 would hold the stream: it waits for room on its own readiness watch (stream._watch on an
 eventfd _Waker; the core notifies an armed watch when room appears AND when the stream
 closes). So a consumer that drops the stream frees it; freeing closes the core stream,
 which wakes a thread waiting for room, and the weak reference's callback asks the thread
 to stop wherever else it is (awaiting the async iterable: the task is cancelled; inside a
 blocking next(): it stops when next() returns). Nothing that belongs to the thread
 references the stream: no cycle, no finalizer needed.

STOPPING (close(), leaving `with` / `async with`, dropping the stream)
 The stream is closed first, then the thread is told to stop (_Bridge.stop), then close()
 joins it, for at most JOIN_TIMEOUT: from_aiter cancels the task that awaits the iterable
 and then runs its aclose(), so the async generator's finally blocks run on its own loop
 before close() returns; from_iter stops at its next put and calls the iterator's close().
 An iterable that ignores cancellation (or a next() that blocks) keeps its thread until it
 gives up: close() then returns after JOIN_TIMEOUT with a RuntimeWarning, and the daemon
 thread ends on its own as soon as the iterable returns (every item it offers after the
 stop is refused). Dropping the stream stops the thread the same way but joins nothing.

ERRORS
 The producer's exception ends the stream through stream._close_with_error(exc): the
 consumer gets every item put before it, then that exception itself (its type, message and
 traceback), in place. Both bridges run the iterable in a copy of the caller's contextvars
 context (as DSPy's apply_sync_streaming does), so request ids and the like carry over.
"""

from __future__ import annotations

import asyncio
import contextvars
import select
import threading
import time
import warnings
import weakref

from . import _bpstream
from ._bpstream import BoundedStream, Closed, Full

#: How long close() waits for a bridge's thread to finish its cleanup.
JOIN_TIMEOUT = 1.0

_WRITABLE = 2  # bpstream.h BPS_WRITABLE (readable or closed: the core adds CLOSED)
_PUT_WAITS, _PUT_WAITED = 1, 2  # the stats accounting codes of bpstream._aio

_STORED, _FULL, _GONE = "stored", "full", "gone"


# --- What runs with the stream held: one non-blocking call each ------------------------

def _offer(ref, item, block: bool) -> str:
    """One non-blocking put: _STORED (stored, shed, evicted or rejected: the policy had its
    say), _FULL (a full block stream: wait for room), _GONE (closed or freed: stop)."""
    stream = ref()
    if stream is None:
        return _GONE
    try:
        if block:
            stream._try_put(item)
        else:
            stream.put_nowait(item)  # drop_*: never waits; reject: Full, counted as rejected
    except Full:
        return _FULL if block else _STORED
    except Closed:
        return _GONE
    return _STORED


def _account(ref, what: int, seconds: float) -> None:
    """A wait for room counts in stats() like a blocking put's (producer_waits, seconds)."""
    stream = ref()
    if stream is not None:
        stream._account(what, seconds)


def _end(ref, error: BaseException | None) -> None:
    """The producer ended: close the stream (with its error) unless it is already gone."""
    stream = ref()
    if stream is not None:
        if error is None:
            BoundedStream.close(stream)
        else:
            stream._close_with_error(error)


class _Watcher:
    """A readiness watch on the stream and the eventfd it writes: made with the stream at
    hand (by the caller), used by the thread, which then holds the core stream only."""

    def __init__(self, stream: BoundedStream):
        self.waker = _bpstream._Waker()
        self.watch = stream._watch(self.waker)


# --- What the stream and its thread share -------------------------------------------------

class _Bridge:
    """The thread's state; the stream holds it, it never holds the stream."""

    def __init__(self, kind: str):
        self.kind = kind
        self.lock = threading.Lock()
        self.stopping = False
        self.done = False
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # from_aiter's loop, once running
        self.task: asyncio.Task | None = None
        self.finishing = False  # from_aiter: cleanup began, cancel no more (loop thread only)
        self.done_futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    def start(self, target, *args) -> None:
        context = contextvars.copy_context()
        self.thread = threading.Thread(
            target=context.run, args=(self._run, target, *args),
            name=f"bpstream.{self.kind}", daemon=True,  # never holds up interpreter exit
        )
        self.thread.start()

    def _run(self, target, *args) -> None:
        try:
            target(self, *args)
        finally:
            with self.lock:
                self.done = True
                futures, self.done_futures = self.done_futures, []
            for loop, future in futures:
                try:
                    loop.call_soon_threadsafe(_set_done, future)
                except RuntimeError:  # that loop is closed: nobody awaits any more
                    pass

    # Any thread: close(), __exit__, the weak reference's callback.
    def stop(self, _ref=None) -> None:
        with self.lock:
            if self.stopping:
                return
            self.stopping = True
            loop = self.loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._cancel)
            except RuntimeError:  # the loop is closed: the thread is ending anyway
                pass

    def _cancel(self) -> None:  # on from_aiter's loop
        if self.task is not None and not self.finishing:
            self.task.cancel()

    def running_on(self, loop, task) -> bool:
        """from_aiter's loop is up: False if a stop came first (then do not start)."""
        with self.lock:
            self.loop, self.task = loop, task
            return not self.stopping

    def join(self, timeout: float | None = None) -> bool:
        timeout = JOIN_TIMEOUT if timeout is None else timeout
        thread = self.thread
        if thread is None or thread is threading.current_thread():
            return False
        thread.join(timeout)
        if thread.is_alive():
            self._warn_alive(timeout)
            return False
        return True

    async def join_async(self, timeout: float | None = None) -> bool:
        """join() for a task: suspends until the thread's end, blocking no loop."""
        timeout = JOIN_TIMEOUT if timeout is None else timeout
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self.lock:
            if not self.done:
                self.done_futures.append((loop, future))
            else:
                future.set_result(None)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            self._warn_alive(timeout)
            return False
        self.thread.join()  # the target has returned: this is the thread's last moment
        return True

    def _warn_alive(self, timeout: float) -> None:
        what = "async iterable ignored cancellation" if self.kind == "from_aiter" else (
            "iterator's next() has not returned")
        warnings.warn(
            f"bpstream.{self.kind}: the {what} for {timeout:g} s; its daemon thread ends "
            "as soon as it gives up (whatever it yields from now on is refused)",
            RuntimeWarning, stacklevel=3,
        )


def _set_done(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class _BridgeStream(BoundedStream):
    """A BoundedStream fed by a bridge's thread: closing it also stops and joins the
    thread. Everything else (get, iteration, aget, async for, stats) is BoundedStream's."""

    _bridge: _Bridge

    def close(self, immediate: bool = False) -> None:
        """Close the stream (see BoundedStream.close), stop the producer thread and wait up
        to JOIN_TIMEOUT (1 s) for it to finish its cleanup."""
        BoundedStream.close(self, immediate)
        self._bridge.stop()
        self._bridge.join()

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        self.close()

    async def __aexit__(self, exc_type, exc_value, traceback) -> None:
        BoundedStream.close(self)
        self._bridge.stop()
        await self._bridge.join_async()


class FromAiterStream(_BridgeStream):
    """The stream bpstream.from_aiter returns (an async iterable's items, for sync code)."""


class FromIterStream(_BridgeStream):
    """The stream bpstream.from_iter returns (a blocking iterator's items, for asyncio)."""


def _new_stream(cls, kind: str, capacity, policy):
    stream = cls(capacity, policy)  # validates capacity and policy first
    bridge = stream._bridge = _Bridge(kind)
    ref = weakref.ref(stream, bridge.stop)  # dropped or collected: stop the thread
    return stream, bridge, ref, stream.policy == "block"


# --- from_aiter: an event loop in one thread drives an async iterable ---------------------

def from_aiter(aiterable, capacity: int = 64, policy: str = "block") -> FromAiterStream:
    """Drive an async iterable on an event loop in one background thread; iterate its items
    from sync code, with backpressure.

    ``aiterable`` is any async iterable: an async generator, DSPy's ``streamify`` output,
    an LLM client's stream. Its items go through a ``BoundedStream(capacity, policy)``,
    which is returned: ``for item in stream``, ``get()``, ``stats()`` work as usual. With
    ``block`` a slow consumer suspends the producer (it awaits room on its own loop, at most
    ``capacity`` items ahead, plus the one in its hand); with ``drop_*`` it sheds as the
    policy says; with ``reject`` an item that finds the stream full is dropped and counted
    in ``stats().rejected``.

    An exception in the producer is raised in the consumer in place: after every item
    before it, with its own type and traceback. Exhaustion ends the iteration.

    ``close()``, leaving a ``with`` block, or dropping the stream cancels the producer: the
    task awaiting the iterable is cancelled and its ``aclose()`` runs (an async generator's
    ``finally`` blocks run, on its loop, in the caller's contextvars), then the loop closes
    and the thread ends; ``close()`` waits for that (a few milliseconds). An iterable that
    ignores cancellation keeps its thread until it gives up: ``close()`` waits at most 1 s,
    then returns with a ``RuntimeWarning``; the thread is a daemon and ends on its own.
    The loop is the thread's own (``asyncio.run``), so the iterable must not be bound to
    another event loop.
    """
    iterator = aiter(aiterable)  # TypeError at once, not in the thread
    stream, bridge, ref, block = _new_stream(FromAiterStream, "from_aiter", capacity, policy)
    bridge.start(_run_aiter, ref, iterator, block, _Watcher(stream))
    return stream


def _run_aiter(bridge: _Bridge, ref, iterator, block: bool, watcher: _Watcher) -> None:
    asyncio.run(_pump_aiter(bridge, ref, iterator, block, watcher))


class _LoopRoom:
    """Waiting for room on the bridge's loop: a watch on the stream, an eventfd the loop
    watches. Holds the core stream (through the watch), never the stream object."""

    def __init__(self, watcher: _Watcher, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.waker, self.watch = watcher.waker, watcher.watch
        self.future: asyncio.Future | None = None
        loop.add_reader(self.waker.fileno(), self._on_wake)

    def _on_wake(self) -> None:
        self.waker.drain()
        self.watch.take_pending()
        if self.future is not None and not self.future.done():
            self.future.set_result(None)

    async def put(self, ref, item, block: bool) -> bool:
        """True once the stream has had the item; False: closed or gone, stop."""
        started = None
        try:
            while True:
                outcome = _offer(ref, item, block)
                if outcome is not _FULL:
                    return outcome is _STORED
                if started is None:
                    started = time.monotonic()
                    _account(ref, _PUT_WAITS, 0.0)
                if self.watch.arm(_WRITABLE):  # room (or closed) already: retry
                    continue
                self.future = self.loop.create_future()
                try:
                    await self.future
                finally:
                    self.future = None
        finally:
            if started is not None:
                _account(ref, _PUT_WAITED, time.monotonic() - started)

    def close(self) -> None:
        self.loop.remove_reader(self.waker.fileno())
        self.watch.close()


async def _pump_aiter(bridge: _Bridge, ref, iterator, block: bool, watcher: _Watcher) -> None:
    # No local here may hold the stream: an exception's traceback keeps this frame.
    if not bridge.running_on(asyncio.get_running_loop(), asyncio.current_task()):
        watcher.watch.close()
        await _aclose(iterator)
        return
    room = _LoopRoom(watcher, asyncio.get_running_loop())
    error = None
    try:
        while not bridge.stopping:
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                break
            if bridge.stopping or not await room.put(ref, item, block):
                break
    except asyncio.CancelledError as exc:
        if not bridge.stopping:  # not ours: the iterable was cancelled from inside
            error = exc
    except BaseException as exc:  # the consumer gets it, in place
        error = exc
    finally:
        bridge.finishing = True  # a stop from now on cancels nothing: cleanup must finish
        room.close()
    _end(ref, error)  # the consumer may see the end before the cleanup below: it is ours
    error = None
    await _aclose(iterator)


async def _aclose(iterator) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except (Exception, asyncio.CancelledError):  # e.g. "async generator ignored
            pass  # GeneratorExit", or a cleanup cancelled from inside: it is over anyway


# --- from_iter: one thread drives a blocking iterator ------------------------------------

def from_iter(iterable, capacity: int = 64, policy: str = "block") -> FromIterStream:
    """Drive a blocking iterator in one background thread; consume its items from asyncio
    (``async for item in stream``, ``await stream.aget()``), with backpressure.

    ``iterable`` is any iterable: a file, a database cursor, a sync SDK's stream, a
    generator. Its items go through a ``BoundedStream(capacity, policy)``, which is
    returned; a slow consumer holds the thread back at its next put (``block``), or the
    stream sheds as its policy says (``reject``: the item is dropped, counted in
    ``stats().rejected``). The iterator's exception reaches the consumer in place, after
    every item before it, with its own type and traceback.

    ``close()``, leaving ``with`` / ``async with``, or dropping the stream stops the
    thread at its next put (a thread waiting for room wakes at once) and calls the
    iterator's ``close()`` if it has one (a generator's ``finally`` blocks run; a file or
    cursor is closed). ``close()`` joins the thread for at most 1 s (``async with`` awaits
    it without blocking the loop). A ``next()`` in progress cannot be interrupted: a
    ``next()`` that blocks for a long time (a silent socket) or forever keeps the thread
    until it returns; close() then returns after 1 s with a ``RuntimeWarning``, and the
    item it finally returns is discarded. The thread is a daemon: it never holds up exit.
    """
    iterator = iter(iterable)  # TypeError at once, not in the thread
    stream, bridge, ref, block = _new_stream(FromIterStream, "from_iter", capacity, policy)
    bridge.start(_run_iter, ref, iterator, block, _ThreadRoom(_Watcher(stream)))
    return stream


class _ThreadRoom:
    """Waiting for room in a plain thread: the same watch, polled (GIL released)."""

    def __init__(self, watcher: _Watcher):
        self.waker, self.watch = watcher.waker, watcher.watch
        self.poll = select.poll()
        self.poll.register(self.waker.fileno(), select.POLLIN)

    def put(self, ref, item, block: bool) -> bool:
        started = None
        try:
            while True:
                outcome = _offer(ref, item, block)
                if outcome is not _FULL:
                    return outcome is _STORED
                if started is None:
                    started = time.monotonic()
                    _account(ref, _PUT_WAITS, 0.0)
                if self.watch.arm(_WRITABLE):
                    continue
                self.poll.poll()  # until room, close or the stream's death wakes us
                self.waker.drain()
                self.watch.take_pending()
        finally:
            if started is not None:
                _account(ref, _PUT_WAITED, time.monotonic() - started)

    def close(self) -> None:
        self.watch.close()


def _run_iter(bridge: _Bridge, ref, iterator, block: bool, room: _ThreadRoom) -> None:
    # No local here may hold the stream: an exception's traceback keeps this frame.
    error = None
    stopped_early = True
    try:
        while not bridge.stopping:
            try:
                item = next(iterator)
            except StopIteration:
                stopped_early = False
                break
            if bridge.stopping or not room.put(ref, item, block):
                break
            del item
    except BaseException as exc:
        error, stopped_early = exc, False
    finally:
        room.close()
    _end(ref, error)
    if stopped_early:
        close = getattr(iterator, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass
