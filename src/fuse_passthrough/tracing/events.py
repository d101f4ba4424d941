"""The trace event: one per operation, and how raw call arguments become its documented fields.

The hot path (see layer.py) captures a `RawEvent` tuple — cheap, with data buffers already replaced by their
lengths — and the writer thread turns it into the JSON-ready dict of `SCHEMA_FIELDS` with `to_event`.
"""

from __future__ import annotations

import errno as errno_mod
import functools
import os
import platform
import stat
from collections.abc import Callable
from typing import Any, NamedTuple

# Argument names per traced operation, in the order events record them (the notation of libfuse's high-level
# API, which the seed used: "size" stands for write's and setxattr's data, which a trace reduces to its length).
# "path"/"path2" become top-level fields of trace events.
CALL_ARG_NAMES: dict[str, tuple[str, ...]] = {
    "getattr": ("path", "fh"),
    "readlink": ("path",),
    "mknod": ("path", "mode", "dev"),
    "mkdir": ("path", "mode"),
    "unlink": ("path",),
    "rmdir": ("path",),
    "symlink": ("path", "path2"),          # path = the new link, path2 = its target text
    "rename": ("path", "path2", "flags"),
    "link": ("path2", "path"),             # path = existing file, path2 = the new name
    "chmod": ("path", "mode", "fh"),
    "chown": ("path", "uid", "gid", "fh"),
    "truncate": ("path", "length", "fh"),
    "open": ("path", "flags"),
    "create": ("path", "mode", "flags"),
    "read": ("path", "size", "offset", "fh"),
    "write": ("path", "size", "offset", "fh"),
    "statfs": ("path",),
    "flush": ("path", "fh"),
    "release": ("path", "fh"),
    "fsync": ("path", "datasync", "fh"),
    "setxattr": ("path", "name", "size", "flags", "position"),
    "getxattr": ("path", "name", "position"),
    "listxattr": ("path",),
    "removexattr": ("path", "name"),
    "opendir": ("path",),
    "readdir": ("path", "offset", "fh"),
    "readdir_with_offset": ("path", "offset", "fh"),
    "releasedir": ("path", "fh"),
    "fsyncdir": ("path", "datasync", "fh"),
    "init": ("path",),
    "destroy": ("path",),
    "access": ("path", "mask"),
    "utimens": ("path", "times", "fh"),
    "fallocate": ("path", "mode", "offset", "length", "fh"),
    "copy_file_range": ("path", "fh_in", "offset_in", "path2", "fh_out", "offset_out", "size", "flags"),
    "lseek": ("path", "fh", "offset", "whence"),
    "flock": ("path", "fh", "operation"),
    "lock": ("path", "fh", "cmd", "lock"),
}
# Low-level requests without a high-level equivalent (schema version 2).
LOWLEVEL_ARG_NAMES: dict[str, tuple[str, ...]] = {
    "lookup": ("path",),
    "forget": ("path", "nlookup"),
    "forget_multi": ("count",),
    "readdirplus": ("path", "offset", "fh"),
    "tmpfile": ("path", "mode", "flags"),
}
ARG_NAMES: dict[str, tuple[str, ...]] = {**CALL_ARG_NAMES, **LOWLEVEL_ARG_NAMES}

# 2: the low-level requests' own operations (lookup, forget, forget_multi, readdirplus, tmpfile;
# LOWLEVEL_ARG_NAMES) may appear; the fields and the other operations are as in 1, which readers still accept (SUPPORTED_VERSIONS).
# 3: readdir and readdirplus carry their offset (0: a listing starts; fh 0: a directory the kernel opened itself).
SCHEMA_VERSION = 3
SUPPORTED_VERSIONS = frozenset({1, 2, 3})
SCHEMA_FIELDS = ("v", "seq", "ts", "op", "path", "path2", "args", "result", "errno", "duration_ns",
                 "pid", "uid", "gid", "comm")
KERNEL_COMM = "[kernel]"  # pid 0: the kernel asked on its own behalf (writeback, release after exit...)


class RawEvent(NamedTuple):
    seq: int
    ts: float
    op: str
    args: tuple[Any, ...]
    result: Any
    err: int  # 0 = success
    duration_ns: int
    pid: int
    uid: int
    gid: int
    comm: str | None
    cmdline: list[str] | None
    # What a fault-injection layer did to the call: {"errno": n} | {"short": n} and/or {"delay_ns": n}.
    injected: dict[str, int] | None = None


# Positions whose value is data (write buffer, xattr value): only the length may leave the hot path.
DATA_ARGS = {"write": 1, "setxattr": 2}

