"""Kernel caching: what a cached (default) mount and a strict one (-o timeout=0) show after changes made directly
in SOURCE, and what caching saves in requests. Changes made *through* the mount are covered, field by field
and with hard links, by tests/test_differential.py in both modes."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import Mount
from posixcmp import assert_same_stat, outcome

# mode name -> (mount args, how long a change made in SOURCE may take to show (s), environment)
MODES: dict[str, tuple[list[str], float, dict[str, str]]] = {
    "strict": (["-o", "timeout=0"], 0.0, {}),
    "cached-nowatch": (["-o", "timeout=0.5,nowatch"], 0.5, {}),
    # a long timeout: only the watcher can make it fast; as root fanotify, else (or when told) inotify
    "cached-fanotify": (["-o", "timeout=30"], 0.1, {}),
    "cached-inotify": (["-o", "timeout=30"], 0.1, {"FUSE_PASSTHROUGH_NO_FANOTIFY": "1"}),
}


def within(bound: float, check: Callable[[], bool]) -> float:
    """Seconds until check() holds; fails if that takes longer than bound (+ scheduling slack)."""
    t0 = time.monotonic()
    deadline = t0 + bound + 0.4
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.EIO, errno.ESTALE):
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {bound} s: {check.__doc__ or check}")
        time.sleep(0.01)


def same(mnt: Path, src: Path) -> Callable[[], bool]:
    def check() -> bool:
        try:
            assert_same_stat(mnt, src)
            return True
        except AssertionError:
            return False
    return check


@pytest.mark.parametrize("mode", list(MODES))
def test_changes_made_in_source_show_within_the_bound(workdir: Path, mode: str) -> None:
    args, bound, env = MODES[mode]
    with Mount(workdir / "src", workdir / "mnt", *args, env={**os.environ, **env}) as m:
        mnt, src = m.mnt, m.src
        (mnt / "f").write_bytes(b"old content")
        assert (mnt / "f").read_bytes() == b"old content"
        assert_same_stat(mnt / "f", src / "f")
        os.stat(mnt)
        waits = []
        # modify (an editor writing the file and closing it)
        (src / "f").write_bytes(b"new!")
        waits.append(within(bound, lambda: (mnt / "f").read_bytes() == b"new!"))
        waits.append(within(bound, same(mnt / "f", src / "f")))
        # chmod
        os.chmod(src / "f", 0o600)
        waits.append(within(bound, lambda: stat.S_IMODE(os.stat(mnt / "f").st_mode) == 0o600))
        # create
        (src / "new").write_bytes(b"created in SOURCE")
        waits.append(within(bound, lambda: (mnt / "new").read_bytes() == b"created in SOURCE"))
        waits.append(within(bound, lambda: "new" in os.listdir(mnt)))
        # rename
        os.rename(src / "f", src / "g")
        waits.append(within(bound, lambda: outcome(os.stat, mnt / "f") == ("err", "ENOENT")))
        waits.append(within(bound, lambda: (mnt / "g").read_bytes() == b"new!"))
        waits.append(within(bound, lambda: sorted(os.listdir(mnt)) == sorted(os.listdir(src))))
        # a new hard link: the link count under the old name
        os.link(src / "g", src / "h")
        waits.append(within(bound, lambda: os.stat(mnt / "g").st_nlink == 2))
        # delete
        os.unlink(src / "new")
        waits.append(within(bound, lambda: outcome(os.stat, mnt / "new") == ("err", "ENOENT")))
        waits.append(within(bound, lambda: "new" not in os.listdir(mnt)))
        # the directory itself (mtime, link count)
        os.mkdir(src / "dir")
        waits.append(within(bound, same(mnt, src)))
        # deeper: a directory the mount has used, then a change inside it
        (mnt / "sub").mkdir()
        (mnt / "sub" / "x").write_text("1")
        assert os.listdir(mnt / "sub") == ["x"]
        (src / "sub" / "y").write_text("2")
        os.chmod(src / "sub" / "x", 0o640)
        waits.append(within(bound, lambda: sorted(os.listdir(mnt / "sub")) == ["x", "y"]))
        waits.append(within(bound, lambda: stat.S_IMODE(os.stat(mnt / "sub" / "x").st_mode) == 0o640))
        waits.append(within(bound, same(mnt / "sub", src / "sub")))
        # a whole tree removed (rm -r): the changes inside directories that are gone by the time they are read
        fd = os.open(mnt / "sub" / "x", os.O_RDONLY)  # an open file keeps its inode known to the mount
        try:
            shutil.rmtree(src / "sub")
            waits.append(within(bound, lambda: outcome(os.stat, mnt / "sub" / "x") == ("err", "ENOENT")))
            waits.append(within(bound, lambda: outcome(os.stat, mnt / "sub") == ("err", "ENOENT")))
            assert os.pread(fd, 10, 0) == b"1"
        finally:
            os.close(fd)
        assert m.unmount() == 0
    if mode == "strict":
        assert max(waits) < 0.05, waits  # seen at the first look


def test_strict_mode_is_exact_at_once_even_for_a_changed_type(workdir: Path) -> None:
    """Strict mode: a file replaced by a directory in SOURCE is a directory at the next stat."""
    with Mount(workdir / "src", workdir / "mnt", "-o", "timeout=0") as m:
        (m.mnt / "g").write_text("x")
        assert os.stat(m.mnt / "g").st_size == 1
        os.unlink(m.src / "g")
        os.mkdir(m.src / "g")
        assert stat.S_ISDIR(os.stat(m.mnt / "g").st_mode)
        assert_same_stat(m.mnt / "g", m.src / "g")


def _lookups(m: Mount, path: str) -> int:
    """Successful lookups/getattrs by path (the negative ones before a name exists are not counted)."""
    return sum(1 for e in m.events() if e["path"] == path and e["errno"] is None
               and (e["op"] == "lookup" or e["op"] == "getattr" and e["args"]["fh"] is None))


@pytest.mark.parametrize("mode", ["strict", "cached"])
def test_requests_per_stat_of_a_deep_path(workdir: Path, mode: str) -> None:
    """Cached: stat of a path N levels deep costs O(1) requests once cached, not one per level per call."""
    depth, repeats = 40, 50
    args = ["-o", "timeout=0"] if mode == "strict" else ["-o", "timeout=30"]
    with Mount(workdir / "src", workdir / "mnt", *args) as m:
        deep = m.mnt
        for _ in range(depth):
            deep = deep / "d"
            deep.mkdir()
        for _ in range(repeats):
            os.stat(deep)
        assert m.unmount() == 0
    top = _lookups(m, "/d")
    deepest = _lookups(m, "/" + "/".join(["d"] * depth))
    if mode == "strict":
        assert top >= repeats and deepest >= repeats  # every stat walks every level again
    else:
        assert top <= 3 and deepest <= 3, (top, deepest)


def test_trace_of_a_cached_mount_shows_only_what_reaches_the_daemon(workdir: Path) -> None:
    """The README's statement: repeated stats of a cached file are answered by the kernel, not traced."""
    with Mount(workdir / "src", workdir / "mnt", "-o", "timeout=30") as m:
        (m.mnt / "f").write_text("x")
        for _ in range(20):
            os.stat(m.mnt / "f")
        assert m.unmount() == 0
    assert _lookups(m, "/f") < 5
