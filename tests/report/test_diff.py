"""`report diff BEFORE AFTER`: two runs of a real program with one deliberate change, and its --fail-on exit
status; every bad argument is one line and exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runs import FP, traced

# The traced programs run as sys.executable: their process name (comm) is its file name (python or python3,
# as pytest was started), at most 15 characters.
PROGRAM_COMM = os.path.basename(sys.executable)[:15]

PROGRAM = """
    import os
    open("settings.ini", "w").write("a = 1\\n")
    for _ in range({reads}):
        with open("settings.ini") as f:
            f.read()
    fd = os.open("journal", os.O_WRONLY | os.O_CREAT, 0o644)
    for i in range(40):
        os.write(fd, b"r" * 4096)
        if i % {every} == 0:
            os.fsync(fd)
    os.close(fd)
"""


def diff(before: Path, after: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(FP + ["report", "diff", *args, str(before), str(after)], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The program as it was, with 4x the fsyncs, and with one more read of its settings (each traced once)."""
    import os
    workdir = Path("/tmp") / f"fpt-{os.getpid()}-diff"
    workdir.mkdir(mode=0o755)
    try:
        yield {"base": traced(workdir, "base", PROGRAM.format(reads=3, every=8)),
               "fsyncs": traced(workdir, "fsyncs", PROGRAM.format(reads=3, every=2)),
               "reread": traced(workdir, "reread", PROGRAM.format(reads=4, every=8))}
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(workdir)])


