"""The tracing layer: one event per call (per attribute kind for SETATTR) from the chain's `Call` objects
(chain.py) into a sink (sinks.py: the writer process or thread formats, counts and writes).

Events use libfuse's high-level names and argument order (the seed's notation: create('/bar', 0o100644,
...)); a SETATTR is recorded as chmod / chown / truncate / utimens, one event per kind of attribute it changes;
LOOKUP, FORGET, BATCH_FORGET (forget_multi), READDIRPLUS and TMPFILE have events of their own
(tracing/events.py LOWLEVEL_ARG_NAMES; the mapping is documented in README "Trace events"). Paths come from the node
table, read before the call (an unlink or rename changes them). What a fault layer inside this one did is in
`call.injected`, and goes into the event.

    chain = LayerChain(InodeOperations(src), [TracingLayer(TraceSink(...)), FaultLayer(rules)])
"""

from __future__ import annotations

import errno as errno_mod
import itertools
import os
import time
from collections.abc import Callable
from typing import Any

from ..chain import LIFECYCLE, PATH_ARGS, Call, Next, PathSource, setattr_ops
from ..inode_ops import setattr_times
from ..lowlevel import abi
from .filters import EventFilter
from .processes import ProcessNames
from .sinks import EventSink

try:
    from ._recorder import Recorder, record_waiting
except ImportError:  # not built (setup.py): the same events from the Python closure in `direct`
    Recorder = None  # type: ignore[misc, assignment]

    def record_waiting() -> None:
        pass

Calls = list[tuple[str, tuple[Any, ...]]]  # (traced op, its arguments): a SETATTR's events


def _stat_tuple(st: abi.stat_t) -> tuple[int, ...]:
    return (st.st_mode, st.st_size, st.st_ino, st.st_nlink, st.st_uid, st.st_gid)


def _fh(fi: Any) -> int | None:
    return None if fi is None else int(fi.fh)


def _u32(value: int) -> int:
    return -1 if value == 0xFFFFFFFF else value


def _opened_at(i: int) -> Callable[[Any, tuple[Any, ...]], Any]:
    """The result of an open-like call whose fuse_file_info is argument i: fh, or (fh, backing id)."""
    def opened(r: Any, a: tuple[Any, ...]) -> Any:
        fi = a[i]
        fh = int(fi.fh)
        backing_id = int(getattr(fi, "backing_id", 0) or 0)
        return (fh, backing_id) if backing_id else fh
    return opened


def _setattr_events(a: tuple[Any, ...], p: str | None, p2: str | None, umask: int) -> Calls:
    ino, attr, to_set, fi = a
    fh = _fh(fi)
    calls: Calls = []
    for op in setattr_ops(to_set):
        if op == "chmod":
            calls.append(("chmod", (p, attr.st_mode, fh)))
        elif op == "chown":
            calls.append(("chown", (p, _u32(attr.st_uid) if to_set & abi.FUSE_SET_ATTR_UID else -1,
                                    _u32(attr.st_gid) if to_set & abi.FUSE_SET_ATTR_GID else -1, fh)))
        elif op == "truncate":
            calls.append(("truncate", (p, attr.st_size, fh)))
        elif op == "utimens":
            calls.append(("utimens", (p, setattr_times(attr, to_set), fh)))
        else:
            calls.append(("getattr", (p, fh)))  # e.g. only ctime: the reply is the attributes
    return calls


def _sname(name: bytes) -> str:
    return os.fsdecode(name)


def _zero(r: Any, a: tuple[Any, ...]) -> int:
    return 0


def _none(r: Any, a: tuple[Any, ...]) -> None:
    return None


def _same(r: Any, a: tuple[Any, ...]) -> Any:
    return r


