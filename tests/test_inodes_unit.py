"""The node table's paths (inodes.py), cached per node: after any sequence of lookups, renames (of files and
directories, across directories, exchanges), hard links, unlinks and forgets, every node's path is the one its
most recent names give, walked up to the root without a cache."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from fuse_passthrough import syscalls
from fuse_passthrough.inodes import ROOT_ID, NodeTable


def walked(table: NodeTable, nodeid: int) -> str | None:
    """The path by walking the names, as the table did before it cached paths."""
    parts: list[str] = []
    while nodeid != ROOT_ID:
        node = table._by_id.get(nodeid)
        if node is None or not node.names:
            return None
        nodeid, name = node.names[-1]
        parts.append(os.fsdecode(name))
    return "/" + "/".join(reversed(parts))


def traced_paths(table: NodeTable) -> Any:
    """(nodeid, name) -> the path an event of the compiled tracing layer (tracing/_recorder.c) gets: read from the
    table's cache without its lock, or asked of `path`; None where that module is not built."""
    from fuse_passthrough.tracing import layer
    if layer.Recorder is None:
        return None
    events: list[tuple[Any, ...]] = []
    rec = layer.Recorder(iter(range(1, 1 << 62)), {}, lambda pid, now: ("x", None), 0, 0, lambda req: (0, 0, 0, 0),
                         events.append, None, 0, None)
    args = (table.path, 0, 1, -1, -1, print, print, (("path",), ("const", 0)), None, table.path_cache())
    of_node = rec.traced("getattr", lambda req, ino, name: None, *args[:2], -1, *args[3:])
    of_name = rec.traced("lookup", lambda req, ino, name: None, *args)

    def path(nodeid: int, name: bytes | None = None) -> str | None:
        (of_node if name is None else of_name)(5, nodeid, name)
        return events.pop()[3][0]  # type: ignore[no-any-return]
    return path


def test_cached_paths_follow_every_change(tmp_path: Path) -> None:
    rng = random.Random(7)
    src = tmp_path / "src"
    src.mkdir()
    root = os.open(src, os.O_PATH | os.O_DIRECTORY)
    table = NodeTable(root)
    traced = traced_paths(table)
    dirs = [ROOT_ID]
    files: list[int] = []
    checked = 0
    try:
        for step in range(2000):
            what = rng.random()
            live = [d for d in dirs if d == ROOT_ID or (d in table._by_id and table.get(d).names)]
            parent = rng.choice(live)
            pdir = table.get(parent)
            name = f"n{rng.randrange(12)}".encode()
            if what < 0.35:  # a new object (or an existing name looked up again)
                is_dir = rng.random() < 0.4
                try:
                    if is_dir:
                        os.mkdir(name, dir_fd=pdir.fd)
                    else:
                        os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=pdir.fd))
                except (FileExistsError, IsADirectoryError):
                    pass
                try:
                    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=pdir.fd)
                except OSError:
                    continue
                node = table.enter(parent, name, fd, os.fstat(fd))
                if node.nodeid not in dirs and node.nodeid not in files:
                    (dirs if node.is_dir else files).append(node.nodeid)
            elif what < 0.6 and (dirs[1:] or files):  # rename, sometimes an exchange
                moved = table.child(parent, name)
                target_parent = rng.choice(live)
                newname = f"n{rng.randrange(12)}".encode()
                if moved is None or (moved.is_dir and _is_below(table, target_parent, moved.nodeid)):
                    continue
                exchange = table.child(target_parent, newname) is not None and rng.random() < 0.5
                try:
                    flags = syscalls.RENAME_EXCHANGE if exchange else 0
                    syscalls.renameat2(pdir.fd, os.fsdecode(name), table.get(target_parent).fd,
                                       os.fsdecode(newname), flags)
                except OSError:
                    continue
                table.renamed(parent, name, target_parent, newname, exchange)
            elif what < 0.7 and files:  # a hard link
                chosen = rng.choice(files)
                node = table._by_id.get(chosen)
                if node is None or table.child(parent, name) is not None:
                    continue
                try:
                    os.link(node.proc, name, dst_dir_fd=pdir.fd, follow_symlinks=True)
                except OSError:  # the name exists in SOURCE, not yet looked up; or the file is gone
                    continue
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=pdir.fd)
                table.enter(parent, name, fd, os.fstat(fd))
            elif what < 0.85:  # unlink or rmdir
                child = table.child(parent, name)
                if child is None:
                    continue
                try:
                    (os.rmdir if child.is_dir else os.unlink)(name, dir_fd=pdir.fd)
                except OSError:
                    continue
                table.removed(parent, name)
            else:  # the kernel forgets a node
                candidates = [n for n in dirs[1:] + files if n in table._by_id]
                if candidates:
                    victim = rng.choice(candidates)
                    if not any(p == victim for n in table._by_id.values() for p, _ in n.names):
                        table.forget(victim, table.get(victim).lookups)
            # Every node's path, or a few in any order: paths left uncached must come out right later too.
            ids = list(table._by_id)
            if rng.random() < 0.5:
                ids = rng.sample(ids, min(3, len(ids)))
            for nodeid in ids:
                if traced is not None and rng.random() < 0.5:  # the compiled layer reads the same cache
                    assert traced(nodeid) == walked(table, nodeid), (step, nodeid)
                assert table.path(nodeid) == walked(table, nodeid), (step, nodeid)
                checked += 1
                if traced is not None:
                    assert traced(nodeid) == walked(table, nodeid), (step, nodeid)
            if step % 50 == 0:
                some = rng.choice(list(table._by_id))
                base = walked(table, some)
                expect = None if base is None else ("/" if base == "/" else base + "/") + "x\udcff"
                assert table.path(some, b"x\xff") == expect
                if traced is not None:
                    assert traced(some, b"x\xff") == expect
        assert table.path(10**9) is None and table.path(10**9, b"x") is None  # a node the table does not hold
        if traced is not None:
            assert traced(10**9) is None and traced(10**9, b"x") is None
    finally:
        table.close()
        os.close(root)
    assert checked > 5_000  # the sequence did build a tree worth checking


