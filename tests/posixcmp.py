"""Shared helpers for the POSIX comparison tests: outcomes, stat comparison, raw syscalls via ctypes."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from typing import Any

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
libc.fallocate64.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.getxattr.restype = ctypes.c_ssize_t
libc.listxattr.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.listxattr.restype = ctypes.c_ssize_t

RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
AT_SYMLINK_NOFOLLOW = 0x100

# Every stat field that must be identical between the mount and the source (st_dev differs by design).
STAT_FIELDS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size", "st_blocks",
               "st_atime_ns", "st_mtime_ns", "st_ctime_ns")
# Fields comparable between two different objects made the same way (native dir vs mount).
SHAPE_FIELDS = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size")


def _raise() -> None:
    e = ctypes.get_errno()
    raise OSError(e, os.strerror(e))


def renameat2(old: str | bytes, new: str | bytes, flags: int) -> None:
    if libc.renameat2(-100, os.fsencode(old), -100, os.fsencode(new), flags) != 0:
        _raise()


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if libc.fallocate64(fd, mode, offset, length) != 0:
        _raise()


class _Ts(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path: str | bytes, atime: tuple[int, int], mtime: tuple[int, int], flags: int = 0) -> None:
    ts = (_Ts * 2)(_Ts(*atime), _Ts(*mtime))
    if libc.utimensat(-100, os.fsencode(path), ts, flags) != 0:
        _raise()


def getxattr_sized(path: str | bytes, name: str, size: int) -> bytes | int:
    """getxattr(2) with an explicit buffer size: size 0 returns the needed length (an int)."""
    buf = ctypes.create_string_buffer(max(size, 1))
    n = libc.getxattr(os.fsencode(path), name.encode(), buf if size else None, size)
    if n < 0:
        _raise()
    return n if size == 0 else buf.raw[:n]


def listxattr_sized(path: str | bytes, size: int) -> bytes | int:
    buf = ctypes.create_string_buffer(max(size, 1))
    n = libc.listxattr(os.fsencode(path), buf if size else None, size)
    if n < 0:
        _raise()
    return n if size == 0 else buf.raw[:n]


def outcome(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[str, Any]:
    """("ok", result) or ("err", errno name): comparable across the native dir and the mount."""
    try:
        return ("ok", fn(*args, **kw))
    except OSError as e:
        return ("err", e.errno and __import__("errno").errorcode.get(e.errno, e.errno))


def stat_fields(st: os.stat_result, fields: tuple[str, ...] = STAT_FIELDS) -> dict[str, int]:
    return {f: getattr(st, f) for f in fields}


def assert_same_stat(mnt_path: str | bytes | os.PathLike[Any], src_path: str | bytes | os.PathLike[Any],
                     fields: tuple[str, ...] = STAT_FIELDS) -> os.stat_result:
    """lstat through the mount equals lstat of the source object, field by field (st_ino included)."""
    m = os.lstat(mnt_path)
    s = os.lstat(src_path)
    a, b = stat_fields(m, fields), stat_fields(s, fields)
    assert a == b, f"{mnt_path!r} vs {src_path!r}: " + ", ".join(
        f"{k} {a[k]} != {b[k]}" for k in fields if a[k] != b[k])
    return m


def tree(root: str | bytes) -> dict[bytes, tuple[Any, ...]]:
    """Names, types, modes, sizes, link counts, owners, symlink targets and bytes of a whole tree."""
    root_b = os.fsencode(root)
    out: dict[bytes, tuple[Any, ...]] = {}
    for dirpath, dirs, files in os.walk(root_b):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root_b)
            content: Any = None
            if os.path.islink(p):
                content = os.readlink(p)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    content = f.read()
            out[rel] = (*stat_fields(st, SHAPE_FIELDS).values(), content)
    return out
