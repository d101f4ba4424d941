#!/usr/bin/env python3
"""Benchmark fuse-passthrough against the native filesystem and other FUSE passthroughs, in one run.

    python benchmarks/bench.py                 # 3 rounds, 1 GiB, 10,000 files: every target, every workload
    python benchmarks/bench.py --smoke         # tiny sizes, 1 round: exercises every code path in seconds
    python benchmarks/bench.py --targets native,ours_notrace,ours_notrace_st --workloads small_files
    python benchmarks/bench.py --memory 1000000   # the inode core's daemon RSS after N files looked up (memory.py)
    python benchmarks/bench.py --cpus 0        # every process on CPU 0: the daemons' own cost, without placement

Targets are measured interleaved: in each round every workload runs on every target before the next workload
(the target order rotates between rounds), so a slow phase of the machine hits all targets alike. Every
workload gets a fresh mount; medians over the rounds are reported with ratios against the native filesystem,
libfuse's C passthrough_ll, loggedfs, and (for tracing) our own untraced mount. Results go to
benchmarks/results/latest.{json,md} (--smoke: benchmarks/work/smoke.{json,md}) unless --results-dir is given.

Every mount is unmounted in a `finally` (fusermount3 -u, retried, then -z as the last resort) and its daemon
waited for; only processes this script started are ever signalled. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The parts: targets.py (what is measured, and its mounts), workloads.py (what it is measured with),
# runner.py (the interleaved rounds), reporting.py (medians, ratios, the results files and tables).
from common import HERE, GiB, MiB, log, parse_size, rm_tree
from reporting import render_markdown, summarize, write_results
from runner import run_all
from targets import DEFAULT_TARGETS, all_targets, check_targets, stop_all
from workloads import WORKLOADS, Config, make_repo, make_tarball


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=None, help="rounds per target and workload (default 3; smoke 1)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round: exercise every path quickly")
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                   help=f"comma-separated (default: {','.join(DEFAULT_TARGETS)}; also: "
                   f"{','.join(t for t in all_targets() if t not in DEFAULT_TARGETS)})")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated of {','.join(WORKLOADS)}")
    p.add_argument("--size", type=parse_size, default=None, help="sequential file size (default 1G; smoke 8M)")
    p.add_argument("--files", type=int, default=None, help="small files (default 10000; smoke 200)")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="where NAME.json and NAME.md go (default benchmarks/results; smoke: benchmarks/work)")
    p.add_argument("--name", default=None, help="results file base name (default latest; smoke: smoke)")
    p.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a new one in /tmp)")
    p.add_argument("--keep-workdir", action="store_true", help="do not delete the scratch directory")
    p.add_argument("--memory", type=int, default=None, metavar="N",
                   help="only measure the inode core's daemon RSS after N files looked up (memory.py)")
    p.add_argument("--cpus", default=None, metavar="LIST",
                   help="run this script, its clients and every daemon on these CPUs only (e.g. 0; inherited "
                        "affinity): on a VM where waking an idle CPU is slow, where each process lands decides "
                        "a single client's speed more than the daemon's work does (docs/benchmarks.md)")
    p.add_argument("--settle", type=float, default=0.0, metavar="S",
                   help="sleep S seconds before each timed phase (default 0): on a VM where waking an idle CPU is "
                        "slow, a client that has just been busy is woken on a CPU of its own, one that has slept on "
                        "its daemon's, and a short phase's time depends on which (docs/benchmarks.md, 2026-12-07 "
                        "09:40)")
    a = p.parse_args(argv)
    if a.settle < 0:
        p.error("--settle must be >= 0")
    if a.cpus is not None:
        try:
            a.cpu_set = tuple(sorted({int(c) for c in a.cpus.split(",") if c.strip()}))
        except ValueError:
            p.error(f"--cpus: {a.cpus!r} is not a comma-separated list of CPU numbers")
        if not a.cpu_set or not set(a.cpu_set) <= os.sched_getaffinity(0):
            p.error(f"--cpus: {a.cpus!r} is not a subset of the CPUs this process may use "
                    f"({','.join(map(str, sorted(os.sched_getaffinity(0))))})")
    else:
        a.cpu_set = None
    known = all_targets()
    a.target_list = [t for t in a.targets.split(",") if t]
    bad = [t for t in a.target_list if t not in known]
    if bad:
        p.error(f"unknown target(s) {','.join(bad)}; known: {','.join(known)}")
    a.workload_list = [w for w in a.workloads.split(",") if w]
    bad = [w for w in a.workload_list if w not in WORKLOADS]
    if bad:
        p.error(f"unknown workload(s) {','.join(bad)}; known: {','.join(WORKLOADS)}")
    if a.rounds is not None and a.rounds < 1:
        p.error("--rounds must be >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    started = time.perf_counter()
    smoke = a.smoke
    rounds = a.rounds or (1 if smoke else 3)
    results_dir = a.results_dir or (HERE / "work" if smoke else HERE / "results")
    name = a.name or ("smoke" if smoke else "latest")
    own_workdir = a.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fpbench-", dir="/tmp")) if own_workdir else a.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    cfg = Config(size=a.size or (8 * MiB if smoke else GiB), files=a.files or (200 if smoke else 10000),
                 rand_reads=300 if smoke else 20000, tree_files=200 if smoke else 6000,
                 par_iters=20 if smoke else 500, smoke=smoke, workdir=workdir, cpus=a.cpu_set,
                 settle=a.settle)
    if a.cpu_set is not None:
        os.sched_setaffinity(0, a.cpu_set)  # inherited by every process started from here on
    known = all_targets()
    targets = [known[t] for t in a.target_list]
    workloads = [WORKLOADS[w] for w in a.workload_list]

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    status = 0
    try:
        if a.memory:
            import memory
            md = memory.run(a.memory, workdir)
            print(md)
            return 0
        log(f"work directory {workdir}; rounds {rounds}; size {cfg.size / MiB:.0f} MiB; files {cfg.files}")
        check_targets(targets, workdir / "bin")
        for t in targets:
            log(f"target {t.name:<20} {t.status}")
        if any(w.name in ("untar", "walk", "reread", "git_status") for w in workloads):
            make_tarball(cfg)
            log(f"tarball: {cfg.tree_count} files")
        if any(w.name == "git_status" for w in workloads):
            make_repo(cfg)
            log(f"git repository: {cfg.repo_files} files")
        res = run_all(cfg, targets, workloads, rounds)
        summary = summarize(cfg, targets, workloads, res, rounds, started)
        md = render_markdown(summary)
        import trace_files  # benchmarks/trace_files.py: compressed traces and report throughput
        summary["trace_files"] = trace_files.rows(trace_files.SMOKE_EVENTS if smoke else trace_files.EVENTS, workdir)
        md += "\n## Trace files: compression, writer cost, report throughput\n\n" + trace_files.render(
            summary["trace_files"])
        json_path, md_path = write_results(summary, md, results_dir, name)
        # the tables on stdout; any further report prints after them
        print(md)
        log(f"results: {json_path}, {md_path}")
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    finally:
        stop_all()
        for s, h in old.items():
            signal.signal(s, h)
        leftover = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                    if str(workdir) in line]
        if leftover:
            log(f"mounts left under {workdir} (not deleting it): {leftover}")
            status = status or 1
        elif own_workdir and not a.keep_workdir:
            try:
                rm_tree(workdir)
            except (OSError, subprocess.CalledProcessError) as e:
                if getattr(e, "errno", None) != errno.ENOENT:
                    log(f"could not remove {workdir}: {e}")
    return status


if __name__ == "__main__":
    sys.exit(main())