def test_a_chain_made_and_removed_leaf_first_keeps_the_cached_paths(tmp_path: Path) -> None:
    """A directory made or removed has no cached path below it, so every other cached path stays: each path the
    trace asks for (the parent's, before each mkdir and rmdir) is one step, not a walk up 300 levels."""
    src = tmp_path / "src"
    src.mkdir()
    root = os.open(src, os.O_PATH | os.O_DIRECTORY)
    table = NodeTable(root)
    try:
        chain = [ROOT_ID]
        for level in range(300):
            parent = chain[-1]
            assert table.path(parent, b"d") == "/" + "/".join(["d"] * (level + 1))
            pfd = table.get(parent).fd
            os.mkdir("d", dir_fd=pfd)
            fd = os.open("d", os.O_PATH, dir_fd=pfd)
            chain.append(table.enter(parent, b"d", fd, os.fstat(fd)).nodeid)
        epoch = table._path_epoch
        while len(chain) > 1:
            leaf, parent = chain.pop(), chain[-1]
            assert table.path(parent, b"d") == "/" + "/".join(["d"] * len(chain))
            os.rmdir("d", dir_fd=table.get(parent).fd)
            table.removed(parent, b"d")
            table.forget(leaf, 1)
        assert table._path_epoch == epoch
        # a renamed directory still changes the paths below it
        pfd = table.get(ROOT_ID).fd
        os.makedirs(src / "a" / "b")
        fd = os.open("a", os.O_PATH, dir_fd=pfd)
        a = table.enter(ROOT_ID, b"a", fd, os.fstat(fd)).nodeid
        fd = os.open("b", os.O_PATH, dir_fd=table.get(a).fd)
        b = table.enter(a, b"b", fd, os.fstat(fd)).nodeid
        assert table.path(b) == "/a/b"
        os.rename(src / "a", src / "z")
        table.renamed(ROOT_ID, b"a", ROOT_ID, b"z", False)
        assert table.path(b) == "/z/b"
    finally:
        table.close()
        os.close(root)


def _is_below(table: NodeTable, nodeid: int, ancestor: int) -> bool:
    while nodeid != ROOT_ID:
        if nodeid == ancestor:
            return True
        node = table._by_id.get(nodeid)
        if node is None or not node.names:
            return False
        nodeid = node.names[-1][0]
    return False


