"""Changes made directly in SOURCE, behind the mount's back, reported so the kernel's cache can be invalidated.

A cached mount sees such changes within its timeout anyway; the watcher makes it ~100 ms. It uses inotify on the
directories the kernel has cached (the binding reports each directory it sees, so the watch set grows with what
the mount has used, never with the size of SOURCE) and runs in a thread of its own. inotify cannot tell who made
a change, so the mount's own changes are invalidated too: harmless, one more lookup for the next access (telling
them apart by path and time would drop a change made in SOURCE right after one made through the mount). When
inotify is unavailable (no free watches, a seccomp policy...) the watcher says so once and the timeout remains
the bound.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

from inotify_simple import INotify
from inotify_simple import flags as inotify_flags

# What makes a cached name or attribute stale. Not IN_MODIFY: one event per write() would cost more than it
# helps; a file written in SOURCE is seen when its writer closes it (or after the timeout).
_MASK = (inotify_flags.CREATE | inotify_flags.DELETE | inotify_flags.MOVED_FROM | inotify_flags.MOVED_TO
         | inotify_flags.ATTRIB | inotify_flags.CLOSE_WRITE | inotify_flags.DELETE_SELF | inotify_flags.MOVE_SELF
         | inotify_flags.ONLYDIR | inotify_flags.DONT_FOLLOW | inotify_flags.EXCL_UNLINK)
_GONE = inotify_flags.DELETE_SELF | inotify_flags.MOVE_SELF | inotify_flags.IGNORED


class SourceWatcher:
    """inotify on SOURCE's directories; `on_change(mount_path)` for each changed name and its directory."""

    def __init__(self, source: str, on_change: Callable[[str], None]) -> None:
        self.source = source.rstrip("/") or "/"
        self._on_change = on_change
        self._inotify = INotify()
        self._lock = threading.Lock()
        self._wd_path: dict[int, str] = {}   # watch descriptor -> directory as a mount path ("/", "/a/b")
        self._watched: set[str] = set()
        self._failed = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="source-watcher", daemon=True)
        self._thread.start()
        self.watch_dir("/")

    def watch_dir(self, path: str) -> None:
        """The kernel now knows the directory at mount path `path`: watch it (once)."""
        if path in self._watched or self._failed:
            return
        with self._lock:
            if path in self._watched:
                return
            try:
                wd = self._inotify.add_watch(self.source + (path if path != "/" else ""), _MASK)
            except OSError as e:
                if e.errno not in (2, 20):  # ENOENT, ENOTDIR: gone already
                    self._failed = True
                    print(f"fuse-passthrough: watching SOURCE stopped ({e.strerror}); changes made directly in "
                          "SOURCE are seen within the cache timeout", file=sys.stderr)
                return
            self._wd_path[wd] = path
            self._watched.add(path)

    def _run(self) -> None:
        while not self._stop:
            try:
                events = self._inotify.read(timeout=200)
            except (OSError, ValueError):
                return
            changed: list[str] = []
            for ev in events:
                with self._lock:
                    directory = self._wd_path.get(ev.wd)
                    if ev.mask & _GONE and directory is not None and not ev.name:
                        self._forget(ev.wd, directory)
                if directory is None:
                    continue
                if ev.mask & inotify_flags.Q_OVERFLOW:
                    continue  # lost events: the timeout remains the bound
                path = (directory.rstrip("/") + "/" + ev.name) if ev.name else directory
                changed.append(path)
                if ev.name:
                    changed.append(directory)
                if ev.mask & (inotify_flags.MOVED_FROM | inotify_flags.DELETE) and ev.mask & inotify_flags.ISDIR:
                    self._forget_below(path)
            for path in dict.fromkeys(changed):
                try:
                    self._on_change(path)
                except Exception as e:  # never let one failure stop the watcher
                    print(f"fuse-passthrough: invalidating {path!r} failed: {e}", file=sys.stderr)

    def _forget(self, wd: int, directory: str) -> None:
        self._wd_path.pop(wd, None)
        self._watched.discard(directory)

    def _forget_below(self, path: str) -> None:
        """A directory was moved or removed: its watches name the old paths; drop them (re-added on use)."""
        prefix = path + "/"
        with self._lock:
            for wd, p in list(self._wd_path.items()):
                if p == path or p.startswith(prefix):
                    self._forget(wd, p)
                    try:
                        self._inotify.rm_watch(wd)
                    except OSError:
                        pass

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        try:
            self._inotify.close()
        except OSError:
            pass


def watch_source(source: str, on_change: Callable[[str], None]) -> SourceWatcher | None:
    """A running watcher, or None (said on stderr) where inotify cannot be used."""
    try:
        return SourceWatcher(os.path.realpath(source), on_change)
    except OSError as e:
        print(f"fuse-passthrough: cannot watch SOURCE ({e.strerror}); changes made directly in SOURCE are seen "
              "within the cache timeout", file=sys.stderr)
        return None
