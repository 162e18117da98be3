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
from ._afanout import AsyncFanOut as AsyncFanOut
from ._bridges import from_aiter as from_aiter, from_iter as from_iter
from ._kanban import Kanban as Kanban, KanbanStats as KanbanStats, StageStats as StageStats
from ._fanout import FanOut as FanOut
from ._pipeline import Pipeline as Pipeline, Stage as Stage
from ._shutdown import ShutdownReport as ShutdownReport
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
