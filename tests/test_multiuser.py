"""Other users through an allow_other mount run by root, compared with the same user on a native directory.

Each scenario runs a script as uid/gid X (no passwd entry needed) once in a native directory and once in the
mount, both prepared identically by root; the script's outcomes (results and errnos) must be equal, and
everything it created must have the same owner, group and mode in the SOURCE as natively.
"""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path
from typing import Any

import pytest

from helpers import FILE_CAPS, Mount, run_as
from posixcmp import SHAPE_FIELDS, assert_same_stat, stat_fields

PY = "/usr/bin/python3"  # readable by every uid

OTHER = 1001     # owner of the files the caller does not own
GROUP = 4242     # group of the setgid directory; callers are members in some scenarios

SCRIPT = textwrap.dedent("""
    import errno, json, os, stat, sys
    b = sys.argv[1]
    uid = os.getuid()
    os.umask(int(sys.argv[2], 8))
    out = []
    def p(*parts):
        return os.path.join(b, *parts)
    def do(label, fn):
        try:
            r = fn()
            out.append([label, "ok", r if isinstance(r, (int, str, bytes, list, type(None))) and not isinstance(r, bytes) else repr(r)])
        except OSError as e:
            out.append([label, errno.errorcode[e.errno]])
    def create(path, mode=0o666):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, mode))
    def write_to(path, data=b"w"):
        fd = os.open(path, os.O_WRONLY)
        try:
            return os.write(fd, data)
        finally:
            os.close(fd)
    def mode_of(path):
        return oct(os.lstat(path).st_mode)
    do("create", lambda: create(p("pub", "f")))
    do("create-0777", lambda: create(p("pub", "x"), 0o777))
    do("mkdir", lambda: os.mkdir(p("pub", "d"), 0o777))
    do("symlink", lambda: os.symlink("f", p("pub", "l")))
    do("mkfifo", lambda: os.mkfifo(p("pub", "p"), 0o666))
    do("mknod-sock", lambda: os.mknod(p("pub", "s"), stat.S_IFSOCK | 0o666))
    do("mknod-chr", lambda: os.mknod(p("pub", "c"), stat.S_IFCHR | 0o666, os.makedev(1, 3)))
    do("link", lambda: os.link(p("pub", "f"), p("pub", "h")))
    do("link-others", lambda: os.link(p("secret"), p("pub", "hs")))       # protected_hardlinks
    do("sgid-create", lambda: create(p("sgid", "f")))
    do("sgid-mkdir", lambda: os.mkdir(p("sgid", "d"), 0o777))
    do("sgid-sub-mode", lambda: mode_of(p("sgid", "d")))
    do("sgid-nested", lambda: os.mkdir(p("sgid", "d", "e"), 0o755))
    do("chmod-setgid-nonmember", lambda: os.chmod(p("pub", "f"), 0o2755))
    do("mode-after", lambda: mode_of(p("pub", "f")))
    do("read-secret", lambda: open(p("secret"), "rb").read())
    do("write-secret", lambda: write_to(p("secret")))
    do("stat-secret", lambda: stat.S_IMODE(os.stat(p("secret")).st_mode))
    do("unlink-sticky-other", lambda: os.unlink(p("sticky", "other")))
    do("rename-sticky-other", lambda: os.rename(p("sticky", "other"), p("sticky", "mine")))
    do("rmdir-sticky-other", lambda: os.rmdir(p("sticky", "otherdir")))
    do("create-in-sticky", lambda: create(p("sticky", "mine")))
    do("unlink-sticky-mine", lambda: os.unlink(p("sticky", "mine")))
    do("write-suid", lambda: write_to(p("suid")))
    do("suid-mode", lambda: mode_of(p("suid")))
    do("truncate-suid2", lambda: os.truncate(p("suid2"), 1))
    do("suid2-mode", lambda: mode_of(p("suid2")))
    def fallocate_to(path):
        fd = os.open(path, os.O_WRONLY)
        try:
            os.posix_fallocate(fd, 0, 8192)
        finally:
            os.close(fd)
    do("fallocate-suid3", lambda: fallocate_to(p("suid3")))
    do("suid3-mode", lambda: mode_of(p("suid3")))
    do("open-trunc-suid4", lambda: os.close(os.open(p("suid4"), os.O_WRONLY | os.O_TRUNC)))
    do("suid4-mode", lambda: mode_of(p("suid4")))
    do("chown-to-root", lambda: os.chown(p("pub", "f"), 0, -1))
    do("chown-noop", lambda: os.chown(p("pub", "f"), uid, -1))
    do("chgrp-own", lambda: os.chown(p("pub", "f"), -1, os.getgid()))
    do("chgrp-member", lambda: os.chown(p("pub", "f"), -1, %(group)d))
    do("chgrp-nonmember", lambda: os.chown(p("pub", "f"), -1, 7777))
    do("chown-others", lambda: os.chown(p("secret"), uid, -1))
    do("chmod-others", lambda: os.chmod(p("secret"), 0o644))
    do("utime-others", lambda: os.utime(p("pub", "open"), ns=(1, 2)))
    do("utime-now-others", lambda: os.utime(p("pub", "open")))
    do("list-trusted", lambda: sorted(os.listxattr(p("xattrs"))))
    do("get-trusted", lambda: os.getxattr(p("xattrs"), "trusted.t"))
    do("set-trusted", lambda: os.setxattr(p("xattrs"), "trusted.u", b"1"))
    do("remove-trusted", lambda: os.removexattr(p("xattrs"), "trusted.t"))
    do("get-user", lambda: os.getxattr(p("xattrs"), "user.u").decode())
    do("set-user-others", lambda: os.setxattr(p("xattrs"), "user.v", b"1"))
    do("set-user-own", lambda: os.setxattr(p("pub", "f"), "user.v", b"1"))
    do("secret-dir-list", lambda: os.listdir(p("closed")))
    do("secret-dir-open", lambda: os.close(os.open(p("closed"), os.O_RDONLY | os.O_DIRECTORY)))
    do("secret-dir-stat", lambda: os.stat(p("closed", "f")).st_size)
    do("access-secret", lambda: [os.access(p("secret"), m) for m in (os.R_OK, os.W_OK, os.X_OK)])
    print(json.dumps(out))
""") % {"group": GROUP}

