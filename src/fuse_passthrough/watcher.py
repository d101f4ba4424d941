"""Changes made directly in SOURCE, behind the mount's back, reported so the kernel's cache can be invalidated.

A cached mount sees such changes within its timeout anyway; the watcher makes it ~100 ms.

As root, `FanotifyWatcher` marks the directories the kernel has cached with fanotify and directory+name reports
(Linux >= 5.9): each event names the process that made it, so the daemon's own changes (which the kernel already
knows) are skipped. (A mark on the whole filesystem would need no mark per directory, but would make the daemon
read every change on that filesystem, SOURCE or not.) Otherwise `SourceWatcher` uses inotify on the
directories the kernel has cached (the binding reports each directory it sees, so the watch set grows with what
the mount has used, never with the size of SOURCE) and runs in a thread of its own. inotify cannot tell who made
a change, so the mount's own changes are invalidated too: harmless, one more lookup for the next access (telling
them apart by path and time would drop a change made in SOURCE right after one made through the mount). When
inotify is unavailable (no free watches, a seccomp policy...) the watcher says so once and the timeout remains
the bound.

What directory marks cannot see: a change made through a name in a directory the kernel has not cached — a hard
link elsewhere, or a file moved out of a watched directory and still open through the mount. For the inode core,
`FanotifyWatcher` can also put a *filesystem* mark on SOURCE's filesystems (`watch_filesystem`), in a group of
its own that reports each changed object (write, truncate, chmod, link count...) by its file handle, whatever
name it was changed through; `on_object` gets its (st_dev, st_ino). Only on local filesystems
(`LOCAL_FILESYSTEMS`): on NFS, CIFS, FUSE or overlayfs another machine or a lower layer changes files without
this kernel's fsnotify seeing it. What no mark sees: stores through a shared mmap made directly in SOURCE (the
kernel sends no event for them), and mounts made or removed inside SOURCE (watched through /proc/self/mountinfo
instead). Lost events (a full queue) and mount changes are reported with `on_lost`.
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
from typing import Any

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

    def watch_dir(self, path: str, where: str | None = None, key: tuple[int, int] | None = None) -> bool:
        """The kernel now knows the directory at mount path `path`: watch it (once); whether it is watched.
        (`where` and `key` are FanotifyWatcher's: inotify watches by path.)"""
        if self._failed:
            return False
        if path in self._watched:
            return True
        with self._lock:
            if path in self._watched:
                return True
            try:
                wd = self._inotify.add_watch(self.source + (path if path != "/" else ""), _MASK)
            except OSError as e:
                if e.errno not in (2, 20):  # ENOENT, ENOTDIR: gone already
                    self._failed = True
                    print(f"fuse-passthrough: watching SOURCE stopped ({e.strerror}); changes made directly in "
                          "SOURCE are seen within the cache timeout", file=sys.stderr)
                return False
            self._wd_path[wd] = path
            self._watched.add(path)
        return True

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


# fanotify (linux/fanotify.h)
_FAN_CLOEXEC, _FAN_NONBLOCK, _FAN_CLASS_NOTIF = 0x1, 0x2, 0x0
_FAN_REPORT_DFID_NAME = 0x400 | 0x800  # FAN_REPORT_DIR_FID | FAN_REPORT_NAME
_FAN_MARK_ADD, _FAN_MARK_DONT_FOLLOW, _FAN_MARK_ONLYDIR = 0x1, 0x4, 0x8
_FAN_REPORT_FID, _FAN_MARK_FILESYSTEM, _FAN_MODIFY, _FAN_MOVE_SELF = 0x200, 0x100, 0x2, 0x800
_FAN_INFO_FID = 1
# Every change of an object's data or attributes, whatever name it was made through (a new hard link changes
# the link count: FS_ATTRIB on the inode; a rename changes the ctime: FS_MOVE_SELF).
_FAN_OBJECT_MASK = _FAN_MODIFY | 0x4 | _FAN_MOVE_SELF | 0x40000000  # | FAN_ATTRIB | FAN_ONDIR
_FAN_EVENT_ON_CHILD = 0x08000000
_FAN_ATTRIB, _FAN_CLOSE_WRITE, _FAN_MOVED_FROM, _FAN_MOVED_TO = 0x4, 0x8, 0x40, 0x80
_FAN_CREATE, _FAN_DELETE, _FAN_Q_OVERFLOW, _FAN_ONDIR = 0x100, 0x200, 0x4000, 0x40000000
_FAN_MASK = (_FAN_ATTRIB | _FAN_CLOSE_WRITE | _FAN_MOVED_FROM | _FAN_MOVED_TO | _FAN_CREATE | _FAN_DELETE
             | _FAN_ONDIR | _FAN_EVENT_ON_CHILD)
_FAN_INFO_DFID_NAME = 2
_EVENT = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata
_AT_FDCWD = -100

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_libc.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
                                    ctypes.c_int]
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


