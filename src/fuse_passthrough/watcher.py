"""Changes made directly in SOURCE, behind the mount's back, reported so the kernel's cache can be invalidated.

A cached mount sees such changes within its timeout anyway; the watcher makes it ~100 ms.

As root, `FanotifyWatcher` marks the directories the kernel has cached with fanotify and directory+name reports
(Linux >= 5.9): each event names the process that made it, so the daemon's own changes (which the kernel already
knows) are skipped. (A mark on the whole filesystem would need no mark per directory, but would make the daemon
read every change on that filesystem, SOURCE or not.) Otherwise `SourceWatcher` uses inotify on the
directories the kernel has cached (each directory the kernel learns is reported, so the watch set grows with what
the mount has used, never with the size of SOURCE) and runs in a thread of its own. inotify cannot tell who made
a change, so the mount's own changes are invalidated too: harmless, one more lookup for the next access (telling
them apart by path and time would drop a change made in SOURCE right after one made through the mount). When
inotify is unavailable (no free watches, a seccomp policy...) the watcher says so once and the timeout remains
the bound.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import sys
import threading
import time
from collections.abc import Callable

from inotify_simple import INotify
from inotify_simple import flags as inotify_flags

# What makes a cached name or attribute stale. Not IN_MODIFY: one event per write() would cost more than it
# helps; a file written in SOURCE is seen when its writer closes it (or after the timeout).
_MASK = (inotify_flags.CREATE | inotify_flags.DELETE | inotify_flags.MOVED_FROM | inotify_flags.MOVED_TO
         | inotify_flags.ATTRIB | inotify_flags.CLOSE_WRITE | inotify_flags.DELETE_SELF | inotify_flags.MOVE_SELF
         | inotify_flags.ONLYDIR | inotify_flags.DONT_FOLLOW | inotify_flags.EXCL_UNLINK)
_GONE = inotify_flags.DELETE_SELF | inotify_flags.MOVE_SELF | inotify_flags.IGNORED
# The inode core's watches (by directory inode, not by path): also IN_MODIFY, so that a truncate(2) in SOURCE or
# a writer that keeps its file open is seen within the bound too (identical queued events are merged by the
# kernel, and one read serves every event queued by then). No DONT_FOLLOW: the watched path is the node's
# /proc/self/fd link, followed to the directory.
_KEY_MASK = (_MASK & ~inotify_flags.DONT_FOLLOW) | inotify_flags.MODIFY
# Events that change a name in the directory (the others change the object only).
_ENTRY = (inotify_flags.CREATE | inotify_flags.DELETE | inotify_flags.MOVED_FROM | inotify_flags.MOVED_TO)

Key = tuple[int, int]  # a directory's (st_dev, st_ino)
# on_child(directory key, name or None for the directory itself, whether a name was added or removed)
OnChild = Callable[[Key, "bytes | None", bool], None]


class SourceWatcher:
    """inotify on SOURCE's directories; `on_change(mount_path)` for each changed name and its directory."""

    def __init__(self, source: str, on_change: Callable[[str], None], on_child: OnChild | None = None) -> None:
        self.source = source.rstrip("/") or "/"
        self._on_change = on_change
        # Key mode (the inode core): directories are watched by their inode (`watch_key`) and reported by key,
        # so a directory renamed (in SOURCE or through the mount) keeps its watch and its events.
        self._on_child = on_child
        self._inotify = INotify()
        self._lock = threading.Lock()
        self._wd_path: dict[int, str] = {}   # watch descriptor -> directory as a mount path ("/", "/a/b")
        self._wd_key: dict[int, Key] = {}    # key mode: watch descriptor -> directory key
        self._watched: set[str] = set()
        self._failed = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="source-watcher", daemon=True)
        self._thread.start()
        if on_child is None:
            self.watch_dir("/")

    def watch_key(self, fd: int, key: Key) -> None:
        """Key mode: watch the directory open as `fd` (O_PATH is enough), reported as `key`."""
        if self._failed:
            return
        with self._lock:
            try:
                wd = self._inotify.add_watch(f"/proc/self/fd/{fd}", _KEY_MASK)
            except OSError as e:
                if e.errno not in (2, 20):
                    self._stopped(e)
                return
            self._wd_key[wd] = key

    def _stopped(self, e: OSError) -> None:
        self._failed = True
        print(f"fuse-passthrough: watching SOURCE stopped ({e.strerror}); changes made directly in "
              "SOURCE are seen within the cache timeout", file=sys.stderr)

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
                # key mode: 5 ms more to gather the events of a burst (a writer's IN_MODIFYs merge meanwhile)
                events = self._inotify.read(timeout=200, read_delay=5 if self._on_child is not None else None)
            except (OSError, ValueError):
                return
            if self._on_child is not None:
                self._report_keys(events)
                continue
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

    def _report_keys(self, events: list) -> None:  # type: ignore[type-arg]
        assert self._on_child is not None
        changes: dict[tuple[Key, bytes | None], bool] = {}
        for ev in events:
            if ev.mask & inotify_flags.IGNORED:
                with self._lock:
                    self._wd_key.pop(ev.wd, None)
                continue
            key = self._wd_key.get(ev.wd)
            if key is None or ev.mask & inotify_flags.Q_OVERFLOW:
                continue
            name = os.fsencode(ev.name) if ev.name else None
            entry = bool(ev.mask & _ENTRY)
            changes[(key, name)] = changes.get((key, name), False) or entry
        for (key, name), entry in changes.items():
            try:
                self._on_child(key, name, entry)
            except Exception as e:  # never let one failure stop the watcher
                print(f"fuse-passthrough: invalidating {name!r} failed: {e}", file=sys.stderr)

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


