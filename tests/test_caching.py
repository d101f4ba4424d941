"""Kernel caching: what a cached (default) mount and a strict one (-o timeout=0) show after changes made directly
in SOURCE, and what caching saves in requests. Changes made *through* the mount are covered, field by field
and with hard links, by tests/test_differential.py in both modes."""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
            later = None  # whether it shows at all: a slow watcher (a busy machine) or a missed change
            while time.monotonic() < deadline + 3 and later is None:
                time.sleep(0.01)
                try:
                    if check():
                        later = time.monotonic() - t0
                except OSError:
                    pass
            raise AssertionError(f"not seen within {bound} s: {check.__doc__ or check} (later: {later})")
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


# -- Cache lifetimes (issue 18, item 3): long timeouts where the watcher sees every change, pages kept -------------
# watcher -> (mount args, environment, how long a change made in SOURCE may take to show through the mount by
# any name, hard links in directories the kernel never saw included). Only fanotify (root) sees every change
# (a filesystem mark): the default timeouts there are long, and the bound is the watcher's. inotify and no
# watcher keep the 1 s timeout, which is then the bound.
WATCHERS: dict[str, tuple[list[str], dict[str, str], float]] = {
    "fanotify": ([], {}, 0.1),
    "inotify": ([], {"FUSE_PASSTHROUGH_NO_FANOTIFY": "1"}, 1.0),
    "nowatch": (["-o", "nowatch"], {}, 1.0),
}


def _requests(m: Mount, path: str, ops: tuple[str, ...] = ("lookup", "getattr")) -> int:
    return sum(1 for e in m.events() if e["op"] in ops and e["path"] == path)


@pytest.mark.parametrize("args", [[], ["-o", "timeout=1"], ["-o", "attr_timeout=1"], ["-o", "nowatch"],
                                  ["FUSE_PASSTHROUGH_NO_FANOTIFY"]], ids=["default", "timeout=1", "attr_timeout=1",
                                                                          "nowatch", "inotify"])
def test_long_timeouts_only_where_the_watcher_sees_everything(workdir: Path, args: list[str]) -> None:
    """Names and attributes outlive 1 s by default under fanotify; a timeout the user gives wins; inotify and no
    watcher keep 1 s."""
    env = dict(os.environ)
    if args == ["FUSE_PASSTHROUGH_NO_FANOTIFY"]:
        env["FUSE_PASSTHROUGH_NO_FANOTIFY"], args = "1", []
    (workdir / "src" / "d").mkdir(parents=True)
    (workdir / "src" / "d" / "f").write_text("x")
    with Mount(workdir / "src", workdir / "mnt", *args, env=env) as m:
        os.stat(m.mnt / "d" / "f")
        time.sleep(1.3)
        os.stat(m.mnt / "d" / "f")
        assert m.unmount() == 0
    asked = _requests(m, "/d/f") + _requests(m, "/d")
    if not args and "FUSE_PASSTHROUGH_NO_FANOTIFY" not in env:
        assert asked == 2, asked  # one lookup each, then the kernel's cache
    else:
        assert asked >= 3, asked  # expired after 1 s


