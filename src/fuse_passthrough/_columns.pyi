# The compiled module _columns.c (optional: trace_scan works without it).
from typing import Any

def setup(event_type: type, /) -> None: ...
def columns(events: list[Any], ops: dict[Any, int], op_names: list[Any], paths: dict[Any, int],
            path_names: list[Any], procs: dict[Any, int], proc_names: list[Any], /
            ) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes | None, list[str], bytes | None] | None: ...