# fanotify (linux/fanotify.h)
_FAN_CLOEXEC, _FAN_NONBLOCK, _FAN_CLASS_NOTIF = 0x1, 0x2, 0x0
_FAN_REPORT_DFID_NAME = 0x400 | 0x800  # FAN_REPORT_DIR_FID | FAN_REPORT_NAME
_FAN_MARK_ADD, _FAN_MARK_DONT_FOLLOW, _FAN_MARK_ONLYDIR = 0x1, 0x4, 0x8
_FAN_EVENT_ON_CHILD = 0x08000000
_FAN_ATTRIB, _FAN_CLOSE_WRITE, _FAN_MOVED_FROM, _FAN_MOVED_TO = 0x4, 0x8, 0x40, 0x80
_FAN_CREATE, _FAN_DELETE, _FAN_Q_OVERFLOW, _FAN_ONDIR = 0x100, 0x200, 0x4000, 0x40000000
_FAN_MODIFY = 0x2
_FAN_MASK = (_FAN_ATTRIB | _FAN_CLOSE_WRITE | _FAN_MOVED_FROM | _FAN_MOVED_TO | _FAN_CREATE | _FAN_DELETE
             | _FAN_ONDIR | _FAN_EVENT_ON_CHILD)
_FAN_KEY_MASK = _FAN_MASK | _FAN_MODIFY  # as _KEY_MASK (fanotify merges a queued event with a new identical one)
_FAN_ENTRY = _FAN_CREATE | _FAN_DELETE | _FAN_MOVED_FROM | _FAN_MOVED_TO
_AT_EMPTY_PATH = 0x1000
_FAN_INFO_DFID_NAME = 2
_EVENT = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata
_AT_FDCWD = -100

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_libc.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
                                    ctypes.c_int]
_MAX_HANDLE_SZ = 128


def _handle_of(path: str, fd: int = _AT_FDCWD) -> bytes | None:
    """The file handle (struct file_handle, as fanotify reports it) of the directory at `path` (or open as `fd`
    when `path` is "")."""
    buf = ctypes.create_string_buffer(8 + _MAX_HANDLE_SZ)
    struct.pack_into("=I", buf, 0, _MAX_HANDLE_SZ)
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(fd, os.fsencode(path), buf, ctypes.byref(mount_id),
                               _AT_EMPTY_PATH if not path else 0) != 0:
        return None
    return buf.raw[:8 + struct.unpack_from("=I", buf, 0)[0]]


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


