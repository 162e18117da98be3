"""bpstream: a bounded, backpressured, thread-safe stream.

``BoundedStream`` is a FIFO with a fixed capacity and an explicit policy for what a
put into a full stream does (block, drop_oldest, drop_newest, reject, drop_all).
``Queue`` is a drop-in replacement for ``queue.Queue`` built on the same stream.
The core is native (Swift, behind a C ABI); blocking calls release the GIL.
"""

from ._bpstream import (
    BoundedStream,
    Closed,
    Empty,
    Full,
    Policy,
    Queue,
    Stats,
    abi_version,
)

#: Alias matching Python 3.13's ``queue.ShutDown``; the same class as ``Closed``.
ShutDown = Closed

__version__ = "0.1.0"

__all__ = [
    "BoundedStream",
    "Closed",
    "Empty",
    "Full",
    "Policy",
    "Queue",
    "ShutDown",
    "Stats",
    "__version__",
    "abi_version",
]
