"""Kernel passthrough (--passthrough, libfuse >= 3.17): the kernel reads and writes the source files itself.

On libfuse < 3.17 the option must fail with one clear line. With 3.17 these tests run in `make test`'s second
stage (the system library on Debian 13, a copy built from Debian 13's source on Debian 12, loaded with
FUSE_LIBRARY_PATH); the POSIX tests are also re-run there through a --passthrough mount (FPT_MOUNT_ARGS).
"""

from __future__ import annotations

import errno
import mmap
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuse_passthrough.lowlevel.binding import VERSION as FUSE_VERSION
from helpers import Mount, is_mounted, run_as, wait_for

PROG = [sys.executable, "-m", "fuse_passthrough"]
NEW_ENOUGH = FUSE_VERSION >= (3, 17)
needs_3_17 = pytest.mark.skipif(not NEW_ENOUGH, reason="libfuse < 3.17 here: run by `make test`'s libfuse 3.17 "
                                                       "stage (make test-libfuse-3.17)")


@pytest.mark.skipif(NEW_ENOUGH, reason="libfuse >= 3.17 supports --passthrough")
@pytest.mark.parametrize("how", [["--passthrough"], ["-o", "passthrough"]])
def test_refused_with_one_line_on_old_libfuse(workdir: Path, how: list[str]) -> None:
    (workdir / "src").mkdir()
    (workdir / "mnt").mkdir()
    r = subprocess.run([*PROG, *how, str(workdir / "src"), str(workdir / "mnt")], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"fuse-passthrough: --passthrough needs libfuse >= 3.17 (this machine has "
                                     f"libfuse {FUSE_VERSION[0]}.{FUSE_VERSION[1]}; Debian 13 ships 3.17)"]
    assert not is_mounted(workdir / "mnt")


def _daemon_libfuse(m: Mount) -> str:
    assert m.proc is not None
    with open(f"/proc/{m.proc.pid}/maps") as f:
        libs = {line.split()[-1] for line in f if "libfuse3.so" in line}
    assert len(libs) == 1, libs
    return os.path.basename(os.path.realpath(libs.pop()))


@needs_3_17
def test_daemon_runs_on_libfuse_3_17(workdir: Path) -> None:
    with Mount(workdir / "src", workdir / "mnt", "--passthrough") as m:
        lib = _daemon_libfuse(m)
        assert lib.startswith("libfuse3.so.3.") and int(lib.split(".")[3]) >= 17, lib
        assert "fuse-passthrough: kernel passthrough: reads and writes of files go from the kernel straight to " \
               "SOURCE" in m.stderr()


