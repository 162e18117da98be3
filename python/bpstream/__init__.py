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
"""

import os as _os

from ._bpstream import (
    BoundedStream,
    Closed,
    Empty,
    Full,
    Policy,
    ProducerError,
    Queue,
    Stats,
    abi_version,
)
from ._bridges import from_aiter, from_iter
from ._flow import FlowControl, FlowListener, FlowState, Health, Recommendation
from ._sources import read_chunks, read_lines

#: Alias matching Python 3.13's ``queue.ShutDown``; the same class as ``Closed``.
ShutDown = Closed

_ASYNCIO_NAMES = ("AsyncQueue", "QueueEmpty", "QueueFull")


def __getattr__(name):
    # The asyncio face loads on first use: `import bpstream` does not import asyncio.
    if name in _ASYNCIO_NAMES:
        from . import _asyncqueue

        return getattr(_asyncqueue, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__version__ = "0.1.0"


def get_include() -> str:
    """The folder holding ``bpstream_capi.h`` and ``bpstream.h``, for compiling extensions
    that feed streams from native code (like ``numpy.get_include()``)."""
    return _os.path.join(_os.path.dirname(__file__), "include")


__all__ = [
    "AsyncQueue",
    "BoundedStream",
    "Closed",
    "Empty",
    "FlowControl",
    "FlowListener",
    "FlowState",
    "Full",
    "Health",
    "Policy",
    "ProducerError",
    "Queue",
    "QueueEmpty",
    "QueueFull",
    "Recommendation",
    "ShutDown",
    "Stats",
    "__version__",
    "abi_version",
    "from_aiter",
    "from_iter",
    "get_include",
    "read_chunks",
    "read_lines",
]