# A new object's mode is written as the caller's umask makes it (`mode & ~umask`): the seed's notation, and what
# the kernel sends when it applies the umask itself (the inode core asks for the mode unmasked,
# FUSE_CAP_DONT_MASK, so that a default ACL can take the umask's place).
#
# handler -> (its event's arguments, given the handler's arguments after req `a`, the call's paths `p`, `p2`
# (read before the call: an unlink or rename changes them) and the caller's umask `u`; its result in trace
# terms, given the handler's result `r` and `a`). The event's op is the handler's name, except for SETATTR
# (MULTI: a list of (op, args), one per kind of attribute it changes).
Describe = tuple[Callable[[tuple[Any, ...], Any, Any, int], Any], Callable[[Any, tuple[Any, ...]], Any]]
DESCRIBE: dict[str, Describe] = {
    "init": (lambda a, p, p2, u: ("/",), _zero),
    "destroy": (lambda a, p, p2, u: ("/",), _zero),
    "lookup": (lambda a, p, p2, u: (p,), lambda r, a: _stat_tuple(r.attr) if r.ino else None),
    "forget": (lambda a, p, p2, u: (p, a[1]), _none),
    "forget_multi": (lambda a, p, p2, u: (len(a[0]),), _none),
    "getattr": (lambda a, p, p2, u: (p, _fh(a[1])), lambda r, a: _stat_tuple(r[0])),
    "setattr": (_setattr_events, lambda r, a: _stat_tuple(r[0]) if setattr_ops(a[2]) == ("getattr",) else 0),
    "readlink": (lambda a, p, p2, u: (p,), lambda r, a: os.fsdecode(r)),
    "mknod": (lambda a, p, p2, u: (p, a[2] & ~(u & 0o777), a[3]), _zero),
    "mkdir": (lambda a, p, p2, u: (p, a[2] & ~(u & 0o777)), _zero),
    "symlink": (lambda a, p, p2, u: (p, os.fsdecode(a[0])), _zero),
    "link": (lambda a, p, p2, u: (p2, p), _zero),
    "unlink": (lambda a, p, p2, u: (p,), _zero),
    "rmdir": (lambda a, p, p2, u: (p,), _zero),
    "rename": (lambda a, p, p2, u: (p, p2, a[4]), _zero),
    "open": (lambda a, p, p2, u: (p, a[1].flags), _opened_at(1)),
    "create": (lambda a, p, p2, u: (p, a[2] & ~(u & 0o777), a[3].flags), _opened_at(3)),
    "tmpfile": (lambda a, p, p2, u: (p, a[1] & ~(u & 0o777), a[2].flags), _opened_at(2)),
    "read": (lambda a, p, p2, u: (p, a[1], a[2], a[3].fh), lambda r, a: len(r)),
    "write": (lambda a, p, p2, u: (p, len(a[1]), a[2], a[3].fh), _same),
    "flush": (lambda a, p, p2, u: (p, a[1].fh), _zero),
    "release": (lambda a, p, p2, u: (p, a[1].fh), _zero),
    "fsync": (lambda a, p, p2, u: (p, a[1], a[2].fh), _zero),
    "opendir": (lambda a, p, p2, u: (p,), lambda r, a: int(a[1].fh)),
    "readdir": (lambda a, p, p2, u: (p, a[2], a[3].fh), lambda r, a: r.entries),
    "readdirplus": (lambda a, p, p2, u: (p, a[2], a[3].fh), lambda r, a: r.entries),
    "releasedir": (lambda a, p, p2, u: (p, a[1].fh), _zero),
    "fsyncdir": (lambda a, p, p2, u: (p, a[1], a[2].fh), _zero),
    "statfs": (lambda a, p, p2, u: (p,),
               lambda r, a: {k: getattr(r, k) for k in ("f_bsize", "f_blocks", "f_bfree", "f_files", "f_ffree")}),
    "access": (lambda a, p, p2, u: (p, a[1]), _zero),
    "setxattr": (lambda a, p, p2, u: (p, _sname(a[1]), len(a[2]), a[3], 0), _zero),
    "getxattr": (lambda a, p, p2, u: (p, _sname(a[1]), 0), lambda r, a: len(r)),
    "listxattr": (lambda a, p, p2, u: (p,), lambda r, a: [os.fsdecode(n) for n in r.split(b"\0") if n]),
    "removexattr": (lambda a, p, p2, u: (p, _sname(a[1])), _zero),
    "fallocate": (lambda a, p, p2, u: (p, *a[1:4], a[4].fh), _zero),
    "copy_file_range": (lambda a, p, p2, u: (p, a[2].fh, a[1], p2, a[5].fh, a[4], a[6], a[7]), _same),
    "lseek": (lambda a, p, p2, u: (p, a[3].fh, a[1], a[2]), _same),
}
# The same descriptions as steps for the compiled layer (_recorder.c), which follows them without a Python call:
# the event's arguments, then its result. ("path"), ("path2"): the call's paths; ("arg", i): a[i]; ("attr", i,
# name): a[i].name; ("len", i); ("masked", i): a[i] & ~(umask & 0o777); ("fh", i): _fh(a[i]); ("decode", i):
# os.fsdecode(a[i]); ("const", v). Results: ("const", v), ("same"), ("result_len"), ("entry_stat"): lookup's,
# ("first_stat"): _stat_tuple(r[0]), ("opened", i): _opened_at(i), ("arg_fh", i): int(a[i].fh), ("result_attr",
# name), ("result_decode"). An operation without a plan is described by the functions above; the test
# test_the_direct_path_records_what_the_generic_path_records holds both to the same events.
_P, _P2, _ZERO = ("path",), ("path2",), ("const", 0)
PLANS: dict[str, tuple[tuple[Any, ...], ...]] = {
    "lookup": (_P, ("entry_stat",)),
    "forget": (_P, ("arg", 1), ("const", None)),
    "forget_multi": (("len", 0), ("const", None)),
    "getattr": (_P, ("fh", 1), ("first_stat",)),
    "readlink": (_P, ("result_decode",)),
    "mknod": (_P, ("masked", 2), ("arg", 3), _ZERO),
    "mkdir": (_P, ("masked", 2), _ZERO),
    "symlink": (_P, ("decode", 0), _ZERO),
    "link": (_P2, _P, _ZERO),
    "unlink": (_P, _ZERO),
    "rmdir": (_P, _ZERO),
    "rename": (_P, _P2, ("arg", 4), _ZERO),
    "open": (_P, ("attr", 1, "flags"), ("opened", 1)),
    "create": (_P, ("masked", 2), ("attr", 3, "flags"), ("opened", 3)),
    "tmpfile": (_P, ("masked", 1), ("attr", 2, "flags"), ("opened", 2)),
    "read": (_P, ("arg", 1), ("arg", 2), ("attr", 3, "fh"), ("result_len",)),
    "write": (_P, ("len", 1), ("arg", 2), ("attr", 3, "fh"), ("same",)),
    "flush": (_P, ("attr", 1, "fh"), _ZERO),
    "release": (_P, ("attr", 1, "fh"), _ZERO),
    "fsync": (_P, ("arg", 1), ("attr", 2, "fh"), _ZERO),
    "opendir": (_P, ("arg_fh", 1)),
    "readdir": (_P, ("arg", 2), ("attr", 3, "fh"), ("result_attr", "entries")),
    "readdirplus": (_P, ("arg", 2), ("attr", 3, "fh"), ("result_attr", "entries")),
    "releasedir": (_P, ("attr", 1, "fh"), _ZERO),
    "fsyncdir": (_P, ("arg", 1), ("attr", 2, "fh"), _ZERO),
    "access": (_P, ("arg", 1), _ZERO),
    "setxattr": (_P, ("decode", 1), ("len", 2), ("arg", 3), _ZERO, _ZERO),
    "getxattr": (_P, ("decode", 1), _ZERO, ("result_len",)),
    "removexattr": (_P, ("decode", 1), _ZERO),
    "lseek": (_P, ("attr", 3, "fh"), ("arg", 1), ("arg", 2), ("same",)),
}
MULTI = frozenset({"setattr"})
# Which traced operations each handler can record (for --ops / --exclude-ops: a handler none of whose events
# is wanted is not wrapped at all).
EVENT_OPS: dict[str, tuple[str, ...]] = {op: (op,) for op in DESCRIBE}
EVENT_OPS["setattr"] = ("chmod", "chown", "truncate", "utimens", "getattr")


