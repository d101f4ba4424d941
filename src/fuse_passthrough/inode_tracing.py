"""A minimal tracing layer for the inode core: one event per request into the same sinks as the path core's.

It wraps an `InodeOperations` and exposes exactly the handlers it has (so libfuse sees the same file system).
Each request is recorded under the path core's operation name and argument order where there is one (a
SETATTR as chmod / chown / truncate / utimens, one event per attribute kind it changes), with its path taken
from the node table before the call (best effort: an unlinked file has none), its result in plain types,
the caller (uid, gid, pid, process name) and the duration. LOOKUP, FORGET, READDIRPLUS and TMPFILE have
events of their own (tracing/events.py INODE_ARG_NAMES). The next step replaces this with typed call objects
through a chain of layers (fault injection included).
"""

from __future__ import annotations

import errno
import itertools
import os
import time
from collections.abc import Callable
from typing import Any

from .inode_ops import InodeOperations, setattr_times
from .lowlevel import abi
from .lowlevel import binding as ll
from .tracing.filters import EventFilter
from .tracing.layer import EventSink, ProcessNames

Calls = list[tuple[str, tuple[Any, ...]]]  # (traced op, its arguments) for one request


def _stat_tuple(st: abi.stat_t) -> tuple[int, ...]:
    return (st.st_mode, st.st_size, st.st_ino, st.st_nlink, st.st_uid, st.st_gid)


def _fh(fi: Any) -> int | None:
    return None if fi is None else int(fi.fh)


def _u32(value: int) -> int:
    return -1 if value == 0xFFFFFFFF else value


