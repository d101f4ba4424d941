"""The trace in Chrome Trace Event JSON, for ui.perfetto.dev."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import orjson

from .reading import ReportError, as_dict, decode_lines, full_event
from .text import display

# Linux PID_MAX_LIMIT: synthetic thread ids for overlapping slices of one pid are pid + lane * this.
LANE_STRIDE = 1 << 22




# --------------------------------------------------------------------------------------------- Perfetto

def _clean(value: Any) -> Any:
    """JSON value safe for any viewer: strings as valid Unicode (no lone surrogates)."""
    try:
        orjson.dumps(value)  # fails on a lone surrogate (and on an int beyond 64 bits)
        return value
    except TypeError:
        pass
    if "\\ud" not in json.dumps(value):  # no surrogate after all
        return value
    return _clean_deep(value)


def _clean_deep(value: Any) -> Any:
    if isinstance(value, str):
        return display(value) if any(0xD800 <= ord(c) < 0xE000 for c in value) else value
    if isinstance(value, dict):
        return {str(k): _clean_deep(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_deep(v) for v in value]
    return value


def _sorted_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: (e["ts"], e["seq"] if e["seq"] is not None else 0))


def perfetto_trace(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Chrome Trace Event JSON: a process per caller pid, a complete ("X") slice per operation.

    ts is microseconds since the first operation's start (the absolute start is in otherData), dur is
    duration_ns / 1000. Operations of one pid that overlap in time go on extra threads of that process, as
    the format wants the slices of a thread properly nested.
    """
    p = _Perfetto(events)
    slices = list(p.slices())
    return {"traceEvents": p.meta() + slices, **p.header()}


def write_perfetto(events: Sequence[dict[str, Any] | bytes], path: str) -> None:
    """`perfetto_trace(events)` written to a file a slice at a time (the same JSON, in less memory: the events
    may also be the JSONL lines scan() kept, made dicts one at a time)."""
    p = _Perfetto(events)
    try:
        with open(path, "wb") as f:
            f.write(b'{"traceEvents":[')
            sep = b""
            for item in p.slices():
                f.write(sep + _dumps(item))
                sep = b","
            for item in p.meta():
                f.write(sep + _dumps(item))
                sep = b","
            f.write(b"]," + _dumps(p.header())[1:] + b"\n")
    except OSError as e:
        raise ReportError(f"cannot write '{path}': {e.strerror}") from None


def _dumps(value: Any) -> bytes:
    """Compact ASCII JSON of a value already made safe by _clean."""
    try:
        out = orjson.dumps(value)
        if out.isascii():
            return out
    except TypeError:
        pass
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def _line_event(line: bytes) -> dict[str, Any]:
    """One JSONL line that scan() has already checked, as its event dict."""
    events, _ = decode_lines([line], lambda i: "kept line", False)
    return as_dict(full_event(events[0], line))


def _start(e: dict[str, Any] | bytes) -> tuple[float, int]:
    if isinstance(e, bytes):
        try:
            when = _WHEN(e)
            return when.ts, when.seq if when.seq is not None else 0
        except (msgspec.MsgspecError, ValueError):  # what only the reference path reads
            e = _line_event(e)
    return e["ts"], e["seq"] if e["seq"] is not None else 0


class _When(msgspec.Struct, gc=False):
    ts: float
    seq: int | None = None


_WHEN = msgspec.json.Decoder(_When).decode


class _Perfetto:
    def __init__(self, events: Sequence[dict[str, Any] | bytes]) -> None:
        self.events = sorted(events, key=_start)
        self.t0 = _start(self.events[0])[0] if self.events else 0.0
        self.comms: dict[int, list[str]] = {}
        self.cmdlines: dict[int, list[str]] = {}
        self.lanes: dict[int, list[int]] = {}  # pid -> end (ns since t0) of the last slice on each lane

    def slices(self) -> Iterator[dict[str, Any]]:
        t0, comms, cmdlines, lanes = self.t0, self.comms, self.cmdlines, self.lanes
        for item in self.events:
            e = item if isinstance(item, dict) else _line_event(item)
            pid = e["pid"]
            names = comms.setdefault(pid, [])
            if e["comm"] and (not names or names[-1] != e["comm"]):
                names.append(e["comm"])
            if e.get("cmdline") and pid not in cmdlines:
                cmdlines[pid] = e["cmdline"]
            start_ns = round((e["ts"] - t0) * 1e9)
            ends = lanes.setdefault(pid, [])
            lane = next((i for i, end in enumerate(ends) if end <= start_ns), len(ends))
            if lane == len(ends):
                ends.append(0)
            ends[lane] = start_ns + e["duration_ns"]
            yield {
                "name": e["op"], "cat": "fuse", "ph": "X", "ts": start_ns / 1000, "dur": e["duration_ns"] / 1000,
                "pid": pid, "tid": pid + lane * LANE_STRIDE,
                "args": _clean({"path": e["path"], "path2": e["path2"], "args": e["args"], "result": e["result"],
                                "errno": e["errno"], "seq": e["seq"]}),
            }

    def meta(self) -> list[dict[str, Any]]:
        """Process and thread names: complete once slices() has been iterated."""
        meta: list[dict[str, Any]] = []
        for pid in sorted(self.lanes):
            name = "kernel" if pid == 0 else " -> ".join(dict.fromkeys(self.comms[pid])) or f"pid {pid}"
            meta.append({"name": "process_name", "ph": "M", "ts": 0, "pid": pid, "tid": pid,
                         "args": {"name": _clean(name)}})
            meta.append({"name": "process_sort_index", "ph": "M", "ts": 0, "pid": pid, "tid": pid,
                         "args": {"sort_index": pid}})
            if pid in self.cmdlines:
                meta.append({"name": "process_labels", "ph": "M", "ts": 0, "pid": pid, "tid": pid,
                             "args": {"labels": _clean(" ".join(str(a) for a in self.cmdlines[pid]))}})
            for lane in range(len(self.lanes[pid])):
                tname = name if lane == 0 else f"{name} (concurrent #{lane})"
                meta.append({"name": "thread_name", "ph": "M", "ts": 0, "pid": pid,
                             "tid": pid + lane * LANE_STRIDE, "args": {"name": _clean(tname)}})
        return meta

    def header(self) -> dict[str, Any]:
        return {"displayTimeUnit": "ns",
                "otherData": {"source": "fuse-passthrough", "trace_start_unix_s": self.t0,
                              "ts_unit": "us since start"}}


