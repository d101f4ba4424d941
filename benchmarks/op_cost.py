#!/usr/bin/env python3
"""In-process cost of the inode operations on the small-files paths, next to the system calls they make.

    python benchmarks/op_cost.py [--files 3000] [--rounds 3] [--dir DIR]

Calls `InodeOperations` handlers directly (no mount, no layer, no libfuse) on a SOURCE in DIR (default: a new
directory in /tmp; a tmpfs shows the daemon's own cost): per file, the requests a create + write + close sends
(LOOKUP of the absent name, CREATE, GETXATTR("security.capability"), WRITE, RELEASE), then GETATTR, then UNLINK
and FORGET. The caller is this process (its ids: no credential switch). Then the bare system calls those handlers
make, timed alone. Medians over the rounds, µs per call. What the mount adds on top (the kernel's round trip,
libfuse, the wakeups) is in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from fuse_passthrough import inode_ops
from fuse_passthrough.lowlevel import binding as ll

REQ = 1  # any non-zero request: the caller below answers for it


class FileInfo:
    """What the handlers read and set on a fuse_file_info."""

    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.fh = 0
        self.noflush = self.keep_cache = self.direct_io = self.backing_id = self.parallel_direct_writes = 0
        self.cache_readdir = self.nonseekable = 0


def handlers(source: str, n: int) -> dict[str, float]:
    """µs per call of each handler over `n` files."""
    ops = inode_ops.InodeOperations(source)
    spent: dict[str, int] = {}

    def timed(op: str, fn: Callable[..., Any], *args: Any, absent: bool = False) -> Any:
        """fn(*args), timed; with `absent` it must fail as for a name or attribute that is not there."""
        t0 = time.perf_counter_ns()
        try:
            result = fn(*args)
        except (OSError, ll.NegativeEntry) as e:
            if not absent or isinstance(e, OSError) and e.errno not in (errno.ENOENT, errno.ENODATA):
                raise
            result = None
        spent[op] = spent.get(op, 0) + time.perf_counter_ns() - t0
        return result

    try:
        parent = ops.mkdir(REQ, 1, b"d", 0o755).ino
        payload = b"x" * 1024
        inos = []
        for i in range(n):
            name = b"f%06d" % i
            timed("lookup (absent)", ops.lookup, REQ, parent, name, absent=True)
            fi = FileInfo(os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            ino = timed("create", ops.create, REQ, parent, name, 0o100644, fi).ino
            inos.append(ino)
            timed("getxattr (absent)", ops.getxattr, REQ, ino, b"security.capability", 0, absent=True)
            timed("write 1 KiB", ops.write, REQ, ino, payload, 0, fi)
            timed("release", ops.release, REQ, ino, fi)
        for ino in inos:
            timed("getattr", ops.getattr, REQ, ino, None)
        for i, ino in enumerate(inos):
            timed("unlink", ops.unlink, REQ, parent, b"f%06d" % i)
            timed("forget", ops.forget, REQ, ino, 1)
        ops.rmdir(REQ, 1, b"d")
        ops.forget(REQ, parent, 1)
    finally:
        ops.close()
    return {op: ns / n / 1000 for op, ns in spent.items()}


def syscalls(source: str, n: int) -> dict[str, float]:
    """µs per call of the system calls behind those handlers, alone."""
    out: dict[str, float] = {}
    d = os.path.join(source, "sys")
    os.mkdir(d)
    dfd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    proc_fds = os.open("/proc/self/fd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    names = [f"f{i}" for i in range(n)]
    fds: list[int] = []
    paths: list[int] = []

    def timed(label: str, each: Callable[[], object]) -> None:
        t0 = time.perf_counter_ns()
        each()
        out[label] = (time.perf_counter_ns() - t0) / n / 1000

    def getxattr(target: str | int) -> None:
        try:
            os.getxattr(target, b"security.capability")
        except OSError as e:
            assert e.errno == errno.ENODATA

    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        timed("openat(O_CREAT|O_EXCL)", lambda: fds.extend(os.open(nm, flags, 0o644, dir_fd=dfd) for nm in names))
        timed("fstat", lambda: [os.fstat(fd) for fd in fds])
        timed("open(/proc/self/fd/N, O_PATH)", lambda: paths.extend(
            os.open(f"/proc/self/fd/{fd}", os.O_PATH | os.O_CLOEXEC) for fd in fds))
        timed("openat(/proc/self/fd dir, N, O_PATH) + close", lambda: [
            os.close(os.open(str(fd), os.O_PATH | os.O_CLOEXEC, dir_fd=proc_fds)) for fd in fds])
        timed("getxattr(/proc/self/fd/N)", lambda: [getxattr(f"/proc/self/fd/{fd}") for fd in paths])
        timed("fgetxattr(open fd)", lambda: [getxattr(fd) for fd in fds])
        timed("pwrite 1 KiB", lambda: [os.pwrite(fd, b"x" * 1024, 0) for fd in fds])
        timed("unlinkat", lambda: [os.unlink(nm, dir_fd=dfd) for nm in names])
    finally:
        for fd in fds + paths + [dfd, proc_fds]:
            os.close(fd)
        shutil.rmtree(d)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", default=None, help="where SOURCE is made (default: a new directory in /tmp)")
    a = p.parse_args()
    me = (os.getuid(), os.getgid(), os.getpid(), 0o022)
    inode_ops.ll.caller = lambda req: me  # no request behind these calls
    inode_ops.ll.req_groups = lambda req: None
    with tempfile.TemporaryDirectory(dir=a.dir) as source:
        rounds = [handlers(source, a.files) for _ in range(a.rounds)]
        bare = [syscalls(source, a.files) for _ in range(a.rounds)]
    print(f"handlers, {a.files} files, median of {a.rounds} rounds, µs per call:")
    for op in rounds[0]:
        print(f"  {op:48s} {statistics.median(r[op] for r in rounds):6.2f}")
    print("system calls alone, µs per call:")
    for label in bare[0]:
        print(f"  {label:48s} {statistics.median(r[label] for r in bare):6.2f}")


if __name__ == "__main__":
    main()
