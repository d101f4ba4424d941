"""`fuse-passthrough report diff BEFORE AFTER`: what changed between two runs of the same program.

Both traces are read as `report` reads them (plain, .gz or .zst, any size, the same streaming pass); then per
operation, process (by program name: pids differ between runs) and path, the change in requests, bytes, time and
errors; and the findings that appeared or went away. `--fail-on CONDITION` makes it a CI check (exit status 3
when a condition holds); CONDITION syntax is in `parse_condition` and docs/report.md, "report diff".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from ..arguments import Parser, int_at_least
from ..tracing.events import KERNEL_COMM
from ..tracing.stats import Summary
from . import DEFAULT_TOP, PARALLEL_MIN_BYTES, _build, _input_size, threshold, thresholds
from .findings import Finding, Thresholds, find
from .model import Report
from .reading import ReportError
from .scan import default_jobs
from .text import display

PROG = "fuse-passthrough report diff"
FAILED = 3  # exit status when a --fail-on condition holds
MEASURES = ("requests", "time", "errors", "bytes")
TOTALS_ONLY = ("new-warnings",)
_CONDITION = re.compile(r"^(?P<what>[a-z_][a-z0-9_-]*)(?:\.(?P<measure>[a-z]+))?:(?P<sign>[+-])"
                        r"(?P<amount>\d+(?:\.\d+)?)(?P<pct>%?)$")


def _known_ops() -> frozenset[str]:
    from ..tracing.events import ARG_NAMES
    return frozenset(ARG_NAMES) | {"fdatasync", "readdir_with_offset"}


@dataclass(frozen=True)
class Condition:
    """`--fail-on` WHAT[.MEASURE]:(+|-)N[%]: holds when the measure grew (+) or shrank (-) by at least N (or N %).

    WHAT: `requests`, `time`, `errors`, `bytes` (the whole trace), an operation name (`fsync`: its requests;
    `fsync.time`: its time), or `new-warnings` (warning-level findings of AFTER that BEFORE had not)."""

    text: str
    what: str
    measure: str
    sign: int
    amount: float
    percent: bool

    def holds(self, before: float, after: float) -> bool:
        change = (after - before) * self.sign
        if change <= 0:
            return False
        if not self.percent:
            return change >= self.amount
        return before == 0 or change / before * 100 >= self.amount


def parse_condition(text: str) -> Condition:
    """A --fail-on condition, or argparse's one-line error."""
    m = _CONDITION.match(text)
    if m is None:
        raise argparse.ArgumentTypeError(f"bad condition {text!r}: expected WHAT[.MEASURE]:+N or :+N% "
                                         "(e.g. fsync:+10%, requests:+20%, time:+5%, new-warnings:+1)")
    what, measure = m["what"], m["measure"]
    if what in MEASURES:
        if measure is not None:
            raise argparse.ArgumentTypeError(f"bad condition {text!r}: {what} takes no .MEASURE")
        what, measure = "total", what
    elif what in TOTALS_ONLY:
        if measure is not None or m["pct"] or m["sign"] == "-":  # BEFORE has none that AFTER has not
            raise argparse.ArgumentTypeError(f"bad condition {text!r}: {what} takes a count, as in {what}:+1")
        measure = "count"
    elif what in _known_ops():
        measure = measure or "requests"
        if measure not in MEASURES:
            raise argparse.ArgumentTypeError(f"bad condition {text!r}: MEASURE is one of {', '.join(MEASURES)}")
    else:
        raise argparse.ArgumentTypeError(f"bad condition {text!r}: {what!r} is not requests, time, errors, bytes, "
                                         "new-warnings or an operation name")
    return Condition(text, what, measure, 1 if m["sign"] == "+" else -1, float(m["amount"]), bool(m["pct"]))


# ------------------------------------------------------------------------------------------------ the change

Row = dict[str, int]  # measure -> value


def _op_rows(summary: Summary) -> dict[str, Row]:
    return {op: {"requests": s.calls, "time": s.total_ns, "errors": s.errors, "bytes": s.bytes_read + s.bytes_written}
            for op, s in summary.ops.items()}


