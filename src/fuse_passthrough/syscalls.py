"""Thin ctypes wrappers for the Linux calls the `os` module lacks.

Each raises OSError with the call's own errno, like the `os` functions do.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

# glibc's soname, loaded by name: ctypes.util.find_library runs `ldconfig -p` at each call (a process started and
# waited for, a few ms of the mount's start-up each).
LIBC = "libc.so.6"
_libc = ctypes.CDLL(LIBC, use_errno=True)
# The same library, called without releasing the interpreter lock: for calls that return in microseconds and come
# many at once, such as a FORGET batch's. Releasing the lock at each let a worker busy with other requests take it
# at every call, and the batch went at the pace of the hand-overs (docs/benchmarks.md, 2026-12-06 12:30).
_libc_keeping_gil = ctypes.PyDLL(LIBC, use_errno=True)

# renameat2(2) flags
RENAME_NOREPLACE = 1 << 0
RENAME_EXCHANGE = 1 << 1
RENAME_WHITEOUT = 1 << 2

# utimensat(2) special nanosecond values
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000

# fallocate(2) modes
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20
FALLOC_FL_UNSHARE_RANGE = 0x40

# Raw syscall numbers: setgroups must be per-thread (glibc's wrapper changes every thread); fchmodat2 (Linux 6.6,
# the same number everywhere) has no glibc wrapper before 2.39.
_SYSCALLS = {
    "x86_64": {"setgroups": 116, "setfsuid": 122, "setfsgid": 123, "fchmodat2": 452},
    "aarch64": {"setgroups": 159, "setfsuid": 151, "setfsgid": 152, "fchmodat2": 452},
}
_NR = _SYSCALLS.get(platform.machine(), {})

_libc.syscall.restype = ctypes.c_long
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.fallocate64.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


class _Times(ctypes.Structure):
    """utimensat's struct timespec[2]: atime, then mtime."""
    _fields_ = [("atime", ctypes.c_long), ("atime_ns", ctypes.c_long),
                ("mtime", ctypes.c_long), ("mtime_ns", ctypes.c_long)]


_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Times), ctypes.c_int]


def _check(result: int, what: str, path: bytes | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fsdecode(path) if path is not None else what)
    return result


def renameat2(olddirfd: int, old: str, newdirfd: int, new: str, flags: int = 0) -> None:
    old_b = os.fsencode(old)
    _check(_libc.renameat2(olddirfd, old_b, newdirfd, os.fsencode(new), flags), "renameat2", old_b)


Timespec = tuple[int, int]  # (seconds, nanoseconds); nanoseconds may be UTIME_NOW or UTIME_OMIT


# Whether the kernel takes AT_EMPTY_PATH in utimensat(2) and has fchmodat2(2); a /proc/self/fd name otherwise.
_empty_path = {"utimensat": True, "fchmodat2": "fchmodat2" in _NR}


def utimens(fd: int, times: tuple[Timespec, Timespec]) -> None:
    """utimensat(fd, "", times, AT_EMPTY_PATH), UTIME_NOW/UTIME_OMIT intact: the times of the object `fd` refers
    to, an O_PATH descriptor included (its /proc/self/fd name where the kernel refuses the flag)."""
    ts = ctypes.byref(_Times(times[0][0], times[0][1], times[1][0], times[1][1]))
    if _empty_path["utimensat"]:
        if _libc.utimensat(fd, b"", ts, AT_EMPTY_PATH) == 0:
            return
        if ctypes.get_errno() != errno.EINVAL:
            _check(-1, "utimensat")
        _empty_path["utimensat"] = False
    path = f"/proc/self/fd/{fd}".encode()
    _check(_libc.utimensat(AT_FDCWD, path, ts, 0), "utimensat", path)


