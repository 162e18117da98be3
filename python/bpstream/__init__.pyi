from ._bpstream import (
    AIMD as AIMD,
    BoundedStream as BoundedStream,
    Closed as Closed,
    Empty as Empty,
    Full as Full,
    Limiter as Limiter,
    ManualClock as ManualClock,
    Policy as Policy,
    ProducerError as ProducerError,
    Queue as Queue,
    SlidingWindow as SlidingWindow,
    Stats as Stats,
    Token as Token,
    TokenBucket as TokenBucket,
    abi_version as abi_version,
)
from ._asyncqueue import (
    AsyncQueue as AsyncQueue,
    QueueEmpty as QueueEmpty,
    QueueFull as QueueFull,
)
from ._bridges import from_aiter as from_aiter, from_iter as from_iter
from ._sources import read_chunks as read_chunks, read_lines as read_lines

def get_include() -> str: ...

ShutDown = Closed

__version__: str
__all__ = [
    "AIMD",
    "AsyncQueue",
    "BoundedStream",
    "Closed",
    "Empty",
    "Full",
    "Limiter",
    "ManualClock",
    "Policy",
    "ProducerError",
    "Queue",
    "QueueEmpty",
    "QueueFull",
    "ShutDown",
    "SlidingWindow",
    "Stats",
    "Token",
    "TokenBucket",
    "__version__",
    "abi_version",
    "from_aiter",
    "from_iter",
    "get_include",
    "read_chunks",
    "read_lines",
]
