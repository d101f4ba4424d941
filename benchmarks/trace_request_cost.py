#!/usr/bin/env python3
"""Wall time and CPU per request, traced against untraced, on a real mount: the tracing's cost in place.

    python benchmarks/trace_request_cost.py [--n 20000] [--rounds 5] [--targets ours_notrace,ours_trace]

Each round mounts every target in turn (order rotated) with `-o timeout=0` and runs two loops on it: `fstat`
of an open file N times (one GETATTR each), and N/4 times create+write+close+unlink of a small file (LOOKUP,
CREATE, WRITE, FLUSH, RELEASE, UNLINK...). It reports, per loop and target, the medians of wall µs per call,
the daemon's CPU µs per request (user+system, all threads, from /proc) and the trace writer's, with requests
counted from the traced target's trace. FPT_BENCH_BASE=DIR adds base_notrace/base_trace (targets.py): before
and after in the same rounds. Unmounts what it mounts; signals only its own daemons.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import rm_tree, scratch  # noqa: E402
from targets import Mounted, _children, _cpu, all_targets, check_targets, ours_env, stop_all  # noqa: E402


def loop_fstat(mnt: Path, n: int) -> int:
    fd = os.open(mnt / "f", os.O_RDONLY)
    try:
        for _ in range(n):
            os.fstat(fd)
    finally:
        os.close(fd)
    return n


def loop_files(mnt: Path, n: int) -> int:
    data = b"x" * 100
    for i in range(n // 4):
        p = mnt / f"g{i}"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.close(fd)
        os.unlink(p)
    return n // 4


LOOPS = {"fstat": loop_fstat, "create+unlink": loop_files}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--targets", default="ours_notrace,ours_trace")
    a = p.parse_args()
    targets = [all_targets()[t] for t in a.targets.split(",")]
    work, src, mnt = scratch("fptrc-")
    # target -> loop -> [(wall us/call, daemon us/request, writer us/request, requests)]
    res: dict[str, dict[str, list[tuple[float, float, float, int]]]] = {}
    try:
        check_targets(targets, work / "bin")
        for rnd in range(a.rounds):
            k = rnd % len(targets)
            for t in targets[k:] + targets[:k]:
                for name, loop in LOOPS.items():
                    trace = work / "t.jsonl"
                    cmd = [sys.executable, "-m", "fuse_passthrough", *t.args, "-o", "timeout=0"]
                    if t.trace:
                        cmd += ["--format", "jsonl", "--output", str(trace), "--no-summary"]
                    m = Mounted(t.name, [*cmd, str(src), str(mnt)], mnt, work / "daemon.log", ours_env(t))
                    m.start()
                    try:
                        assert m.proc is not None
                        d0 = _cpu(m.proc.pid) or 0.0
                        w0 = sum(_cpu(c) or 0.0 for c in _children(m.proc.pid))
                        t0 = time.perf_counter()
                        calls = loop(mnt, a.n)
                        wall = time.perf_counter() - t0
                        cpu = m.cpu_seconds() or (0.0, 0.0)
                        d, w = cpu[0] - d0, cpu[1] - w0
                    finally:
                        m.stop()
                    requests = 0
                    if trace.exists():
                        with open(trace, "rb") as f:
                            requests = sum(1 for _ in f)
                        trace.unlink()
                    res.setdefault(t.name, {}).setdefault(name, []).append((wall / calls * 1e6, d, w, requests))
            print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr)
    finally:
        stop_all()
        rm_tree(work)
    # requests per loop: from a traced target (the untraced ones serve the same requests)
    reqs = {name: statistics.median(r[3] for t in res.values() for r in t[name] if r[3]) for name in LOOPS
            if any(r[3] for t in res.values() for r in t[name])}
    print("| loop | target | wall µs/call | daemon CPU µs/request | writer CPU µs/request | requests |")
    print("|---|---|---:|---:|---:|---:|")
    for name in LOOPS:
        n_req = reqs.get(name) or 1
        for t, per in res.items():
            rs = per[name]
            print(f"| {name} | {t} | {statistics.median(r[0] for r in rs):.1f} | "
                  f"{statistics.median(r[1] for r in rs) / n_req * 1e6:.1f} | "
                  f"{statistics.median(r[2] for r in rs) / n_req * 1e6:.1f} | {n_req:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
