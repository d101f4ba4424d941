"""Containment: symlinks planted in SOURCE never lead the daemon outside it.

Requests name objects by node id; each node is an O_PATH fd found by one name component with O_NOFOLLOW, so the
daemon never follows a symlink itself: the kernel does, on the client side, as it does natively. Through a real
mount, against the same sequence on a plain directory: operations that act on a symlink itself leave what it
points to untouched, and handles opened before a directory was swapped for a symlink keep referring to the
original directory. A snapshot of a directory outside SOURCE must not change.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import Mount, wait_for


def snapshot(root: Path) -> dict[str, Any]:
    """Everything an escape could change: names, types, modes, owners, sizes, times, contents, xattrs."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            entry: tuple[Any, ...] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_nlink)
            if stat.S_ISREG(st.st_mode):
                entry += (Path(p).read_bytes(),)
            if not stat.S_ISLNK(st.st_mode):
                entry += (sorted((n, os.getxattr(p, n)) for n in os.listxattr(p)),)
            out[os.path.relpath(p, root)] = entry
    return out


def make_outside(workdir: Path) -> Path:
    outside = workdir / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(b"secret")
    os.setxattr(outside / "secret", "user.k", b"v")
    os.utime(outside / "secret", ns=(10**18, 10**18))
    return outside


def outcome(call: Callable[[], Any]) -> Any:
    try:
        result = call()
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno or 0, e.errno))
    return ("ok", result if isinstance(result, (bytes, str, int, list)) else None)


def link_ops(d: Path, outside: Path) -> list[tuple[str, Any]]:
    """Each operation that acts on a symlink itself, on `d/link` (-> outside/secret) and `d/dlink` (-> outside)."""
    link = d / "link"
    ops: list[tuple[str, Callable[[], Any]]] = [
        ("lchown", lambda: os.chown(link, 65534, 65534, follow_symlinks=False)),
        ("lutimes", lambda: os.utime(link, ns=(1, 1), follow_symlinks=False)),
        ("lsetxattr", lambda: os.setxattr(link, "user.k", b"stolen", follow_symlinks=False)),
        ("lgetxattr", lambda: os.getxattr(link, "user.k", follow_symlinks=False)),
        ("llistxattr", lambda: sorted(os.listxattr(link, follow_symlinks=False))),
        ("lremovexattr", lambda: os.removexattr(link, "user.k", follow_symlinks=False)),
        ("readlink", lambda: os.readlink(link)),
        ("lstat", lambda: stat.S_IFMT(os.lstat(link).st_mode)),
        ("link", lambda: os.link(link, d / "hard", follow_symlinks=False)),
        ("hard-is-a-link", lambda: stat.S_IFMT(os.lstat(d / "hard").st_mode)),
        ("open-nofollow", lambda: os.close(os.open(link, os.O_RDONLY | os.O_NOFOLLOW))),
        ("creat-excl", lambda: os.close(os.open(link, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))),
        ("rename", lambda: os.rename(link, d / "moved")),
        ("unlink", lambda: os.unlink(d / "moved")),
        ("unlink-hard", lambda: os.unlink(d / "hard")),
        ("rmdir-dlink", lambda: os.rmdir(d / "dlink")),
        ("unlink-dlink", lambda: os.unlink(d / "dlink")),
    ]
    return [(name, outcome(call)) for name, call in ops]


def plant_links(d: Path, outside: Path) -> None:
    (d / "link").symlink_to(outside / "secret")
    (d / "dlink").symlink_to(outside)


def test_operations_on_a_symlink_act_on_the_link(workdir: Path) -> None:
    outside = make_outside(workdir)
    native = workdir / "native"
    native.mkdir()
    plant_links(native, outside)
    before = snapshot(outside)
    expected = link_ops(native, outside)
    assert snapshot(outside) == before
    with Mount(workdir / "src", workdir / "mnt") as m:
        plant_links(m.src, outside)
        assert link_ops(m.mnt, outside) == expected
        assert m.unmount() == 0
    assert snapshot(outside) == before
    # The sequence did act on the links natively (a list of failures would prove nothing).
    assert dict(expected)["lutimes"] == ("ok", None) and dict(expected)["hard-is-a-link"] == ("ok", stat.S_IFLNK)


def swap_sequence(d: Path, source_d: Path, outside: Path) -> list[tuple[str, Any]]:
    """Open a directory and a file in it, swap the directory for a symlink to `outside` (in SOURCE, behind the
    mount's back), then use the handles."""
    (d / "d").mkdir()
    (d / "d" / "mine").write_bytes(b"mine")
    dfd = os.open(d / "d", os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open(d / "d" / "mine", os.O_RDWR)
    try:
        os.rename(source_d / "d", source_d / "d.old")
        (source_d / "d").symlink_to(outside)
        return [
            ("listdir", outcome(lambda: sorted(os.listdir(dfd)))),
            ("write", outcome(lambda: os.pwrite(fd, b"MINE", 0))),
            ("fstat-is-old", outcome(lambda: os.fstat(fd).st_ino == os.stat(source_d / "d.old" / "mine").st_ino)),
            ("create-at", outcome(lambda: os.close(os.open("new", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dfd)))),
            ("mkdir-at", outcome(lambda: os.mkdir("newdir", dir_fd=dfd))),
            ("unlink-at", outcome(lambda: os.unlink("mine", dir_fd=dfd))),
            ("old-listing", outcome(lambda: sorted(os.listdir(source_d / "d.old")))),
        ]
    finally:
        os.close(fd)
        os.close(dfd)


def test_handles_keep_their_directory_when_it_is_swapped_for_a_symlink(workdir: Path) -> None:
    outside = make_outside(workdir)
    native = workdir / "native"
    native.mkdir()
    before = snapshot(outside)
    expected = swap_sequence(native, native, outside)
    assert dict(expected)["listdir"] == ("ok", ["mine"]) and dict(expected)["fstat-is-old"] == ("ok", True)
    with Mount(workdir / "src", workdir / "mnt") as m:
        assert swap_sequence(m.mnt, m.src, outside) == expected
        # The name now leads where the symlink points, as natively (the kernel follows it, not the daemon).
        wait_for(lambda: os.path.islink(m.mnt / "d"), 5, "the swapped name (SOURCE watcher)")
        assert os.readlink(m.mnt / "d") == str(outside)
        assert m.unmount() == 0
    assert snapshot(outside) == before
