"""Exact attribute caching for changes made through the mount: the other names of multiply-linked files.

With attribute and entry timeouts above 0 the kernel answers stat() from its cache. For everything done through
the mount it keeps that cache right by itself, for the kernel inode it operated on: a write invalidates the
file's size and times, unlink drops its link count, mkdir refreshes the parent... But libfuse's high-level API
gives every *path* its own kernel inode, so the names of a hard-linked file are separate kernel inodes: a write,
chmod, link or unlink through one name leaves the cached attributes (and data pages) of the others stale.

`LinkedNames` knows every name of a multiply-linked file that the kernel has looked up (the only names it can
have cached) and, after a change through one of them, invalidates the others with `fuse_invalidate_path`
before the reply goes back, so no process sees a stale link count, size, mode or time. Only files with a link
count above 1 are tracked: memory stays proportional to the hard links in use, not to the files touched.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Callable
from typing import Any

Key = tuple[int, int]


def _key_and_nlink(attrs: Any) -> tuple[Key | None, int, int]:
    """((st_dev, st_ino), st_nlink, st_mode) of an os.stat_result or an mfusepy-style dict."""
    if isinstance(attrs, dict):
        ino = attrs.get("st_ino")
        key = (attrs.get("st_dev", 0), ino) if ino else None
        return key, attrs.get("st_nlink", 1), attrs.get("st_mode", 0)
    return (attrs.st_dev, attrs.st_ino), attrs.st_nlink, attrs.st_mode


class LinkedNames:
    """Names of multiply-linked non-directories as the kernel knows them, and invalidation of the others.

    `invalidate(path)` must drop the kernel's cached attributes and data of the kernel inode at `path`
    (`fuse_invalidate_path`); a path the kernel does not know is simply not there to invalidate.
    """

    def __init__(self, invalidate: Callable[[str], None]) -> None:
        self._invalidate = invalidate
        self._lock = threading.Lock()
        self._names: dict[Key, set[str]] = {}
        self._key: dict[str, Key] = {}
        self._link_sources: dict[str, str] = {}  # new name -> existing name, until the new name is looked up

    def __len__(self) -> int:
        return len(self._key)

    def seen(self, path: str, attrs: Any) -> None:
        """A lookup or getattr by path returned `attrs`: remember the name if its file has other names."""
        key, nlink, mode = _key_and_nlink(attrs)
        if key is None or stat.S_ISDIR(mode):
            return
        with self._lock:
            source = self._link_sources.pop(path, None) if self._link_sources else None
            if nlink > 1:
                self._add(path, key)
                if source is not None:
                    self._add(source, key)
            elif path in self._key:
                self._drop(path)

    def _add(self, path: str, key: Key) -> None:
        old = self._key.get(path)
        if old == key:
            return
        if old is not None:
            self._drop(path)
        self._key[path] = key
        self._names.setdefault(key, set()).add(path)

    def _drop(self, path: str) -> Key | None:
        key = self._key.pop(path, None)
        if key is not None:
            names = self._names[key]
            names.discard(path)
            if not names:
                del self._names[key]
        return key

    def _others(self, path: str) -> list[str]:
        key = self._key.get(path)
        if key is None:
            return []
        return [p for p in self._names.get(key, ()) if p != path]

    def changed(self, path: str | None) -> None:
        """The file at `path` changed (data, size, mode, owner, times, xattrs): refresh its other names."""
        if path is None or not self._key:
            return
        with self._lock:
            others = self._others(path)
        for p in others:
            self._invalidate(p)

    def linked(self, existing: str, new: str) -> None:
        """`new` is a new name of `existing`: its link count and ctime changed under every name.

        The kernel does not refresh `existing` itself: it expects the link's reply to name the same kernel inode,
        and the high-level API gives `new` one of its own."""
        with self._lock:
            key = self._key.get(existing)
            if key is None:  # learn the inode when the kernel looks `new` up (right after the link)
                if len(self._link_sources) > 4096:
                    self._link_sources.clear()
                self._link_sources[new] = existing
                names = [existing]
            else:
                self._add(new, key)
                names = self._others(new)
        for p in names:
            self._invalidate(p)

    def removed(self, path: str) -> None:
        """The name `path` is gone (unlink, or replaced by a rename): its file lost a link."""
        if not self._key:
            return
        with self._lock:
            key = self._drop(path)
            others = list(self._names.get(key, ())) if key is not None else []
        for p in others:
            self._invalidate(p)

    def renamed(self, old: str, new: str, exchange: bool) -> None:
        """`old` was renamed to `new` (or the two exchanged); a directory's names move with it."""
        if not self._key:
            return
        with self._lock:
            if exchange:
                moves = self._moves(old, new) + self._moves(new, old)
                replaced: Key | None = None
            else:
                replaced = self._drop(new)
                moves = self._moves(old, new)
            for source, _target, _key in moves:
                self._drop(source)
            for _source, target, key in moves:
                self._add(target, key)
            touched = {k for _, _, k in moves}
            if replaced is not None:
                touched.add(replaced)
            # ctime of the renamed file, link count of a replaced one: under all their names
            others = [p for k in touched for p in self._names.get(k, ()) if p not in (old, new)]
        for p in others:
            self._invalidate(p)

    def _moves(self, old: str, new: str) -> list[tuple[str, str, Key]]:
        prefix = old + "/"
        return [(p, new + p[len(old):], k) for p, k in self._key.items() if p == old or p.startswith(prefix)]
