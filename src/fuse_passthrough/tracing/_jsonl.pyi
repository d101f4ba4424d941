# The compiled module _jsonl.c (optional: formats.py uses the stdlib encoder without it).
from collections.abc import Callable
from typing import Any

def ascii_escaped(line: bytes, /) -> bytes: ...
def encode_events(items: list[tuple[Any, ...]], plans: dict[str, tuple[Any, ...]], head: bytes,
                  errnos: dict[int, str], fallback: Callable[[tuple[Any, ...]], bytes], /) -> tuple[bytes, list[int]]: ...
