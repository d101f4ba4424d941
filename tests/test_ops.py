"""Every operation through a real mount, compared with the same thing done on a plain directory.

`env.both(fn)` runs `fn(base)` on a native directory and on the mount and requires equal outcomes (results
or errno names); `assert_same_stat` requires the mount's stat to equal the source object's, st_ino and ns
times included.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import select
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import Mount, close_reports_nothing, run_as
from posixcmp import (
    AT_SYMLINK_NOFOLLOW,
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    RENAME_WHITEOUT,
    SHAPE_FIELDS,
    UTIME_NOW,
    UTIME_OMIT,
    assert_same_stat,
    fallocate,
    getxattr_sized,
    listxattr_sized,
    outcome,
    renameat2,
    stat_fields,
    tree,
    utimensat,
)

PY = "/usr/bin/python3"  # readable by every uid (the venv's interpreter may not be)


class Env:
    def __init__(self, m: Mount, nat: Path) -> None:
        self.m = m
        self.mnt = m.mnt
        self.src = m.src
        self.nat = nat

    def both(self, fn: Callable[[Path], Any]) -> Any:
        """Run fn on the native dir, then through the mount; the outcomes must be equal. Returns it."""
        a = outcome(fn, self.nat)
        b = outcome(fn, self.mnt)
        assert a == b, f"native {a!r} != mount {b!r}"
        return b

    def same_tree(self) -> None:
        assert tree(self.nat) == tree(self.mnt)
        assert tree(self.src) == tree(self.mnt)

    def same_shape(self, rel: str | bytes) -> None:
        n = os.lstat(os.path.join(os.fsencode(self.nat), os.fsencode(rel)))
        m = os.lstat(os.path.join(os.fsencode(self.mnt), os.fsencode(rel)))
        assert stat_fields(n, SHAPE_FIELDS) == stat_fields(m, SHAPE_FIELDS)
        assert_same_stat(os.path.join(os.fsencode(self.mnt), os.fsencode(rel)),
                         os.path.join(os.fsencode(self.src), os.fsencode(rel)))


@pytest.fixture
def env(mount: Mount, workdir: Path) -> Iterator[Env]:
    nat = workdir / "native"
    nat.mkdir()
    os.chmod(nat, 0o777)
    old = os.umask(0o022)
    try:
        yield Env(mount, nat)
    finally:
        os.umask(old)


def write(p: Path | bytes, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# -- attributes and names -----------------------------------------------------------------------------------
def test_getattr_every_field_equals_source(env: Env) -> None:
    write(env.mnt / "f", b"x" * 5000)
    os.mkdir(env.mnt / "d")
    os.symlink("f", env.mnt / "l")
    os.mkfifo(env.mnt / "p")
    for name in ("", "f", "d", "l", "p"):
        assert_same_stat(env.mnt / name, env.src / name)
    st = os.stat(env.mnt / "f")
    assert st.st_ino == os.stat(env.src / "f").st_ino
    assert st.st_blksize > 0


def test_getattr_via_fd_equals_source(env: Env) -> None:
    fd = os.open(env.mnt / "f", os.O_RDWR | os.O_CREAT, 0o640)
    try:
        os.write(fd, b"abc")
        assert stat_fields(os.fstat(fd)) == stat_fields(os.stat(env.src / "f"))
    finally:
        os.close(fd)


@pytest.mark.parametrize("target", ["f", "../x/y", "/absolute/elsewhere", "dangling", "a" * 1000, "sp ace\nnl"])
def test_readlink_target_unchanged(env: Env, target: str) -> None:
    env.both(lambda b: os.symlink(target, b / "l"))
    assert os.readlink(env.mnt / "l") == target
    assert os.readlink(env.src / "l") == target
    env.same_shape("l")


def test_readlink_errors(env: Env) -> None:
    write(env.mnt / "f", b"")
    write(env.nat / "f", b"")
    env.both(lambda b: os.readlink(b / "f"))       # EINVAL: not a symlink
    env.both(lambda b: os.readlink(b / "missing"))  # ENOENT


@pytest.mark.parametrize("kind,mode,dev", [
    ("fifo", stat.S_IFIFO | 0o640, 0),
    ("socket", stat.S_IFSOCK | 0o600, 0),
    ("char", stat.S_IFCHR | 0o620, os.makedev(1, 3)),
    ("block", stat.S_IFBLK | 0o660, os.makedev(7, 200)),
    ("regular", stat.S_IFREG | 0o604, 0),
])
def test_mknod(env: Env, kind: str, mode: int, dev: int) -> None:
    env.both(lambda b: os.mknod(b / kind, mode, dev))
    env.same_shape(kind)
    st = os.lstat(env.mnt / kind)
    assert st.st_mode == mode & ~0o022 and st.st_rdev == dev
    env.both(lambda b: os.mknod(b / kind, mode, dev))  # EEXIST


def test_unix_socket_bind(env: Env) -> None:
    for base in (env.nat, env.mnt):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(base / "sock"))
        s.close()
    env.same_shape("sock")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000, 0o027])
def test_mkdir_mode_under_umask(env: Env, umask: int) -> None:
    os.umask(umask)
    for mode in (0o777, 0o755, 0o1777, 0o2750, 0o700):
        env.both(lambda b, mode=mode: os.mkdir(b / f"d{mode:o}", mode))
        env.same_shape(f"d{mode:o}")
    env.both(lambda b: os.mkdir(b / "d777"))  # EEXIST


def test_unlink_rmdir(env: Env) -> None:
    for b in (env.nat, env.mnt):
        os.mkdir(b / "d")
        write(b / "d" / "f", b"1")
        os.mkdir(b / "e")
    env.both(lambda b: os.rmdir(b / "d"))           # ENOTEMPTY
    env.both(lambda b: os.unlink(b / "d"))          # EISDIR
    env.both(lambda b: os.rmdir(b / "d" / "f"))     # ENOTDIR
    env.both(lambda b: os.unlink(b / "d" / "f"))
    env.both(lambda b: os.unlink(b / "d" / "f"))    # ENOENT
    env.both(lambda b: os.rmdir(b / "d"))
    env.both(lambda b: os.rmdir(b / "d"))           # ENOENT
    env.both(lambda b: os.rmdir(b / "e" / "."))     # EINVAL
    env.same_tree()


def test_symlink(env: Env) -> None:
    env.both(lambda b: os.symlink("target", b / "l"))
    env.same_shape("l")
    env.both(lambda b: os.symlink("other", b / "l"))  # EEXIST
    env.both(lambda b: os.stat(b / "l"))              # ENOENT: dangling


# -- rename ----------------------------------------------------------------------------------------------------
def _rename_setup(b: Path) -> None:
    write(b / "a", b"A")
    write(b / "b", b"BB")
    os.mkdir(b / "d")
    write(b / "d" / "c", b"CCC")
    os.mkdir(b / "e")


def test_rename_plain_and_replace(env: Env) -> None:
    for b in (env.nat, env.mnt):
        _rename_setup(b)
    ino_a = os.stat(env.src / "a").st_ino
    env.both(lambda b: os.rename(b / "a", b / "x"))
    assert os.stat(env.mnt / "x").st_ino == ino_a
    env.both(lambda b: os.rename(b / "x", b / "b"))    # replaces b
    assert os.stat(env.mnt / "b").st_ino == ino_a
    env.both(lambda b: os.rename(b / "e", b / "d"))    # ENOTEMPTY
    env.both(lambda b: os.rename(b / "b", b / "d"))    # EISDIR
    env.both(lambda b: os.rename(b / "d", b / "b"))    # ENOTDIR
    env.both(lambda b: os.rename(b / "d", b / "d" / "sub"))  # EINVAL
    env.both(lambda b: os.rename(b / "nope", b / "z"))  # ENOENT
    env.both(lambda b: os.rename(b / "d" / "c", b / "e" / "c"))
    env.same_tree()
    assert_same_stat(env.mnt / "e" / "c", env.src / "e" / "c")


def test_rename_noreplace(env: Env) -> None:
    for b in (env.nat, env.mnt):
        _rename_setup(b)
    assert env.both(lambda b: renameat2(b / "a", b / "b", RENAME_NOREPLACE)) == ("err", "EEXIST")
    assert (env.src / "b").read_bytes() == b"BB"
    env.both(lambda b: renameat2(b / "a", b / "new", RENAME_NOREPLACE))
    env.same_tree()


def test_rename_exchange(env: Env) -> None:
    for b in (env.nat, env.mnt):
        _rename_setup(b)
    ino_a, ino_d = os.stat(env.src / "a").st_ino, os.stat(env.src / "d").st_ino
    env.both(lambda b: renameat2(b / "a", b / "d", RENAME_EXCHANGE))
    assert stat.S_ISDIR(os.lstat(env.src / "a").st_mode)
    assert os.stat(env.mnt / "a").st_ino == ino_d and os.stat(env.mnt / "d").st_ino == ino_a
    assert (env.mnt / "d").read_bytes() == b"A"
    assert (env.mnt / "a" / "c").read_bytes() == b"CCC"
    assert env.both(lambda b: renameat2(b / "a", b / "missing", RENAME_EXCHANGE)) == ("err", "ENOENT")
    assert env.both(lambda b: renameat2(b / "a", b / "b", RENAME_EXCHANGE | RENAME_NOREPLACE)) == \
        ("err", "EINVAL")
    env.same_tree()


def test_rename_whiteout_reaches_source_or_einval(env: Env) -> None:
    """Flags are never dropped: RENAME_WHITEOUT either does what it does natively or fails with EINVAL."""
    for b in (env.nat, env.mnt):
        _rename_setup(b)
    native = outcome(renameat2, env.nat / "a", env.nat / "w", RENAME_WHITEOUT)
    mounted = outcome(renameat2, env.mnt / "a", env.mnt / "w", RENAME_WHITEOUT)
    if mounted == ("err", "EINVAL"):
        assert (env.src / "a").read_bytes() == b"A" and not (env.src / "w").exists()
    else:
        assert mounted == native
        assert stat_fields(os.lstat(env.nat / "a"), SHAPE_FIELDS) == stat_fields(os.lstat(env.mnt / "a"),
                                                                                   SHAPE_FIELDS)


def test_rename_unknown_flag_is_einval(env: Env) -> None:
    write(env.mnt / "a", b"")
    assert outcome(renameat2, env.mnt / "a", env.mnt / "b", 1 << 10) == ("err", "EINVAL")
    assert (env.src / "a").exists() and not (env.src / "b").exists()


def test_rename_exdev(env: Env, workdir: Path) -> None:
    write(env.mnt / "f", b"x")
    other = Path("/tmp") / f"fpt-exdev-{os.getpid()}"
    try:
        assert outcome(os.rename, env.mnt / "f", other) == ("err", "EXDEV")
        assert outcome(os.rename, env.nat.parent / "native", env.mnt / "n") == ("err", "EXDEV")
        assert outcome(os.link, env.mnt / "f", other) == ("err", "EXDEV")
    finally:
        if other.exists():
            other.unlink()
    assert (env.src / "f").exists()


# -- link ------------------------------------------------------------------------------------------------------
def test_link_counts_and_inode(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"data")
    env.both(lambda b: os.link(b / "f", b / "g"))
    st = assert_same_stat(env.mnt / "f", env.src / "f")
    assert st.st_nlink == 2
    assert os.stat(env.mnt / "g").st_ino == os.stat(env.mnt / "f").st_ino == os.stat(env.src / "f").st_ino
    env.both(lambda b: os.link(b / "f", b / "g"))        # EEXIST
    env.both(lambda b: os.link(b / "nope", b / "h"))     # ENOENT
    os.mkdir(env.nat / "d")
    os.mkdir(env.mnt / "d")
    env.both(lambda b: os.link(b / "d", b / "dl"))       # EPERM: directories
    env.both(lambda b: os.unlink(b / "g"))
    assert os.stat(env.mnt / "f").st_nlink == 1
    env.same_tree()


def test_link_to_symlink_is_not_followed(env: Env) -> None:
    for b in (env.nat, env.mnt):
        os.symlink("target", b / "s")
    env.both(lambda b: os.link(b / "s", b / "s2", follow_symlinks=False))
    assert os.readlink(env.mnt / "s2") == "target"
    env.same_shape("s2")


# -- permissions and ownership ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [0o000, 0o644, 0o4755, 0o2755, 0o1777, 0o7777, 0o600])
def test_chmod(env: Env, mode: int) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"")
        os.mkdir(b / "d")
    env.both(lambda b: os.chmod(b / "f", mode))
    env.both(lambda b: os.chmod(b / "d", mode))
    env.same_shape("f")
    env.same_shape("d")
    assert stat.S_IMODE(os.stat(env.src / "f").st_mode) == mode


def test_fchmod(env: Env) -> None:
    fd = os.open(env.mnt / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o4711)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o4711
    finally:
        os.close(fd)
    assert stat.S_IMODE(os.stat(env.src / "f").st_mode) == 0o4711


def test_chown_and_lchown(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"")
        os.symlink("f", b / "l")
    env.both(lambda b: os.chown(b / "f", 1234, 5678))
    env.same_shape("f")
    env.both(lambda b: os.chown(b / "f", -1, 42))          # uid -1: unchanged
    assert (os.stat(env.src / "f").st_uid, os.stat(env.src / "f").st_gid) == (1234, 42)
    env.both(lambda b: os.chown(b / "f", 77, -1))          # gid -1: unchanged
    assert (os.stat(env.src / "f").st_uid, os.stat(env.src / "f").st_gid) == (77, 42)
    env.both(lambda b: os.chown(b / "f", -1, -1))
    env.both(lambda b: os.lchown(b / "l", 999, 888))       # the link, not its target
    assert (os.lstat(env.src / "l").st_uid, os.lstat(env.src / "l").st_gid) == (999, 888)
    assert os.stat(env.src / "f").st_uid == 77
    env.same_shape("f")
    env.same_shape("l")


def test_chown_clears_setuid_like_native(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"")
        os.chmod(b / "f", 0o6755)
    env.both(lambda b: os.chown(b / "f", 1000, 1000))
    env.same_shape("f")


# -- truncate, open, read, write --------------------------------------------------------------------------------
def test_truncate_and_ftruncate(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", bytes(range(256)) * 40)
    for size in (10_000, 5, 0, 1 << 20, 3):
        env.both(lambda b, size=size: os.truncate(b / "f", size))
        env.same_shape("f")
        assert (env.mnt / "f").read_bytes() == (env.nat / "f").read_bytes()
    for b in (env.nat, env.mnt):
        fd = os.open(b / "f", os.O_RDWR)
        os.ftruncate(fd, 7777)
        os.close(fd)
    env.same_shape("f")
    os.mkdir(env.nat / "d")
    os.mkdir(env.mnt / "d")
    env.both(lambda b: os.truncate(b / "d", 0))        # EISDIR
    env.both(lambda b: os.truncate(b / "f", -1))       # EINVAL
    env.both(lambda b: os.truncate(b / "missing", 0))  # ENOENT
    fd = os.open(env.mnt / "f", os.O_RDONLY)
    try:
        assert outcome(os.ftruncate, fd, 0) == ("err", "EINVAL")
    finally:
        os.close(fd)


def test_open_access_modes(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"0123456789")

    def try_mode(b: Path, flags: int) -> tuple[Any, Any]:
        fd = os.open(b / "f", flags)
        try:
            return outcome(os.read, fd, 4), outcome(os.write, fd, b"ab")
        finally:
            os.close(fd)

    for flags in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR):
        env.both(lambda b, flags=flags: try_mode(b, flags))
    env.same_tree()


def test_open_append(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"start")

    def append(b: Path) -> bytes:
        fd = os.open(b / "f", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"-one")
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, b"-two")
            os.pwrite(fd, b"-three", 0)  # Linux: pwrite on O_APPEND appends
        finally:
            os.close(fd)
        return (b / "f").read_bytes()

    assert env.both(append) == ("ok", b"start-one-two-three")
    env.same_shape("f")


def test_open_trunc_excl_creat(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"content")

    def op(b: Path, name: str, flags: int, mode: int = 0o666) -> int:
        os.close(os.open(b / name, flags, mode))
        return os.lstat(b / name).st_size

    env.both(lambda b: op(b, "f", os.O_RDONLY | os.O_TRUNC))
    env.same_shape("f")
    env.both(lambda b: op(b, "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL))  # EEXIST
    env.both(lambda b: op(b, "g", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o751))
    env.same_shape("g")
    env.both(lambda b: op(b, "missing", os.O_RDONLY))                      # ENOENT
    env.both(lambda b: op(b, "f", os.O_RDONLY | os.O_DIRECTORY))            # ENOTDIR
    env.both(lambda b: op(b, "f", os.O_WRONLY | os.O_TRUNC))
    env.same_tree()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000, 0o002])
@pytest.mark.parametrize("mode", [0o666, 0o777, 0o640, 0o4755, 0o2775, 0o1644])
def test_create_mode_under_umask(env: Env, umask: int, mode: int) -> None:
    os.umask(umask)
    env.both(lambda b: os.close(os.open(b / "f", os.O_CREAT | os.O_WRONLY, mode)))
    env.same_shape("f")
    assert stat.S_IMODE(os.stat(env.src / "f").st_mode) == mode & ~umask


def test_open_nofollow_and_eloop(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"x")
        os.symlink("f", b / "l")
        os.symlink("loop2", b / "loop1")
        os.symlink("loop1", b / "loop2")
    env.both(lambda b: os.open(b / "l", os.O_RDONLY | os.O_NOFOLLOW))  # ELOOP
    env.both(lambda b: os.stat(b / "loop1"))                           # ELOOP
    env.both(lambda b: os.open(b / "loop1", os.O_RDONLY | os.O_CREAT, 0o644))  # ELOOP
    env.both(lambda b: os.lstat(b / "loop1").st_size)
    fd = os.open(env.mnt / "l", os.O_RDONLY)
    try:
        assert os.read(fd, 10) == b"x"
    finally:
        os.close(fd)


def test_open_o_path_on_symlink(env: Env) -> None:
    for b in (env.nat, env.mnt):
        os.symlink("target", b / "l")

    def op(b: Path) -> tuple[int, int]:
        fd = os.open(b / "l", os.O_PATH | os.O_NOFOLLOW)
        try:
            return stat.S_IFMT(os.fstat(fd).st_mode), os.fstat(fd).st_size
        finally:
            os.close(fd)

    assert env.both(op) == ("ok", (stat.S_IFLNK, 6))


def test_o_direct(env: Env) -> None:
    """O_DIRECT opens and aligned I/O reaches the source at once (no page cache in between)."""
    block = 4096
    buf = mmap.mmap(-1, 2 * block)
    buf.write(b"D" * block + b"E" * block)
    for b in (env.nat, env.mnt):
        fd = os.open(b / "f", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
        try:
            assert os.fstat(fd).st_size == 0
            assert os.pwritev(fd, [buf], 0) == 2 * block
            assert (env.src / "f" if b == env.mnt else b / "f").read_bytes() == b"D" * block + b"E" * block
            rbuf = mmap.mmap(-1, 2 * block)
            assert os.preadv(fd, [rbuf], 0) == 2 * block
            assert rbuf[:] == b"D" * block + b"E" * block
            assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
        finally:
            os.close(fd)
    env.same_shape("f")


def test_read_write_offsets_and_holes(env: Env) -> None:
    data = os.urandom(300_000)

    def rw(b: Path) -> list[Any]:
        fd = os.open(b / "f", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            out: list[Any] = [os.pwrite(fd, data, 0), os.pwrite(fd, b"tail", 1_000_000),
                              os.pwrite(fd, b"mid", 131_071)]
            out.append(os.pread(fd, 10, 999_998))
            out.append(os.pread(fd, 100, 2_000_000))
            out.append(len(os.pread(fd, 2_000_000, 0)))
            out.append(os.pread(fd, 6, 131_070))
            return out
        finally:
            os.close(fd)

    env.both(rw)
    env.same_shape("f")
    assert (env.mnt / "f").read_bytes() == (env.nat / "f").read_bytes() == (env.src / "f").read_bytes()


def test_write_is_visible_in_source_before_close(env: Env) -> None:
    fd = os.open(env.mnt / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"hello")
        assert (env.src / "f").read_bytes() == b"hello"
        assert_same_stat(env.mnt / "f", env.src / "f")
    finally:
        os.close(fd)


def test_statfs(env: Env) -> None:
    m, s = os.statvfs(env.mnt), os.statvfs(env.src)
    for f in ("f_bsize", "f_frsize", "f_blocks", "f_files", "f_namemax"):
        assert getattr(m, f) == getattr(s, f), f
    assert abs(m.f_bfree - s.f_bfree) < s.f_blocks // 100 + 1000
    write(env.mnt / "f", b"")
    assert os.statvfs(env.mnt / "f").f_blocks == s.f_blocks


# -- flush, fsync, fsyncdir -------------------------------------------------------------------------------------
def test_flush_fsync_fdatasync_fsyncdir(env: Env) -> None:
    fd = os.open(env.mnt / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"x")
    os.close(fd)                                  # flush, not fsync
    for _ in range(3):
        os.close(os.open(env.mnt / "f", os.O_RDONLY))  # no flush: opened read-only, with FOPEN_NOFLUSH
    fd = os.open(env.mnt / "g", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"y")
    os.fsync(fd)
    os.fdatasync(fd)
    os.close(fd)
    d = os.open(env.mnt, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(d)
    os.close(d)
    assert env.m.unmount() == 0
    events = env.m.events()
    by_path: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_path.setdefault(e["path"], []).append(e)
    f_ops = [e["op"] for e in by_path["/f"]]
    # one close of a writer: a flush, unless SOURCE's close() has nothing to report (FOPEN_NOFLUSH)
    assert f_ops.count("flush") == (0 if close_reports_nothing(env.m.src) else 1)
    assert f_ops.count("open") == 3 and "fsync" not in f_ops
    g_syncs = [e["args"]["datasync"] for e in by_path["/g"] if e["op"] == "fsync"]
    assert g_syncs == [0, 1]
    assert any(e["op"] == "fsyncdir" and e["errno"] is None for e in by_path["/"])


# -- readdir ----------------------------------------------------------------------------------------------------
def _getdents(path: Path | bytes | int) -> dict[bytes, tuple[int, int]]:
    """name -> (d_ino, d_type) straight from getdents64, "." and ".." included (path: a path or an fd)."""
    sys_getdents64 = {"x86_64": 217, "aarch64": 61}[os.uname().machine]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = os.dup(path) if isinstance(path, int) else os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    out: dict[bytes, tuple[int, int]] = {}
    buf = ctypes.create_string_buffer(65536)
    try:
        while True:
            n = libc.syscall(ctypes.c_long(sys_getdents64), ctypes.c_int(fd), buf, ctypes.c_uint(len(buf)))
            if n < 0:
                raise OSError(ctypes.get_errno(), "getdents64")
            if n == 0:
                return out
            raw, pos = buf.raw[:n], 0
            while pos < n:
                ino = int.from_bytes(raw[pos:pos + 8], "little")
                reclen = int.from_bytes(raw[pos + 16:pos + 18], "little")
                dtype = raw[pos + 18]
                name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
                out[name] = (ino, dtype)
                pos += reclen
    finally:
        os.close(fd)


def test_readdir_names_inodes_types(env: Env) -> None:
    os.mkdir(env.mnt / "d")
    write(env.mnt / "d" / "f", b"")
    os.mkdir(env.mnt / "d" / "sub")
    os.symlink("x", env.mnt / "d" / "l")
    os.mkfifo(env.mnt / "d" / "p")
    os.mknod(env.mnt / "d" / "c", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    for i in range(300):
        write(env.mnt / "d" / f"many-{i:03d}", b"")
    m = _getdents(env.mnt / "d")
    s = _getdents(env.src / "d")
    assert m == s
    assert all(ino != 0 for ino, _ in m.values())
    assert len(m) == 300 + 5 + 2
    for name, (ino, _) in m.items():
        assert ino == os.lstat(os.path.join(os.fsencode(env.mnt / "d"), name)).st_ino
    assert sorted(os.listdir(env.mnt / "d")) == sorted(os.listdir(env.src / "d"))


def test_readdir_of_removed_open_directory(env: Env) -> None:
    def op(b: Path) -> list[Any]:
        os.mkdir(b / "d")
        fd = os.open(b / "d", os.O_RDONLY | os.O_DIRECTORY)
        try:
            res: list[Any] = [sorted(_getdents(fd))]
            os.rmdir(b / "d")
            os.lseek(fd, 0, os.SEEK_SET)
            # A removed directory cannot be listed: getdents fails with ENOENT (the VFS checks IS_DEADDIR
            # before asking the filesystem), natively and so through the mount.
            res.append(outcome(_getdents, fd))
            res.append(os.fstat(fd).st_nlink)
            return res
        finally:
            os.close(fd)

    assert env.both(op) == ("ok", [[b".", b".."], ("err", "ENOENT"), 0])


def test_readdir_empty(env: Env) -> None:
    os.mkdir(env.mnt / "d")
    assert set(_getdents(env.mnt / "d")) == {b".", b".."}
    assert _getdents(env.mnt / "d")[b"."][0] == os.stat(env.src / "d").st_ino
    env.both(lambda b: os.listdir(b / "missing"))    # ENOENT
    write(env.nat / "f", b"")
    write(env.mnt / "f", b"")
    env.both(lambda b: os.listdir(b / "f"))          # ENOTDIR


# -- access ---------------------------------------------------------------------------------------------------
def test_access(env: Env) -> None:
    for b in (env.nat, env.mnt):
        for mode in (0o000, 0o444, 0o222, 0o111, 0o755):
            write(b / f"f{mode:o}", b"")
            os.chmod(b / f"f{mode:o}", mode)
    script = textwrap.dedent("""
        import os, sys
        out = []
        for name in sorted(os.listdir(sys.argv[1])):
            p = os.path.join(sys.argv[1], name)
            out.append([name] + [os.access(p, m) for m in (os.F_OK, os.R_OK, os.W_OK, os.X_OK)])
        print(out)
    """)
    for uid in (0, 65534):
        res = [run_as(uid, uid, [PY, "-c", script, str(b)]) for b in (env.nat, env.mnt)]
        assert res[0].returncode == res[1].returncode == 0, res
        assert res[0].stdout == res[1].stdout


# -- extended attributes --------------------------------------------------------------------------------------
def test_xattr_semantics(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"")
    env.both(lambda b: os.setxattr(b / "f", "user.a", b"\x00\xffbinary"))
    env.both(lambda b: os.setxattr(b / "f", "user.empty", b""))
    env.both(lambda b: os.setxattr(b / "f", "user.a", b"x", os.XATTR_CREATE))       # EEXIST
    env.both(lambda b: os.setxattr(b / "f", "user.new", b"x", os.XATTR_REPLACE))    # ENODATA
    env.both(lambda b: os.setxattr(b / "f", "user.a", b"replaced", os.XATTR_REPLACE))
    env.both(lambda b: os.setxattr(b / "f", "user.c", b"created", os.XATTR_CREATE))
    assert env.both(lambda b: os.getxattr(b / "f", "user.a")) == ("ok", b"replaced")
    assert env.both(lambda b: os.getxattr(b / "f", "user.empty")) == ("ok", b"")
    env.both(lambda b: os.getxattr(b / "f", "user.missing"))                       # ENODATA
    env.both(lambda b: sorted(os.listxattr(b / "f")))
    env.both(lambda b: getxattr_sized(b / "f", "user.a", 0))                       # size query
    assert env.both(lambda b: getxattr_sized(b / "f", "user.a", 3)) == ("err", "ERANGE")
    env.both(lambda b: getxattr_sized(b / "f", "user.a", 8))
    env.both(lambda b: listxattr_sized(b / "f", 0))
    assert env.both(lambda b: listxattr_sized(b / "f", 3)) == ("err", "ERANGE")
    env.both(lambda b: os.removexattr(b / "f", "user.a"))
    env.both(lambda b: os.removexattr(b / "f", "user.a"))                          # ENODATA
    env.both(lambda b: sorted(os.listxattr(b / "f")))
    env.both(lambda b: os.setxattr(b / "f", "bogus.ns", b"x"))                     # EOPNOTSUPP
    env.both(lambda b: os.setxattr(b / "f", "user." + "n" * 300, b"x"))           # ERANGE
    env.both(lambda b: os.setxattr(b / "f", "user.big", b"v" * 70000))             # E2BIG
    assert os.getxattr(env.src / "f", "user.c") == b"created"


def test_xattr_on_dir_symlink_and_trusted_as_root(env: Env) -> None:
    for b in (env.nat, env.mnt):
        os.mkdir(b / "d")
        os.symlink("d", b / "l")
    env.both(lambda b: os.setxattr(b / "d", "user.x", b"1"))
    env.both(lambda b: os.setxattr(b / "l", "user.y", b"1", follow_symlinks=False))  # EPERM
    env.both(lambda b: os.getxattr(b / "l", "user.x"))                               # followed: "1"
    env.both(lambda b: os.getxattr(b / "l", "user.x", follow_symlinks=False))        # ENODATA
    env.both(lambda b: sorted(os.listxattr(b / "l", follow_symlinks=False)))
    env.both(lambda b: os.setxattr(b / "d", "trusted.t", b"root"))
    assert env.both(lambda b: os.getxattr(b / "d", "trusted.t")) == ("ok", b"root")
    env.both(lambda b: sorted(os.listxattr(b / "d")))


# -- times --------------------------------------------------------------------------------------------------
def test_utimens_ns_precision(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"")
    times = (1_234_567_890_123_456_789, 987_654_321_987_654_321)
    env.both(lambda b: os.utime(b / "f", ns=times))
    st = assert_same_stat(env.mnt / "f", env.src / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == times
    env.both(lambda b: os.utime(b / "f", ns=(-1_000_000_001, 0)))   # before the epoch
    assert os.stat(env.mnt / "f").st_atime_ns == -1_000_000_001
    assert_same_stat(env.mnt / "f", env.src / "f")


def test_utimens_now_and_omit(env: Env) -> None:
    write(env.mnt / "f", b"")
    os.utime(env.mnt / "f", ns=(10**18, 2 * 10**18))
    utimensat(env.mnt / "f", (0, UTIME_OMIT), (5, 123))
    st = assert_same_stat(env.mnt / "f", env.src / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (10**18, 5_000_000_123)
    before = time.time_ns()
    utimensat(env.mnt / "f", (0, UTIME_NOW), (0, UTIME_OMIT))
    st = assert_same_stat(env.mnt / "f", env.src / "f")
    assert st.st_atime_ns >= before - 10_000_000 and st.st_mtime_ns == 5_000_000_123
    utimensat(env.mnt / "f", (0, UTIME_OMIT), (0, UTIME_NOW))
    st = assert_same_stat(env.mnt / "f", env.src / "f")
    assert st.st_mtime_ns >= before - 10_000_000
    os.utime(env.mnt / "f", ns=(1, 2))
    os.utime(env.mnt / "f")                       # NULL times: both now
    st = assert_same_stat(env.mnt / "f", env.src / "f")
    assert st.st_atime_ns >= before - 10_000_000 and st.st_mtime_ns >= before - 10_000_000
    utimensat(env.mnt / "f", (0, UTIME_OMIT), (0, UTIME_OMIT))
    assert_same_stat(env.mnt / "f", env.src / "f")


def test_utimens_symlink_not_followed(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"")
        os.utime(b / "f", ns=(111, 222))
        os.symlink("f", b / "l")
    env.both(lambda b: os.utime(b / "l", ns=(3_000_000_007, 4_000_000_009), follow_symlinks=False))
    st = assert_same_stat(env.mnt / "l", env.src / "l")
    assert (st.st_atime_ns, st.st_mtime_ns) == (3_000_000_007, 4_000_000_009)
    assert (os.stat(env.src / "f").st_atime_ns, os.stat(env.src / "f").st_mtime_ns) == (111, 222)
    env.both(lambda b: utimensat(b / "l", (0, UTIME_OMIT), (9, 9), AT_SYMLINK_NOFOLLOW))
    assert os.lstat(env.mnt / "l").st_mtime_ns == 9_000_000_009
    assert_same_stat(env.mnt / "l", env.src / "l")


def test_futimens(env: Env) -> None:
    fd = os.open(env.mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.utime(fd, ns=(5, 6))
        assert (os.fstat(fd).st_atime_ns, os.fstat(fd).st_mtime_ns) == (5, 6)
    finally:
        os.close(fd)
    assert_same_stat(env.mnt / "f", env.src / "f")


def test_utime_permission_as_other_user(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"", 0o666)
        os.chmod(b / "f", 0o666)
        write(b / "g", b"", 0o644)
    script = textwrap.dedent("""
        import os, sys
        out = []
        for name, ns in (("f", None), ("f", (1, 2)), ("g", None), ("g", (1, 2))):
            try:
                os.utime(os.path.join(sys.argv[1], name), ns=ns) if ns else os.utime(os.path.join(sys.argv[1], name))
                out.append("ok")
            except OSError as e:
                out.append(e.errno)
        print(out)
    """)
    res = [run_as(65534, 65534, [PY, "-c", script, str(b)]) for b in (env.nat, env.mnt)]
    assert res[0].stdout == res[1].stdout and res[0].returncode == 0, res


# -- locks --------------------------------------------------------------------------------------------------
_LOCKER = textwrap.dedent("""
    import fcntl, os, sys, time
    path, kind, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    fd = os.open(path, os.O_RDWR)
    ex = {"ex": True, "sh": False}[mode]
    def lock(nb):
        if kind == "lockf":
            fcntl.lockf(fd, (fcntl.LOCK_EX if ex else fcntl.LOCK_SH) | (fcntl.LOCK_NB if nb else 0))
        else:
            fcntl.flock(fd, (fcntl.LOCK_EX if ex else fcntl.LOCK_SH) | (fcntl.LOCK_NB if nb else 0))
    action = sys.argv[4]
    if action == "try":
        try:
            lock(True)
            print("got", flush=True)
        except OSError as e:
            print("busy", e.errno, flush=True)
    else:  # hold: lock (blocking), report, keep it until stdin closes
        print("trying", flush=True)
        t = time.monotonic()
        lock(False)
        print("locked", round(time.monotonic() - t, 2), flush=True)
        sys.stdin.read()
