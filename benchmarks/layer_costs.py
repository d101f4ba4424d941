"""What the fault layer adds to one call, next to what the trace filters cost (in-process, no mount).

    python benchmarks/layer_costs.py

Each row times a million calls of a trivial `getattr` through the layer as built by the command line, and prints
the cost per call over the bare call. The FUSE context is a constant here (the real one is one ctypes call for
both the filters and rules that need the caller).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fuse_passthrough.faults import FaultInjectingOperations, parse_rule
from fuse_passthrough.tracing import EventFilter

N = 1_000_000
CTX = (0, 0, 1234)


class Bare:
    def getattr(self, path: str, fh: Any = None) -> int:
        return 0


def per_call_ns(fn: Callable[..., Any], *args: Any) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for _ in range(N):
            fn(*args)
        best = min(best, (time.perf_counter_ns() - t0) / N)
    return best


def main() -> None:
    bare = Bare()
    base = per_call_ns(bare.getattr, "/a/b/c.txt", None)
    rows: list[tuple[str, float]] = []

    def faults(*rules: str, reloadable: bool = False) -> float:
        ops = FaultInjectingOperations(Bare(), [parse_rule(r) for r in rules], reloadable=reloadable,
                                       context=lambda: CTX)
        return per_call_ns(ops.getattr, "/a/b/c.txt", None) - base

    rows.append(("fault rule on another op (getattr not wrapped)", faults("op=write,errno=EIO")))
    rows.append(("--fault-file, no rule for this op", faults(reloadable=True)))
    rows.append(("rule for this op, path glob not matching", faults("op=getattr,path=/x/*.db,errno=EIO")))
    rows.append(("rule for this op, uid not matching", faults("op=getattr,uid=1000,errno=EIO")))
    rows.append(("rule for this op, matching and counted (nth not reached)", faults("op=getattr,nth=1000000000,errno=EIO")))
    filt = EventFilter(paths=["/x/*.db"])
    rows.append(("trace filter --path '/x/*.db' (for comparison)",
                 per_call_ns(filt.accepts, "getattr", ("/a/b/c.txt", None), 0, 1234, 0, "prog")))
    filt2 = EventFilter(uids=[1000])
    rows.append(("trace filter --uid 1000 (for comparison)",
                 per_call_ns(filt2.accepts, "getattr", ("/a/b/c.txt", None), 0, 1234, 0, "prog")))
    print(f"bare call: {base:.0f} ns\n")
    print("| what | ns per call added |\n|---|---:|")
    for name, ns in rows:
        print(f"| {name} | {ns:.0f} |")


if __name__ == "__main__":
    main()
