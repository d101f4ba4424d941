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

Invalidating a kernel inode waits for the locks of its cached pages, and a READ or WRITE request keeps the pages
it covers locked until its reply. So the handler of a request may wait for another name's invalidation only
when that cannot close a circle of waits (docs/design.md, "Invalidation without deadlocks"):

- READ and WRITE requests on a tracked name are registered as *busy* while their handler runs (they may hold
  that name's page locks);
- a handler invalidates another name synchronously only if no request on that name is busy; registering and
  checking happen under one lock, so of two requests on two names that would wait for each other, the later
  one always sees the earlier and does not wait;
- otherwise, with a single-threaded loop, or when too many handlers already wait (the ones they wait for need
  worker threads of their own), the invalidation is deferred to one thread of its own that is never a request
  handler, and done as soon as the pages are unlocked.
"""

from __future__ import annotations

import queue
import stat
import threading
from collections.abc import Callable, Iterable
from typing import Any

Key = tuple[int, int]

# At most this many request handlers wait for invalidations at once: libfuse's multi-threaded loop runs up to
# 10 workers by default, and the requests those handlers wait for need free workers to be served.
MAX_WAITING_HANDLERS = 4


def _key_and_nlink(attrs: Any) -> tuple[Key | None, int, int]:
    """((st_dev, st_ino), st_nlink, st_mode) of an os.stat_result or an mfusepy-style dict."""
    if isinstance(attrs, dict):
        ino = attrs.get("st_ino")
        key = (attrs.get("st_dev", 0), ino) if ino else None
        return key, attrs.get("st_nlink", 1), attrs.get("st_mode", 0)
    return (attrs.st_dev, attrs.st_ino), attrs.st_nlink, attrs.st_mode


class DeferredInvalidations:
    """Invalidations a request handler must not wait for, sent from a thread that serves no request."""

    def __init__(self, invalidate: Callable[[str], None]) -> None:
        self._invalidate = invalidate
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.sent = 0

    def put(self, paths: Iterable[str]) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="fuse-passthrough-invalidate",
                                                    daemon=True)
                    self._thread.start()
        for p in paths:
            self._queue.put(p)

    def _run(self) -> None:
        while (path := self._queue.get()) is not None:
            pending = {path}
            while True:  # a burst of the same names is sent once
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                pending.add(more)
            for p in pending:
                self._invalidate(p)
                self.sent += 1

    def close(self) -> None:
        """Stop the thread; what is still queued is dropped (the mount is going away)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=2)


