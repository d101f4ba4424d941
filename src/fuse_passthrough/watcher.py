"""Changes made directly in SOURCE, behind the mount's back, reported so the kernel's cache can be invalidated.

A cached mount sees such changes within its timeout anyway; the watcher makes it ~100 ms.

Directories are watched by their inode, given as the node's fd (`watch_key`), and changes reported as
`on_change(directory key, name or None, entry)` (key: the directory's (st_dev, st_ino); entry: a name was added or
removed), so a directory renamed in SOURCE or through the mount keeps its watch and its events. Only the
directories the kernel has looked up are watched, so the watch set grows with what the mount has used, never
with the size of SOURCE.

As root, `FanotifyWatcher` marks them with fanotify and directory+name reports (Linux >= 5.9): each event names
the process that made it, so the daemon's own changes (which the kernel already knows) are skipped. (A mark on
the whole filesystem would need no mark per directory, but would make the daemon read every change on that
filesystem, SOURCE or not.) Otherwise `InotifyWatcher` uses inotify; it cannot tell who made a change, so the
mount's own changes are invalidated too: harmless, one more lookup for the next access. Both run in a thread of
their own and gather a burst for 5 ms (identical queued events merge meanwhile). When neither can be used (no
free watches, a seccomp policy...) the watcher says so once and the timeout remains the bound.
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

# What makes a cached name, attribute or page stale; IN_MODIFY too, so that a truncate(2) in SOURCE or a writer
# that keeps its file open is seen within the bound (identical queued events are merged by the kernel, and one
# read serves every event queued by then). No DONT_FOLLOW: the watched path is the node's /proc/self/fd link,
# followed to the directory.
_MASK = (inotify_flags.CREATE | inotify_flags.DELETE | inotify_flags.MOVED_FROM | inotify_flags.MOVED_TO
         | inotify_flags.ATTRIB | inotify_flags.CLOSE_WRITE | inotify_flags.DELETE_SELF | inotify_flags.MOVE_SELF
         | inotify_flags.ONLYDIR | inotify_flags.EXCL_UNLINK | inotify_flags.MODIFY)
# Events that change a name in the directory (the others change the object only).
_ENTRY = (inotify_flags.CREATE | inotify_flags.DELETE | inotify_flags.MOVED_FROM | inotify_flags.MOVED_TO)

Key = tuple[int, int]  # a directory's (st_dev, st_ino)
# on_change(directory key, name or None for the directory itself, whether a name was added or removed)
OnChange = Callable[[Key, "bytes | None", bool], None]


def _report(changes: dict[tuple[Key, bytes | None], bool], on_change: OnChange) -> None:
    for (key, name), entry in changes.items():
        try:
            on_change(key, name, entry)
        except Exception as e:  # never let one failure stop the watcher
            print(f"fuse-passthrough: invalidating {name!r} failed: {e}", file=sys.stderr)


def _stopped(e: OSError) -> None:
    print(f"fuse-passthrough: watching SOURCE stopped ({e.strerror}); changes made directly in SOURCE are seen "
          "within the cache timeout", file=sys.stderr)


class InotifyWatcher:
    """inotify on SOURCE's directories, by inode (`watch_key`)."""

    def __init__(self, on_change: OnChange) -> None:
        self._on_change = on_change
        self._inotify = INotify()
        self._lock = threading.Lock()
        self._wd_key: dict[int, Key] = {}  # watch descriptor -> directory key
        self._failed = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="source-watcher", daemon=True)
        self._thread.start()

    def watch_key(self, fd: int, key: Key) -> None:
        """Watch the directory open as `fd` (O_PATH is enough), reported as `key`."""
        if self._failed:
            return
        with self._lock:
            try:
                wd = self._inotify.add_watch(f"/proc/self/fd/{fd}", _MASK)
            except OSError as e:
                if e.errno not in (2, 20):  # ENOENT, ENOTDIR: gone already
                    self._failed = True
                    _stopped(e)
                return
            self._wd_key[wd] = key

    def _run(self) -> None:
        while not self._stop:
            try:
                events = self._inotify.read(timeout=200, read_delay=5)  # 5 ms more: the rest of a burst
            except (OSError, ValueError):
                return
            changes: dict[tuple[Key, bytes | None], bool] = {}
            for ev in events:
                if ev.mask & inotify_flags.IGNORED:
                    with self._lock:
                        self._wd_key.pop(ev.wd, None)
                    continue
                key = self._wd_key.get(ev.wd)
                if key is None or ev.mask & inotify_flags.Q_OVERFLOW:
                    continue  # lost events: the timeout remains the bound
                name = os.fsencode(ev.name) if ev.name else None
                changes[(key, name)] = changes.get((key, name), False) or bool(ev.mask & _ENTRY)
            _report(changes, self._on_change)

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
# as _MASK (fanotify merges a queued event with a new identical one)
_FAN_MASK = (_FAN_ATTRIB | _FAN_CLOSE_WRITE | _FAN_MOVED_FROM | _FAN_MOVED_TO | _FAN_CREATE | _FAN_DELETE
             | _FAN_ONDIR | _FAN_EVENT_ON_CHILD | _FAN_MODIFY)
