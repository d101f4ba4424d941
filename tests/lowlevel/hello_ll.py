"""A hello-world file system (read-only but for /sink) on the low-level binding, mounted by
tests/lowlevel/test_session.py.

    python hello_ll.py MOUNTPOINT DATAFILE STATUSFILE [--single-threaded] [--plus] [--passthrough]
                       [--ctypes-replies] [--clone-fd] [--max-threads=N] [--park-us=N]

    /hello  "Hello World!\\n" (fuse_reply_buf)
    /data   DATAFILE's contents, replied from its fd (fuse_reply_data with a struct fuse_bufvec)
    /pt     DATAFILE again; with --passthrough and a kernel offering it, opened with a backing id
            (fuse_passthrough_open), so the kernel reads it without asking the daemon
    /boom   getattr raises RuntimeError: the binding replies EIO
    /slow   as /hello, not listed, but its getattr takes SLOW seconds (a request blocked outside Python)
    /sink   not listed, writable, read directly (direct_io): a read tells what the last write handed its handler
            (the type, a copy of the data, and whether the object it got still gives the data after the call)
STATUSFILE gets a JSON line at init (library version, conn fields, whether the session's /dev/fuse fd is
non-blocking: its workers wait in poll) and one at destroy (request counts, how often a worker parked).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import sys
import threading
import time
from collections import Counter
from typing import Any

from fuse_passthrough.lowlevel import binding as ll

HELLO = b"Hello World!\n"
ROOT, HELLO_INO, DATA_INO, PT_INO, BOOM_INO, SLOW_INO, SINK_INO = 1, 2, 3, 4, 5, 6, 7
NAMES = {b"hello": HELLO_INO, b"data": DATA_INO, b"pt": PT_INO, b"boom": BOOM_INO}  # listed
SLOW = 3.0


class Hello:
    def __init__(self, data_path: str, status_path: str, passthrough: bool) -> None:
        self.data_path, self.status_path, self.want_passthrough = data_path, status_path, passthrough
        self.data_size = os.stat(data_path).st_size
        self.passthrough = False
        self.trampolines = False  # set by main from the session
        self.counts: Counter[str] = Counter()
        self.threads: set[int] = set()
        self.lock = threading.Lock()
        self.backing: dict[int, int] = {}  # fh -> backing id
        self.session: ll.LowLevelSession | None = None  # set by main
        self.kept: memoryview | None = None  # /sink: the last write's data, as handed to write()
        self.sunk = b""  # /sink: a copy of it

    def _count(self, op: str) -> None:
        with self.lock:
            self.counts[op] += 1
            self.threads.add(threading.get_ident())

    def _status(self, **fields: Any) -> None:
        with open(self.status_path, "a") as f:
            f.write(json.dumps(fields) + "\n")

    def _attr(self, ino: int) -> ll.Stat:
        st = ll.Stat()
        st.st_ino = ino
        if ino == ROOT:
            st.st_mode, st.st_nlink = stat.S_IFDIR | 0o755, 2
        elif ino in (HELLO_INO, DATA_INO, PT_INO, SLOW_INO):
            st.st_mode, st.st_nlink = stat.S_IFREG | 0o444, 1
            st.st_size = len(HELLO) if ino in (HELLO_INO, SLOW_INO) else self.data_size
        elif ino == SINK_INO:
            st.st_mode, st.st_nlink = stat.S_IFREG | 0o666, 1
        elif ino == BOOM_INO:
            raise RuntimeError("boom")
        else:
            raise OSError(errno.ENOENT, "no such inode")
        st.st_mtim.tv_sec = 1_700_000_000
        return st

    def init(self, conn: Any) -> None:
        fields = {"version": list(ll.VERSION), "supports_passthrough": ll.supports_passthrough,
                  "proto": [conn.proto_major, conn.proto_minor], "capable": conn.capable, "want": conn.want,
                  "max_write": conn.max_write, "time_gran": conn.time_gran}
        if ll.VERSION >= (3, 17, 0):
            fields["capable_ext"] = conn.capable_ext
            if self.want_passthrough and conn.capable_ext & ll.FUSE_CAP_PASSTHROUGH:
                conn.want_ext |= ll.FUSE_CAP_PASSTHROUGH
                conn.max_backing_stack_depth = ll.FUSE_BACKING_STACKED_UNDER
                self.passthrough = True
        conn.max_readahead = 64 * 1024
        fields["passthrough"] = self.passthrough
        fields["trampolines"] = self.trampolines
        if self.session is not None:
            fields["nonblocking"] = bool(fcntl.fcntl(self.session.fd, fcntl.F_GETFL) & os.O_NONBLOCK)
        self._status(event="init", **fields)

    def destroy(self) -> None:
        parks = self.session.parks() if self.session is not None else 0
        self._status(event="destroy", counts=dict(self.counts), threads=len(self.threads), parks=parks)

    def lookup(self, req: int, parent: int, name: bytes) -> ll.EntryParam:
        self._count("lookup")
        if parent == ROOT and name in (b"slow", b"sink"):
            ino = SLOW_INO if name == b"slow" else SINK_INO
            return ll.entry_param(ino, self._attr(ino), 0.0, 0.0)
        if parent != ROOT or name not in NAMES:
            raise OSError(errno.ENOENT, "no such file")
        ino = NAMES[name]
        return ll.entry_param(ino, self._attr(ino) if ino != BOOM_INO else self._attr(HELLO_INO), 0.0, 0.0)

    def getattr(self, req: int, ino: int, fi: Any) -> tuple[ll.Stat, float]:
        self._count("getattr")
        if ino == SLOW_INO:
            time.sleep(SLOW)
        return self._attr(ino), 0.0

    def readdir(self, req: int, ino: int, size: int, off: int, fi: Any) -> ll.DirBuffer:
        self._count("readdir")
        if ino != ROOT:
            raise OSError(errno.ENOTDIR, "not a directory")
        entries = [(b".", ROOT), (b"..", ROOT), *NAMES.items()]
        buf = ll.DirBuffer(req, size)
        st = ll.Stat()
        for i in range(off, len(entries)):
            name, child = entries[i]
            st.st_ino, st.st_mode = child, stat.S_IFDIR if child == ROOT else stat.S_IFREG
            if not buf.add(name, st, i + 1):
                break
        return buf

    def readdirplus(self, req: int, ino: int, size: int, off: int, fi: Any) -> ll.DirBuffer:
        self._count("readdirplus")
        entries = [(b".", ROOT), (b"..", ROOT), *((n, i) for n, i in NAMES.items() if i != BOOM_INO)]
        buf = ll.DirBuffer(req, size)
        for i in range(off, len(entries)):
            name, child = entries[i]
            e = ll.entry_param(child, self._attr(child), 0.0, 0.0)
            if name in (b".", b".."):
                e.ino = 0  # no lookup count for these (as passthrough_ll)
            if not buf.add_plus(name, e, i + 1):
                break
        return buf

    def open(self, req: int, ino: int, fi: Any) -> None:
        self._count("open")
        if ino == SINK_INO:
            fi.direct_io = 1
            return
        if fi.flags & os.O_ACCMODE != os.O_RDONLY:
            raise OSError(errno.EACCES, "read-only")
        if ino in (DATA_INO, PT_INO):
            fd = os.open(self.data_path, os.O_RDONLY)
            fi.fh = fd
            if ino == PT_INO and self.passthrough:
                try:
                    fi.backing_id = self.backing[fd] = ll.passthrough_open(req, fd)
                except OSError:
                    os.close(fd)
                    raise
        elif ino != HELLO_INO:
            raise OSError(errno.EISDIR if ino == ROOT else errno.ENOENT, "cannot open")

    def read(self, req: int, ino: int, size: int, off: int, fi: Any) -> bytes | ll.FdData:
        self._count(f"read_{ino}")
        if ino == HELLO_INO:
            return HELLO[off:off + size]
        if ino == SINK_INO:
            try:
                after = repr(bytes(self.kept)) if self.kept is not None else "nothing written"
            except ValueError:  # a released memoryview
                after = "released"
            return f"{type(self.kept).__name__} {self.sunk!r} {after}".encode()[off:off + size]
        return ll.FdData(fi.fh, size, off)

    def write(self, req: int, ino: int, data: memoryview, off: int, fi: Any) -> int:
        self._count("write")
        if ino != SINK_INO:
            raise OSError(errno.EBADF, "read-only")
        self.kept, self.sunk = data, bytes(data)  # kept past the call, as a handler must not
        return len(data)

    def release(self, req: int, ino: int, fi: Any) -> None:
        self._count("release")
        if ino in (DATA_INO, PT_INO):
            backing_id = self.backing.pop(fi.fh, None)
            if backing_id is not None:
                ll.passthrough_close(req, backing_id)
            os.close(fi.fh)

    def statfs(self, req: int, ino: int) -> ll.StatVfs:
        sv = ll.StatVfs()
        sv.f_bsize, sv.f_namemax, sv.f_blocks, sv.f_files = 4096, 255, 1000, 5
        return sv

    def getxattr(self, req: int, ino: int, name: bytes, size: int) -> bytes:
        if ino == HELLO_INO and name == b"user.greeting":
            return b"hi"
        raise OSError(errno.ENODATA, "no attribute")

    def listxattr(self, req: int, ino: int, size: int) -> bytes:
        return b"user.greeting\0" if ino == HELLO_INO else b""


def main(argv: list[str]) -> int:
    mountpoint, data, status = argv[:3]
    flags = set(argv[3:])
    fs = Hello(data, status, "--passthrough" in flags)
    if "--plus" not in flags:
        fs.readdirplus = None  # type: ignore[assignment,method-assign]
    session = ll.LowLevelSession(fs, mountpoint, ["fsname=hello_ll", "subtype=hello_ll"],
                                 trampolines=False if "--ctypes-replies" in flags else None)
    fs.trampolines = session.trampolines
    fs.session = session
    numbers = dict(f[2:].split("=") for f in flags if "=" in f)
    ret = session.run(single_threaded="--single-threaded" in flags, max_threads=int(numbers.get("max-threads", 10)),
                      park_us=int(numbers.get("park-us", 0)), clone_fd="--clone-fd" in flags)
    return 0 if ret >= 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
