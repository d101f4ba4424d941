"""Issue 18's divergences from the native filesystem, each as a native-vs-mount test: the same sequence in a plain
directory (where "the mount" M and "SOURCE" S are the same directory) and through a mount of S at M; the same
results, errnos, stat fields and bytes are required.

Changes made in S behind the mount's back must be seen through M within the documented bound of each mode
(docs/posix.md, "Caching and coherence"):

- strict (`-o timeout=0`): at the next access;
- no watcher (`-o timeout=0.5,nowatch`): the timeout, 0.5 s;
- fanotify (the default as root) and inotify (forced with FUSE_PASSTHROUGH_NO_FANOTIFY=1), with `-o timeout=30`
  so that only the watcher can make it fast: ~0.1 s;
- the default as root (no timeout given): fanotify with its filesystem mark and timeouts of a day, ~0.1 s.

A check after such a change polls until the mount agrees with the native result, and fails if that takes longer
than the bound plus SLACK (scheduling on a shared, loaded 2-core machine); what the mount answered last is in the
failure. Everything else (operations through the mount, fd operations) must agree at the first look.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from inotify_simple import INotify
from inotify_simple import flags as iflags

from fuse_passthrough.inodes import FORGOTTEN_MAX
from fuse_passthrough.watcher import local_filesystem
from helpers import FILE_CAPS, MODE_ARGS, Mount

SLACK = 1.5  # seconds of scheduling slack on top of each bound (the machine runs other test suites too)

# mode -> (mount options, bound in seconds, environment, watcher expected in the daemon)
MODES: dict[str, tuple[list[str], float, dict[str, str], str | None]] = {
    "strict": (["-o", "timeout=0"], 0.0, {}, "fanotify"),
    "nowatch": (["-o", "timeout=0.5,nowatch"], 0.5, {}, None),
    "fanotify": (["-o", "timeout=30"], 0.1, {}, "fanotify"),
    "inotify": (["-o", "timeout=30"], 0.1, {"FUSE_PASSTHROUGH_NO_FANOTIFY": "1"}, "inotify"),
    # the default as root: no timeout given, so a day where fanotify's filesystem mark covers SOURCE
    # (docs/posix.md "Cache lifetimes"): only the watcher bounds what shows
    "default": ([], 0.1, {}, "fanotify"),
}

PASSTHROUGH = "--passthrough" in MODE_ARGS

def _errname(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


def observe(fn: Callable[[], Any]) -> Any:
    """fn()'s result, or ("err", ERRNO) — comparable between the native directory and the mount."""
    try:
        return fn()
    except OSError as e:
        return ("err", _errname(e))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:60]}...{text[-40:]} ({len(value) if isinstance(value, bytes) else '?'} bytes)"


def shape(st: os.stat_result) -> dict[str, int]:
    """The stat fields two objects made the same way share (the native directory vs the mount)."""
    return {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode), "nlink": st.st_nlink,
            "uid": st.st_uid, "gid": st.st_gid, "size": st.st_size}


class Run:
    """One run of a scenario. Natively (`expected` None) it records what each check gives; through the mount it
    requires the same, at once or, for `behind=True` checks (the first look after a change made in S), within
    `bound` + SLACK."""

    def __init__(self, m: Path, s: Path, expected: dict[str, Any] | None = None, bound: float = 0.0) -> None:
        self.m, self.s = m, s
        self.expected = expected
        self.bound = bound
        self.seen: dict[str, Any] = {}
        self.waits: dict[str, float] = {}

    def see(self, label: str, fn: Callable[[], Any], behind: bool = False) -> Any:
        assert label not in self.seen, label
        if self.expected is None:
            self.seen[label] = got = observe(fn)
            return got
        want = self.expected[label]
        t0 = time.monotonic()
        deadline = t0 + self.bound + SLACK
        while True:
            got = observe(fn)
            if got == want or not behind or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        self.seen[label] = got
        self.waits[label] = time.monotonic() - t0
        assert got == want, (f"{label}: the mount gave {_short(got)}, natively {_short(want)}"
                             + (f" (after {self.waits[label]:.2f} s; bound {self.bound} s + {SLACK} s)"
                                if behind else " (at once)"))
        return got


Scenario = Callable[[Run], None]


def watcher_of(pid: int) -> str | None:
    """Which SOURCE watcher the daemon runs, from its fds."""
    kinds = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target == "anon_inode:[fanotify]":
            kinds.add("fanotify")
        elif target == "anon_inode:inotify":
            kinds.add("inotify")
    assert len(kinds) <= 1, kinds
    return kinds.pop() if kinds else None


