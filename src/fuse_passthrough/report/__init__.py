"""`fuse-passthrough report TRACE.jsonl`: summarise a saved JSONL trace, export it for Perfetto or as HTML.

The text report is the per-operation table (the same `Summary` the mount prints at exit), then the busiest
paths and processes by number of operations and by total time, then the failures grouped by errno and path.

`--perfetto OUT.json` writes Chrome Trace Event JSON (open it in https://ui.perfetto.dev or
chrome://tracing): one process track per caller pid, one complete slice per operation.

`--html OUT.html` writes one self-contained page (inline CSS, SVG and a little vanilla JS, nothing fetched
from the network) with the same tables and two charts: latency over time, and per-process swimlanes. Its
skeleton, CSS and JS are package data (templates/), filled in with string.Template.

The files (plain, .gz or .zst) are read by reading and scan: fast, in worker processes for large ones, in bounded
memory; this module turns its totals into the report and renders it.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Callable
from typing import Any

from ..arguments import Parser, int_at_least
from ..tracing.compression import TraceReader
from . import reading, scan
from .findings import Finding, Thresholds, find, render_findings
from .html_page import HTML_ERROR_ROWS, render_html
from .model import DEFAULT_TOP, Report, process_label
from .perfetto import _line_event, perfetto_trace, write_perfetto
from .reading import ReportError, read_events
from .scan import default_jobs, no_gc
from .text import display, render_text

PROG = "fuse-passthrough report"
CHART_POINTS = 5000  # at most this many operations drawn per HTML chart (all errors and the slowest kept)
PERFETTO_LIMIT = 500_000  # operations exported to Perfetto by default (the first ones), to bound memory
PARALLEL_MIN_BYTES = 16 << 20  # smaller inputs are read in this process: starting workers costs more
PROGRESS_MIN_BYTES = 64 << 20  # a progress bar (on a terminal) for inputs at least this large

__all__ = ["DEFAULT_TOP", "Report", "ReportError", "build", "display", "perfetto_trace", "process_label",
           "read_events", "render_html", "render_text", "run_report", "write_perfetto"]

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
                   help=f"rows in the top paths/processes tables, and in the text format's errors by errno and "
                        f"path (default {DEFAULT_TOP}; HTML lists up to {HTML_ERROR_ROWS} of those, JSON all)")
    p.add_argument("--jobs", type=_positive, default=None, metavar="N",
                   help="processes reading the trace (default: one per CPU, at most 8, for inputs over "
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
        tally, kept = scan.scan(files, jobs=jobs, sample=CHART_POINTS if sample else 0, keep=keep,
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
        from .diff import run_diff
        return run_diff(argv[1:])
    args = parser().parse_args(argv)
    th = thresholds(args.threshold)
    if reading.COMPILED_NOTE:
        print(f"{PROG}: {reading.COMPILED_NOTE}", file=sys.stderr)
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
        with no_gc():  # the findings and the outputs make no reference cycles either (collections cost 3-5 %)
            return _run(args, th, jobs, bar, truncated)
    except ReportError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `report t.jsonl | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace, th: Thresholds, jobs: int, bar: Any,
         truncated: Callable[[str, int, int], None]) -> int:
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
    return 0