# Everything the script may have created, relative to the base directory.
CREATED = ["pub/f", "pub/x", "pub/d", "pub/l", "pub/p", "pub/s", "pub/c", "pub/h", "pub/hs", "sgid/f", "sgid/d",
           "sgid/d/e", "sticky/mine", "suid", "suid2", "suid3", "suid4", "secret", "sticky/other", "xattrs"]


def prepare(b: Path) -> None:
    """The same starting tree, made by root, in the native dir and through the mount."""
    os.chmod(b, 0o755)
    os.mkdir(b / "pub")
    os.chmod(b / "pub", 0o777)
    os.mkdir(b / "sgid")
    os.chown(b / "sgid", 0, GROUP)
    os.chmod(b / "sgid", 0o2777)
    os.mkdir(b / "sticky")
    os.chmod(b / "sticky", 0o1777)
    for name, mode in (("secret", 0o600), ("suid", 0o6777), ("suid2", 0o6777), ("suid3", 0o6777), ("suid4", 0o6777),
                       ("sticky/other", 0o666)):
        (b / name).write_bytes(b"data")
        os.chown(b / name, OTHER, OTHER)
        os.chmod(b / name, mode)
    os.mkdir(b / "sticky" / "otherdir")
    os.chown(b / "sticky" / "otherdir", OTHER, OTHER)
    (b / "pub" / "open").write_bytes(b"")
    os.chown(b / "pub" / "open", OTHER, OTHER)
    os.chmod(b / "pub" / "open", 0o666)
    os.mkdir(b / "closed", 0o700)
    (b / "closed" / "f").write_bytes(b"x")
    (b / "xattrs").write_bytes(b"")
    os.chmod(b / "xattrs", 0o644)
    os.setxattr(b / "xattrs", "trusted.t", b"root only")
    os.setxattr(b / "xattrs", "user.u", b"everyone")