@pytest.mark.parametrize("watcher", [*WATCHERS, "negative_timeout=0"])
def test_absent_names_are_remembered_only_where_their_creation_is_seen(workdir: Path, watcher: str) -> None:
    """A name found absent is remembered by the kernel (a negative entry) for the long timeout under fanotify, so
    that a program probing it again (search paths, lock files) does not ask the daemon; a name made in SOURCE by
    any means (create, hard link, rename, mkdir, symlink) then shows within the watcher's bound, to stat, open,
    open(O_CREAT|O_EXCL) and readdir. Elsewhere, or when the user gives negative_timeout, nothing is kept."""
    args, env, removal_bound = WATCHERS.get(watcher, (["-o", watcher], {}, 0.1))
    src, mnt = workdir / "src", workdir / "mnt"
    (src / "d").mkdir(parents=True)
    (src / "other").write_text("linked")
    (src / "moved").write_text("renamed into place")
    with Mount(src, mnt, *args, env={**os.environ, **env}) as m:
        probes = 0
        for name in ("f", "l", "r", "sub", "sym"):
            for _ in range(3):
                assert outcome(os.stat, mnt / "d" / name) == ("err", "ENOENT")
                probes += 1
        (src / "d" / "f").write_text("created in SOURCE")
        os.link(src / "other", src / "d" / "l")
        os.rename(src / "moved", src / "d" / "r")
        (src / "d" / "sub").mkdir()
        os.symlink("f", src / "d" / "sym")
        bound = 0.1  # every watcher sees names made in a directory it watches; without one nothing was kept
        within(bound, lambda: (mnt / "d" / "f").read_text() == "created in SOURCE")
        within(bound, lambda: os.stat(mnt / "d" / "l").st_nlink == 2)
        within(bound, lambda: (mnt / "d" / "r").read_text() == "renamed into place")
        within(bound, lambda: os.path.isdir(mnt / "d" / "sub"))
        within(bound, lambda: os.readlink(mnt / "d" / "sym") == "f")
        assert sorted(os.listdir(mnt / "d")) == ["f", "l", "r", "sub", "sym"]
        assert outcome(os.open, mnt / "d" / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY) == ("err", "EEXIST")
        # and absent again after a removal in SOURCE (the name's own bound), then made again: never a stale absence
        os.unlink(src / "d" / "f")
        within(removal_bound, lambda: outcome(os.stat, mnt / "d" / "f") == ("err", "ENOENT"))
        (src / "d" / "f").write_text("again")
        within(bound, lambda: (mnt / "d" / "f").read_text() == "again")
        assert m.unmount() == 0
    misses = [e for e in m.events() if e["op"] == "lookup" and e["errno"] is not None
              and e["path"] in {f"/d/{n}" for n in ("f", "l", "r", "sub", "sym")}]
    assert {e["errno"] for e in misses} == {"ENOENT"}  # a remembered absence is still an ENOENT in the trace
    first = [e for e in misses if e["seq"] < min(x["seq"] for x in m.events() if x["path"] == "/d/f"
                                                 and x["errno"] is None)]
    if watcher == "fanotify":
        assert len(first) == 5, first  # one lookup per name, then the kernel's negative entry
    else:
        assert len(first) == probes, first  # every probe asked


def _attributes(path: Path) -> tuple[Any, ...]:
    s = os.stat(path)
    return (stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_nlink, s.st_size, s.st_ino, s.st_mtime_ns,
            s.st_ctime_ns)


def _native(path: Path) -> tuple[Any, ...]:
    """What a program sees of `path`: its type, mode, link count, size and bytes (or its error)."""
    st = outcome(os.stat, path)
    if st[0] == "err":
        return st
    s = st[1]
    data = path.read_bytes() if stat.S_ISREG(s.st_mode) else sorted(os.listdir(path))
    return (stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_nlink, s.st_size, s.st_ino, data)


