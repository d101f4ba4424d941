"""Fault injection as a library: the passthrough, a fault layer around it, the tracing layer around that.

    python examples/flaky_disk.py SOURCE MOUNTPOINT     # then: cat MOUNTPOINT/any-file; fusermount3 -u MOUNTPOINT

Every third read fails with EIO and every write is slowed by 20 ms; the trace on stderr marks each injection
and the summary counts them. The same layers wrap any mfusepy Operations object, your own filesystem too.
"""

from __future__ import annotations

import sys

from fuse_passthrough import binding
from fuse_passthrough.faults import FaultInjectingOperations, parse_rule
from fuse_passthrough.passthrough import Passthrough
from fuse_passthrough.tracing import StreamOutput, TraceSink, TracingOperations

RULES = ["op=read,errno=EIO,every=3", "op=write,delay=20ms"]


def main() -> int:
    source, mountpoint = sys.argv[1], sys.argv[2]
    faults = FaultInjectingOperations(Passthrough(source), [parse_rule(r) for r in RULES])
    sink = TraceSink(StreamOutput(sys.stderr.buffer), "text")
    try:
        # direct_io: every read reaches the filesystem (none is answered from the page cache)
        binding.mount(TracingOperations(faults, sink), mountpoint, config={"direct_io": True})
    finally:
        sink.close()
        sink.summary.render(sys.stderr)
        faults.close()
        faults.inner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
