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
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..binding import fuse_context
from .events import ARG_NAMES, DATA_ARGS, KERNEL_COMM, RawEvent
from .filters import EventFilter

_PROC_TTL_NS = 1_000_000_000  # process names are re-read at most once a second per pid (exec renames)


class EventSink(Protocol):
    def put(self, raw: RawEvent) -> None: ...


class ProcessNames:
    """pid -> comm (and optionally cmdline) from /proc, cached; None when the process is gone."""

    def __init__(self, with_cmdline: bool = False) -> None:
        self.with_cmdline = with_cmdline
        self._cache: dict[int, tuple[int, str | None, list[str] | None]] = {}

    def lookup(self, pid: int, now_ns: int) -> tuple[str | None, list[str] | None]:
        hit = self._cache.get(pid)
        if hit is not None and hit[0] > now_ns:
            return hit[1], hit[2]
        if pid == 0:
            comm: str | None = KERNEL_COMM
            cmdline = None
        else:
            comm = _read_comm(pid)
            cmdline = _read_cmdline(pid) if self.with_cmdline and comm is not None else None
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[pid] = (now_ns + _PROC_TTL_NS, comm, cmdline)
        return comm, cmdline


def _read_comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return None


def _read_cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0")[:-1]]


def _data_free(op: str, result: Any) -> Any:
    """Reduce a result to what may be recorded: lengths for data, counts for listings."""
    if op == "read" or op == "getxattr":
        return len(result)
    if op == "readdir":
        return len(result) if result is not None else 0
    return result


class TracingOperations:
    """An Operations object that forwards to `inner` and hands one RawEvent per call to `sink`.

    Only the operations `inner` implements are exposed, so libfuse sees exactly the same filesystem.
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
        self.use_ns = getattr(inner, "use_ns", False)
        for op in ARG_NAMES:
            fn = getattr(inner, op, None)
            if fn is None or getattr(fn, "libfuse_ignore", False) or not callable(fn):
                continue
            setattr(self, op, self._wrap(op, fn))

    def _wrap(self, op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        record = self._record
        if not self.filter.accepts_op(op):
            return fn  # excluded by --ops/--exclude-ops: no cost at all

        def traced(*args: Any) -> Any:
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
        self.sink.put(RawEvent(next(self._seq), time.time() - (t1 - t0) / 1e9, op, args, result, err, t1 - t0, pid, uid, gid,
                               comm, cmdline))
