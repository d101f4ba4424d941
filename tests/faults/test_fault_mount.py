"""Fault injection through a real mount: what programs see, what reaches SOURCE, what the trace and summary say."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import Mount, run_as

PROG = [sys.executable, "-m", "fuse_passthrough"]


def injected(m: Mount, op: str) -> list[dict]:
    return [e for e in m.events() if e["op"] == op and "injected" in e]


def test_write_enospc_fails_echo_and_leaves_source_as_it_was(workdir: Path) -> None:
    summary = workdir / "summary.json"
    with Mount(workdir / "src", workdir / "mnt", "--fault", "op=write,path=/data/*.db,errno=ENOSPC",
               "--summary-json", str(summary)) as m:
        (m.mnt / "data").mkdir()
        r = subprocess.run(["bash", "-c", "echo x > data/f.db"], cwd=m.mnt, capture_output=True, text=True)
        assert r.returncode != 0 and "No space left on device" in r.stderr
        (m.mnt / "data" / "f.txt").write_text("fine")  # another path: untouched
        assert m.unmount() == 0
    assert (m.src / "data" / "f.db").read_bytes() == b""  # created, never written
    assert (m.src / "data" / "f.txt").read_text() == "fine"
    [event] = injected(m, "write")
    assert event["path"] == "/data/f.db" and event["errno"] == "ENOSPC" and event["injected"] == "ENOSPC"
    assert event["comm"] == "bash" and "delay_ns" not in event
    assert not any("injected" in e for e in m.events() if e["path"] == "/data/f.txt")
    stats = json.loads(summary.read_text())
    assert stats["ops"]["write"]["injected"] == 1 and stats["total_injected"] == 1
    assert stats["ops"]["write"]["errors"] == 1
    assert "injected" in m.stderr()  # the summary table grew its column
    for jobs in ("1", "2"):  # the saved trace's report counts it too, in one process or several
        r = subprocess.run(PROG + ["report", "--jobs", jobs, str(m.trace)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        header = next(line for line in r.stdout.splitlines() if line.lstrip().startswith("% time"))
        row = next(line for line in r.stdout.splitlines() if line.endswith(" write"))
        cols = dict(zip(header.split()[2:], row.split()[1:], strict=False))
        assert cols["injected"] == "1" and cols["errors"] == "1", (header, row)


def test_fsync_eio_on_the_second_call_only(workdir: Path) -> None:
    with Mount(workdir / "src", workdir / "mnt", "--fault", "op=fsync,errno=EIO,nth=2") as m:
        fd = os.open(m.mnt / "f", os.O_CREAT | os.O_WRONLY, 0o644)
        results = []
        try:
            for i in range(4):
                os.write(fd, b"%d" % i)
                try:
                    os.fsync(fd)
                    results.append("ok")
                except OSError as e:
                    results.append(os.strerror(e.errno or 0))
        finally:
            os.close(fd)
        assert m.unmount() == 0
    assert results == ["ok", "Input/output error", "ok", "ok"]
    assert (m.src / "f").read_bytes() == b"0123"
    assert len(injected(m, "fsync")) == 1


def test_failed_rename_renames_nothing(workdir: Path) -> None:
    with Mount(workdir / "src", workdir / "mnt", "--fault", "op=rename,path=/a,errno=EACCES") as m:
        (m.mnt / "a").write_text("A")
        (m.mnt / "b").write_text("B")
        r = subprocess.run(["mv", "a", "b"], cwd=m.mnt, capture_output=True, text=True)
        assert r.returncode != 0 and "Permission denied" in r.stderr
        with pytest.raises(PermissionError):
            os.rename(m.mnt / "b", m.mnt / "a")  # path2 matches as well
        assert (m.mnt / "a").read_text() == "A" and (m.mnt / "b").read_text() == "B"
    assert (m.src / "a").read_text() == "A" and (m.src / "b").read_text() == "B"
    assert len(injected(m, "rename")) == 2


def test_short_write_returns_less_and_a_retrying_program_gets_everything_written(workdir: Path) -> None:
    with Mount(workdir / "src", workdir / "mnt", "--fault", "op=write,short=1") as m:
        fd = os.open(m.mnt / "f", os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            assert os.write(fd, b"hello") == 1  # a short write, not an error
        finally:
            os.close(fd)
        # printf retries short writes (stdio's fwrite loops until all is written)
        r = subprocess.run(["sh", "-c", "printf 'hello world' > g"], cwd=m.mnt, capture_output=True)
        assert r.returncode == 0, r.stderr
        assert m.unmount() == 0
    assert (m.src / "f").read_bytes() == b"h"
    assert (m.src / "g").read_bytes() == b"hello world"
    writes = [e for e in m.events() if e["op"] == "write" and e["path"] == "/g"]
    assert len(writes) == len("hello world") and all(e["result"] == 1 and e["injected"] == "short"
                                                      for e in writes)


def test_short_read_returns_less_and_a_retrying_program_reads_everything(workdir: Path) -> None:
    with Mount(workdir / "src", workdir / "mnt", "--fault", "op=read,path=/f,short=3") as m:
        (m.src / "f").write_bytes(b"0123456789")
        (m.src / "g").write_bytes(b"0123456789")
        fd = os.open(m.mnt / "f", os.O_RDONLY)
        try:
            assert os.read(fd, 100) == b"012"  # a short read, and not the end of the file
            assert os.read(fd, 100) == b"345"
            assert os.fstat(fd).st_size == 10
        finally:
            os.close(fd)
        assert (m.mnt / "f").read_bytes() == b"0123456789"  # read loops until EOF
        assert (m.mnt / "g").read_bytes() == b"0123456789"
        assert os.stat(m.mnt / "f").st_size == 10
    assert all(e["result"] <= 3 for e in m.events() if e["op"] == "read" and e["path"] == "/f")
    assert not any("injected" in e for e in m.events() if e["path"] == "/g")


def test_delay_comes_before_the_operation(workdir: Path) -> None:
    with Mount(workdir / "src", workdir / "mnt", "--fault", "op=mkdir,delay=300ms") as m:
        t0 = time.monotonic()
        (m.mnt / "d").mkdir()
        took = time.monotonic() - t0
        (m.mnt / "f").write_text("not delayed")
        assert m.unmount() == 0
    assert 0.3 <= took < 10
    assert (m.src / "d").is_dir()
    [event] = injected(m, "mkdir")
    assert event["injected"] == "delay" and event["delay_ns"] == 300_000_000 and event["errno"] is None
    assert event["duration_ns"] >= 300_000_000
    assert not any("injected" in e for e in m.events() if e["op"] != "mkdir")


def test_delay_and_errno_together(workdir: Path) -> None:
    with Mount(workdir / "src", workdir / "mnt", "--fault", "op=unlink,delay=200ms,errno=EBUSY") as m:
        (m.mnt / "f").write_text("x")
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            os.unlink(m.mnt / "f")
        assert e.value.errno == 16 and time.monotonic() - t0 >= 0.2
        assert m.unmount() == 0
    assert (m.src / "f").exists()
    [event] = injected(m, "unlink")
    assert event["injected"] == "EBUSY" and event["delay_ns"] == 200_000_000


def create_pattern(workdir: Path, name: str, rule: str, n: int = 40) -> list[bool]:
    """Which of n creates failed under `rule`, on a fresh mount."""
    failed = []
    with Mount(workdir / f"src-{name}", workdir / f"mnt-{name}", "--fault", rule, trace=False) as m:
        for i in range(n):
            try:
                (m.mnt / f"f{i}").write_text("x")
                failed.append(False)
            except OSError:
                failed.append(True)
    assert [not (m.src / f"f{i}").exists() for i in range(n)] == failed  # a failed create created nothing
    return failed


def test_probability_with_a_seed_is_reproducible(workdir: Path) -> None:
    rule = "op=create,errno=EIO,probability=0.5,seed=7"
    first = create_pattern(workdir, "a", rule)
    second = create_pattern(workdir, "b", rule)
    assert first == second
    rng = random.Random(7)
    assert first == [rng.random() < 0.5 for _ in range(40)]  # exactly the seeded sequence, call by call
    assert 5 < sum(first) < 35


def test_nth_every_after_times_through_the_mount(workdir: Path) -> None:
    every = create_pattern(workdir, "every", "op=create,errno=EIO,every=3", n=10)
    assert [i + 1 for i, f in enumerate(every) if f] == [3, 6, 9]
    after = create_pattern(workdir, "after", "op=create,errno=EIO,after=4,times=2", n=10)
    assert [i + 1 for i, f in enumerate(after) if f] == [5, 6]


def test_comm_rule_leaves_other_programs_alone(workdir: Path) -> None:
    with Mount(workdir / "src", workdir / "mnt", "--fault", "op=create,comm=touch,errno=EROFS") as m:
        r = subprocess.run(["touch", "a"], cwd=m.mnt, capture_output=True, text=True)
        assert r.returncode != 0 and "Read-only file system" in r.stderr
        subprocess.run(["sh", "-c", "echo b > b"], cwd=m.mnt, check=True)
    assert not (m.src / "a").exists() and (m.src / "b").read_text() == "b\n"


def test_uid_rule_leaves_other_users_alone(workdir: Path) -> None:
    src = workdir / "src"
    src.mkdir(mode=0o777)
    os.chmod(src, 0o777)
    with Mount(src, workdir / "mnt", "-o", "allow_other", "--fault", "op=mkdir,uid=1000,errno=EDQUOT") as m:
        r = run_as(1000, 1000, ["mkdir", str(m.mnt / "u1000")])
        assert r.returncode != 0 and "quota" in r.stderr.lower()
        assert run_as(1001, 1001, ["mkdir", str(m.mnt / "u1001")]).returncode == 0
        (m.mnt / "root").mkdir()
    assert sorted(p.name for p in src.iterdir()) == ["root", "u1001"]


def test_pid_rule_leaves_other_processes_alone(workdir: Path) -> None:
    target = workdir / "mnt" / "victim"
    # The process exists before the mount (its pid goes into the rule) and acts once told to.
    victim = subprocess.Popen([sys.executable, "-c", f"import os,sys; sys.stdin.read(1); os.mkdir({str(target)!r})"],
                              stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with Mount(workdir / "src", workdir / "mnt", "--fault", f"op=mkdir,pid={victim.pid},errno=ENOSPC") as m:
            (m.mnt / "bystander").mkdir()
            assert victim.stdin is not None
            victim.stdin.write("x")
            victim.stdin.close()
            assert victim.wait(timeout=30) != 0
            assert victim.stderr is not None and "No space left on device" in victim.stderr.read()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    assert sorted(p.name for p in (workdir / "src").iterdir()) == ["bystander"]


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_rules_file_is_reloaded_on_a_live_mount(workdir: Path) -> None:
    rules = workdir / "faults.rules"
    rules.write_text("# nothing yet\n")
    with Mount(workdir / "src", workdir / "mnt", "--fault-file", str(rules)) as m:
        (m.mnt / "before").write_text("ok")
        new = workdir / "faults.rules.new"
        new.write_text("op=mkdir,errno=EDQUOT\n")
        os.rename(new, rules)  # the way editors save
        assert wait_for(lambda: m.stderr().count("fault rules reloaded") == 1), m.stderr()
        assert "op=mkdir,errno=EDQUOT" in m.stderr()
        with pytest.raises(OSError) as e:
            (m.mnt / "d").mkdir()
        assert e.value.errno == 122
        rules.write_text("op=mkdir,bogus=1\n")  # a broken file: the rules in force stay
        assert wait_for(lambda: "fault rules not reloaded" in m.stderr()), m.stderr()
        assert "unknown key 'bogus'" in m.stderr() and f"{rules}:1:" in m.stderr()
        with pytest.raises(OSError):
            (m.mnt / "d").mkdir()
        rules.write_text("")  # written in place: no rules
        assert wait_for(lambda: m.stderr().count("fault rules reloaded") == 2), m.stderr()
        (m.mnt / "d").mkdir()
    assert sorted(p.name for p in m.src.iterdir()) == ["before", "d"]
    assert len(injected(m, "mkdir")) == 2


def test_trace_command_shows_injections_and_counts_them(workdir: Path) -> None:
    (workdir / "src").mkdir()
    script = ("import os\nfd = os.open('f', os.O_CREAT | os.O_WRONLY)\nos.write(fd, b'x')\n"
              "for i in range(3):\n    try:\n        os.fsync(fd)\n    except OSError as e:\n"
              "        print('fsync', i, e.strerror)\n")
    r = subprocess.run(PROG + ["trace", "--fault", "op=fsync,errno=EIO,nth=2", "--", sys.executable, "-c", script],
                       cwd=workdir / "src", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "fsync 1 Input/output error"
    fsyncs = [line for line in r.stderr.splitlines() if line.startswith("fsync(")]
    assert len(fsyncs) == 3 and "-> EIO  <<INJECTED>>" in fsyncs[1]
    assert "<<INJECTED" not in fsyncs[0] + fsyncs[2]
    header = next(line for line in r.stderr.splitlines() if line.lstrip().startswith("% time"))
    assert "injected" in header.split()
    row = next(line for line in r.stderr.splitlines() if line.endswith(" fsync"))
    cols = dict(zip(header.split()[2:], row.split()[1:], strict=False))  # "% time" is two words
    assert cols["calls"] == "3" and cols["errors"] == "1" and cols["injected"] == "1", (header, row)


@pytest.mark.parametrize("args,words", [
    (["--fault", "op=write,when=now,errno=EIO"], ["--fault", "unknown key 'when'"]),
    (["--fault-file", "bad.rules"], ["bad.rules:2:", "unknown key 'sometimes'"]),
])
def test_trace_refuses_bad_rules_before_running_anything(workdir: Path, args: list[str], words: list[str]
                                                          ) -> None:
    (workdir / "bad.rules").write_text("op=write,errno=EIO\nop=write,errno=EIO,sometimes=1\n")
    r = subprocess.run(PROG + ["trace", *args, "--", "touch", "ran"], cwd=workdir, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("fuse-passthrough") and all(w in r.stderr for w in words), r.stderr
    assert not (workdir / "ran").exists()
    with open("/proc/self/mountinfo") as f:
        assert str(workdir) not in f.read()


def test_sqlite_stays_consistent_when_fsync_and_write_fail(workdir: Path) -> None:
    """A real program under injection: SQLite sees failed commits, and the database is intact afterwards."""
    rules = workdir / "faults.rules"
    rules.write_text("")
    with Mount(workdir / "src", workdir / "mnt", "--fault-file", str(rules)) as m:
        db = sqlite3.connect(m.mnt / "app.db", isolation_level=None)
        db.execute("create table t (n integer primary key, payload text)")
        for n in range(20):
            db.execute("insert into t values (?, ?)", (n, "x" * 500))
        committed = set(range(20))
        new = workdir / "faults.rules.new"
        new.write_text("op=fsync,path=/app.db*,errno=EIO,every=10\n"
                       "op=write,path=/app.db*,errno=ENOSPC,probability=0.05,seed=3\n")
        os.rename(new, rules)
        assert wait_for(lambda: "fault rules reloaded" in m.stderr()), m.stderr()
        failures = 0
        for n in range(20, 80):
            try:
                db.execute("insert into t values (?, ?)", (n, "y" * 500))
                committed.add(n)
            except sqlite3.Error:  # "disk I/O error", "database or disk is full"
                failures += 1
        db.close()
        rules.write_text("")
        assert wait_for(lambda: m.stderr().count("fault rules reloaded") == 2), m.stderr()
        assert m.unmount() == 0
    assert failures > 0 and len(committed) > 20
    check = sqlite3.connect(m.src / "app.db")  # natively, after the mount is gone (a hot journal is replayed)
    try:
        assert check.execute("pragma integrity_check").fetchall() == [("ok",)]
        present = {n for (n,) in check.execute("select n from t")}
    finally:
        check.close()
    assert committed <= present  # every commit SQLite reported is there
    assert {e["injected"] for e in m.events() if "injected" in e} == {"EIO", "ENOSPC"}


def test_background_mount_reads_a_relative_rules_file(workdir: Path) -> None:
    """-b: the daemon works in "/", the rules file named relative to where the command ran still counts."""
    (workdir / "src").mkdir()
    (workdir / "mnt").mkdir()
    (workdir / "faults.rules").write_text("op=mkdir,errno=EDQUOT\n")
    # TMPDIR: the background daemon's log (its messages) goes there, and with workdir, away with it
    r = subprocess.run(PROG + ["-b", "--no-trace", "--fault-file", "faults.rules", "src", "mnt"], cwd=workdir,
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, TMPDIR=str(workdir)))
    assert r.returncode == 0, r.stderr
    pid = int(r.stderr.split("(pid ")[1].split(")")[0])
    try:
        with pytest.raises(OSError) as e:
            (workdir / "mnt" / "d").mkdir()
        assert e.value.errno == 122
        (workdir / "mnt" / "f").write_text("x")
        rules_new = workdir / "new.rules"
        rules_new.write_text("")
        os.rename(rules_new, workdir / "faults.rules")
        assert wait_for(lambda: _mkdir_works(workdir / "mnt" / "d")), "rules reloaded in the background daemon"
    finally:
        subprocess.run(["fusermount3", "-u", str(workdir / "mnt")], check=True)
        assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=30)
    assert sorted(p.name for p in (workdir / "src").iterdir()) == ["d", "f"]
    (log,) = workdir.glob("fuse-passthrough-*.log")
    assert "fault rules reloaded" in log.read_text()


def _mkdir_works(path: Path) -> bool:
    try:
        path.mkdir()
        return True
    except OSError:
        return False