class FanotifyWatcher:
    """fanotify marks on SOURCE's cached directories (root); `on_change(mount_path)` for changes made there by
    other processes than the daemon."""

    def __init__(self, source: str, on_change: Callable[[str], None], on_child: OnChild | None = None) -> None:
        self.source = source.rstrip("/") or "/"
        self._on_change = on_change
        self._on_child = on_child  # key mode, as SourceWatcher's
        self._handle_key: dict[bytes, Key] = {}  # key mode: file handle of each marked directory -> its key
        self._fd = _check(_libc.fanotify_init(_FAN_CLASS_NOTIF | _FAN_CLOEXEC | _FAN_NONBLOCK | _FAN_REPORT_DFID_NAME,
                                              os.O_RDONLY | os.O_CLOEXEC))
        self._marked: set[str] = set()
        # file handle -> mount path of each marked directory when marked: where a directory removed since is
        # reported (its changes just before, e.g. rm -r, can no longer be found by its handle)
        self._marked_handles: dict[bytes, str] = {}
        self._failed = False
        self._lock = threading.Lock()
        try:
            if on_child is None:
                self._mark("/")
            self._mount_fd = os.open(self.source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # not O_PATH: EBADF
        except BaseException:
            os.close(self._fd)
            raise
        self._pid = os.getpid()
        self._dirs: dict[bytes, str | None] = {}  # file handle -> mount path of that directory (None: outside)
        self._dirs_time = time.monotonic()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="source-watcher", daemon=True)
        self._thread.start()

    def _mark(self, path: str) -> None:
        where = self.source + (path if path != "/" else "")
        _check(_libc.fanotify_mark(self._fd, _FAN_MARK_ADD | _FAN_MARK_DONT_FOLLOW | _FAN_MARK_ONLYDIR, _FAN_MASK,
                                   _AT_FDCWD, os.fsencode(where)))
        self._marked.add(path)
        handle = _handle_of(where)
        if handle is not None:
            self._marked_handles[handle] = path

    def watch_key(self, fd: int, key: Key) -> None:
        """Key mode: mark the directory open as `fd`, reported as `key` (the mark and the handle follow the
        directory's inode wherever it moves)."""
        if self._failed:
            return
        with self._lock:
            handle = _handle_of("", fd)
            try:
                if handle is None:
                    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
                _check(_libc.fanotify_mark(self._fd, _FAN_MARK_ADD | _FAN_MARK_ONLYDIR, _FAN_KEY_MASK, _AT_FDCWD,
                                           f"/proc/self/fd/{fd}".encode()))
            except OSError as e:
                if e.errno not in (2, 20):
                    self._failed = True
                    print(f"fuse-passthrough: watching SOURCE stopped ({e.strerror}); changes made directly in "
                          "SOURCE are seen within the cache timeout", file=sys.stderr)
                return
            if len(self._handle_key) > 1 << 20:  # directories removed long ago
                self._handle_key.clear()
            self._handle_key[handle] = key

    def watch_dir(self, path: str) -> None:
        """The kernel now knows the directory at mount path `path`: mark it (once; the mark follows the
        directory's inode wherever it moves, and goes with it)."""
        if path in self._marked or self._failed:
            return
        with self._lock:
            if path in self._marked:
                return
            if len(self._marked) > 65536:  # paths of moved or removed directories: re-marking is harmless
                self._marked.clear()
                self._marked_handles.clear()
            try:
                self._mark(path)
            except OSError as e:
                if e.errno not in (2, 20):  # ENOENT, ENOTDIR: gone already
                    self._failed = True
                    print(f"fuse-passthrough: watching SOURCE stopped ({e.strerror}); changes made directly in "
                          "SOURCE are seen within the cache timeout", file=sys.stderr)

    def _mount_path(self, handle: bytes) -> str | None:
        """The mount path of the directory with this file handle, or None if it is not under SOURCE."""
        if time.monotonic() - self._dirs_time > 0.5 or len(self._dirs) > 4096:  # directories move
            self._dirs.clear()
            self._dirs_time = time.monotonic()
        if handle in self._dirs:
            return self._dirs[handle]
        path = None
        try:
            fd = _check(_libc.open_by_handle_at(self._mount_fd, handle, os.O_PATH | os.O_CLOEXEC))
            try:
                where = os.readlink(f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
            if where == self.source:
                path = "/"
            elif where.startswith(self.source + "/") and not where.endswith(" (deleted)"):
                path = where[len(self.source):]
        except OSError:
            pass
        if path is None:  # removed: its last known place (its events came just before it went)
            path = self._marked_handles.get(handle)
        self._dirs[handle] = path
        return path

    def _events(self, data: bytes, keyed: list[tuple[Key, bytes | None, bool]]) -> list[str]:
        """Paths changed (path mode); key mode appends (directory key, name, entry) to `keyed` instead."""
        changed: list[str] = []
        pos = 0
        while pos + _EVENT.size <= len(data):
            event_len, _vers, _res, meta_len, mask, fd, pid = _EVENT.unpack_from(data, pos)
            if fd >= 0:
                os.close(fd)
            end = pos + event_len
            info = pos + meta_len
            pos = end
            if pid == self._pid or mask & _FAN_Q_OVERFLOW:
                continue  # our own change (the kernel knows it), or lost events (the timeout remains the bound)
            while info + 4 <= end:
                info_type, _pad, info_len = struct.unpack_from("=BBH", data, info)
                if info_type == _FAN_INFO_DFID_NAME:
                    handle_bytes = struct.unpack_from("=I", data, info + 12)[0]
                    handle = data[info + 12: info + 20 + handle_bytes]  # struct file_handle
                    name_end = data.index(b"\0", info + 20 + handle_bytes)
                    if self._on_child is not None:
                        key = self._handle_key.get(handle)
                        raw = data[info + 20 + handle_bytes: name_end]
                        if key is not None:
                            keyed.append((key, raw if raw and raw != b"." else None, bool(mask & _FAN_ENTRY)))
                        info += max(info_len, 4)
                        continue
                    name = data[info + 20 + handle_bytes: name_end].decode("utf-8", "surrogateescape")
                    directory = self._mount_path(handle)
                    if directory is not None:
                        if name and name != ".":
                            changed.append(directory.rstrip("/") + "/" + name)
                        changed.append(directory)
                info += max(info_len, 4)
        return changed

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._stop:
            if not poller.poll(200):
                continue
            if self._on_child is not None:
                time.sleep(0.005)  # as SourceWatcher: gather a burst, merged by the kernel meanwhile
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            keyed: list[tuple[Key, bytes | None, bool]] = []
            for path in dict.fromkeys(self._events(data, keyed)):
                try:
                    self._on_change(path)
                except Exception as e:  # never let one failure stop the watcher
                    print(f"fuse-passthrough: invalidating {path!r} failed: {e}", file=sys.stderr)
            if self._on_child is not None and keyed:
                changes: dict[tuple[Key, bytes | None], bool] = {}
                for key, name, entry in keyed:
                    changes[(key, name)] = changes.get((key, name), False) or entry
                for (key, name), entry in changes.items():
                    try:
                        self._on_child(key, name, entry)
                    except Exception as e:  # never let one failure stop the watcher
                        print(f"fuse-passthrough: invalidating {name!r} failed: {e}", file=sys.stderr)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        os.close(self._fd)
        os.close(self._mount_fd)


def watch_source(source: str, on_change: Callable[[str], None], on_child: OnChild | None = None
                 ) -> FanotifyWatcher | SourceWatcher | None:
    """A running watcher: fanotify as root where the kernel and the filesystem allow it, else inotify; None (said
    on stderr) where neither can be used. With `on_child` (the inode core), in key mode: directories are
    watched with `watch_key(fd, key)` and changes reported as `on_child(key, name, entry)`.

    FUSE_PASSTHROUGH_NO_FANOTIFY=1 in the environment makes a root daemon use inotify (the tests of both
    watchers use it; README "Caching")."""
    source = os.path.realpath(source)
    if os.geteuid() == 0 and not os.environ.get("FUSE_PASSTHROUGH_NO_FANOTIFY"):
        try:
            return FanotifyWatcher(source, on_change, on_child)
        except OSError:
            pass  # e.g. a filesystem without file handles, or a kernel older than 5.9: inotify
    try:
        return SourceWatcher(source, on_change, on_child)
    except OSError as e:
        print(f"fuse-passthrough: cannot watch SOURCE ({e.strerror}); changes made directly in SOURCE are seen "
              "within the cache timeout", file=sys.stderr)
        return None