# Python reports O_LARGEFILE as 0 on 64-bit, but the kernel sets its bit in every open it forwards.
_O_LARGEFILE_KERNEL = 0o100000 if platform.machine() in ("x86_64", "i686") else 0o400000
_OPEN_FLAG_NAMES = [
    (os.O_APPEND, "O_APPEND"), (os.O_CREAT, "O_CREAT"), (os.O_EXCL, "O_EXCL"), (os.O_TRUNC, "O_TRUNC"),
    (os.O_NOCTTY, "O_NOCTTY"), (os.O_NONBLOCK, "O_NONBLOCK"), (os.O_DSYNC, "O_DSYNC"),
    (os.O_DIRECT, "O_DIRECT"), (os.O_LARGEFILE or _O_LARGEFILE_KERNEL, "O_LARGEFILE"), (os.O_DIRECTORY, "O_DIRECTORY"),
    (os.O_NOFOLLOW, "O_NOFOLLOW"), (os.O_NOATIME, "O_NOATIME"), (os.O_CLOEXEC, "O_CLOEXEC"),
    (getattr(os, "__O_SYNC", 0o4000000), "__O_SYNC"), (os.O_PATH, "O_PATH"), (0o20000000, "__O_TMPFILE"),
    (getattr(os, "O_ASYNC", 0o20000), "O_ASYNC"),
]
_ACCESS_MODES = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR", 3: "O_ACCMODE"}


def open_flags(flags: int) -> str:
    """'O_WRONLY|O_CREAT|O_TRUNC' for an open(2) flag word; unknown bits as hex."""
    names = [_ACCESS_MODES[flags & os.O_ACCMODE]]
    rest = flags & ~os.O_ACCMODE
    if rest & os.O_SYNC == os.O_SYNC:  # O_SYNC contains O_DSYNC's bit
        names.append("O_SYNC")
        rest &= ~os.O_SYNC
    for bit, name in _OPEN_FLAG_NAMES:
        if rest & bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return "|".join(names)


_FILE_TYPES = {stat.S_IFREG: "S_IFREG", stat.S_IFDIR: "S_IFDIR", stat.S_IFLNK: "S_IFLNK",
               stat.S_IFCHR: "S_IFCHR", stat.S_IFBLK: "S_IFBLK", stat.S_IFIFO: "S_IFIFO",
               stat.S_IFSOCK: "S_IFSOCK"}


def mode_str(mode: int) -> str:
    """Octal mode with its file type, e.g. '0o100644' (the type bits are part of the octal number)."""
    return oct(mode)


_RENAME_FLAGS = [(1, "RENAME_NOREPLACE"), (2, "RENAME_EXCHANGE"), (4, "RENAME_WHITEOUT")]
_FALLOC_FLAGS = [(0x01, "KEEP_SIZE"), (0x02, "PUNCH_HOLE"), (0x08, "COLLAPSE_RANGE"), (0x10, "ZERO_RANGE"),
                 (0x20, "INSERT_RANGE"), (0x40, "UNSHARE_RANGE")]
_XATTR_FLAGS = [(1, "XATTR_CREATE"), (2, "XATTR_REPLACE")]
_WHENCE = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}
_UTIME = {(1 << 30) - 1: "UTIME_NOW", (1 << 30) - 2: "UTIME_OMIT"}


def _bits(value: int, table: list[tuple[int, str]], zero: str = "0") -> str:
    names = [name for bit, name in table if value & bit]
    rest = value & ~sum(bit for bit, _ in table)
    if rest:
        names.append(hex(rest))
    return "|".join(names) or zero


def _access_mask(mask: int) -> str:
    if mask == 0:
        return "F_OK"
    return "|".join(n for b, n in ((4, "R_OK"), (2, "W_OK"), (1, "X_OK")) if mask & b) or hex(mask)


def _timespec(ts: Any) -> Any:
    sec, nsec = ts
    return _UTIME.get(nsec) or sec * 1_000_000_000 + nsec


def decode_arg(op: str, name: str, value: Any) -> Any:
    """The JSON value of one argument: names for flag words, octal strings for modes."""
    if value is None:
        return None
    if name == "flags":
        if op in ("open", "create"):
            return open_flags(value)
        if op == "rename":
            return _bits(value, _RENAME_FLAGS)
        if op == "setxattr":
            return _bits(value, _XATTR_FLAGS)
        return value
    if name == "mode":
        if op == "fallocate":
            return _bits(value, _FALLOC_FLAGS)
        if op == "mkdir":
            value |= stat.S_IFDIR  # the kernel sends mkdir's permission bits only; the type is implied
        return mode_str(value)
    if name == "mask":
        return _access_mask(value)
    if name == "whence":
        return _WHENCE.get(value, value)
    if name == "times":
        return [_timespec(value[0]), _timespec(value[1])]
    if name == "dev":
        return f"{os.major(value)}:{os.minor(value)}"
    if name in ("uid", "gid") and value == -1:
        return -1
    return value


def stat_summary(st: Any) -> dict[str, Any]:
    """Compact stat: the fields people look at, never the whole structure."""
    if isinstance(st, (tuple, list)) and not isinstance(st, os.stat_result):  # (mode, size, ino, nlink, uid, gid)
        return {"mode": mode_str(st[0]), "size": st[1], "ino": st[2], "nlink": st[3], "uid": st[4], "gid": st[5]}
    if isinstance(st, dict):
        get = st.get
        return {"mode": mode_str(get("st_mode", 0)), "size": get("st_size"), "ino": get("st_ino"),
                "nlink": get("st_nlink"), "uid": get("st_uid"), "gid": get("st_gid")}
    return {"mode": mode_str(st.st_mode), "size": st.st_size, "ino": st.st_ino, "nlink": st.st_nlink,
            "uid": st.st_uid, "gid": st.st_gid}


