"""libfuse's low-level API (fuse_lowlevel.h) through ctypes: the library, its functions, and `LowLevelSession`.

The library is `$FUSE_LIBRARY_PATH` if set (as for the high-level binding; `make test-libfuse-3.17` points it at
.cache/libfuse-3.17), else the system's libfuse3. Its version is read at import (`fuse_pkgversion()`), and the
struct layouts declared for it in `abi.py` are chosen: `LAYOUT`, `FileInfo`, `ConnInfo`. Unsupported versions
raise ImportError.

`LowLevelSession(operations, mountpoint, options)` registers one ctypes callback per operation the object has
(the others stay NULL, so libfuse answers ENOSYS). A handler returns its result and the binding sends the reply;
raising OSError replies with its errno; any other exception replies EIO and is logged once per place it comes
from. Handlers, with what they return:

    init(conn: ConnInfo) -> None                  destroy() -> None
    lookup(req, parent, name) -> EntryParam       forget(req, ino, nlookup) -> None (never fails)
        (raise NegativeEntry(timeout) for a name the kernel may remember as absent)
    forget_multi(req, [(ino, nlookup), ...])      getattr(req, ino, fi | None) -> (Stat, attr_timeout)
    setattr(req, ino, attr: Stat, to_set, fi | None) -> (Stat, attr_timeout)
    readlink(req, ino) -> bytes                   mknod(req, parent, name, mode, rdev) -> EntryParam
    mkdir(req, parent, name, mode) -> EntryParam  symlink(req, target, parent, name) -> EntryParam
    link(req, ino, newparent, newname) -> EntryParam
    unlink / rmdir(req, parent, name) -> None     rename(req, parent, name, newparent, newname, flags) -> None
    open / opendir(req, ino, fi) -> None          (set fi.fh, fi.keep_cache, fi.backing_id ... on `fi`)
    create(req, parent, name, mode, fi) -> EntryParam        tmpfile(req, parent, mode, fi) -> EntryParam (3.17)
    read(req, ino, size, off, fi) -> bytes | FdData          write(req, ino, data: memoryview, off, fi) -> int
    flush / release / releasedir(req, ino, fi) -> None       fsync / fsyncdir(req, ino, datasync, fi) -> None
    readdir / readdirplus(req, ino, size, off, fi) -> DirBuffer | bytes
    statfs(req, ino) -> StatVfs                   access(req, ino, mask) -> None
    setxattr(req, ino, name, value: bytes, flags) -> None    removexattr(req, ino, name) -> None
    getxattr(req, ino, name, size) -> bytes       listxattr(req, ino, size) -> bytes  (the binding answers size
                                                  queries and ERANGE itself)
    getlk(req, ino, fi, lock: Flock) -> Flock     setlk(req, ino, fi, lock: Flock, sleep) -> None
    flock(req, ino, fi, op) -> None               fallocate(req, ino, mode, off, length, fi) -> None
    copy_file_range(req, ino_in, off_in, fi_in, ino_out, off_out, fi_out, length, flags) -> int
    lseek(req, ino, off, whence, fi) -> int

`req` is the request's address (an int) for `caller`, `req_ctx`, `req_groups`, `req_interrupted`, `passthrough_open`.
write's `data` is a read-only view of libfuse's request buffer, not a copy (1 MiB writes: no allocation and copy of
each in Python); it is released when the handler returns, so keep `bytes(data)` where the data must outlive the call.
bmap, ioctl, poll, write_buf and retrieve_reply are declared (abi.py) but not offered here.

Per-request cost: libfuse's worker threads are not Python threads, so ctypes would create and destroy a Python
thread state around every callback; each worker keeps one instead (one extra PyGILState_Ensure on its first
callback, never released). Functions that cannot block (fuse_req_ctx, fuse_add_direntry*, ...) are called
through PyDLL, keeping the GIL; notifications and the loops release it.

Replies sent without the GIL: where the C module _trampolines.c is built (setup.py; always by `make`), libfuse
calls a C trampoline per operation, which calls the ctypes callback and, once the callback has returned and
released the GIL, sends the reply the callback recorded (`DEFERRED_REPLIES`). A reply sent from Python
(`CTYPES_REPLIES`, the fallback, or FUSE_PASSTHROUGH_NO_TRAMPOLINES=1) releases the GIL for the write to /dev/fuse
and must take it back to return, while the caller it just woke has another worker running Python for its next
request: a wait for the GIL at the end of nearly every request. docs/benchmarks.md ("replies sent without the
GIL") has the numbers. A C module may have work done after a trampoline's reply (_trampolines.c, AFTER_REPLY):
the tracing layer's recorder makes each event there, once the caller is woken.

The session's I/O: with the C module, the mounted session reads and writes /dev/fuse through _trampolines.c
(fuse_session_custom_io on the same fd, `own_io`), on libfuse 3.14 and 3.17. Workers wait for requests in poll(2),
so that the first free one takes a request rather than the one the kernel picks (_trampolines.c, read_polled).
On libfuse < 3.17, which has no capability bit for FUSE_HANDLE_KILLPRIV_V2, it also notes whether the kernel's
INIT offers the flag and sets it in the INIT reply when the init handler asked for FUSE_CAP_HANDLE_KILLPRIV_V2,
offered to it in `conn.capable` as 3.17 offers it.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import signal
import threading
import traceback
from collections.abc import Callable, Sequence
from ctypes import byref, c_char_p, c_uint32
from dataclasses import dataclass
from typing import Any

from . import abi
from .abi import (  # noqa: F401  (re-exported)
    FUSE_BACKING_STACKED_OVER,
    FUSE_BACKING_STACKED_UNDER,
    FUSE_CAP_PASSTHROUGH,
    FUSE_ROOT_ID,
)

log = logging.getLogger("fuse_passthrough.lowlevel")

try:
    from . import _trampolines
except ImportError:  # built without a C compiler (setup.py): replies are sent from Python
    _trampolines = None  # type: ignore[assignment]


def _copied_view(address: int | None, size: int) -> memoryview:
    return memoryview(ctypes.string_at(address, size) if address is not None and size else b"")


data_view: Callable[[int | None, int], memoryview] = (
    _trampolines.data_view if _trampolines is not None else _copied_view)  # the same type, copied without the module


def _release_view(view: memoryview) -> None:
    """After the handler: a view kept past the call then fails instead of showing the next request's bytes."""
    try:
        view.release()
    except BufferError:  # a buffer made from it is still held: nothing more can be done here
        pass