""")


def _locker(path: Path, kind: str, mode: str, action: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _LOCKER, str(path), kind, mode, action],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _try(path: Path, kind: str, mode: str) -> str:
    p = _locker(path, kind, mode, "try")
    out, _ = p.communicate(timeout=20)
    return out.strip()


@pytest.mark.parametrize("kind", ["lockf", "flock"])
def test_locks_between_two_processes(env: Env, kind: str) -> None:
    f = env.mnt / "lockfile"
    write(f, b"0123456789")
    holder = _locker(f, kind, "ex", "hold")
    waiter: subprocess.Popen[str] | None = None
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "trying\n"
        assert holder.stdout.readline().startswith("locked")
        assert _try(f, kind, "ex").startswith("busy")
        assert _try(f, kind, "sh").startswith("busy")
        waiter = _locker(f, kind, "ex", "hold")        # blocks until the holder goes
        assert waiter.stdout is not None and waiter.stdout.readline() == "trying\n"
        assert select.select([waiter.stdout], [], [], 0.5)[0] == []  # still waiting for the lock
        assert waiter.poll() is None
        assert holder.stdin is not None
        holder.stdin.close()                         # exit = close = release
        holder.wait(timeout=20)
        assert waiter.stdout is not None
        line = waiter.stdout.readline()
        assert line.startswith("locked") and float(line.split()[1]) >= 0.3
        assert _try(f, kind, "ex").startswith("busy")
    finally:
        for p in (holder, waiter):
            if p is not None:
                if p.stdin and not p.stdin.closed:
                    p.stdin.close()
                p.wait(timeout=20)
    assert _try(f, kind, "ex") == "got"
    # shared locks are compatible with each other
    sh = _locker(f, kind, "sh", "hold")
    try:
        assert sh.stdout is not None and sh.stdout.readline() == "trying\n"
        assert sh.stdout.readline().startswith("locked")
        assert _try(f, kind, "sh") == "got"
        assert _try(f, kind, "ex").startswith("busy")
    finally:
        assert sh.stdin is not None
        sh.stdin.close()
        sh.wait(timeout=20)


def test_posix_lock_ranges_and_getlk(env: Env) -> None:
    """Byte-range locks: disjoint ranges coexist, F_GETLK reports the holder's pid."""
    import struct
    f = env.mnt / "lockfile"
    write(f, b"x" * 100)
    script = textwrap.dedent("""
        import fcntl, os, struct, sys
        fd = os.open(sys.argv[1], os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)  # bytes 0..9
        print("locked", os.getpid(), flush=True)
        sys.stdin.read()
    """)
    holder = subprocess.Popen([sys.executable, "-c", script, str(f)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        _, pid = holder.stdout.readline().split()
        fd = os.open(f, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 10)  # bytes 10..19: free
            with pytest.raises(OSError) as ei:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 5)
            assert ei.value.errno in (errno.EAGAIN, errno.EACCES)
            req = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
            res = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, req))
            assert res[0] == fcntl.F_WRLCK and res[4] == int(pid)
        finally:
            os.close(fd)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=20)


