"""`benchmarks/bench.py --smoke` runs every target and workload it can and writes complete results.

Targets whose tools are not installed (bindfs and loggedfs come with `make bench`, not `make test`) must be
reported as "missing", not crash the run. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fuse_passthrough.lowlevel.binding import VERSION as FUSE_VERSION

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks" / "bench.py"

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
                       reason="needs /dev/fuse and fusermount3"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the benchmark drops caches and mounts as root"),
]

EXPECTED_TARGETS = ["native", "passthrough_ll", "passthrough_ll_t0", "bindfs", "loggedfs", "ours_notrace",
                    "ours_trace", "ours_notrace_uring", "ours_trace_uring", "ours_kpassthrough"]
EXPECTED_ROWS = ["seq_write", "seq_read", "rand_read", "small_create", "small_stat", "small_read",
                 "small_delete", "untar", "walk_lstat", "reread_first", "reread_again", "git_status",
                 "git_status_again", "parallel4", "deep_tree", "deep_create", "deep_stat", "deep_remove",
                 "testsuite"]


def _fuse_mounts_under(prefix: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if prefix in line]


@pytest.mark.timeout(240)
def test_bench_smoke_produces_complete_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--results-dir", str(out), "--workdir",
                           str(work)], capture_output=True, text=True, timeout=200)
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((out / "smoke.json").read_text())
        md = (out / "smoke.md").read_text()
    finally:
        assert not _fuse_mounts_under(str(work)), "the benchmark left a mount behind"

    assert list(summary["targets"]) == EXPECTED_TARGETS
    assert summary["rows"] == EXPECTED_ROWS
    for key in ("cpu", "cores", "kernel", "libfuse3", "python", "debian_version"):
        assert key in summary["machine"]
    statuses = {name: t["status"] for name, t in summary["targets"].items()}
    for name, status in statuses.items():
        assert status == "ok" or status.startswith(("missing", "n/a")), (name, status)
        assert name in md
    # always runnable here: the limit and our own filesystem, traced and not
    for name in ("native", "ours_notrace", "ours_trace"):
        assert statuses[name] == "ok", (name, statuses[name], summary["targets"][name]["errors"])
    if shutil.which("gcc") and Path("/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c").exists():
        assert statuses["passthrough_ll"] == "ok", statuses["passthrough_ll"]
    # kernel passthrough runs wherever a libfuse >= 3.17 is at hand (`make test` builds one on Debian 12)
    new_libfuse = REPO / ".cache/libfuse-3.17/lib/libfuse3.so.4"
    if FUSE_VERSION >= (3, 17) or new_libfuse.exists():
        assert statuses["ours_kpassthrough"] == "ok", statuses["ours_kpassthrough"]
    else:
        assert statuses["ours_kpassthrough"].startswith("n/a: needs libfuse >= 3.17")
    # FUSE over io_uring wherever the kernel has it (the bench switches it on for those targets, as root)
    for name in ("ours_notrace_uring", "ours_trace_uring"):
        if Path("/sys/module/fuse/parameters/enable_uring").exists() and os.geteuid() == 0:
            assert statuses[name] == "ok", statuses[name]
        else:
            assert statuses[name].startswith("n/a"), statuses[name]

    for name, status in statuses.items():
        if status != "ok":
            assert name not in summary["samples"] or not summary["samples"][name]
            continue
        assert not summary["targets"][name]["errors"], summary["targets"][name]["errors"]
        for row in EXPECTED_ROWS:
            value = summary["median_s"][name][row]
            assert isinstance(value, float) and value >= 0, (name, row, value)
        if name != "native":
            assert summary["targets"][name]["peak_rss_kib"], name
        assert f"| {EXPECTED_ROWS[0]} |" in md
    _check_spread(summary, tmp_path)

    _check_trace_file_rows(summary["trace_files"], proc.stdout)

    trace = summary["trace"]["ours_trace"]
    assert trace["events"] > 0 and trace["bytes_per_event"] > 0
    assert "ours_trace/ours_notrace" in summary["tracing_on_vs_off"]
    assert {g["goal"] for g in summary["goals"]} >= {"tracing on <= 1.15x off", "daemon peak RSS < 100 MB"}


def _check_spread(summary: dict, tmp_path: Path) -> None:
    """The report shows each row's fastest and slowest round beside the medians: the same summary given three
    rounds of small_create for ours_notrace, rendered again by the benchmark's own reporting module."""
    summary["samples"]["ours_notrace"]["small_create"] = [0.5, 0.25, 2.0]
    path = tmp_path / "three-rounds.json"
    path.write_text(json.dumps(summary))
    md = subprocess.run([sys.executable, "-c", "import json, sys; sys.path.insert(0, sys.argv[1]); import reporting; "
                         "print(reporting.render_markdown(json.load(open(sys.argv[2]))))", str(BENCH.parent),
                         str(path)], capture_output=True, text=True, check=True).stdout
    spread = md.split("## Spread over rounds")[1].split("\n## ")[0]
    header = next(line for line in spread.splitlines() if line.startswith("| workload |"))
    column = [c.strip() for c in header.strip("|").split("|")].index("ours_notrace")
    line = next(line for line in spread.splitlines() if line.startswith("| small_create |"))
    assert [c.strip() for c in line.strip("|").split("|")][column] == "0.250–2.000"