_FAN_ENTRY = _FAN_CREATE | _FAN_DELETE | _FAN_MOVED_FROM | _FAN_MOVED_TO
_AT_EMPTY_PATH = 0x1000
_FAN_INFO_DFID_NAME = 2
_EVENT = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata
_AT_FDCWD = -100

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_libc.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
                                    ctypes.c_int]
_MAX_HANDLE_SZ = 128


def _handle_of(fd: int) -> bytes | None:
    """The file handle (struct file_handle, as fanotify reports it) of the directory open as `fd`."""
    buf = ctypes.create_string_buffer(8 + _MAX_HANDLE_SZ)
    struct.pack_into("=I", buf, 0, _MAX_HANDLE_SZ)
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(fd, b"", buf, ctypes.byref(mount_id), _AT_EMPTY_PATH) != 0:
        return None
    return buf.raw[:8 + struct.unpack_from("=I", buf, 0)[0]]


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


class FanotifyWatcher:
    """fanotify marks on SOURCE's directories, by inode (`watch_key`; root): changes made there by other processes
    than the daemon."""

    def __init__(self, on_change: OnChange, root_fd: int) -> None:
        if _handle_of(root_fd) is None:  # a filesystem without file handles: fanotify cannot name its directories
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        self._on_change = on_change
        self._handle_key: dict[bytes, Key] = {}  # file handle of each marked directory -> its key
        self._fd = _check(_libc.fanotify_init(_FAN_CLASS_NOTIF | _FAN_CLOEXEC | _FAN_NONBLOCK | _FAN_REPORT_DFID_NAME,
                                              os.O_RDONLY | os.O_CLOEXEC))
        self._failed = False
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="source-watcher", daemon=True)
        self._thread.start()

    def watch_key(self, fd: int, key: Key) -> None:
        """Mark the directory open as `fd`, reported as `key` (the mark and the handle follow the directory's
        inode wherever it moves)."""
        if self._failed:
            return
        with self._lock:
            handle = _handle_of(fd)
            try:
                if handle is None:
                    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
                _check(_libc.fanotify_mark(self._fd, _FAN_MARK_ADD | _FAN_MARK_ONLYDIR, _FAN_MASK, _AT_FDCWD,
                                           f"/proc/self/fd/{fd}".encode()))
            except OSError as e:
                if e.errno not in (2, 20):  # ENOENT, ENOTDIR: gone already
                    self._failed = True
                    _stopped(e)
                return
            if len(self._handle_key) > 1 << 20:  # directories removed long ago
                self._handle_key.clear()
            self._handle_key[handle] = key

    def _events(self, data: bytes, changes: dict[tuple[Key, bytes | None], bool]) -> None:
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
                    key = self._handle_key.get(handle)
                    raw = data[info + 20 + handle_bytes: name_end]
                    if key is not None:
                        name = raw if raw and raw != b"." else None
                        changes[(key, name)] = changes.get((key, name), False) or bool(mask & _FAN_ENTRY)
                info += max(info_len, 4)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._stop:
            if not poller.poll(200):
                continue
            time.sleep(0.005)  # as InotifyWatcher: gather a burst, merged by the kernel meanwhile
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            changes: dict[tuple[Key, bytes | None], bool] = {}
            self._events(data, changes)
            _report(changes, self._on_change)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        os.close(self._fd)


def watch_source(on_change: OnChange, root_fd: int) -> FanotifyWatcher | InotifyWatcher | None:
    """A running watcher for the SOURCE whose root directory is open as `root_fd`: fanotify as root where the
    kernel and the filesystem allow it, else inotify; None (said on stderr) where neither can be used.
    Directories are added with `watch_key(fd, key)`.

    FUSE_PASSTHROUGH_NO_FANOTIFY=1 in the environment makes a root daemon use inotify (the tests of both
    watchers use it; README "Caching")."""
    if os.geteuid() == 0 and not os.environ.get("FUSE_PASSTHROUGH_NO_FANOTIFY"):
        try:
            return FanotifyWatcher(on_change, root_fd)
        except OSError:
            pass  # e.g. a kernel older than 5.9, or a filesystem without file handles: inotify
    try:
        return InotifyWatcher(on_change)
    except OSError as e:
        print(f"fuse-passthrough: cannot watch SOURCE ({e.strerror}); changes made directly in SOURCE are seen "
              "within the cache timeout", file=sys.stderr)
        return None
