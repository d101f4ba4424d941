"""The report as text."""

from __future__ import annotations

from collections import Counter
from typing import TextIO

from .model import DEFAULT_TOP, Report, ranked

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