# -- fallocate, copy_file_range, lseek ----------------------------------------------------------------------
@pytest.mark.parametrize("mode,offset,length", [
    (0, 0, 1 << 20),
    (0, 100_000, 50_000),
    (FALLOC_FL_KEEP_SIZE, 0, 1 << 20),
    (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192),
    (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, 3000),
    (FALLOC_FL_ZERO_RANGE, 4096, 8192),
    (FALLOC_FL_ZERO_RANGE, 50_000, 100_000),
    (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 50_000, 100_000),
    (FALLOC_FL_PUNCH_HOLE, 0, 4096),                 # EINVAL (punch needs keep-size)
    (0, 0, 0),                                       # EINVAL
])
def test_fallocate(env: Env, mode: int, offset: int, length: int) -> None:
    data = bytes(range(1, 256)) * 256  # ~64 KiB without zero bytes

    def op(b: Path) -> tuple[int, bytes]:
        fd = os.open(b / "f", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, 0)
            fallocate(fd, mode, offset, length)
            os.fsync(fd)
            return os.fstat(fd).st_size, os.pread(fd, 1 << 21, 0)
        finally:
            os.close(fd)

    env.both(op)
    env.same_shape("f")
    assert os.stat(env.mnt / "f").st_blocks == os.stat(env.nat / "f").st_blocks


