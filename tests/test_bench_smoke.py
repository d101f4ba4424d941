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

from fuse_passthrough.binding import FUSE_VERSION

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks" / "bench.py"

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
                       reason="needs /dev/fuse and fusermount3"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the benchmark drops caches and mounts as root"),
]

EXPECTED_TARGETS = ["native", "passthrough_ll", "passthrough_ll_t0", "bindfs", "loggedfs", "ours_notrace",
                    "ours_trace", "ours_kpassthrough"]
EXPECTED_ROWS = ["seq_write", "seq_read", "rand_read", "small_create", "small_stat", "small_read",
                 "small_delete", "untar", "walk_lstat", "git_status", "git_status_again", "parallel4",
                 "deep_tree", "deep_create", "deep_stat", "deep_remove"]


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

    trace = summary["trace"]["ours_trace"]
    assert trace["events"] > 0 and trace["bytes_per_event"] > 0
    assert "ours_trace/ours_notrace" in summary["tracing_on_vs_off"]
    assert {g["goal"] for g in summary["goals"]} >= {"tracing on <= 1.15x off", "daemon peak RSS < 100 MB"}
