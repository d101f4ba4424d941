"""Lifecycle: clean exits on signals and unmount, SIGUSR1 summaries, stale mounts, --background."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from helpers import MODE_ARGS, Mount, is_mounted, reap, wait_for

PROG = [sys.executable, "-m", "fuse_passthrough"]
PR_SET_CHILD_SUBREAPER = 36


def trace_events(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL trace, each required to be complete and parseable."""
    data = path.read_text()
    assert data.endswith("\n"), "trace ends with a partial line"
    return [json.loads(line) for line in data.splitlines()]


def summaries(text: str) -> int:
    return len(re.findall(r"^100\.00 .* total$", text, re.M))


def exercise(mnt: Path) -> None:
    (mnt / "f").write_bytes(b"hello")
    assert (mnt / "f").read_bytes() == b"hello"
    assert os.listdir(mnt) == ["f"]


@pytest.mark.parametrize("threads", ["mt", "st"])
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGHUP", "fusermount3 -u"])
def test_stop_is_clean(workdir: Path, how: str, threads: str) -> None:
    args = ["-s"] if threads == "st" else []
    if threads == "st" and "io_uring" in MODE_ARGS:
        pytest.skip("-s serves /dev/fuse only (the io_uring stage runs the multi-threaded case)")
    with Mount(workdir / "src", workdir / "mnt", *args) as m:
        exercise(m.mnt)
        assert m.proc is not None
        if how.startswith("SIG"):
            m.proc.send_signal(getattr(signal, how))
        else:
            subprocess.run(["fusermount3", "-u", str(m.mnt)], check=True)
        assert m.proc.wait(timeout=20) == 0, m.stderr()
        assert m.unmount() == 0
        assert not is_mounted(m.mnt)
        events = trace_events(m.trace)
        assert events[-1]["op"] == "destroy"
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
        ops = {e["op"] for e in events}
        assert {"init", "create", "write", "read", "readdir"} <= ops
        err = m.stderr()
        assert summaries(err) == 1, err
        assert "Traceback" not in err and "failed" not in err
    assert (workdir / "src" / "f").read_bytes() == b"hello"


@pytest.mark.parametrize("how", ["SIGTERM", "fusermount3 -u"])
def test_a_stop_right_after_changes_in_source_prints_nothing_of_them(workdir: Path, how: str) -> None:
    """Names the mount knew as absent, made in SOURCE just before the stop: the SOURCE watcher's invalidations
    for them may still be on their way when the session's fd goes. They must not reach stderr (libfuse printed
    "fuse: writing device: Bad file descriptor" for each)."""
    with Mount(workdir / "src", workdir / "mnt", trace=False) as m:
        assert m.proc is not None
        for i in range(50):
            assert not (m.mnt / f"n{i}").exists()  # the kernel may remember the name as absent
        for i in range(50):
            (m.src / f"n{i}").write_bytes(b"made in SOURCE")
        if how == "SIGTERM":
            m.proc.send_signal(signal.SIGTERM)
        else:
            subprocess.run(["fusermount3", "-u", str(m.mnt)], check=True)
        assert m.proc.wait(timeout=20) == 0, m.stderr()
        assert m.unmount() == 0
        err = m.stderr()
        assert "writing device" not in err and "Traceback" not in err, err


def test_sigusr1_prints_summary_and_keeps_running(workdir: Path) -> None:
    with Mount(workdir / "src", workdir / "mnt") as m:
        exercise(m.mnt)
        assert m.proc is not None
        m.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: summaries(m.stderr()) == 1, what="the SIGUSR1 summary")
        time.sleep(0.2)
        assert m.proc.poll() is None
        (m.mnt / "g").write_bytes(b"still serving")
        assert (m.src / "g").read_bytes() == b"still serving"
        m.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: summaries(m.stderr()) == 2, what="the second SIGUSR1 summary")
        assert m.unmount() == 0
    assert summaries(m.stderr()) == 3  # two on request, the final one at exit
    assert trace_events(m.trace)[-1]["op"] == "destroy"


def test_sigkill_leaves_stale_mount_that_the_next_run_clears(workdir: Path) -> None:
    first = Mount(workdir / "src", workdir / "mnt", trace=False)
    first.__enter__()
    try:
        (first.mnt / "kept").write_bytes(b"k")
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait(timeout=10)
        with pytest.raises(OSError) as exc:
            os.stat(first.mnt)
        # ENOTCONN; with -o io_uring a request caught in the teardown of the daemon's queues ends ECONNABORTED
        assert exc.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        assert is_mounted(first.mnt)
        with background(workdir, "--no-trace", "src", "mnt") as bg:
            assert bg.result.returncode == 0, bg.result.stderr
            assert "cleared a stale mount" in bg.result.stderr
            assert os.listdir(workdir / "mnt") == ["kept"]
            assert os.stat(workdir / "mnt").st_dev != os.stat(workdir).st_dev
        assert bg.status == 0
        assert not is_mounted(workdir / "mnt")
    finally:
        first.unmount()


# -- --background --------------------------------------------------------------------------------------------
class Background:
    result: subprocess.CompletedProcess[str]
    pid: int | None = None
    status: int | None = None