def _check_trace_file_rows(rows: list[dict], printed: str) -> None:
    """benchmarks/trace_files.py's rows: one per output format, with sizes and times, then the report of the same
    events with longer lines (a deeper tree), and printed as a table."""
    assert [r["format"] for r in rows] == ["plain", "gz", "zst", "plain, deep tree"]
    for r in rows:
        assert r["events"] > 0 and r["bytes"] > 0 and r["report_s"] > 0
        assert r["report_events_per_s"] == pytest.approx(r["events"] / r["report_s"])
        line = next(line for line in printed.splitlines() if line.startswith(f"| {r['format']} | "))
        assert f"{r['events']:,}" in line and f"{r['bytes']:,}" in line
    formats, deep = rows[:3], rows[3]
    assert all(r["writer_us_per_event"] > 0 for r in formats)
    plain = rows[0]["bytes"]
    assert all(r["bytes"] < plain and r["ratio"] == pytest.approx(plain / r["bytes"]) for r in formats[1:])
    assert deep["events"] == rows[0]["events"] and 420 <= deep["bytes_per_event"] <= 470  # like the trace
    assert deep["ratio"] is None and deep["writer_us_per_event"] is None


def test_trace_files_smoke_prints_its_rows(tmp_path: Path) -> None:
    script = REPO / "benchmarks" / "trace_files.py"
    proc = subprocess.run([sys.executable, str(script), "--smoke", "--keep", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = "| format | events | bytes | bytes/event | ratio | writer µs/event | report s | report events/s |"
    assert proc.stdout.startswith(header)
    rows = []
    for line in proc.stdout.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append({"format": cells[0], "events": int(cells[1].replace(",", "")),
                     "bytes": int(cells[2].replace(",", "")), "ratio": cells[4], "writer": cells[5],
                     "report_s": float(cells[6]), "report_events_per_s": float(cells[7].replace(",", ""))})
    assert [r["format"] for r in rows] == ["plain", "gz", "zst", "plain, deep tree"]
    files = {"plain": "trace.jsonl", "gz": "trace.jsonl.gz", "zst": "trace.jsonl.zst", "plain, deep tree": "trace-deep.jsonl"}
    for r in rows:
        assert (tmp_path / "trace-files" / files[r["format"]]).stat().st_size == r["bytes"]  # the files it wrote
        assert r["events"] == 20_000 and r["report_s"] > 0
    for r in rows[:3]:
        assert float(r["ratio"].rstrip("×")) > 0 and float(r["writer"]) > 0
    assert rows[3]["ratio"] == rows[3]["writer"] == "—"
    assert rows[1]["bytes"] < rows[0]["bytes"] and rows[2]["bytes"] < rows[0]["bytes"] < rows[3]["bytes"]


def test_op_cost_times_every_handler_it_names(tmp_path: Path) -> None:
    """benchmarks/op_cost.py calls the current handlers with their current signatures: each row a time."""
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "op_cost.py"), "--files", "40", "--rounds", "1",
                        "--dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = {name.strip(): float(value) for name, value in
            (line.rsplit(None, 1) for line in r.stdout.splitlines() if line.startswith("  "))}
    handlers = ["lookup (absent)", "create", "getxattr (absent)", "write 1 KiB", "release", "getattr", "unlink",
                "forget"]
    for name in handlers + ["openat(O_CREAT|O_EXCL)", "fstat", "unlinkat"]:
        assert rows[name] > 0, name
    assert list(tmp_path.iterdir()) == []  # its SOURCE is gone


