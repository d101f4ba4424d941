"""libfuse3 through mfusepy, with the gaps of mfusepy 3.1 closed.

mfusepy picks libfuse2 when both are installed; libfuse2 splits writes into 4 KiB pieces and lacks rename flags,
copy_file_range and lseek, so we always ask for libfuse3. `FuseBinding` fixes what mfusepy's FUSE class drops:
rename flags, UTIME_NOW/UTIME_OMIT, copy_file_range, lseek, O_DIRECT, stat results without a dict, and returns
EIO (not EINVAL) for unexpected exceptions, logging each distinct failure once.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import re
import stat
import struct
import sys
import threading
import traceback
from typing import Any

from .coherence import LinkedNames
from .watcher import FanotifyWatcher, SourceWatcher, watch_source

if not os.environ.get("FUSE_LIBRARY_PATH"):
    os.environ["FUSE_LIBRARY_NAME"] = "fuse3"

try:
    import mfusepy
except OSError as exc:  # libfuse3 missing: mfusepy raises at import
    raise ImportError(f"libfuse3 not found ({exc}); install the fuse3 package (apt-get install fuse3)") from exc

if mfusepy.fuse_version_major != 3:
    raise ImportError(f"libfuse3 is required, found libfuse {mfusepy.fuse_version_major}.{mfusepy.fuse_version_minor}")

log = logging.getLogger("fuse_passthrough")

FUSE_VERSION = (mfusepy.fuse_version_major, mfusepy.fuse_version_minor)
Operations = mfusepy.Operations
FuseOSError = mfusepy.FuseOSError
_libfuse = mfusepy._libfuse


class _FuseContext(ctypes.Structure):
    _fields_ = [
        ("fuse", ctypes.c_void_p),
        ("uid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("pid", ctypes.c_int32),
        ("private_data", ctypes.c_void_p),
        ("umask", ctypes.c_uint32),
    ]


# fuse_get_context only reads a thread-local, so it is called through PyDLL, keeping the GIL: through CDLL each
# call (up to two per request: the tracing layer's and the credentials') released and re-took the GIL, a chance
# for a thread switch when several workers are busy. (No difference beyond noise was measurable here.)
_get_context = ctypes.PyDLL(_libfuse._name).fuse_get_context
_get_context.restype = ctypes.POINTER(_FuseContext)
_fuse_get_session = _libfuse.fuse_get_session
_fuse_get_session.restype = ctypes.c_void_p
_fuse_get_session.argtypes = [ctypes.c_void_p]
_libfuse.fuse_session_fd.argtypes = [ctypes.c_void_p]
_libfuse.fuse_getgroups.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint32)]
_libfuse.fuse_invalidate_path.argtypes = [ctypes.c_void_p, ctypes.c_char_p]


# libfuse's fuse_get_context() returns the first member of `struct fuse_context_i { struct fuse_context ctx;
# fuse_req_t req; }` (lib/fuse.c), and `struct fuse_req` starts with `{ struct fuse_session *se; uint64_t unique; }`
# (lib/fuse_i.h), the same from 3.0 to 3.17: the kernel's id of the request being served. Internal, so used only
# to tell libfuse's own calls within one request apart from the program's (tests cover both versions).
_CONTEXT_REQ_OFFSET = ctypes.sizeof(_FuseContext)
_REQ_UNIQUE_OFFSET = ctypes.sizeof(ctypes.c_void_p)

# The name libfuse's high-level API gives an open file that is unlinked or renamed over ("hide", unless
# -o hard_remove): ".fuse_hidden" + the node id and a counter as 8 hex digits each.
HIDDEN_NAME = re.compile(r"\.fuse_hidden[0-9a-f]{16}")


def request_id() -> int:
    """The kernel's unique id of the request this thread is serving (0 outside a request)."""
    ctx = _get_context()
    if not ctx:
        return 0
    req = ctypes.c_void_p.from_address(ctypes.addressof(ctx.contents) + _CONTEXT_REQ_OFFSET).value
    return ctypes.c_uint64.from_address(req + _REQ_UNIQUE_OFFSET).value if req else 0


def fuse_context() -> tuple[int, int, int, int]:
    """(uid, gid, pid, umask) of the process that caused the current operation; pid 0 = the kernel itself."""
    ctx = _get_context().contents
    return ctx.uid, ctx.gid, ctx.pid, ctx.umask


