# Type stubs for bpstream._afanout (bpstream.AsyncFanOut).
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Generic

from typing_extensions import Self, TypeVar

from ._bpstream import Policy, _PolicyArg
from ._shutdown import ShutdownReport

_T = TypeVar("_T", default=Any)

class AsyncFanOut(Generic[_T]):
    """N asyncio tasks over one bounded stream, with a structured, reported shutdown."""

    def __init__(
        self,
        worker: Callable[[_T], Awaitable[object]],
        workers: int = 4,
        capacity: int = 64,
        policy: _PolicyArg = "block",
        *,
        fail_fast: bool = False,
        name: str | None = None,
    ) -> None: ...
    async def submit(self, item: _T, timeout: float | None = None) -> bool: ...
    async def feed(self, items: Iterable[_T] | AsyncIterable[_T]) -> int: ...
    async def shutdown(self, deadline: float | None = None, cancel_pending: bool = False) -> ShutdownReport: ...
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
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
