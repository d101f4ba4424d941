"""Changes made directly in SOURCE, behind the mount's back, reported so the kernel's cache can be invalidated.

A cached mount sees such changes within its timeout anyway; the watcher makes it ~100 ms.

Directories are watched by their inode, given as the node's fd (`watch_key`), and changes reported as
`on_change(directory key, name or None, entry)` (key: the directory's (st_dev, st_ino); entry: a name was added or
removed), so a directory renamed in SOURCE or through the mount keeps its watch and its events. Only the
directories the kernel has looked up are watched, so the watch set grows with what the mount has used, never
with the size of SOURCE.

As root, `FanotifyWatcher` marks them with fanotify and directory+name reports (Linux >= 5.9): each event names
the process that made it, so the daemon's own changes (which the kernel already knows) are skipped. (Names stay
with marks per directory: a filesystem mark for them would make the daemon read every name change on that
filesystem, SOURCE or not; the object group below pays that price only where it buys long timeouts.) Otherwise `InotifyWatcher` uses inotify; it cannot tell who made a change, so the
mount's own changes are invalidated too: harmless, one more lookup for the next access. Both run in a thread of
their own and gather a burst for 5 ms (identical queued events merge meanwhile). When neither can be used (no
free watches, a seccomp policy...) the watcher says so once and the timeout remains the bound.

What directory marks cannot see: a change made through a name in a directory the kernel has not looked up — a
hard link elsewhere, or a file moved out of a watched directory and still open through the mount. So
`FanotifyWatcher` can also put a *filesystem* mark on SOURCE's filesystems (`watch_filesystem`, given
`on_object`), in a group of its own that reports each changed object (write, truncate, chmod, link count,
rename...) by its file handle, whatever name it was changed through; `on_object` gets its (st_dev, st_ino). Only
on local filesystems (`LOCAL_FILESYSTEMS`): on NFS, CIFS, FUSE or overlayfs another machine or a lower layer
changes files without this kernel's fsnotify seeing it. What no mark sees: stores through a shared mmap made
directly in SOURCE (the kernel sends no event for them), and mounts made or removed inside SOURCE (watched
through /proc/self/mountinfo instead). Lost events (a full queue) and mount changes are reported with
`on_lost(False)`, a watcher that stopped watching with `on_lost(True)`.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from inotify_simple import INotify
from inotify_simple import flags as inotify_flags

from .syscalls import LIBC

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
# on_lost(failed): events were lost (a full queue, a mount changed inside SOURCE) or, failed, the watcher can no
# longer watch everything it is asked to
OnLost = Callable[[bool], None]


def _report(changes: dict[tuple[Key, bytes | None], bool], on_change: OnChange) -> None:
    for (key, name), entry in changes.items():
        try:
            on_change(key, name, entry)
        except Exception as e:  # never let one failure stop the watcher
            print(f"fuse-passthrough: invalidating {name!r} failed: {e}", file=sys.stderr)


def _stopped(e: OSError, on_lost: OnLost | None) -> None:
    print(f"fuse-passthrough: watching SOURCE stopped ({e.strerror}); changes made directly in SOURCE are seen "
          "within the cache timeout", file=sys.stderr)
    if on_lost is not None:
        on_lost(True)


class InotifyWatcher:
    """inotify on SOURCE's directories, by inode (`watch_key`)."""

    def __init__(self, on_change: OnChange, on_lost: OnLost | None = None) -> None:
        self._on_change = on_change
        self._on_lost = on_lost
        self._inotify = INotify()
        self._lock = threading.Lock()
        self._wd_key: dict[int, Key] = {}  # watch descriptor -> directory key
        self._failed = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="source-watcher", daemon=True)
        self._thread.start()

    def watch_key(self, fd: int, key: Key) -> bool:
        """Watch the directory open as `fd` (O_PATH is enough), reported as `key`; whether it is watched."""
        if self._failed:
            return False
        with self._lock:
            try:
                wd = self._inotify.add_watch(f"/proc/self/fd/{fd}", _MASK)
            except OSError as e:
                if e.errno not in (2, 20):  # ENOENT, ENOTDIR: gone already
                    self._failed = True
                    _stopped(e, self._on_lost)
                return False
            self._wd_key[wd] = key
        return True

    def _run(self) -> None:
        while not self._stop:
            try:
                events = self._inotify.read(timeout=200, read_delay=5)  # 5 ms more: the rest of a burst
            except (OSError, ValueError):
                return
            changes: dict[tuple[Key, bytes | None], bool] = {}
            for ev in events:
                if ev.mask & inotify_flags.Q_OVERFLOW:
                    if self._on_lost is not None:
                        self._on_lost(False)
                    continue
                if ev.mask & inotify_flags.IGNORED:
                    with self._lock:
                        self._wd_key.pop(ev.wd, None)
                    continue
                key = self._wd_key.get(ev.wd)
                if key is None:
                    continue
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
_FAN_MODIFY, _FAN_MOVE_SELF = 0x2, 0x800
_FAN_REPORT_FID, _FAN_MARK_FILESYSTEM = 0x200, 0x100
_FAN_INFO_FID = 1
# The filesystem mark's: every change of an object's data or attributes, whatever name it was made through (a new
# hard link changes the link count: FS_ATTRIB on the inode; a rename changes the ctime: FS_MOVE_SELF), and, as
# _MASK, the close of a file written (after stores through a shared mapping, which send no FS_MODIFY).
_FAN_OBJECT_MASK = _FAN_MODIFY | _FAN_ATTRIB | _FAN_MOVE_SELF | _FAN_CLOSE_WRITE | _FAN_ONDIR
# as _MASK (fanotify merges a queued event with a new identical one)
_FAN_MASK = (_FAN_ATTRIB | _FAN_CLOSE_WRITE | _FAN_MOVED_FROM | _FAN_MOVED_TO | _FAN_CREATE | _FAN_DELETE
             | _FAN_ONDIR | _FAN_EVENT_ON_CHILD | _FAN_MODIFY)
