"""Faults of the source pass through to the caller and the daemon survives them; no acknowledged write is lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from helpers import MODE_ARGS, Mount, is_mounted


@contextmanager
def tmpfs(path: Path, *opts: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("mode=0755", *opts)), "fpt-fault", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


ERRNO_OF = """
import errno, json, os, sys
def errno_of(f, *a):
    try:
        r = f(*a)
        if isinstance(r, int) and f is os.open:
            os.close(r)
        return 0
    except OSError as e:
        return errno.errorcode[e.errno]
"""

WATCHER_BOUND = 0.5  # the watcher's ~0.1 s, with slack for a busy machine


def in_child(code: str, timeout: float = 20) -> Any:
    """Run Python code in a child (a hang cannot take the test with it); it prints one JSON value."""
    r = subprocess.run([sys.executable, "-c", ERRNO_OF + textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)




def assert_serving(m: Mount) -> None:
    assert m.proc is not None and m.proc.poll() is None
    os.listdir(m.mnt)


def test_enospc_passes_through_and_acknowledged_bytes_are_kept(workdir: Path) -> None:
    with tmpfs(workdir / "small", "size=1m") as small, Mount(small, workdir / "mnt") as m:
        acked = bytearray()
        fd = os.open(m.mnt / "big", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            with pytest.raises(OSError) as exc:
                for i in range(1000):
                    block = bytes([i % 251]) * 65536
                    n = os.write(fd, block)  # a short write is an acknowledged partial write
                    acked += block[:n]
            assert exc.value.errno == errno.ENOSPC
        finally:
            os.close(fd)
        assert 0 < len(acked) <= 1 << 20
        assert (small / "big").read_bytes() == bytes(acked)
        assert (m.mnt / "big").read_bytes() == bytes(acked)
        with pytest.raises(OSError) as exc:
            (m.mnt / "more").write_bytes(b"x" * 65536)
        assert exc.value.errno == errno.ENOSPC
        assert_serving(m)
        os.unlink(m.mnt / "big")
        (m.mnt / "after").write_bytes(b"space again")
        assert (small / "after").read_bytes() == b"space again"
        assert m.unmount() == 0
        errors = [e for e in m.events() if e["op"] == "write" and e["errno"]]
        assert errors and all(e["errno"] == "ENOSPC" for e in errors)


@pytest.mark.parametrize("how", ["unlink", "rename-over"])
def test_space_of_a_removed_file_is_free_at_once(workdir: Path, how: str) -> None:
    """As natively: the space of a file whose last name goes through the mount (and that no one has open) is free
    when unlink or rename returns, not when the kernel later forgets the inode (the daemon holds each node the
    kernel knows by an O_PATH fd). The files are written in SOURCE and looked up through the mount: a file
    written through the mount stays open in the daemon until the kernel's RELEASE, which FUSE sends after
    close() has returned (docs/posix.md)."""
    block = b"x" * (600 << 10)  # more than half of the 1 MiB SOURCE: two cannot exist at once
    (workdir / "native").mkdir()
    with tmpfs(workdir / "native", "size=1m") as native, tmpfs(workdir / "small", "size=1m") as small, \
            Mount(small, workdir / "mnt") as m:
        for d, source in ((native, native), (m.mnt, small)):
            held = []  # blocks still in use right after each removal returned (0 natively)
            for i in range(20):
                empty = os.statvfs(source).f_bfree
                (source / f"f{i}").write_bytes(block)
                assert os.stat(d / f"f{i}").st_size == len(block)  # the kernel holds the file's inode now
                if how == "unlink":
                    os.unlink(d / f"f{i}")
                else:
                    (source / "tiny").write_bytes(b"t")
                    os.stat(d / "tiny")
                    os.rename(d / "tiny", d / f"f{i}")
                held.append(empty - os.statvfs(source).f_bfree)
                if how != "unlink":
                    os.unlink(d / f"f{i}")
            assert max(held) <= 1, (d, held)  # at most the tiny file's block
            assert sorted(os.listdir(d)) == []
        assert m.unmount() == 0


@pytest.mark.parametrize("how", ["ro-tmpfs", "ro-bind"])
def test_erofs_passes_through(workdir: Path, how: str) -> None:
    src = workdir / "ro"
    if how == "ro-tmpfs":
        ctx = tmpfs(src, "ro")
    else:
        (workdir / "rw").mkdir()
        (workdir / "rw" / "f").write_bytes(b"data")
        ctx = _ro_bind(workdir / "rw", src)
    with ctx, Mount(src, workdir / "mnt") as m:
        mnt = str(m.mnt)
        result = in_child(f"""
            m = {mnt!r}
            print(json.dumps({{
                "create": errno_of(os.open, m + "/new", os.O_WRONLY | os.O_CREAT, 0o644),
                "mkdir": errno_of(os.mkdir, m + "/d"),
                "symlink": errno_of(os.symlink, "t", m + "/l"),
                "chmod": errno_of(os.chmod, m, 0o700),
                "setxattr": errno_of(os.setxattr, m, "user.x", b"1"),
                "list": errno_of(os.listdir, m),
            }}))
        """)
        assert result == {"create": "EROFS", "mkdir": "EROFS", "symlink": "EROFS", "chmod": "EROFS",
                          "setxattr": "EROFS", "list": 0}
        if how == "ro-bind":
            assert (m.mnt / "f").read_bytes() == b"data"
            with pytest.raises(OSError) as exc:
                os.open(m.mnt / "f", os.O_WRONLY)
            assert exc.value.errno == errno.EROFS
        assert_serving(m)
        assert m.unmount() == 0


@contextmanager
def _ro_bind(src: Path, dst: Path) -> Iterator[Path]:
    dst.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True)
        yield dst
    finally:
        subprocess.run(["umount", "-l", str(dst)], check=True)


def test_source_deleted_while_mounted(workdir: Path) -> None:
    with Mount(workdir / "src", workdir / "mnt") as m:
        (m.mnt / "sub").mkdir()
        (m.mnt / "sub" / "f").write_bytes(b"x")
        fd = os.open(m.mnt / "sub" / "f", os.O_RDONLY)
        try:
            shutil.rmtree(m.src)
            # A name deleted in SOURCE is dropped from the kernel's cache by the watcher, within its bound.
            deadline = time.monotonic() + WATCHER_BOUND
            while os.path.exists(m.mnt / "sub" / "f") and time.monotonic() < deadline:
                time.sleep(0.01)
            mnt = str(m.mnt)
            result = in_child(f"""
                m = {mnt!r}
                print(json.dumps({{
                    "list": os.listdir(m),
                    "stat": errno_of(os.stat, m + "/sub/f"),
                    "create": errno_of(os.open, m + "/new", os.O_WRONLY | os.O_CREAT, 0o644),
                    "mkdir": errno_of(os.mkdir, m + "/d"),
                }}))
            """)
            assert result == {"list": [], "stat": "ENOENT", "create": "ENOENT", "mkdir": "ENOENT"}
            assert os.pread(fd, 10, 0) == b"x"  # an open file stays readable, as on the source
        finally:
            os.close(fd)
        assert_serving(m)
        assert m.unmount() == 0


def test_source_renamed_while_mounted(workdir: Path) -> None:
    """The daemon holds the source directory open: a rename does not disturb it (it follows the directory)."""
    with Mount(workdir / "src", workdir / "mnt") as m:
        (m.mnt / "f").write_bytes(b"before")
        os.rename(m.src, workdir / "moved")
        mnt = str(m.mnt)
        result = in_child(f"""
            import json, os
            open({mnt!r} + "/g", "wb").write(b"after")
            print(json.dumps(sorted(os.listdir({mnt!r}))))
        """)
        assert result == ["f", "g"]
        assert (workdir / "moved" / "g").read_bytes() == b"after"
        assert not (workdir / "src").exists()
        assert m.unmount() == 0


def test_truncated_behind_open_handle_reads_like_native(workdir: Path) -> None:
    """Strict mode: a change made directly in SOURCE is seen at once (a cached mount sees it within its timeout,
    tests/test_caching.py)."""
    data = os.urandom(300_000)
    (workdir / "native").write_bytes(data)
    with Mount(workdir / "src", workdir / "mnt", "-o", "timeout=0") as m:
        (m.src / "f").write_bytes(data)
        fds = [os.open(m.mnt / "f", os.O_RDONLY), os.open(workdir / "native", os.O_RDONLY)]
        try:
            for fd in fds:
                assert os.pread(fd, len(data), 0) == data  # in the page cache now
            results = []
            for path, fd in ((m.src / "f", fds[0]), (workdir / "native", fds[1])):
                steps = []
                os.truncate(path, 100_000)
                steps += [os.pread(fd, 200_000, 0), os.pread(fd, 100, 150_000), os.pread(fd, 100, 99_950)]
                os.truncate(path, 0)
                steps += [os.pread(fd, 100, 0)]
                os.truncate(path, 5000)  # grows again: a hole of zeros
                steps += [os.pread(fd, 10_000, 0)]
                results.append(steps)
            assert results[0] == results[1]
            assert [len(s) for s in results[0]] == [100_000, 0, 50, 0, 5000]
            assert results[0][4] == bytes(5000)
        finally:
            for fd in fds:
                os.close(fd)
        assert m.unmount() == 0


WRITER = """
import os, sys
path, block = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
i = 0
try:
    while True:
        os.pwrite(fd, (b"%08d" % i) * (block // 8), i * block)
        sys.stdout.write(f"{i}\\n")  # acknowledged
        sys.stdout.flush()
        i += 1
except OSError as e:
    sys.stderr.write(f"stopped: {e}\\n")
"""


@pytest.mark.parametrize("threads", ["mt", "st"])
def test_no_acknowledged_write_lost_on_sigkill(workdir: Path, threads: str) -> None:
    block = 4096
    args = ["-s"] if threads == "st" else []
    if threads == "st" and "io_uring" in MODE_ARGS:
        pytest.skip("-s serves /dev/fuse only (the io_uring stage runs the multi-threaded case)")
    m = Mount(workdir / "src", workdir / "mnt", *args)
    with m:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(m.mnt / "stream"), str(block)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert writer.stdout is not None
            acked = []
            for line in writer.stdout:
                acked.append(int(line))
                if len(acked) == 300:
                    assert m.proc is not None
                    m.proc.send_signal(signal.SIGKILL)
                    break
            deadline = time.monotonic() + 20
            for line in writer.stdout:  # acknowledgements in flight when the daemon died
                acked.append(int(line))
                assert time.monotonic() < deadline
            assert writer.wait(timeout=20) == 0
            assert m.proc is not None and m.proc.wait(timeout=20) == -signal.SIGKILL
            assert writer.stderr is not None and "stopped:" in writer.stderr.read()
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
            m.unmount()  # the stale mount is cleared here
    assert not is_mounted(m.mnt)
    assert acked == list(range(len(acked))) and len(acked) >= 300
    content = (m.src / "stream").read_bytes()
    assert len(content) >= len(acked) * block
    for i in acked:
        assert content[i * block:(i + 1) * block] == (b"%08d" % i) * (block // 8), f"block {i} lost"
