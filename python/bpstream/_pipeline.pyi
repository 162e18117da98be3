# Type stubs for bpstream._pipeline (bpstream.Pipeline, bpstream.Stage).
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from typing_extensions import Self

from ._bpstream import Policy, _PolicyArg
from ._shutdown import ShutdownReport

@dataclass(frozen=True)
class Stage:
    """One stage of a Pipeline: fn, its worker threads, its WIP limit and policy."""

    fn: Callable[[Any], Any]
    workers: int = 2
    capacity: int = 16
    policy: Policy | _PolicyArg = "block"
    name: str | None = None

class Pipeline:
    """Stages of worker threads connected by bounded streams, one reported shutdown."""

    def __init__(self, stages: Iterable[Stage], *, fail_fast: bool = False, name: str | None = None) -> None: ...
    def submit(self, item: Any, timeout: float | None = None) -> bool: ...
    def feed(self, iterable: Iterable[Any]) -> int: ...
    def shutdown(self, deadline: float | None = None, cancel_pending: bool = False) -> ShutdownReport: ...
    @property
    def report(self) -> ShutdownReport | None: ...
    @property
    def name(self) -> str: ...
    @property
    def pending(self) -> int: ...
    @property
    def stages(self) -> tuple[Stage, ...]: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
