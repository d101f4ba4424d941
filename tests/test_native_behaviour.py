"""Where a mount used to behave differently from the kernel's own filesystems (issue 19): each behaviour done
in a native directory (ext4 under /tmp) and through an `allow_other,default_permissions` mount, as root and as
ordinary users, with equal outcomes required.

What each needs from the kernel and libfuse: docs/posix.md, "Native behaviour".
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import struct
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import Mount, run_as

PY = "/usr/bin/python3"  # readable by every uid

# Ordinary test users (created by the `users` fixture when missing, removed afterwards).
USERS = {"fpt-owner": 2101, "fpt-member": 2102, "fpt-other": 2103}
GROUP_NAME, GROUP = "fpt-group", 2100
OWNER, MEMBER, STRANGER = USERS["fpt-owner"], USERS["fpt-member"], USERS["fpt-other"]


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, int]]:
    """fpt-owner, fpt-member (in fpt-group) and fpt-other, as ordinary users with passwd entries."""
    made_group, made = False, []
    try:
        import grp
        grp.getgrgid(GROUP)
    except KeyError:
        subprocess.run(["groupadd", "-g", str(GROUP), GROUP_NAME], check=True)
        made_group = True
    for name, uid in USERS.items():
        try:
            pwd.getpwuid(uid)
        except KeyError:
            subprocess.run(["useradd", "-M", "-N", "-u", str(uid), "-s", "/bin/sh", name], check=True)
            made.append(name)
    subprocess.run(["usermod", "-a", "-G", GROUP_NAME, "fpt-member"], check=True)
    try:
        yield USERS
    finally:
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)
        if made_group:
            subprocess.run(["groupdel", GROUP_NAME], capture_output=True)


def creds(uid: int) -> tuple[int, int, list[int]]:
    """(uid, gid, groups) of a test user; 0 is root."""
    if uid == 0:
        return 0, 0, [0]
    if uid == MEMBER:
        return uid, uid, [uid, GROUP]
    return uid, uid, [uid]


PRELUDE = textwrap.dedent("""
    import errno, json, mmap, os, stat, sys
    b = sys.argv[1]
    os.umask(int(sys.argv[2], 8))
    out = []
    def p(*parts):
        return os.path.join(b, *parts)
    def do(label, fn):
        try:
            r = fn()
            out.append([label, "ok", r if isinstance(r, (int, str, list, type(None))) else repr(r)])
        except OSError as e:
            out.append([label, errno.errorcode[e.errno]])
    def mode(path):
        return oct(os.stat(path).st_mode)
""")


def run_script(uid: int, base: Path, body: str, umask: int = 0o022) -> list[Any]:
    u, g, groups = creds(uid)
    code = PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    r = run_as(u, g, [PY, "-c", code, str(base), oct(umask)[2:]], groups=groups, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def env(workdir: Path, users: dict[str, int]) -> Iterator[tuple[Path, Mount]]:
    """A native directory and a mount (allow_other; default_permissions is the default), both 0777."""
    nat, src = workdir / "native", workdir / "src"
    for d in (nat, src):
        d.mkdir()
        os.chmod(d, 0o777)
    with Mount(src, workdir / "mnt", "-o", "allow_other") as m:
        yield nat, m


def both(env: tuple[Path, Mount]) -> tuple[Path, Path]:
    return env[0], env[1].mnt


def same(env: tuple[Path, Mount], uid: int, body: str, umask: int = 0o022) -> list[Any]:
    """Run `body` as `uid` natively and through the mount; their outcomes must be equal."""
    nat, mnt = both(env)
    native = run_script(uid, nat, body, umask)
    mounted = run_script(uid, mnt, body, umask)
    assert mounted == native
    return native


# -- ACLs as xattrs (no setfacl needed) ----------------------------------------------------------------------
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20
_NO_ID = 0xFFFFFFFF


def acl(*entries: tuple[int, int, int | None]) -> bytes:
    """The system.posix_acl_* xattr value of (tag, perm, id) entries (sorted as the kernel wants)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, _NO_ID if i is None else i)
                                            for tag, perm, i in sorted(entries, key=lambda e: (e[0], e[2] or 0)))


