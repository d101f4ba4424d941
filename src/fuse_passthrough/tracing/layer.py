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

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

from ..chain import Call, Next, event_ops
from ..inode_ops import setattr_times
from ..lowlevel import abi
from .filters import EventFilter
from .processes import ProcessNames
from .sinks import EventSink

Calls = list[tuple[str, tuple[Any, ...]]]  # (traced op, its arguments) for one call


def _stat_tuple(st: abi.stat_t) -> tuple[int, ...]:
    return (st.st_mode, st.st_size, st.st_ino, st.st_nlink, st.st_uid, st.st_gid)


def _fh(fi: Any) -> int | None:
    return None if fi is None else int(fi.fh)


def _u32(value: int) -> int:
    return -1 if value == 0xFFFFFFFF else value


def _opened(c: Call) -> Any:
    fh = int(c.fi.fh)
    backing_id = c.backing_id
    return (fh, backing_id) if backing_id else fh


def _setattr_calls(c: Call) -> Calls:
    ino, attr, to_set, fi = c.args
    p, fh = c.path, _fh(fi)
    calls: Calls = []
    for op in event_ops(c):
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


def _mode(c: Call, mode: int) -> int:
    """A new object's mode as the caller's umask makes it: the seed's notation, and what the kernel sends when it
    applies the umask itself (the inode core asks for the mode unmasked, FUSE_CAP_DONT_MASK, so that a default ACL
    can take the umask's place)."""
    return mode & ~(c.caller[3] & 0o777)


# handler -> (its events' (op, args), given the call before it runs; its result in trace terms, given the call
# after it ran). `a` is call.args (after req).
DESCRIBE: dict[str, tuple[Callable[[Call], Calls], Callable[[Call], Any]]] = {
    "init": (lambda c: [("init", ("/",))], lambda c: 0),
    "destroy": (lambda c: [("destroy", ("/",))], lambda c: 0),
    "lookup": (lambda c: [("lookup", (c.path,))], lambda c: _stat_tuple(c.result.attr) if c.result.ino else None),
    "forget": (lambda c: [("forget", (c.path, c.args[1]))], lambda c: None),
    "forget_multi": (lambda c: [("forget_multi", (len(c.args[0]),))], lambda c: None),
    "getattr": (lambda c: [("getattr", (c.path, _fh(c.args[1])))], lambda c: _stat_tuple(c.result[0])),
    "setattr": (_setattr_calls, lambda c: _stat_tuple(c.result[0]) if event_ops(c) == ("getattr",) else 0),
    "readlink": (lambda c: [("readlink", (c.path,))], lambda c: os.fsdecode(c.result)),
    "mknod": (lambda c: [("mknod", (c.path, _mode(c, c.args[2]), c.args[3]))], lambda c: 0),
    "mkdir": (lambda c: [("mkdir", (c.path, _mode(c, c.args[2])))], lambda c: 0),
    "symlink": (lambda c: [("symlink", (c.path, os.fsdecode(c.args[0])))], lambda c: 0),
    "link": (lambda c: [("link", (c.path2, c.path))], lambda c: 0),
    "unlink": (lambda c: [("unlink", (c.path,))], lambda c: 0),
    "rmdir": (lambda c: [("rmdir", (c.path,))], lambda c: 0),
    "rename": (lambda c: [("rename", (c.path, c.path2, c.args[4]))], lambda c: 0),
    "open": (lambda c: [("open", (c.path, c.args[1].flags))], _opened),
    "create": (lambda c: [("create", (c.path, _mode(c, c.args[2]), c.args[3].flags))], _opened),
    "tmpfile": (lambda c: [("tmpfile", (c.path, _mode(c, c.args[1]), c.args[2].flags))], _opened),
    "read": (lambda c: [("read", (c.path, c.args[1], c.args[2], c.args[3].fh))], lambda c: len(c.result)),
    "write": (lambda c: [("write", (c.path, len(c.args[1]), c.args[2], c.args[3].fh))], lambda c: c.result),
    "flush": (lambda c: [("flush", (c.path, c.args[1].fh))], lambda c: 0),
    "release": (lambda c: [("release", (c.path, c.args[1].fh))], lambda c: 0),
    "fsync": (lambda c: [("fsync", (c.path, c.args[1], c.args[2].fh))], lambda c: 0),
    "opendir": (lambda c: [("opendir", (c.path,))], lambda c: int(c.args[1].fh)),
    "readdir": (lambda c: [("readdir", (c.path, c.args[3].fh))], lambda c: c.result.entries),
    "readdirplus": (lambda c: [("readdirplus", (c.path, c.args[3].fh))], lambda c: c.result.entries),
    "releasedir": (lambda c: [("releasedir", (c.path, c.args[1].fh))], lambda c: 0),
    "fsyncdir": (lambda c: [("fsyncdir", (c.path, c.args[1], c.args[2].fh))], lambda c: 0),
    "statfs": (lambda c: [("statfs", (c.path,))],
               lambda c: {k: getattr(c.result, k) for k in ("f_bsize", "f_blocks", "f_bfree", "f_files", "f_ffree")}),
    "access": (lambda c: [("access", (c.path, c.args[1]))], lambda c: 0),
    "setxattr": (lambda c: [("setxattr", (c.path, _sname(c.args[1]), len(c.args[2]), c.args[3], 0))], lambda c: 0),
    "getxattr": (lambda c: [("getxattr", (c.path, _sname(c.args[1]), 0))], lambda c: len(c.result)),
    "listxattr": (lambda c: [("listxattr", (c.path,))],
                  lambda c: [os.fsdecode(n) for n in c.result.split(b"\0") if n]),
    "removexattr": (lambda c: [("removexattr", (c.path, _sname(c.args[1])))], lambda c: 0),
    "fallocate": (lambda c: [("fallocate", (c.path, *c.args[1:4], c.args[4].fh))], lambda c: 0),
    "copy_file_range": (lambda c: [("copy_file_range", (c.path, c.args[2].fh, c.args[1], c.path2, c.args[5].fh,
                                                        c.args[4], c.args[6], c.args[7]))], lambda c: c.result),
    "lseek": (lambda c: [("lseek", (c.path, c.args[3].fh, c.args[1], c.args[2]))], lambda c: c.result),
}
# Which traced operations each handler can record (for --ops / --exclude-ops: a handler none of whose events
# is wanted is not wrapped at all).
EVENT_OPS: dict[str, tuple[str, ...]] = {op: (op,) for op in DESCRIBE}
EVENT_OPS["setattr"] = ("chmod", "chown", "truncate", "utimens", "getattr")


