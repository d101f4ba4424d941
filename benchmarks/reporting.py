"""From samples to results: medians, ratios, goals, the machine description, the markdown and JSON files."""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import MiB, cmd_output
from runner import Results
from targets import Target
from workloads import DATA_ROWS, METADATA_ROWS, PAR_CLIENTS, Config, Workload


def machine_description(workdir: Path) -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / (1 << 20):.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    debian = ""
    try:
        debian = Path("/etc/debian_version").read_text().strip()
    except OSError:
        pass
    pretty = ""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    fs = cmd_output(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(workdir)])  # where SOURCE and native are
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "os": pretty,
        "debian_version": debian,
        "libfuse3": cmd_output(["pkg-config", "--modversion", "fuse3"])
        or cmd_output(["dpkg-query", "-W", "-f", "${Version}", "libfuse3-3"]),
        "libfuse2": cmd_output(["dpkg-query", "-W", "-f", "${Version}", "libfuse2"]),
        "python": platform.python_version(),
        "bindfs": cmd_output(["dpkg-query", "-W", "-f", "${Version}", "bindfs"]),
        "loggedfs": cmd_output(["dpkg-query", "-W", "-f", "${Version}", "loggedfs"]),
        "git": cmd_output(["git", "--version"]),
        "workdir_fs": fs,
    }


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summarize(cfg: Config, targets: list[Target], workloads: list[Workload], res: Results, rounds: int,
              started: float) -> dict[str, Any]:
    rows = [r for w in workloads for r in w.rows]
    med: dict[str, dict[str, float | None]] = {}
    for t in targets:
        med[t.name] = {r: median(res.samples.get(t.name, {}).get(r, [])) for r in rows}

    def ratio(a: str, b: str, row: str) -> float | None:
        x, y = med.get(a, {}).get(row), med.get(b, {}).get(row)
        return x / y if x is not None and y else None

    baselines = {"native": "native", "passthrough_ll": "passthrough_ll",
                 "passthrough_ll_t0": "passthrough_ll_t0", "loggedfs": "loggedfs"}
    ratios: dict[str, dict[str, dict[str, float | None]]] = {}
    for key, base in baselines.items():
        if res.samples.get(base):
            ratios[f"vs_{key}"] = {t.name: {r: ratio(t.name, base, r) for r in rows} for t in targets}
    pairs = [("ours_trace", "ours_notrace"), ("ours_trace_uring", "ours_notrace_uring"),
             ("ours_notrace_uring", "ours_notrace"), ("ours_trace_uring", "ours_trace"),
             ("ours_trace_st", "ours_notrace_st"),
             ("ours_trace_strict", "ours_notrace_strict"), ("base_trace", "base_notrace")]
    tracing = {f"{a}/{b}": {r: ratio(a, b, r) for r in rows} for a, b in pairs if a in med and b in med}

    trace_info = {}
    for name, per in res.logbytes.items():
        tb = sum(v[0] for v in per.values())
        te = sum(v[1] for v in per.values())
        trace_info[name] = {
            "bytes": tb, "events": te, "bytes_per_event": (tb / te) if te else None,
            "per_workload": {w: {"bytes": v[0], "events": v[1], "bytes_per_event": v[0] / v[1] if v[1] else None}
                             for w, v in per.items()},
            "note": ("JSONL trace events" if name != "loggedfs" else "loggedfs log lines (one per operation)"),
        }

    # CPU seconds of the daemon and of its trace writer per workload (medians over rounds), and per event of the
    # traced target's trace (the untraced daemon serves the same requests, so its CPU is divided by them too).
    events_per_run: dict[str, float] = {}
    for name, per in res.logbytes.items():
        if name == "loggedfs":
            continue
        for wname, (_b, ev) in per.items():
            runs = len(res.cpu.get(name, {}).get(wname, [])) or 1
            events_per_run.setdefault(wname, ev / runs)
    cpu: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, per_wl in res.cpu.items():
        for wname, samples in per_wl.items():
            d = median([x[0] for x in samples])
            wr = median([x[1] for x in samples])
            ev = events_per_run.get(wname)
            cpu.setdefault(name, {})[wname] = {
                "daemon_s": d, "writer_s": wr, "events": ev,
                "daemon_us_per_event": d / ev * 1e6 if d is not None and ev else None,
                "writer_us_per_event": wr / ev * 1e6 if wr is not None and ev else None}

    goals = evaluate_goals(med, res, rows)
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "duration_s": round(time.perf_counter() - started, 1),
        "machine": machine_description(cfg.workdir),
        "config": {
            "rounds": rounds, "smoke": cfg.smoke, "size_bytes": cfg.size, "small_files": cfg.files,
            "rand_reads": cfg.rand_reads, "tree_files": cfg.tree_count, "repo_files": cfg.repo_files,
            "parallel_clients": PAR_CLIENTS, "parallel_iterations_per_client": cfg.par_iters,
            "page_cache_dropped_for_cold_reads": cfg.cache_drop_ok,
            "cpus": list(cfg.cpus) if cfg.cpus is not None else None,
            "settle_s": cfg.settle,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        },
        "workloads": {w.name: {"rows": w.rows, "description": w.description} for w in workloads},
        "rows": rows,
        "targets": {t.name: {"label": t.label, "status": t.status, "args": t.args,
                             "peak_rss_kib": res.rss.get(t.name),
                             "peak_rss_kib_by_workload": res.rss_by_workload.get(t.name, {}),
                             "errors": res.errors.get(t.name, [])} for t in targets},
        "samples": res.samples,
        "median_s": med,
        "ratios": ratios,
        "tracing_on_vs_off": tracing,
        "trace": trace_info,
        "cpu": cpu,
        "goals": goals,
    }


