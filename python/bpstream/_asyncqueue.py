"""bpstream.AsyncQueue: asyncio.Queue's face over a bpstream.Queue.

One queue, two faces (as janus and culsans have): an AsyncQueue wraps a bpstream.Queue
(the native stream), which is its queue.Queue-shaped face `sync_q`; `Queue.async_q` is the
AsyncQueue over a given Queue. Threads, native producers and tasks on any loop share it.

- The awaitables are the stream's: done at once when an item or room is there (no Task,
  Future or system call), else bpstream._aio's cancellation-safe waiting (a woken waiter
  retries; a cancelled get takes nothing, a cancelled put stores nothing).
- join() waits on the core's TASKS_DONE readiness, so a task_done() from any thread (or a
  native consumer) wakes it, with no helper thread.
- Every call that can wake a waiter tests take_due() (a thread-local flag, one C call) and
  dispatches the running loop's due wake-ups at once: a waiter woken from its own loop
  runs in the same iteration as with asyncio.Queue.
- Exceptions: QueueFull / QueueEmpty below subclass both bpstream.Full / bpstream.Empty
  (so queue.Full / queue.Empty) and asyncio.QueueFull / asyncio.QueueEmpty; a shut-down
  queue raises bpstream.Closed (asyncio.QueueShutDown on 3.13+, see _aio).
"""

from __future__ import annotations

import inspect
import math
import weakref
from types import GenericAlias

import asyncio

from . import _aio, _bpstream

__all__ = ["AsyncQueue", "QueueEmpty", "QueueFull"]

_Full = _bpstream.Full
_Empty = _bpstream.Empty
_take_due = _aio.take_due
_dispatch_due = _aio.dispatch_due
_join_wait = _aio.join_wait


class QueueFull(_Full, asyncio.QueueFull):
    """Raised by AsyncQueue.put_nowait on a full queue (and by put with policy 'reject').
    Both a bpstream.Full (queue.Full) and an asyncio.QueueFull."""


class QueueEmpty(_Empty, asyncio.QueueEmpty):
    """Raised by AsyncQueue.get_nowait on an empty queue. Both a bpstream.Empty
    (queue.Empty) and an asyncio.QueueEmpty."""


def _capacity(maxsize) -> int:
    """asyncio.Queue's maxsize -> the stream's: <= 0 (or NaN, or infinite) is unbounded; a
    float bound holds ceil(maxsize) items, since full() is qsize() >= maxsize."""
    if isinstance(maxsize, float):
        if not maxsize > 0 or math.isinf(maxsize):
            return 0
        return math.ceil(maxsize)
    return maxsize


# id(queue) -> its AsyncQueue face, while the face is referenced. A face holds its queue,
# so an id here always names a live queue.
_faces: "weakref.WeakValueDictionary[int, AsyncQueue]" = weakref.WeakValueDictionary()


def _async_face(queue: _bpstream.Queue) -> "AsyncQueue":
    """Queue.async_q: the one AsyncQueue over `queue` (made on first use)."""
    face = _faces.get(id(queue))
    if face is None:
        face = AsyncQueue.__new__(AsyncQueue)
        face._queue = queue
        face._maxsize = None
        face._reject = queue.policy == "reject"
        _faces[id(queue)] = face
    return face