def library_path() -> str:
    # libfuse 3's soname, loaded by name as the dynamic linker finds it (LD_LIBRARY_PATH included): what
    # ctypes.util.find_library("fuse3") would name too, after running `ldconfig -p` (a few ms of the mount's start-up).
    return os.environ.get("FUSE_LIBRARY_PATH") or "libfuse3.so.3"


LIBRARY_PATH = library_path()
try:
    _cdll = ctypes.CDLL(LIBRARY_PATH, use_errno=True)
    _pydll = ctypes.PyDLL(LIBRARY_PATH, use_errno=True)
except OSError as exc:
    raise ImportError(f"libfuse3 not found ({exc}); install the fuse3 package (apt-get install fuse3)") from exc

_pkgversion = _pydll.fuse_pkgversion
_pkgversion.restype = c_char_p
_m = re.match(rb"(\d+)\.(\d+)(?:\.(\d+))?", _pkgversion() or b"")
if _m is None:
    raise ImportError(f"{LIBRARY_PATH}: cannot parse fuse_pkgversion() {_pkgversion()!r}")
VERSION: tuple[int, int, int] = (int(_m.group(1)), int(_m.group(2)), int(_m.group(3) or 0))
LAYOUT: abi.Layout = abi.layout_for(VERSION[:2])

FileInfo: type[ctypes.Structure] = LAYOUT.file_info
ConnInfo: type[ctypes.Structure] = LAYOUT.conn_info
EntryParam = abi.fuse_entry_param
Stat = abi.stat_t
StatVfs = abi.statvfs_t
Flock = abi.flock_t
Ctx = abi.fuse_ctx


def _bind(fn: abi.Function) -> Any:
    f = getattr(_cdll if fn.blocks else _pydll, fn.symbol)
    f.restype = LAYOUT.ctype(fn.restype)
    f.argtypes = [LAYOUT.ctype(k) for k in fn.args]
    return f


FUNCTIONS: dict[str, Any] = {fn.symbol: _bind(fn) for fn in LAYOUT.functions()}
supports_passthrough: bool = "fuse_passthrough_open" in FUNCTIONS
"""Whether this libfuse has fuse_passthrough_open (3.17+); the kernel must also offer FUSE_CAP_PASSTHROUGH."""

_reply_err = FUNCTIONS["fuse_reply_err"]
_reply_none = FUNCTIONS["fuse_reply_none"]
_reply_entry = FUNCTIONS["fuse_reply_entry"]
_reply_create = FUNCTIONS["fuse_reply_create"]
_reply_attr = FUNCTIONS["fuse_reply_attr"]
_reply_readlink = FUNCTIONS["fuse_reply_readlink"]
_reply_open = FUNCTIONS["fuse_reply_open"]
_reply_write = FUNCTIONS["fuse_reply_write"]
_reply_buf = FUNCTIONS["fuse_reply_buf"]
_reply_data = FUNCTIONS["fuse_reply_data"]
_reply_statfs = FUNCTIONS["fuse_reply_statfs"]
_reply_xattr = FUNCTIONS["fuse_reply_xattr"]
_reply_lock = FUNCTIONS["fuse_reply_lock"]
_reply_lseek = FUNCTIONS["fuse_reply_lseek"]
_add_direntry = FUNCTIONS["fuse_add_direntry"]
_add_direntry_plus = FUNCTIONS["fuse_add_direntry_plus"]
_req_ctx = FUNCTIONS["fuse_req_ctx"]
_req_getgroups = FUNCTIONS["fuse_req_getgroups"]
_req_interrupted = FUNCTIONS["fuse_req_interrupted"]
_EIO = errno.EIO


# ------------------------------------------------------------------------------------------ request helpers
def req_ctx(req: int) -> abi.fuse_ctx:
    """uid, gid, pid, umask of the process behind the request (valid during the request only)."""
    return _req_ctx(req).contents