def _write_and_read(mnt: Path, payload: bytes) -> bytes:
    fd = os.open(mnt / "data", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off in range(0, len(payload), 1 << 20):
            os.pwrite(fd, payload[off:off + (1 << 20)], off)
        os.fsync(fd)
    finally:
        os.close(fd)
    return (mnt / "data").read_bytes()


@needs_3_17
@pytest.mark.parametrize("passthrough", [True, False], ids=["passthrough", "daemon"])
def test_data_bypasses_the_daemon_and_the_trace_says_so(workdir: Path, passthrough: bool) -> None:
    """The same writes and reads with and without --passthrough: same bytes; only the daemon sees data ops."""
    payload = os.urandom(5 << 20)
    args = ["--passthrough"] if passthrough else []
    with Mount(workdir / "src", workdir / "mnt", *args, "-o", "flush") as m:  # flush: a request at every close
        assert _write_and_read(m.mnt, payload) == payload
        assert (m.src / "data").read_bytes() == payload
        assert m.unmount() == 0
    events = m.events()
    ops = [e["op"] for e in events]
    opens = [e for e in events if e["op"] in ("create", "open") and e["path"] == "/data"]
    assert [e["op"] for e in opens] == ["create", "open"]
    for name in ("flush", "release", "fsync"):  # metadata and handle ops are still traced
        assert name in ops
    if passthrough:
        assert "read" not in ops and "write" not in ops
        for e in opens:
            assert set(e["result"]) == {"fh", "passthrough"} and e["result"]["passthrough"] > 0
    else:
        assert sum(e["args"]["size"] for e in events if e["op"] == "write") == len(payload)
        assert sum(e["result"] for e in events if e["op"] == "read") == len(payload)
        assert all(set(e["result"]) == {"fh"} for e in opens)


@needs_3_17
def test_text_trace_marks_passed_through_opens(workdir: Path) -> None:
    m = Mount(workdir / "src", workdir / "mnt", "--passthrough", "--format", "text", trace="stderr")
    with m:
        (m.mnt / "t").write_bytes(b"x")
        assert m.unmount() == 0
    creates = [line for line in m.stderr().splitlines() if line.startswith("create('/t'")]
    assert len(creates) == 1 and "[kernel passthrough, backing " in creates[0] \
        and ": read/write not traced]" in creates[0], m.stderr()
    assert not any(line.startswith("write(") for line in m.stderr().splitlines())


@needs_3_17
@pytest.mark.parametrize("mode", ["strict", "cached"])
def test_concurrent_opens_hard_links_and_mmap(workdir: Path, mode: str) -> None:
    """A hard-linked file is one kernel inode: its opens by either name share one backing id, cached (default)
    or strict, and every name sees the same bytes and attributes."""
    args = ["-o", "timeout=0"] if mode == "strict" else []
    with Mount(workdir / "src", workdir / "mnt", "--passthrough", *args) as m:
        f = m.mnt / "f"
        f.write_bytes(b"0" * 8192)
        os.link(f, m.mnt / "g")
        r = os.open(f, os.O_RDONLY)
        w = os.open(f, os.O_WRONLY)
        g = os.open(m.mnt / "g", os.O_RDWR)  # another name, the same inode and backing file
        try:
            os.pwrite(w, b"written by w", 100)
            assert os.pread(r, 12, 100) == b"written by w"
            assert os.pread(g, 12, 100) == b"written by w"
            os.pwrite(g, b"via g", 200)
            assert os.pread(r, 5, 200) == b"via g"
            with mmap.mmap(g, 8192) as mm:  # shared mapping of the source file itself
                mm[300:305] = b"mmap!"
                mm.flush()
            assert os.pread(r, 5, 300) == b"mmap!"
            assert (m.src / "f").read_bytes()[300:305] == b"mmap!"
            assert os.stat(m.mnt / "g").st_mtime_ns == os.stat(m.src / "f").st_mtime_ns
            os.truncate(f, 50)
            assert os.fstat(r).st_size == 50 and os.pread(r, 100, 0) == b"0" * 50
            assert os.stat(m.mnt / "g").st_size == 50
        finally:
            for fd in (r, w, g):
                os.close(fd)
        # Every handle was released: a new open works and sees the file as it is.
        assert f.read_bytes() == b"0" * 50
        assert m.unmount() == 0
    opens = [e for e in m.events() if e["op"] == "open"]
    # One kernel inode for both names: an open's path is one of its names (the one the kernel entered last), and
    # every open is passed through, cached or strict; the three open at once share the node's one backing id.
    assert len(opens) == 4 and {e["path"] for e in opens} <= {"/f", "/g"}, opens
    assert all("passthrough" in e["result"] for e in opens), opens
    assert len({e["result"]["passthrough"] for e in opens[:3]}) == 1, opens


@needs_3_17
def test_o_direct_behaves_as_on_the_source(workdir: Path) -> None:
    """Passed through, O_DIRECT reaches the source file itself, so alignment rules are the source's."""
    native = workdir / "native"
    native.mkdir()

    def attempt(d: Path) -> tuple[int, int | None]:
        fd = os.open(d / "direct", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
        try:
            buf = mmap.mmap(-1, 4096)
            buf.write(b"a" * 4096)
            aligned = os.pwritev(fd, [buf], 0)
            try:
                os.pwrite(fd, b"unaligned", 1)
                unaligned = None
            except OSError as e:
                unaligned = e.errno
            return aligned, unaligned
        finally:
            os.close(fd)

    with Mount(workdir / "src", workdir / "mnt", "--passthrough") as m:
        assert attempt(m.mnt) == attempt(native)
        assert attempt(native)[1] == errno.EINVAL  # the check can fail: ext4 refuses unaligned O_DIRECT
        assert m.unmount() == 0


@needs_3_17
def test_write_by_another_user_clears_setuid_as_natively(workdir: Path) -> None:
    native = workdir / "native"
    native.mkdir()
    with Mount(workdir / "src", workdir / "mnt", "--passthrough", "-o", "allow_other") as m:
        for d in (native, m.mnt):
            os.chmod(d, 0o777)
            (d / "s").write_bytes(b"#!/bin/sh\n")
            os.chmod(d / "s", 0o4777)
            held = os.open(d / "s", os.O_RDWR)  # root's open registers the backing file first
            try:
                r = run_as(1000, 1000, ["sh", "-c", 'printf x >> "$1"', "sh", str(d / "s")])
            finally:
                os.close(held)
            assert r.returncode == 0, r.stderr
        assert oct(os.stat(m.mnt / "s").st_mode) == oct(os.stat(native / "s").st_mode)
        assert not os.stat(native / "s").st_mode & 0o4000
        assert m.unmount() == 0


@needs_3_17
def test_bad_uses_fail_with_one_line(workdir: Path) -> None:
    (workdir / "src").mkdir()
    (workdir / "mnt").mkdir()
    os.chmod(workdir / "src", 0o777)
    os.chmod(workdir / "mnt", 0o777)
    cases = [
        (["-o", "direct_io", "--passthrough"], 2, "fuse-passthrough: --passthrough and -o direct_io exclude each "
                                                 "other"),
    ]
    for args, status, line in cases:
        r = subprocess.run([*PROG, *args, str(workdir / "src"), str(workdir / "mnt")], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == status and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith(line), r.stderr
    assert not is_mounted(workdir / "mnt")


@needs_3_17
def test_refused_for_non_root(workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                              ) -> None:
    """Only CAP_SYS_ADMIN may register backing files: say so before mounting (the venv is not reachable by
    other uids here, so the check runs in-process with another effective uid)."""
    from fuse_passthrough import cli
    (workdir / "src").mkdir()
    (workdir / "mnt").mkdir()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["--passthrough", str(workdir / "src"), str(workdir / "mnt")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "fuse-passthrough: --passthrough needs root: the kernel lets only CAP_SYS_ADMIN register backing files"]
    assert not is_mounted(workdir / "mnt")


@needs_3_17
def test_open_file_outlives_a_killed_daemon(workdir: Path) -> None:
    """The kernel holds the backing file: reading an open file goes on when the daemon is gone; whatever needs
    the daemon, such as fstat or a new open, fails with ENOTCONN."""
    m = Mount(workdir / "src", workdir / "mnt", "--passthrough")
    with m:
        (m.mnt / "f").write_bytes(b"contents")
        fd = os.open(m.mnt / "f", os.O_RDONLY)
        try:
            assert m.proc is not None
            m.proc.kill()
            m.proc.wait(timeout=20)
            assert os.pread(fd, 100, 0) == b"contents"
            for call in (lambda: os.fstat(fd), lambda: os.open(m.mnt / "f", os.O_RDONLY)):
                with pytest.raises(OSError) as exc:
                    call()
                assert exc.value.errno == errno.ENOTCONN
        finally:
            try:
                os.close(fd)
            except OSError as e:  # the flush of close() needs the daemon
                assert e.errno == errno.ENOTCONN
        m.unmount()  # clears the stale mount
    assert not is_mounted(m.mnt)


@needs_3_17
def test_replaced_behind_the_back_while_open(workdir: Path) -> None:
    """The new file behind a name is another kernel inode with its own backing file, as natively; the open one
    reads on."""
    with Mount(workdir / "src", workdir / "mnt", "--passthrough") as m:
        (m.mnt / "f").write_text("old")
        fd = os.open(m.mnt / "f", os.O_RDONLY)
        try:
            (m.src / "f.new").write_text("new")
            os.rename(m.src / "f.new", m.src / "f")
            wait_for(lambda: (m.mnt / "f").read_text() == "new", 5, "the new file (SOURCE watcher)")
            assert os.pread(fd, 10, 0) == b"old"
        finally:
            os.close(fd)
        assert (m.mnt / "f").read_text() == "new"
        assert m.unmount() == 0


@needs_3_17
@pytest.mark.parametrize("background", [False, True], ids=["foreground", "background"])
def test_kernel_without_passthrough_is_one_line_and_no_mount(workdir: Path, background: bool) -> None:
    """This kernel offers passthrough; a kernel that does not is simulated by asking for a capability bit of 0."""
    (workdir / "src").mkdir()
    (workdir / "mnt").mkdir()
    code = ("import sys; import fuse_passthrough.lowlevel.binding as ll; ll.FUSE_CAP_PASSTHROUGH = 0; "
            "from fuse_passthrough.cli import main; sys.exit(main(sys.argv[1:]))")
    args = ["-b"] if background else []
    r = subprocess.run([sys.executable, "-c", code, *args, "--no-trace", "--passthrough", str(workdir / "src"),
                        str(workdir / "mnt")], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "TMPDIR": str(workdir)})
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == ["fuse-passthrough: --passthrough: the kernel does not offer FUSE passthrough "
                                     "(needs Linux >= 6.9 with CONFIG_FUSE_PASSTHROUGH)"]
    assert not is_mounted(workdir / "mnt")