def fchmod_empty_path(fd: int, mode: int) -> None:
    """fchmodat2(fd, "", mode, AT_EMPTY_PATH): chmod the object `fd` refers to, an O_PATH descriptor included
    (os.chmod of its /proc/self/fd name before Linux 6.6)."""
    if _empty_path["fchmodat2"]:
        if _libc.syscall(ctypes.c_long(_NR["fchmodat2"]), ctypes.c_long(fd), b"", ctypes.c_long(mode),
                         ctypes.c_long(AT_EMPTY_PATH)) == 0:
            return
        if ctypes.get_errno() not in (errno.ENOSYS, errno.EINVAL):
            _check(-1, "fchmodat2")
        _empty_path["fchmodat2"] = False
    os.chmod(f"/proc/self/fd/{fd}", mode)


_libc.fchownat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int]


def fchown_empty_path(fd: int, uid: int, gid: int) -> None:
    """fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW): chown the object an O_PATH fd refers to
    (a symlink included); uid or gid -1 leaves it unchanged."""
    _check(_libc.fchownat(fd, b"", uid & 0xFFFFFFFF, gid & 0xFFFFFFFF, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW),
           "fchownat")


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    _check(_libc.fallocate64(fd, mode, offset, length), "fallocate")


def setfsuid(uid: int) -> int:
    """Set this thread's filesystem uid; returns the previous one (setfsuid(2) never fails loudly)."""
    return _libc.syscall(ctypes.c_long(_NR["setfsuid"]), ctypes.c_uint(uid))


def setfsgid(gid: int) -> int:
    return _libc.syscall(ctypes.c_long(_NR["setfsgid"]), ctypes.c_uint(gid))


def setgroups_thread(groups: list[int]) -> None:
    """setgroups(2) for the calling thread only (the raw syscall; glibc's wrapper changes all threads)."""
    arr = (ctypes.c_uint * max(1, len(groups)))(*groups)
    _check(_libc.syscall(ctypes.c_long(_NR["setgroups"]), ctypes.c_size_t(len(groups)), arr), "setgroups")


def has_thread_credentials() -> bool:
    return {"setfsuid", "setfsgid", "setgroups"} <= _NR.keys()


CLONE_FS = 0x200


def unshare(flags: int) -> None:
    """unshare(2) for the calling thread (os.unshare is Python >= 3.12). CLONE_FS gives the thread its own
    umask, cwd and root."""
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


# -- file handles (name_to_handle_at(2), open_by_handle_at(2)): glibc has both, `os` neither.
MAX_HANDLE_SZ = 128


class _FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ)]


_libc_keeping_gil.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_FileHandle),
                                                ctypes.POINTER(ctypes.c_int), ctypes.c_int]
_libc_keeping_gil.close.argtypes = [ctypes.c_int]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.POINTER(_FileHandle), ctypes.c_int]


def name_to_handle_at(dirfd: int, path: str = "", flags: int = AT_EMPTY_PATH) -> tuple[int, bytes, int]:
    """(handle type, handle bytes, mount id) of an object; by default of the object `dirfd` itself (an O_PATH fd
    will do). EOPNOTSUPP where the filesystem has no handles."""
    fh = _FileHandle(MAX_HANDLE_SZ, 0)
    mount_id = ctypes.c_int()
    path_b = os.fsencode(path)
    _check(_libc_keeping_gil.name_to_handle_at(dirfd, path_b, ctypes.byref(fh), ctypes.byref(mount_id), flags),
           "name_to_handle_at", path_b or None)
    return fh.handle_type, bytes(fh.f_handle[:fh.handle_bytes]), mount_id.value


def close_keeping_gil(fd: int) -> None:
    """close(2) without releasing the interpreter lock: for descriptors whose close does not wait (an O_PATH fd:
    nothing to write back; it frees a file only where SOURCE deleted it behind the mount's back)."""
    _check(_libc_keeping_gil.close(fd), "close")


def open_by_handle_at(mount_fd: int, handle_type: int, handle: bytes, flags: int) -> int:
    """Open the object a handle names on the filesystem of `mount_fd` (needs CAP_DAC_READ_SEARCH); ESTALE when
    it no longer exists."""
    fh = _FileHandle(len(handle), handle_type)
    ctypes.memmove(fh.f_handle, handle, len(handle))
    return _check(_libc.open_by_handle_at(mount_fd, ctypes.byref(fh), flags), "open_by_handle_at")
