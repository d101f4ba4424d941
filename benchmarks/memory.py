"""`bench.py --memory N`: the inode core's daemon RSS after N files looked up (issue 18: < 100 MB after 1 million).

SOURCE gets N empty files in directories of 10,000 (made by `touch`); a default, traced inode-core mount walks
them (scandir + lstat of every entry, as `find` or `ls -l` would). The daemon holds one node, with an O_PATH fd,
per inode the kernel holds; the kernel gives them back (FORGET) when it evicts them. After every directory the
kernel's dentries and inodes are dropped (`echo 2 > /proc/sys/vm/drop_caches`; it stands for the memory pressure
of a real machine, and keeps the node count under the daemon's fd limit, which may be below N). Reported: the
daemon's RSS and node count (its open fds) after each directory's walk and after the drop, its peak RSS (VmHWM)
and the RSS at the end. Nothing is asserted (tests/test_behind_the_back.py asserts the shrinking).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from common import log

PER_DIR = 10_000


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _nodes(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _drop(pid: int, base: int) -> int:
    deadline = time.monotonic() + 60
    while True:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
        left = _nodes(pid) - base
        if left < 100 or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def run(files: int, workdir: Path) -> str:
    src, mnt = workdir / "mem-src", workdir / "mem-mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    dirs = (files + PER_DIR - 1) // PER_DIR
    t0 = time.monotonic()
    for d in range(dirs):
        sub = src / f"d{d:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        count = min(PER_DIR, files - d * PER_DIR)
        subprocess.run(["bash", "-c", f"touch f{{00000..{count - 1:05d}}}"], cwd=sub, check=True)
    log(f"memory: {files} files in {dirs} directories made in {time.monotonic() - t0:.0f} s")
    trace = workdir / "mem.trace.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "fuse_passthrough", "--format", "jsonl",
                             "--output", str(trace), str(src), str(mnt)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows = []
    try:
        deadline = time.monotonic() + 20
        while not any(line.split()[4] == str(mnt) for line in open("/proc/self/mountinfo")):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("mount did not appear")
            time.sleep(0.05)
        os.stat(mnt)
        base = _nodes(proc.pid)
        rss0 = _status(proc.pid, "VmRSS")
        looked_up, t0 = 0, time.monotonic()
        for d in sorted(os.listdir(mnt)):
            for e in os.scandir(mnt / d):
                e.stat(follow_symlinks=False)
                looked_up += 1
            held, rss_held = _nodes(proc.pid) - base, _status(proc.pid, "VmRSS")
            left = _drop(proc.pid, base)
            rows.append((looked_up, held, rss_held, left, _status(proc.pid, "VmRSS")))
        walk_s = time.monotonic() - t0
        peak, end = _status(proc.pid, "VmHWM"), _status(proc.pid, "VmRSS")
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
            proc.kill()
            proc.wait()
        subprocess.run(["rm", "-rf", "--one-file-system", str(src)], check=False)
    lines = [f"## Daemon memory: {files:,} files looked up (inode core, traced, default options)", "",
             f"Walk: {walk_s:.0f} s. Daemon RSS at start {rss0 / 1024:.1f} MB, **peak {peak / 1024:.1f} MB**, "
             f"at the end {end / 1024:.1f} MB.", "",
             "| files looked up | nodes held | RSS (MB) | nodes after the drop | RSS after the drop (MB) |",
             "|---:|---:|---:|---:|---:|"]
    step = max(1, len(rows) // 10)
    for r in rows[step - 1::step]:
        lines.append(f"| {r[0]:,} | {r[1]:,} | {r[2] / 1024:.1f} | {r[3]} | {r[4] / 1024:.1f} |")
    return "\n".join(lines) + "\n"
