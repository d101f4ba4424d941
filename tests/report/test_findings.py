"""`report`'s findings: each produced by a small real program traced through the mount, with its counts and
paths; a clean program (one large sequential copy) gets no warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runs import FP, findings, fuse_mounts, report_json, traced

# The traced programs run as sys.executable: their process name (comm) is its file name (python or python3,
# as pytest was started), at most 15 characters.
PROGRAM_COMM = os.path.basename(sys.executable)[:15]


def test_a_config_file_read_again_and_again(workdir: Path) -> None:
    (workdir / "conf").mkdir()
    trace = traced(workdir, "reread", """
        open("settings.ini", "w").write("a = 1\\n")
        for _ in range(30):
            with open("settings.ini") as f:
                f.read()
    """)
    f = findings(trace)["redundant-reads"]
    assert f["level"] == "warning"
    top = f["evidence"]["files"][0]
    assert top["path"] == "/settings.ini"
    # every open reaches the file system; a read only while the kernel holds no page of the file, which it may
    # keep across opens once the file's times are settled (so anywhere from 1 to 30 reads, as the trace shows)
    reads = sum(1 for line in trace.read_text().splitlines()
                if (e := json.loads(line)).get("op") == "read" and e.get("path") == "/settings.ini")
    assert top["opens"] == 31 and top["reads"] == reads and 1 <= reads <= 30 and top["size_read"] == 6
    assert len(top["seqs"]) == 3
    assert f["evidence"]["processes"][0]["process"].startswith(PROGRAM_COMM + "[")


def test_tiny_sequential_writes(workdir: Path) -> None:
    trace = traced(workdir, "tiny", """
        with open("app.log", "w", buffering=1) as f:   # line buffered: one write per line
            for i in range(300):
                f.write("x\\n")
    """)
    f = findings(trace)["tiny-io"]
    assert f["level"] == "warning"
    top = f["evidence"]["files"][0]
    assert top["path"] == "/app.log" and top["tiny"] == 300 and top["writes"] == 300
    assert top["tiny_bytes"] == 600 and top["sequential"] == 300
    # the same writes are not tiny below a lower threshold
    assert "tiny-io" not in findings(trace, "--threshold", "tiny_io_bytes=2")


def test_fsync_storm(workdir: Path) -> None:
    trace = traced(workdir, "fsync", """
        import os
        fd = os.open("journal", os.O_WRONLY | os.O_CREAT, 0o644)
        for _ in range(25):
            os.write(fd, b"r" * 100)
            os.fsync(fd)
        os.close(fd)
    """)
    f = findings(trace)["fsync-storm"]
    assert f["level"] == "warning" and f["requests"] == 25
    ev = f["evidence"]
    assert ev["syncs"] == 25 and ev["files"][0] == {"path": "/journal", "syncs": 25, "bytes_written": 2500,
                                                    "seqs": ev["files"][0]["seqs"]}
    assert ev["per_mib"] > 1000
    # one sync after the writes is no storm
    calm = traced(workdir, "one-fsync", """
        import os
        fd = os.open("journal", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"r" * 1_000_000)
        os.fsync(fd)
        os.close(fd)
    """)
    assert findings(calm)["fsync"]["level"] == "info"


def test_missing_paths_show_the_search_pattern(workdir: Path) -> None:
    trace = traced(workdir, "search", """
        import os
        dirs = [f"lib{i}" for i in range(8)]
        for d in dirs:
            os.mkdir(d)
        open("lib7/mod.py", "w").close()
        for name in ("mod.py", "util.py", "extra.py"):
            for d in dirs:           # a search path: every directory tried in turn
                os.path.exists(f"{d}/{name}")
        for i in range(100):         # one directory probed for many names
            os.path.exists(f"lib0/probe{i}")
    """)
    f = findings(trace)["missing-paths"]
    assert f["level"] == "warning"
    ev = f["evidence"]
    names = {g["name"]: g["directories"] for g in ev["same_name_in_directories"]}
    # mod.py too: creating lib7/mod.py looked it up first
    assert names["util.py"] == names["extra.py"] == names["mod.py"] == 8
    dirs = {g["directory"]: g["names"] for g in ev["same_directory_probed"]}
    assert dirs["/lib0"] == 103
    assert f["requests"] >= 23 + 100


def test_metadata_heavy_work(workdir: Path) -> None:
    trace = traced(workdir, "stats", """
        import os
        open("f", "w").close()
        for _ in range(1500):
            os.stat("f")
    """, "-o", "timeout=0")
    f = findings(trace)["metadata-heavy"]
    assert f["level"] == "warning"
    assert f["evidence"]["operations"]["getattr"] >= 1500
    assert f["evidence"]["paths"][0]["path"] == "/f"


def test_temporary_files_and_atomic_saves_are_informational(workdir: Path) -> None:
    trace = traced(workdir, "temp", """
        import os
        for i in range(4):
            with open(f"scratch{i}", "w") as f:
                f.write("t" * 10)
            os.unlink(f"scratch{i}")
        for _ in range(3):
            with open("doc.tmp", "w") as f:
                f.write("saved")
            os.replace("doc.tmp", "doc.txt")
    """)
    got = findings(trace)
    temp, saves = got["temporary-files"], got["atomic-saves"]
    assert temp["level"] == saves["level"] == "info"
    assert temp["requests"] == 4
    assert {r["path"]: (r["times"], r["bytes_written"]) for r in temp["evidence"]["files"]} == \
        {f"/scratch{i}": (1, 10) for i in range(4)}
    assert saves["evidence"]["targets"][0]["path"] == "/doc.txt" and saves["evidence"]["targets"][0]["renames"] == 3


def test_random_access_and_repeated_listings(workdir: Path) -> None:
    trace = traced(workdir, "random", """
        import os, random
        fd = os.open("table", os.O_RDWR | os.O_CREAT, 0o644)
        rng = random.Random(1)
        for _ in range(200):
            os.pwrite(fd, b"p" * 4096, rng.randrange(1000) * 4096)
        os.close(fd)
        os.mkdir("spool")
        for i in range(12):  # a spool polled as jobs arrive: each listing after a change reaches the filesystem
            open(f"spool/job{i}", "w").close()
            os.listdir("spool")
        os.mkdir("still")
        for _ in range(12):  # unchanged: listed from the kernel's cache after the first time
            os.listdir("still")
    """)
    got = findings(trace)
    rnd = got["random-access"]
    assert rnd["level"] == "info"
    row = rnd["evidence"]["files"][0]
    assert row["path"] == "/table" and row["random"] + row["sequential"] == 200 and row["random"] > 150
    lists = got["repeated-listings"]
    assert lists["level"] == "warning"
    assert lists["evidence"]["directories"][0]["path"] == "/spool"
    assert lists["evidence"]["directories"][0]["listings"] == 12
    assert [d["path"] for d in lists["evidence"]["directories"]] == ["/spool"]


def test_repeated_listings_of_an_unchanged_directory_with_directory_handles(workdir: Path) -> None:
    """With -o dir_handles every open of the directory reaches the filesystem (opendir), listed or not."""
    trace = traced(workdir, "handles", """
        import os
        os.mkdir("still")
        for _ in range(12):
            os.listdir("still")
    """, "-o", "dir_handles")
    lists = findings(trace)["repeated-listings"]
    assert [(d["path"], d["listings"]) for d in lists["evidence"]["directories"]] == [("/still", 12)]


def test_injected_faults_errors_and_slow_outliers(workdir: Path) -> None:
    trace = traced(workdir, "faults", """
        import os, time
        open("data", "w").write("x")
        for attempt in range(3):      # retries a failed open
            try:
                open("data").read()
                break
            except OSError:
                time.sleep(0.01)
        try:                          # gives up on a failed write
            with open("out", "w") as f:
                f.write("y")
        except OSError:
            pass
    """, "--fault", "op=open,path=/data,errno=EIO,nth=1", "--fault", "op=write,path=/out,errno=ENOSPC",
        "--fault", "op=getattr,path=/data,delay=300ms,nth=1")
    got = findings(trace)
    faults = got["injected-faults"]["evidence"]
    by_op = {f["op"]: f for f in faults["faults"]}
    assert by_op["open"]["injected"] == "EIO" and by_op["open"]["next"] == "retried"
    assert by_op["open"]["retry_ok"] is True
    assert by_op["write"]["injected"] == "ENOSPC"
    errors = got["errors"]
    assert errors["level"] == "info"  # two failures: under errors_min
    assert {e["errno"] for e in errors["evidence"]["by_errno"]} >= {"EIO", "ENOSPC"}
    slow = got["slow-outliers"]
    assert slow["evidence"]["slowest"][0]["ns"] >= 300_000_000
    assert slow["evidence"]["slowest"][0]["path"] == "/data"
    assert "slow-outliers" in {k for k, f in findings(trace, "--threshold", "slow_ms=200").items()
                               if f["level"] == "warning"}


@pytest.mark.parametrize("command", [
    ["cp", "big.bin", "copy.bin"],  # copy_file_range
    [sys.executable, "-I", "-c", "import shutil\nwith open('big.bin', 'rb') as i, open('copy.bin', 'wb') as o:\n"
     "    shutil.copyfileobj(i, o, 1 << 20)"],  # reads and writes
], ids=["cp", "python"])
def test_a_clean_sequential_copy_gets_no_warning(workdir: Path, command: list[str]) -> None:
    src = workdir / "copy"
    src.mkdir()
    (src / "big.bin").write_bytes(bytes(range(256)) * 40_000)  # 10 MB
    out = workdir / "copy.jsonl"
    p = subprocess.run(FP + ["trace", "--source", str(src), "--format", "jsonl", "--output", str(out), "--no-summary",
                             "--", *command], cwd=src, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (src / "copy.bin").read_bytes() == (src / "big.bin").read_bytes()
    report = report_json(out)
    assert sum(s["bytes_written"] for s in report["summary"]["ops"].values()) == 10_240_000  # it was traced
    assert [f["id"] for f in report["findings"] if f["level"] == "warning"] == []


def test_text_report_ends_with_the_findings(workdir: Path) -> None:
    trace = traced(workdir, "text", """
        import os
        fd = os.open("journal", os.O_WRONLY | os.O_CREAT, 0o644)
        for _ in range(12):
            os.write(fd, b"r")
            os.fsync(fd)
    """)
    p = subprocess.run(FP + ["report", str(trace)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    tail = p.stdout.split("\nfindings (most costly first):\n", 1)[1]
    first = tail.splitlines()[0]
    assert first.startswith("  1. [warning] fsync-storm: 12 fsync/fdatasync")
    assert "files: path=/journal, syncs=12" in tail and "fix: " in tail


def test_trace_prints_the_findings_after_the_summary(workdir: Path) -> None:
    prog = workdir / "prog"  # the traced directory; trace's private mount goes to workdir/fuse-passthrough-*
    prog.mkdir()
    (prog / "prog.py").write_text("import os\nfd = os.open('j', os.O_WRONLY | os.O_CREAT, 0o644)\n"
                                  "for _ in range(15):\n    os.write(fd, b'r')\n    os.fsync(fd)\n")
    p = subprocess.run(FP + ["trace", "--output", str(workdir / "events.txt"), "--", sys.executable, "-I", "prog.py"],
                       cwd=prog, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "TMPDIR": str(workdir)})
    assert p.returncode == 0, p.stderr
    summary, found = p.stderr.split("\nfindings (most costly first):\n")
    assert "total" in summary
    assert found.startswith("  1. [warning] fsync-storm: 15 fsync/fdatasync")
    assert not fuse_mounts(workdir)