class TracingLayer:
    """Hand one RawEvent tuple per traced call to `sink` (filtered by `event_filter`)."""

    def __init__(self, sink: EventSink, event_filter: EventFilter | None = None, *,
                 with_cmdline: bool = False) -> None:
        self.sink = sink
        self.filter = event_filter or EventFilter()
        self.names = ProcessNames(with_cmdline)
        self._seq = itertools.count(1)

    def wants(self, op: str) -> bool:
        return op in DESCRIBE and any(self.filter.accepts_op(o) for o in EVENT_OPS[op])

    def handle(self, call: Call, next: Next) -> Any:
        calls_of, result_of = DESCRIBE[call.op]
        t0 = time.perf_counter_ns()
        calls = calls_of(call)  # before the call: an unlink or rename changes the names
        try:
            result = next(call)
        except BaseException as e:
            self._record(call, calls, None, call.fail(e), t0)
            raise
        self._record(call, calls, result_of(call), 0, t0)
        return result

    def _record(self, call: Call, calls: Calls, result: Any, err: int, t0: int) -> None:
        t1 = time.perf_counter_ns()
        uid, gid, pid, _umask = call.caller
        comm, cmdline = self.names.lookup(pid, t1)
        f = self.filter
        injected = call.injected
        for op, args in calls:
            if not f.accepts_op(op) or f.active and not f.accepts(op, args, err, pid, uid, comm, result):
                continue
            self.sink.put((next(self._seq), time.time() - (t1 - t0) / 1e9, op, args, result, err, t1 - t0, pid,
                           uid, gid, comm, cmdline, injected))

    def close(self) -> None:
        self.names.close()
