"""A traced mount whose sink holds each event until FLAG exists, for tests/tracing/test_recorded_after_reply.py.

    python held_events_mount.py SOURCE MOUNTPOINT FLAG LOG HOLD_SECONDS [--ctypes-replies]

The chain is a default traced mount's (InodeOperations and one TracingLayer: each handler is the tracing layer's
direct path, compiled where _recorder.c is built). The sink has no hot path, so each event is handed to its put(),
which waits for FLAG (at most HOLD_SECONDS; not for init and destroy) and then writes a JSON line to LOG: the
event's op and path, and whether FLAG existed by then. The replies come from the C trampolines, or with
--ctypes-replies from Python.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from fuse_passthrough.chain import LayerChain
from fuse_passthrough.inode_ops import InodeOperations
from fuse_passthrough.lowlevel import binding as ll
from fuse_passthrough.tracing.layer import TracingLayer


class HeldSink:
    def __init__(self, flag: str, log: str, hold: float) -> None:
        self.flag, self.log, self.hold = flag, log, hold

    def put(self, raw: tuple[Any, ...]) -> None:
        op, args = raw[2], raw[3]
        deadline = time.monotonic() + (self.hold if op not in ("init", "destroy") else 0)  # INIT: the mount's start
        while not os.path.exists(self.flag) and time.monotonic() < deadline:
            time.sleep(0.01)
        line = {"op": op, "path": args[0] if args else None, "flag": os.path.exists(self.flag)}
        with open(self.log, "a") as f:
            f.write(json.dumps(line) + "\n")


def main(argv: list[str]) -> int:
    source, mountpoint, flag, log, hold = argv[:5]
    ops = InodeOperations(source)
    layer = TracingLayer(HeldSink(flag, log, float(hold)))
    session = ll.LowLevelSession(LayerChain(ops, [layer]), mountpoint, ["fsname=held", "subtype=held"],
                                 trampolines="--ctypes-replies" not in argv)
    try:
        ret = session.run()
    finally:
        layer.close()
        ops.close()
    return 0 if ret >= 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
