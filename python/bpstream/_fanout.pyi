# Type stubs for bpstream._fanout (bpstream.FanOut).
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Generic

from typing_extensions import Self, TypeVar

from ._bpstream import Policy, _PolicyArg
from ._shutdown import ShutdownReport

_T = TypeVar("_T", default=Any)

class FanOut(Generic[_T]):
    """N worker threads over one bounded stream, with a structured, reported shutdown."""

    def __init__(
        self,
        worker: Callable[[_T], object],
        workers: int = 4,
        capacity: int = 64,
        policy: _PolicyArg = "block",
        *,
        fail_fast: bool = False,
        name: str | None = None,
    ) -> None: ...
    def submit(self, item: _T, timeout: float | None = None) -> bool: ...
    def feed(self, iterable: Iterable[_T]) -> int: ...
    def shutdown(self, deadline: float | None = None, cancel_pending: bool = False) -> ShutdownReport: ...
    @property
    def report(self) -> ShutdownReport | None: ...
    @property
    def name(self) -> str: ...
    @property
    def pending(self) -> int: ...
    @property
    def workers(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def policy(self) -> Policy: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