class InodeTracing:
    """Forward each handler to `inner` and hand one RawEvent tuple per traced call to `sink`."""

    def __init__(self, inner: InodeOperations, sink: EventSink, event_filter: EventFilter | None = None, *,
                 with_cmdline: bool = False) -> None:
        self.inner = inner
        self.sink = sink
        self.filter = event_filter or EventFilter()
        self.names = ProcessNames(with_cmdline)
        self._seq = itertools.count(1)
        nodes = inner.nodes

        def path(ino: int, name: bytes | None = None) -> str | None:
            return nodes.path(ino, name)

        def sname(name: bytes) -> str:
            return os.fsdecode(name)

        def setattr_calls(ino: int, attr: abi.stat_t, to_set: int, fi: Any) -> Calls:
            p, fh = path(ino), _fh(fi)
            calls: Calls = []
            if to_set & abi.FUSE_SET_ATTR_MODE:
                calls.append(("chmod", (p, attr.st_mode, fh)))
            if to_set & (abi.FUSE_SET_ATTR_UID | abi.FUSE_SET_ATTR_GID):
                calls.append(("chown", (p, _u32(attr.st_uid) if to_set & abi.FUSE_SET_ATTR_UID else -1,
                                        _u32(attr.st_gid) if to_set & abi.FUSE_SET_ATTR_GID else -1, fh)))
            if to_set & abi.FUSE_SET_ATTR_SIZE:
                calls.append(("truncate", (p, attr.st_size, fh)))
            times = setattr_times(attr, to_set)
            if times is not None:
                calls.append(("utimens", (p, times, fh)))
            return calls or [("getattr", (p, fh))]  # e.g. only ctime: the reply is the attributes

        # handler name -> (the calls it makes, given its arguments after req; its result in trace terms,
        # given the handler's result and arguments)
        describe: dict[str, tuple[Callable[..., Calls], Callable[[Any, tuple[Any, ...]], Any]]] = {
            "lookup": (lambda p, n: [("lookup", (path(p, n),))],
                       lambda r, a: _stat_tuple(r.attr) if r.ino else None),
            "forget": (lambda i, n: [("forget", (path(i), n))], lambda r, a: None),
            "forget_multi": (lambda f: [("forget_multi", (len(f),))], lambda r, a: None),
            "getattr": (lambda i, fi: [("getattr", (path(i), _fh(fi)))], lambda r, a: _stat_tuple(r[0])),
            "setattr": (setattr_calls, lambda r, a: 0),
            "readlink": (lambda i: [("readlink", (path(i),))], lambda r, a: os.fsdecode(r)),
            "mknod": (lambda p, n, m, d: [("mknod", (path(p, n), m, d))], lambda r, a: 0),
            "mkdir": (lambda p, n, m: [("mkdir", (path(p, n), m))], lambda r, a: 0),
            "symlink": (lambda t, p, n: [("symlink", (path(p, n), os.fsdecode(t)))], lambda r, a: 0),
            "link": (lambda i, p, n: [("link", (path(p, n), path(i)))], lambda r, a: 0),
            "unlink": (lambda p, n: [("unlink", (path(p, n),))], lambda r, a: 0),
            "rmdir": (lambda p, n: [("rmdir", (path(p, n),))], lambda r, a: 0),
            "rename": (lambda p, n, np, nn, f: [("rename", (path(p, n), path(np, nn), f))], lambda r, a: 0),
            "open": (lambda i, fi: [("open", (path(i), fi.flags))], lambda r, a: self._opened(a[-1])),
            "create": (lambda p, n, m, fi: [("create", (path(p, n), m, fi.flags))],
                       lambda r, a: self._opened(a[-1])),
            "tmpfile": (lambda p, m, fi: [("tmpfile", (path(p), m, fi.flags))], lambda r, a: self._opened(a[-1])),
            "read": (lambda i, s, o, fi: [("read", (path(i), s, o, fi.fh))], lambda r, a: len(r)),
            "write": (lambda i, d, o, fi: [("write", (path(i), len(d), o, fi.fh))], lambda r, a: r),
            "flush": (lambda i, fi: [("flush", (path(i), fi.fh))], lambda r, a: 0),
            "release": (lambda i, fi: [("release", (path(i), fi.fh))], lambda r, a: 0),
            "fsync": (lambda i, d, fi: [("fsync", (path(i), d, fi.fh))], lambda r, a: 0),
            "opendir": (lambda i, fi: [("opendir", (path(i),))], lambda r, a: int(a[-1].fh)),
            "readdir": (lambda i, s, o, fi: [("readdir", (path(i), fi.fh))], lambda r, a: r.entries),
            "readdirplus": (lambda i, s, o, fi: [("readdirplus", (path(i), fi.fh))], lambda r, a: r.entries),
            "releasedir": (lambda i, fi: [("releasedir", (path(i), fi.fh))], lambda r, a: 0),
            "fsyncdir": (lambda i, d, fi: [("fsyncdir", (path(i), d, fi.fh))], lambda r, a: 0),
            "statfs": (lambda i: [("statfs", (path(i),))],
                       lambda r, a: {k: getattr(r, k) for k in ("f_bsize", "f_blocks", "f_bfree", "f_files",
                                                                "f_ffree")}),
            "access": (lambda i, m: [("access", (path(i), m))], lambda r, a: 0),
            "setxattr": (lambda i, n, v, f: [("setxattr", (path(i), sname(n), len(v), f, 0))], lambda r, a: 0),
            "getxattr": (lambda i, n, s: [("getxattr", (path(i), sname(n), 0))], lambda r, a: len(r)),
            "listxattr": (lambda i, s: [("listxattr", (path(i),))],
                          lambda r, a: [os.fsdecode(n) for n in r.split(b"\0") if n]),
            "removexattr": (lambda i, n: [("removexattr", (path(i), sname(n)))], lambda r, a: 0),
            "fallocate": (lambda i, m, o, n, fi: [("fallocate", (path(i), m, o, n, fi.fh))], lambda r, a: 0),
            "copy_file_range": (lambda ii, oi, fii, io, oo, fio, n, f: [
                ("copy_file_range", (path(ii), fii.fh, oi, path(io), fio.fh, oo, n, f))], lambda r, a: r),
            "lseek": (lambda i, o, w, fi: [("lseek", (path(i), fi.fh, o, w))], lambda r, a: r),
        }
        for name in ("init", "destroy"):
            fn = getattr(inner, name, None)
            if fn is not None:
                setattr(self, name, self._wrap_lifecycle(name, fn))
        for name, (calls_of, result_of) in describe.items():
            fn = getattr(inner, name, None)
            if fn is not None:
                setattr(self, name, self._wrap(fn, calls_of, result_of))

    def _opened(self, fi: Any) -> Any:
        backing_id = getattr(fi, "backing_id", 0)
        return (int(fi.fh), backing_id) if backing_id else int(fi.fh)

    def close(self) -> None:
        self.names.close()

    def _wrap(self, fn: Callable[..., Any], calls_of: Callable[..., Calls],
              result_of: Callable[[Any, tuple[Any, ...]], Any]) -> Callable[..., Any]:
        record = self._record

        def traced(req: int, *args: Any) -> Any:
            t0 = time.perf_counter_ns()
            calls = calls_of(*args)  # before the call: an unlink or rename changes the names
            try:
                result = fn(req, *args)
            except OSError as e:
                record(req, calls, None, e.errno if isinstance(e.errno, int) and e.errno > 0 else errno.EIO, t0)
                raise
            except Exception:
                record(req, calls, None, errno.EIO, t0)
                raise
            record(req, calls, result_of(result, args), 0, t0)
            return result

        return traced

    def _wrap_lifecycle(self, op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """init and destroy: no request, so the caller is the kernel (pid 0), as in the path core's trace."""
        record = self._record

        def traced(*args: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                result = fn(*args)
            except Exception:
                record(0, [(op, ("/",))], None, errno.EIO, t0)
                raise
            record(0, [(op, ("/",))], 0, 0, t0)
            return result

        return traced

    def _record(self, req: int, calls: Calls, result: Any, err: int, t0: int) -> None:
        t1 = time.perf_counter_ns()
        if req:
            ctx = ll.req_ctx(req)
            uid, gid, pid = ctx.uid, ctx.gid, ctx.pid
        else:
            uid = gid = pid = 0
        comm, cmdline = self.names.lookup(pid, t1)
        f = self.filter
        for op, args in calls:
            if not f.accepts_op(op) or f.active and not f.accepts(op, args, err, pid, uid, comm, result):
                continue
            self.sink.put((next(self._seq), time.time() - (t1 - t0) / 1e9, op, args, result, err, t1 - t0, pid,
                           uid, gid, comm, cmdline, None))