def run_both(workdir: Path, mode: str, scenario: Scenario, extra: list[str] | None = None) -> Run:
    native = workdir / "native"
    native.mkdir()
    os.chmod(native, 0o777)
    expected = Run(native, native)
    scenario(expected)
    args, bound, env, watcher = MODES[mode]
    with Mount(workdir / "src", workdir / "mnt", *args, *(extra or []), trace=False,
               env={**os.environ, **env}) as m:
        assert m.proc is not None
        assert watcher_of(m.proc.pid) == watcher
        run = Run(m.mnt, m.src, expected.seen, bound)
        scenario(run)
        assert m.unmount() == 0, m.stderr()
    return run


# --- the scenarios ----------------------------------------------------------------------------------------------

def fd_ops_after_source_rename(r: Run) -> None:
    """fchmod, fchown, futimens, fsetxattr and fstat act on the open file, wherever it moved in S."""
    m, s = r.m, r.s
    (m / "r").write_bytes(b"the open file")
    fd = os.open(m / "r", os.O_RDWR)
    try:
        os.rename(s / "r", s / "moved")
        (s / "r").write_bytes(b"a new file by the old name")
        r.see("fchmod", lambda: os.chmod(fd, 0o604))
        r.see("fchown", lambda: os.chown(fd, 4321, 8765))
        r.see("futimens", lambda: os.utime(fd, ns=(1_000_000_001, 2_000_000_002)))
        r.see("fsetxattr", lambda: os.setxattr(fd, "user.k", b"on the open file"))
        r.see("fstat", lambda: shape(os.fstat(fd)))
        r.see("fstat times", lambda: (os.fstat(fd).st_atime_ns, os.fstat(fd).st_mtime_ns))
        r.see("fgetxattr", lambda: os.getxattr(fd, "user.k"))
        r.see("fstat is the moved file", lambda: os.fstat(fd).st_ino == os.stat(s / "moved").st_ino)
        r.see("moved", lambda: shape(os.stat(s / "moved")))
        r.see("moved times", lambda: os.stat(s / "moved").st_mtime_ns)
        r.see("moved xattr", lambda: os.getxattr(s / "moved", "user.k"))
        r.see("new file untouched", lambda: (stat.S_IMODE(os.stat(s / "r").st_mode), os.stat(s / "r").st_uid))
        r.see("new file has no xattr", lambda: os.getxattr(s / "r", "user.k"))
        r.see("pread", lambda: os.pread(fd, 100, 0))
        r.see("the name now", lambda: (m / "r").read_bytes(), behind=True)
        r.see("the name's stat", lambda: shape(os.stat(m / "r")), behind=True)
        r.see("the moved name", lambda: (m / "moved").read_bytes(), behind=True)
        r.see("write", lambda: os.pwrite(fd, b"THE", 0))
        r.see("moved bytes", lambda: (s / "moved").read_bytes())
    finally:
        os.close(fd)


def cwd_in_a_tree_renamed_in_source(r: Run) -> None:
    """A process whose cwd is in a tree renamed in S keeps working there: ls ., cat f, touch new."""
    m, s = r.m, r.s
    (m / "a" / "b" / "c" / "d").mkdir(parents=True)
    (m / "a" / "b" / "c" / "d" / "f").write_bytes(b"in d")
    old = os.getcwd()
    os.chdir(m / "a" / "b" / "c" / "d")
    try:
        os.rename(s / "a", s / "z")
        r.see("ls .", lambda: sorted(os.listdir(".")))
        r.see("cat f", lambda: Path("f").read_bytes())
        r.see("touch new", lambda: os.close(os.open("new", os.O_WRONLY | os.O_CREAT, 0o644)))
        r.see("new in S", lambda: (s / "z" / "b" / "c" / "d" / "new").exists())
        r.see("ls . again", lambda: sorted(os.listdir(".")))
        r.see("stat ..", lambda: shape(os.stat("..")))
        r.see("mkdir here", lambda: os.mkdir("sub"))
        r.see("the old name", lambda: os.stat(m / "a"), behind=True)
        r.see("the new name", lambda: sorted(os.listdir(m / "z" / "b" / "c" / "d")), behind=True)
        r.see("getcwd", lambda: os.path.relpath(os.getcwd(), m))
    finally:
        os.chdir(old)