class LinkedNames:
    """Names of multiply-linked non-directories as the kernel knows them, and invalidation of the others.

    `invalidate(path)` must drop the kernel's cached attributes and data of the kernel inode at `path`
    (`fuse_invalidate_path`); a path the kernel does not know is simply not there to invalidate.
    `threaded`: the loop serves requests in several threads (with one, no handler may ever wait).
    """

    def __init__(self, invalidate: Callable[[str], None], *, threaded: bool = True) -> None:
        self._invalidate = invalidate
        self._lock = threading.Lock()
        self._names: dict[Key, set[str]] = {}
        self._key: dict[str, Key] = {}
        self._link_sources: dict[str, str] = {}  # new name -> existing name, until the new name is looked up
        self._busy: dict[str, int] = {}  # tracked names with READ/WRITE handlers running -> how many
        self._writers: dict[int, str] = {}  # handles open for writing -> their path (their pages may be dirty)
        self._waiting = threading.BoundedSemaphore(MAX_WAITING_HANDLERS) if threaded else None
        self.deferred = DeferredInvalidations(invalidate)

    def __len__(self) -> int:
        return len(self._key)

    def close(self) -> None:
        self.deferred.close()

    # -- sending invalidations ----------------------------------------------------------------------------------
    def _send(self, paths: list[str]) -> None:
        """Invalidate `paths` before the current request is answered, where waiting cannot deadlock."""
        if not paths:
            return
        with self._lock:
            later = [p for p in paths if self._busy.get(p)]
        now = [p for p in paths if p not in later] if later else paths
        if now and (self._waiting is None or not self._waiting.acquire(blocking=False)):
            later, now = later + now, []
        if now:
            try:
                for p in now:
                    self._invalidate(p)
            finally:
                assert self._waiting is not None
                self._waiting.release()
        if later:
            self.deferred.put(later)

    # -- requests that may hold page locks ----------------------------------------------------------------------
    def io_started(self, path: str | None) -> bool:
        """A READ or WRITE on `path` is being served; True when it was registered (call io_ended then)."""
        if path is None or path not in self._key:
            return False
        with self._lock:
            self._busy[path] = self._busy.get(path, 0) + 1
        return True

    def io_ended(self, path: str) -> None:
        with self._lock:
            n = self._busy.pop(path, 1) - 1
            if n:
                self._busy[path] = n

    def opened(self, path: str | None, fh: int, flags: int) -> None:
        """A handle was opened; one open for writing may leave dirty pages (mmap) under its name."""
        if path is not None and flags & 3:  # O_WRONLY or O_RDWR
            with self._lock:
                self._writers[fh] = path

    def released(self, fh: int) -> None:
        if self._writers:
            with self._lock:
                self._writers.pop(fh, None)

    def before_read(self, path: str | None) -> None:
        """A read through `path` is about to read the source: another name open for writing may hold dirty
        pages of the same file (written through mmap), which the source must have first, as natively."""
        if path is None or not self._writers or path not in self._key:
            return
        with self._lock:
            others = self._others(path)
            dirty = [p for p in others if p in self._writers.values()]
        self._send(dirty)

    # -- what the kernel knows ----------------------------------------------------------------------------------
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
            elif path in self._key and len(self._names[self._key[path]]) < 2:
                # one name left; with more, the others may be open unlinked files libfuse keeps under hidden names
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

    # -- changes through the mount ------------------------------------------------------------------------------
    def changed(self, path: str | None) -> None:
        """The file at `path` changed (data, size, mode, owner, times, xattrs): refresh its other names."""
        if path is None or not self._key:
            return
        with self._lock:
            others = self._others(path)
        self._send(others)

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
        self._send(names)

    def removed(self, path: str) -> None:
        """The name `path` is gone (unlink, or replaced by a rename): its file lost a link."""
        if not self._key:
            return
        with self._lock:
            key = self._drop(path)
            others = list(self._names.get(key, ())) if key is not None else []
        self._send(others)

    def renamed(self, old: str, new: str, exchange: bool, hidden: bool = False) -> None:
        """`old` was renamed to `new` (or the two exchanged); a directory's names move with it.

        `hidden`: libfuse is hiding an open file that is being unlinked: the kernel takes that for an unlink of
        `old` and lowers its cached link count itself, which must then be fetched again."""
        if not self._key and not self._writers:
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
            self._move_writers(old, new, exchange)
            touched = {k for _, _, k in moves}
            if replaced is not None:
                touched.add(replaced)
            # ctime of the renamed file, link count of a replaced one: under all their names
            others = [p for k in touched for p in self._names.get(k, ()) if p not in (old, new)]
            if hidden and moves:
                others.append(old)
        self._send(others)

    def _moves(self, old: str, new: str) -> list[tuple[str, str, Key]]:
        prefix = old + "/"
        return [(p, new + p[len(old):], k) for p, k in self._key.items() if p == old or p.startswith(prefix)]

    def _move_writers(self, old: str, new: str, exchange: bool) -> None:
        pairs = ((old, new), (new, old)) if exchange else ((old, new),)
        moved = {}
        for a, b in pairs:
            for fh, p in self._writers.items():
                if p == a or p.startswith(a + "/"):
                    moved[fh] = b + p[len(a):]
        self._writers.update(moved)
