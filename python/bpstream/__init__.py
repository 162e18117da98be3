"""bpstream: a bounded, backpressured, thread-safe stream.

``BoundedStream`` is a FIFO with a fixed capacity and an explicit policy for what a
put into a full stream does (block, drop_oldest, drop_newest, reject, drop_all).
``Queue`` is a drop-in replacement for ``queue.Queue`` built on the same stream, and
``AsyncQueue`` one for ``asyncio.Queue`` (``Queue.async_q`` / ``AsyncQueue.sync_q``: the
other face of the same queue).
The core is native (Swift, behind a C ABI); blocking calls release the GIL.
``read_lines`` and ``read_chunks`` stream a file, pipe or socket through a native reader
thread; other extensions feed streams from their own threads through the C API
(``get_include()`` finds its header, ``bpstream_capi.h``). ``from_aiter`` and ``from_iter``
bridge sync and async code: one thread drives an async (or blocking) iterable into a stream
the other side consumes.
``Kanban`` is a pull-only board of stages with work-in-progress limits (threads and asyncio).
the other side consumes. ``TokenBucket``, ``SlidingWindow`` and ``AIMD`` pace work by rate,
``Limiter`` admits it by work in progress and rate (``ManualClock`` drives them in tests).
"""

import os as _os

from ._bpstream import (
    AIMD,
    BoundedStream,
    Closed,
    Empty,
    Full,
    Limiter,
    ManualClock,
    Policy,
    ProducerError,
    Queue,
    SlidingWindow,
    Stats,
    Token,
    TokenBucket,
    abi_version,
)
from ._bridges import from_aiter, from_iter
from ._kanban import Kanban, KanbanStats, StageStats
from ._fanout import FanOut
from ._pipeline import Pipeline, Stage
from ._shutdown import ShutdownReport
from ._flow import FlowControl, FlowListener, FlowState, Health, Recommendation
from ._sources import read_chunks, read_lines

#: Alias matching Python 3.13's ``queue.ShutDown``; the same class as ``Closed``.
ShutDown = Closed

_ASYNCIO_NAMES = ("AsyncQueue", "QueueEmpty", "QueueFull")
_ASYNC_FANOUT_NAMES = ("AsyncFanOut",)


def __getattr__(name):
    # The asyncio face loads on first use: `import bpstream` does not import asyncio.
    if name in _ASYNCIO_NAMES:
        from . import _asyncqueue

        return getattr(_asyncqueue, name)
    if name in _ASYNC_FANOUT_NAMES:
        from . import _afanout

        return getattr(_afanout, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__version__ = "0.1.0"


def get_include() -> str:
    """The folder holding ``bpstream_capi.h`` and ``bpstream.h``, for compiling extensions
    that feed streams from native code (like ``numpy.get_include()``)."""
    return _os.path.join(_os.path.dirname(__file__), "include")


__all__ = [
    "abi_version",
    "AIMD",
    "AsyncFanOut",
    "AsyncQueue",
    "BoundedStream",
    "Closed",
    "Empty",
    "FanOut",
    "FlowControl",
    "FlowListener",
    "FlowState",
    "from_aiter",
    "from_iter",
    "Full",
    "get_include",
    "Health",
    "Kanban",
    "KanbanStats",
    "Limiter",
    "ManualClock",
    "Pipeline",
    "Policy",
    "ProducerError",
    "Queue",
    "QueueEmpty",
    "QueueFull",
    "read_chunks",
    "read_lines",
    "Recommendation",
    "ShutDown",
    "ShutdownReport",
    "SlidingWindow",
    "Stage",
    "StageStats",
    "Stats",
    "Token",
    "TokenBucket",
    "__version__",
]