def hard_link_in_source_then_write_by_the_new_name(r: Run) -> None:
    """A hard link made in S, then a write through the mount by the new name: the old name's size and link
    count, and an fd open on it, see it."""
    m, s = r.m, r.s
    (m / "f").write_bytes(b"abc")
    os.stat(m / "f")
    fd = os.open(m / "f", os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"abc"
        os.link(s / "f", s / "g")
        r.see("link count by the old name", lambda: os.stat(m / "f").st_nlink, behind=True)
        with open(m / "g", "ab") as g:
            g.write(b"defgh")
        r.see("old name", lambda: shape(os.stat(m / "f")))
        r.see("fstat of the open fd", lambda: shape(os.fstat(fd)))
        r.see("pread of the open fd", lambda: os.pread(fd, 100, 0))
        r.see("one inode", lambda: os.stat(m / "f").st_ino == os.stat(m / "g").st_ino)
        r.see("mtime", lambda: os.stat(m / "f").st_mtime_ns == os.stat(m / "g").st_mtime_ns)
    finally:
        os.close(fd)


def append_after_another_name_grew_the_file(r: Run) -> None:
    """O_APPEND: after another name (a hard link) grew the file, the append lands at the end and the fd's
    position is right after it."""
    m = r.m
    (m / "f").write_bytes(b"")
    os.link(m / "f", m / "g")
    fd = os.open(m / "f", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"abcdef")
        with open(m / "g", "ab") as g:
            g.write(b"0123456789")
        r.see("write", lambda: os.write(fd, b"x"))
        r.see("position", lambda: os.lseek(fd, 0, os.SEEK_CUR))
        r.see("bytes", lambda: (m / "f").read_bytes())
    finally:
        os.close(fd)


def append_after_source_grew_the_file(r: Run) -> None:
    """O_APPEND after S grew the file: once the bound has passed (a fixed wait: any look at the file through the
    mount would refresh its size and hide the divergence), the append lands at the end and the fd's position
    is right after it."""
    m, s = r.m, r.s
    (m / "f").write_bytes(b"")
    fd = os.open(m / "f", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"abcdef")
        with open(s / "f", "ab") as w:
            w.write(b"0123456789")
        time.sleep(r.bound + SLACK if r.expected is not None else 0)
        r.see("write", lambda: os.write(fd, b"x"))
        r.see("position", lambda: os.lseek(fd, 0, os.SEEK_CUR))
        r.see("bytes", lambda: (s / "f").read_bytes())
    finally:
        os.close(fd)


def truncate_in_source_then_pread(r: Run) -> None:
    """truncate(2) in S (an IN_MODIFY, no close): pread and fstat through an open fd see the new length."""
    m, s = r.m, r.s
    (m / "f").write_bytes(b"0123456789" * 100)
    fd = os.open(m / "f", os.O_RDONLY)
    try:
        assert len(os.pread(fd, 4096, 0)) == 1000  # cached
        os.truncate(s / "f", 10)
        r.see("pread", lambda: os.pread(fd, 4096, 0), behind=True)
        r.see("fstat", lambda: shape(os.fstat(fd)), behind=True)
        r.see("stat", lambda: shape(os.stat(m / "f")), behind=True)
        os.truncate(s / "f", 3000)
        r.see("pread after growing", lambda: os.pread(fd, 4096, 0), behind=True)
    finally:
        os.close(fd)


def source_writer_keeping_the_file_open(r: Run) -> None:
    """A writer in S that keeps the file open (a log): readers through the mount see each write."""
    m, s = r.m, r.s
    (m / "log").write_bytes(b"first line\n")
    assert (m / "log").read_bytes() == b"first line\n"
    fd = os.open(m / "log", os.O_RDONLY)
    w = os.open(s / "log", os.O_WRONLY | os.O_APPEND)
    try:
        assert os.pread(fd, 4096, 0) == b"first line\n"
        os.write(w, b"second line\n")
        r.see("read by name", lambda: (m / "log").read_bytes(), behind=True)
        r.see("pread of the open fd", lambda: os.pread(fd, 4096, 0), behind=True)
        os.write(w, b"third\n")
        os.pwrite(w, b"FIRST", 0)
        r.see("pread after an overwrite", lambda: os.pread(fd, 4096, 0), behind=True)
        r.see("stat", lambda: shape(os.stat(m / "log")), behind=True)
    finally:
        os.close(w)
        os.close(fd)


def capabilities_set_in_source(r: Run) -> None:
    """File capabilities (security.capability, which the kernel asks for before a file's first write and whose
    absence the daemon may remember) set in S, also through a name in a directory the mount never looked up:
    getxattr through the mount sees them; set, dropped by a write and removed through the mount: at once."""
    m, s = r.m, r.s
    caps = "security.capability"
    fd = os.open(m / "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
    try:
        os.write(fd, b"data")
    finally:
        os.close(fd)
    r.see("none", lambda: os.getxattr(m / "f", caps))
    os.setxattr(s / "f", caps, FILE_CAPS)
    r.see("set in S", lambda: os.getxattr(m / "f", caps), behind=True)
    with open(m / "f", "ab") as f:
        f.write(b"more")  # natively a write drops them, root's too
    r.see("after a write", lambda: os.getxattr(m / "f", caps))
    (s / "elsewhere").mkdir()
    os.link(s / "f", s / "elsewhere" / "g")
    os.setxattr(s / "elsewhere" / "g", caps, FILE_CAPS)
    r.see("set in S through another name", lambda: os.getxattr(m / "f", caps), behind=True)
    os.removexattr(m / "f", caps)
    r.see("removed through the mount", lambda: os.getxattr(m / "f", caps))
    os.setxattr(m / "f", caps, FILE_CAPS)
    r.see("set through the mount", lambda: os.getxattr(m / "f", caps))
    os.removexattr(s / "elsewhere" / "g", caps)
    r.see("removed in S", lambda: os.getxattr(m / "f", caps), behind=True)
    with open(m / "f", "ab") as f:
        f.write(b"again")
    os.setxattr(s / "elsewhere" / "g", caps, FILE_CAPS)
    r.see("set in S after a write", lambda: os.getxattr(m / "f", caps), behind=True)


def create_of_a_name_made_in_source_since(r: Run) -> None:
    """open(O_CREAT) without O_EXCL of a name the mount answered as absent and S has made since (with file
    capabilities): the kernel may still send CREATE; the daemon, which tries O_EXCL first to know a file new, opens
    the existing file as asked, and its first write drops the capabilities in S, as natively."""
    m, s = r.m, r.s
    caps = "security.capability"
    r.see("absent", lambda: os.stat(m / "capped"))  # the kernel may remember the name as absent
    (s / "capped").write_bytes(b"old data")
    os.chmod(s / "capped", 0o755)
    os.setxattr(s / "capped", caps, FILE_CAPS)

    def open_and_write() -> int:
        fd = os.open(m / "capped", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            return os.write(fd, b"new")
        finally:
            os.close(fd)
    r.see("opened and written", open_and_write)
    r.see("bytes in S", lambda: (s / "capped").read_bytes())
    r.see("mode", lambda: stat.S_IMODE(os.stat(m / "capped").st_mode))
    r.see("capabilities in S", lambda: os.getxattr(s / "capped", caps))
    r.see("capabilities", lambda: os.getxattr(m / "capped", caps))


def file_replaced_by_directory_in_source(r: Run) -> None:
    """A file replaced by a directory in S, and the other way round: open, stat and readdir see the new object."""
    m, s = r.m, r.s
    (m / "x").write_bytes(b"file")
    (m / "y").mkdir()
    (m / "y" / "child").write_bytes(b"c")
    assert (m / "x").read_bytes() == b"file" and os.listdir(m / "y") == ["child"]
    os.unlink(s / "x")
    os.mkdir(s / "x")
    (s / "x" / "inside").write_bytes(b"i")
    shutil.rmtree(s / "y")
    (s / "y").write_bytes(b"now a file")

    def open_kind(p: Path) -> tuple[str, int]:
        fd = os.open(p, os.O_RDONLY)
        try:
            return "opened", stat.S_IFMT(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    r.see("open x", lambda: open_kind(m / "x"), behind=True)
    r.see("stat x", lambda: shape(os.stat(m / "x")), behind=True)
    r.see("ls x", lambda: os.listdir(m / "x"), behind=True)
    r.see("open y", lambda: open_kind(m / "y"), behind=True)
    r.see("read y", lambda: (m / "y").read_bytes(), behind=True)
    r.see("ls y", lambda: os.listdir(m / "y"), behind=True)
    r.see("y/child", lambda: os.stat(m / "y" / "child"), behind=True)


def create_where_a_directory_was_renamed_away(r: Run) -> None:
    """O_CREAT of a name whose directory was renamed away in S: natively a new file (and ENOTDIR below it)."""
    m, s = r.m, r.s
    (m / "dd").mkdir()
    (m / "dd" / "n").write_bytes(b"n")
    assert os.listdir(m / "dd") == ["n"]
    os.rename(s / "dd", s / "ee")
    r.see("creat dd", lambda: os.close(os.open(m / "dd", os.O_WRONLY | os.O_CREAT, 0o644)), behind=True)
    r.see("dd is a file", lambda: shape(os.stat(m / "dd")))
    r.see("creat dd/n", lambda: os.open(m / "dd" / "n", os.O_WRONLY | os.O_CREAT, 0o644))
    r.see("ee", lambda: sorted(os.listdir(m / "ee")), behind=True)
    r.see("S", lambda: sorted(os.listdir(s)))


def directory_renamed_through_the_mount_then_changed_in_source(r: Run) -> None:
    """A change in S inside a directory renamed through the mount just before."""
    m, s = r.m, r.s
    (m / "d1").mkdir()
    (m / "d1" / "x").write_bytes(b"x")
    assert os.listdir(m / "d1") == ["x"]
    os.stat(m / "d1" / "x")
    os.rename(m / "d1", m / "d2")
    os.chmod(s / "d2" / "x", 0o600)
    (s / "d2" / "y").write_bytes(b"y")
    r.see("mode", lambda: stat.S_IMODE(os.stat(m / "d2" / "x").st_mode), behind=True)
    r.see("ls", lambda: sorted(os.listdir(m / "d2")), behind=True)
    os.unlink(s / "d2" / "x")
    r.see("unlinked", lambda: os.stat(m / "d2" / "x"), behind=True)


def directory_renamed_in_source_then_changed_in_source(r: Run) -> None:
    """Changes in S inside a directory renamed in S, while a process keeps it open (the kernel keeps its node)."""
    m, s = r.m, r.s
    (m / "a").mkdir()
    (m / "a" / "x").write_bytes(b"x")
    dfd = os.open(m / "a", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.stat(m / "a" / "x")
        os.rename(s / "a", s / "b")
        r.see("the new name", lambda: sorted(os.listdir(m / "b")), behind=True)
        os.stat(m / "b" / "x")
        os.chmod(s / "b" / "x", 0o600)
        r.see("mode", lambda: stat.S_IMODE(os.stat(m / "b" / "x").st_mode), behind=True)
        (s / "b" / "x").write_bytes(b"longer")
        r.see("size", lambda: os.stat(m / "b" / "x").st_size, behind=True)
    finally:
        os.close(dfd)


def strict_rewrite_keeping_size_and_mtime(r: Run) -> None:
    """`cp -p` over a file open through the mount: same size, same mtime, new bytes. Reads through the open fd
    see the new bytes."""
    m, s = r.m, r.s
    (m / "f").write_bytes(b"old bytes!")
    fd = os.open(m / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 0) == b"old bytes!"
        (s / "new").write_bytes(b"NEW BYTES!")
        st = os.stat(s / "f")
        os.utime(s / "new", ns=(st.st_atime_ns, st.st_mtime_ns))
        subprocess.run(["cp", "-p", str(s / "new"), str(s / "f")], check=True)
        assert os.stat(s / "f").st_mtime_ns == st.st_mtime_ns and os.stat(s / "f").st_size == st.st_size
        r.see("pread", lambda: os.pread(fd, 100, 0), behind=True)
        r.see("read by name", lambda: (m / "f").read_bytes(), behind=True)
    finally:
        os.close(fd)


SCENARIOS: dict[str, Scenario] = {f.__name__: f for f in (
    fd_ops_after_source_rename, cwd_in_a_tree_renamed_in_source, hard_link_in_source_then_write_by_the_new_name,
    append_after_another_name_grew_the_file, append_after_source_grew_the_file, truncate_in_source_then_pread,
    source_writer_keeping_the_file_open, capabilities_set_in_source, create_of_a_name_made_in_source_since,
    file_replaced_by_directory_in_source,
    create_where_a_directory_was_renamed_away, directory_renamed_through_the_mount_then_changed_in_source,
    directory_renamed_in_source_then_changed_in_source, strict_rewrite_keeping_size_and_mtime)}


# What no watcher can be told (-o nowatch): the kernel asks the daemon nothing that would reveal it.
WITHOUT_WATCHER = {
    "append_after_source_grew_the_file": "the kernel places an O_APPEND write at its cached size and asks for no "
    "attributes first (no writeback cache); only the watcher can give it the new size (notify_store)",
    "strict_rewrite_keeping_size_and_mtime": "the kernel keeps an open file's pages while size and mtime are "
    "unchanged (auto_inval_data); only the watcher's invalidation drops them",
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_native_behind_the_back(request: pytest.FixtureRequest, workdir: Path, scenario: str, mode: str) -> None:
    # (with kernel passthrough the kernel reads and writes SOURCE's file itself: nothing of it is cached)
    if not PASSTHROUGH and mode == "nowatch" and scenario in WITHOUT_WATCHER:
        request.applymarker(pytest.mark.xfail(strict=True, raises=AssertionError,
                                              reason=f"-o nowatch: {WITHOUT_WATCHER[scenario]} (docs/posix.md)"))
    run_both(workdir, mode, SCENARIOS[scenario])


# --- hard links: one kernel inode ---------------------------------------------------------------------------------

@pytest.mark.parametrize("made", ["through the mount", "in SOURCE"])
def test_hard_links_are_one_kernel_inode(workdir: Path, made: str) -> None:
    """Both names give the same st_ino and the same kernel inode: an inotify watch on one name sees writes
    through the other, as natively."""
    def scenario(r: Run) -> None:
        (r.m / "f").write_bytes(b"one")
        where = r.s if made == "in SOURCE" else r.m
        os.link(where / "f", where / "g")
        r.see("same st_ino", lambda: os.stat(r.m / "f").st_ino == os.stat(r.m / "g").st_ino, behind=True)
        r.see("link counts", lambda: (os.stat(r.m / "f").st_nlink, os.stat(r.m / "g").st_nlink), behind=True)
        with INotify() as ino:
            ino.add_watch(str(r.m / "f"), iflags.MODIFY | iflags.CLOSE_WRITE | iflags.ATTRIB)
            with open(r.m / "g", "ab") as g:
                g.write(b" two")
            os.chmod(r.m / "g", 0o640)
            r.see("events on the other name", lambda: sorted({str(f) for e in ino.read(timeout=2000)
                                                              for f in iflags.from_mask(e.mask)}))
        r.see("bytes", lambda: (r.m / "f").read_bytes())
    run_both(workdir, "fanotify", scenario)


# --- O_TMPFILE ---------------------------------------------------------------------------------------------------

def _libfuse_version() -> tuple[int, int]:
    from fuse_passthrough.lowlevel.binding import VERSION
    return VERSION


def test_o_tmpfile(workdir: Path) -> None:
    """O_TMPFILE through the mount: an unnamed file, written, then given a name with linkat, as natively."""
    if _libfuse_version() < (3, 17):
        pytest.skip("FUSE's tmpfile operation needs libfuse >= 3.17 (this one is "
                    f"{'.'.join(map(str, _libfuse_version()))}): the kernel answers EOPNOTSUPP")

    def scenario(r: Run) -> None:
        fd = os.open(r.m, os.O_TMPFILE | os.O_RDWR, 0o640)
        try:
            r.see("write", lambda: os.write(fd, b"unnamed"))
            r.see("fstat", lambda: shape(os.fstat(fd)))
            r.see("listing", lambda: sorted(os.listdir(r.m)))
            r.see("pread", lambda: os.pread(fd, 100, 0))
            r.see("linkat", lambda: os.link(f"/proc/self/fd/{fd}", r.m / "named", follow_symlinks=True))
            r.see("named", lambda: (r.m / "named").read_bytes())
            r.see("fstat after linkat", lambda: shape(os.fstat(fd)))
            r.see("in S", lambda: (r.s / "named").read_bytes())
            r.see("same file", lambda: os.fstat(fd).st_ino == os.stat(r.m / "named").st_ino)
        finally:
            os.close(fd)
    run_both(workdir, "fanotify", scenario)


# --- mmap stores and mtime -----------------------------------------------------------------------------------------

def _mmap_store(r: Run, sync: bool) -> None:
    (r.m / "f").write_bytes(b"\0" * 4096)
    before = os.stat(r.m / "f").st_mtime_ns
    time.sleep(0.02)  # a coarse clock must move
    fd = os.open(r.m / "f", os.O_RDWR)
    try:
        with mmap.mmap(fd, 4096) as mm:
            mm[0:5] = b"store"
            if sync:
                mm.flush()
                r.see("mtime moved after msync", lambda: os.stat(r.m / "f").st_mtime_ns > before)
                r.see("S has the bytes", lambda: (r.s / "f").read_bytes()[:5])
            else:
                r.see("mtime moved after the store", lambda: os.stat(r.m / "f").st_mtime_ns > before)
    finally:
        os.close(fd)


def test_mmap_store_then_msync_updates_mtime(workdir: Path) -> None:
    run_both(workdir, "fanotify", lambda r: _mmap_store(r, sync=True))


def _mmap_store_after_close(r: Run) -> None:
    """Stores through a mapping whose descriptor is closed are in S once it is unmapped (FUSE writes the dirty
    pages back then), whether or not the close sent a FLUSH (FOPEN_NOFLUSH on a filesystem whose close() does
    nothing)."""
    (r.m / "f").write_bytes(b"\0" * 8192)
    fd = os.open(r.m / "f", os.O_RDWR)
    mm = mmap.mmap(fd, 8192)
    mm[0:6] = b"before"
    os.close(fd)
    mm[4096:4101] = b"after"
    r.see("M while mapped", lambda: (r.m / "f").read_bytes()[:6] + (r.m / "f").read_bytes()[4096:4101])
    mm.close()
    r.see("S after munmap", lambda: (r.s / "f").read_bytes()[:6] + (r.s / "f").read_bytes()[4096:4101])


@pytest.mark.parametrize("extra", [[], ["-o", "flush"]])
def test_mmap_stores_are_in_source_once_unmapped(workdir: Path, extra: list[str]) -> None:
    run_both(workdir, "fanotify", _mmap_store_after_close, extra)


@pytest.mark.xfail(not PASSTHROUGH, strict=True, raises=AssertionError,
                   reason="FUSE without a writeback cache marks its inodes S_NOCMTIME and has no write-fault "
                          "request: the daemon learns of a store through mmap only when the page is written back "
                          "(msync, munmap+close, or writeback), and only then does SOURCE's mtime move "
                          "(docs/posix.md)")
def test_mmap_store_updates_mtime_before_msync(workdir: Path) -> None:
    """Natively the first store into a clean page updates mtime (the write fault); with kernel passthrough the
    mapping is the backing file's, so it does through the mount too."""
    run_both(workdir, "fanotify", lambda r: _mmap_store(r, sync=False))


# --- memory: the node table holds what the kernel holds ------------------------------------------------------------

def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def many_files(workdir: Path) -> Iterator[tuple[Path, int]]:
    src = workdir / "src"
    n, per_dir = 200_000, 10_000
    for d in range(n // per_dir):
        sub = src / f"d{d:02d}"
        sub.mkdir(parents=True)
        subprocess.run(["bash", "-c", f"touch f{{00000..{per_dir - 1:05d}}}"], cwd=sub, check=True)
    yield src, n


def _drop_kernel_caches(pid: int, base: int, deadline_s: float = 60) -> int:
    """echo 2 > drop_caches (dentries and inodes, the whole machine's) until the daemon's nodes are given back;
    the nodes left."""
    deadline = time.monotonic() + deadline_s
    while True:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
        left = _fds(pid) - base
        if left < 100 or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _walk(directory: Path, pin: list[int] | None = None) -> int:
    """stat every entry; with `pin`, also keep an O_PATH fd of each (the kernel cannot evict a pinned inode)."""
    n = 0
    for e in os.scandir(directory):
        e.stat(follow_symlinks=False)
        if pin is not None:
            pin.append(os.open(e.path, os.O_PATH | os.O_NOFOLLOW))
        n += 1
    return n


def test_node_table_shrinks_to_what_the_kernel_holds(workdir: Path, many_files: tuple[Path, int]) -> None:
    """Walk 200,000 files through the mount, 10,000 at a time (each one's inode pinned by an O_PATH fd of the
    test's until the batch is done, so that the kernel holds them all whatever else reclaims memory), each time
    dropping the kernel's dentries and inodes (`echo 2 > /proc/sys/vm/drop_caches`): after each walk the daemon
    holds a node (an O_PATH fd, counted in /proc/PID/fd) per file the kernel holds, after each drop FORGET has
    given them back (fewer than 100 left), and its RSS does not grow with the files ever looked up. Batches
    because the daemon cannot hold more nodes than its fd limit (test_walk_of_200000_files_held_by_the_kernel)."""
    src, n = many_files
    with Mount(src, workdir / "mnt", "-o", "timeout=30", trace=False) as m:
        assert m.proc is not None
        pid = m.proc.pid
        base = _fds(pid)
        seen, rss = 0, []
        for d in sorted(os.listdir(m.mnt)):
            pinned: list[int] = []
            try:
                count = _walk(m.mnt / d, pinned)
                held = _fds(pid) - base
            finally:
                for fd in pinned:
                    os.close(fd)
            seen += count
            assert held >= count, f"the daemon holds {held} nodes for {count} files the kernel holds"
            left = _drop_kernel_caches(pid, base)
            assert left < 100, f"{left} nodes left of {held} after the kernel dropped its dentries and inodes"
            rss.append(_rss_kb(pid))
        assert seen == n
        print(f"RSS after each 10,000 files and a drop (kB): {rss}")
        # What the first batches allocated is reused: no growth with the number of files ever looked up, but for
        # the records of forgotten nodes kept for file handles, capped at FORGOTTEN_MAX (~135 bytes each, measured
        # by test_native_behaviour; 256 allowed here for the dict's own growth).
        records_kb = FORGOTTEN_MAX * 256 // 1024
        assert rss[-1] <= rss[1] + 8 * 1024 + records_kb, rss
        assert os.stat(m.mnt / "d07" / "f01234").st_size == 0  # and the mount still works
        assert m.unmount() == 0, m.stderr()


def _fd_table_size(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("FDSize:"))


def test_fd_table_is_sized_for_the_nodes_at_start(workdir: Path) -> None:
    """Every node is an open fd, and the kernel grows a multi-threaded process's fd table only after an RCU grace
    period that stalls the daemon's requests (~12 ms each time the nodes cross a power of two): the daemon sizes
    it once at start (inode_mount.FD_TABLE_RESERVE, within its fd limit), and it does not grow as nodes come."""
    import resource

    from fuse_passthrough.inode_mount import FD_TABLE_RESERVE
    with Mount(workdir / "src", workdir / "mnt", trace=False) as m:
        assert m.proc is not None
        pid = m.proc.pid
        limit = resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]
        at_start = _fd_table_size(pid)
        assert at_start >= min(limit, FD_TABLE_RESERVE), (at_start, limit)
        (m.mnt / "d").mkdir()
        for i in range(600):
            (m.mnt / "d" / f"f{i}").write_bytes(b"x")
        assert _fds(pid) > 600  # the nodes are open fds
        assert _fd_table_size(pid) == at_start
        assert m.unmount() == 0, m.stderr()


def test_walk_of_200000_files_held_by_the_kernel(workdir: Path, many_files: tuple[Path, int]) -> None:
    """The kernel could cache all 200,000 (plenty of memory), more than the daemon's fd limit allows nodes where
    that limit is below 200,000 (here): the daemon serves them all, asking the kernel to forget the oldest
    (NodeBudget) instead of failing lookups with EMFILE, never holding more than the limit; then gives them back."""
    import resource
    src, n = many_files
    with Mount(src, workdir / "mnt", "-o", "timeout=30", trace=False) as m:
        assert m.proc is not None
        pid = m.proc.pid
        base = _fds(pid)
        limit = resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]
        try:
            held = []
            for d in sorted(os.listdir(m.mnt)):
                assert _walk(m.mnt / d) == n // len(os.listdir(m.mnt))
                held.append(_fds(pid))
            assert max(held) <= limit, (held, limit)
            assert _drop_kernel_caches(pid, base) < 100
        finally:
            _drop_kernel_caches(pid, base, 5)
            assert m.unmount() == 0, m.stderr()


# --- what the watcher asks the kernel for ------------------------------------------------------------------------

_FAN = {"MODIFY": 0x2, "ATTRIB": 0x4, "CLOSE_WRITE": 0x8, "MOVED_FROM": 0x40, "MOVED_TO": 0x80, "CREATE": 0x100,
        "DELETE": 0x200, "MOVE_SELF": 0x800, "EVENT_ON_CHILD": 0x08000000, "ONDIR": 0x40000000}


def _fanotify_marks(pid: int) -> tuple[list[int], list[int]]:
    """(the masks of the daemon's directory marks, the masks of its filesystem marks), from /proc's fdinfo."""
    inodes, filesystems = [], []
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            lines = open(f"/proc/{pid}/fdinfo/{fd}").read().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("fanotify ") and " mask:" in line:
                mask = int(line.split(" mask:")[1].split()[0], 16)
                (inodes if " ino:" in line else filesystems).append(mask)
    return inodes, filesystems


def _mask(*names: str) -> int:
    return sum(_FAN[n] for n in names)


@pytest.mark.skipif(os.geteuid() != 0, reason="fanotify needs root")
def test_directories_on_a_marked_filesystem_are_watched_for_names_only(workdir: Path) -> None:
    """By default (fanotify, a filesystem mark on SOURCE's local filesystem) every change of an object, whatever
    name it goes through, comes from the filesystem mark: the directories' marks ask for their names only, so that
    a write, a close after writing or an attribute change (the daemon's own included) makes one event, not two.
    Where the timeout is given (no filesystem mark), the directories' marks report their children's changes too.
    The behaviour itself is test_native_behind_the_back's, in each mode."""
    names = _mask("CREATE", "DELETE", "MOVED_FROM", "MOVED_TO", "ONDIR")
    objects = _mask("MODIFY", "ATTRIB", "MOVE_SELF", "CLOSE_WRITE", "ONDIR")
    children = _mask("ATTRIB", "CLOSE_WRITE", "MODIFY", "EVENT_ON_CHILD")
    (workdir / "src" / "a" / "b").mkdir(parents=True)
    if not local_filesystem(str(workdir / "src")):
        pytest.skip("the test's directory is not on a local filesystem: no filesystem mark there")
    for args, marked in (([], True), (["-o", "timeout=30"], False)):
        with Mount(workdir / "src", workdir / "mnt", *args, trace=False) as m:
            assert m.proc is not None
            os.stat(m.mnt / "a" / "b")  # the kernel learns both directories: each is marked
            inodes, filesystems = _fanotify_marks(m.proc.pid)
            assert len(inodes) == 3, inodes  # the root, a, a/b
            if marked:
                assert filesystems == [objects], [hex(x) for x in filesystems]
                assert all(x == names for x in inodes), [hex(x) for x in inodes]
            else:
                assert filesystems == []
                assert all(x == names | children for x in inodes), [hex(x) for x in inodes]
            assert m.unmount() == 0, m.stderr()
