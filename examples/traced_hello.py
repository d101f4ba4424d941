"""Tracing your own filesystem: wrap any mfusepy Operations object with TracingOperations.

    python examples/traced_hello.py MOUNTPOINT        # then: cat MOUNTPOINT/hello; fusermount3 -u MOUNTPOINT

A read-only filesystem with one file. Every operation the kernel sends it is printed to stderr as text and
summarised at unmount, exactly as for the passthrough.
"""

from __future__ import annotations

import errno
import stat
import sys
import time

from fuse_passthrough import binding  # loads libfuse3 through mfusepy
from fuse_passthrough.tracing import StreamOutput, TraceSink, TracingOperations

CONTENT = b"Hello from a traced filesystem!\n"


class Hello(binding.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self) -> None:
        self.now = time.time_ns()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        common = {"st_atime": self.now, "st_mtime": self.now, "st_ctime": self.now, "st_uid": 0, "st_gid": 0}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_ino": 1, **common}
        if path == "/hello":
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": len(CONTENT), "st_ino": 2,
                    **common}
        raise binding.FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", "hello"]

    def open(self, path: str, flags: int) -> int:
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return CONTENT[offset:offset + size]


def main() -> int:
    sink = TraceSink(StreamOutput(sys.stderr.buffer), "text")
    try:
        binding.mount(TracingOperations(Hello(), sink), sys.argv[1], options={"ro": True, "fsname": "hello"})
    finally:
        sink.close()
        sink.summary.render(sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