def fuse_caller_groups() -> list[int] | None:
    """Supplementary groups of the calling process (libfuse reads /proc), None when unavailable."""
    buf = (ctypes.c_uint32 * 64)()
    n = _libfuse.fuse_getgroups(64, buf)
    if n < 0:
        return None
    if n > 64:
        buf = (ctypes.c_uint32 * n)()
        n = _libfuse.fuse_getgroups(n, buf)
        if n < 0:
            return None
    return list(buf[:n])


def fuse_exit() -> None:
    mfusepy.fuse_exit()


# -- kernel passthrough (libfuse >= 3.17, kernel CONFIG_FUSE_PASSTHROUGH) ------------------------------------------
# open/create register the opened source file with the kernel (FUSE_DEV_IOC_BACKING_OPEN on the session's
# /dev/fuse fd) and reply with its backing id: reads, writes and mmap of that file then go from the kernel
# straight to the source file and never reach the daemon. The high-level API has no fuse_passthrough_open (it
# needs a low-level request), but the ioctl only needs the session fd, and libfuse 3.17's open/create replies
# carry fuse_file_info.backing_id to the kernel.
FUSE_CAP_PASSTHROUGH = 1 << 29
_FUSE_BACKING_STACKED_OVER = 1  # the source may itself be on overlayfs or another passthrough FUSE mount
_FUSE_DEV_IOC_BACKING_OPEN = 0x4010E501   # _IOW(229, 1, struct fuse_backing_map {s32 fd; u32 flags; u64 pad})
_FUSE_DEV_IOC_BACKING_CLOSE = 0x4004E502  # _IOW(229, 2, u32)
# Offset of fuse_file_info.backing_id in libfuse >= 3.17 (after fh, lock_owner, poll_events); mfusepy 3.1's
# struct has poll_events as a u64 that covers it.
_BACKING_ID_OFFSET = mfusepy.fuse_file_info.fh.offset + 8 + 8 + 4


class KernelPassthroughUnavailable(RuntimeError):
    """Kernel passthrough was asked for, but the kernel does not offer it (said on stderr at init)."""


def kernel_passthrough_supported() -> bool:
    """Whether this libfuse can pass a backing id to the kernel (the kernel is asked at mount)."""
    return FUSE_VERSION >= (3, 17)


class BackingFiles:
    """Source files registered with the kernel for passthrough, one backing id per source inode.

    The kernel requires every passthrough open of one FUSE inode to use the same backing file (else EBUSY), so
    opens of one source file share one id, counted, and closed with the last release. What the kernel keeps is
    the file's path and the credentials of the thread that registered it: it reopens the path with each open's
    own flags, so one registration serves readers and writers alike.

    With `keep_linked_through_daemon` (cached mounts), a file with several names is not passed through: the
    high-level API gives each name its own kernel inode, and the other names' cached attributes are kept exact by
    invalidations the daemon sends after each read and write (coherence.py), which it would never see. So that
    the kernel never mixes passed-through and cached opens of one inode (it refuses that), a file stays on one
    side for as long as it has open handles.
    """

    def __init__(self) -> None:
        self.session_fd = -1  # /dev/fuse of the mount, known once libfuse calls init
        self.enabled = False   # the kernel accepted FUSE_CAP_PASSTHROUGH
        self.keep_linked_through_daemon = False
        self._lock = threading.Lock()
        self._by_inode: dict[tuple[int, int], list[int]] = {}  # (st_dev, st_ino) -> [backing id, opens]
        self._by_fh: dict[int, tuple[int, int]] = {}
        self._declined: dict[tuple[int, int], int] = {}  # hard-linked files open through the daemon -> opens
        self._declined_fh: dict[int, tuple[int, int]] = {}
        self.failures = 0

    def attach(self, fh: int, fd: int) -> int:
        """Register `fd` (just opened as file handle `fh`) and return its backing id; 0 = not passed through."""
        if not self.enabled:
            return 0
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return 0
        key = (st.st_dev, st.st_ino)
        with self._lock:
            entry = self._by_inode.get(key)
            if entry is None and self.keep_linked_through_daemon and (st.st_nlink > 1 or key in self._declined):
                self._declined[key] = self._declined.get(key, 0) + 1
                self._declined_fh[fh] = key
                return 0
            if entry is None:
                try:
                    # A mutable buffer makes ioctl() return the call's result, here the new backing id.
                    backing_id = fcntl.ioctl(self.session_fd, _FUSE_DEV_IOC_BACKING_OPEN,
                                             bytearray(struct.pack("=iIQ", fd, 0, 0)), True)
                except OSError as e:  # the file's data is then served (and traced) by the daemon
                    self.failures += 1
                    if self.failures == 1:
                        print(f"fuse-passthrough: kernel passthrough refused for a file ({e.strerror}); such "
                              "files are read and written through the daemon", file=sys.stderr)
                    return 0
                entry = self._by_inode[key] = [backing_id, 0]
            entry[1] += 1
            self._by_fh[fh] = key
            return entry[0]

    def id_of(self, fh: int) -> int:
        key = self._by_fh.get(fh)
        if key is None:
            return 0
        entry = self._by_inode.get(key)
        return entry[0] if entry else 0

    def detach(self, fh: int) -> None:
        """The handle is released: close the backing id with the source file's last open."""
        with self._lock:
            declined = self._declined_fh.pop(fh, None)
            if declined is not None:
                self._declined[declined] -= 1
                if not self._declined[declined]:
                    del self._declined[declined]
            key = self._by_fh.pop(fh, None)
            if key is None:
                return
            entry = self._by_inode[key]
            entry[1] -= 1
            if entry[1] == 0:
                del self._by_inode[key]
                try:
                    fcntl.ioctl(self.session_fd, _FUSE_DEV_IOC_BACKING_CLOSE, bytearray(struct.pack("=I", entry[0])),
                                True)
                except OSError as e:
                    log.warning("closing kernel passthrough backing id %d failed: %s", entry[0], e.strerror)


