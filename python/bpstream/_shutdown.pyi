# Type stubs for bpstream._shutdown (bpstream.ShutdownReport).
from dataclasses import dataclass
from typing import Final

REASONS: Final[tuple[str, ...]]
MAX_ERRORS: Final[int]

@dataclass(frozen=True)
class ShutdownReport:
    """How a FanOut, AsyncFanOut or Pipeline shut down, item by item."""

    produced: int
    processed: int
    failed: int
    dropped: int
    discarded: int
    abandoned: int
    workers: int
    joined: int
    aborted: int
    deadline_hit: bool
    elapsed: float
    reason: str
    errors: tuple[BaseException, ...] = ()
    stages: tuple[ShutdownReport, ...] = ()
    name: str = ""
    @property
    def balanced(self) -> bool: ...
    def table(self) -> str: ...
