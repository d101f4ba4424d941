"""Tracing your own filesystem: its low-level handlers through a LayerChain with the TracingLayer.

    python examples/traced_hello.py MOUNTPOINT        # then: cat MOUNTPOINT/hello; fusermount3 -u MOUNTPOINT

A read-only filesystem with one file, on libfuse's low-level API (src/fuse_passthrough/lowlevel): handlers take
node ids and return their reply's value or raise OSError; the binding replies. Every operation the kernel sends
it is printed to stderr as text and summarised at unmount, exactly as for the passthrough. `nodes` gives the
trace its paths.
"""

from __future__ import annotations

import errno
import stat
import sys
import time
from typing import Any

from fuse_passthrough.chain import LayerChain
from fuse_passthrough.lowlevel import binding as ll
from fuse_passthrough.tracing import StreamOutput, TraceSink, TracingLayer

CONTENT = b"Hello from a traced filesystem!\n"
ROOT, HELLO = 1, 2


class Names:
    """Paths for the trace: node id (and a name in it) -> path."""

    def path(self, ino: int, name: bytes | None = None) -> str | None:
        base = {ROOT: "", HELLO: "/hello"}.get(ino)
        if base is None:
            return None
        return f"{base}/{name.decode()}" if name is not None else base or "/"


class Hello:
    nodes = Names()

    def __init__(self) -> None:
        self.now = time.time_ns()

    def _attr(self, ino: int) -> ll.Stat:
        st = ll.Stat()
        st.st_ino = ino
        if ino == ROOT:
            st.st_mode, st.st_nlink = stat.S_IFDIR | 0o755, 2
        elif ino == HELLO:
            st.st_mode, st.st_nlink, st.st_size = stat.S_IFREG | 0o444, 1, len(CONTENT)
        else:
            raise OSError(errno.ENOENT, "no such node")
        st.st_mtim.tv_sec = st.st_ctim.tv_sec = st.st_atim.tv_sec = self.now // 10**9
        return st

    def lookup(self, req: int, parent: int, name: bytes) -> ll.EntryParam:
        if parent != ROOT or name != b"hello":
            raise OSError(errno.ENOENT, "no such file")
        return ll.entry_param(HELLO, self._attr(HELLO), 1.0, 1.0)

    def getattr(self, req: int, ino: int, fi: Any) -> tuple[ll.Stat, float]:
        return self._attr(ino), 1.0

    def readdir(self, req: int, ino: int, size: int, off: int, fi: Any) -> ll.DirBuffer:
        entries = [(b".", ROOT, stat.S_IFDIR), (b"..", ROOT, stat.S_IFDIR), (b"hello", HELLO, stat.S_IFREG)]
        buf = ll.DirBuffer(req, size)
        st = ll.Stat()
        for i in range(off, len(entries)):
            name, st.st_ino, st.st_mode = entries[i]
            if not buf.add(name, st, i + 1):
                break
        return buf

    def open(self, req: int, ino: int, fi: Any) -> None:
        if ino != HELLO:
            raise OSError(errno.EISDIR, "not a file")

    def read(self, req: int, ino: int, size: int, off: int, fi: Any) -> bytes:
        return CONTENT[off:off + size]


def main() -> int:
    sink = TraceSink(StreamOutput(sys.stderr.buffer), "text")
    try:
        chain = LayerChain(Hello(), [TracingLayer(sink)])
        status = ll.LowLevelSession(chain, sys.argv[1], ["ro", "fsname=hello", "subtype=hello"]).run()
    finally:
        sink.close()
        sink.summary.render(sys.stderr)
    return 0 if status >= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