_FAN_ENTRY = _FAN_CREATE | _FAN_DELETE | _FAN_MOVED_FROM | _FAN_MOVED_TO
# A directory on a filesystem with a filesystem mark: its names only (the mark reports its objects, the directory
# itself included). Every event costs the system call that makes it (the daemon's own included, which are read and
# skipped): one event fewer per write, close after writing and attribute change (docs/benchmarks.md, 2026-12-06
# 23:00).
_FAN_NAMES_MASK = _FAN_ENTRY | _FAN_ONDIR
_AT_EMPTY_PATH = 0x1000
_FAN_INFO_DFID_NAME = 2
_EVENT = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata
_AT_FDCWD = -100

_libc = ctypes.CDLL(LIBC, use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_libc.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
                                    ctypes.c_int]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
_MAX_HANDLE_SZ = 128

# statfs f_type of the filesystems that only this kernel changes, so that fsnotify sees every change: ext2/3/4,
# xfs, btrfs, tmpfs, f2fs, bcachefs. Not NFS, CIFS, FUSE, 9p, Ceph (other machines), overlayfs (its layers
# change underneath), nor anything unknown.
LOCAL_FILESYSTEMS = frozenset({0xEF53, 0x58465342, 0x9123683E, 0x01021994, 0xF2F52010, 0xCA451A4E})


def filesystem_type(path: str) -> int | None:
    """statfs(2)'s f_type of the filesystem holding `path` (None if it cannot be read)."""
    buf = ctypes.create_string_buffer(256)  # struct statfs: 120 bytes on 64-bit Linux; f_type first
    if _libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return int(struct.unpack_from("=l", buf, 0)[0] & 0xFFFFFFFF)


def local_filesystem(path: str) -> bool:
    """Whether every change of the filesystem holding `path` is made by this kernel (LOCAL_FILESYSTEMS)."""
    return filesystem_type(path) in LOCAL_FILESYSTEMS


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


def _fsid(data: bytes, at: int) -> int:
    """A __kernel_fsid_t as glibc's statvfs f_fsid writes it (val[0] | val[1] << 32)."""
    lo, hi = struct.unpack_from("=II", data, at)
    return lo | hi << 32


