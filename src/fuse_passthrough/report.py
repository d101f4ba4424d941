"""`fuse-passthrough report TRACE.jsonl`: summarise a saved JSONL trace, export it for Perfetto or as HTML.

The text report is the per-operation table (the same `Summary` the mount prints at exit), then the busiest
paths and processes by number of operations and by total time, then the failures grouped by errno and path.

`--perfetto OUT.json` writes Chrome Trace Event JSON (open it in https://ui.perfetto.dev or
chrome://tracing): one process track per caller pid, one complete slice per operation.

`--html OUT.html` writes one self-contained page (inline CSS, SVG and a little vanilla JS, nothing fetched
from the network) with the same tables and two charts: latency over time, and per-process swimlanes. Its
skeleton, CSS and JS are package data (templates/), filled in with string.Template.

The files (plain, .gz or .zst) are read by trace_scan: fast, in worker processes for large ones, in bounded
memory; this module turns its totals into the report and renders it.
"""

from __future__ import annotations

import argparse
import heapq
import html
import json
import math
import os
import stat
import string
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, TextIO

import msgspec
import orjson

from . import trace_scan
from .arguments import Parser, int_at_least
from .findings import Evidence, Finding, Thresholds, find, render_findings
from .trace_scan import (
    ReportError,
    Totals,
    as_dict,
    chunk_events,
    decode_lines,
    default_jobs,
    full_event,
    no_gc,
    read_chunks,
    scan,
)
from .tracing.compression import TraceReader
from .tracing.events import KERNEL_COMM
from .tracing.stats import OpStats, Summary

PROG = "fuse-passthrough report"
DEFAULT_TOP = 10
# Linux PID_MAX_LIMIT: synthetic thread ids for overlapping slices of one pid are pid + lane * this.
LANE_STRIDE = 1 << 22
CHART_POINTS = 5000  # at most this many operations drawn per HTML chart (all errors and the slowest kept)
HTML_ERROR_ROWS = 1000  # (errno, path) rows in the HTML page
SWIMLANES = 12       # processes shown in the HTML swimlane chart
PERFETTO_LIMIT = 500_000  # operations exported to Perfetto by default (the first ones), to bound memory
PARALLEL_MIN_BYTES = 16 << 20  # smaller inputs are read in this process: starting workers costs more
PROGRESS_MIN_BYTES = 64 << 20  # a progress bar (on a terminal) for inputs at least this large

__all__ = ["ReportError", "Report", "build", "perfetto_trace", "read_events", "render_html", "render_text",
           "run_report", "write_perfetto"]


# --------------------------------------------------------------------------------------------- reading

def read_events(path: str) -> Iterator[dict[str, Any]]:
    """The events of one JSONL trace file (plain, .gz or .zst); ReportError names the file and line of anything
    unreadable."""
    for chunk in read_chunks([path]):
        for events, part in chunk_events(chunk, [path]):
            for i in range(len(events)):
                yield part.event(events, i)


# --------------------------------------------------------------------------------------------- analysis

def _counter() -> Counter[str]:
    """An empty Counter, made without Counter.__init__ (a report makes one per path: this is 10x cheaper)."""
    return Counter.__new__(Counter)


@dataclass
class Group:
    """Totals for one path, one process, or one (errno, path) pair."""

    calls: int = 0
    errors: int = 0
    total_ns: int = 0
    ops: Counter[str] = field(default_factory=_counter)

    def add(self, event: dict[str, Any]) -> None:
        self.calls += 1
        self.errors += event["errno"] is not None
        self.total_ns += event["duration_ns"]
        self.ops[event["op"]] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "errors": self.errors, "total_ns": self.total_ns, "ops": dict(ranked(self.ops))}


def ranked(ops: Counter[str]) -> list[tuple[str, int]]:
    """Operations and their counts, most first (ties by name)."""
    return sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))


def _group(groups: dict[Any, Group], key: Any) -> Group:
    g = groups.get(key)
    if g is None:
        g = groups[key] = Group()
    return g


def process_label(pid: int, comm: str | None) -> str:
    """'comm[pid]', or '[kernel]' for requests the kernel issued on its own (pid 0)."""
    return KERNEL_COMM if pid == 0 else f"{comm or '?'}[{pid}]"