@pytest.mark.parametrize("watcher", list(WATCHERS))
def test_changes_in_source_show_within_the_bound_with_default_timeouts(workdir: Path, watcher: str) -> None:
    """Default timeouts (long under fanotify): every change made in SOURCE — through the name the mount knows or
    through a hard link in a directory the kernel never saw — is seen within the watcher's bound, by stat, a new
    open, and a descriptor kept open through the mount since before (its cached pages)."""
    args, env, bound = WATCHERS[watcher]
    src, mnt = workdir / "src", workdir / "mnt"
    (src / "w").mkdir(parents=True)
    (src / "u").mkdir()  # never looked up through the mount: no mark, no kernel entry
    (src / "w" / "f").write_bytes(b"0123456789")
    os.link(src / "w" / "f", src / "u" / "g")
    with Mount(src, mnt, *args, env={**os.environ, **env}) as m:
        f, nf, g = mnt / "w" / "f", src / "w" / "f", src / "u" / "g"
        kept = os.open(f, os.O_RDONLY)  # its pages stay cached while it is open
        try:
            assert os.pread(kept, 100, 0) == b"0123456789"
            assert _native(f) == _native(nf)
            time.sleep(1.2)  # past the short timeout: what shows now shows through the long one
            os.stat(f)

            def seen(what: str) -> None:
                """stat shows the change, then the descriptor kept open (no new open, which would drop the pages
                anyway), then a new open."""
                same_attributes = lambda: _attributes(f) == _attributes(nf)  # noqa: E731
                same_attributes.__doc__ = what
                within(bound, same_attributes)
                same_bytes = lambda: os.pread(kept, 100, 0) == g.read_bytes()  # noqa: E731
                same_bytes.__doc__ = what + " (the open descriptor)"
                within(bound, same_bytes)
                assert _native(f) == _native(nf), what
                os.stat(f)  # a read drops the cached atime: stat again, so the next change meets a cached inode

            # the same size, mtime put back (cp -p, rsync -t): only the ctime tells
            before = os.stat(g)
            with open(g, "r+b") as w:
                w.write(b"ABCDEFGHIJ")
            os.utime(g, ns=(before.st_atime_ns, before.st_mtime_ns))
            if watcher == "fanotify":  # elsewhere the kernel drops an open file's pages only for mtime or size
                seen("same-size rewrite, mtime restored, through the unwatched link")
            else:
                within(bound, lambda: _native(f) == _native(nf))
                assert f.read_bytes() == b"ABCDEFGHIJ"  # a new open: the ctime changed, its pages are dropped
            with open(g, "r+b") as w:  # rewrite through the unwatched link
                w.write(b"abcde")
            seen("rewrite through the unwatched link")
            os.truncate(g, 4)
            seen("truncate through the unwatched link")
            with open(g, "ab") as w:  # append, the writer still open
                w.write(b"+appended")
                w.flush()
                seen("append, writer open")
            os.chmod(g, 0o600)
            seen("chmod through the unwatched link")
            os.link(g, src / "u" / "h")
            seen("a new hard link in the unwatched directory (link count)")
            (src / "w" / "new").write_bytes(b"renamed over")
            os.rename(src / "w" / "new", nf)
            within(bound, lambda: _native(f) == _native(nf))
            assert sorted(os.listdir(mnt / "w")) == sorted(os.listdir(src / "w"))
            assert os.pread(kept, 100, 0) == g.read_bytes()  # the open file is the old one, as natively
            os.unlink(nf)
            os.mkdir(nf)
            (nf / "inside").write_text("1")
            within(bound, lambda: _native(f) == _native(nf))
            assert sorted(os.listdir(f)) == ["inside"]
        finally:
            os.close(kept)
        assert m.unmount() == 0


@pytest.mark.parametrize("watcher", list(WATCHERS))
def test_pages_kept_across_opens_are_never_stale(workdir: Path, watcher: str) -> None:
    """A file read through the mount, changed in SOURCE (same size, mtime put back, at once after the read: in the
    same clock tick when the machine allows), then opened again: the new bytes, every time, in every mode. And
    an unchanged file is read from the kernel's pages (one READ for two opens)."""
    args, env, _bound = WATCHERS[watcher]
    src, mnt = workdir / "src", workdir / "mnt"
    src.mkdir()
    (src / "f").write_bytes(b"0" * 100)
    (src / "same").write_bytes(b"unchanged")
    with Mount(src, mnt, *args, env={**os.environ, **env}) as m:
        for i in range(1, 40):
            assert (mnt / "f").read_bytes()[:1] in (b"%d" % ((i - 1) % 10), b"0")
            st = os.stat(src / "f")
            with open(src / "f", "r+b") as w:
                w.write((b"%d" % (i % 10)) * 100)
            os.utime(src / "f", ns=(st.st_atime_ns, st.st_mtime_ns))
            if i % 2:
                time.sleep(0.03)  # and once past the clock tick
            assert (mnt / "f").read_bytes() == (b"%d" % (i % 10)) * 100, i
        time.sleep(0.05)
        for _ in range(3):
            assert (mnt / "same").read_bytes() == b"unchanged"
        assert m.unmount() == 0
    assert _requests(m, "/same", ("read",)) == 1


