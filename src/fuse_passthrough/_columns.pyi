# The compiled module _columns.c (optional: report/tally.py works without it).
from typing import Any

def setup(event_type: type, args_type: type, raw_type: type, /) -> None: ...
def columns(events: list[Any], ops: dict[Any, int], op_names: list[Any], op_kinds: bytearray, kinds: dict[str, int],
            paths: dict[Any, int], path_names: list[Any], procs: dict[Any, int], proc_names: list[Any],
            slow_floor: int, /
            ) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes | None, list[str], bytes | None, bytes, bytes, bytes,
                       bytes, bytes, bytes, bytes, bool, list[Any], list[Any]] | None: ...
def line_starts(data: bytes | memoryview, last_open: bool, /) -> bytes | None: ...
def scan(data: bytes | memoryview, starts: Any, first: int, last: int, ops: dict[Any, int], op_names: list[Any],
         op_kinds: bytearray, kinds: dict[str, int], paths: dict[Any, int], path_names: list[Any],
         procs: dict[Any, int], proc_names: list[Any], slow_floor: int, /
         ) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes | None, list[str], None, bytes, bytes, bytes, bytes, bytes,
                    bytes, bytes, bool, list[int], list[int]] | None: ...