def acl_entries(value: bytes) -> list[tuple[int, int, int]]:
    return [struct.unpack_from("<HHI", value, 4 + 8 * i) for i in range((len(value) - 4) // 8)]


def read_acl(path: Path, name: str) -> list[tuple[int, int, int]] | str:
    try:
        return acl_entries(os.getxattr(path, f"system.posix_acl_{name}"))
    except OSError as e:
        return os.strerror(e.errno)


# ------------------------------------------------------------------------------------------------------------
# 8. An fd on a directory replaced by rename keeps working.
def test_fd_on_directory_replaced_by_rename(env: tuple[Path, Mount]) -> None:
    for b in both(env):
        os.mkdir(b / "a")
        os.mkdir(b / "b")
    same(env, 0, """
        fd = os.open(p("a"), os.O_RDONLY | os.O_DIRECTORY)
        do("rename", lambda: os.rename(p("b"), p("a")))
        do("fstat", lambda: (oct(os.fstat(fd).st_mode), os.fstat(fd).st_nlink))
        do("fchmod", lambda: os.fchmod(fd, 0o700))
        do("fstat-after", lambda: oct(os.fstat(fd).st_mode))
        do("getdents", lambda: os.listdir(fd))
        do("openat", lambda: os.open("x", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        do("fchdir", lambda: os.fchdir(fd))
        do("getcwd", lambda: os.getcwd().endswith("(deleted)") or os.getcwd())
        os.close(fd)
    """)


# 2. setuid/setgid clearing on writes by a non-owner, and inheritance in setgid directories.
SETID_MODES = [0o6777, 0o6766, 0o6676, 0o6666, 0o4777, 0o2777, 0o2767]


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "o_direct"])
@pytest.mark.parametrize("uid", [0, MEMBER, STRANGER], ids=["root", "member", "other"])
def test_write_by_non_owner_clears_setid(env: tuple[Path, Mount], uid: int, direct: bool) -> None:
    for b in both(env):
        for m in SETID_MODES:
            f = b / f"f{m:o}"
            f.write_bytes(b"\0" * 8192)
            os.chown(f, OWNER, GROUP)
            os.chmod(f, m)
    results = same(env, uid, f"""
        flags = os.O_WRONLY | ({os.O_DIRECT} if {direct} else 0)
        buf = mmap.mmap(-1, 4096)
        buf.write(b"x" * 4096)
        for m in {SETID_MODES}:
            f = p("f%o" % m)
            os.stat(f)  # cached by the mount before the write
            def write(f=f):
                fd = os.open(f, flags)
                try:
                    return os.write(fd, buf)
                finally:
                    os.close(fd)
            do("write %o" % m, write)
            do("mode %o" % m, lambda f=f: mode(f))
            do("truncate %o" % m, lambda f=f: os.truncate(f, 4096))
            do("mode-after-truncate %o" % m, lambda f=f: mode(f))
    """)
    modes = {r[0]: r[2] for r in results if r[0].startswith("mode ")}
    if uid == 0:
        assert modes["mode 6777"] == "0o106777"
    else:
        assert modes["mode 6777"] == "0o100777"
        # setgid without group exec is kept for members of the file's group only
        assert modes["mode 6766"] == ("0o102766" if uid == MEMBER else "0o100766")


@pytest.mark.parametrize("acl_on_dir", [False, True], ids=["plain", "default-acl"])
@pytest.mark.parametrize("uid", [0, MEMBER, STRANGER], ids=["root", "member", "other"])
@pytest.mark.parametrize("umask", [0o022, 0o010, 0o000])
def test_create_in_setgid_directory(env: tuple[Path, Mount], uid: int, umask: int, acl_on_dir: bool) -> None:
    for b in both(env):
        os.mkdir(b / "sgid")
        os.chown(b / "sgid", 0, GROUP)
        os.chmod(b / "sgid", 0o2777)
        if acl_on_dir:
            os.setxattr(b / "sgid", "system.posix_acl_default",
                        acl((ACL_USER_OBJ, 7, None), (ACL_GROUP_OBJ, 7, None), (ACL_OTHER, 5, None)))
    same(env, uid, """
        for m in (0o666, 0o2666, 0o2777, 0o777, 0o2755):
            name = p("sgid", "f%o" % m)
            do("create %o" % m, lambda name=name, m=m: os.close(os.open(name, os.O_CREAT | os.O_WRONLY, m)))
            do("mode f%o" % m, lambda name=name: (mode(name), os.stat(name).st_gid))
        for m in (0o777, 0o2777, 0o755):
            name = p("sgid", "d%o" % m)
            do("mkdir %o" % m, lambda name=name, m=m: os.mkdir(name, m))
            do("mode d%o" % m, lambda name=name: (mode(name), os.stat(name).st_gid))
        do("mknod", lambda: os.mknod(p("sgid", "fifo"), 0o2777 | stat.S_IFIFO))
        do("mode fifo", lambda: (mode(p("sgid", "fifo")), os.stat(p("sgid", "fifo")).st_gid))
    """, umask)