def test_noauto_cache_drops_pages_at_every_open(workdir: Path) -> None:
    (workdir / "src").mkdir()
    (workdir / "src" / "same").write_bytes(b"unchanged")
    with Mount(workdir / "src", workdir / "mnt", "-o", "noauto_cache") as m:
        time.sleep(0.05)
        for _ in range(3):
            assert (m.mnt / "same").read_bytes() == b"unchanged"
        assert m.unmount() == 0
    assert _requests(m, "/same", ("read",)) == 3


def _listing(path: Path) -> list[tuple[str, int]]:
    """What getdents gives a program: every name with its inode number (the mount's are SOURCE's)."""
    with os.scandir(path) as it:
        return sorted((e.name, e.inode()) for e in it)


@pytest.mark.parametrize("watcher", [*WATCHERS, "dir_handles"])
def test_listings_kept_across_opens_are_never_stale(workdir: Path, watcher: str) -> None:
    """A directory listed through the mount again and again is listed from the kernel's cache while it is
    unchanged (no readdir request after the first listing), and after each change made in SOURCE (create,
    unlink, mkdir, rename in, out and over, a symlink, at once after a listing) the next listing is the native
    one: at once where directory opens reach the daemon (no watcher, -o dir_handles), which checks the listing
    at each open; within the watcher's bound where they do not (the default: the watcher's invalidation drops
    the kernel's listing). So is a listing through a descriptor opened before the change (rewinddir)."""
    handles = watcher in ("nowatch", "dir_handles")
    args, env, bound = WATCHERS["fanotify" if watcher == "dir_handles" else watcher]
    if watcher == "dir_handles":
        args = ["-o", "dir_handles"]
    src, mnt = workdir / "src", workdir / "mnt"
    (src / "d").mkdir(parents=True)
    (src / "elsewhere").mkdir()
    for i in range(5):
        (src / "d" / f"f{i}").write_text(str(i))
    (src / "elsewhere" / "in").write_text("moved in")
    changes: list[Callable[[], None]] = [
        lambda: (src / "d" / "new").write_text("created"),
        lambda: os.unlink(src / "d" / "f0"),
        lambda: os.mkdir(src / "d" / "sub"),
        lambda: os.rename(src / "elsewhere" / "in", src / "d" / "in"),
        lambda: os.rename(src / "d" / "f1", src / "elsewhere" / "out"),
        lambda: os.rename(src / "d" / "new", src / "d" / "f2"),  # over an existing name: another inode
        lambda: os.symlink("f3", src / "d" / "link"),
    ]
    with Mount(src, mnt, *args, env={**os.environ, **env}) as m:
        time.sleep(0.05)  # past the clock tick of the files' creation
        for _ in range(5):
            assert _listing(mnt / "d") == _listing(src / "d")
        first_change: float | None = None
        fd = os.open(mnt / "d", os.O_RDONLY | os.O_DIRECTORY)
        try:
            for change in changes:
                assert _listing(mnt / "d") == _listing(src / "d")
                if first_change is None:
                    first_change = time.time()
                change()
                if handles:
                    assert _listing(mnt / "d") == _listing(src / "d")  # a new opendir: at once
                else:
                    within(bound, lambda: _listing(mnt / "d") == _listing(src / "d"))
                os.lseek(fd, 0, os.SEEK_SET)  # rewinddir on the descriptor opened before
                within(bound, lambda: sorted(os.listdir(fd)) == sorted(os.listdir(src / "d")))
        finally:
            os.close(fd)
        assert m.unmount() == 0
    events = m.events()
    opendirs = [e["seq"] for e in events if e["op"] == "opendir" and e["path"] == "/d"]
    assert len(opendirs) > 5 if handles else [e["errno"] for e in events if e["op"] == "opendir"] == ["ENOSYS"]
    assert first_change is not None
    reads = [e["op"] for e in events if e["op"] in ("readdir", "readdirplus") and e["path"] == "/d"
             and (e["seq"] < opendirs[5] if handles else e["ts"] < first_change)]  # five listings before any change
    assert reads == ["readdirplus", "readdir"], reads  # the first listing only (the second read: its end)