def _process_rows(report: Report) -> dict[str, Row]:
    """Per program name (comm; the kernel's own requests as [kernel]): pids differ from run to run."""
    rows: dict[str, Row] = {}
    for (pid, comm), g in report.processes.items():
        name = KERNEL_COMM if pid == 0 else (comm or "?")
        row = rows.setdefault(name, {"requests": 0, "time": 0, "errors": 0})
        row["requests"] += g.calls
        row["time"] += g.total_ns
        row["errors"] += g.errors
    return rows


def _path_rows(report: Report) -> dict[str, Row]:
    from .findings import READ_BYTES, WRITTEN
    io = report.evidence.io
    return {p: {"requests": g.calls, "time": g.total_ns, "errors": g.errors,
                "bytes": (io[p][READ_BYTES] + io[p][WRITTEN]) if p in io else 0}
            for p, g in report.paths.items()}


def _total(rows: dict[str, Row]) -> Row:
    out = {m: 0 for m in MEASURES}
    for row in rows.values():
        for m in MEASURES:
            out[m] += row.get(m, 0)
    return out


def _changes(before: dict[str, Row], after: dict[str, Row], top: int | None) -> list[dict[str, Any]]:
    """Rows that changed, most changed requests (then time) first."""
    out: list[dict[str, Any]] = []
    zero = {m: 0 for m in MEASURES}
    for name in set(before) | set(after):
        b, a = before.get(name, zero), after.get(name, zero)
        change = {m: a.get(m, 0) - b.get(m, 0) for m in a.keys() | b.keys()}
        if any(change.get(m) for m in ("requests", "errors", "bytes")):  # time alone varies from run to run
            out.append({"name": name, "before": b, "after": a, "change": change})
    out.sort(key=lambda r: (-abs(r["change"]["requests"]), -abs(r["change"]["time"]), str(r["name"])))
    return out if top is None else out[:top]


def _finding_keys(findings: list[Finding]) -> dict[str, Finding]:
    return {f.id: f for f in findings}


def diff(before: Report, after: Report, th: Thresholds, top: int = DEFAULT_TOP) -> dict[str, Any]:
    """The change from one run to the other, as JSON-ready data."""
    ops_b, ops_a = _op_rows(before.summary), _op_rows(after.summary)
    fb, fa = _finding_keys(find(before, th)), _finding_keys(find(after, th))
    appeared = [fa[k] for k in fa if k not in fb or (fa[k].level == "warning" != fb[k].level)]
    gone = [fb[k] for k in fb if k not in fa or (fb[k].level == "warning" != fa[k].level)]
    return {
        "totals": {"before": _total(ops_b), "after": _total(ops_a)},
        "operations": _changes(ops_b, ops_a, None),
        "processes": _changes(_process_rows(before), _process_rows(after), top),
        "paths": _changes(_path_rows(before), _path_rows(after), top),
        "findings": {
            "appeared": [{"id": f.id, "level": f.level, "title": f.title} for f in appeared],
            "gone": [{"id": f.id, "level": f.level, "title": f.title} for f in gone],
            "new_warnings": sum(f.level == "warning" for f in appeared),
        },
    }


def measure_of(d: dict[str, Any], c: Condition, before: Report, after: Report) -> tuple[float, float]:
    """(before, after) of a condition's measure: the diff's totals and findings, the reports' operations (all of
    them: the diff lists only those whose requests, errors or bytes changed, and `fsync.time` may change alone)."""
    if c.what == "total":
        return d["totals"]["before"][c.measure], d["totals"]["after"][c.measure]
    if c.what == "new-warnings":
        return 0, d["findings"]["new_warnings"]
    zero: Row = {}
    b = _op_rows(before.summary).get(c.what, zero)
    a = _op_rows(after.summary).get(c.what, zero)
    return b.get(c.measure, 0), a.get(c.measure, 0)


# ------------------------------------------------------------------------------------------------ output

def _pct(b: int, a: int) -> str:
    if b == a:
        return "0%"
    return "new" if b == 0 else f"{100 * (a - b) / b:+.1f}%"


def _fmt(measure: str, v: int) -> str:
    return f"{v / 1e6:.3f} ms" if measure == "time" else str(v)


