"""Tracing through a real mount: the events the kernel really causes, their fields, and nothing lost."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import Mount, abort_connection, close_reports_nothing, run_as

FIELD_TYPES = {"v": int, "seq": int, "ts": float, "op": str, "path": (str, type(None)),
               "path2": (str, type(None)), "args": dict, "errno": (str, type(None)), "duration_ns": int,
               "pid": int, "uid": int, "gid": int, "comm": (str, type(None))}


def ops_of(events: list[dict], path: str, pid: int | None = None) -> list[str]:
    return [e["op"] for e in events if e["path"] == path and (pid is None or e["pid"] in (pid, 0))]


def test_echo_and_cat_give_the_expected_sequences(mount: Mount) -> None:
    sh = subprocess.Popen(["sh", "-c", "echo foo > bar"], cwd=mount.mnt)
    assert sh.wait() == 0
    cat = subprocess.run(["cat", "bar"], cwd=mount.mnt, capture_output=True)
    assert cat.stdout == b"foo\n"
    missing = subprocess.run(["stat", "nope"], cwd=mount.mnt, capture_output=True)
    assert missing.returncode != 0
    assert mount.unmount() == 0
    events = mount.events()

    created = [e for e in events if e["path"] == "/bar" and e["pid"] == sh.pid]
    ops = [e["op"] for e in created]
    assert "create" in ops and "write" in ops
    assert ("flush" in ops) == (not close_reports_nothing(mount.src))  # FOPEN_NOFLUSH: no FLUSH on ext4 & co
    create = created[ops.index("create")]
    assert create["args"]["flags"].startswith("O_WRONLY|O_CREAT|O_TRUNC")
    assert create["args"]["mode"] == "0o100644" and create["comm"] == "sh" and create["uid"] == 0
    write = created[ops.index("write")]
    assert write["args"]["size"] == 4 and write["args"]["offset"] == 0 and write["result"] == 4
    assert ops.index("create") < ops.index("write")
    releases = [e for e in events if e["op"] == "release" and e["args"]["fh"] == create["result"]["fh"]]
    assert releases, "the handle created by sh is released"

    read_ops = [e["op"] for e in events if e["path"] == "/bar" and e["comm"] == "cat"]
    assert "open" in read_ops and "read" in read_ops
    reads = [e for e in events if e["op"] == "read" and e["comm"] == "cat"]
    assert reads[0]["result"] == 4 and reads[0]["args"]["offset"] == 0
    assert any(e["op"] == "release" and e["path"] == "/bar" and e["seq"] > reads[0]["seq"] for e in events)

    # A failed LOOKUP.
    enoent = [e for e in events if e["path"] == "/nope" and e["op"] == "lookup"]
    assert enoent and all(e["errno"] == "ENOENT" and e["result"] is None for e in enoent)
    assert enoent[0]["comm"] == "stat"


@pytest.mark.parametrize("extra", [[], ["-o", "flush"], ["--fault", "op=flush,errno=EIO,path=/other"]],
                         ids=["default", "-o flush", "a fault rule on flush"])
def test_a_flush_per_close_of_a_writer_only_where_it_can_report(workdir: Path, extra: list[str]) -> None:
    """close() of a descriptor that may have written sends FLUSH, for the file system to report late errors (as
    NFS does); where SOURCE's close() has nothing to report the file is opened with FOPEN_NOFLUSH and the kernel
    does not ask — unless -o flush, or a fault rule may name flush."""
    with Mount(workdir / "src", workdir / "mnt", *extra) as m:
        fd = os.open(m.mnt / "w", os.O_WRONLY | os.O_CREAT, 0o644)
        second = os.dup(fd)
        assert os.write(fd, b"data") == 4
        os.close(fd)
        os.close(second)
        with open(m.mnt / "w", "rb") as f:  # read-only: never a flush
            assert f.read() == b"data"
        assert m.unmount() == 0
        events = m.events()
    flushes = [e for e in events if e["op"] == "flush" and e["path"] == "/w"]
    asked = bool(extra) or not close_reports_nothing(workdir / "src")
    assert len(flushes) == (2 if asked else 0), flushes
    assert all(e["errno"] is None for e in flushes)


def test_every_jsonl_line_has_every_field_with_its_type(mount: Mount) -> None:
    (mount.mnt / "d").mkdir()
    (mount.mnt / "d" / "f").write_text("x")
    os.rename(mount.mnt / "d" / "f", mount.mnt / "d" / "g")
    os.symlink("g", mount.mnt / "d" / "l")
    os.link(mount.mnt / "d" / "g", mount.mnt / "d" / "h")
    assert mount.unmount() == 0
    lines = mount.trace.read_text().splitlines()
    assert lines
    seqs = []
    for line in lines:
        e = json.loads(line)
        assert set(e) == set(FIELD_TYPES) | {"result"}
        for k, t in FIELD_TYPES.items():
            assert isinstance(e[k], t), (k, e)
        assert e["duration_ns"] >= 0 and e["v"] == 3
        seqs.append(e["seq"])
    assert seqs == list(range(1, len(seqs) + 1))
    by_op = {e["op"]: e for e in map(json.loads, lines)}
    assert (by_op["rename"]["path"], by_op["rename"]["path2"]) == ("/d/f", "/d/g")
    assert (by_op["symlink"]["path"], by_op["symlink"]["path2"]) == ("/d/l", "g")
    assert (by_op["link"]["path"], by_op["link"]["path2"]) == ("/d/g", "/d/h")
    assert by_op["mkdir"]["args"]["mode"] == "0o40755"


def test_every_setattr_kind_is_traced_and_nothing_after_it_lost(mount: Mount) -> None:
    """Each kind of SETATTR (chmod, chown, truncate, utimens, and one changing no attribute: chown(f, -1, -1),
    a getattr with its attributes) is an event, and the trace goes on after each (a writer that failed on one
    event once lost every later one)."""
    f = mount.mnt / "f"
    f.write_text("abc")
    os.chmod(f, 0o600)
    os.chown(f, 0, 0)
    os.chown(f, -1, -1)
    os.truncate(f, 1)
    os.utime(f, (1, 2))
    (mount.mnt / "after").write_text("still traced")
    assert mount.unmount() == 0
    events = mount.events()
    ops = [e["op"] for e in events if e["path"] == "/f" and e["op"] in ("chmod", "chown", "truncate", "utimens")]
    assert ops == ["chmod", "chown", "truncate", "utimens"], ops
    attrs = [e for e in events if e["op"] == "getattr" and e["path"] == "/f" and e["result"]]
    assert any(e["result"]["mode"] == "0o100600" for e in attrs)
    assert "create" in ops_of(events, "/after") and "write" in ops_of(events, "/after")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


@pytest.mark.parametrize("fmt", ["text", "jsonl"])
def test_data_and_xattr_values_never_reach_the_trace(workdir: Path, fmt: str) -> None:
    marker = secrets.token_hex(16)
    out = workdir / f"trace.{fmt}"
    with Mount(workdir / "src", workdir / "mnt", "--format", fmt, "--output", str(out), trace=None) as m:
        f = m.mnt / "secret"
        f.write_text(marker * 100)
        assert f.read_text() == marker * 100
        os.setxattr(f, "user.note", marker.encode())
        assert os.getxattr(f, "user.note") == marker.encode()
        with open(f, "r+b") as fh:
            os.pwrite(fh.fileno(), marker.encode(), 7)
        assert m.unmount() == 0
    trace = out.read_text()
    assert "write" in trace and "setxattr" in trace and "getxattr" in trace
    assert marker not in trace


def test_caller_identity_of_another_user(mount: Mount) -> None:
    os.chmod(mount.src, 0o777)
    p = run_as(1000, 1000, ["sh", "-c", "echo hi > mine; echo $$"], cwd=mount.mnt)
    assert p.returncode == 0, p.stderr
    sh_pid = int(p.stdout.strip())
    assert mount.unmount() == 0
    create = [e for e in mount.events() if e["op"] == "create" and e["path"] == "/mine"]
    assert len(create) == 1
    assert (create[0]["uid"], create[0]["gid"], create[0]["pid"], create[0]["comm"]) == (1000, 1000, sh_pid, "sh")
    assert os.stat(mount.src / "mine").st_uid == 1000


def test_filters_through_the_cli(workdir: Path) -> None:
    with Mount(workdir / "src", workdir / "mnt", "--errors-only", "--comm", "stat") as m:
        subprocess.run(["stat", str(m.mnt / "missing")], capture_output=True)
        subprocess.run(["ls", str(m.mnt / "missing")], capture_output=True)
        (m.mnt / "ok").write_text("x")
        assert m.unmount() == 0
    events = m.events()
    assert events and all(e["errno"] and e["comm"] == "stat" for e in events)
    assert {e["path"] for e in events} == {"/missing"}

    with Mount(workdir / "src2", workdir / "mnt2", "--ops", "create,unlink", "--path", "/keep*") as m:
        (m.mnt / "keep.txt").write_text("x")
        (m.mnt / "drop.txt").write_text("x")
        os.unlink(m.mnt / "keep.txt")
        assert m.unmount() == 0
    assert [(e["op"], e["path"]) for e in m.events()] == [("create", "/keep.txt"), ("unlink", "/keep.txt")]


@pytest.mark.parametrize("cmdline", [False, True], ids=["names", "cmdline"])
def test_an_exec_closing_a_file_of_the_mount_under_descendants_of(workdir: Path, cmdline: bool) -> None:
    # exec closes close-on-exec files while it holds the task's exec_update_lock: the FLUSH comes from a pid
    # never seen before, whose ancestry must be read without that lock (reading /proc/PID/stat waited for
    # the exec, which waited for the FLUSH: CPython's test_tempfile hung under `trace`). -o flush: on ext4 & co
    # a file is opened with FOPEN_NOFLUSH, and no close sends a FLUSH (on NFS every one does).
    extra = ["--cmdline"] if cmdline else []
    with Mount(workdir / "src", workdir / "mnt", "-o", "flush", "--descendants-of", str(os.getpid()), *extra) as m:
        hung = threading.Event()

        def abort_if_hung() -> None:  # subprocess's vfork would leave this test waiting with its child
            hung.set()
            abort_connection(m.mnt)

        watchdog = threading.Timer(30, abort_if_hung)
        watchdog.start()
        try:
            with open(m.mnt / "held", "w") as held:  # O_CLOEXEC, as every file Python opens
                held.write("x")
                held.flush()
                children = [subprocess.Popen(["true"], close_fds=False) for _ in range(5)]  # exec with it open
                assert [c.wait() for c in children] == [0] * 5
        finally:
            watchdog.cancel()
        assert not hung.is_set(), "the mount hung: an exec's FLUSH waited for the daemon, which waited for it"
        assert m.unmount() == 0
    flushes = {e["pid"] for e in m.events() if e["op"] == "flush" and e["path"] == "/held"}
    assert {c.pid for c in children} <= flushes  # each child is a descendant: its exec's flush is in the trace
    if cmdline:
        assert any(e.get("cmdline") for e in m.events() if e["pid"] == os.getpid())


def test_writes_ask_for_file_capabilities_only_where_the_kernel_must_check(mount: Mount) -> None:
    # Without FUSE_HANDLE_KILLPRIV_V2 the kernel asks getxattr("security.capability") before every write (a
    # FUSE superblock is not SB_NOSEC); with it (libfuse >= 3.17, or below through the binding's own I/O of
    # /dev/fuse, which needs the C trampolines) clearing them is the daemon's, done by writing as the caller, the
    # superblock is SB_NOSEC and the kernel asks once per inode (then marks it S_NOSEC).
    from fuse_passthrough.lowlevel.binding import DEFERRED_REPLIES, VERSION

    own_io = DEFERRED_REPLIES is not None and not os.environ.get("FUSE_PASSTHROUGH_NO_TRAMPOLINES")

    fd = os.open(mount.mnt / "w", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for i in range(3):
            assert os.pwrite(fd, b"x", i) == 1
    finally:
        os.close(fd)
    assert mount.unmount() == 0
    events = mount.events()
    asked = [e for e in events if e["op"] == "getxattr" and e["args"].get("name") == "security.capability"]
    assert len([e for e in events if e["op"] == "write" and e["path"] == "/w"]) == 3
    assert len(asked) == (1 if VERSION >= (3, 17) or own_io else 3), asked


def test_summary_json_counts_equal_events_written(workdir: Path) -> None:
    summary = workdir / "summary.json"
    with Mount(workdir / "src", workdir / "mnt", "--summary-json", str(summary)) as m:
        for i in range(50):
            (m.mnt / f"f{i}").write_text("x" * i)
        assert m.unmount() == 0
        stderr = m.stderr()
    data = json.loads(summary.read_text())
    events = m.events()
    assert data["total_calls"] == len(events)
    for op, st in data["ops"].items():
        assert st["calls"] == sum(1 for e in events if e["op"] == op)
        assert st["errors"] == sum(1 for e in events if e["op"] == op and e["errno"])
    assert data["ops"]["write"]["bytes_written"] == sum(range(50))
    assert "total" in stderr and "create" in stderr  # the table on unmount


def test_sigusr1_prints_the_summary_and_keeps_serving(mount: Mount) -> None:
    (mount.mnt / "a").write_text("x")
    assert mount.proc is not None
    mount.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while "total" not in mount.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "total" in mount.stderr()
    assert (mount.mnt / "a").read_text() == "x"


BURST = r"""
import ctypes, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
ctypes.CDLL(None).prctl(15, b"python3-burst", 0, 0, 0)  # from here on, each fstat is one traced getattr
ok = 0
try:
    for _ in range(int(sys.argv[2])):
        os.fstat(fd)
        ok += 1
