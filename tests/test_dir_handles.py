"""Directories opened without a handle of ours (the default where the open needs no check of ours: the first
OPENDIR is answered ENOSYS and the kernel opens directories itself) against the native filesystem: readers that
interleave, stop early, seek back, fsync; the trace; and what keeps the handles (-o dir_handles, a fault rule on
opendir)."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import Mount

_libc = ctypes.CDLL(None, use_errno=True)


class _Dirent(ctypes.Structure):  # struct dirent on 64-bit Linux (= dirent64)
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64), ("d_reclen", ctypes.c_ushort),
                ("d_type", ctypes.c_ubyte), ("d_name", ctypes.c_char * 256)]


_libc.opendir.restype = ctypes.c_void_p
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.readdir.restype = ctypes.POINTER(_Dirent)
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.telldir.restype = ctypes.c_long
_libc.telldir.argtypes = [ctypes.c_void_p]
_libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
_libc.closedir.argtypes = [ctypes.c_void_p]


class _Stream:
    """A libc directory stream, read one entry at a time (getdents of 32 KiB underneath)."""

    def __init__(self, path: Path) -> None:
        self.dirp = _libc.opendir(os.fsencode(path))
        if not self.dirp:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), str(path))

    def next(self) -> str | None:
        ctypes.set_errno(0)
        d = _libc.readdir(self.dirp)
        if not d:
            assert ctypes.get_errno() == 0, os.strerror(ctypes.get_errno())
            return None
        return os.fsdecode(d.contents.d_name)

    def rest(self) -> list[str]:
        names = []
        while (name := self.next()) is not None:
            names.append(name)
        return names

    def close(self) -> None:
        _libc.closedir(self.dirp)


@contextmanager
def _mounted(workdir: Path, *args: str) -> Iterator[tuple[Path, Mount]]:
    """(a native directory, the mount) over the same SOURCE layout."""
    native = workdir / "native"
    native.mkdir()
    with Mount(workdir / "src", workdir / "mnt", *args) as m:
        yield native, m


def _fill(root: Path, n: int) -> None:
    d = root / "d"
    d.mkdir()
    for i in range(n):
        (d / f"entry-{i:05d}-{'x' * 60}").touch()


@pytest.mark.parametrize("args", [[], ["-o", "dir_handles"]], ids=["default", "dir_handles"])
def test_interleaved_readers_each_see_every_unchanged_name_once(workdir: Path, args: list[str]) -> None:
    """Two streams on one directory of 3,000 names read alternately, one name each, while names are created and
    removed: natively and through the mount, each stream returns every name that was there throughout exactly
    once, and no name twice."""
    with _mounted(workdir, *args) as (native, m):
        for root in (native, m.mnt):
            _fill(root, 3000)
            d = root / "d"
            before = set(os.listdir(d))
            a, b = _Stream(d), _Stream(d)
            seen: tuple[list[str], list[str]] = ([], [])
            try:
                for step in range(4000):
                    for stream, names in ((a, seen[0]), (b, seen[1])):
                        name = stream.next()
                        if name is not None:
                            names.append(name)
                    if step % 50 == 0:  # churn: a new name, and one of the originals removed
                        (d / f"new-{step}").touch()
                        os.unlink(d / f"entry-{step // 50:05d}-{'x' * 60}")
                seen[0].extend(a.rest())
                seen[1].extend(b.rest())
            finally:
                a.close()
                b.close()
            stayed = before - {f"entry-{i:05d}-{'x' * 60}" for i in range(80)}
            for names in seen:
                assert len(names) == len(set(names)), root  # no name twice
                assert stayed <= set(names), (root, len(stayed - set(names)))  # none that stayed missed


def test_many_readers_that_stop_early_then_go_on(workdir: Path) -> None:
    """More streams than the daemon keeps listings for (512) each read a few names, then all go on to the end:
    each still returns the whole directory once, as natively."""
    with _mounted(workdir) as (native, m):
        for root in (native, m.mnt):
            _fill(root, 600)
            d = root / "d"
            expected = sorted([".", "..", *os.listdir(d)])
            streams = [_Stream(d) for _ in range(600)]
            try:
                heads = [[s.next() for _ in range(3)] for s in streams]
                for s, head in zip(streams, heads, strict=True):
                    names = [n for n in head if n is not None] + s.rest()
                    assert sorted(names) == expected, root
            finally:
                for s in streams:
                    s.close()


def test_seekdir_back_reads_the_same_names_again(workdir: Path) -> None:
    """telldir after some names, read on, seekdir back: the same names follow again, natively and through the
    mount (offsets name positions in the reader's own listing)."""
    with _mounted(workdir) as (native, m):
        results = []
        for root in (native, m.mnt):
            _fill(root, 500)
            s = _Stream(root / "d")
            try:
                for _ in range(200):
                    s.next()
                pos = _libc.telldir(s.dirp)
                after = [s.next() for _ in range(100)]
                s.rest()
                _libc.seekdir(s.dirp, pos)
                again = [s.next() for _ in range(100)]
            finally:
                s.close()
            assert after == again and None not in after, root
            results.append(len(after))
        assert results[0] == results[1]


def test_fsync_of_a_directory_and_a_removed_open_directory(workdir: Path) -> None:
    """fsync/fdatasync of a directory fd succeed; a directory removed while open lists nothing and its fd still
    fsyncs, as natively."""
    with _mounted(workdir) as (native, m):
        outcomes = []
        for root in (native, m.mnt):
            (root / "d").mkdir()
            fd = os.open(root / "d", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
                os.fdatasync(fd)
                os.rmdir(root / "d")
                outcomes.append((os.listdir(fd), os.fsync(fd)))
            finally:
                os.close(fd)
        assert outcomes[0] == outcomes[1] == ([], None)


def test_the_trace_shows_one_opendir_answered_enosys_and_no_releasedir(workdir: Path) -> None:
    (workdir / "src" / "d").mkdir(parents=True)
    with Mount(workdir / "src", workdir / "mnt") as m:
        for i in range(5):
            (m.mnt / "d" / f"f{i}").touch()  # a change each time: the next listing reaches the daemon
            assert sorted(os.listdir(m.mnt / "d")) == [f"f{k}" for k in range(i + 1)]
        assert m.unmount() == 0
    events = [e for e in m.events() if e["path"] == "/d"]
    assert [e["errno"] for e in events if e["op"] == "opendir"] == ["ENOSYS"]
    assert not [e for e in events if e["op"] == "releasedir"]
    listings = [e for e in events if e["op"] in ("readdir", "readdirplus") and e["result"] and e["result"]["entries"]]
    assert len(listings) == 5 and all(e["args"]["fh"] == 0 for e in listings)


@pytest.mark.parametrize("args", [["-o", "dir_handles"], ["--fault", "op=opendir,errno=EACCES,every=2"],
                                  ["-o", "timeout=0"], ["-o", "nowatch"], ["-o", "noauto_cache"]],
                         ids=["dir_handles", "fault-rule", "strict", "nowatch", "noauto_cache"])
def test_what_keeps_directory_handles(workdir: Path, args: list[str]) -> None:
    """-o dir_handles, a fault rule that names opendir, and the modes that check listings at each open keep
    an OPENDIR and a RELEASEDIR per open of a directory."""
    (workdir / "src" / "d").mkdir(parents=True)
    with Mount(workdir / "src", workdir / "mnt", *args) as m:
        failed = 0
        for _ in range(6):
            try:
                os.listdir(m.mnt / "d")
            except PermissionError as e:
                assert e.errno == errno.EACCES
                failed += 1
        assert m.unmount() == 0
    events = [e for e in m.events() if e["path"] == "/d"]
    opendirs = [e for e in events if e["op"] == "opendir"]
    assert len(opendirs) == 6 and not [e for e in opendirs if e["errno"] not in (None, "EACCES")]
    assert len([e for e in events if e["op"] == "releasedir"]) == 6 - failed
    assert failed == (3 if "--fault" in args else 0)


def test_a_reader_goes_on_after_its_offset_in_any_later_listing(tmp_path: Path) -> None:
    """Offsets are hashes of the names: after a change and a listing read again by another reader, a reader
    going on after its offset gets every name still there that it has not had, none twice."""
    from fuse_passthrough.inode_ops import InodeOperations
    from fuse_passthrough.inodes import ROOT_ID

    for i in range(300):
        (tmp_path / f"f{i}").touch()
    ops = InodeOperations(str(tmp_path))
    try:
        for k in (0, 1, 2, 50, 150, 299):
            (offsets, entries), start = ops._listing(ROOT_ID, 0, 0)
            assert start == 0 and len(entries) == 302 and offsets == sorted(set(offsets))
            had = {name for name, _, _ in entries[:k + 1]}
            at = offsets[k]
            going = [os.fsdecode(name) for name, _, _ in entries[max(k + 1, 2):k + 21]]
            for name in going:  # names it has not had: some go
                os.unlink(tmp_path / name)
            gone = [os.fsdecode(name) for name, _, _ in entries[2:min(k + 1, 4)]]
            for name in gone:  # and some it had: gone for good
                os.unlink(tmp_path / name)
            for name, _, _ in entries[4:min(k + 1, 7)]:  # or back under other inodes
                os.unlink(tmp_path / os.fsdecode(name))
                (tmp_path / os.fsdecode(name)).touch()
            for i in range(20):
                (tmp_path / f"new{k}-{i}").touch()
                (tmp_path / f"a{k}-{i}").touch()  # before every other name in any order by name
            ops._listing(ROOT_ID, 0, 0)  # another reader lists it again
            (offsets2, entries2), start = ops._listing(ROOT_ID, at, 0)
            rest = [name for name, _, _ in entries2[start:]]
            assert len(rest) == len(set(rest)) and not had & set(rest)
            added = {b"%s%d-%d" % (p, k, i) for i in range(20) for p in (b"new", b"a")}
            stayed = {os.fsencode(n) for n in os.listdir(tmp_path)} - had - added
            assert stayed <= set(rest)
            for i in range(20):  # back to 300 names
                os.unlink(tmp_path / f"new{k}-{i}")
                os.unlink(tmp_path / f"a{k}-{i}")
            for name in going + gone:
                (tmp_path / name).touch()
    finally:
        ops.close()