def render(d: dict[str, Any], out: TextIO, before: str, after: str) -> None:
    tb, ta = d["totals"]["before"], d["totals"]["after"]
    out.write(f"before: {before}\nafter:  {after}\n\n")
    out.write("totals:\n")
    for m in MEASURES:
        out.write(f"  {m:<9} {_fmt(m, tb[m]):>16} -> {_fmt(m, ta[m]):>16}  ({_pct(tb[m], ta[m])})\n")
    for title, key in (("operations", "operations"), ("processes (by program name)", "processes"),
                       ("paths", "paths")):
        rows = d[key]
        out.write(f"\n{title} that changed:\n")
        if not rows:
            out.write("  (none)\n")
            continue
        for r in rows:
            b, a = r["before"], r["after"]
            parts = [f"requests {b['requests']} -> {a['requests']} ({_pct(b['requests'], a['requests'])})",
                     f"time {_pct(b['time'], a['time'])}"]
            if b.get("errors") or a.get("errors"):
                parts.append(f"errors {b['errors']} -> {a['errors']}")
            if b.get("bytes") or a.get("bytes"):
                parts.append(f"bytes {b['bytes']} -> {a['bytes']}")
            out.write(f"  {display(r['name'])}: " + ", ".join(parts) + "\n")
    f = d["findings"]
    out.write("\nfindings that appeared:\n")
    out.write("".join(f"  [{x['level']}] {x['id']}: {display(x['title'])}\n" for x in f["appeared"]) or "  (none)\n")
    out.write("\nfindings that went away:\n")
    out.write("".join(f"  [{x['level']}] {x['id']}: {display(x['title'])}\n" for x in f["gone"]) or "  (none)\n")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="What changed between two traces of the same program: per operation, "
               "process and path, the change in requests, bytes, time and errors, and the findings that appeared "
               "or went away.",
               epilog="Exit status: 0 ok, 1 unreadable or malformed input, 2 bad arguments, 3 a --fail-on "
               "condition holds.")
    p.add_argument("before", metavar="BEFORE", help="trace of the first run (plain, .gz, .zst)")
    p.add_argument("after", metavar="AFTER", help="trace of the second run")
    p.add_argument("--fail-on", action="append", type=parse_condition, default=[], metavar="CONDITION",
                   help="exit with status 3 when CONDITION holds (repeatable): WHAT[.MEASURE]:+N[%%] or -N[%%], "
                   "WHAT one of requests, time, errors, bytes, new-warnings or an operation (MEASURE: requests, "
                   "time, errors, bytes); e.g. fsync:+10%%, requests:+20%%, write.bytes:+1000, new-warnings:+1")
    p.add_argument("--json", action="store_true", help="print the change as JSON")
    p.add_argument("--top", type=int_at_least(1), default=DEFAULT_TOP, metavar="N",
                   help=f"rows of processes and paths shown (default {DEFAULT_TOP})")
    p.add_argument("--threshold", action="append", type=threshold, default=[], metavar="NAME=VALUE",
                   help="a findings threshold, as for report")
    p.add_argument("--jobs", type=int_at_least(1), default=None, metavar="N", help="processes reading each trace")
    return p


def _read(path: str, jobs: int | None, th: Thresholds) -> Report:
    def truncated(p: str, lines: int, partial: int) -> None:
        print(f"{PROG}: warning: '{p}' ends before the end of its compressed data: read its {lines} whole lines",
              file=sys.stderr)
    _, estimate = _input_size([path])
    n = jobs or (default_jobs() if estimate >= PARALLEL_MIN_BYTES else 1)
    report, _ = _build([path], False, 0, n, None, truncated, th.tiny_io_bytes)
    return report


def run_diff(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    th = thresholds(args.threshold)
    try:
        before, after = _read(args.before, args.jobs, th), _read(args.after, args.jobs, th)
    except ReportError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    d = diff(before, after, th, args.top)
    results = []
    for c in args.fail_on:
        b, a = measure_of(d, c, before, after)
        results.append({"condition": c.text, "before": b, "after": a, "holds": c.holds(b, a)})
    d["fail_on"] = results
    try:
        if args.json:
            sys.stdout.write(json.dumps({"before": args.before, "after": args.after, **d}, indent=1) + "\n")
        else:
            render(d, sys.stdout, args.before, args.after)
        sys.stdout.flush()
    except BrokenPipeError:
        return 0
    held = [r for r in results if r["holds"]]
    for r in held:
        print(f"{PROG}: --fail-on {r['condition']} holds: {r['before']} -> {r['after']}", file=sys.stderr)
    return FAILED if held else 0