def _caller(req: int) -> tuple[int, int, int, int]:
    c = _req_ctx(req).contents
    return (c.uid, c.gid, c.pid, c.umask)


caller: Callable[[int], tuple[int, int, int, int]] = _caller if _trampolines is None else _trampolines.caller
"""(uid, gid, pid, umask) of the process behind the request (during the request only)."""


def req_groups(req: int) -> list[int] | None:
    """Supplementary groups of the calling process (libfuse reads /proc), None when unavailable."""
    n = 64
    while True:
        buf = (c_uint32 * n)()
        got = _req_getgroups(req, n, buf)
        if got < 0:
            return None
        if got <= n:
            return list(buf[:got])
        n = got


def req_interrupted(req: int) -> bool:
    return bool(_req_interrupted(req))


def passthrough_open(req: int, fd: int) -> int:
    """Register `fd` with the kernel for passthrough; returns the backing id for `fi.backing_id` (libfuse 3.17+,
    FUSE_CAP_PASSTHROUGH wanted in init). Raises OSError when the kernel refuses."""
    if not supports_passthrough:
        raise OSError(errno.ENOSYS, f"libfuse {VERSION[0]}.{VERSION[1]} has no fuse_passthrough_open")
    backing_id = FUNCTIONS["fuse_passthrough_open"](req, fd)
    if backing_id <= 0:
        e = ctypes.get_errno() or errno.EIO
        raise OSError(e, os.strerror(e))
    return int(backing_id)


def passthrough_close(req: int, backing_id: int) -> None:
    if not supports_passthrough:
        raise OSError(errno.ENOSYS, f"libfuse {VERSION[0]}.{VERSION[1]} has no fuse_passthrough_close")
    if FUNCTIONS["fuse_passthrough_close"](req, backing_id) < 0:
        e = ctypes.get_errno() or errno.EIO
        raise OSError(e, os.strerror(e))


def _stat_from(st: os.stat_result) -> abi.stat_t:
    s = Stat()
    s.st_dev, s.st_ino, s.st_nlink, s.st_mode = st.st_dev, st.st_ino, st.st_nlink, st.st_mode
    s.st_uid, s.st_gid, s.st_rdev, s.st_size = st.st_uid, st.st_gid, st.st_rdev, st.st_size
    s.st_blksize, s.st_blocks = st.st_blksize, st.st_blocks
    for name in ("st_atime_ns", "st_mtime_ns", "st_ctime_ns"):
        sec, nsec = divmod(getattr(st, name), 1_000_000_000)
        ts = getattr(s, name[:5] + "im")
        ts.tv_sec, ts.tv_nsec = sec, nsec
    return s


def _entry_from(ino: int, st: os.stat_result, attr_timeout: float, entry_timeout: float, generation: int = 0
                ) -> abi.fuse_entry_param:
    return entry_param(ino, _stat_from(st), attr_timeout, entry_timeout, generation)


def _compiled_stat_from(st: os.stat_result) -> abi.stat_t:
    s = Stat()
    _fill_stat(s, st)
    return s


def _compiled_entry_from(ino: int, st: os.stat_result, attr_timeout: float, entry_timeout: float,
                         generation: int = 0) -> abi.fuse_entry_param:
    e = EntryParam()
    _fill_entry(e, ino, generation, st, attr_timeout, entry_timeout)
    return e