class TracingLayer:
    """Hand one RawEvent tuple per traced call to `sink` (filtered by `event_filter`).

    Two ways in, with the same events: `handle(call, next)`, the chain's generic path (any layers), and
    `direct(op, handler, nodes, context)`, which the chain uses when this is the only layer that wants `op` (the
    default traced mount): one closure per handler that reads the paths, calls the handler and records, without
    building a `Call`, compiled where _recorder.c is built (following PLANS) and in Python otherwise (a traced
    request's daemon CPU was mostly Python calls: see docs/benchmarks.md).
    """

    def __init__(self, sink: EventSink, event_filter: EventFilter | None = None, *,
                 with_cmdline: bool = False) -> None:
        self.sink = sink
        self.filter = event_filter or EventFilter()
        self.names = ProcessNames(with_cmdline)
        self._seq = itertools.count(1)
        self._recorders: dict[Any, Any] = {}  # context -> its Recorder

    def wants(self, op: str) -> bool:
        return op in DESCRIBE and any(self.filter.accepts_op(o) for o in EVENT_OPS[op])

    def handle(self, call: Call, next: Next) -> Any:
        op = call.op
        args_of, result_of = DESCRIBE[op]
        # before the call: an unlink or rename changes the names
        described = args_of(call.args, call.path, call.path2, call.caller[3])
        t0 = time.perf_counter_ns()
        try:
            result = next(call)
        except BaseException as e:
            self._record(call, described, None, call.fail(e), t0)
            raise
        self._record(call, described, result_of(call.result, call.args), 0, t0)
        return result

    def _record(self, call: Call, described: Any, result: Any, err: int, t0: int) -> None:
        t1 = time.perf_counter_ns()
        record_waiting()  # the compiled path's events of calls that ended before this one come first
        uid, gid, pid, _umask = call.caller
        comm, cmdline = self.names.lookup(pid, t1)
        f = self.filter
        injected = call.injected
        op = call.op
        calls: Calls = described if op in MULTI else [(op, described)]
        for eop, args in calls:
            if not f.accepts_op(eop) or f.active and not f.accepts(eop, args, err, pid, uid, comm, result):
                continue
            self.sink.put((next(self._seq), time.time() - (t1 - t0) / 1e9, eop, args, result, err, t1 - t0, pid,
                           uid, gid, comm, cmdline, injected))

    def direct(self, op: str, fn: Callable[..., Any], nodes: PathSource | None,
               context: Callable[[int], tuple[int, int, int, int]]) -> Callable[..., Any] | None:
        """`fn(req, *args)` traced as `handle` would trace it when no other layer is in the way; None where
        this layer needs the generic path (init/destroy, per-event filters, no node table)."""
        if op in LIFECYCLE or op not in DESCRIBE or nodes is None or self.filter.active:
            return None
        args_of, result_of = DESCRIBE[op]
        where = PATH_ARGS.get(op)
        (node_i, name_i), second = where if where is not None else ((-1, None), None)
        node2_i, name2_i = second if second is not None else (-1, None)
        nodes_path = nodes.path
        multi = op in MULTI
        if Recorder is not None:
            return self._recorder(context).traced(op, fn, nodes_path, node_i, -1 if name_i is None else name_i,
                                                  node2_i, -1 if name2_i is None else name2_i, args_of, result_of,
                                                  PLANS.get(op), self.filter.accepts_op if multi else None,
                                                  getattr(nodes, "path_cache", lambda: (None, None))())
        accepts_op = self.filter.accepts_op
        put = self.sink.put
        seq = self._seq
        names = self.names
        cache_get = names.cache.get
        young, ttl = names.YOUNG_NS, names.TTL_NS
        perf_ns = time.perf_counter_ns
        wall = time.time
        eio = errno_mod.EIO

        def record(described: Any, result: Any, err: int, t0: int, t1: int, caller: tuple[int, int, int, int]
                   ) -> None:
            uid, gid, pid, _umask = caller
            hit = cache_get(pid)
            if hit is not None and t1 - hit[0] > young and t1 - hit[1] < ttl:
                comm, cmdline = hit[2], hit[3]
            else:
                comm, cmdline = names.lookup(pid, t1)
            d = t1 - t0
            if not multi:
                put((next(seq), wall() - d / 1e9, op, described, result, err, d, pid, uid, gid, comm, cmdline,
                     None))
                return
            for eop, args in described:
                if accepts_op(eop):
                    put((next(seq), wall() - d / 1e9, eop, args, result, err, d, pid, uid, gid, comm, cmdline,
                         None))

        def handler(req: int, *a: Any) -> Any:
            if node_i < 0:
                p = None
            else:
                p = nodes_path(a[node_i]) if name_i is None else nodes_path(a[node_i], a[name_i])
            if node2_i < 0:
                p2 = None
            else:
                p2 = nodes_path(a[node2_i]) if name2_i is None else nodes_path(a[node2_i], a[name2_i])
            caller = context(req) if req else (0, 0, 0, 0)
            described = args_of(a, p, p2, caller[3])
            t0 = perf_ns()
            try:
                result = fn(req, *a)
            except BaseException as exc:
                t1 = perf_ns()
                e = exc.errno if isinstance(exc, OSError) else None
                record(described, None, e if isinstance(e, int) and e > 0 else eio, t0, t1, caller)
                raise
            t1 = perf_ns()
            if multi:
                record(described, result_of(result, a), 0, t0, t1, caller)
                return result
            # record(), inlined for the common case: one event, a success, the process name cached
            uid, gid, pid, _umask = caller
            hit = cache_get(pid)
            if hit is not None and t1 - hit[0] > young and t1 - hit[1] < ttl:
                comm, cmdline = hit[2], hit[3]
            else:
                comm, cmdline = names.lookup(pid, t1)
            d = t1 - t0
            put((next(seq), wall() - d / 1e9, op, described, result_of(result, a), 0, d, pid, uid, gid, comm,
                 cmdline, None))
            return result

        handler.__name__ = op
        return handler

    def _recorder(self, context: Callable[[int], tuple[int, int, int, int]]) -> Any:
        """The compiled closure's shared part (_recorder.c), one per context function."""
        rec = self._recorders.get(context)
        if rec is None:
            hot_path = getattr(self.sink, "hot_path", None)
            pending, batch, backlog = hot_path() if hot_path is not None else (None, 0, None)
            names = self.names
            rec = self._recorders[context] = Recorder(
                self._seq, names.cache, names.lookup, names.YOUNG_NS, names.TTL_NS, context, self.sink.put,
                pending, batch, backlog, abi.stat_t)
        return rec

    def close(self) -> None:
        record_waiting()
        self.names.close()
