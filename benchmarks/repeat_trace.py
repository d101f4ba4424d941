#!/usr/bin/env python3
"""A multi-GB trace made of a real one: the recorded trace repeated under distinct checkout roots.

    fuse-passthrough trace -o timeout=0 --format jsonl --output real.jsonl -- sh workload.sh
    python benchmarks/repeat_trace.py real.jsonl big.jsonl --times 10      # .gz / .zst: compressed

Each copy's paths are put under a root of its own (as a CI machine running the same job in N checkouts would
record), its seqs continue the previous copy's and its times follow it, so the paths, processes and findings grow
with the trace as they would, and the lines keep the real trace's shape (its operations, runs and errors).
"""

from __future__ import annotations

import argparse
import json
import sys

from fuse_passthrough.tracing.formats import format_jsonl_bytes
from fuse_passthrough.tracing.sinks import RotatingFile

ROOT = "/home/runner/work/some-organisation/some-project/checkout-{:03d}"
BATCH = 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a JSONL trace (plain)")
    p.add_argument("output", help="the trace to write (.gz or .zst: compressed as the writer does)")
    p.add_argument("--times", type=int, default=10, help="copies of the source (default 10)")
    a = p.parse_args(argv)
    with open(a.source, "rb") as f:
        events = [json.loads(line) for line in f if line.strip()]
    first = min(e["ts"] for e in events)
    span = max(e["ts"] + e["duration_ns"] / 1e9 for e in events) - first
    last_seq = max(e.get("seq") or 0 for e in events)
    out = RotatingFile(a.output)
    batch: list[bytes] = []
    for k in range(a.times):
        root = ROOT.format(k)
        for e in events:
            e = dict(e)
            for name in ("path", "path2"):
                if isinstance(e.get(name), str):
                    e[name] = root + e[name]
            if isinstance(e.get("seq"), int):
                e["seq"] += k * last_seq
            e["ts"] = round(e["ts"] + k * span, 7)
            batch.append(format_jsonl_bytes(e))
            if len(batch) == BATCH:
                out.write_lines(batch)
                out.flush()
                batch = []
    out.write_lines(batch)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