def evaluate_goals(med: dict[str, dict[str, float | None]], res: Results, rows: list[str]) -> list[dict[str, Any]]:
    """The issue's targets, each as met / missed / not measured, with the worst ratio that decides it."""
    goals: list[dict[str, Any]] = []

    def worst(a: str, b: str, rs: list[str]) -> tuple[float | None, str | None]:
        best: tuple[float | None, str | None] = (None, None)
        for r in rs:
            x, y = med.get(a, {}).get(r), med.get(b, {}).get(r)
            if x is None or not y:
                continue
            q = x / y
            if best[0] is None or q > best[0]:
                best = (q, r)
        return best

    def add(goal: str, a: str, b: str, rs: list[str], limit: float) -> None:
        q, row = worst(a, b, [r for r in rs if r in rows])
        goals.append({"goal": goal, "target": a, "baseline": b, "limit": limit, "worst_ratio": q, "worst_row": row,
                      "status": "not measured" if q is None else ("met" if q <= limit else "missed")})

    for ours in ("ours_notrace", "ours_trace", "ours_notrace_uring", "ours_trace_uring"):
        add("seq read/write <= 1.0x passthrough_ll", ours, "passthrough_ll", DATA_ROWS, 1.0)
        add("metadata <= 1.5x passthrough_ll", ours, "passthrough_ll", METADATA_ROWS, 1.5)
        add("metadata <= 1.5x passthrough_ll timeout=0 (same coherence)", ours, "passthrough_ll_t0",
            METADATA_ROWS, 1.5)
        add("faster than loggedfs everywhere", ours, "loggedfs", rows, 1.0)
    add("tracing on <= 1.15x off", "ours_trace", "ours_notrace", rows, 1.15)
    add("tracing on <= 1.15x off", "ours_trace_uring", "ours_notrace_uring", rows, 1.15)
    add("real test suite, traced <= 1.0x passthrough_ll", "ours_trace", "passthrough_ll", ["testsuite"], 1.0)
    # >= 80 % of native throughput = at most 1.25x native time
    add("kernel passthrough seq read/write >= 80% of native throughput", "ours_kpassthrough", "native",
        DATA_ROWS, 1.25)
    for ours in ("ours_notrace", "ours_trace", "ours_notrace_uring", "ours_trace_uring"):
        kib = res.rss.get(ours)
        goals.append({"goal": "daemon peak RSS < 100 MB", "target": ours, "baseline": None, "limit": 100e6,
                      "value_bytes": kib * 1024 if kib else None,
                      "status": "not measured" if not kib else ("met" if kib * 1024 < 100e6 else "missed")})
    return goals