@pytest.mark.parametrize("args", [["-o", "noauto_cache"], ["-o", "timeout=0"]], ids=["noauto_cache", "strict"])
def test_listings_reach_the_daemon_every_time_without_auto_cache_or_in_strict_mode(workdir: Path,
                                                                                   args: list[str]) -> None:
    (workdir / "src" / "d").mkdir(parents=True)
    (workdir / "src" / "d" / "f").write_text("x")
    with Mount(workdir / "src", workdir / "mnt", *args) as m:
        time.sleep(0.05)
        for _ in range(3):
            assert os.listdir(m.mnt / "d") == ["f"]
        assert m.unmount() == 0
    assert _requests(m, "/d", ("readdirplus",)) == 3


def test_a_mount_made_inside_source_shows(workdir: Path) -> None:
    """A filesystem mounted on a directory of SOURCE (no fsnotify event) replaces its contents in the mount
    within the watcher's bound, and so does its unmounting."""
    src, mnt = workdir / "src", workdir / "mnt"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "under").write_text("1")
    with Mount(src, mnt) as m:
        assert os.listdir(mnt / "sub") == ["under"]
        os.stat(mnt / "sub" / "under")
        assert outcome(os.stat, mnt / "sub" / "over") == ("err", "ENOENT")  # a negative entry, kept long
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
        try:
            (src / "sub" / "over").write_text("2")
            within(0.1, lambda: os.listdir(mnt / "sub") == ["over"])
            within(0.1, lambda: outcome(os.stat, mnt / "sub" / "under") == ("err", "ENOENT"))
            within(0.1, lambda: (mnt / "sub" / "over").read_text() == "2")
        finally:
            subprocess.run(["umount", "-l", str(src / "sub")], check=True)
        within(0.1, lambda: os.listdir(mnt / "sub") == ["under"])
        assert m.unmount() == 0


@pytest.mark.parametrize("how", ["write", "mmap"])
def test_a_write_is_in_source_when_the_daemon_is_killed_after_it(workdir: Path, how: str) -> None:
    """Write-through: what write(2) (or msync) reported done is in SOURCE even if the daemon dies at once
    (SIGKILL, nothing flushed at exit)."""
    (workdir / "src").mkdir()
    (workdir / "src" / "f").write_bytes(b"old" * 1000)
    with Mount(workdir / "src", workdir / "mnt") as m:
        path = m.mnt / "f"
        path.read_bytes()  # pages cached
        fd = os.open(path, os.O_RDWR)
        try:
            if how == "write":
                assert os.pwrite(fd, b"NEW", 0) == 3
                assert os.pwrite(fd, b"more", 3) == 4
            else:
                with mmap.mmap(fd, 0) as mm:
                    mm[0:3] = b"NEW"
                    mm[3:7] = b"more"
                    mm.flush()
            assert m.proc is not None
            m.proc.kill()
            m.proc.wait(timeout=30)
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        m.unmount()
    assert (workdir / "src" / "f").read_bytes()[:7] == b"NEWmore"
