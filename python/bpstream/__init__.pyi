from ._bpstream import (
    BoundedStream as BoundedStream,
    Closed as Closed,
    Empty as Empty,
    Full as Full,
    Policy as Policy,
    ProducerError as ProducerError,
    Queue as Queue,
    Stats as Stats,
    abi_version as abi_version,
)
from ._asyncqueue import (
    AsyncQueue as AsyncQueue,
    QueueEmpty as QueueEmpty,
    QueueFull as QueueFull,
)
from ._bridges import from_aiter as from_aiter, from_iter as from_iter
from ._flow import (
    FlowControl as FlowControl,
    FlowListener as FlowListener,
    FlowState as FlowState,
    Health as Health,
    Recommendation as Recommendation,
)
from ._sources import read_chunks as read_chunks, read_lines as read_lines

def get_include() -> str: ...

ShutDown = Closed

__version__: str
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
