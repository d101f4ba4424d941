"""Tracing as a layer of the chain (chain.py): one event per operation."""

from .events import SCHEMA_FIELDS, SCHEMA_VERSION, RawEvent, to_event
from .filters import EventFilter
from .formats import FORMATS, format_jsonl, format_text
from .layer import TracingLayer
from .sinks import RotatingFile, StreamOutput, TraceSink
from .stats import Summary

__all__ = [
    "FORMATS", "SCHEMA_FIELDS", "SCHEMA_VERSION", "EventFilter", "RawEvent", "RotatingFile", "StreamOutput",
    "Summary", "TraceSink", "TracingLayer", "format_jsonl", "format_text", "to_event",
]