class FanotifyWatcher:
    """fanotify marks on SOURCE's directories, by inode (`watch_key`; root): changes made there by other processes
    than the daemon. With `on_object`, `watch_filesystem` adds filesystem marks (a second group) and the objects
    changed on those filesystems are reported by (st_dev, st_ino). With `on_lost`, a full queue, a mount made or
    removed inside SOURCE (/proc/self/mountinfo) and a watcher that stops are reported."""

    def __init__(self, on_change: OnChange, root_fd: int, on_object: Callable[[Key], None] | None = None,
                 on_lost: OnLost | None = None, opening: AbstractContextManager[Any] | None = None) -> None:
        if _handle_of(root_fd) is None:  # a filesystem without file handles: fanotify cannot name its directories
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        self._on_change = on_change
        self._on_object = on_object
        self._on_lost = on_lost
        # held around the brief open of a changed object (`_key`): the daemon frees a file it unlinks only
        # once no such open holds it
        self._opening = opening if opening is not None else nullcontext()
        self._handle_key: dict[bytes, Key] = {}  # file handle of each marked directory -> its key
        self._fd = _check(_libc.fanotify_init(_FAN_CLASS_NOTIF | _FAN_CLOEXEC | _FAN_NONBLOCK | _FAN_REPORT_DFID_NAME,
                                              os.O_RDONLY | os.O_CLOEXEC))
        self._object_fd = -1
        self._mountinfo = -1
        self._mount_fds: dict[int, int] = {}  # fsid -> a directory on that filesystem, for open_by_handle_at
        try:
            if on_object is not None:
                self._object_fd = _check(_libc.fanotify_init(
                    _FAN_CLASS_NOTIF | _FAN_CLOEXEC | _FAN_NONBLOCK | _FAN_REPORT_FID, os.O_RDONLY | os.O_CLOEXEC))
        except BaseException:
            os.close(self._fd)
            raise
        self._keys: dict[bytes, Key] = {}  # file handle -> (st_dev, st_ino): fixed for the object's life
        self._filesystems: set[int] = set()  # st_dev with a filesystem mark
        self._source = os.readlink(f"/proc/self/fd/{root_fd}")
        self._mounts: set[str] = set()
        if on_lost is not None:
            try:  # POLLPRI when the mount table changes: a mount inside SOURCE replaces what names lead to
                self._mountinfo = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
                self._mounts = self._mounts_inside()
            except OSError:
                if self._mountinfo >= 0:
                    os.close(self._mountinfo)
                self._mountinfo = -1
        self._failed = False
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="source-watcher", daemon=True)
        self._thread.start()

    def watch_key(self, fd: int, key: Key) -> bool:
        """Mark the directory open as `fd`, reported as `key` (the mark and the handle follow the directory's
        inode wherever it moves); whether it is marked. On a filesystem `watch_filesystem` marked before, only
        its names are watched."""
        if self._failed:
            return False
        with self._lock:
            handle = _handle_of(fd)
            try:
                if handle is None:
                    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
                # "." from the directory's own fd (O_PATH serves as a dirfd, not as the object to mark): the
                # directory itself, with no walk of /proc (half the cost of a mark by its /proc/self/fd name)
                mask = _FAN_NAMES_MASK if key[0] in self._filesystems else _FAN_MASK
                _check(_libc.fanotify_mark(self._fd, _FAN_MARK_ADD | _FAN_MARK_ONLYDIR, mask, fd, b"."))
            except OSError as e:
                if e.errno not in (2, 20):  # ENOENT, ENOTDIR: gone already
                    self._failed = True
                    _stopped(e, self._on_lost)
                return False
            if len(self._handle_key) > 1 << 20:  # directories removed long ago
                self._handle_key.clear()
            self._handle_key[handle] = key
        return True

    def watch_filesystem(self, fd: int) -> bool:
        """Mark the whole filesystem of the directory open as `fd` for changed objects (with on_object), if it is
        local; whether it is marked now."""
        where = f"/proc/self/fd/{fd}"
        if self._object_fd < 0 or self._failed or not local_filesystem(where):
            return False
        with self._lock:
            dev = os.fstat(fd).st_dev
            if dev in self._filesystems:
                return True
            try:
                _check(_libc.fanotify_mark(self._object_fd, _FAN_MARK_ADD | _FAN_MARK_FILESYSTEM, _FAN_OBJECT_MASK,
                                           _AT_FDCWD, where.encode()))
                mount_fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # not O_PATH: EBADF
            except OSError:  # e.g. EXDEV: a btrfs subvolume with an fsid of its own
                return False
            self._filesystems.add(dev)
            fsid = os.fstatvfs(mount_fd).f_fsid
            if fsid in self._mount_fds:
                os.close(mount_fd)
            else:
                self._mount_fds[fsid] = mount_fd
        return True

    def _key(self, fsid: int, handle: bytes) -> Key | None:
        """The (st_dev, st_ino) of the object with this file handle (None if it is gone and unknown)."""
        key = self._keys.get(handle)
        if key is not None:
            return key
        mount_fd = self._mount_fds.get(fsid)
        if mount_fd is None:
            return None
        with self._opening:
            try:
                fd = _check(_libc.open_by_handle_at(mount_fd, handle, os.O_PATH | os.O_CLOEXEC))
            except OSError:  # removed (ESTALE): a directory marked before is known by its handle
                return self._handle_key.get(handle)
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
        if len(self._keys) > 65536:
            self._keys.clear()
        key = self._keys[handle] = (st.st_dev, st.st_ino)
        return key

    def _events(self, data: bytes, changes: dict[tuple[Key, bytes | None], bool]) -> None:
        pos = 0
        while pos + _EVENT.size <= len(data):
            event_len, _vers, _res, meta_len, mask, fd, pid = _EVENT.unpack_from(data, pos)
            if fd >= 0:
                os.close(fd)
            end = pos + event_len
            info = pos + meta_len
            pos = end
            if mask & _FAN_Q_OVERFLOW:
                self._lost()
                continue
            if pid == self._pid:
                continue  # our own change: the kernel knows it
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

    def _objects(self, data: bytes, changed: dict[Key, None]) -> None:
        """The (st_dev, st_ino) of each object other processes changed (filesystem marks)."""
        pos = 0
        while pos + _EVENT.size <= len(data):
            event_len, _vers, _res, meta_len, mask, fd, pid = _EVENT.unpack_from(data, pos)
            if fd >= 0:
                os.close(fd)
            end = pos + event_len
            info = pos + meta_len
            pos = end
            if mask & _FAN_Q_OVERFLOW:
                self._lost()
                continue
            if pid == self._pid:
                continue
            while info + 4 <= end:
                info_type, _pad, info_len = struct.unpack_from("=BBH", data, info)
                if info_type == _FAN_INFO_FID:
                    handle_bytes = struct.unpack_from("=I", data, info + 12)[0]
                    key = self._key(_fsid(data, info + 4), data[info + 12: info + 20 + handle_bytes])
                    if key is not None:
                        changed[key] = None
                info += max(info_len, 4)

    def _lost(self) -> None:
        if self._on_lost is not None:
            self._on_lost(False)
        # else: the timeout remains the bound

    def _mounts_inside(self) -> set[str]:
        """The mount points inside SOURCE (from /proc/self/mountinfo, read from its start)."""
        os.lseek(self._mountinfo, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self._mountinfo, 65536):
            chunks.append(chunk)
        prefix = self._source.rstrip("/") + "/"
        return {p for line in b"".join(chunks).decode(errors="replace").splitlines()
                if len(parts := line.split(" ")) > 4 and (p := parts[4]).startswith(prefix)}

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        if self._object_fd >= 0:
            poller.register(self._object_fd, select.POLLIN)
        if self._mountinfo >= 0:
            poller.register(self._mountinfo, select.POLLPRI | select.POLLERR)
        while not self._stop:
            ready = poller.poll(200)
            if not ready:
                continue
            time.sleep(0.005)  # as InotifyWatcher: gather a burst, merged by the kernel meanwhile
            changes: dict[tuple[Key, bytes | None], bool] = {}
            objects: dict[Key, None] = {}
            for fd, _events in ready:
                if fd == self._mountinfo:
                    try:
                        mounts = self._mounts_inside()
                    except OSError:
                        continue
                    if mounts != self._mounts:
                        self._mounts = mounts
                        self._lost()
                    continue
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                try:
                    if fd == self._object_fd:
                        self._objects(data, objects)
                    else:
                        self._events(data, changes)
                except Exception as e:  # never let one failure stop the watcher
                    print(f"fuse-passthrough: reading SOURCE's changes failed: {e!r}", file=sys.stderr)
            _report(changes, self._on_change)
            if self._on_object is not None:
                for key in objects:
                    try:
                        self._on_object(key)
                    except Exception as e:  # never let one failure stop the watcher
                        print(f"fuse-passthrough: invalidating {key} failed: {e!r}", file=sys.stderr)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        os.close(self._fd)
        if self._object_fd >= 0:
            os.close(self._object_fd)
        if self._mountinfo >= 0:
            os.close(self._mountinfo)
        for fd in set(self._mount_fds.values()):
            os.close(fd)