_STAT_INT_FIELDS = ("st_ino", "st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size", "st_blksize",
                    "st_blocks")


def fill_stat(st: Any, attrs: Any) -> None:
    """Copy an os.stat_result (fast path, ns times) or an mfusepy-style dict into a C struct stat."""
    if isinstance(attrs, os.stat_result):
        st.st_ino = attrs.st_ino
        st.st_mode = attrs.st_mode
        st.st_nlink = attrs.st_nlink
        st.st_uid = attrs.st_uid
        st.st_gid = attrs.st_gid
        st.st_rdev = attrs.st_rdev
        st.st_size = attrs.st_size
        st.st_blksize = attrs.st_blksize
        st.st_blocks = attrs.st_blocks
        st.st_atimespec.tv_sec, st.st_atimespec.tv_nsec = divmod(attrs.st_atime_ns, 1_000_000_000)
        st.st_mtimespec.tv_sec, st.st_mtimespec.tv_nsec = divmod(attrs.st_mtime_ns, 1_000_000_000)
        st.st_ctimespec.tv_sec, st.st_ctimespec.tv_nsec = divmod(attrs.st_ctime_ns, 1_000_000_000)
    else:
        mfusepy.set_st_attrs(st, attrs, use_ns=True)


# libfuse's worker threads are not Python threads: for each callback ctypes creates a Python thread state and
# destroys it afterwards. Taking one extra GIL-state reference on a thread's first callback keeps its thread state
# for the thread's lifetime (one small allocation per libfuse worker): a 4-level lstat through a multi-threaded
# mount went from ~300 to ~215 us.
_threads_with_state: set[int] = set()


def _keep_thread_state() -> None:
    ctypes.pythonapi.PyGILState_Ensure()
    _threads_with_state.add(threading.get_ident())


