"""Fault injection as a library: the passthrough's operations, a fault layer, the tracing layer around it.

    python examples/flaky_disk.py SOURCE MOUNTPOINT     # then: cat MOUNTPOINT/any-file; fusermount3 -u MOUNTPOINT

Every third read fails with EIO and every write is slowed by 20 ms; the trace on stderr marks each injection
and the summary counts them. The same layers go around any low-level operations object, your own filesystem too
(examples/traced_hello.py).
"""

from __future__ import annotations

import sys

from fuse_passthrough.chain import LayerChain
from fuse_passthrough.faults import FaultLayer, parse_rule
from fuse_passthrough.inode_ops import InodeOperations
from fuse_passthrough.lowlevel import binding as ll
from fuse_passthrough.tracing import StreamOutput, TraceSink, TracingLayer

RULES = ["op=read,errno=EIO,every=3", "op=write,delay=20ms"]


def main() -> int:
    source, mountpoint = sys.argv[1], sys.argv[2]
    # direct_io: every read reaches the filesystem (none is answered from the page cache)
    ops = InodeOperations(source, direct_io=True)
    faults = FaultLayer([parse_rule(r) for r in RULES])
    sink = TraceSink(StreamOutput(sys.stderr.buffer), "text")
    try:
        chain = LayerChain(ops, [TracingLayer(sink), faults])  # tracing outermost: it sees what was injected
        status = ll.LowLevelSession(chain, mountpoint, ["default_permissions"]).run()
    finally:
        sink.close()
        sink.summary.render(sys.stderr)
        faults.close()
        ops.close()
    return 0 if status >= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
