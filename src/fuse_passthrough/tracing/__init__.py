"""Tracing as a layer of the chain (chain.py): one event per operation.

The names below are loaded when first used, not when a module of this package is imported: the trace writer
process (tracing/writer.py) imports only what it formats with, not the tracing layer and through it the node
table, the operations and libfuse, and so is ready for the daemon to mount sooner.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import SCHEMA_FIELDS, SCHEMA_VERSION, RawEvent, to_event
    from .filters import EventFilter
    from .formats import FORMATS, format_jsonl, format_text
    from .layer import TracingLayer
    from .sinks import RotatingFile, StreamOutput, TraceSink
    from .stats import Summary

_MODULE_OF = {
    "SCHEMA_FIELDS": "events", "SCHEMA_VERSION": "events", "RawEvent": "events", "to_event": "events",
    "EventFilter": "filters",
    "FORMATS": "formats", "format_jsonl": "formats", "format_text": "formats",
    "TracingLayer": "layer",
    "RotatingFile": "sinks", "StreamOutput": "sinks", "TraceSink": "sinks",
    "Summary": "stats",
}

__all__ = [
    "FORMATS", "SCHEMA_FIELDS", "SCHEMA_VERSION", "EventFilter", "RawEvent", "RotatingFile", "StreamOutput",
    "Summary", "TraceSink", "TracingLayer", "format_jsonl", "format_text", "to_event",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