except OSError:
    pass
print(ok, flush=True)
"""


@pytest.mark.parametrize("stop_midway", [False, True])
def test_no_event_lost_in_a_burst(workdir: Path, stop_midway: bool) -> None:
    n = 2_000_000 if stop_midway else 30_000  # stopped mid-way: far more than it does before the stop
    # Strict mode (-o timeout=0): each fstat is a request; a cached mount would answer them from the kernel.
    with Mount(workdir / "src", workdir / "mnt", "-o", "timeout=0", "--ops", "getattr", "--comm",
               "python3-burst") as m:
        (m.mnt / "f").write_text("x")
        client = subprocess.Popen([sys.executable, "-c", BURST, str(m.mnt / "f"), str(n)],
                                  stdout=subprocess.PIPE, text=True)
        if stop_midway:
            deadline = time.monotonic() + 60  # mid-burst: once the burst is well under way, however slow
            while (not m.trace.exists() or m.trace.stat().st_size < 500_000) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert m.proc is not None
            m.proc.send_signal(signal.SIGTERM)
            assert m.proc.wait(timeout=30) == 0
        out, _ = client.communicate(timeout=120)
        acknowledged = int(out)
        assert m.unmount() == 0
    events = m.events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["op"] == "getattr" for e in events)
    fstats = [e for e in events if e["path"] == "/f"]
    assert len(fstats) == len(events)
    if stop_midway:
        assert 0 < acknowledged < n
        assert acknowledged <= len(fstats) <= acknowledged + 1  # the one in flight may be recorded
    else:
        assert acknowledged == len(fstats) == n


def _rotated_through_the_cli(workdir: Path, name: str, files: list[str]) -> list[Path]:
    """Create `files` on a mount tracing to workdir/name rotated at 20 KiB (100 backups); the trace files, oldest
    first."""
    with Mount(workdir / "src", workdir / "mnt", "--format", "jsonl", "--output", str(workdir / name),
               "--output-max-bytes", "20k", "--output-backups", "100", trace=None) as m:
        for f in files:
            (m.mnt / f).write_text("x")
        assert m.unmount() == 0
    assert not (workdir / f"{name}.101").exists()
    return sorted(workdir.glob(f"{name}*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)


def test_rotation_through_the_cli_keeps_files_under_the_cap_and_loses_nothing(workdir: Path) -> None:
    files = _rotated_through_the_cli(workdir, "t.jsonl", [f"f{i}" for i in range(300)])
    assert len(files) > 3
    assert all(0 < f.stat().st_size <= 20 * 1024 for f in files)
    seqs = [json.loads(line)["seq"] for f in files for line in f.read_text().splitlines()]
    assert seqs == list(range(1, len(seqs) + 1))  # oldest file first, nothing lost across rotations


# --------------------------------------------------------------------------------------------- compressed output

def _decompressed(path: Path) -> bytes:
    """A complete .zst/.gz file (its end marker required), by the codec's own library."""
    import gzip

    import zstandard

    if ".gz" in path.name:
        return gzip.decompress(path.read_bytes())
    d = zstandard.ZstdDecompressor().decompressobj()
    out = d.decompress(path.read_bytes())
    assert d.eof and not d.unused_data, f"{path}: not one complete zstd frame"
    return out


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fuse_passthrough", "report", *args], capture_output=True,
                          text=True, timeout=120)