# How a result appears in its event, by operation (decode_result; the compiled writer reads the same table):
# "stat": stat_summary; "fh": {"fh": n} (with "passthrough": backing id); "entries"/"size": {form: result};
# "statfs": the fields people look at. Any other operation's result is written as it is.
RESULT_FORMS: dict[str, str] = {
    "getattr": "stat", "lookup": "stat",
    "open": "fh", "create": "fh", "opendir": "fh", "tmpfile": "fh",
    "readdir": "entries", "readdir_with_offset": "entries", "readdirplus": "entries",
    "getxattr": "size",
    "statfs": "statfs",
}


def decode_result(op: str, result: Any) -> Any:
    """The JSON value of a result; data is reduced to its length in the hot path already."""
    if result is None:
        return None
    form = RESULT_FORMS.get(op)
    if form is None:
        return result
    if form == "stat":
        return stat_summary(result)
    if form == "fh":
        if isinstance(result, (tuple, list)):  # kernel passthrough: (fh, backing id)
            return {"fh": result[0], "passthrough": result[1]}
        return {"fh": result}
    if form == "statfs":
        return {k: result.get(k) for k in ("f_bsize", "f_blocks", "f_bfree", "f_files", "f_ffree")}
    return {form: result}


def errno_name(err: int) -> str | None:
    if not err:
        return None
    return errno_mod.errorcode.get(err, str(err))


def to_event(raw: RawEvent) -> dict[str, Any]:
    """The documented event dict (schema version SCHEMA_VERSION) for one raw capture."""
    names = ARG_NAMES.get(raw.op, ())
    path = path2 = None
    args: dict[str, Any] = {}
    for i, value in enumerate(raw.args):
        name = names[i] if i < len(names) else f"arg{i}"
        if name == "path":
            path = value
        elif name == "path2":
            path2 = value
        else:
            args[name] = decode_arg(raw.op, name, value)
    event: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "seq": raw.seq,
        "ts": raw.ts,
        "op": raw.op,
        "path": path,
        "path2": path2,
        "args": args,
        "result": None if raw.err else decode_result(raw.op, raw.result),
        "errno": errno_name(raw.err),
        "duration_ns": raw.duration_ns,
        "pid": raw.pid,
        "uid": raw.uid,
        "gid": raw.gid,
        "comm": raw.comm,
    }
    if raw.cmdline is not None:
        event["cmdline"] = raw.cmdline
    if raw.injected:
        event.update(injection_fields(raw.injected))
    return event


# The argument names decode_arg changes (every other value goes into the event as it is).
DECODED_ARGS = frozenset({"flags", "mode", "mask", "whence", "times", "dev"})
_Plan = tuple[tuple[str, Callable[[Any], Any] | None], ...]
_PLANS: dict[str, _Plan] = {}


def _plan(op: str) -> _Plan:
    plan = tuple((name, functools.partial(decode_arg, op, name) if name in DECODED_ARGS else None)
                 for name in ARG_NAMES.get(op, ()))
    _PLANS[op] = plan
    return plan


def event_of(item: tuple[Any, ...]) -> dict[str, Any]:
    """`to_event(RawEvent(*item))`, the same dict in the same order, with less work per event (the trace
    writer's loop): each operation's argument names and decoders are looked up once."""
    if len(item) != 13:
        return to_event(RawEvent(*item))
    seq, ts, op, raw_args, result, err, duration_ns, pid, uid, gid, comm, cmdline, injected = item
    plan = _PLANS.get(op)
    if plan is None:
        plan = _plan(op)
    if len(raw_args) > len(plan):  # arguments without a name (arg3...): the general way
        return to_event(RawEvent(*item))
    path = path2 = None
    args: dict[str, Any] = {}
    for (name, decode), value in zip(plan, raw_args, strict=False):
        if name == "path":
            path = value
        elif name == "path2":
            path2 = value
        else:
            args[name] = value if decode is None or value is None else decode(value)
    event: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "seq": seq,
        "ts": ts,
        "op": op,
        "path": path,
        "path2": path2,
        "args": args,
        "result": None if err or result is None else decode_result(op, result),
        "errno": errno_name(err) if err else None,
        "duration_ns": duration_ns,
        "pid": pid,
        "uid": uid,
        "gid": gid,
        "comm": comm,
    }
    if cmdline is not None:
        event["cmdline"] = cmdline
    if injected:
        event.update(injection_fields(injected))
    return event


def injection_fields(note: dict[str, int]) -> dict[str, Any]:
    """`injected` ("ENOSPC", "short" or "delay") and `delay_ns` when the call was delayed."""
    fields: dict[str, Any] = {}
    if note.get("errno"):
        fields["injected"] = errno_name(note["errno"])
    elif "short" in note:
        fields["injected"] = "short"
    else:
        fields["injected"] = "delay"
    if note.get("delay_ns"):
        fields["delay_ns"] = note["delay_ns"]
    return fields
