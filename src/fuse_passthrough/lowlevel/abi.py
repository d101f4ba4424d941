"""ctypes declarations of libfuse's low-level API (fuse_lowlevel.h), for libfuse 3.14 and 3.17.

Nothing here loads a library: this module only describes the ABI, so that the layout tests can compare every
declaration with what a C compiler makes of each version's headers (tests/lowlevel/test_layout.py), whichever
libfuse the process has loaded. `binding.py` loads the library and picks the layout that matches its version.

What differs between the two versions (everything else is one declaration):
- `struct fuse_file_info`: 3.17 added a bit (parallel_direct_writes), a padding word, `backing_id`,
  `compat_flags` and reserved words (40 -> 64 bytes);
- `struct fuse_conn_info`: 3.17 added `max_backing_stack_depth`, `no_interrupt`, 64-bit `capable_ext` and
  `want_ext` inside the old reserved area (128 bytes in both);
- `struct fuse_buf`: 3.17 added `mem_size` (40 -> 48 bytes, and so `struct fuse_bufvec`);
- `struct fuse_lowlevel_ops`: 3.17 appended `tmpfile`;
- functions: 3.17 declares `fuse_session_new` as an inline wrapper of `fuse_session_new_versioned` (a plain
  symbol, FUSE_3.17) that passes the header's `struct libfuse_version`; the old symbol `fuse_session_new@FUSE_3.0`
  is still exported but records version 0.0.0. `fuse_passthrough_open/close` exist from 3.17 on.

The kernel ABI structs (stat, statvfs, timespec, flock) are declared for x86_64 and aarch64 (LP64 glibc).
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Callable
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_double,
    c_int,
    c_int16,
    c_int32,
    c_int64,
    c_long,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_ulong,
    c_void_p,
)
from dataclasses import dataclass, field
from typing import Any

MACHINE = platform.machine()


def _c(name: str) -> Callable[[type[Structure]], type[Structure]]:
    """Record the C spelling of a declared struct (`struct stat`), for the layout tests."""

    def mark(cls: type[Structure]) -> type[Structure]:
        cls._c_name_ = name  # type: ignore[attr-defined]
        return cls

    return mark


# ------------------------------------------------------------------------------------------ kernel ABI (glibc)
@_c("struct timespec")
class timespec(Structure):
    _fields_ = [("tv_sec", c_long), ("tv_nsec", c_long)]


_STAT_FIELDS: list[tuple[str, Any]]
if MACHINE == "aarch64":  # the generic LP64 layout (asm-generic/stat.h, glibc's bits/struct_stat.h)
    _STAT_FIELDS = [
        ("st_dev", c_uint64), ("st_ino", c_uint64), ("st_mode", c_uint32), ("st_nlink", c_uint32),
        ("st_uid", c_uint32), ("st_gid", c_uint32), ("st_rdev", c_uint64), ("__pad1", c_uint64),
        ("st_size", c_int64), ("st_blksize", c_int32), ("__pad2", c_int32), ("st_blocks", c_int64),
        ("st_atim", timespec), ("st_mtim", timespec), ("st_ctim", timespec), ("__glibc_reserved", c_int32 * 2),
    ]
else:  # x86_64
    _STAT_FIELDS = [
        ("st_dev", c_uint64), ("st_ino", c_uint64), ("st_nlink", c_uint64), ("st_mode", c_uint32),
        ("st_uid", c_uint32), ("st_gid", c_uint32), ("__pad0", c_int32), ("st_rdev", c_uint64),
        ("st_size", c_int64), ("st_blksize", c_int64), ("st_blocks", c_int64),
        ("st_atim", timespec), ("st_mtim", timespec), ("st_ctim", timespec), ("__glibc_reserved", c_long * 3),
    ]


@_c("struct stat")
class stat_t(Structure):
    _fields_ = _STAT_FIELDS


@_c("struct statvfs")
class statvfs_t(Structure):  # x86_64 and aarch64 alike (no __f_unused on LP64)
    _fields_ = [
        ("f_bsize", c_ulong), ("f_frsize", c_ulong), ("f_blocks", c_uint64), ("f_bfree", c_uint64),
        ("f_bavail", c_uint64), ("f_files", c_uint64), ("f_ffree", c_uint64), ("f_favail", c_uint64),
        ("f_fsid", c_ulong), ("f_flag", c_ulong), ("f_namemax", c_ulong), ("__f_spare", c_int * 6),
    ]


@_c("struct flock")
class flock_t(Structure):
    _fields_ = [("l_type", c_int16), ("l_whence", c_int16), ("l_start", c_int64), ("l_len", c_int64),
                ("l_pid", c_int32)]


# ------------------------------------------------------------------------------------------ libfuse, both versions
@_c("struct fuse_entry_param")
class fuse_entry_param(Structure):
    _fields_ = [("ino", c_uint64), ("generation", c_uint64), ("attr", stat_t),
                ("attr_timeout", c_double), ("entry_timeout", c_double)]


@_c("struct fuse_ctx")
class fuse_ctx(Structure):
    _fields_ = [("uid", c_uint32), ("gid", c_uint32), ("pid", c_int32), ("umask", c_uint32)]


@_c("struct fuse_forget_data")
class fuse_forget_data(Structure):
    _fields_ = [("ino", c_uint64), ("nlookup", c_uint64)]


@_c("struct fuse_args")
class fuse_args(Structure):
    _fields_ = [("argc", c_int), ("argv", POINTER(c_char_p)), ("allocated", c_int)]


@_c("struct fuse_loop_config_v1")  # `struct fuse_loop_config` for FUSE_USE_VERSION < 312; opaque from 3.12 on
class fuse_loop_config_v1(Structure):
    _fields_ = [("clone_fd", c_int), ("max_idle_threads", c_uint)]


@_c("struct libfuse_version")  # 3.17 on
class libfuse_version(Structure):
    _fields_ = [("major", c_uint32), ("minor", c_uint32), ("hotfix", c_uint32), ("padding", c_uint32)]


_FILE_INFO_BITS: list[tuple[str, Any, int]] = [("writepage", c_uint32, 1), ("direct_io", c_uint32, 1), ("keep_cache", c_uint32, 1),
                   ("flush", c_uint32, 1), ("nonseekable", c_uint32, 1), ("flock_release", c_uint32, 1),
                   ("cache_readdir", c_uint32, 1), ("noflush", c_uint32, 1)]


@_c("struct fuse_file_info")
class fuse_file_info_314(Structure):
    _fields_ = [("flags", c_int32), *_FILE_INFO_BITS, ("padding", c_uint32, 24), ("padding2", c_uint32, 32),
                ("fh", c_uint64), ("lock_owner", c_uint64), ("poll_events", c_uint32)]


@_c("struct fuse_file_info")
class fuse_file_info_317(Structure):
    _fields_ = [("flags", c_int32), *_FILE_INFO_BITS, ("parallel_direct_writes", c_uint32, 1),
                ("padding", c_uint32, 23), ("padding2", c_uint32, 32), ("padding3", c_uint32, 32),
                ("fh", c_uint64), ("lock_owner", c_uint64), ("poll_events", c_uint32), ("backing_id", c_int32),
                ("compat_flags", c_uint64), ("reserved", c_uint64 * 2)]


_CONN_HEAD: list[tuple[str, Any]] = [("proto_major", c_uint32), ("proto_minor", c_uint32), ("max_write", c_uint32),
              ("max_read", c_uint32), ("max_readahead", c_uint32), ("capable", c_uint32), ("want", c_uint32),
              ("max_background", c_uint32), ("congestion_threshold", c_uint32), ("time_gran", c_uint32)]


@_c("struct fuse_conn_info")
class fuse_conn_info_314(Structure):
    _fields_ = [*_CONN_HEAD, ("reserved", c_uint32 * 22)]


@_c("struct fuse_conn_info")
class fuse_conn_info_317(Structure):
    _fields_ = [*_CONN_HEAD, ("max_backing_stack_depth", c_uint32), ("no_interrupt", c_uint32, 1),
                ("padding", c_uint32, 31), ("capable_ext", c_uint64), ("want_ext", c_uint64),
                ("reserved", c_uint32 * 16)]


_BUF_HEAD: list[tuple[str, Any]] = [("size", c_size_t), ("flags", c_int), ("mem", c_void_p), ("fd", c_int), ("pos", c_int64)]


@_c("struct fuse_buf")
class fuse_buf_314(Structure):
    _fields_ = _BUF_HEAD


@_c("struct fuse_buf")
class fuse_buf_317(Structure):
    _fields_ = [*_BUF_HEAD, ("mem_size", c_size_t)]


@_c("struct fuse_bufvec")
class fuse_bufvec_314(Structure):  # one buffer, as FUSE_BUFVEC_INIT makes it
    _fields_ = [("count", c_size_t), ("idx", c_size_t), ("off", c_size_t), ("buf", fuse_buf_314 * 1)]


@_c("struct fuse_bufvec")
class fuse_bufvec_317(Structure):
    _fields_ = [("count", c_size_t), ("idx", c_size_t), ("off", c_size_t), ("buf", fuse_buf_317 * 1)]


# ------------------------------------------------------------------------------------------ argument kinds
# Each kind: its C spelling (for the signature checks compiled by the layout tests) and its ctypes type; the
# version-dependent ones ("fi", "conn", "bufvec", ...) are resolved per layout. Pointers whose contents the
# binding copies itself (write's and setxattr's data, readdir buffers) are c_void_p so ctypes does not stop at a
# NUL byte.
@dataclass(frozen=True)
class Kind:
    c: str
    ctype: Any  # a ctypes type, or a str naming a per-layout one


K = Kind
REQ = K("fuse_req_t", c_void_p)
INO = K("fuse_ino_t", c_uint64)
NAME = K("const char *", c_char_p)        # NUL-terminated: arrives as bytes
DATA = K("const char *", c_void_p)        # with a separate size
CDATA = K("const void *", c_void_p)
OUTBUF = K("char *", c_void_p)
VOIDP = K("void *", c_void_p)
INT = K("int", c_int)
UINT = K("unsigned int", c_uint)
U64 = K("uint64_t", c_uint64)
SIZE = K("size_t", c_size_t)
OFF = K("off_t", c_int64)
MODE = K("mode_t", c_uint32)
DEV = K("dev_t", c_uint64)
STAT = K("struct stat *", POINTER(stat_t))
CSTAT = K("const struct stat *", POINTER(stat_t))
CSTATVFS = K("const struct statvfs *", POINTER(statvfs_t))
FLOCK = K("struct flock *", POINTER(flock_t))
CFLOCK = K("const struct flock *", POINTER(flock_t))
CENTRY = K("const struct fuse_entry_param *", POINTER(fuse_entry_param))
FORGETS = K("struct fuse_forget_data *", POINTER(fuse_forget_data))
POLLHANDLE = K("struct fuse_pollhandle *", c_void_p)
SESSION = K("struct fuse_session *", c_void_p)
ARGS = K("struct fuse_args *", POINTER(fuse_args))
LOOPCFG = K("struct fuse_loop_config *", c_void_p)
CTXPTR = K("const struct fuse_ctx *", POINTER(fuse_ctx))
GIDS = K("gid_t *", POINTER(c_uint32))
CIOVEC = K("const struct iovec *", c_void_p)
CUSTOMIO = K("const struct fuse_custom_io *", c_void_p)  # built and passed by _trampolines.c
FUSEBUF = K("const struct fuse_buf *", c_void_p)  # built and passed by uring.c
CSTR = K("const char *", c_char_p)
VERSIONP = K("struct libfuse_version *", POINTER(libfuse_version))
BUFCOPY = K("enum fuse_buf_copy_flags", c_int)
VOID = K("void", None)
FI = K("struct fuse_file_info *", "fi")
CFI = K("const struct fuse_file_info *", "fi")
CONN = K("struct fuse_conn_info *", "conn")
BUFVEC = K("struct fuse_bufvec *", "bufvec")
OPS = K("const struct fuse_lowlevel_ops *", "ops")

# struct fuse_lowlevel_ops, every member in header order (FUSE_USE_VERSION >= 35: ioctl's cmd is unsigned).
OPS_314: list[tuple[str, tuple[Kind, ...]]] = [
    ("init", (VOIDP, CONN)),
    ("destroy", (VOIDP,)),
    ("lookup", (REQ, INO, NAME)),
    ("forget", (REQ, INO, U64)),
    ("getattr", (REQ, INO, FI)),
    ("setattr", (REQ, INO, STAT, INT, FI)),
    ("readlink", (REQ, INO)),
    ("mknod", (REQ, INO, NAME, MODE, DEV)),
    ("mkdir", (REQ, INO, NAME, MODE)),
    ("unlink", (REQ, INO, NAME)),
    ("rmdir", (REQ, INO, NAME)),
    ("symlink", (REQ, NAME, INO, NAME)),
    ("rename", (REQ, INO, NAME, INO, NAME, UINT)),
    ("link", (REQ, INO, INO, NAME)),
    ("open", (REQ, INO, FI)),
    ("read", (REQ, INO, SIZE, OFF, FI)),
    ("write", (REQ, INO, DATA, SIZE, OFF, FI)),
    ("flush", (REQ, INO, FI)),
    ("release", (REQ, INO, FI)),
    ("fsync", (REQ, INO, INT, FI)),
    ("opendir", (REQ, INO, FI)),
    ("readdir", (REQ, INO, SIZE, OFF, FI)),
    ("releasedir", (REQ, INO, FI)),
    ("fsyncdir", (REQ, INO, INT, FI)),
    ("statfs", (REQ, INO)),
    ("setxattr", (REQ, INO, NAME, DATA, SIZE, INT)),
    ("getxattr", (REQ, INO, NAME, SIZE)),
    ("listxattr", (REQ, INO, SIZE)),
    ("removexattr", (REQ, INO, NAME)),
    ("access", (REQ, INO, INT)),
    ("create", (REQ, INO, NAME, MODE, FI)),
    ("getlk", (REQ, INO, FI, FLOCK)),
    ("setlk", (REQ, INO, FI, FLOCK, INT)),
    ("bmap", (REQ, INO, SIZE, U64)),
    ("ioctl", (REQ, INO, UINT, VOIDP, FI, UINT, CDATA, SIZE, SIZE)),
    ("poll", (REQ, INO, FI, POLLHANDLE)),
    ("write_buf", (REQ, INO, BUFVEC, OFF, FI)),
    ("retrieve_reply", (REQ, VOIDP, INO, OFF, BUFVEC)),
    ("forget_multi", (REQ, SIZE, FORGETS)),
    ("flock", (REQ, INO, FI, INT)),
    ("fallocate", (REQ, INO, INT, OFF, OFF, FI)),
    ("readdirplus", (REQ, INO, SIZE, OFF, FI)),
    ("copy_file_range", (REQ, INO, OFF, FI, INO, OFF, FI, SIZE, INT)),
    ("lseek", (REQ, INO, OFF, INT, FI)),
]
OPS_317 = [*OPS_314, ("tmpfile", (REQ, INO, MODE, FI))]


@dataclass(frozen=True)
class Function:
    """One libfuse function: its symbol, C return and argument kinds, the libfuse versions that have it, and
    whether it may block (then it is called with the GIL released; otherwise through PyDLL, keeping it)."""
    symbol: str
    restype: Kind
    args: tuple[Kind, ...]
    blocks: bool = True
    since: tuple[int, int] = (3, 0)
    until: tuple[int, int] | None = None  # exclusive
    checked_as: str | None = None  # the name the headers declare it under, when the symbol is not that name


F = Function
FUNCTIONS: list[Function] = [
    F("fuse_version", INT, (), blocks=False),
    F("fuse_pkgversion", CSTR, (), blocks=False),
    F("fuse_session_new", SESSION, (ARGS, OPS, SIZE, VOIDP), until=(3, 17)),
    F("fuse_session_new_versioned", SESSION, (ARGS, OPS, SIZE, VERSIONP, VOIDP), since=(3, 17)),
    F("fuse_session_mount", INT, (SESSION, NAME)),
    F("fuse_session_unmount", VOID, (SESSION,)),
    F("fuse_session_destroy", VOID, (SESSION,)),
    F("fuse_session_fd", INT, (SESSION,), blocks=False),
    # The session's I/O through _trampolines.c. 3.17 gave the symbol fuse_session_custom_io a size argument (the
    # header's wrapper calls fuse_session_custom_io_317): the 3.14 declaration binds only before it.
    F("fuse_session_custom_io", INT, (SESSION, CUSTOMIO, INT), blocks=False, since=(3, 14), until=(3, 17)),
    F("fuse_session_custom_io_317", INT, (SESSION, CUSTOMIO, SIZE, INT), blocks=False, since=(3, 17)),
    # A request that came through io_uring (uring.c calls it).
    F("fuse_session_process_buf", VOID, (SESSION, FUSEBUF)),
    F("fuse_session_exit", VOID, (SESSION,), blocks=False),
    F("fuse_session_exited", INT, (SESSION,), blocks=False),
    F("fuse_session_loop", INT, (SESSION,)),
    # fuse_session_loop_mt@@FUSE_3.12 (the symbol of the header's fuse_session_loop_mt from FUSE_USE_VERSION 312)
    F("fuse_session_loop_mt_312", INT, (SESSION, LOOPCFG), since=(3, 12), checked_as="fuse_session_loop_mt"),
    F("fuse_loop_cfg_create", LOOPCFG, (), blocks=False, since=(3, 12)),
    F("fuse_loop_cfg_destroy", VOID, (LOOPCFG,), blocks=False, since=(3, 12)),
    F("fuse_loop_cfg_set_max_threads", VOID, (LOOPCFG, UINT), blocks=False, since=(3, 12)),
    F("fuse_loop_cfg_set_idle_threads", VOID, (LOOPCFG, UINT), blocks=False, since=(3, 12)),
    F("fuse_loop_cfg_set_clone_fd", VOID, (LOOPCFG, UINT), blocks=False, since=(3, 12)),
    F("fuse_set_signal_handlers", INT, (SESSION,)),
    F("fuse_remove_signal_handlers", VOID, (SESSION,)),
    F("fuse_opt_free_args", VOID, (ARGS,)),
    F("fuse_req_ctx", CTXPTR, (REQ,), blocks=False),
    F("fuse_req_getgroups", INT, (REQ, INT, GIDS)),  # reads /proc/PID/task/TID/status
    F("fuse_req_interrupted", INT, (REQ,), blocks=False),
    F("fuse_req_userdata", VOIDP, (REQ,), blocks=False),
    F("fuse_reply_err", INT, (REQ, INT)),
    F("fuse_reply_none", VOID, (REQ,)),
    F("fuse_reply_entry", INT, (REQ, CENTRY)),
    F("fuse_reply_create", INT, (REQ, CENTRY, CFI)),
    F("fuse_reply_attr", INT, (REQ, CSTAT, K("double", c_double))),
    F("fuse_reply_readlink", INT, (REQ, CSTR)),
    F("fuse_reply_open", INT, (REQ, CFI)),
    F("fuse_reply_write", INT, (REQ, SIZE)),
    F("fuse_reply_buf", INT, (REQ, DATA, SIZE)),
    F("fuse_reply_data", INT, (REQ, BUFVEC, BUFCOPY)),
    F("fuse_reply_iov", INT, (REQ, CIOVEC, INT)),
    F("fuse_reply_statfs", INT, (REQ, CSTATVFS)),
    F("fuse_reply_xattr", INT, (REQ, SIZE)),
    F("fuse_reply_lock", INT, (REQ, CFLOCK)),
    F("fuse_reply_lseek", INT, (REQ, OFF)),
    F("fuse_add_direntry", SIZE, (REQ, OUTBUF, SIZE, NAME, CSTAT, OFF), blocks=False),
    F("fuse_add_direntry_plus", SIZE, (REQ, OUTBUF, SIZE, NAME, CENTRY, OFF), blocks=False),
    F("fuse_lowlevel_notify_inval_inode", INT, (SESSION, INO, OFF, OFF)),
    F("fuse_lowlevel_notify_inval_entry", INT, (SESSION, INO, DATA, SIZE)),
    F("fuse_lowlevel_notify_delete", INT, (SESSION, INO, INO, DATA, SIZE)),
    F("fuse_lowlevel_notify_store", INT, (SESSION, INO, OFF, BUFVEC, BUFCOPY)),
    F("fuse_passthrough_open", INT, (REQ, INT), since=(3, 17)),
    F("fuse_passthrough_close", INT, (REQ, INT), since=(3, 17)),
]


def function_available(fn: Function, version: tuple[int, int]) -> bool:
    return fn.since <= version and (fn.until is None or version < fn.until)


# ------------------------------------------------------------------------------------------ per-version layouts
@dataclass
class Layout:
    """The declarations for one libfuse ABI (`version` = the headers they were checked against)."""
    version: tuple[int, int]
    use_version: int  # FUSE_USE_VERSION the layout corresponds to
    file_info: type[Structure]
    conn_info: type[Structure]
    buf: type[Structure]
    bufvec: type[Structure]
    op_kinds: list[tuple[str, tuple[Kind, ...]]]
    ops: type[Structure] = field(init=False)
    op_types: dict[str, Any] = field(init=False)  # op name -> its CFUNCTYPE

    def __post_init__(self) -> None:
        self.op_types = {name: CFUNCTYPE(None, *(self.ctype(k) for k in kinds)) for name, kinds in self.op_kinds}
        ops = type(f"fuse_lowlevel_ops_{self.version[0]}{self.version[1]}", (Structure,),
                   {"_fields_": [(name, self.op_types[name]) for name, _ in self.op_kinds]})
        ops._c_name_ = "struct fuse_lowlevel_ops"  # type: ignore[attr-defined]
        self.ops = ops

    def ctype(self, kind: Kind) -> Any:
        if not isinstance(kind.ctype, str):
            return kind.ctype
        if kind.ctype == "ops":
            return POINTER(self.ops)
        return POINTER({"fi": self.file_info, "conn": self.conn_info, "bufvec": self.bufvec}[kind.ctype])

    def structs(self) -> list[type[Structure]]:
        """Every struct declared for this version (what the layout tests compare)."""
        common: list[type[Structure]] = [timespec, stat_t, statvfs_t, flock_t, fuse_entry_param, fuse_ctx,
                                         fuse_forget_data, fuse_args, fuse_loop_config_v1]
        extra = [libfuse_version] if self.version >= (3, 17) else []
        return [*common, *extra, self.file_info, self.conn_info, self.buf, self.bufvec, self.ops]

    def functions(self) -> list[Function]:
        return [fn for fn in FUNCTIONS if function_available(fn, self.version)]


LAYOUT_314 = Layout((3, 14), 35, fuse_file_info_314, fuse_conn_info_314, fuse_buf_314, fuse_bufvec_314, OPS_314)
LAYOUT_317 = Layout((3, 17), 317, fuse_file_info_317, fuse_conn_info_317, fuse_buf_317, fuse_bufvec_317, OPS_317)


def layout_for(version: tuple[int, int]) -> Layout:
    """The layout for a libfuse version: 3.12-3.14 share 3.14's (verified on 3.14), 3.17 and later 3.17's
    (fuse_file_info and fuse_conn_info have a fixed size from 3.17 on, asserted by the headers; later members
    of fuse_lowlevel_ops are left NULL because libfuse copies only the size we pass). 3.15/3.16 moved bits of
    fuse_file_info around without a fixed size and are refused, as are versions before 3.12 (no
    fuse_session_loop_mt_312)."""
    if (3, 12) <= version <= (3, 14):
        return LAYOUT_314
    if version >= (3, 17) and version[0] == 3:
        return LAYOUT_317
    raise ImportError(f"libfuse {version[0]}.{version[1]} is not supported by the low-level binding "
                      "(supported: 3.12-3.14 and 3.17 or later)")


# Constants from fuse_common.h / fuse_lowlevel.h
FUSE_ROOT_ID = 1
FUSE_CAP_ASYNC_READ = 1 << 0
FUSE_CAP_POSIX_LOCKS = 1 << 1
FUSE_CAP_ATOMIC_O_TRUNC = 1 << 3
FUSE_CAP_EXPORT_SUPPORT = 1 << 4
FUSE_CAP_DONT_MASK = 1 << 6
FUSE_CAP_SPLICE_WRITE = 1 << 7
FUSE_CAP_SPLICE_MOVE = 1 << 8
FUSE_CAP_SPLICE_READ = 1 << 9
FUSE_CAP_FLOCK_LOCKS = 1 << 10
FUSE_CAP_IOCTL_DIR = 1 << 11
FUSE_CAP_AUTO_INVAL_DATA = 1 << 12
FUSE_CAP_READDIRPLUS = 1 << 13
FUSE_CAP_READDIRPLUS_AUTO = 1 << 14
FUSE_CAP_ASYNC_DIO = 1 << 15
FUSE_CAP_WRITEBACK_CACHE = 1 << 16
FUSE_CAP_NO_OPEN_SUPPORT = 1 << 17
FUSE_CAP_PARALLEL_DIROPS = 1 << 18
FUSE_CAP_POSIX_ACL = 1 << 19
FUSE_CAP_HANDLE_KILLPRIV = 1 << 20
FUSE_CAP_HANDLE_KILLPRIV_V2 = 1 << 21
FUSE_CAP_CACHE_SYMLINKS = 1 << 23
FUSE_CAP_NO_OPENDIR_SUPPORT = 1 << 24
FUSE_CAP_EXPLICIT_INVAL_DATA = 1 << 25
FUSE_CAP_EXPIRE_ONLY = 1 << 26
FUSE_CAP_SETXATTR_EXT = 1 << 27
FUSE_CAP_DIRECT_IO_ALLOW_MMAP = 1 << 28
FUSE_CAP_PASSTHROUGH = 1 << 29  # 3.17
FUSE_BACKING_STACKED_UNDER = 0
FUSE_BACKING_STACKED_OVER = 1
FUSE_SET_ATTR_MODE = 1 << 0
FUSE_SET_ATTR_UID = 1 << 1
FUSE_SET_ATTR_GID = 1 << 2
FUSE_SET_ATTR_SIZE = 1 << 3
FUSE_SET_ATTR_ATIME = 1 << 4
FUSE_SET_ATTR_MTIME = 1 << 5
FUSE_SET_ATTR_ATIME_NOW = 1 << 7
FUSE_SET_ATTR_MTIME_NOW = 1 << 8
FUSE_SET_ATTR_CTIME = 1 << 10
FUSE_BUF_IS_FD = 1 << 1
FUSE_BUF_FD_SEEK = 1 << 2
FUSE_BUF_FD_RETRY = 1 << 3
FUSE_BUF_NO_SPLICE = 1 << 1
FUSE_BUF_FORCE_SPLICE = 1 << 2
FUSE_BUF_SPLICE_MOVE = 1 << 3
FUSE_BUF_SPLICE_NONBLOCK = 1 << 4

# Constants whose values the layout tests compare with the headers.
CONSTANTS = {name: value for name, value in globals().items()
             if name.startswith(("FUSE_CAP_", "FUSE_SET_ATTR_", "FUSE_BUF_", "FUSE_BACKING_", "FUSE_ROOT_ID"))}

assert ctypes.sizeof(fuse_file_info_314) == 40 and ctypes.sizeof(fuse_file_info_317) == 64
assert ctypes.sizeof(fuse_conn_info_314) == 128 and ctypes.sizeof(fuse_conn_info_317) == 128
