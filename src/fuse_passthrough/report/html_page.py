"""The report as one self-contained HTML page (templates/)."""

from __future__ import annotations

import html
import json
import math
import os
import string
from functools import cache
from importlib import resources
from typing import Any

from .findings import Finding
from .model import DEFAULT_TOP, Group, Report, _top, process_label
from .perfetto import _clean, _sorted_events
from .text import _ms, _ops_text, display

HTML_ERROR_ROWS = 1000  # (errno, path) rows in the HTML page
SWIMLANES = 12       # processes shown in the HTML swimlane chart





# --------------------------------------------------------------------------------------------- HTML

_PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
            "#9c755f", "#bab0ac", "#1f77b4", "#17becf", "#8c564b", "#bcbd22", "#7f7f7f", "#d62728"]


def _e(s: Any) -> str:
    return html.escape(display(s) if isinstance(s, str) or s is None else str(s), quote=True)



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
    sample = events = _sorted_events(events)  # report.sample: already at most CHART_POINTS
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