def test_absent_names_are_recorded_bounded_and_go_with_their_directory(tmp_path: Path, monkeypatch: Any) -> None:
    """Names replied absent for the long timeout are in the table's snapshot (what is invalidated when the
    watcher loses events) until the name exists or its directory is forgotten; past ABSENT_MAX none is recorded
    (the caller then gives the short timeout)."""
    from fuse_passthrough import inodes
    monkeypatch.setattr(inodes, "ABSENT_MAX", 3)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    table = NodeTable(os.open(src, os.O_PATH | os.O_DIRECTORY))
    try:
        fd = os.open(src / "d", os.O_PATH)
        d = table.enter(ROOT_ID, b"d", fd, os.fstat(fd))
        assert table.absent(ROOT_ID, b"x") and table.absent(d.nodeid, b"y") and table.absent(d.nodeid, b"z")
        assert table.absent(d.nodeid, b"y")  # already recorded
        assert not table.absent(d.nodeid, b"w")  # over the bound
        assert not table.absent(12345, b"v")  # an unknown directory
        assert set(table.snapshot()[1]) == {(ROOT_ID, b"d"), (ROOT_ID, b"x"), (d.nodeid, b"y"), (d.nodeid, b"z")}
        (src / "d" / "y").write_text("now it exists")
        fd = os.open(src / "d" / "y", os.O_PATH)
        y = table.enter(d.nodeid, b"y", fd, os.fstat(fd))
        assert (d.nodeid, b"y") in table.snapshot()[1]  # as a name of a node now
        assert d.absent == {b"z"}
        assert table.absent(d.nodeid, b"w")  # room again
        table.forget(y.nodeid, 1)
        table.forget(d.nodeid, 1)  # the kernel dropped the directory, and its negative entries with it
        assert set(table.snapshot()[1]) == {(ROOT_ID, b"x")}
        assert table.absent(ROOT_ID, b"a") and table.absent(ROOT_ID, b"b") and not table.absent(ROOT_ID, b"c")
    finally:
        table.close()
        os.close(table.root.fd)


def test_idle_entries_are_the_oldest_without_an_open_handle(tmp_path: Path) -> None:
    """What NodeBudget asks the kernel to forget when the table nears the fd limit: the oldest nodes' names,
    never the root, an open file, or a node without a name."""
    src = tmp_path / "src"
    src.mkdir()
    table = NodeTable(os.open(src, os.O_PATH | os.O_DIRECTORY))
    try:
        nodes = []
        for name in ("a", "b", "c", "d"):
            (src / name).write_text(name)
            fd = os.open(src / name, os.O_PATH)
            nodes.append(table.enter(ROOT_ID, name.encode(), fd, os.fstat(fd)))
        table.opened(nodes[0])
        table.removed(ROOT_ID, b"b")  # no name left
        assert table.idle_entries(2) == [(ROOT_ID, b"c"), (ROOT_ID, b"d")]
        assert table.idle_entries(10) == [(ROOT_ID, b"c"), (ROOT_ID, b"d")]
        table.released(nodes[0])
        assert table.idle_entries(1) == [(ROOT_ID, b"a")]
    finally:
        table.close()
        os.close(table.root.fd)


def test_removed_directories_are_closed_in_batches_and_never_reopened(tmp_path: Path, monkeypatch: Any) -> None:
    """A directory removed through the mount (rmdir) is gone for good: FORGET keeps no handle to reopen it, and its
    fd is closed with DELETED_BATCH others (one wake-up of the kernel's mark reaper for them all), or at close().
    A directory the kernel merely forgot is kept for its handle and closed at once."""
    from fuse_passthrough import inodes
    monkeypatch.setattr(inodes, "DELETED_BATCH", 3)
    src = tmp_path / "src"
    for i in range(5):
        (src / f"d{i}").mkdir(parents=True)
    (src / "kept").mkdir()
    handles = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    table = NodeTable(os.open(src, os.O_PATH | os.O_DIRECTORY), handles_fd=handles)

    def is_open(fd: int) -> bool:
        try:
            os.fstat(fd)
            return True
        except OSError:
            return False
    try:
        nodes = []
        for i in range(5):
            fd = os.open(src / f"d{i}", os.O_PATH)
            nodes.append(table.enter(ROOT_ID, f"d{i}".encode(), fd, os.fstat(fd)))
        fd = os.open(src / "kept", os.O_PATH)
        kept = table.enter(ROOT_ID, b"kept", fd, os.fstat(fd))
        table.forget(kept.nodeid, 1)
        assert not is_open(kept.fd) and table.forgotten() == 1  # closed now, reopenable by its handle
        for i, node in enumerate(nodes):
            os.rmdir(src / f"d{i}")
            table.removed(ROOT_ID, f"d{i}".encode(), directory=True)
            assert node.deleted and table.child(ROOT_ID, f"d{i}".encode()) is None
            table.forget(node.nodeid, 1)
            assert table.find_id(node.nodeid) is None
            if i < 2:
                assert is_open(node.fd) and os.fstat(node.fd).st_nlink == 0
        assert not any(is_open(n.fd) for n in nodes[:3])  # the third forget closed the batch
        assert all(is_open(n.fd) for n in nodes[3:])
        assert table.forgotten() == 1  # no handle kept for a removed directory
    finally:
        table.close()
        os.close(table.root.fd)
        os.close(handles)
    assert not any(is_open(n.fd) for n in nodes)  # the rest at close()
