from collections.abc import Callable, Iterator
from typing import Any

class Traced:
    __name__: str
    __wrapped__: Callable[..., Any]
    def __call__(self, req: int, *a: Any) -> Any: ...

class Recorder:
    def __init__(self, seq: Iterator[int], cache: dict[int, tuple[int, int, str | None, list[str] | None]],
                 lookup: Callable[[int, int], tuple[str | None, list[str] | None]], young_ns: int, ttl_ns: int,
                 context: Callable[[int], tuple[int, int, int, int]], put: Callable[[tuple[Any, ...]], None],
                 pending: Any, batch: int, backlog: Callable[[int], None] | None,
                 stat_type: type | None = None) -> None: ...
    def traced(self, op: str, fn: Callable[..., Any], nodes_path: Callable[..., str | None], node_i: int,
               name_i: int, node2_i: int, name2_i: int, args_of: Callable[..., Any],
               result_of: Callable[[Any, tuple[Any, ...]], Any], plan: tuple[tuple[Any, ...], ...] | None = None,
               accepts_op: Callable[[str], bool] | None = None,
               path_cache: tuple[Any, int] | tuple[None, None] = (None, None)) -> Traced: ...

class EventBuffer:
    def __init__(self, stand_in: Callable[[Any], Any] | None = None) -> None: ...
    def append(self, raw: tuple[Any, ...]) -> None: ...
    def take(self) -> tuple[bytes, int] | None: ...
    def __len__(self) -> int: ...

def record_waiting() -> None: ...
