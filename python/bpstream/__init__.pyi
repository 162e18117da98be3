from ._bpstream import (
    BoundedStream as BoundedStream,
    Closed as Closed,
    Empty as Empty,
    Full as Full,
    Policy as Policy,
    Queue as Queue,
    Stats as Stats,
    abi_version as abi_version,
)

ShutDown = Closed

__version__: str
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