# 3. Default ACLs: the umask is not applied where the parent has one; the children inherit them.
@pytest.mark.parametrize("uid", [0, MEMBER], ids=["root", "user"])
@pytest.mark.parametrize("umask", [0o077, 0o022])
def test_default_acl_replaces_umask(env: tuple[Path, Mount], uid: int, umask: int) -> None:
    default = acl((ACL_USER_OBJ, 4, None), (ACL_USER, 6, OWNER), (ACL_GROUP_OBJ, 7, None), (ACL_MASK, 7, None),
                  (ACL_OTHER, 5, None))
    for b in both(env):
        for d in ("acl", "plain"):
            os.mkdir(b / d)
            os.chmod(b / d, 0o777)
        os.setxattr(b / "acl", "system.posix_acl_default", default)
    same(env, uid, """
        for d in ("acl", "plain"):
            do(d + " create", lambda: os.close(os.open(p(d, "f"), os.O_CREAT | os.O_WRONLY, 0o666)))
            do(d + " mkdir", lambda: os.mkdir(p(d, "d"), 0o777))
            do(d + " mknod", lambda: os.mkfifo(p(d, "fifo"), 0o666))
            do(d + " nested", lambda: os.mkdir(p(d, "d", "e"), 0o750))
            for n in ("f", "d", "fifo", "d/e"):
                do(d + " mode " + n, lambda n=n: mode(p(d, n)))
    """, umask)
    nat, mnt = both(env)
    for rel in ("acl/f", "acl/d", "acl/fifo", "acl/d/e", "plain/f", "plain/d"):
        for kind in ("access", "default"):
            assert read_acl(mnt / rel, kind) == read_acl(nat / rel, kind), (rel, kind)
    # Sanity: the ACL's user::r-- and group::rwx, not the umask, made the file's mode.
    assert stat.S_IMODE(os.stat(mnt / "acl" / "f").st_mode) == 0o464


def test_access_acl_grants_and_denies_as_natively(env: tuple[Path, Mount]) -> None:
    for b in both(env):
        f = b / "f"
        f.write_bytes(b"data")
        os.chown(f, OWNER, OWNER)
        os.chmod(f, 0o600)
        os.setxattr(f, "system.posix_acl_access",
                    acl((ACL_USER_OBJ, 6, None), (ACL_USER, 4, STRANGER), (ACL_GROUP_OBJ, 0, None),
                        (ACL_GROUP, 6, GROUP), (ACL_MASK, 6, None), (ACL_OTHER, 0, None)))
    for uid in (STRANGER, MEMBER):
        same(env, uid, """
            do("read", lambda: open(p("f"), "rb").read().decode())
            do("write", lambda: open(p("f"), "ab").write(b"x"))
            do("access", lambda: [os.access(p("f"), m) for m in (os.R_OK, os.W_OK, os.X_OK)])
        """)


# 1. Execute-only files owned by another user.
@pytest.mark.parametrize("mode,uid", [
    (0o100, OWNER), (0o010, MEMBER), (0o001, STRANGER), (0o001, MEMBER), (0o111, STRANGER), (0o100, STRANGER)])
def test_execute_only_file(env: tuple[Path, Mount], mode: int, uid: int) -> None:
    for b in both(env):
        shutil.copy("/usr/bin/true", b / "prog")
        os.chown(b / "prog", OWNER, GROUP)
        os.chmod(b / "prog", mode)
    results = same(env, uid, """
        import subprocess
        do("exec", lambda: subprocess.run([p("prog")]).returncode)
        do("read", lambda: len(open(p("prog"), "rb").read()) > 0)
        do("access", lambda: [os.access(p("prog"), m) for m in (os.R_OK, os.X_OK)])
    """)
    runs = (mode, uid) in ((0o100, OWNER), (0o010, MEMBER), (0o001, STRANGER), (0o111, STRANGER))
    assert results[0] == (["exec", "ok", 0] if runs else ["exec", "EACCES"])  # (group class: no "other" bits)