def _live_events(path: Path, wanted: tuple[str, str], timeout: float = 10) -> list[dict]:
    """The events a reader gets from the trace file while it is being written, once `wanted` (op, path) is in."""
    from fuse_passthrough.report import read_events

    deadline = time.monotonic() + timeout
    while True:
        events = list(read_events(str(path))) if path.exists() else []
        if any((e["op"], e["path"]) == wanted for e in events) or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


@pytest.mark.parametrize("suffix", [".zst", ".gz"])
def test_compressed_trace_through_a_mount(workdir: Path, suffix: str) -> None:
    out = workdir / f"trace.jsonl{suffix}"
    with Mount(workdir / "src", workdir / "mnt", "--format", "jsonl", "--output", str(out), trace=None) as m:
        (m.mnt / "live.txt").write_text("x")
        live = _live_events(out, ("create", "/live.txt"))  # flushed per batch: readable while written
        assert ("create", "/live.txt") in [(e["op"], e["path"]) for e in live]
        sh = subprocess.run(["sh", "-c", "echo hello > a; mkdir d; mv a d/b; cat d/b; rm d/b; echo $$"],
                            cwd=m.mnt, capture_output=True, text=True)
        assert sh.returncode == 0 and sh.stdout.startswith("hello\n")
        assert m.unmount() == 0
    events = [json.loads(line) for line in _decompressed(out).splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    sh_pid = int(sh.stdout.split()[-1])  # the shell, and the programs it ran
    mine = [(e["op"], e["path"], e["path2"]) for e in events
            if e["pid"] == sh_pid or e["comm"] in ("mkdir", "mv", "cat", "rm")]
    for step in [("create", "/a", None), ("write", "/a", None), ("mkdir", "/d", None),
                 ("rename", "/a", "/d/b"), ("unlink", "/d/b", None)]:
        assert step in mine, step
    ops = [s for s in mine if s in (("create", "/a", None), ("mkdir", "/d", None), ("rename", "/a", "/d/b"),
                                    ("unlink", "/d/b", None))]
    assert ops == [("create", "/a", None), ("mkdir", "/d", None), ("rename", "/a", "/d/b"), ("unlink", "/d/b", None)]
    assert any(e["op"] == "read" and e["path"] == "/d/b" and e["comm"] == "cat" for e in events)
    p = _report(str(out), "--top", "100")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert f"\n{len(events)} operations, " in p.stdout and "/d/b" in p.stdout


def test_compressed_rotation_through_the_cli(workdir: Path) -> None:
    files = _rotated_through_the_cli(workdir, "t.jsonl.zst", [f"file-with-a-longish-name-{i}" for i in range(600)])
    assert len(files) >= 3
    assert all(0 < f.stat().st_size <= 20 * 1024 for f in files)  # the cap counts compressed bytes
    seqs = [json.loads(line)["seq"] for f in files for line in _decompressed(f).splitlines()]
    assert seqs == list(range(1, len(seqs) + 1))  # every file complete on its own, nothing lost across them
    p = _report(*map(str, files))
    assert p.returncode == 0 and p.stderr == "" and f"\n{len(seqs)} operations, " in p.stdout


def _children(pid: int) -> list[int]:
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids += [int(k) for k in f.read().split()]
    return kids


def test_report_of_a_compressed_trace_whose_writer_was_killed(workdir: Path) -> None:
    out = workdir / "t.jsonl.zst"
    with Mount(workdir / "src", workdir / "mnt", "--format", "jsonl", "--output", str(out), trace=None) as m:
        for i in range(50):
            (m.mnt / f"f{i}").write_text("x")
        _live_events(out, ("create", "/f49"))
        assert m.proc is not None
        writer = [k for k in _children(m.proc.pid)
                  if b"fuse_passthrough.tracing.writer" in Path(f"/proc/{k}/cmdline").read_bytes()]
        assert len(writer) == 1
        os.kill(writer[0], signal.SIGKILL)  # the writer this test's daemon started
        (m.mnt / "after").write_text("x")  # the mount keeps serving; these events are lost, and said so
        m.unmount()
    d = __import__("zstandard").ZstdDecompressor().decompressobj()
    data = d.decompress(out.read_bytes())
    assert not d.eof  # cut short: no end of frame
    whole = data[: data.rfind(b"\n") + 1].splitlines()
    assert any(json.loads(line)["path"] == "/f49" for line in whole)
    p = _report(str(out))
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("\n") == 1 and f"warning: '{out}' ends before the end of its compressed data" in p.stderr
    assert f"\n{len(whole)} operations, " in p.stdout