def test_fallocate_on_readonly_fd(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"x")

    def op(b: Path) -> None:
        fd = os.open(b / "f", os.O_RDONLY)
        try:
            fallocate(fd, 0, 0, 4096)
        finally:
            os.close(fd)

    assert env.both(op) == ("err", "EBADF")


def test_copy_file_range(env: Env) -> None:
    data = os.urandom(200_000)

    def op(b: Path) -> list[Any]:
        write(b / "in", data)
        fi = os.open(b / "in", os.O_RDONLY)
        fo = os.open(b / "out", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            res = [os.copy_file_range(fi, fo, 100_000, 50_000, 0),
                   os.copy_file_range(fi, fo, 1000, 199_500, 300_000),   # short: end of input
                   os.copy_file_range(fi, fo, 1000, 500_000, 0)]         # past the end: 0
            res.append(outcome(os.copy_file_range, fo, fo, 100, 0, 50))  # overlapping same file: EINVAL
            return res
        finally:
            os.close(fi)
            os.close(fo)

    env.both(op)
    env.same_shape("out")
    assert (env.mnt / "out").read_bytes() == (env.nat / "out").read_bytes()
    assert env.m.unmount() == 0
    assert any(e["op"] == "copy_file_range" and e["errno"] is None for e in env.m.events())


def test_lseek_data_hole(env: Env) -> None:
    def op(b: Path) -> list[Any]:
        fd = os.open(b / "f", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, b"a" * 4096, 1 << 20)
            os.pwrite(fd, b"b" * 4096, 4 << 20)
            os.ftruncate(fd, 8 << 20)
            os.fsync(fd)
            res = []
            for off in (0, 1 << 20, (1 << 20) + 4096, 3 << 20, 4 << 20, (8 << 20) - 1):
                res.append(outcome(os.lseek, fd, off, os.SEEK_DATA))
                res.append(outcome(os.lseek, fd, off, os.SEEK_HOLE))
            res.append(outcome(os.lseek, fd, 8 << 20, os.SEEK_DATA))   # ENXIO
            res.append(outcome(os.lseek, fd, 9 << 20, os.SEEK_HOLE))   # ENXIO
            res.append(outcome(os.lseek, fd, 100, os.SEEK_END))
            res.append(outcome(os.lseek, fd, -1, os.SEEK_SET))         # EINVAL
            return res
        finally:
            os.close(fd)

    env.both(op)


# -- error cases ------------------------------------------------------------------------------------------------
def test_enoent_eexist_enotdir(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "f", b"")
        os.mkdir(b / "d")
    env.both(lambda b: os.stat(b / "missing"))
    env.both(lambda b: os.stat(b / "missing" / "x"))
    env.both(lambda b: os.stat(b / "f" / "x"))         # ENOTDIR
    env.both(lambda b: os.mkdir(b / "f"))
    env.both(lambda b: os.mkdir(b / "d"))
    env.both(lambda b: os.symlink("x", b / "d"))
    env.both(lambda b: os.mkfifo(b / "f"))
    env.both(lambda b: os.open(b / "missing" / "x", os.O_CREAT | os.O_WRONLY))
    env.both(lambda b: os.chmod(b / "missing", 0o644))
    env.both(lambda b: os.chown(b / "missing", 1, 1))
    env.both(lambda b: os.utime(b / "missing"))
    env.both(lambda b: os.setxattr(b / "missing", "user.a", b""))


def test_enametoolong(env: Env) -> None:
    env.both(lambda b: os.stat(b / ("n" * 256)))
    env.both(lambda b: os.open(b / ("n" * 256), os.O_CREAT | os.O_WRONLY, 0o644))
    env.both(lambda b: os.mkdir(b / ("n" * 300)))
    env.both(lambda b: os.symlink("x", b / ("n" * 256)))
    env.both(lambda b: os.close(os.open(b / ("n" * 255), os.O_CREAT | os.O_WRONLY, 0o644)))
    env.both(lambda b: os.symlink("t" * 5000, b / "longtarget"))
    env.both(lambda b: os.stat(b / "/".join(["d"] * 2100)))    # path > PATH_MAX
    env.same_tree()


def test_deep_path_beyond_path_max(env: Env) -> None:
    """A tree deeper than PATH_MAX, built with relative steps, works through the mount."""
    name = "d" * 200

    def walk(b: Path, create: bool) -> tuple[int, os.stat_result]:
        fd = os.open(b, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(25):  # 25 * 201 > 4096
                if create:
                    os.mkdir(name, dir_fd=fd)
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = nfd
            if create:
                f = os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd)
                os.write(f, b"deep")
                os.close(f)
            return os.stat("leaf", dir_fd=fd).st_size, os.stat("leaf", dir_fd=fd)
        finally:
            os.close(fd)

    for b in (env.nat, env.mnt):
        assert walk(b, True)[0] == 4
    m, s = walk(env.mnt, False)[1], walk(env.src, False)[1]
    assert stat_fields(m) == stat_fields(s)


def test_eacces_as_other_user(env: Env) -> None:
    for b in (env.nat, env.mnt):
        write(b / "secret", b"s")
        os.chmod(b / "secret", 0o600)
        os.mkdir(b / "closed", 0o700)
        write(b / "closed" / "f", b"")
        os.mkdir(b / "ro", 0o755)
    script = textwrap.dedent("""
        import os, sys
        b = sys.argv[1]
        out = []
        for fn in (lambda: open(os.path.join(b, "secret")).read(),
                   lambda: open(os.path.join(b, "secret"), "a"),
                   lambda: os.stat(os.path.join(b, "closed", "f")),
                   lambda: os.listdir(os.path.join(b, "closed")),
                   lambda: open(os.path.join(b, "ro", "new"), "w"),
                   lambda: os.mkdir(os.path.join(b, "ro", "new")),
                   lambda: os.rename(os.path.join(b, "ro"), os.path.join(b, "ro2")),
                   lambda: os.chmod(os.path.join(b, "secret"), 0o777),
                   lambda: os.truncate(os.path.join(b, "secret"), 0)):
            try:
                fn()
                out.append("ok")
            except OSError as e:
                out.append(e.errno)
        print(out)
    """)
    res = [run_as(65534, 65534, [PY, "-c", script, str(b)]) for b in (env.nat, env.mnt)]
    assert res[0].returncode == res[1].returncode == 0, res
    assert res[0].stdout == res[1].stdout
    assert str(errno.EACCES) in res[1].stdout


# -- names ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [b"\xff\xfe", b"caf\xe9", b"\xc3\x28bad", "ünïcødé".encode(), b"a\x01b"])
def test_non_utf8_names_round_trip(env: Env, name: bytes) -> None:
    mnt, src = os.fsencode(env.mnt), os.fsencode(env.src)
    write(os.path.join(mnt, name), b"payload")
    assert name in os.listdir(src)
    assert name in os.listdir(mnt)
    assert open(os.path.join(src, name), "rb").read() == b"payload"
    os.mkdir(os.path.join(mnt, name + b".d"))
    os.symlink(name, os.path.join(mnt, name + b".l"))
    assert os.readlink(os.path.join(src, name + b".l")) == name
    assert os.readlink(os.path.join(mnt, name + b".l")) == name
    os.setxattr(os.path.join(mnt, name), b"user." + name, b"v")
    assert os.listxattr(os.path.join(src, name)) == ["user." + os.fsdecode(name)]
    assert os.getxattr(os.path.join(mnt, name), b"user." + name) == b"v"
    os.rename(os.path.join(mnt, name), os.path.join(mnt, name + b"2"))
    os.link(os.path.join(mnt, name + b"2"), os.path.join(mnt, name))
    assert sorted(os.listdir(src)) == sorted(os.listdir(mnt)) == sorted(
        [name, name + b"2", name + b".d", name + b".l"])
    assert_same_stat(os.path.join(mnt, name), os.path.join(src, name))
    assert _getdents(mnt)[name][0] == os.stat(os.path.join(src, name)).st_ino


# -- coherence ------------------------------------------------------------------------------------------------
def test_coherence_after_changes_through_mount(env: Env) -> None:
    mnt, src = env.mnt, env.src
    write(mnt / "f", b"1")
    st0 = os.stat(mnt / "f")
    time.sleep(0.01)
    os.link(mnt / "f", mnt / "g")
    st = assert_same_stat(mnt / "f", src / "f")
    assert st.st_nlink == 2 and st.st_ctime_ns > st0.st_ctime_ns
    d0 = os.stat(mnt)
    time.sleep(0.01)
    os.rename(mnt / "g", mnt / "h")
    assert os.stat(mnt / "f").st_ctime_ns == os.stat(src / "f").st_ctime_ns
    assert os.stat(mnt).st_mtime_ns > d0.st_mtime_ns
    assert_same_stat(mnt, src)
    assert outcome(os.stat, mnt / "g")[1] == "ENOENT"
    os.unlink(mnt / "h")
    assert assert_same_stat(mnt / "f", src / "f").st_nlink == 1
    fd = os.open(mnt / "f", os.O_WRONLY)
    try:
        for i in range(5):
            time.sleep(0.005)
            os.pwrite(fd, b"x" * 1000, i * 70_000)
            st = assert_same_stat(mnt / "f", src / "f")
            assert st.st_size == i * 70_000 + 1000
            assert os.fstat(fd).st_size == st.st_size and os.fstat(fd).st_mtime_ns == st.st_mtime_ns
    finally:
        os.close(fd)
    os.mkdir(mnt / "d")
    assert assert_same_stat(mnt, src).st_nlink == 3
    os.rmdir(mnt / "d")
    assert assert_same_stat(mnt, src).st_nlink == 2


def test_unlinked_open_file_like_native(env: Env) -> None:
    """An open file that is unlinked keeps working; its name is really gone from the source (no
    .fuse_hidden* left behind) and its link count drops to 0."""

    def op(b: Path) -> list[Any]:
        os.mkdir(b / "d")
        fd = os.open(b / "d" / "f", os.O_CREAT | os.O_RDWR, 0o644)
        fd2 = os.open(b / "d" / "f", os.O_RDONLY)
        try:
            os.write(fd, b"abc")
            os.unlink(b / "d" / "f")
            res: list[Any] = [os.listdir(b / "d"), os.fstat(fd).st_nlink, os.fstat(fd).st_size,
                              os.pwrite(fd, b"xyz", 10), os.pread(fd2, 100, 0)]
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, 5)
            os.utime(fd, ns=(7, 8))
            os.setxattr(fd, "user.k", b"v")
            st = os.fstat(fd2)
            res += [stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns, os.getxattr(fd2, "user.k"),
                    os.listxattr(fd)]
            res.append(outcome(os.link, f"/proc/self/fd/{fd}", b / "again"))
            return res
        finally:
            os.close(fd)
            os.close(fd2)

    env.both(op)
    env.same_tree()
    assert os.listdir(env.src / "d") == []


