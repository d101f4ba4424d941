"""Containment: symlinks planted in SOURCE never lead the operations layer outside it.

The layer is called directly (no mount, no credential switching), with the paths a FUSE request could carry.
Each test snapshots a directory outside SOURCE and asserts it is unchanged, and that the operation failed with
the errno of a refused symlink (ELOOP from openat2's RESOLVE_NO_SYMLINKS or O_NOFOLLOW, ENOTDIR from the
component-wise fallback, ENOENT for "." and "..").
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fuse_passthrough.passthrough import Passthrough

REFUSED = {errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EXDEV}


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


@pytest.fixture(params=["openat2", "fallback"])
def fs(request: pytest.FixtureRequest, workdir: Path) -> Iterator[tuple[Passthrough, Path, Path]]:
    """(layer, source, outside): source holds symlinks of every kind into `outside`."""
    src, outside = workdir / "src", workdir / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(b"secret")
    (outside / "sub" / "deep").write_bytes(b"deep")
    os.setxattr(outside / "secret", "user.k", b"v")
    (src / "real" / "inner").mkdir(parents=True)
    (src / "real" / "f").write_bytes(b"inside")
    (src / "dir").symlink_to(outside)                      # absolute symlink to a directory outside
    (src / "rel").symlink_to("../outside")                 # relative one
    (src / "real" / "nested").symlink_to(outside)          # deeper in the tree
    (src / "link").symlink_to(outside / "secret")          # a final component pointing at a file outside
    (src / "dlink").symlink_to(outside / "sub")            # ... at a directory outside
    p = Passthrough(str(src), caller_credentials=False)
    p._openat2 = request.param == "openat2"
    try:
        yield p, src, outside
    finally:
        p.close()


def refused(call: Callable[[], Any]) -> int:
    with pytest.raises(OSError) as exc:
        fh = call()
        if isinstance(fh, int):  # an escape that returned a descriptor: close it, then fail
            os.close(fh)
    assert exc.value.errno in REFUSED, exc.value
    return exc.value.errno  # type: ignore[no-any-return]


VIA = ["/dir", "/rel", "/real/nested"]
W = os.O_WRONLY


def inner_ops(p: Passthrough, via: str) -> dict[str, Callable[[], Any]]:
    s, n = f"{via}/secret", f"{via}/new"
    return {
        "getattr": lambda: p.getattr(s),
        "access": lambda: p.access(s, os.R_OK),
        "open-read": lambda: p.open(s, os.O_RDONLY),
        "open-write-trunc": lambda: p.open(s, W | os.O_TRUNC),
        "create": lambda: p.create(n, 0o644, W | os.O_CREAT),
        "create-excl": lambda: p.create(n, 0o644, W | os.O_CREAT | os.O_EXCL),
        "mkdir": lambda: p.mkdir(n, 0o755),
        "mknod": lambda: p.mknod(n, stat.S_IFIFO | 0o644, 0),
        "symlink": lambda: p.symlink(n, "/etc/passwd"),
        "link-into": lambda: p.link(n, "/real/f"),
        "link-from": lambda: p.link("/real/h", s),
        "unlink": lambda: p.unlink(s),
        "rmdir": lambda: p.rmdir(f"{via}/sub"),
        "rename-out": lambda: p.rename(s, "/stolen"),
        "rename-in": lambda: p.rename("/real/f", n),
        "rename-exchange": lambda: p.rename("/real/f", s, 2),
        "chmod": lambda: p.chmod(s, 0o777),
        "chown": lambda: p.chown(s, 65534, 65534),
        "truncate": lambda: p.truncate(s, 0),
        "utimens": lambda: p.utimens(s, ((1, 0), (1, 0))),
        "setxattr": lambda: p.setxattr(s, "user.k", b"stolen", 0),
        "removexattr": lambda: p.removexattr(s, "user.k"),
        "getxattr": lambda: p.getxattr(s, "user.k"),
        "listxattr": lambda: p.listxattr(s),
        "readlink": lambda: p.readlink(f"{via}/sub"),
        "statfs": lambda: p.statfs(s),
        "opendir-inner": lambda: p.opendir(f"{via}/sub"),
        "opendir-dir": lambda: p.opendir(via),
    }


OPS = list(inner_ops(None, "/x").keys())  # type: ignore[arg-type]


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize("op", OPS)
def test_symlinked_directory_component_is_refused(fs: tuple[Passthrough, Path, Path], via: str, op: str) -> None:
    p, src, outside = fs
    before, before_src = snapshot(outside), snapshot(src / "real")
    refused(inner_ops(p, via)[op])
    assert snapshot(outside) == before
    assert snapshot(src / "real") == before_src
    assert not (src / "stolen").exists()


@pytest.mark.parametrize("op", ["open-read", "open-write", "open-trunc", "create", "truncate", "chmod",
                                "setxattr", "removexattr", "opendir", "utimens", "chown", "getattr"])
@pytest.mark.parametrize("link", ["/link", "/dlink"])
def test_final_symlink_is_not_followed(fs: tuple[Passthrough, Path, Path], op: str, link: str) -> None:
    p, src, outside = fs
    before = snapshot(outside)
    calls: dict[str, Callable[[], Any]] = {
        "open-read": lambda: p.open(link, os.O_RDONLY),
        "open-write": lambda: p.open(link, os.O_WRONLY),
        "open-trunc": lambda: p.open(link, os.O_WRONLY | os.O_TRUNC),
        "create": lambda: p.create(link, 0o644, os.O_WRONLY | os.O_CREAT),
        "truncate": lambda: p.truncate(link, 0),
        "chmod": lambda: p.chmod(link, 0o777),
        "setxattr": lambda: p.setxattr(link, "user.k", b"stolen", 0),
        "removexattr": lambda: p.removexattr(link, "user.k"),
        "opendir": lambda: p.opendir(link),
        "utimens": lambda: p.utimens(link, ((1, 0), (1, 0))),
        "chown": lambda: p.chown(link, 65534, 65534),
        "getattr": lambda: p.getattr(link),
    }
    if op in ("utimens", "chown", "getattr"):
        calls[op]()  # allowed: they act on the symlink itself
        assert stat.S_ISLNK(os.lstat(src / link[1:]).st_mode)
        if op == "getattr":
            assert stat.S_ISLNK(p.getattr(link).st_mode)
    else:
        with pytest.raises(OSError) as exc:
            fh = calls[op]()
            if isinstance(fh, int):
                os.close(fh)
        # ELOOP: O_NOFOLLOW; EOPNOTSUPP: chmod of a symlink; EPERM: user.* xattrs on a symlink; EEXIST: O_CREAT.
        assert exc.value.errno in {errno.ELOOP, errno.EOPNOTSUPP, errno.EPERM, errno.ENODATA, errno.EEXIST,
                                   errno.ENOTDIR}, exc.value
    assert snapshot(outside) == before


def test_final_symlink_namespace_ops_act_on_the_link(fs: tuple[Passthrough, Path, Path]) -> None:
    p, src, outside = fs
    before = snapshot(outside)
    assert p.readlink("/link") == str(outside / "secret")
    p.link("/hard", "/link")
    assert stat.S_ISLNK(os.lstat(src / "hard").st_mode)
    p.rename("/link", "/moved")
    p.unlink("/moved")
    p.unlink("/hard")
    p.unlink("/dir")
    assert snapshot(outside) == before
    assert not (src / "dir").exists() and (outside / "secret").exists()


@pytest.mark.parametrize("path", ["/..", "/../outside/secret", "/real/../../outside/secret", "/real/..",
                                  "/./dir/secret", "/real//f"])
def test_dot_components_are_refused(fs: tuple[Passthrough, Path, Path], path: str) -> None:
    p, _src, outside = fs
    before = snapshot(outside)
    for call in (lambda: p.getattr(path), lambda: p.chmod(path, 0o700), lambda: p.open(path, os.O_RDONLY),
                 lambda: p.setxattr(path, "user.z", b"z", 0), lambda: p.opendir(path)):
        refused(call)
    assert snapshot(outside) == before
    assert stat.S_IMODE(os.stat(outside.parent).st_mode) == 0o755


def test_root_and_plain_paths_still_work(fs: tuple[Passthrough, Path, Path]) -> None:
    p, src, _outside = fs
    assert p.getattr("/").st_ino == os.stat(src).st_ino
    fh = p.open("/real/f", os.O_RDONLY)
    try:
        assert p.read("/real/f", 100, 0, fh) == b"inside"
    finally:
        p.release("/real/f", fh)
    fh = p.opendir("/")
    try:
        names = {e[0] for e in p.readdir("/", fh)}
    finally:
        p.releasedir("/", fh)
    assert {"real", "dir", "rel", "link", "dlink", ".", ".."} <= names


def test_directory_swapped_for_symlink_between_operations(fs: tuple[Passthrough, Path, Path]) -> None:
    """The race: a directory the kernel looked up is replaced by a symlink before the next request."""
    p, src, outside = fs
    (src / "d").mkdir()
    (src / "d" / "mine").write_bytes(b"mine")
    before = snapshot(outside)
    assert p.getattr("/d/mine").st_size == 4
    dh = p.opendir("/d")
    fh = p.open("/d/mine", os.O_RDWR)
    try:
        os.rename(src / "d", src / "d.old")
        (src / "d").symlink_to(outside)
        for call in inner_ops(p, "/d").values():
            refused(call)
        refused(lambda: p.getattr("/d/mine"))
        refused(lambda: p.create("/d/secret", 0o644, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
        # Handles opened before the swap still refer to the original directory and file, never to `outside`.
        names = {e[0] for e in p.readdir("/d", dh)}
        assert "mine" in names and "secret" not in names
        assert p.write("/d/mine", b"MINE", 0, fh) == 4
        assert p.getattr("/d/mine", fh).st_ino == os.stat(src / "d.old" / "mine").st_ino
        # And back: a symlink swapped for a real directory works again.
        (src / "d").unlink()
        os.rename(src / "d.old", src / "d")
        assert p.getattr("/d/mine").st_size == 4
    finally:
        p.release("/d/mine", fh)
        p.releasedir("/d", dh)
    assert snapshot(outside) == before
    assert (src / "d" / "mine").read_bytes() == b"MINE"