class Report:
    """Everything the report shows, accumulated one event at a time."""

    def __init__(self) -> None:
        self.summary = Summary()
        self.paths: dict[str, Group] = {}
        self.processes: dict[tuple[int, str | None], Group] = {}
        self.errors: dict[tuple[str, str | None], Group] = {}
        self.errno_ops: dict[str, Counter[str]] = {}  # errno -> operations: exact even when `errors` is pruned
        self.events = 0
        self.first_ts: float | None = None
        self.last_end: float | None = None
        # table -> (operations, entries) dropped from it to bound memory (see trace_scan.TABLE_CAP)
        self.dropped: dict[str, tuple[int, int]] = {}
        self.sample: list[dict[str, Any]] = []  # events for the HTML charts (a bounded sample)
        self.sample_every_error = True  # the sample holds every failed operation
        self.evidence = Evidence()  # what the findings need beyond the tables
        self.op_max: dict[str, int] = {}  # the longest duration per operation

    @classmethod
    def from_tally(cls, t: Totals) -> Report:
        """The report of trace_scan.Totals (what `build` reads)."""
        r = cls()
        r.events = t.events
        if t.events:
            r.first_ts, r.last_end = t.first_ts, t.last_end
        hist: dict[str, dict[int, int]] = {}
        for (op, bucket), n in t.hist.items():
            hist.setdefault(op, {})[bucket] = n
        for op in sorted(hist, key=lambda o: (-t.op_ns[o], o)):
            h = hist[op]
            r.summary.ops[op] = OpStats(sum(h.values()), t.op_errors[op], t.op_ns[op], t.op_read[op],
                                        t.op_written[op], injected=t.op_injected[op],
                                        histogram=dict(sorted(h.items())))
        # (dict.update: Counter.update first asks whether its argument is a Mapping, which costs more than the copy)
        paths = r.paths
        for path, calls, ns, failed, ops in t.paths.rows():
            if path is not None:
                counts = _counter()
                dict.update(counts, ops)
                paths[path] = Group(calls, failed, ns, counts)
        processes = r.processes
        for (pid, comm), calls, ns, failed, ops in t.procs.rows():
            key = (0, None) if pid == 0 else (pid, comm)  # the kernel's own requests: one row
            g = _group(processes, key)
            g.calls += calls
            g.errors += failed
            g.total_ns += ns
            for op, n in ops.items():
                g.ops[op] += n
        errors = r.errors
        for (errno, path, op), n in t.error_ops.items():
            g = _group(errors, (errno, path))
            g.ops[op] += n
            g.calls += n
            g.errors += n
        for (errno, op), n in t.errno_ops.items():
            r.errno_ops.setdefault(errno, _counter())[op] += n
        r.dropped = {table: (calls, entries) for table, (calls, entries) in t.dropped.items() if entries}
        r.evidence, r.op_max = t.evidence, t.op_max
        if t.sample is not None:
            r.sample = t.sample.events()
            r.sample_every_error = t.sample.every_error
        return r

    def count(self, table: str, n: int) -> str:
        """n, or 'over n' when entries of that table were dropped to bound memory."""
        return f"over {n}" if table in self.dropped else str(n)

    def notes(self) -> list[str]:
        """What the tables leave out, when the trace had more distinct entries than the report tracks."""
        names = {"paths": "paths", "processes": "processes", "errors": "(errno, path) pairs"}
        return [f"note: more than {trace_scan.TABLE_CAP} {names[table]}: the least busy were dropped to bound memory, with "
                f"{calls} operations on them; the totals count every operation, the {names[table]} tables may "
                "count low" for table, (calls, _) in self.dropped.items()]

    @property
    def total_errors(self) -> int:
        return sum(s.errors for s in self.summary.ops.values())

    @property
    def span_s(self) -> float:
        if self.first_ts is None or self.last_end is None:
            return 0.0
        return self.last_end - self.first_ts

    def top_paths(self, by: str, n: int) -> list[tuple[str, Group]]:
        return _top(self.paths.items(), by, n, lambda k: k)

    def top_processes(self, by: str, n: int) -> list[tuple[str, Group]]:
        ranked = _top(self.processes.items(), by, n, lambda k: (process_label(*k), k[0]))
        return [(process_label(*k), g) for k, g in ranked]

    def error_groups(self, limit: int | None = None) -> list[tuple[str, str | None, Group]]:
        """(errno, path) groups, most errors first; the first `limit` of them, if given."""
        def key(kv: tuple[tuple[str, str | None], Group]) -> Any:
            return (-kv[1].calls, kv[0][0], kv[0][1] or "")
        items = self.errors.items()
        top = sorted(items, key=key) if limit is None else heapq.nsmallest(limit, items, key=key)
        return [(errno, path, g) for (errno, path), g in top]

    def errno_totals(self) -> list[tuple[str, Group]]:
        """Failed operations per errno, most first: counted exactly, even when (errno, path) pairs were dropped."""
        totals = [(errno, Group(calls=sum(ops.values()), errors=sum(ops.values()), ops=ops))
                  for errno, ops in self.errno_ops.items()]
        return sorted(totals, key=lambda kv: (-kv[1].calls, kv[0]))

    def as_dict(self, top: int = DEFAULT_TOP) -> dict[str, Any]:
        """The report as JSON-ready data (what the text and HTML renderings show)."""
        return {
            "events": self.events, "errors": self.total_errors, "first_ts": self.first_ts,
            "span_s": self.span_s, "summary": self.summary.as_dict(),
            "top_paths_by_calls": [{"path": p, **g.as_dict()} for p, g in self.top_paths("calls", top)],
            "top_paths_by_time": [{"path": p, **g.as_dict()} for p, g in self.top_paths("time", top)],
            "top_processes_by_calls": [{"process": p, **g.as_dict()} for p, g in self.top_processes("calls", top)],
            "top_processes_by_time": [{"process": p, **g.as_dict()} for p, g in self.top_processes("time", top)],
            "errors_by_errno": [{"errno": e, "count": g.calls, "ops": dict(ranked(g.ops))}
                                for e, g in self.errno_totals()],
            "errors_by_errno_path": [{"errno": e, "path": p, "count": g.calls, "ops": dict(ranked(g.ops))}
                                     for e, p, g in self.error_groups()],
        }