# The same conversions in C where _trampolines is built (a tenth of the cost: a ctypes field set per member here).
stat_from: Callable[[os.stat_result], abi.stat_t] = _stat_from
"""A struct stat filled from an os.stat_result (for handlers that stat through os)."""
entry_from: Callable[..., abi.fuse_entry_param] = _entry_from
"""entry_from(ino, st, attr_timeout, entry_timeout, generation=0): an entry reply for an os.stat_result."""
if _trampolines is not None:
    _probe = os.stat_result(tuple(range(os.stat_result.n_fields)))  # each field holds its own index
    _trampolines.set_stat_fields(os.stat_result, tuple(getattr(_probe, f) for f in (
        "st_dev", "st_ino", "st_nlink", "st_mode", "st_uid", "st_gid", "st_rdev", "st_size", "st_blksize",
        "st_blocks", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")))
    _fill_stat, _fill_entry = _trampolines.fill_stat, _trampolines.fill_entry
    stat_from, entry_from = _compiled_stat_from, _compiled_entry_from


def entry_param(ino: int, attr: abi.stat_t, attr_timeout: float, entry_timeout: float,
                generation: int = 0) -> abi.fuse_entry_param:
    e = EntryParam()
    e.ino, e.generation, e.attr, e.attr_timeout, e.entry_timeout = ino, generation, attr, attr_timeout, entry_timeout
    return e


class NegativeEntry(FileNotFoundError):
    """What a lookup handler raises for a name that does not exist when the kernel may remember that for
    `timeout` seconds: the binding replies a negative entry (node id 0), and layers see an ENOENT like any other."""

    def __init__(self, timeout: float) -> None:
        super().__init__(errno.ENOENT, os.strerror(errno.ENOENT))
        self.timeout = timeout


@dataclass(slots=True)
class FdData:
    """A read's reply taken from a file descriptor by libfuse (fuse_reply_data: pread or splice, no copy
    through Python): `size` bytes of `fd` at `offset`, fewer at end of file."""
    fd: int
    size: int
    offset: int


class DirBuffer:
    """A readdir / readdirplus reply being filled: `add`/`add_plus` return False when the entry did not fit
    (it was not added; a readdirplus handler must then drop the lookup it took for it)."""

    __slots__ = ("req", "size", "buffer", "used", "entries", "_base")

    def __init__(self, req: int, size: int) -> None:
        self.req, self.size, self.used, self.entries = req, size, 0, 0
        self.buffer = ctypes.create_string_buffer(size)
        self._base = ctypes.addressof(self.buffer)

    def add(self, name: bytes, attr: abi.stat_t, next_offset: int) -> bool:
        """Only attr.st_ino and the file type bits of attr.st_mode are used."""
        n = _add_direntry(self.req, self._base + self.used, self.size - self.used, name, byref(attr), next_offset)
        if n > self.size - self.used:
            return False
        self.used += n
        self.entries += 1
        return True

    def add_plus(self, name: bytes, entry: abi.fuse_entry_param, next_offset: int) -> bool:
        n = _add_direntry_plus(self.req, self._base + self.used, self.size - self.used, name, byref(entry),
                               next_offset)
        if n > self.size - self.used:
            return False
        self.used += n
        self.entries += 1
        return True


# ------------------------------------------------------------------------------------------ callbacks
_tls = threading.local()
_gil_ensure = ctypes.pythonapi.PyGILState_Ensure
_gil_ensure.restype = ctypes.c_int


def _pin_thread_state() -> None:
    """Keep the calling libfuse worker's Python thread state for good (see the module docstring). Workers end
    only with the loop (cancelled while blocked reading /dev/fuse, never inside a callback), unless
    max_idle_threads is set, in which case each worker that ends leaves its thread state behind."""
    _gil_ensure()
    _tls.pinned = True


def _no_pin() -> None:
    pass


@dataclass(frozen=True)
class Replies:
    """One way of sending libfuse's replies: each takes the request and what the reply carries (structs as
    ctypes objects). `CTYPES_REPLIES` calls libfuse from Python; `DEFERRED_REPLIES` (the C module
    _trampolines.c) records the reply for the C trampoline that called the callback, which sends it after the
    callback has released the GIL."""
    err: Callable[[int, int], Any]
    none: Callable[[int], Any]
    entry: Callable[[int, Any], Any]
    create: Callable[[int, Any, Any], Any]
    attr: Callable[[int, Any, float], Any]
    readlink: Callable[[int, bytes], Any]
    open: Callable[[int, Any], Any]
    write: Callable[[int, int], Any]
    buf: Callable[[int, Any, int], Any]
    data: Callable[[int, Any, int], Any]
    statfs: Callable[[int, Any], Any]
    xattr: Callable[[int, int], Any]
    lock: Callable[[int, Any], Any]
    lseek: Callable[[int, int], Any]


CTYPES_REPLIES = Replies(
    err=_reply_err, none=_reply_none,
    entry=lambda req, e: _reply_entry(req, byref(e)),
    create=lambda req, e, fi: _reply_create(req, byref(e), byref(fi)),
    attr=lambda req, st, timeout: _reply_attr(req, byref(st), timeout),
    readlink=_reply_readlink,
    open=lambda req, fi: _reply_open(req, byref(fi)),
    write=_reply_write, buf=_reply_buf,
    data=lambda req, bv, flags: _reply_data(req, byref(bv), flags),
    statfs=lambda req, sv: _reply_statfs(req, byref(sv)),
    xattr=_reply_xattr,
    lock=lambda req, lk: _reply_lock(req, byref(lk)),
    lseek=_reply_lseek)

DEFERRED_REPLIES: Replies | None = None
# FUSE over io_uring (loop(io_uring=True), uring.c): each entry's payload buffer, at least the largest request or
# reply the kernel may send (max_write, max_pages; libfuse: 1 MiB).
IO_URING_PAYLOAD = 1 << 20
ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"


def io_uring_built() -> bool:
    """Whether this build has FUSE over io_uring (uring.c, compiled with liburing)."""
    return _trampolines is not None and _trampolines.uring_built()


def io_uring_unavailable() -> str | None:
    """Why a mount cannot use FUSE over io_uring here (None: it can, if the kernel's INIT offers it)."""
    if not io_uring_built():
        return "this build has no FUSE over io_uring (liburing-dev was missing when it was compiled)"
    if "fuse_session_process_buf" not in FUNCTIONS or not ("fuse_session_custom_io" in FUNCTIONS or
                                                             "fuse_session_custom_io_317" in FUNCTIONS):
        return "this libfuse lacks fuse_session_custom_io or fuse_session_process_buf"
    try:
        with open(ENABLE_URING) as f:
            enabled = f.read().strip()
    except OSError:
        return "the kernel has no FUSE over io_uring (Linux >= 6.14 with CONFIG_FUSE_IO_URING)"
    if enabled not in ("Y", "1"):
        return f"the kernel's FUSE over io_uring is off (echo Y > {ENABLE_URING})"
    return None


if _trampolines is not None:
    _trampolines.set_functions({sym: ctypes.cast(FUNCTIONS[sym], ctypes.c_void_p).value for sym in (
        "fuse_reply_err", "fuse_reply_none", "fuse_reply_entry", "fuse_reply_create", "fuse_reply_attr",
        "fuse_reply_readlink", "fuse_reply_open", "fuse_reply_write", "fuse_reply_buf", "fuse_reply_data",
        "fuse_reply_statfs", "fuse_reply_xattr", "fuse_reply_lock", "fuse_reply_lseek", "fuse_req_userdata",
        "fuse_req_ctx", "fuse_session_fd", "fuse_session_custom_io", "fuse_session_custom_io_317",
        "fuse_session_process_buf")
        if sym in FUNCTIONS})
    _t = _trampolines
    DEFERRED_REPLIES = Replies(
        err=_t.reply_err, none=_t.reply_none, entry=_t.reply_entry, create=_t.reply_create, attr=_t.reply_attr,
        readlink=_t.reply_readlink, open=_t.reply_open, write=_t.reply_write, buf=_t.reply_buf,
        data=_t.reply_data, statfs=_t.reply_statfs, xattr=_t.reply_xattr, lock=_t.reply_lock,
        lseek=_t.reply_lseek)


Reply = Callable[[int, Any, Sequence[Any]], None]


def _reply_table(r: Replies) -> dict[str, Reply]:
    """How each operation's result becomes its reply, given the handler's arguments `a` (structs, not
    pointers; a[0] is req)."""
    entry, buf = r.entry, r.buf

    def attr(req: int, result: Any, a: Sequence[Any]) -> None:
        st, timeout = result
        r.attr(req, st, timeout)

    def buffer(req: int, result: Any, a: Sequence[Any]) -> None:
        if isinstance(result, DirBuffer):
            buf(req, result.buffer, result.used)
        else:
            data = result if type(result) is bytes else bytes(result)
            buf(req, data, len(data))

    def read(req: int, result: Any, a: Sequence[Any]) -> None:
        if type(result) is bytes:
            buf(req, result, len(result))
        elif isinstance(result, FdData):
            bv = LAYOUT.bufvec()
            bv.count = 1
            b = bv.buf[0]
            b.size, b.flags, b.fd, b.pos = (result.size, abi.FUSE_BUF_IS_FD | abi.FUSE_BUF_FD_SEEK, result.fd,
                                            result.offset)
            r.data(req, bv, 0)
        else:
            buffer(req, result, a)

    def xattr_value(req: int, result: Any, a: Sequence[Any]) -> None:
        size = a[-1]
        data = result if type(result) is bytes else bytes(result)
        if size == 0:
            r.xattr(req, len(data))
        elif len(data) > size:
            raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))
        else:
            buf(req, data, len(data))

    err = r.err

    def ok(req: int, result: Any, a: Sequence[Any]) -> None:
        err(req, 0)

    def new_entry(req: int, e: Any, a: Sequence[Any]) -> None:
        entry(req, e)

    return {
        "lookup": new_entry, "getattr": attr, "setattr": attr,
        "readlink": lambda req, target, a: r.readlink(req, target),
        "mknod": new_entry, "mkdir": new_entry, "symlink": new_entry, "link": new_entry,
        "unlink": ok, "rmdir": ok, "rename": ok,
        "open": lambda req, _, a: r.open(req, a[2]),
        "opendir": lambda req, _, a: r.open(req, a[2]),
        "create": lambda req, e, a: r.create(req, e, a[4]),
        "tmpfile": lambda req, e, a: r.create(req, e, a[3]),
        "read": read,
        "write": lambda req, n, a: r.write(req, n),
        "flush": ok, "release": ok, "fsync": ok, "releasedir": ok, "fsyncdir": ok,
        "readdir": buffer, "readdirplus": buffer,
        "statfs": lambda req, sv, a: r.statfs(req, sv),
        "setxattr": ok, "removexattr": ok, "access": ok,
        "getxattr": xattr_value, "listxattr": xattr_value,
        "getlk": lambda req, lk, a: r.lock(req, lk),
        "setlk": ok, "flock": ok, "fallocate": ok,
        "copy_file_range": lambda req, n, a: r.write(req, n),
        "lseek": lambda req, off, a: r.lseek(req, off),
    }


LIFECYCLE = frozenset({"init", "destroy"})  # called by libfuse without a request: nothing to reply
NOT_OFFERED = frozenset({"bmap", "ioctl", "poll", "write_buf", "retrieve_reply"})
_POINTER_KINDS = (abi.FI, abi.STAT, abi.FLOCK)


def _converter(name: str, kinds: tuple[abi.Kind, ...]) -> Callable[[tuple[Any, ...]], Sequence[Any]] | None:
    """How the C arguments become the handler's: struct pointers -> the struct (or None for NULL), write's data
    -> a read-only memoryview of libfuse's buffer (`data_view`), setxattr's value -> bytes."""
    if name == "write":
        def write_args(a: tuple[Any, ...]) -> Sequence[Any]:
            fi = a[5]
            return a[0], a[1], data_view(a[2], a[3]), a[4], fi.contents if fi else None
        return write_args
    if name == "setxattr":
        return lambda a: (a[0], a[1], a[2], ctypes.string_at(a[3], a[4]), a[5])
    positions = [i for i, k in enumerate(kinds) if k in _POINTER_KINDS]
    if not positions:
        return None
    if positions == [2] and len(kinds) == 3:  # (req, ino, fi): open, release, getattr, ...
        return lambda a: (a[0], a[1], a[2].contents if a[2] else None)

    def convert(a: tuple[Any, ...]) -> Sequence[Any]:
        args = list(a)
        for i in positions:
            p = args[i]
            args[i] = p.contents if p else None
        return args
    return convert


class LowLevelSession:
    """One FUSE session on the low-level API: `run()` mounts, serves until unmounted (or SIGINT/SIGTERM/SIGHUP
    with handle_signals), and cleans up. The callbacks stay referenced by the session object."""

    def __init__(self, operations: object, mountpoint: str | os.PathLike[str], options: Sequence[str] = (),
                 *, debug: bool = False, program: str = "fuse-passthrough", keep_thread_states: bool = True,
                 trampolines: bool | None = None) -> None:
        if trampolines is None:
            trampolines = DEFERRED_REPLIES is not None and not os.environ.get("FUSE_PASSTHROUGH_NO_TRAMPOLINES")
        if trampolines and DEFERRED_REPLIES is None:
            raise ValueError("the C module _trampolines is not built (setup.py)")
        self.trampolines = trampolines
        # /dev/fuse read and written through _trampolines.c: workers wait for requests in poll(2); on libfuse < 3.17
        # it also adds FUSE_HANDLE_KILLPRIV_V2 to the INIT exchange (the init handler sees
        # FUSE_CAP_HANDLE_KILLPRIV_V2 offered as on 3.17, where libfuse does that itself).
        self.own_io = trampolines and ("fuse_session_custom_io" in FUNCTIONS or
                                       "fuse_session_custom_io_317" in FUNCTIONS)
        self._adds_killpriv_v2 = self.own_io and VERSION < (3, 17)
        self._replies = DEFERRED_REPLIES if trampolines and DEFERRED_REPLIES is not None else CTYPES_REPLIES
        self._reply_table = _reply_table(self._replies)
        self.operations = operations
        self._keep_thread_states = keep_thread_states
        self.mountpoint = os.path.abspath(os.fspath(mountpoint))
        self.unexpected_errors = 0
        self._reported: set[tuple[str, str, str]] = set()
        self._reported_lock = threading.Lock()
        self._callbacks: dict[str, Any] = {}
        self._ops = LAYOUT.ops()
        for name, kinds in LAYOUT.op_kinds:
            handler = getattr(operations, name, None)
            if handler is None:
                continue
            if name in NOT_OFFERED:
                raise TypeError(f"{type(operations).__name__}.{name}: not offered by LowLevelSession")
            cb = LAYOUT.op_types[name](self._callback(name, kinds, handler))
            self._callbacks[name] = cb
            if trampolines and name not in LIFECYCLE:  # libfuse calls the trampoline, which calls cb
                setattr(self._ops, name, LAYOUT.op_types[name](_trampolines.trampoline(name)))
            else:
                setattr(self._ops, name, cb)
        # the session's userdata: its callbacks by operation, for the trampolines
        self._table: int | None = None
        if trampolines:
            self._table = _trampolines.callback_table({
                name: ctypes.cast(cb, ctypes.c_void_p).value for name, cb in self._callbacks.items()
                if name not in LIFECYCLE})
        argv = [program.encode()]
        if options:
            argv += [b"-o", ",".join(options).encode()]
        if debug:
            argv.append(b"-d")
        self._argv = (c_char_p * (len(argv) + 1))(*argv, None)
        args = abi.fuse_args(len(argv), self._argv, 0)
        if "fuse_session_new_versioned" in FUNCTIONS:
            self._version = abi.libfuse_version(VERSION[0], VERSION[1], VERSION[2], 0)
            se = FUNCTIONS["fuse_session_new_versioned"](byref(args), byref(self._ops), ctypes.sizeof(self._ops),
                                                         byref(self._version), self._table)
        else:
            se = FUNCTIONS["fuse_session_new"](byref(args), byref(self._ops), ctypes.sizeof(self._ops), self._table)
        FUNCTIONS["fuse_opt_free_args"](byref(args))
        if not se:
            self._free_table()
            raise ValueError(f"fuse_session_new failed (options {list(options)}; libfuse said why on stderr)")
        self._se: int | None = se
        self._mounted = False

    # -- the callbacks
    def _failed(self, op: str, exc: BaseException) -> None:
        self.unexpected_errors += 1
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
        key = (op, type(exc).__name__, where)
        with self._reported_lock:
            if key in self._reported:
                return
            self._reported.add(key)
        log.error("%s: unexpected %s at %s (replied EIO; logged once)", op, type(exc).__name__, where, exc_info=exc)

    def _callback(self, name: str, kinds: tuple[abi.Kind, ...], handler: Callable[..., Any]) -> Callable[..., None]:
        failed = self._failed
        tls = _tls
        pin = _pin_thread_state if self._keep_thread_states else _no_pin
        if name == "init":
            def init(userdata: Any, conn: Any) -> None:
                c = conn.contents
                table = self._table
                offered = table is not None and self._adds_killpriv_v2 and _trampolines.killpriv_v2_offered(table)
                if offered:
                    c.capable |= abi.FUSE_CAP_HANDLE_KILLPRIV_V2
                try:
                    handler(c)
                except BaseException as exc:
                    failed(name, exc)
                if offered and table is not None:
                    if c.want & abi.FUSE_CAP_HANDLE_KILLPRIV_V2:
                        _trampolines.want_killpriv_v2(table)
                    c.want &= ~abi.FUSE_CAP_HANDLE_KILLPRIV_V2  # not libfuse's to send: the reply gets it
                    c.capable &= ~abi.FUSE_CAP_HANDLE_KILLPRIV_V2
            return init
        if name == "destroy":
            def destroy(userdata: Any) -> None:
                try:
                    handler()
                except BaseException as exc:
                    failed(name, exc)
            return destroy
        if name in ("forget", "forget_multi"):
            multi = name == "forget_multi"
            reply_none = self._replies.none

            def forget(req: int, a: Any, b: Any) -> None:
                try:
                    tls.pinned  # noqa: B018
                except AttributeError:
                    pin()
                try:
                    if multi:
                        handler(req, [(b[i].ino, b[i].nlookup) for i in range(a)])
                    else:
                        handler(req, a, b)
                except BaseException as exc:
                    failed(name, exc)
                reply_none(req)
            return forget
        reply = self._reply_table[name]
        convert = _converter(name, kinds)
        reply_err = self._replies.err
        reply_entry = self._replies.entry
        eio = _EIO

        def reply_negative(req: int, timeout: float) -> None:
            e = EntryParam()
            e.entry_timeout = timeout
            reply_entry(req, e)

        if convert is None:
            def callback(*cargs: Any) -> None:
                try:
                    tls.pinned  # noqa: B018
                except AttributeError:
                    pin()
                req = cargs[0]
                try:
                    reply(req, handler(*cargs), cargs)
                except NegativeEntry as exc:
                    reply_negative(req, exc.timeout)
                except OSError as exc:
                    reply_err(req, exc.errno or eio)
                except BaseException as exc:
                    failed(name, exc)
                    reply_err(req, eio)
            return callback

        release_data = name == "write"  # a view of libfuse's buffer, which it reuses: see _release_view

        def converting_callback(*cargs: Any) -> None:
            try:
                tls.pinned  # noqa: B018
            except AttributeError:
                pin()
            req = cargs[0]
            args: Sequence[Any] = ()
            try:
                args = convert(cargs)
                reply(req, handler(*args), args)
            except OSError as exc:
                reply_err(req, exc.errno or eio)
            except BaseException as exc:
                failed(name, exc)
                reply_err(req, eio)
            finally:
                if release_data and args:
                    _release_view(args[2])
        return converting_callback

    # -- the session
    @property
    def session(self) -> int:
        if self._se is None:
            raise ValueError("the session is closed")
        return self._se

    @property
    def fd(self) -> int:
        """The session's /dev/fuse descriptor (-1 before mount)."""
        return int(FUNCTIONS["fuse_session_fd"](self.session))

    def mount(self) -> None:
        if FUNCTIONS["fuse_session_mount"](self.session, os.fsencode(self.mountpoint)) != 0:
            raise OSError(errno.EIO, f"fuse_session_mount failed for {self.mountpoint} (libfuse said why on stderr)")
        self._mounted = True
        if self.own_io and self._table is not None:
            _trampolines.session_io(self.session, self._table)

    def loop(self, *, single_threaded: bool = False, max_threads: int = 10, max_idle_threads: int | None = None,
             clone_fd: bool = False, park_us: int = 0, io_uring: bool = False) -> int:
        """Serve requests until the file system is unmounted or exit() is called; libfuse's return value.
        park_us (with the trampolines): a worker that finishes a request while another is running one sleeps in
        steps of park_us before reading the next, for as long as another worker is inside a request younger than
        a step and was inside requests at least half of the last step (_trampolines.c, leave()); 0: never.
        io_uring: serve requests through FUSE over io_uring where the kernel's INIT offers it (uring.c; not with
        single_threaded): a thread per CPU, and up to max_threads per CPU while its others are blocked; libfuse's
        workers then read only FORGET and INTERRUPT from /dev/fuse."""
        if self._table is not None:
            _trampolines.set_park(self._table, park_us * 1000)
        if single_threaded:
            return int(FUNCTIONS["fuse_session_loop"](self.session))
        if io_uring and self._table is not None and self.own_io:
            _trampolines.uring_want(self._table, max_threads, IO_URING_PAYLOAD)
        try:
            return self._loop_mt(max_threads, max_idle_threads, clone_fd)
        finally:
            if self._table is not None:
                _trampolines.uring_stop(self._table)

    def io_uring_counts(self) -> tuple[int, int, int] | None:
        """(entries registered, entries refused, requests served) through io_uring; None when not in use."""
        return _trampolines.uring_counts(self._table) if self._table is not None else None

    def _loop_mt(self, max_threads: int, max_idle_threads: int | None, clone_fd: bool) -> int:
        cfg = FUNCTIONS["fuse_loop_cfg_create"]()
        if not cfg:
            raise MemoryError("fuse_loop_cfg_create")
        try:
            FUNCTIONS["fuse_loop_cfg_set_max_threads"](cfg, max_threads)
            if max_idle_threads is not None:
                FUNCTIONS["fuse_loop_cfg_set_idle_threads"](cfg, max_idle_threads)
            FUNCTIONS["fuse_loop_cfg_set_clone_fd"](cfg, int(clone_fd))
            return int(FUNCTIONS["fuse_session_loop_mt_312"](self.session, cfg))
        finally:
            FUNCTIONS["fuse_loop_cfg_destroy"](cfg)

    def parks(self) -> int:
        """How often a worker has parked so far (loop's park_us)."""
        return _trampolines.park_counts(self._table) if self._table is not None else 0

    def exit(self) -> None:
        """Ask the loop to end: it does at the next request, or when the mount goes away."""
        FUNCTIONS["fuse_session_exit"](self.session)

    def unmount(self) -> None:
        if self._mounted:
            self._mounted = False
            FUNCTIONS["fuse_session_unmount"](self.session)

    def close(self) -> None:
        """Unmount (if mounted) and destroy the session; idempotent."""
        if self._se is None:
            return
        # The loops end by resetting the session's exit flag; until destroy has stopped them, the filesystem's
        # threads (a SOURCE watcher) may still send notifications, which fail once the fd is gone: with the flag
        # set, libfuse returns that error to them without printing "fuse: writing device" for each.
        self.exit()
        self.unmount()
        FUNCTIONS["fuse_session_destroy"](self._se)
        self._se = None
        self._free_table()

    def _free_table(self) -> None:
        if self._table is not None:
            _trampolines.free_callback_table(self._table)
            self._table = None

    def run(self, *, handle_signals: bool = True, **loop_options: Any) -> int:
        """Mount, serve until unmounted (or, with handle_signals, SIGINT/SIGTERM/SIGHUP: libfuse's handlers,
        installed from the main thread only), unmount and destroy. Returns libfuse's loop result (0 after an
        unmount, the signal number after a signal, negative on failure)."""
        handle_signals = handle_signals and threading.current_thread() is threading.main_thread()
        saved: dict[signal.Signals, Any] = {}
        if handle_signals:  # libfuse installs its handlers only where the disposition is SIG_DFL
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                saved[sig] = signal.signal(sig, signal.SIG_DFL)
        try:
            if handle_signals and FUNCTIONS["fuse_set_signal_handlers"](self.session) != 0:
                raise OSError(errno.EIO, "fuse_set_signal_handlers failed")
            try:
                self.mount()
                return self.loop(**loop_options)
            finally:
                if handle_signals:
                    FUNCTIONS["fuse_remove_signal_handlers"](self.session)
        finally:
            self.close()
            for sig, handler in saved.items():
                signal.signal(sig, handler)

    def __enter__(self) -> LowLevelSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- notifications (call them outside the handler of a request on the same inode)
    def _check(self, rc: int, what: str) -> None:
        if rc < 0:
            raise OSError(-rc, f"{what}: {os.strerror(-rc)}")

    def notify_inval_inode(self, ino: int, offset: int = 0, length: int = 0) -> None:
        """Drop the kernel's cached attributes of `ino`, and its cached data from `offset` (length 0: to the end;
        offset < 0: attributes only). OSError(ENOENT) when the kernel does not know the inode."""
        self._check(FUNCTIONS["fuse_lowlevel_notify_inval_inode"](self.session, ino, offset, length),
                    "notify_inval_inode")

    def notify_inval_entry(self, parent: int, name: bytes) -> None:
        """Drop the kernel's cached entry `name` in directory `parent`."""
        self._check(FUNCTIONS["fuse_lowlevel_notify_inval_entry"](self.session, parent, name, len(name)),
                    "notify_inval_entry")

    def notify_store(self, ino: int, offset: int, data: bytes) -> None:
        """Put `data` into the kernel's page cache of `ino` at `offset`; the kernel's file size grows to
        offset + len(data) if it was smaller (only then: a store of no bytes changes nothing)."""
        bv = LAYOUT.bufvec()
        bv.count = 1
        buf = ctypes.create_string_buffer(data, len(data))
        b = bv.buf[0]
        b.size, b.flags, b.mem = len(data), 0, ctypes.cast(buf, ctypes.c_void_p)
        if hasattr(b, "mem_size"):  # 3.17
            b.mem_size = len(data)
        self._check(FUNCTIONS["fuse_lowlevel_notify_store"](self.session, ino, offset, byref(bv), 0),
                    "notify_store")

    def notify_delete(self, parent: int, child: int, name: bytes) -> None:
        """Tell the kernel that `name` (inode `child`) was removed from `parent`."""
        self._check(FUNCTIONS["fuse_lowlevel_notify_delete"](self.session, parent, child, name, len(name)),
                    "notify_delete")