# 4. atime mount options.
@pytest.mark.parametrize("option", ["relatime", "noatime", "nodiratime", "strictatime"])
@pytest.mark.parametrize("uid", [0, STRANGER], ids=["root", "user"])
def test_atime_options(workdir: Path, users: dict[str, int], option: str, uid: int) -> None:
    """The native directory and SOURCE are bind mounts: the native one with `option`, SOURCE with it where
    it is SOURCE's own to apply (relatime, strictatime: docs/posix.md)."""
    nat, natb, src, srcb = (workdir / n for n in ("native", "native.b", "src", "src.b"))
    binds = []
    try:
        for d, b, opt in ((nat, natb, option), (src, srcb, option if option.endswith("relatime") or
                                                   option == "strictatime" else "relatime")):
            d.mkdir()
            b.mkdir()
            subprocess.run(["mount", "--bind", str(d), str(b)], check=True)
            binds.append(b)
            subprocess.run(["mount", "-o", f"remount,bind,{opt}", str(b)], check=True)
            os.chmod(b, 0o777)
        with Mount(srcb, workdir / "mnt", "-o", f"allow_other,{option}") as m:
            now = int(__import__("time").time())
            for b in (natb, m.mnt):
                for name in ("old", "recent"):
                    (b / name).write_bytes(b"data")
                shutil.copy("/usr/bin/true", b / "prog")
                os.chmod(b / "prog", 0o755)
                os.mkdir(b / "dir")
                (b / "dir" / "x").write_bytes(b"")
                for name in ("old", "recent", "prog", "dir"):
                    os.utime(b / name, (now - 10 * 86400, now - 5 * 86400))  # atime before mtime
            results = []
            for b in (natb, m.mnt):
                results.append(run_script(uid, b, """
                    import subprocess, time
                    def changed(name, fn):
                        before = os.stat(p(name)).st_atime_ns
                        fn()
                        return os.stat(p(name)).st_atime_ns != before
                    do("read old", lambda: changed("old", lambda: open(p("old"), "rb").read()))
                    open(p("recent"), "rb").read()  # atime now after ctime: relatime leaves the next read
                    time.sleep(0.05)
                    do("read again", lambda: changed("recent", lambda: open(p("recent"), "rb").read()))
                    do("exec", lambda: changed("prog", lambda: subprocess.run([p("prog")])))
                    do("readdir", lambda: changed("dir", lambda: os.listdir(p("dir"))))
                """))
            assert results[1] == results[0]
            expect = {"relatime": [True, False, True, True], "noatime": [False, False, False, False],
                      "nodiratime": [True, False, True, False], "strictatime": [True, True, True, True]}[option]
            assert [r[2] for r in results[0]] == expect
    finally:
        for b in reversed(binds):
            subprocess.run(["umount", str(b)], capture_output=True)


# 5. mmap of a file opened with O_DIRECT.
def test_mmap_of_o_direct_file(env: tuple[Path, Mount]) -> None:
    from fuse_passthrough.lowlevel import binding
    if binding.VERSION < (3, 17):
        pytest.skip("needs libfuse >= 3.17 (FUSE_CAP_DIRECT_IO_ALLOW_MMAP) and Linux >= 6.6; this libfuse is "
                    f"{binding.VERSION[0]}.{binding.VERSION[1]}")
    for b in both(env):
        (b / "f").write_bytes(b"a" * 8192)
        os.chmod(b / "f", 0o666)
    same(env, STRANGER, """
        fd = os.open(p("f"), os.O_RDWR | os.O_DIRECT)
        def mapped():
            m = mmap.mmap(fd, 8192)
            try:
                first = m[:4].decode()
                m[0:4] = b"bbbb"
                m.flush()
                return first
            finally:
                m.close()
        do("mmap", mapped)
        do("read-back", lambda: open(p("f"), "rb").read(4).decode())
        os.close(fd)
    """)