def _top(items: Iterable[tuple[Any, Group]], by: str, n: int, name: Any) -> list[tuple[Any, Group]]:
    if by == "calls":
        def key(kv: tuple[Any, Group]) -> Any:
            return (-kv[1].calls, -kv[1].total_ns, name(kv[0]))
    else:
        def key(kv: tuple[Any, Group]) -> Any:
            return (-kv[1].total_ns, -kv[1].calls, name(kv[0]))
    return heapq.nsmallest(n, items, key=key)  # sorted(items, key=key)[:n], in less time


# --------------------------------------------------------------------------------------------- text

def display(s: str | None) -> str:
    """A trace string made printable: undecodable bytes and control characters as backslash escapes."""
    if s is None:
        return "-"
    try:
        s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        s = s.encode("utf-8", "backslashreplace").decode("ascii")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in s):
        s = "".join(c.encode("unicode_escape").decode("ascii") if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0
                    else c for c in s)
    return s


def _ms(ns: int | float) -> str:
    return f"{ns / 1e6:.3f}"


def _ops_text(ops: Counter[str], limit: int = 4) -> str:
    common = ranked(ops)
    text = ", ".join(f"{op} x{n}" for op, n in common[:limit])
    return text + (f", +{len(common) - limit} more" if len(common) > limit else "")


