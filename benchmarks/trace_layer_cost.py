#!/usr/bin/env python3
"""CPU per traced call, without a mount: the tracing layer in the daemon, and the trace writer process.

    python benchmarks/trace_layer_cost.py [--n 200000] [--rounds 5] [--format jsonl]

A mix of handlers that return at once (lookup, getattr, create, write, flush, release, unlink: the shape of
small_files) is called N times through a LayerChain: without a layer, with the TracingLayer into a sink that
drops events (the layer's own cost), and into the real ProcessSink writing a JSONL file (layer + hand-off in
the daemon; the writer process's CPU from /proc, per event). Medians over the rounds, in µs per call.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from fuse_passthrough.chain import LayerChain
from fuse_passthrough.lowlevel import abi
from fuse_passthrough.tracing.layer import TracingLayer
from fuse_passthrough.tracing.sinks import ProcessSink


class Nodes:
    def path(self, ino: int, name: bytes | None = None) -> str | None:
        base = "/d3"
        return base if name is None else base + "/" + name.decode()


class FileInfo:
    def __init__(self, flags: int = 0o1101, fh: int = 7) -> None:
        self.flags, self.fh, self.backing_id = flags, fh, 0


class Entry:
    def __init__(self) -> None:
        self.ino = 9
        self.attr = abi.stat_t()
        self.attr.st_mode, self.attr.st_ino, self.attr.st_size = 0o100644, 9, 1024


ENTRY = Entry()


class Ops:
    nodes = Nodes()

    def lookup(self, req: int, parent: int, name: bytes) -> Entry:
        return ENTRY

    def getattr(self, req: int, ino: int, fi: Any) -> tuple[Any, float]:
        return ENTRY.attr, 1.0

    def create(self, req: int, parent: int, name: bytes, mode: int, fi: Any) -> Entry:
        return ENTRY

    def write(self, req: int, ino: int, data: bytes, off: int, fi: Any) -> int:
        return len(data)

    def flush(self, req: int, ino: int, fi: Any) -> None:
        return None

    def release(self, req: int, ino: int, fi: Any) -> None:
        return None

    def unlink(self, req: int, parent: int, name: bytes) -> None:
        return None


def context(req: int) -> tuple[int, int, int, int]:
    return (0, 0, os.getpid(), 0o22)


class Drop:
    def put(self, raw: tuple[Any, ...]) -> None:
        pass


def workload(chain: Any) -> Callable[[int], None]:
    fi = FileInfo()
    data = b"x" * 1024
    lookup, create, write, flush, release, getattr, unlink = (
        chain.lookup, chain.create, chain.write, chain.flush, chain.release, chain.getattr, chain.unlink)

    def run(n: int) -> None:  # 7 calls per iteration
        for _ in range(n // 7):
            lookup(5, 3, b"f1234")
            create(5, 3, b"f1234", 0o100644, fi)
            write(5, 9, data, 0, fi)
            flush(5, 9, fi)
            release(5, 9, fi)
            getattr(5, 9, None)
            unlink(5, 3, b"f1234")
    return run


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=210_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--format", default="jsonl")
    a = p.parse_args()
    n = a.n
    out: dict[str, list[float]] = {}
    writer_out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.rounds):
            run = workload(LayerChain(Ops(), [], context=context))
            t0 = cpu()
            run(n)
            out.setdefault("no layer", []).append((cpu() - t0) / n * 1e6)

            layer = TracingLayer(Drop())
            run = workload(LayerChain(Ops(), [layer], context=context))
            t0 = cpu()
            run(n)
            out.setdefault("tracing layer, events dropped", []).append((cpu() - t0) / n * 1e6)
            layer.close()

            sink = ProcessSink(a.format, os.path.join(tmp, "t.jsonl"), summary=False, idle_writer=False)
            layer = TracingLayer(sink)
            run = workload(LayerChain(Ops(), [layer], context=context))
            t0 = cpu()
            run(n)
            out.setdefault("tracing layer + ProcessSink (daemon side)", []).append((cpu() - t0) / n * 1e6)
            pid = sink.proc.pid
            # the writer's CPU: read just before its input ends (after the last batch is written)
            deadline = time.monotonic() + 30
            last = -1.0
            while time.monotonic() < deadline:
                now = proc_cpu(pid)
                if now == last:
                    break
                last = now
                time.sleep(0.2)
            writer_out.append(last / n * 1e6)
            sink.close()
            layer.close()
    for name, xs in out.items():
        print(f"{name:45s} {statistics.median(xs):6.2f} µs/call")
    print(f"{'writer process (per event)':45s} {statistics.median(writer_out):6.2f} µs/event "
          "(incl. its start-up)")


if __name__ == "__main__":
    main()