class FuseBinding(mfusepy.FUSE):
    """mfusepy's FUSE with libfuse3 semantics passed through completely (see module docstring).

    Operations receive the same arguments as mfusepy's `Operations`, with these extensions:
    `rename(old, new, flags)`, `utimens(path, times, fh)` with times as ((sec, nsec), (sec, nsec)) where nsec may be
    UTIME_NOW/UTIME_OMIT, `copy_file_range(path_in, fh_in, off_in, path_out, fh_out, off_out, size, flags)`,
    `lseek(path, fh, offset, whence)`, and `getattr` may return an os.stat_result.
    """

    _reported_lock = threading.Lock()
    _reported: set[tuple[str, str, str]] = set()

    def __init__(self, operations: Any, mountpoint: str, config: dict[str, Any] | None = None,
                 on_init: Any = None, watch: str | None = None, **kwargs: Any):
        # Values for struct fuse_config (timeouts, use_ino...), applied in init where libfuse3 expects them.
        self._config = dict(config or {})
        self._on_init = on_init
        # Kernel passthrough: the operations own a BackingFiles and attach their open files to it.
        self._backing: BackingFiles | None = getattr(operations, "backing_files", None)
        # Keep the other names of hard-linked files exact (coherence.py): their cached attributes, and in strict
        # mode too their data pages (written through mmap under one name, read under another).
        self._fuse_handle: int | None = None
        cached = self._config.get("attr_timeout", 1.0) > 0 or self._config.get("entry_timeout", 1.0) > 0
        self.linked_names = LinkedNames(self.invalidate_path, threaded=not kwargs.get("nothreads"))
        self._cached = cached
        # Cached mount of a directory `watch`: changes made there directly are invalidated within ~100 ms.
        self._watch_source = watch if cached else None
        self.watcher: FanotifyWatcher | SourceWatcher | None = None
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("errors", "surrogateescape")
        super().__init__(operations, mountpoint, **kwargs)

    # -- error handling ------------------------------------------------------------------------------------------
    def _wrapper(self, func, *args, **kwargs):  # type: ignore[override]
        if threading.get_ident() not in _threads_with_state:
            _keep_thread_state()
        try:
            return func(*args, **kwargs) or 0
        except OSError as e:
            if isinstance(e.errno, int) and e.errno > 0:
                return -e.errno
            self._report_once(func.__name__, e)
            return -errno.EIO
        except Exception as e:  # a bug must not stop the filesystem: EIO, traceback logged once
            if func.__name__.startswith("init"):
                raise
            self._report_once(func.__name__, e)
            return -errno.EIO
        except BaseException:
            log.critical("fatal error in FUSE operation %s, unmounting", func.__name__, exc_info=True)
            fuse_exit()
            return -errno.EIO

    @classmethod
    def _report_once(cls, op: str, exc: BaseException) -> None:
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
        key = (op, type(exc).__name__, where)
        with cls._reported_lock:
            if key in cls._reported:
                return
            cls._reported.add(key)
        print(f"fuse-passthrough: internal error in {op} (returned EIO; reported once):", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)

    # -- init: fuse_config -------------------------------------------------------------------------------------
    def init_fuse_3(self, conn, config):  # type: ignore[override]
        self._fuse_handle = _get_context().contents.fuse
        if config:
            for key, value in self._config.items():
                setattr(config.contents, key, value)
        if self._backing is not None:
            self._init_passthrough(conn.contents)
        super().init_fuse_3(conn, config)
        if self._watch_source is not None:
            self.watcher = watch_source(self._watch_source, self._source_changed)
        if self._on_init is not None and (self._backing is None or self._backing.enabled):
            self._on_init()  # not when the mount is being stopped: -b must not report it ready

    def destroy(self, private_data):  # type: ignore[override]
        self.stop_watching()
        return super().destroy(private_data)

    def _init_passthrough(self, conn: Any) -> None:
        assert self._backing is not None
        if not conn.capable & FUSE_CAP_PASSTHROUGH:
            # The mount is up; stop it at once rather than serve without what was asked for.
            print("fuse-passthrough: --passthrough: the kernel does not offer FUSE passthrough "
                  "(needs Linux >= 6.9 with CONFIG_FUSE_PASSTHROUGH)", file=sys.stderr)
            fuse_exit()
            return
        conn.want |= FUSE_CAP_PASSTHROUGH
        conn.max_backing_stack_depth = _FUSE_BACKING_STACKED_OVER
        fuse = _get_context().contents.fuse
        self._backing.session_fd = _libfuse.fuse_session_fd(_fuse_get_session(fuse))
        self._backing.keep_linked_through_daemon = self._cached
        self._backing.enabled = True

    def _set_backing(self, fi: Any, fh: int) -> bool:
        """Give the kernel the handle's backing id, if it has one; True when its data bypasses the daemon."""
        backing_id = self._backing.id_of(fh) if self._backing is not None else 0
        if backing_id:
            ctypes.c_int32.from_address(ctypes.addressof(fi) + _BACKING_ID_OFFSET).value = backing_id
            fi.keep_cache = 0  # the page cache of the mount must not shadow the backing file's
        return bool(backing_id)

    # -- the kernel's cache ----------------------------------------------------------------------------------------
    def invalidate_path(self, path: str) -> None:
        """Drop the kernel's cached attributes and data pages of the kernel inode at `path`, if it has one.

        This waits for the locks of the inode's cached pages: request handlers call it only through
        `LinkedNames`, which decides when they may wait (coherence.py)."""
        if self._fuse_handle is not None:
            _libfuse.fuse_invalidate_path(self._fuse_handle, path.encode(self.encoding, self.errors))

    def _source_changed(self, path: str) -> None:
        """The watcher saw `path` change in SOURCE (not through the mount)."""
        self.invalidate_path(path)
        self.linked_names.changed(path)

    def stop_watching(self) -> None:
        """Stop everything that invalidates from threads of its own (before libfuse's handle goes)."""
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        self.linked_names.close()

    def _changed(self, path: bytes | None) -> None:
        if path is not None:
            self.linked_names.changed(self._path(path))

    # -- ops whose arguments mfusepy drops or mangles ------------------------------------------------------------
    def _path(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)

    def fgetattr(self, path, buf, fip):  # type: ignore[override]
        ctypes.memset(buf, 0, ctypes.sizeof(mfusepy.c_stat))
        fh = fip.contents.fh if fip else None
        attrs = self.operations.getattr(self._path(path), fh)
        fill_stat(buf.contents, attrs)
        if path is not None:
            self.linked_names.seen(self._path(path), attrs)
            mode = attrs["st_mode"] if isinstance(attrs, dict) else attrs.st_mode
            if self.watcher is not None and fh is None and stat.S_ISDIR(mode):
                self.watcher.watch_dir(self._path(path))
        return 0

    def rename_fuse_3(self, old, new, flags):  # type: ignore[override]
        result = self.operations.rename(self._path(old), self._path(new), flags)
        new_path = self._path(new)
        hidden = not flags and HIDDEN_NAME.fullmatch(new_path.rpartition("/")[2]) is not None
        self.linked_names.renamed(self._path(old), new_path, bool(flags & 2), hidden)  # 2: RENAME_EXCHANGE
        return result

    def link(self, source, target):  # type: ignore[override]
        result = super().link(source, target)
        self.linked_names.linked(self._path(source), self._path(target))
        return result

    def unlink(self, path):  # type: ignore[override]
        result = super().unlink(path)
        self.linked_names.removed(self._path(path))
        return result

    def flush(self, path, fip):  # type: ignore[override]
        result = super().flush(path, fip)
        self._changed(path)  # a passed-through handle's reads and writes never reached us: refresh at close
        return result

    def setxattr(self, path, *args):  # type: ignore[override]
        result = super().setxattr(path, *args)
        self._changed(path)
        return result

    def removexattr(self, path, name):  # type: ignore[override]
        result = super().removexattr(path, name)
        self._changed(path)
        return result

    def fallocate(self, path, *args):  # type: ignore[override]
        result = super().fallocate(path, *args)
        self._changed(path)
        return result

    def utimens_fuse_3(self, path, buf, fip):  # type: ignore[override]
        times = None
        if buf:
            a, m = buf.contents.actime, buf.contents.modtime
            times = ((a.tv_sec, a.tv_nsec), (m.tv_sec, m.tv_nsec))
        fh = fip.contents.fh if fip else None
        result = self.operations.utimens(self._path(path), times, fh)
        self._changed(path)
        return result

    def chmod_fuse_3(self, path, mode, fip):  # type: ignore[override]
        result = self.operations.chmod(self._path(path), mode, fip.contents.fh if fip else None)
        self._changed(path)
        return result

    def chown_fuse_3(self, path, uid, gid, fip):  # type: ignore[override]
        # (uid_t)-1 means "leave unchanged"; keep it as -1 for os.chown.
        uid = -1 if uid == 0xFFFFFFFF else uid
        gid = -1 if gid == 0xFFFFFFFF else gid
        result = self.operations.chown(self._path(path), uid, gid, fip.contents.fh if fip else None)
        self._changed(path)
        return result

    def truncate_fuse_3(self, path, length, fip):  # type: ignore[override]
        result = self.operations.truncate(self._path(path), length, fip.contents.fh if fip else None)
        self._changed(path)
        return result

    def _wants_direct_io(self, path: bytes) -> bool:
        """The operations may ask for direct I/O on a file (the fault layer does, for short reads: through the
        page cache the kernel would take a short read for the end of the file)."""
        wants = getattr(self.operations, "direct_io_for", None)
        return wants is not None and wants(self._path(path))

    def open(self, path, fip):  # type: ignore[override]
        fi = fip.contents
        fi.fh = self.operations.open(self._path(path), fi.flags)
        # O_DIRECT: bypass the mount's page cache; data goes straight to the source. A passed-through file gets
        # O_DIRECT on the source itself (and FOPEN_DIRECT_IO would disable passthrough).
        if not self._set_backing(fi, fi.fh) and (fi.flags & os.O_DIRECT or self._wants_direct_io(path)):
            fi.direct_io = 1
        self.linked_names.opened(self._path(path), fi.fh, fi.flags)
        if fi.flags & os.O_TRUNC:
            self._changed(path)
        return 0

    def create(self, path, mode, fip):  # type: ignore[override]
        fi = fip.contents
        fi.fh = self.operations.create(self._path(path), mode, fi.flags)
        if not self._set_backing(fi, fi.fh) and (fi.flags & os.O_DIRECT or self._wants_direct_io(path)):
            fi.direct_io = 1
        self.linked_names.opened(self._path(path), fi.fh, fi.flags)
        return 0

    def release(self, path, fip):  # type: ignore[override]
        fh = fip.contents.fh
        result = self.operations.release(self._path(path), fh)
        self.linked_names.released(fh)
        return result

    def copy_file_range(self, path_in, fi_in, off_in, path_out, fi_out, off_out, size, flags):
        result = self.operations.copy_file_range(
            self._path(path_in), fi_in.contents.fh if fi_in else None, off_in,
            self._path(path_out), fi_out.contents.fh if fi_out else None, off_out, size, flags,
        )
        self._changed(path_in)  # atime
        self._changed(path_out)
        return result

    def lseek(self, path, off, whence, fip):
        return self.operations.lseek(self._path(path), fip.contents.fh if fip else None, off, whence)

    # READ and WRITE requests may hold page locks of their kernel inode until the reply: registered as busy for
    # as long as they are served, so that no other handler waits for those pages (coherence.py).
    def read(self, path, buf, size, offset, fip):  # type: ignore[override]
        name = self._path(path)
        busy = self.linked_names.io_started(name)
        try:
            if busy:
                self.linked_names.before_read(name)
            data = self.operations.read(name, size, offset, fip.contents.fh)
            n = len(data)
            if n:
                ctypes.memmove(buf, data, n)
            self._changed(path)  # atime
        finally:
            if busy:
                self.linked_names.io_ended(name)  # type: ignore[arg-type]
        return n

    def write(self, path, buf, size, offset, fip):  # type: ignore[override]
        name = self._path(path)
        busy = self.linked_names.io_started(name)
        try:
            result = self.operations.write(name, ctypes.string_at(buf, size), offset, fip.contents.fh)
            self._changed(path)
        finally:
            if busy:
                self.linked_names.io_ended(name)  # type: ignore[arg-type]
        return result

def mount(operations: Any, mountpoint: str, *, threads: bool = True, debug: bool = False,
          options: dict[str, Any] | None = None, config: dict[str, Any] | None = None,
          on_init: Any = None, watch: str | None = None) -> None:
    """Mount `operations` at `mountpoint` in the foreground and serve until unmounted (blocks).

    `watch`: the directory the operations mirror, watched for changes made there directly (cached mounts).
    Raises RuntimeError when libfuse could not mount (it has printed why).
    """
    fuse: FuseBinding | None = None
    try:
        fuse = FuseBinding(operations, mountpoint, config=config, on_init=on_init, watch=watch, foreground=True,
                           nothreads=not threads, debug=debug, **(options or {}))
    finally:
        if fuse is not None:
            fuse.stop_watching()
    if fuse._backing is not None and not fuse._backing.enabled:
        raise KernelPassthroughUnavailable("the kernel does not offer FUSE passthrough")
