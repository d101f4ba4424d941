"""The tracing layer: wraps any mfusepy Operations object and records one event per operation.

The wrapper does the least possible on the filesystem's hot path: two clock reads, the FUSE context, a cached
process name, the cheap filters, and one queue put of a `RawEvent` whose data buffers are already reduced to
their lengths. Decoding, formatting, statistics and I/O happen in the sink's writer thread.

    from fuse_passthrough.tracing import TracingOperations, TraceSink
    ops = TracingOperations(MyFilesystem(), TraceSink(sys.stderr, fmt="text"))
    mfusepy.FUSE(ops, mountpoint, foreground=True)
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..binding import fuse_context
from ..layers import WRAPPABLE_OPS, clear_note, copy_settings, implemented_ops, take_note
from .events import DATA_ARGS, KERNEL_COMM
from .filters import EventFilter


class EventSink(Protocol):
    def put(self, raw: tuple[Any, ...]) -> None:
        """Receive one event as a tuple in RawEvent's field order."""


class ProcessNames:
    """pid -> comm (and optionally cmdline) from /proc; None when the process is gone.

    Each pid's /proc/PID/comm stays open, so a read is a single pread, and a reused pid makes the old descriptor
    fail (ESRCH) and be reopened. Reads are cached: a syscall on the hot path releases the GIL, which costs far
    more than the read itself when several requests are in flight. The name is read at every event while the
    process is young (the first YOUNG_NS after its first event: where fork is followed by exec, which renames
    it), then at most once per TTL_NS.
    """

    YOUNG_NS = 50_000_000
    TTL_NS = 1_000_000_000
    MAX_OPEN = 512

    def __init__(self, with_cmdline: bool = False) -> None:
        self.with_cmdline = with_cmdline
        # pid -> (first seen, last read, comm, cmdline), times in perf_counter ns
        self._cache: dict[int, tuple[int, int, str | None, list[str] | None]] = {}
        self._fds: dict[tuple[int, str], int] = {}
        # One lock for the descriptor table: a descriptor closed by one thread while another reads it could be
        # reused by a file opened meanwhile, and its contents would be read as a process name.
        self._lock = threading.Lock()

    def _read(self, pid: int, what: str, size: int) -> bytes | None:
        with self._lock:
            return self._read_locked(pid, what, size)

    def _read_locked(self, pid: int, what: str, size: int) -> bytes | None:
        key = (pid, what)
        for _attempt in range(2):
            fd = self._fds.get(key)
            if fd is None:
                try:
                    fd = os.open(f"/proc/{pid}/{what}", os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    return None
                if len(self._fds) >= self.MAX_OPEN:
                    self._evict()
                self._fds[key] = fd
            try:
                data = os.pread(fd, size, 0)
            except OSError:
                data = b""
            if data:
                return data
            self._forget(key, fd)  # the process is gone, or the pid now belongs to another one
        return None

    def _forget(self, key: tuple[int, str], fd: int) -> None:
        if self._fds.get(key) == fd:
            del self._fds[key]
            os.close(fd)

    def _evict(self) -> None:
        for key in list(self._fds)[: self.MAX_OPEN // 2]:
            fd = self._fds.pop(key, None)
            if fd is not None:
                os.close(fd)

    def lookup(self, pid: int, now_ns: int) -> tuple[str | None, list[str] | None]:
        if pid == 0:
            return KERNEL_COMM, None
        hit = self._cache.get(pid)
        if hit is not None and now_ns - hit[0] > self.YOUNG_NS and now_ns - hit[1] < self.TTL_NS:
            return hit[2], hit[3]
        comm, cmdline = self._read_names(pid)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[pid] = (hit[0] if hit is not None else now_ns, now_ns, comm, cmdline)
        return comm, cmdline

    def _read_names(self, pid: int) -> tuple[str | None, list[str] | None]:
        raw = self._read(pid, "comm", 64)
        if raw is None:
            return None, None
        comm = raw.rstrip(b"\n").decode("utf-8", "replace")
        cmdline = None
        if self.with_cmdline:
            data = self._read(pid, "cmdline", 65536)
            if data is not None:
                cmdline = [a.decode("utf-8", "replace") for a in data.split(b"\0")[:-1]]
        return comm, cmdline

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def _data_free(op: str, result: Any) -> Any:
    """Reduce a result to what may be recorded (lengths for data, counts for listings) in plain types."""
    if op == "getattr" and isinstance(result, os.stat_result):
        return (result.st_mode, result.st_size, result.st_ino, result.st_nlink, result.st_uid, result.st_gid)
    if op == "read" or op == "getxattr":
        return len(result)
    if op == "readdir" or op == "readdir_with_offset":
        return len(result) if result is not None else 0
    return result


# Every callback mfusepy may look up: those with decoded arguments (ARG_NAMES) and the rare rest (ioctl, poll,
# bmap, read_buf...), traced with positional arguments so wrapping hides nothing.
TRACEABLE_OPS = WRAPPABLE_OPS


class TracingOperations:
    """An Operations object that forwards to `inner` and hands one RawEvent per call to `sink`.

    Exactly the operations `inner` implements are exposed (and its use_ns/flag_* settings), so libfuse sees
    the same filesystem.
    `context` returns (uid, gid, pid, ...) of the caller; it defaults to the FUSE context.
    """

    def __init__(self, inner: Any, sink: EventSink, event_filter: EventFilter | None = None, *,
                 with_cmdline: bool = False, context: Callable[[], tuple[int, ...]] = fuse_context) -> None:
        self.inner = inner
        self.sink = sink
        self.filter = event_filter or EventFilter()
        self.names = ProcessNames(with_cmdline)
        self._context = context
        self._seq = itertools.count(1)
        copy_settings(inner, self)
        # Kernel passthrough (binding.BackingFiles): the binding finds it here; opens it covers are marked.
        self.backing_files = getattr(inner, "backing_files", None)
        for op, fn in implemented_ops(inner):
            setattr(self, op, self._wrap(op, fn))

    def close(self) -> None:
        """Release this layer's own resources (not the inner object's)."""
        self.names.close()

    def _wrap(self, op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        record = self._record
        if not self.filter.accepts_op(op):
            return fn  # excluded by --ops/--exclude-ops: no cost at all

        def traced(*args: Any) -> Any:
            clear_note()  # a note left by a call that never reached this layer is not this call's
            t0 = time.perf_counter_ns()
            try:
                result = fn(*args)
            except OSError as e:
                record(op, args, None, e.errno if isinstance(e.errno, int) and e.errno > 0 else errno.EIO, t0)
                raise
            except Exception:
                record(op, args, None, errno.EIO, t0)
                raise
            record(op, args, result, 0, t0)
            return result

        traced.__name__ = op
        return traced

    def _record(self, op: str, args: tuple[Any, ...], result: Any, err: int, t0: int) -> None:
        t1 = time.perf_counter_ns()
        ctx = self._context()
        uid, gid, pid = ctx[0], ctx[1], ctx[2]
        comm, cmdline = self.names.lookup(pid, t1)
        f = self.filter
        if f.active and not f.accepts(op, args, err, pid, uid, comm, result):
            return
        data_pos = DATA_ARGS.get(op)
        if data_pos is not None:
            args = args[:data_pos] + (len(args[data_pos]),) + args[data_pos + 1:]
        if not err:
            result = _data_free(op, result)
            if self.backing_files is not None and (op == "open" or op == "create"):
                backing_id = self.backing_files.id_of(result)
                if backing_id:
                    result = (result, backing_id)  # its reads and writes will not reach the daemon
        # A plain tuple in RawEvent's field order: cheap to build and to marshal to a writer process.
        self.sink.put((next(self._seq), time.time() - (t1 - t0) / 1e9, op, args, result, err, t1 - t0, pid, uid,
                       gid, comm, cmdline, take_note()))