def test_rename_over_open_file(env: Env) -> None:
    def op(b: Path) -> list[Any]:
        write(b / "a", b"new")
        write(b / "b", b"old")
        fd = os.open(b / "b", os.O_RDONLY)
        try:
            res: list[Any] = [outcome(renameat2, b / "a", b / "b", RENAME_NOREPLACE),
                              sorted(os.listdir(b)), (b / "b").read_bytes()]
            os.rename(b / "a", b / "b")
            res += [sorted(os.listdir(b)), (b / "b").read_bytes(), os.pread(fd, 10, 0), os.fstat(fd).st_nlink]
            return res
        finally:
            os.close(fd)

    env.both(op)
    env.same_tree()


def test_unlinked_open_file_survives_directory_rename(env: Env) -> None:
    os.mkdir(env.mnt / "d")
    os.mkdir(env.mnt / "x")
    fd = os.open(env.mnt / "d" / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"abc")
        os.unlink(env.mnt / "d" / "f")
        os.rename(env.mnt / "d", env.mnt / "e")
        assert os.fstat(fd).st_size == 3
        renameat2(env.mnt / "e", env.mnt / "x", RENAME_EXCHANGE)
        os.fchmod(fd, 0o600)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        assert os.listdir(env.src / "x") == [] and os.listdir(env.src / "e") == []
    finally:
        os.close(fd)
    assert sorted(os.listdir(env.src)) == ["e", "x"]


def test_rmdir_while_unlinked_file_in_it_is_open(env: Env) -> None:
    """The directory goes at once, as natively (no hidden file keeps it non-empty), and the file keeps
    working."""
    os.mkdir(env.mnt / "d")
    fd = os.open(env.mnt / "d" / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.unlink(env.mnt / "d" / "f")
        assert outcome(os.rmdir, env.mnt / "d") == ("ok", None)
        os.fchown(fd, 5, 6)
        assert (os.fstat(fd).st_uid, os.fstat(fd).st_nlink) == (5, 0)
    finally:
        os.close(fd)
    assert os.listdir(env.src) == []