class AsyncQueue:
    """AsyncQueue(maxsize=0, *, policy='block')

    A drop-in replacement for asyncio.Queue, backed by a bpstream stream: the same
    methods (coroutines put, get, join; put_nowait, get_nowait, qsize, empty, full,
    task_done, maxsize) and Python 3.13's shutdown(immediate=False) on every Python.

    Not bound to a loop: tasks on several loops, threads (through ``sync_q``, the
    queue.Queue face of this same queue) and native producers can share it. The *_nowait
    calls work with no running loop. ``policy`` chooses what a put into a full queue does
    (see bpstream.BoundedStream); the default waits, as asyncio.Queue does.
    """

    __slots__ = ("_queue", "_maxsize", "_reject", "__weakref__")
    __class_getitem__ = classmethod(GenericAlias)

    def __init__(self, maxsize=0, *, policy="block"):
        self._queue = _bpstream.Queue(_capacity(maxsize), policy=policy)
        self._maxsize = maxsize
        self._reject = self._queue.policy == "reject"
        _faces[id(self._queue)] = self

    # -- the faces ---------------------------------------------------------------------

    @property
    def sync_q(self) -> _bpstream.Queue:
        """The queue.Queue-shaped face of this same queue (a bpstream.Queue)."""
        return self._queue

    @property
    def async_q(self) -> "AsyncQueue":
        """This queue itself (as janus's async_q)."""
        return self

    # -- asyncio.Queue's API -----------------------------------------------------------

    @property
    def maxsize(self):
        """Number of items allowed in the queue (as given; 0: unbounded)."""
        maxsize = self._queue.maxsize
        given = self._maxsize
        if given is not None and maxsize == _capacity(given):
            return given
        return maxsize

    def qsize(self) -> int:
        """Number of items in the queue."""
        return self._queue.qsize()

    def empty(self) -> bool:
        """Return True if the queue is empty, False otherwise."""
        return self._queue.empty()

    def full(self) -> bool:
        """Return True if there are maxsize items in the queue (never with maxsize 0)."""
        return self._queue.full()

    def put_nowait(self, item) -> None:
        """Put an item into the queue without blocking: raises QueueFull if no free slot
        is immediately available (a non-'block' policy decides instead), bpstream.Closed
        (asyncio.QueueShutDown) after shutdown()."""
        try:
            self._queue.put_nowait(item)
        except _Full:
            raise QueueFull from None
        if _take_due():
            _dispatch_due()

    def get_nowait(self):
        """Remove and return an item if one is immediately available, else raise
        QueueEmpty; bpstream.Closed once shut down and empty."""
        try:
            item = self._queue.get_nowait()
        except _Empty:
            raise QueueEmpty from None
        if _take_due():
            _dispatch_due()
        return item

    def put(self, item):
        """Coroutine: put an item into the queue; if it is full, wait until a free slot
        is available. Raises bpstream.Closed (asyncio.QueueShutDown) after shutdown().
        Cancelled while waiting, it stores nothing."""
        awaitable = self._queue._aqput(item)
        if _take_due():
            _dispatch_due()
        if self._reject:
            return _reject_as_queue_full(awaitable)
        return awaitable

    def get(self):
        """Coroutine: remove and return an item; if the queue is empty, wait until one is
        available. Raises bpstream.Closed once shut down and empty. Cancelled while
        waiting, it takes nothing."""
        awaitable = self._queue.aget()
        if _take_due():
            _dispatch_due()
        return awaitable

    async def join(self) -> None:
        """Block until every item put has been gotten and processed (task_done), or
        discarded by shutdown(immediate=True). A task_done from any thread wakes it."""
        await _join_wait(self._queue)

    def task_done(self) -> None:
        """Indicate that a formerly enqueued task is complete; raises ValueError if
        called more times than there were items placed in the queue."""
        self._queue.task_done()
        if _take_due():
            _dispatch_due()

    def shutdown(self, immediate: bool = False) -> None:
        """Shut down the queue, as asyncio.Queue.shutdown does in Python 3.13: puts raise
        bpstream.Closed (asyncio.QueueShutDown); gets drain the queue, then raise it. With
        immediate=True the queue is emptied at once (each item counts as done for join).
        Every waiting put and get wakes."""
        self._queue.shutdown(immediate)
        if _take_due():
            _dispatch_due()

    # -- bpstream extras ---------------------------------------------------------------

    @property
    def policy(self):
        """What a put into a full queue does (a bpstream.Policy)."""
        return self._queue.policy

    def stats(self):
        """One atomic bpstream.Stats snapshot of the queue."""
        return self._queue.stats()

    def _format(self) -> str:  # asyncio.Queue's, with qsize for its _queue=[...]
        stats = self._queue.stats()
        result = f"maxsize={self.maxsize!r}"
        if stats.depth:
            result += f" qsize={stats.depth}"
        if stats.unfinished_tasks:
            result += f" tasks={stats.unfinished_tasks}"
        if self._queue.is_shutdown:
            result += " shutdown"
        return result

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {id(self):#x} {self._format()}>"

    def __str__(self) -> str:
        return f"<{type(self).__name__} {self._format()}>"


async def _reject_as_queue_full(awaitable):
    try:
        return await awaitable
    except _Full:
        raise QueueFull from None


for _cls in (AsyncQueue, QueueFull, QueueEmpty):
    _cls.__module__ = "bpstream"
del _cls

# put and get return awaitables (done at once on the fast path) rather than coroutine
# objects; inspect/asyncio.iscoroutinefunction() still say True, as for asyncio.Queue.
for _method in (AsyncQueue.put, AsyncQueue.get):
    if hasattr(inspect, "markcoroutinefunction"):  # 3.12+
        inspect.markcoroutinefunction(_method)
    else:
        _method._is_coroutine = asyncio.coroutines._is_coroutine
del _method