def fmt_s(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 10 else f"{x:.2f}"


def fmt_r(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def render_markdown(summary: dict[str, Any]) -> str:
    m = summary["machine"]
    c = summary["config"]
    tnames = list(summary["targets"])
    rows = summary["rows"]
    status = {t: v["status"] for t, v in summary["targets"].items()}
    med = summary["median_s"]
    out = io.StringIO()
    w = out.write
    w(f"# fuse-passthrough benchmark ({'smoke' if c['smoke'] else 'full'})\n\n")
    w(f"Generated {summary['generated']} by `{c['command']}` in {summary['duration_s']} s.\n\n")
    w("## Machine\n\n")
    for k in ("cpu", "cores", "memory", "kernel", "os", "debian_version", "libfuse3", "libfuse2", "python",
              "bindfs", "loggedfs", "git", "workdir_fs"):
        w(f"- {k}: {m.get(k) or '–'}\n")
    w("\n## Configuration\n\n")
    w(f"- rounds: {c['rounds']} (medians reported; targets interleaved per workload, order rotated per round)\n")
    w(f"- sequential file: {c['size_bytes'] / MiB:.0f} MiB; random reads: {c['rand_reads']} × 4 KiB; "
      f"small files: {c['small_files']}; untar/walk tree: {c['tree_files']} files; git repo: "
      f"{c['repo_files']} files; parallel: {c['parallel_clients']} clients × "
      f"{c['parallel_iterations_per_client']} iterations\n")
    w(f"- page cache dropped before cold reads: {c['page_cache_dropped_for_cold_reads']}\n")
    cpus = c.get("cpus")
    w(f"- CPUs: {'every process of the run on CPU ' + ','.join(map(str, cpus)) if cpus else 'free placement'}\n")
    settle = c.get("settle_s") or 0
    w(f"- before each timed phase: {f'{settle:g} s of sleep (--settle)' if settle else 'no pause'}\n\n")
    w("Workloads:\n\n")
    for name, wl in summary["workloads"].items():
        w(f"- **{name}** ({', '.join(wl['rows'])}): {wl['description']}\n")
    w("\nTargets:\n\n")
    for t, v in summary["targets"].items():
        extra = f" — **{v['status']}**" if v["status"] != "ok" else ""
        w(f"- `{t}`: {v['label']}{extra}\n")

    def table(title: str, cell: Callable[[str, str], str], names: list[str], note: str = "") -> None:
        w(f"\n## {title}\n\n")
        if note:
            w(note + "\n\n")
        w("| workload | " + " | ".join(names) + " |\n")
        w("|---|" + "---:|" * len(names) + "\n")
        for r in rows:
            w(f"| {r} | " + " | ".join(cell(t, r) for t in names) + " |\n")

    def sec_cell(t: str, r: str) -> str:
        if status[t] != "ok" and not summary["samples"].get(t):
            return status[t].split(":")[0] if not status[t].startswith("n/a") else status[t]
        return fmt_s(med.get(t, {}).get(r))

    table("Median seconds (lower is better)", sec_cell, tnames)
    w("| peak daemon RSS (VmHWM) | " + " | ".join(
        (f"{summary['targets'][t]['peak_rss_kib'] / 1024:.1f} MiB" if summary["targets"][t]["peak_rss_kib"]
         else "–") for t in tnames) + " |\n")

    def spread_cell(t: str, r: str) -> str:
        xs = summary["samples"].get(t, {}).get(r) or []
        return f"{fmt_s(min(xs))}–{fmt_s(max(xs))}" if xs else "–"

    table("Spread over rounds (fastest–slowest seconds)", spread_cell,
          [t for t in tnames if summary["samples"].get(t)],
          note="On a shared VM a row can be bimodal between rounds; a median's meaning depends on this spread.")
    for key, title in (("vs_native", "Ratio vs native"), ("vs_passthrough_ll", "Ratio vs passthrough_ll"),
                       ("vs_passthrough_ll_t0", "Ratio vs passthrough_ll -o timeout=0"),
                       ("vs_loggedfs", "Ratio vs loggedfs")):
        rt = summary["ratios"].get(key)
        if not rt:
            continue
        names = [t for t in tnames if t != "native" and summary["samples"].get(t)]
        table(title, lambda t, r, rt=rt: fmt_r(rt.get(t, {}).get(r)), names)
    if summary["tracing_on_vs_off"]:
        pairs = list(summary["tracing_on_vs_off"])
        table("Tracing on vs off", lambda t, r: fmt_r(summary["tracing_on_vs_off"][t].get(r)), pairs)
    if summary["trace"]:
        w("\n## Trace / log volume\n\n| target | bytes | events | bytes per event |\n|---|---:|---:|---:|\n")
        for t, v in summary["trace"].items():
            bpe = v["bytes_per_event"]
            w(f"| {t} ({v['note']}) | {v['bytes']:,} | {v['events']:,} | {bpe:.1f} |\n" if bpe else
              f"| {t} ({v['note']}) | {v['bytes']:,} | {v['events']:,} | – |\n")
    if summary.get("cpu"):
        w("\n## Daemon and trace writer CPU (medians; µs per event of the traced target's trace)\n\n"
          "| target | workload | events | daemon CPU s | µs/event | writer CPU s | µs/event |\n"
          "|---|---|---:|---:|---:|---:|---:|\n")
        for t, per in summary["cpu"].items():
            for wname, v in per.items():
                def f(x: float | None, spec: str) -> str:
                    return format(x, spec) if x is not None else "–"
                w(f"| {t} | {wname} | {f(v['events'], ',.0f')} | {f(v['daemon_s'], '.2f')} | "
                  f"{f(v['daemon_us_per_event'], '.1f')} | {f(v['writer_s'], '.2f')} | "
                  f"{f(v['writer_us_per_event'], '.1f')} |\n")
    w("\n## Goals\n\n| goal | target | worst ratio (row) | status |\n|---|---|---|---|\n")
    for g in summary["goals"]:
        if "value_bytes" in g:
            v = f"{g['value_bytes'] / 1e6:.1f} MB" if g["value_bytes"] else "–"
        else:
            v = f"{fmt_r(g['worst_ratio'])} ({g['worst_row']})" if g["worst_ratio"] is not None else "–"
        w(f"| {g['goal']} | {g['target']} | {v} | {g['status']} |\n")
    errs = {t: v["errors"] for t, v in summary["targets"].items() if v["errors"]}
    if errs:
        w("\n## Errors\n\n")
        for t, es in errs.items():
            for e in es:
                w(f"- {t}: {e}\n")
    return out.getvalue()


def write_results(summary: dict[str, Any], md: str, results_dir: Path, name: str) -> tuple[Path, Path]:
    """NAME.json (everything measured) and NAME.md (the tables) in `results_dir`; returns their paths."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"{name}.json"
    md_path = results_dir / f"{name}.md"
    json_path.write_text(json.dumps(summary, indent=1, sort_keys=False) + "\n")
    md_path.write_text(md)
    return json_path, md_path