@contextmanager
def background(workdir: Path, *args: str) -> Iterator[Background]:
    """Run `fuse-passthrough -b ARGS` in workdir (TMPDIR=workdir/tmp); the daemon becomes our child (we are a
    subreaper meanwhile) so its exit status is known. Always unmounted and reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    bg = Background()
    mnt = workdir / args[-1]
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        try:
            bg.result = subprocess.run(PROG + ["-b", *MODE_ARGS, *args], cwd=workdir, capture_output=True, text=True,
                                       timeout=60, env=dict(os.environ, TMPDIR=str(tmp)))
            found = re.search(r"\(pid (\d+)\)", bg.result.stderr)
            bg.pid = int(found.group(1)) if found else None
            yield bg
        finally:
            if bg.pid is not None:
                if is_mounted(mnt):
                    subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
                bg.status = reap(bg.pid, 20)
                if bg.status is None:
                    subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
                    os.kill(bg.pid, signal.SIGKILL)
                    bg.status = reap(bg.pid, 20)
            if is_mounted(mnt):
                subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def test_background_returns_once_usable_and_stops_cleanly(workdir: Path) -> None:
    (workdir / "src").mkdir()
    (workdir / "src" / "a").write_bytes(b"abc")
    (workdir / "mnt").mkdir()
    for _ in range(3):  # a few times: "usable on return" must not depend on luck
        with background(workdir, "--format", "jsonl", "src", "mnt") as bg:
            # Immediately usable: no waiting, no retry.
            assert os.listdir(workdir / "mnt") == ["a"], bg.result.stderr
            assert (workdir / "mnt" / "a").read_bytes() == b"abc"
            assert bg.result.returncode == 0, bg.result.stderr
            assert bg.pid is not None and bg.pid != os.getpid()
            err = bg.result.stderr.splitlines()
            assert len(err) == 1 and err[0].startswith("fuse-passthrough: mounted"), err
            trace = Path(re.search(r"trace: (\S+);", err[0]).group(1))  # type: ignore[union-attr]
            log = Path(re.search(r"log: (\S+);", err[0]).group(1))  # type: ignore[union-attr]
            assert trace.parent == log.parent == workdir / "tmp"
        assert bg.status == 0
        assert not is_mounted(workdir / "mnt")
        events = trace_events(trace)
        assert events[-1]["op"] == "destroy" and any(e["op"] == "read" for e in events)
        assert summaries(log.read_text()) == 1
        trace.unlink()
        log.unlink()


def test_background_sigterm_is_clean(workdir: Path) -> None:
    for d in ("src", "mnt"):
        (workdir / d).mkdir()
    with background(workdir, "--output", "t.jsonl", "--format", "jsonl", "src", "mnt") as bg:
        assert bg.result.returncode == 0, bg.result.stderr
        exercise(workdir / "mnt")
        assert bg.pid is not None
        os.kill(bg.pid, signal.SIGTERM)
        bg.status = reap(bg.pid, 20)
        bg.pid = None
    assert bg.status == 0
    assert not is_mounted(workdir / "mnt")
    assert trace_events(workdir / "t.jsonl")[-1]["op"] == "destroy"


def test_background_reports_mount_failure(workdir: Path) -> None:
    for d in ("src", "mnt"):
        (workdir / d).mkdir()
    # blksize is for fuseblk only: our option parser accepts it, the kernel refuses the mount.
    with background(workdir, "-o", "blksize=4096", "src", "mnt") as bg:
        assert bg.result.returncode == 1
        assert bg.pid is None
        assert "mount failed" in bg.result.stderr
        assert bg.result.stderr.rstrip().splitlines()[-1].startswith("fuse-passthrough: mounting")
        assert "Traceback" not in bg.result.stderr
        assert not is_mounted(workdir / "mnt")
    assert os.listdir(workdir / "tmp") == []  # no trace or log file left behind


def test_foreground_mount_failure_exits_1(workdir: Path) -> None:
    for d in ("src", "mnt"):
        (workdir / d).mkdir()
    r = subprocess.run(PROG + ["--no-trace", "-o", "blksize=4096", "src", "mnt"], cwd=workdir,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "mount failed" in r.stderr
    assert not is_mounted(workdir / "mnt")


def test_summary_json_written_at_exit(workdir: Path) -> None:
    with Mount(workdir / "src", workdir / "mnt", "--summary-json", str(workdir / "s.json")) as m:
        exercise(m.mnt)
        assert m.proc is not None
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(timeout=20) == 0
    summary = json.loads((workdir / "s.json").read_text())
    assert summary["ops"]["write"]["calls"] >= 1


def test_trace_holds_no_file_contents_or_xattr_values(workdir: Path) -> None:
    secret, xval = b"CONTENT-7f3a9c-CONTENT", b"XATTRVALUE-51e2b8"
    with Mount(workdir / "src", workdir / "mnt", "--cmdline") as m:
        (m.mnt / "f").write_bytes(secret)
        assert (m.mnt / "f").read_bytes() == secret
        os.setxattr(m.mnt / "f", "user.note", xval)
        assert os.getxattr(m.mnt / "f", "user.note") == xval
        assert m.unmount() == 0
    raw = m.trace.read_bytes()
    ops = {e["op"] for e in trace_events(m.trace)}
    assert {"write", "read", "setxattr", "getxattr"} <= ops
    assert b"user.note" in raw  # names are recorded ...
    assert secret not in raw and xval not in raw  # ... contents and values never
    assert secret not in m.stderr().encode() and xval not in m.stderr().encode()