def _text_table(out: TextIO, title: str, header: list[str], rows: list[list[str]], right: int) -> None:
    """A plain table; the first `right` columns are right-aligned numbers, the rest left-aligned text."""
    out.write(f"\n{title}\n")
    if not rows:
        out.write("  (none)\n")
        return
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [c.rjust(w) if i < right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  " + "  ".join(parts).rstrip() + "\n"

    out.write(line(header))
    out.write(line(["-" * w for w in widths]))
    for r in rows:
        out.write(line(r))


def render_text(report: Report, out: TextIO, files: list[str], top: int = DEFAULT_TOP) -> None:
    procs = len(report.processes)
    out.write(f"trace: {', '.join(files)}\n")
    out.write(f"{report.events} operations, {report.total_errors} failed, "
              f"{report.count('paths', len(report.paths))} paths, {report.count('processes', procs)} "
              f"process{'es' if procs != 1 else ''}, over {report.span_s:.6f} s\n")
    for note in report.notes():
        out.write(note + "\n")
    out.write("\n")
    report.summary.render(out)
    for by, what in (("calls", "number of operations"), ("time", "total time")):
        _text_table(out, f"top paths by {what}:", ["calls", "errors", "total ms", "path"],
                    [[str(g.calls), str(g.errors or ""), _ms(g.total_ns), display(p)]
                     for p, g in report.top_paths(by, top)], 3)
    for by, what in (("calls", "number of operations"), ("time", "total time")):
        _text_table(out, f"top processes by {what}:", ["calls", "errors", "total ms", "process"],
                    [[str(g.calls), str(g.errors or ""), _ms(g.total_ns), display(p)]
                     for p, g in report.top_processes(by, top)], 3)
    _text_table(out, "errors by errno:", ["count", "errno", "operations"],
                [[str(g.calls), e, _ops_text(g.ops)] for e, g in report.errno_totals()], 1)
    groups = report.error_groups(top)
    _text_table(out, "errors by errno and path:", ["count", "errno", "path", "operations"],
                [[str(g.calls), e, display(p), _ops_text(g.ops)] for e, p, g in groups], 1)
    if len(report.errors) > top:
        rest = sum(g.calls for g in report.errors.values()) - sum(g.calls for _, _, g in groups)
        out.write(f"  ... {len(report.errors) - top} more (errno, path) pairs with {rest} errors (--top N shows "
                  "more)\n")
    out.flush()


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


# --------------------------------------------------------------------------------------------- HTML

_PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
            "#9c755f", "#bab0ac", "#1f77b4", "#17becf", "#8c564b", "#bcbd22", "#7f7f7f", "#d62728"]


def _e(s: Any) -> str:
    return html.escape(display(s) if isinstance(s, str) or s is None else str(s), quote=True)