def _handle_of(path: str, follow: bool = False) -> bytes | None:
    """The file handle (struct file_handle, as fanotify reports it) of the directory at `path`."""
    buf = ctypes.create_string_buffer(8 + _MAX_HANDLE_SZ)
    struct.pack_into("=I", buf, 0, _MAX_HANDLE_SZ)
    mount_id = ctypes.c_int()
    flags = 0x400 if follow else 0  # AT_SYMLINK_FOLLOW: through a /proc/self/fd name
    if _libc.name_to_handle_at(_AT_FDCWD, os.fsencode(path), buf, ctypes.byref(mount_id), flags) != 0:
        return None
    return buf.raw[:8 + struct.unpack_from("=I", buf, 0)[0]]


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


Key = tuple[int, int]  # (st_dev, st_ino) of a source object


def _fsid(data: bytes, at: int) -> int:
    """A __kernel_fsid_t as glibc's statvfs f_fsid writes it (val[0] | val[1] << 32)."""
    lo, hi = struct.unpack_from("=II", data, at)
    return lo | hi << 32


class FanotifyWatcher:
    """fanotify marks on SOURCE's cached directories (root); `on_change(mount_path)` for changes made there by
    other processes than the daemon. With `on_entry`, a changed name is reported as its directory's (st_dev,
    st_ino) and the name instead ("" for the directory itself): no path to go stale when directories move. With
    `on_object`, `watch_filesystem` adds filesystem marks and changed objects are reported by (st_dev, st_ino).
    `on_lost(failed)`: events were lost (a full queue, a mount changed inside SOURCE) or, failed, the watcher
    can no longer watch everything it was asked to."""

    def __init__(self, source: str, on_change: Callable[[str], None],
                 on_entry: Callable[[Key, str], None] | None = None,
                 on_object: Callable[[Key], None] | None = None,
                 on_lost: Callable[[bool], None] | None = None) -> None:
        self.source = source.rstrip("/") or "/"
        self._on_change = on_change
        self._on_entry = on_entry
        self._on_object = on_object
        self._on_lost = on_lost
        self._fd = _check(_libc.fanotify_init(_FAN_CLASS_NOTIF | _FAN_CLOEXEC | _FAN_NONBLOCK | _FAN_REPORT_DFID_NAME,
                                              os.O_RDONLY | os.O_CLOEXEC))
        self._object_fd = -1
        self._marked: set[str] = set()
        # file handle -> mount path (or key, with on_entry) of each marked directory when marked: where a
        # directory removed since is reported (its changes just before, e.g. rm -r, can no longer be found by its
        # handle)
        self._marked_handles: dict[bytes, str | Key] = {}
        self._failed = False
        self._lock = threading.Lock()
        self._keys: dict[bytes, Key] = {}  # file handle -> (st_dev, st_ino): fixed for the object's life
        self._mount_fds: dict[int, int] = {}  # fsid -> a directory on that filesystem, for open_by_handle_at
        self._filesystems: set[int] = set()  # st_dev with a filesystem mark
        self._mountinfo: int = -1
        try:
            self._mark("/")
            self._mount_fd = os.open(self.source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # not O_PATH: EBADF
            if on_object is not None:
                self._object_fd = _check(_libc.fanotify_init(
                    _FAN_CLASS_NOTIF | _FAN_CLOEXEC | _FAN_NONBLOCK | _FAN_REPORT_FID, os.O_RDONLY | os.O_CLOEXEC))
        except BaseException:
            os.close(self._fd)
            raise
        self._mount_fds[os.fstatvfs(self._mount_fd).f_fsid] = self._mount_fd
        if on_lost is not None:
            try:  # POLLPRI when the mount table changes: a mount inside SOURCE replaces what names lead to
                self._mountinfo = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
                self._mounts = self._mounts_inside()
            except OSError:
                self._mountinfo = -1
        self._pid = os.getpid()
        self._dirs: dict[bytes, str | None] = {}  # file handle -> mount path of that directory (None: outside)
        self._dirs_time = time.monotonic()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="source-watcher", daemon=True)
        self._thread.start()

    def _mark(self, path: str, where: str | None = None, key: Key | None = None) -> None:
        target = where if where is not None else self.source + (path if path != "/" else "")
        flags = _FAN_MARK_ADD | _FAN_MARK_ONLYDIR | (_FAN_MARK_DONT_FOLLOW if where is None else 0)
        _check(_libc.fanotify_mark(self._fd, flags, _FAN_MASK, _AT_FDCWD, os.fsencode(target)))
        if where is None:
            self._marked.add(path)
        handle = _handle_of(target, follow=where is not None)
        if handle is not None:
            self._marked_handles[handle] = key if key is not None else path

    def watch_dir(self, path: str, where: str | None = None, key: Key | None = None) -> bool:
        """The kernel now knows the directory at mount path `path`: mark it (once; the mark follows the
        directory's inode wherever it moves, and goes with it). `where`: a name that leads to that very directory
        (its /proc/self/fd name) and `key` its (st_dev, st_ino), for the inode core. Whether it is marked."""
        if self._failed:
            return False
        if where is None and path in self._marked:
            return True
        with self._lock:
            if where is None and path in self._marked:
                return True
            if len(self._marked) > 65536 or len(self._marked_handles) > 65536:  # re-marking is harmless
                self._marked.clear()
                self._marked_handles.clear()
            try:
                self._mark(path, where, key)
            except OSError as e:
                if e.errno not in (2, 20):  # ENOENT, ENOTDIR: gone already
                    self._fail(e.strerror or str(e))
                return False
        return True

    def watch_filesystem(self, where: str) -> bool:
        """Mark the whole filesystem of the directory `where` for changed objects (with on_object), if it is
        local; whether it is marked now."""
        if self._object_fd < 0 or self._failed or not local_filesystem(where):
            return False
        with self._lock:
            try:
                fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                return False
            dev = os.fstat(fd).st_dev
            if dev in self._filesystems:
                os.close(fd)
                return True
            try:
                _check(_libc.fanotify_mark(self._object_fd, _FAN_MARK_ADD | _FAN_MARK_FILESYSTEM, _FAN_OBJECT_MASK,
                                           _AT_FDCWD, os.fsencode(where)))
            except OSError:  # e.g. EXDEV: a btrfs subvolume with an fsid of its own
                os.close(fd)
                return False
            self._filesystems.add(dev)
            fsid = os.fstatvfs(fd).f_fsid
            if fsid in self._mount_fds:
                os.close(fd)
            else:
                self._mount_fds[fsid] = fd
        return True

    def _fail(self, why: str) -> None:
        self._failed = True
        print(f"fuse-passthrough: watching SOURCE stopped ({why}); changes made directly in SOURCE are seen "
              "within the cache timeout", file=sys.stderr)
        if self._on_lost is not None:
            self._on_lost(True)

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
            marked = self._marked_handles.get(handle)
            path = marked if isinstance(marked, str) else None
        self._dirs[handle] = path
        return path

    def _key(self, fsid: int, handle: bytes) -> Key | None:
        """The (st_dev, st_ino) of the object with this file handle (None if it is gone and unknown)."""
        key = self._keys.get(handle)
        if key is not None:
            return key
        mount_fd = self._mount_fds.get(fsid, self._mount_fd)
        try:
            fd = _check(_libc.open_by_handle_at(mount_fd, handle, os.O_PATH | os.O_CLOEXEC))
        except OSError:  # removed (ESTALE): a directory marked before is known by its handle
            marked = self._marked_handles.get(handle)
            return marked if isinstance(marked, tuple) else None
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if len(self._keys) > 65536:
            self._keys.clear()
        key = self._keys[handle] = (st.st_dev, st.st_ino)
        return key

    def _events(self, data: bytes) -> list[tuple[str | Key, str]]:
        """(mount path, "") or, with on_entry, (directory key, name) of each change; a key with name None when
        events were lost."""
        changed: list[tuple[str | Key, str]] = []
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
                    name = data[info + 20 + handle_bytes: name_end].decode("utf-8", "surrogateescape")
                    if self._on_entry is not None:
                        key = self._key(_fsid(data, info + 4), handle)
                        if key is not None:
                            changed.append((key, "" if name == "." else name))
                    else:
                        directory = self._mount_path(handle)
                        if directory is not None:
                            if name and name != ".":
                                changed.append((directory.rstrip("/") + "/" + name, ""))
                            changed.append((directory, ""))
                info += max(info_len, 4)
        return changed

    def _objects(self, data: bytes) -> list[Key]:
        """The (st_dev, st_ino) of each object other processes changed (filesystem marks)."""
        changed: list[Key] = []
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
                        changed.append(key)
                info += max(info_len, 4)
        return changed

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
        prefix = self.source.rstrip("/") + "/"
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
            for fd, _events in ready:
                if fd == self._mountinfo:
                    mounts = self._mounts_inside()
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
                        assert self._on_object is not None
                        for key in dict.fromkeys(self._objects(data)):
                            self._on_object(key)
                    else:
                        for where, name in dict.fromkeys(self._events(data)):
                            if isinstance(where, tuple):
                                assert self._on_entry is not None
                                self._on_entry(where, name)
                            else:
                                self._on_change(where)
                except Exception as e:  # never let one failure stop the watcher
                    print(f"fuse-passthrough: invalidating after a change in SOURCE failed: {e!r}", file=sys.stderr)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        os.close(self._fd)
        if self._object_fd >= 0:
            os.close(self._object_fd)
        if self._mountinfo >= 0:
            os.close(self._mountinfo)
        for fd in set(self._mount_fds.values()) | {self._mount_fd}:
            os.close(fd)


def watch_source(source: str, on_change: Callable[[str], None], **fanotify: Any
                 ) -> FanotifyWatcher | SourceWatcher | None:
    """A running watcher: fanotify as root where the kernel and the filesystem allow it (`fanotify`: its keyword
    arguments), else inotify; None (said on stderr) where neither can be used."""
    source = os.path.realpath(source)
    if os.geteuid() == 0 and not os.environ.get("FUSE_PASSTHROUGH_NO_FANOTIFY"):
        try:
            return FanotifyWatcher(source, on_change, **fanotify)
        except OSError:
            pass  # e.g. a filesystem without file handles, or a kernel older than 5.9: inotify
    try:
        return SourceWatcher(source, on_change)
    except OSError as e:
        print(f"fuse-passthrough: cannot watch SOURCE ({e.strerror}); changes made directly in SOURCE are seen "
              "within the cache timeout", file=sys.stderr)
        return None