def test_more_fsyncs_is_the_one_change(runs: dict[str, Path]) -> None:
    p = diff(runs["base"], runs["fsyncs"], "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    # The kernel sends some releases on its own, after the program ended: one may reach the trace before the
    # unmount in one run and not in the other. Apart from those, the one change is the program's fsyncs.
    changed = {r["name"]: r["change"]["requests"] for r in d["operations"]}
    assert changed.pop("fsync") == 15 and set(changed) <= {"release"}  # 5 -> 20
    assert {r["name"]: r["change"]["requests"] for r in d["processes"] if r["name"] != "[kernel]"} == {PROGRAM_COMM: 15}
    paths = {r["name"]: r["change"]["requests"] for r in d["paths"]}
    assert paths.pop("/journal") in (14, 15, 16) and all(abs(n) == 1 for n in paths.values())
    assert d["totals"]["after"]["requests"] - d["totals"]["before"]["requests"] - 15 in (-1, 0, 1)
    # and the findings: 20 syncs for 160 KiB is a storm, 5 were not
    assert {"id": "fsync-storm", "level": "warning"}.items() <= d["findings"]["appeared"][0].items()
    assert [f["id"] for f in d["findings"]["appeared"]] == ["fsync-storm"]
    # gone: the info-level fsync finding (now a storm). (Data requests are most of both runs: the kernel asks
    # getxattr("security.capability") once for the journal, not before each of its 40 writes: FUSE_HANDLE_KILLPRIV_V2.)
    assert {f["id"]: f["level"] for f in d["findings"]["gone"]} == {"fsync": "info"}


def test_one_more_reread_is_the_one_change(runs: dict[str, Path]) -> None:
    p = diff(runs["base"], runs["reread"], "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    # one more open, read and release of settings.ini (no flush: read-only opens reply FOPEN_NOFLUSH), and the
    # kernel's lookup of it, cached or not
    paths = {r["name"]: r["change"]["requests"] for r in d["paths"]}
    assert paths.pop("/settings.ini") >= 3 and all(abs(n) == 1 for n in paths.values())  # (a kernel release)
    ops = {r["name"]: r["change"]["requests"] for r in d["operations"]}
    assert ops["open"] == 1 and ops["read"] == 1
    assert set(ops) <= {"open", "read", "release", "getattr"}
    assert d["findings"]["appeared"] == [] and d["findings"]["gone"] == []


def test_fail_on_conditions(runs: dict[str, Path]) -> None:
    base, fsyncs = runs["base"], runs["fsyncs"]
    held = diff(base, fsyncs, "--fail-on", "fsync:+10%")
    assert held.returncode == 3
    assert held.stderr.strip() == "fuse-passthrough report diff: --fail-on fsync:+10% holds: 5 -> 20"
    assert "fsync: requests 5 -> 20 (+300.0%)" in held.stdout
    assert diff(base, fsyncs, "--fail-on", "fsync:+300%").returncode == 3      # exactly +300 %: holds
    assert diff(base, fsyncs, "--fail-on", "fsync:+301%").returncode == 0
    assert diff(base, fsyncs, "--fail-on", "fsync:+16").returncode == 0       # +15 requests
    assert diff(base, fsyncs, "--fail-on", "write:+1").returncode == 0        # writes did not change
    assert diff(base, fsyncs, "--fail-on", "new-warnings:+1").returncode == 3
    assert diff(fsyncs, base, "--fail-on", "new-warnings:+1").returncode == 0
    assert diff(fsyncs, base, "--fail-on", "fsync:-50%").returncode == 3      # fewer, by 75 %
    assert diff(base, runs["reread"], "--fail-on", "requests:+20%", "--fail-on", "fsync:+1").returncode == 0
    both = diff(base, fsyncs, "--fail-on", "requests:+1", "--fail-on", "bytes:+1")
    assert both.returncode == 3 and both.stderr.count("\n") == 1  # only requests grew


def test_fail_on_an_operations_time_that_changed_alone(runs: dict[str, Path], tmp_path: Path) -> None:
    """`fsync.time:+N%` where the fsyncs took longer but were as many (the diff lists no changed row for them)."""
    slower = tmp_path / "slower.jsonl"
    with open(runs["base"]) as src, open(slower, "w") as out:
        for line in src:
            e = json.loads(line)
            if e["op"] == "fsync":
                e["duration_ns"] *= 3
            out.write(json.dumps(e) + "\n")
    p = diff(runs["base"], slower, "--json", "--fail-on", "fsync.time:+100%", "--fail-on", "fsync:+1")
    assert p.returncode == 3, p.stderr
    assert "fsync" not in {r["name"] for r in json.loads(p.stdout)["operations"]}  # requests unchanged
    assert p.stderr.startswith("fuse-passthrough report diff: --fail-on fsync.time:+100% holds: ")
    assert p.stderr.count("\n") == 1  # not fsync:+1
    assert diff(runs["base"], slower, "--fail-on", "fsync.time:+201%").returncode == 0  # 3x is +200 %


@pytest.mark.parametrize("args, message", [
    (["a.jsonl"], "the following arguments are required: AFTER"),
    (["--fail-on", "fsync", "a", "b"], "bad condition 'fsync'"),
    (["--fail-on", "fsync:10%", "a", "b"], "bad condition 'fsync:10%'"),
    (["--fail-on", "fsinc:+10%", "a", "b"], "'fsinc' is not requests, time, errors, bytes"),
    (["--fail-on", "fsync.speed:+1", "a", "b"], "MEASURE is one of requests, time, errors, bytes"),
    (["--fail-on", "requests.time:+1", "a", "b"], "requests takes no .MEASURE"),
    (["--fail-on", "new-warnings:+10%", "a", "b"], "new-warnings takes a count"),
    (["--fail-on", "new-warnings:-1", "a", "b"], "new-warnings takes a count, as in new-warnings:+1"),
    (["--threshold", "fsync_min", "a", "b"], "threshold 'fsync_min' is not NAME=VALUE"),
    (["--threshold", "fsync_min=x", "a", "b"], "threshold fsync_min wants an integer"),
    (["--threshold", "nope=1", "a", "b"], "unknown threshold 'nope'"),
    (["--threshold", "fsync_per_s=-1", "a", "b"], "must not be negative"),
    (["--top", "0", "a", "b"], "argument --top"),
    (["--bogus", "a", "b"], "unrecognized arguments: --bogus"),
    (["a", "b", "c"], "unrecognized arguments: c"),
])
def test_bad_arguments_are_one_line_and_status_2(args: list[str], message: str) -> None:
    p = subprocess.run(FP + ["report", "diff", *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and message in p.stderr, p.stderr
    assert p.stderr.startswith("fuse-passthrough report diff: ")


def test_report_threshold_errors_too() -> None:
    p = subprocess.run(FP + ["report", "--threshold", "tiny_io_bytes=1.5", "t.jsonl"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "wants an integer" in p.stderr


def test_unreadable_trace_is_status_1(tmp_path: Path) -> None:
    p = diff(tmp_path / "missing.jsonl", tmp_path / "also-missing.jsonl")
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "cannot read" in p.stderr