def _sample(events: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """At most `limit` events, in time order: every error and the slowest first, then evenly spaced."""
    if len(events) <= limit:
        return events
    keep: set[int] = set()
    errors = [i for i, e in enumerate(events) if e["errno"] is not None]
    keep.update(errors[: limit // 4])
    keep.update(sorted(range(len(events)), key=lambda i: -events[i]["duration_ns"])[: limit // 4])
    room = limit - len(keep)
    if room > 0:
        step = len(events) / room
        keep.update(int(k * step) for k in range(room))
    return [events[i] for i in sorted(keep)][:limit]


def _us_label(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:g} s"
    if us >= 1e3:
        return f"{us / 1e3:g} ms"
    if us >= 1:
        return f"{us:g} µs"
    return f"{us * 1e3:g} ns"


def _nice_step(span: float, ticks: int = 8) -> float:
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    return float(next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw))


def _x_axis(t_span: float, x0: float, width: float, y: float) -> list[str]:
    parts = [f'<line class="axis" x1="{x0}" y1="{y}" x2="{x0 + width}" y2="{y}"/>']
    step = _nice_step(t_span)
    k = 0
    while k * step <= t_span * 1.0000001:
        x = x0 + k * step / t_span * width
        parts.append(f'<line class="tick" x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}"/>'
                     f'<text x="{x:.1f}" y="{y + 16}" text-anchor="middle">{k * step:g} s</text>')
        k += 1
    return parts


def _tip(e: dict[str, Any], t0: float) -> str:
    who = process_label(e["pid"], e["comm"])
    what = e["path"] if e["path2"] is None else f"{e['path']} -> {e['path2']}"
    result = e["errno"] if e["errno"] is not None else json.dumps(_clean(e["result"]))
    return _e(f"{e['op']} {display(what)} = {result}\n{e['duration_ns'] / 1e3:.1f} µs at "
              f"+{e['ts'] - t0:.6f} s by {who} (seq {e['seq']})")


def _scatter_svg(events: list[dict[str, Any]], colors: dict[str, str]) -> str:
    W, H, ml, mr, mt, mb = 1000, 340, 70, 16, 12, 40
    pw, ph = W - ml - mr, H - mt - mb
    t0 = events[0]["ts"]
    t_span = max(max(e["ts"] + e["duration_ns"] / 1e9 for e in events) - t0, 1e-6)
    us = [max(e["duration_ns"], 1) / 1e3 for e in events]
    lo = math.floor(math.log10(min(us)))
    hi = max(math.ceil(math.log10(max(us))), lo + 1)
    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="latency over time">']
    for d in range(lo, hi + 1):
        y = mt + ph - (d - lo) / (hi - lo) * ph
        parts.append(f'<line class="grid" x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}"/>'
                     f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end">{_us_label(10.0 ** d)}</text>')
    parts += _x_axis(t_span, ml, pw, mt + ph)
    for e, u in zip(events, us, strict=True):
        x = ml + (e["ts"] - t0) / t_span * pw
        y = mt + ph - (math.log10(u) - lo) / (hi - lo) * ph
        cls = "pt err" if e["errno"] is not None else "pt"
        parts.append(f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colors[e["op"]]}" '
                     f'data-op="{_e(e["op"])}"><title>{_tip(e, t0)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _swimlane_svg(events: list[dict[str, Any]], colors: dict[str, str], report: Report) -> str:
    lanes = [k for k, _ in _top(report.processes.items(), "calls", SWIMLANES, lambda k: (process_label(*k), k[0]))]
    index = {k: i for i, k in enumerate(lanes)}
    W, lane_h, ml, mr, mt = 1000, 22, 170, 16, 8
    H = mt + lane_h * len(lanes) + 28
    pw = W - ml - mr
    t0 = events[0]["ts"]
    t_span = max(max(e["ts"] + e["duration_ns"] / 1e9 for e in events) - t0, 1e-6)
    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="operations per process">']
    for i, k in enumerate(lanes):
        y = mt + i * lane_h
        label = process_label(*k)
        short = label if len(label) <= 24 else label[:23] + "…"
        parts.append(f'<rect class="lane{i % 2}" x="{ml}" y="{y}" width="{pw}" height="{lane_h}"/>'
                     f'<text x="{ml - 6}" y="{y + 15}" text-anchor="end"><title>{_e(label)}</title>{_e(short)}</text>')
    parts += _x_axis(t_span, ml, pw, mt + lane_h * len(lanes))
    for e in events:
        key = (e["pid"], None if e["pid"] == 0 else e["comm"])
        if key not in index:
            continue
        x = ml + (e["ts"] - t0) / t_span * pw
        w = max(e["duration_ns"] / 1e9 / t_span * pw, 1.0)
        y = mt + index[key] * lane_h + 3
        cls = "op err" if e["errno"] is not None else "op"
        parts.append(f'<rect class="{cls}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{lane_h - 6}" '
                     f'fill="{colors[e["op"]]}" data-op="{_e(e["op"])}"><title>{_tip(e, t0)}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _html_table(title: str, header: list[tuple[str, bool]], rows: list[list[tuple[str, Any]]]) -> str:
    """A sortable table; header cells are (label, numeric), row cells (text, sort value or None)."""
    out = [f"<h2>{_e(title)}</h2>"]
    if not rows:
        return out[0] + '<p class="none">(none)</p>'
    out.append('<table class="sortable"><thead><tr>')
    out += [f'<th class="{"num" if num else "txt"}" title="click to sort">{_e(h)}</th>' for h, num in header]
    out.append("</tr></thead><tbody>")
    for r in rows:
        out.append("<tr>")
        for (text, sort), (_, num) in zip(r, header, strict=True):
            attr = f' data-v="{_e(sort)}"' if sort is not None else ""
            out.append(f'<td class="{"num" if num else "txt"}"{attr}>{_e(text)}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


@cache
def _template(name: str) -> str:
    """A file of the package's templates/ directory (package data: inline CSS, JS, the page skeleton)."""
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def render_html(report: Report, events: list[dict[str, Any]], files: list[str], top: int = DEFAULT_TOP,
                findings: list[Finding] | None = None) -> str:
    """The HTML page: templates/report.html filled in. `events`: those to chart (report.sample, or all)."""
    d = report.summary.as_dict()
    ops_by_time = list(d["ops"])
    colors = {op: _PALETTE[i % len(_PALETTE)] for i, op in enumerate(ops_by_time)}
    events = _sorted_events(events)
    sample = _sample(events, CHART_POINTS)
    p: list[str] = ['<div class="cards">']
    start = ""
    if report.first_ts is not None:
        import datetime
        start = datetime.datetime.fromtimestamp(report.first_ts).astimezone().isoformat(timespec="milliseconds")
    for value, label in ((report.events, "operations"), (report.total_errors, "failed"),
                         (report.count("paths", len(report.paths)), "paths"),
                         (report.count("processes", len(report.processes)), "processes"),
                         (f"{report.span_s:.3f} s", "duration"), (_ms(d["total_ns"]) + " ms", "time in operations")):
        p.append(f'<div class="card"><b>{_e(value)}</b><span>{_e(label)}</span></div>')
    p.append("</div>")
    if start:
        p.append(f'<p class="note">first operation started {_e(start)}</p>')
    if findings:
        p.append("<h2>Findings</h2><ol class=\"findings\">")
        for f in findings:
            p.append(f'<li class="{_e(f.level)}"><b>[{_e(f.level)}] {_e(f.id)}</b>: {_e(display(f.title))} '
                     f'({f.requests} requests, {_ms(f.time_ns)} ms)<br>why: {_e(f.why)}<br>fix: {_e(f.fix)}'
                     f'<pre>{_e(json.dumps(f.evidence, indent=1))}</pre></li>')
        p.append("</ol>")
    if sample:
        legend = "".join(f'<button type="button" data-legend="{_e(op)}"><i style="background:{colors[op]}"></i>'
                         f"{_e(op)}</button>" for op in ops_by_time)
        total = max(report.events, len(events))
        every_error = report.sample_every_error and (sum(e["errno"] is not None for e in sample)
                                                     == sum(e["errno"] is not None for e in events))
        kept = ("every error and the slowest kept" if every_error
                else "the slowest kept, errors and the rest sampled evenly")
        shown = f"all {total} operations" if len(sample) == total else f"{len(sample)} of {total} operations ({kept})"
        p.append('<h2>Latency over time</h2><section class="panel">')
        p.append(f'<div class="legend">{legend}</div>{_scatter_svg(sample, colors)}')
        p.append(f'<p class="note">Each dot is one operation: start time (x) and latency (y, log scale); black '
                 f'outline = failed. Showing {_e(shown)}. Hover for details, click an operation above to hide it.</p>')
        p.append("</section><h2>Operations per process</h2><section class=\"panel\">")
        p.append(f'<div class="legend">{legend}</div>{_swimlane_svg(sample, colors, report)}')
        p.append(f'<p class="note">The {min(SWIMLANES, len(report.processes))} busiest of '
                 f'{len(report.processes)} processes; each bar is one operation (at least 1 px wide).</p></section>')
    else:
        p.append('<p class="none">The trace holds no operations.</p>')
    rows = []
    for op, s in d["ops"].items():
        rows.append([(op, None), (f"{100 * s['total_ns'] / (d['total_ns'] or 1):.2f}", None),
                     (f"{s['total_ns'] / 1e9:.6f}", None), (str(s["calls"]), None), (str(s["errors"] or ""), s["errors"]),
                     (f"{s['mean_ns'] / 1e3:.1f}", None), (f"{s['p50_ns'] / 1e3:.1f}", None),
                     (f"{s['p99_ns'] / 1e3:.1f}", None), (str(s["bytes_read"]), None), (str(s["bytes_written"]), None)])
    p.append(_html_table("Per operation", [("op", False), ("% time", True), ("seconds", True), ("calls", True),
                                           ("errors", True), ("mean µs", True), ("p50 µs", True), ("p99 µs", True),
                                           ("bytes read", True), ("bytes written", True)], rows))
    hdr = [("calls", True), ("errors", True), ("total ms", True)]

    def group_rows(items: list[tuple[str, Group]]) -> list[list[tuple[str, Any]]]:
        return [[(str(g.calls), None), (str(g.errors or ""), g.errors), (_ms(g.total_ns), None), (name, None)]
                for name, g in items]

    p.append('<div class="grid2"><div>')
    p.append(_html_table("Top paths by operations", hdr + [("path", False)], group_rows(report.top_paths("calls", top))))
    p.append("</div><div>")
    p.append(_html_table("Top paths by total time", hdr + [("path", False)], group_rows(report.top_paths("time", top))))
    p.append("</div><div>")
    p.append(_html_table("Top processes by operations", hdr + [("process", False)],
                         group_rows(report.top_processes("calls", top))))
    p.append("</div><div>")
    p.append(_html_table("Top processes by total time", hdr + [("process", False)],
                         group_rows(report.top_processes("time", top))))
    p.append("</div></div>")
    p.append(_html_table("Errors by errno", [("count", True), ("errno", False), ("operations", False)],
                         [[(str(g.calls), None), (e, None), (_ops_text(g.ops, 8), None)]
                          for e, g in report.errno_totals()]))
    groups = report.error_groups(HTML_ERROR_ROWS)
    p.append(_html_table("Errors by errno and path", [("count", True), ("errno", False), ("path", False),
                                                      ("operations", False)],
                         [[(str(g.calls), None), (e, None), (display(path), None), (_ops_text(g.ops, 8), None)]
                          for e, path, g in groups]))
    if len(report.errors) > HTML_ERROR_ROWS:
        p.append(f'<p class="note">... and {len(report.errors) - HTML_ERROR_ROWS} more (errno, path) pairs.</p>')
    for note in report.notes():
        p.append(f'<p class="note">{_e(note)}</p>')
    return string.Template(_template("report.html")).substitute(
        title=_e(", ".join(os.path.basename(f) for f in files)), files=_e(", ".join(files)),
        error_hook=_template("error-hook.js"), css=_template("report.css"), script=_template("report.js"),
        body="".join(p))


# --------------------------------------------------------------------------------------------- command

_positive = int_at_least(1)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Summarise a JSONL trace written with --format jsonl: per-operation "
                "table, busiest paths and processes, errors; optionally export it for Perfetto or as HTML.",
                epilog="Several files (e.g. a rotated set: t.jsonl.2 t.jsonl.1 t.jsonl) are reported as one trace; "
                "each may be plain, gzip or zstd (told by its content, not its name). "
                "Exit status: 0 ok, 1 unreadable or malformed input or unwritable output, 2 bad arguments.")
    p.add_argument("traces", nargs="+", metavar="TRACE.jsonl", help="trace file(s) to read (plain, .gz, .zst)")
    p.add_argument("--perfetto", metavar="OUT.json",
                   help="also write Chrome Trace Event JSON (open in ui.perfetto.dev or chrome://tracing)")
    p.add_argument("--perfetto-limit", type=_positive, default=PERFETTO_LIMIT, metavar="N",
                   help=f"operations written to --perfetto: the first N (default {PERFETTO_LIMIT})")
    p.add_argument("--html", metavar="OUT.html", help="also write a self-contained HTML report")
    p.add_argument("--top", type=_positive, default=DEFAULT_TOP, metavar="N",
                   help=f"rows in the top paths/processes tables (default {DEFAULT_TOP})")
    p.add_argument("--jobs", type=_positive, default=None, metavar="N",
                   help="processes reading the trace (default: one per CPU for inputs over "
                   f"{PARALLEL_MIN_BYTES >> 20} MiB, else 1)")
    p.add_argument("--json", action="store_true", help="print the report and its findings as JSON instead of text")
    p.add_argument("--threshold", action="append", type=threshold, default=[], metavar="NAME=VALUE",
                   help="change a findings threshold (repeatable; docs/report.md lists them: "
                   + ", ".join(f"{f}={v}" for f, v in vars(Thresholds()).items()) + ")")
    return p


def report_json(report: Report, findings: list[Finding], files: list[str], top: int = DEFAULT_TOP) -> dict[str, Any]:
    """What `report --json` prints: the report's tables, its notes and its findings."""
    return {"trace": files, **report.as_dict(top), "notes": report.notes(),
            "findings": [f.as_dict() for f in findings]}


def threshold(text: str) -> str:
    """A --threshold argument, checked (argparse turns the error into one line, exit status 2)."""
    try:
        Thresholds().set(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def thresholds(settings: list[str]) -> Thresholds:
    th = Thresholds()
    for text in settings:
        th.set(text)
    return th


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise ReportError(f"cannot write '{path}': {e.strerror}") from None


def build(files: list[str], keep_events: bool = False, *, sample: bool = False, limit: int = PERFETTO_LIMIT,
          jobs: int = 1, on_progress: Callable[[int], None] | None = None,
          on_truncated: Callable[[str, int, int], None] | None = None,
          tiny_bytes: int = Thresholds.tiny_io_bytes) -> tuple[Report, list[dict[str, Any]]]:
    """Read the trace files into a Report; with keep_events, also their first `limit` events.

    sample: keep a bounded sample of the events for the HTML charts in `report.sample`. jobs: worker
    processes (1: read here). on_progress(n): n more bytes of the files read. on_truncated(path, lines,
    partial_bytes): a compressed file ends early; its whole lines were read."""
    report, kept = _build(files, sample, limit if keep_events else 0, jobs, on_progress, on_truncated, tiny_bytes)
    return report, [_line_event(line) for line in kept]


def _build(files: list[str], sample: bool, keep: int, jobs: int, on_progress: Callable[[int], None] | None,
           on_truncated: Callable[[str, int, int], None] | None,
           tiny_bytes: int = Thresholds.tiny_io_bytes) -> tuple[Report, list[bytes]]:
    with no_gc():
        tally, kept = scan(files, jobs=jobs, sample=CHART_POINTS if sample else 0, keep=keep,
                           on_progress=on_progress, on_truncated=on_truncated, tiny_bytes=tiny_bytes)
        return Report.from_tally(tally), kept


def _input_size(files: list[str]) -> tuple[int, int]:
    """(bytes in the files, an estimate of their decompressed size: a compressed trace is ~10x smaller)."""
    total = estimate = 0
    for path in files:
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                continue  # a pipe, say: its first bytes are for the reader, not to be peeked at here
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                compressed = TraceReader(f).codec is not None
        except OSError:
            continue
        total += size
        estimate += size * 10 if compressed else size
    return total, estimate


def _progress_bar(total: int, estimate: int) -> Any:
    """A progress bar on stderr (bytes of the files read), for a large input on a terminal; else None."""
    if estimate < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    tqdm.monitor_interval = 0  # no monitor thread: the report forks its workers after this
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="reading", leave=False,
                mininterval=0.25, file=sys.stderr, dynamic_ncols=True)


def run_report(argv: list[str]) -> int:
    if argv[:1] == ["diff"]:
        from .report_diff import run_diff
        return run_diff(argv[1:])
    args = parser().parse_args(argv)
    th = thresholds(args.threshold)
    if trace_scan.COMPILED_NOTE:
        print(f"{PROG}: {trace_scan.COMPILED_NOTE}", file=sys.stderr)
    size, estimate = _input_size(args.traces)
    jobs = args.jobs or (default_jobs() if estimate >= PARALLEL_MIN_BYTES else 1)
    bar = _progress_bar(size, estimate)

    def truncated(path: str, lines: int, partial: int) -> None:
        cut = f", and skipped the {partial} bytes of the line it cut" if partial else ""
        msg = (f"{PROG}: warning: '{path}' ends before the end of its compressed data (the writer was killed, "
               f"or is still writing): read its {lines} whole lines{cut}")
        if bar is not None:
            bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    try:
        try:
            report, kept = _build(args.traces, bool(args.html), args.perfetto_limit if args.perfetto else 0, jobs,
                                  bar.update if bar is not None else None, truncated, th.tiny_io_bytes)
        finally:
            if bar is not None:
                bar.close()
        findings = find(report, th)
        if args.perfetto:
            write_perfetto(kept, args.perfetto)
        if args.html:
            _write(args.html, render_html(report, report.sample, args.traces, args.top, findings))
        told = sys.stderr if args.json else sys.stdout
        if args.json:
            sys.stdout.write(json.dumps(report_json(report, findings, args.traces, args.top), indent=1) + "\n")
        else:
            render_text(report, sys.stdout, args.traces, args.top)
            render_findings(findings, sys.stdout)
        if args.perfetto:
            cut = (f" (the first {len(kept)} of {report.events} operations: --perfetto-limit N for more)"
                   if len(kept) < report.events else "")
            print(f"\nPerfetto trace written to {args.perfetto}{cut}", file=told)
        if args.html:
            print(f"\nHTML report written to {args.html}", file=told)
    except ReportError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `report t.jsonl | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0