def test_wakeups_prints_a_row_per_target_and_leaves_no_mount() -> None:
    """benchmarks/wakeups.py mounts each target, measures, and unmounts: one table row each, shares in 0-100 %."""
    targets = ["ours_notrace_mt2", "ours_trace"]
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "wakeups.py"), "--n", "300", "--rounds", "1",
                        "--targets", ",".join(targets)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in r.stdout.splitlines()[2:]]
    assert [c[0].strip() for c in rows] == targets
    for c in rows:
        one_cpu, per_call, p10, p90 = (float(x) for x in c[1:5])
        assert 0 < one_cpu and 0 < p10 <= per_call <= p90
        assert 0 <= int(c[5].strip().rstrip("%")) <= 100 and float(c[6]) >= 0
    with open("/proc/mounts") as f:
        assert "fptwake-" not in f.read()


@pytest.mark.timeout(120)
def test_bench_cpus_confines_the_run_and_says_so(tmp_path: Path) -> None:
    out, work = tmp_path / "results", tmp_path / "work"
    cpu = min(os.sched_getaffinity(0))
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--cpus", str(cpu), "--targets", "native,ours_trace",
                           "--workloads", "small_files", "--results-dir", str(out), "--workdir", str(work)],
                          capture_output=True, text=True, timeout=100)
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        assert not _fuse_mounts_under(str(work)), "the benchmark left a mount behind"
    summary = json.loads((out / "smoke.json").read_text())
    assert summary["config"]["cpus"] == [cpu]
    assert f"- CPUs: every process of the run on CPU {cpu}\n" in (out / "smoke.md").read_text()
    assert summary["targets"]["ours_trace"]["status"] == "ok"
    assert summary["median_s"]["ours_trace"]["small_create"] > 0


@pytest.mark.parametrize("cpus, message", [("x", "is not a comma-separated list of CPU numbers"),
                                           ("4096", "is not a subset of the CPUs this process may use")])
def test_bench_rejects_bad_cpus(cpus: str, message: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--cpus", cpus], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr.splitlines()[-1]


def test_bench_settle_sleeps_before_each_timed_phase_not_inside_it(tmp_path: Path) -> None:
    out, work = tmp_path / "results", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--settle", "0.5", "--targets", "native",
                           "--workloads", "small_files,deep_tree", "--results-dir", str(out), "--workdir", str(work)],
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "smoke.json").read_text())
    assert summary["config"]["settle_s"] == 0.5
    assert "- before each timed phase: 0.5 s of sleep (--settle)\n" in (out / "smoke.md").read_text()
    assert summary["duration_s"] >= 7 * 0.5  # four small-files phases and three deep-tree phases, each after a pause
    rows = summary["median_s"]["native"]
    assert set(rows) >= {"small_create", "small_stat", "small_read", "small_delete", "deep_create", "deep_stat",
                         "deep_remove"}
    assert all(t < 0.5 for t in rows.values()), rows  # native phases of 200 files and 50 levels: the pause is outside
    assert rows["deep_tree"] == pytest.approx(rows["deep_create"] + rows["deep_stat"] + rows["deep_remove"])


def test_bench_rejects_a_negative_settle() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--settle", "-1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--settle must be >= 0" in proc.stderr.splitlines()[-1]
