# Type stubs for bpstream._bridges (from_aiter, from_iter).
from collections.abc import AsyncIterable, Iterable
from types import TracebackType

from typing_extensions import TypeVar

from ._bpstream import BoundedStream, _PolicyArg

_T = TypeVar("_T")

JOIN_TIMEOUT: float

class _BridgeStream(BoundedStream[_T]):
    def close(self, immediate: bool = False) -> None: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

class FromAiterStream(_BridgeStream[_T]): ...
class FromIterStream(_BridgeStream[_T]): ...

def from_aiter(
    aiterable: AsyncIterable[_T], capacity: int = 64, policy: _PolicyArg = "block"
) -> FromAiterStream[_T]: ...
def from_iter(
    iterable: Iterable[_T], capacity: int = 64, policy: _PolicyArg = "block"
) -> FromIterStream[_T]: ...