def run_script(uid: int, gid: int, groups: list[int], base: Path, umask: int) -> list[Any]:
    r = run_as(uid, gid, [PY, "-c", SCRIPT, str(base), oct(umask)[2:]], groups=groups, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def owner_mode(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_uid, st.st_gid, st.st_mode


@pytest.mark.parametrize("uid,gid,groups,umask", [
    (65534, 65534, [65534], 0o022),
    (1000, 1000, [1000], 0o027),
    (1000, 1000, [1000, GROUP], 0o002),
    (1001, 1001, [1001], 0o077),
])
def test_same_as_native_for_other_users(mount: Mount, workdir: Path, uid: int, gid: int, groups: list[int],
                                        umask: int) -> None:
    nat = workdir / "native"
    nat.mkdir()
    prepare(nat)
    prepare(mount.mnt)
    native = run_script(uid, gid, groups, nat, umask)
    mounted = run_script(uid, gid, groups, mount.mnt, umask)
    assert mounted == native
    results = dict((r[0], r[1:]) for r in mounted)
    # Sanity: the scenarios did what they are about (so equal results are not equal failures).
    assert results["create"] == ["ok", None]
    assert results["read-secret"] == (["ok", "b'data'"] if uid == OTHER else ["EACCES"])
    if uid != OTHER:
        assert results["unlink-sticky-other"] in (["EPERM"], ["EACCES"])
        assert results["chown-to-root"] == ["EPERM"]
        assert results["set-trusted"] == ["EPERM"]
        assert results["get-trusted"] == ["ENODATA"]
        assert results["list-trusted"] == ["ok", ["user.u"]]
    for rel in CREATED:
        assert owner_mode(mount.src / rel) == owner_mode(nat / rel), rel
        if os.path.lexists(mount.src / rel):  # (not exists(): following a symlink in SOURCE sets its atime)
            assert_same_stat(mount.mnt / rel, mount.src / rel)
    # Objects the caller created belong to the caller (in the source), setgid dirs give their group.
    st = os.lstat(mount.src / "pub" / "f")
    assert st.st_uid == uid
    for rel in ("pub/d", "pub/l", "pub/p", "pub/x"):
        st = os.lstat(mount.src / rel)
        assert (st.st_uid, st.st_gid) == (uid, gid), rel
    assert stat.S_IMODE(os.lstat(mount.src / "pub" / "x").st_mode) == 0o777 & ~umask
    for rel in ("sgid/f", "sgid/d", "sgid/d/e"):
        assert os.lstat(mount.src / rel).st_gid == GROUP, rel
    assert os.lstat(mount.src / "sgid" / "d").st_mode & stat.S_ISGID
    if uid != OTHER:
        # A write by a non-owner clears setuid (and setgid, as group-exec is set), as natively.
        assert stat.S_IMODE(os.lstat(mount.src / "suid").st_mode) & 0o6000 == 0
        assert stat.S_IMODE(os.lstat(mount.src / "suid2").st_mode) & 0o6000 == 0
        assert stat.S_IMODE(os.lstat(mount.src / "suid3").st_mode) & 0o6000 == 0  # fallocate
        assert stat.S_IMODE(os.lstat(mount.src / "suid4").st_mode) & 0o6000 == 0  # open(O_TRUNC)
        assert (mount.src / "sticky" / "other").exists()


def test_root_writes_keep_setuid(mount: Mount, workdir: Path) -> None:
    nat = workdir / "native"
    nat.mkdir()
    for b in (nat, mount.mnt):
        (b / "f").write_bytes(b"x")
        os.chmod(b / "f", 0o6755)
        with open(b / "f", "ab") as f:
            f.write(b"more")
        os.truncate(b / "f", 2)
    assert stat_fields(os.stat(mount.mnt / "f"), SHAPE_FIELDS) == stat_fields(os.stat(nat / "f"), SHAPE_FIELDS)
    assert os.stat(mount.src / "f").st_mode & 0o6000 == 0o6000


def test_files_created_by_other_user_never_owned_by_root(workdir: Path) -> None:
    """Caller credentials hold while objects are created: watch the source while another user creates."""
    src, mnt = workdir / "src2", workdir / "mnt2"
    src.mkdir()
    os.chmod(src, 0o777)
    script = textwrap.dedent("""
        import os, sys
        b = sys.argv[1]
        for i in range(200):
            os.close(os.open(os.path.join(b, f"f{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
            os.mkdir(os.path.join(b, f"d{i}"))
    """)
    with Mount(src, mnt, "-o", "allow_other"):
        r = run_as(1000, 1000, [PY, "-c", script, str(mnt)], timeout=60)
        assert r.returncode == 0, r.stderr
        owners = {(os.lstat(src / n).st_uid, os.lstat(src / n).st_gid) for n in os.listdir(src)}
        assert owners == {(1000, 1000)}
        assert len(os.listdir(src)) == 400


CHANGE = textwrap.dedent("""
    import os, sys
    path, how = sys.argv[1], sys.argv[2]
    if how == "truncate":
        os.truncate(path, 1)
    else:
        fd = os.open(path, os.O_WRONLY | (os.O_APPEND if how == "append" else 0))
        for i in range(3):  # the kernel checks the capability before each write where it must (not SB_NOSEC)
            os.write(fd, b"w")
        os.close(fd)
""")


@pytest.mark.parametrize("uid", [0, 1000])
@pytest.mark.parametrize("how", ["write", "append", "truncate"])
def test_data_changes_drop_file_capabilities_as_natively(mount: Mount, workdir: Path, uid: int, how: str) -> None:
    # Clearing them is the kernel's before each write where the file system has not taken it on
    # (FUSE_HANDLE_KILLPRIV_V2), SOURCE's own where it has (the daemon writes as the caller).
    nat = workdir / "native"
    nat.mkdir()
    kept = {}
    for b, check in ((nat, nat), (mount.mnt, mount.src)):
        f = b / "caps"
        f.write_bytes(b"data")
        os.chmod(f, 0o666)
        os.setxattr(f, "security.capability", FILE_CAPS)
        assert os.getxattr(check / "caps", "security.capability") == FILE_CAPS
        r = run_as(uid, uid, [PY, "-c", CHANGE, str(f), how], groups=[uid], timeout=60)
        assert r.returncode == 0, r.stderr
        kept[b] = "security.capability" in os.listxattr(check / "caps")
    assert_same_stat(mount.mnt / "caps", mount.src / "caps")
    assert kept[mount.mnt] == kept[nat]
    assert not kept[nat]  # the scenario is about something: natively a write drops them, even root's
