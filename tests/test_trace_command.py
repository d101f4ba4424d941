"""`fuse-passthrough trace -- CMD`: CMD's operations only, its exit status, and always unmounted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import close_reports_nothing

FP = [sys.executable, "-m", "fuse_passthrough"]


def fuse_mounts() -> list[str]:
    with open("/proc/mounts") as f:
        return [line for line in f if "fuse-passthrough-" in line.split()[1]]


def test_trace_shows_the_commands_operations(workdir: Path) -> None:
    out = workdir / "t.jsonl"
    p = subprocess.run(FP + ["trace", "--format", "jsonl", "--output", str(out), "--",
                             "sh", "-c", "echo foo > bar; cat bar"], cwd=workdir, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "foo\n"
    assert (workdir / "bar").read_text() == "foo\n"  # the write landed in the source
    events = [json.loads(line) for line in out.read_text().splitlines()]
    sh = [(e["op"], e["path"]) for e in events if e["comm"] == "sh"]
    cat = [(e["op"], e["path"]) for e in events if e["comm"] == "cat"]
    for needed in [("create", "/bar"), ("write", "/bar")]:
        assert needed in sh
    assert (("flush", "/bar") in sh) == (not close_reports_nothing(workdir))  # FOPEN_NOFLUSH on ext4 & co
    for needed in [("open", "/bar"), ("read", "/bar")]:
        assert needed in cat
    releases = [e for e in events if e["op"] == "release" and e["path"] == "/bar"]
    assert len(releases) == 2 and all(e["pid"] in (0,) or e["comm"] in ("sh", "cat") for e in releases)
    assert {e["comm"] for e in events} <= {"sh", "cat", "[kernel]"}
    assert "total" in p.stderr  # the summary table
    assert not fuse_mounts()


def test_trace_prints_names_that_are_not_utf8(workdir: Path) -> None:
    """A name that is not UTF-8 is in the trace as escaped lone surrogates, which the fast JSON decoder refuses:
    the events are still all printed."""
    p = subprocess.run(FP + ["trace", "--format", "text", "--", sys.executable, "-c",
                             "import os; os.close(os.open(b'caf\\xe9', os.O_CREAT | os.O_WRONLY, 0o644))"],
                       cwd=workdir, capture_output=True, text=True, errors="surrogateescape")
    assert p.returncode == 0, p.stderr
    assert (workdir / os.fsdecode(b"caf\xe9")).exists()
    created = [line for line in p.stderr.splitlines() if "create(" in line and "/caf" in line]
    assert len(created) == 1, p.stderr
    assert "total" in p.stderr and not fuse_mounts()


def test_trace_excludes_other_processes_on_the_same_mount(workdir: Path) -> None:
    # A second process hammers the private mount (found via /proc/mounts) while CMD runs: none of its ops.
    script = ("for i in $(seq 30); do m=$(awk '$2 ~ /fuse-passthrough-/ {print $2}' /proc/mounts | head -1); "
              "[ -n \"$m\" ] && ls \"$m\" >/dev/null 2>&1 && stat \"$m/x\" >/dev/null 2>&1; sleep 0.02; done")
    intruder = subprocess.Popen(["sh", "-c", script])
    try:
        out = workdir / "t.jsonl"
        p = subprocess.run(FP + ["trace", "--format", "jsonl", "--output", str(out), "--",
                                 "sh", "-c", "sleep 0.3; touch x; sleep 0.3"], cwd=workdir,
                           capture_output=True, text=True)
    finally:
        intruder.wait()
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(e["op"] == "create" and e["path"] == "/x" for e in events)
    assert {e["comm"] for e in events} <= {"sh", "touch", "sleep", "[kernel]"}, {e["comm"] for e in events}


def test_exit_status_is_passed_through_and_nothing_stays_mounted(workdir: Path) -> None:
    p = subprocess.run(FP + ["trace", "--", "sh", "-c", "exit 7"], cwd=workdir, capture_output=True)
    assert p.returncode == 7
    p = subprocess.run(FP + ["trace", "--", "no-such-command-xyz"], cwd=workdir, capture_output=True, text=True)
    assert p.returncode == 127 and "no-such-command-xyz" in p.stderr
    assert not fuse_mounts()


def test_sigint_ends_cmd_and_cleans_up(workdir: Path) -> None:
    p = subprocess.Popen(FP + ["trace", "--", "sleep", "30"], cwd=workdir, stderr=subprocess.PIPE,
                         start_new_session=True)
    deadline = time.monotonic() + 20
    while not fuse_mounts() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fuse_mounts()
    time.sleep(0.2)
    os.killpg(p.pid, signal.SIGINT)  # like Ctrl-C: the whole foreground group
    assert p.wait(timeout=30) == 130
    assert not fuse_mounts()


def test_a_source_holding_the_temporary_directory_is_mounted_outside_it(workdir: Path, tmp_path: Path) -> None:
    """`cd /tmp; fuse-passthrough trace -- CMD`: the private mount point and its files go to a temporary directory
    outside the source (one inside would make the filesystem see itself, and CMD see its trace file)."""
    tmp = workdir / "tmp"
    tmp.mkdir()
    out = tmp_path / "t.jsonl"
    p = subprocess.run(FP + ["trace", "--format", "jsonl", "--output", str(out), "--", "sh", "-c",
                             "ls -A tmp; echo x > f"], cwd=workdir, env=dict(os.environ, TMPDIR=str(tmp)),
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""  # CMD saw nothing of the private mount in the source's own tmp
    assert (workdir / "f").read_text() == "x\n"
    assert ("create", "/f") in [(e["op"], e["path"]) for e in map(json.loads, out.read_text().splitlines())]
    assert not list(tmp.iterdir())
    assert not fuse_mounts()


def test_a_source_holding_every_temporary_directory_is_refused_in_one_line() -> None:
    p = subprocess.run(FP + ["trace", "--source", "/", "--", "touch", "/fpt-should-not-exist"],
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and "no place for a private mount point outside the source '/'" in p.stderr
    assert not os.path.exists("/fpt-should-not-exist")
    assert not fuse_mounts()


def test_a_filesystem_that_does_not_start_leaves_nothing_behind(workdir: Path, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), FUSE_LIBRARY_PATH="/nonexistent")  # the daemon cannot load libfuse
    p = subprocess.run(FP + ["trace", "--", "touch", "made"], cwd=workdir, env=env, capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and "the filesystem did not start" in p.stderr and "libfuse3" in p.stderr
    assert not (workdir / "made").exists()  # CMD never ran
    assert not list(tmp.iterdir())  # the private directory, with the daemon's log, is gone
    assert not fuse_mounts()


def test_cwd_is_the_mirror_of_where_the_user_stood(workdir: Path) -> None:
    (workdir / "sub").mkdir()
    p = subprocess.run(FP + ["trace", "--source", str(workdir), "--no-summary", "--", "sh", "-c",
                             "touch here; pwd"], cwd=workdir / "sub", capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (workdir / "sub" / "here").exists()
    assert p.stdout.strip().endswith("/mnt/sub")


def test_trace_strict_mode_records_every_lookup(workdir: Path) -> None:
    """`trace -o timeout=0`: repeated stats all reach the trace; the default (cached) trace has fewer."""
    (workdir / "f").write_text("x")
    counts = []
    for opts in (["-o", "timeout=0"], []):
        out = workdir / f"t{len(counts)}.jsonl"
        p = subprocess.run(FP + ["trace", "--source", str(workdir), *opts, "--format", "jsonl", "--output",
                                 str(out), "--", sys.executable, "-c",
                                 "import os\nfor _ in range(20): os.stat('f')"],
                           cwd=workdir, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        events = [json.loads(line) for line in out.read_text().splitlines()]
        counts.append(sum(1 for e in events if e["op"] == "getattr" and e["path"] == "/f"))
    assert counts[0] >= 20 and counts[1] < 5, counts
    assert not fuse_mounts()


def _many_files(n: int) -> list[str]:
    return ["sh", "-c", f"for i in $(seq {n}); do echo x > file-with-a-longish-name-$i; done"]


def test_output_compressed_and_rotated_as_the_mounts(workdir: Path) -> None:
    """--output FILE.zst is zstd, as for a mount; --output-max-bytes and --output-backups rotate it."""
    import zstandard

    (workdir / "a").mkdir()
    (workdir / "b").mkdir()
    zst = workdir / "t.jsonl.zst"
    p = subprocess.run(FP + ["trace", "--no-summary", "--format", "jsonl", "--output", str(zst), "--"]
                       + _many_files(50), cwd=workdir / "a", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    d = zstandard.ZstdDecompressor().decompressobj()
    lines = d.decompress(zst.read_bytes()).splitlines()
    assert d.eof  # a complete frame: the file was finished
    created = {json.loads(line)["path"] for line in lines if json.loads(line)["op"] == "create"}
    assert created == {f"/file-with-a-longish-name-{i}" for i in range(1, 51)}  # DIR: the cwd

    txt = workdir / "t.txt"
    p = subprocess.run(FP + ["trace", "--no-summary", "--output", str(txt), "--output-max-bytes", "2k",
                             "--output-backups", "2", "--"] + _many_files(50),
                       cwd=workdir / "b", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    files = [txt, workdir / "t.txt.1", workdir / "t.txt.2"]
    assert all(0 < f.stat().st_size <= 2048 for f in files)
    assert not (workdir / "t.txt.3").exists()  # two backups kept, the oldest lines dropped
    text = "".join(f.read_text() for f in reversed(files))
    assert "create('/file-with-a-longish-name-50'" in text
    assert not fuse_mounts()


def test_tracing_mount_options_are_its_flags_and_the_rest_fail_before_mounting(workdir: Path) -> None:
    out = workdir / "o.jsonl"
    p = subprocess.run(FP + ["trace", "--no-summary", "-o", f"trace={out},trace_format=jsonl", "--", "touch", "x"],
                       cwd=workdir, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert ("create", "/x") in [(json.loads(line)["op"], json.loads(line)["path"]) for line in open(out)]
    for args, message in [(["--no-trace"], "unrecognized arguments: --no-trace"),
                          (["-o", "notrace"], "it always traces"),
                          (["-o", "log=/tmp/x"], "mount option 'log' is for mounts"),
                          (["-o", "bogus"], "unknown mount option 'bogus'"),
                          (["--output-max-bytes", "1M"], "--output-max-bytes rotates a trace file"),
                          (["-o", f"trace={out}", "--output", str(workdir / "other")], "disagree")]:
        p = subprocess.run(FP + ["trace", *args, "--", "touch", "y"], cwd=workdir, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 2 and message in p.stderr and len(p.stderr.splitlines()) == 1, (args, p.stderr)
        assert not (workdir / "y").exists()  # CMD never ran
    assert not fuse_mounts()


def test_demo_runs_every_walk(workdir: Path) -> None:
    p = subprocess.run(FP + ["demo"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    from fuse_passthrough.demo import WALKS
    for walk in WALKS:
        assert f"=== {walk.title}" in p.stdout
    for op in ("create(", "write(", "read(", "mkdir(", "rename(", "symlink(", "chmod(", "utimens(", "link(",
               "setxattr(", "unlink(", "truncate("):
        assert op in p.stdout, op
    assert "security.capability" in p.stdout and "The original example recorded" in p.stdout
    # strict and cached traces side by side; the cache saves requests overall
    assert p.stdout.count("Side by side:") == len(WALKS)
    totals = re.search(r"All walks: (\d+) requests in strict mode, (\d+) with the default cache", p.stdout)
    assert totals is not None and 0 < int(totals[2]) < int(totals[1])
    assert not fuse_mounts()