def watch_source(on_change: OnChange, root_fd: int, on_object: Callable[[Key], None] | None = None,
                 on_lost: OnLost | None = None, opening: AbstractContextManager[Any] | None = None
                 ) -> FanotifyWatcher | InotifyWatcher | None:
    """A running watcher for the SOURCE whose root directory is open as `root_fd`: fanotify as root where the
    kernel and the filesystem allow it, else inotify; None (said on stderr) where neither can be used.
    Directories are added with `watch_key(fd, key)`; with fanotify and `on_object`, whole local filesystems with
    `watch_filesystem(fd)`; `opening` is held around the watcher's brief opens of changed objects.

    FUSE_PASSTHROUGH_NO_FANOTIFY=1 in the environment makes a root daemon use inotify (the tests of both
    watchers use it; README "Caching")."""
    if os.geteuid() == 0 and not os.environ.get("FUSE_PASSTHROUGH_NO_FANOTIFY"):
        try:
            return FanotifyWatcher(on_change, root_fd, on_object, on_lost, opening)
        except OSError:
            pass  # e.g. a kernel older than 5.9, or a filesystem without file handles: inotify
    try:
        return InotifyWatcher(on_change, on_lost)
    except OSError as e:
        print(f"fuse-passthrough: cannot watch SOURCE ({e.strerror}); changes made directly in SOURCE are seen "
              "within the cache timeout", file=sys.stderr)
        return None
