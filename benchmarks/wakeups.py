#!/usr/bin/env python3
"""One client's request latency, and where it goes: the same CPU as the daemon's worker, or another.

    python benchmarks/wakeups.py [--n 20000] [--rounds 3]
        [--targets passthrough_ll_xattr,ours_notrace_mt1,ours_notrace_mt2,ours_notrace_mt3,ours_trace]

A single client calls getxattr("user.absent") N times on a file of the mount (ENODATA: every call is one
request, answered without touching the data). Per target and round it reports the median, 10th and 90th
percentile of the wall time per call; the share of calls under `fast`, twice the median of the same loop run
with the client and every daemon thread pinned to one CPU (the request and the reply then switch between two
threads on that CPU, no wake-up of another CPU); and the daemon's voluntary context switches per request (a
worker that goes to sleep on /dev/fuse or on Python's interpreter lock).

Why: on a VM whose idle CPUs halt, waking a thread on another CPU costs tens of microseconds, several times the
work of a request, and a single client's latency is bimodal: the scheduler places the woken worker (and then
the woken client) either on the waker's CPU or on the idle one. Which one depends on the worker threads'
history (libfuse wakes the worker that has waited longest), so rows of `bench.py` move with it between runs
and machines (docs/benchmarks.md, 2026-12-06 12:00). Medians over the rounds; nothing is asserted.
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
from targets import Session, all_targets, check_targets, stop_all  # noqa: E402

DEFAULT_TARGETS = "passthrough_ll_xattr,ours_notrace_mt1,ours_notrace_mt2,ours_notrace_mt3,ours_trace"


def daemon_tids(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def voluntary_switches(pid: int) -> int:
    total = 0
    for tid in daemon_tids(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except FileNotFoundError:  # a worker that ended meanwhile
            pass
    return total


def pin(pid: int | None, cpus: set[int]) -> None:
    """Pin this process and, where given, every thread of the daemon (new threads inherit their creator's)."""
    os.sched_setaffinity(0, cpus)
    if pid is not None:
        for tid in daemon_tids(pid):
            try:
                os.sched_setaffinity(tid, cpus)
            except ProcessLookupError:
                pass


def calls(path: Path, n: int) -> list[int]:
    """Nanoseconds of each of n getxattr calls."""
    target = str(path)
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        t0 = clock()
        try:
            os.getxattr(target, "user.absent")
        except OSError:
            pass
        out.append(clock() - t0)
    return out


def measure(session: Session, n: int, one_cpu: bool) -> tuple[list[int], float]:
    """(latencies, daemon voluntary switches per call) of one loop on a mounted session."""
    pid = session.mounted.proc.pid if session.mounted and session.mounted.proc else None
    everywhere = os.sched_getaffinity(0)
    if one_cpu:
        pin(pid, {min(everywhere)})
    try:
        f = session.root / "f"
        calls(f, min(n, 2000))  # warm: the workers exist, the caches are filled
        s0 = voluntary_switches(pid) if pid else 0
        lat = calls(f, n)
        s1 = voluntary_switches(pid) if pid else 0
    finally:
        if one_cpu:
            pin(pid, everywhere)
    return lat, (s1 - s0) / n


def percentile(values: list[int], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] / 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--targets", default=DEFAULT_TARGETS)
    a = p.parse_args()
    targets = [all_targets()[t] for t in a.targets.split(",")]
    work, src, mnt = scratch("fptwake-")
    rows: dict[str, list[tuple[float, float, float, float, float, float]]] = {}
    try:
        check_targets(targets, work / "bin")
        targets = [t for t in targets if t.status == "ok"]
        for rnd in range(a.rounds):
            k = rnd % len(targets)
            for t in targets[k:] + targets[:k]:
                with Session(t, src, mnt, work) as s:
                    free, switches = measure(s, a.n, one_cpu=False)  # first: pinning moves the threads
                    pinned, _ = measure(s, a.n, one_cpu=True)
                fast = 2 * statistics.median(pinned)
                rows.setdefault(t.name, []).append((
                    statistics.median(pinned) / 1000, statistics.median(free) / 1000, percentile(free, 0.1),
                    percentile(free, 0.9), sum(x < fast for x in free) / len(free), switches))
            print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr)
    finally:
        stop_all()
        rm_tree(work)
    print("| target | one CPU µs | µs/call | p10 | p90 | calls under 2× one CPU | daemon sleeps/call |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rs in rows.items():
        m = [statistics.median(r[i] for r in rs) for i in range(6)]
        print(f"| {name} | {m[0]:.1f} | {m[1]:.1f} | {m[2]:.1f} | {m[3]:.1f} | {m[4]:.0%} | {m[5]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
