#!/usr/bin/env python3
"""Per-call cost of the inode core's layer chain (src/fuse_passthrough/chain.py), without a mount.

    python benchmarks/chain_overhead.py [--n 300000] [--rounds 5]

Times a handler that does nothing (getattr(req, ino, fi) -> None): called directly (what the binding calls when
no layer wants the operation), building a `Call` alone, and through a chain of one and of two pass-through
layers (`handle(call, next)` returning `next(call)`), plus a layer that reads the call's path (a dict lookup in
a stand-in node table) and caller. Median per call over the rounds, in ns.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from fuse_passthrough.chain import Call, LayerChain, Next


class Nodes:
    def path(self, ino: int, name: bytes | None = None) -> str | None:
        return "/f"


class Ops:
    nodes = Nodes()

    def getattr(self, req: int, ino: int, fi: Any) -> None:
        return None


class Pass:
    def handle(self, call: Call, next: Next) -> Any:
        return next(call)


class Reads:
    def handle(self, call: Call, next: Next) -> Any:
        call.path, call.caller  # noqa: B018
        return next(call)


def context(req: int) -> tuple[int, int, int, int]:
    return (0, 0, 1, 0o22)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300_000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    ops = Ops()
    nodes = ops.nodes

    def calls(fn: Callable[..., Any]) -> Callable[[], float]:
        def run() -> float:
            t0 = time.perf_counter_ns()
            for _ in range(a.n):
                fn(5, 3, None)
            return (time.perf_counter_ns() - t0) / a.n
        return run

    def build() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(a.n):
            Call("getattr", 5, (3, None), nodes, context)
        return (time.perf_counter_ns() - t0) / a.n

    variants = {
        "direct handler": calls(ops.getattr),
        "Call() built alone": build,
        "chain, 1 pass-through layer": calls(LayerChain(ops, [Pass()], context=context).getattr),
        "chain, 2 pass-through layers": calls(LayerChain(ops, [Pass(), Pass()], context=context).getattr),
        "chain, 1 layer reading path+caller": calls(LayerChain(ops, [Reads()], context=context).getattr),
    }
    for name, run in variants.items():
        print(f"{name:36s} {statistics.median(run() for _ in range(a.rounds)):7.0f} ns")


if __name__ == "__main__":
    main()
