#!/usr/bin/env python3
"""The collector's full passes over a node table, with and without `inode_mount.freeze_survivors`.

    python benchmarks/gc_pause.py [--nodes 1000000] [--churn 500000]

In-process, no mount: NODES nodes enter a table (as lookups would), then CHURN of them are forgotten and as many
new ones enter. Printed per policy: the generation-2 collections, the longest and the total time in them, the
loop's wall time and the peak RSS. The daemon freezes what survives each full pass (freeze_survivors), so the
next one walks only what came since. Each policy runs in a process of its own; nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def run(policy: str, nodes: int, churn: int) -> str:
    from fuse_passthrough.inode_mount import freeze_survivors
    from fuse_passthrough.inodes import Node

    pauses: list[float] = []
    started = [0.0]

    def timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif info["generation"] == 2:
            pauses.append(time.perf_counter() - started[0])

    gc.collect()
    gc.freeze()  # as the daemon before it serves
    gc.callbacks.append(timer)
    if policy == "freeze_survivors":
        gc.callbacks.append(freeze_survivors)
    table: dict[int, Node] = {}
    t0 = time.perf_counter()
    for i in range(nodes):
        node = Node(i, (1, i), -1, 0o40000)
        node.names.append((1, b"name%d" % i))
        table[i] = node
    for i in range(churn):
        del table[i]
        node = Node(nodes + i, (1, nodes + i), -1, 0o40000)
        node.names.append((1, b"new%d" % i))
        table[nodes + i] = node
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (f"| {policy} | {len(pauses)} | {max(pauses, default=0) * 1e3:.1f} | {sum(pauses) * 1e3:.0f} | "
            f"{wall:.2f} | {rss:.0f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1_000_000)
    p.add_argument("--churn", type=int, default=500_000)
    p.add_argument("--policy", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.policy:
        print(run(a.policy, a.nodes, a.churn))
        return 0
    print(f"{a.nodes:,} nodes, then {a.churn:,} forgotten and as many new\n")
    print("| policy | full passes | longest, ms | total, ms | wall, s | peak RSS, MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for policy in ("none", "freeze_survivors"):
        out = subprocess.run([sys.executable, __file__, "--nodes", str(a.nodes), "--churn", str(a.churn),
                              "--policy", policy], capture_output=True, text=True, check=True)
        print(out.stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
