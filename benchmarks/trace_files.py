#!/usr/bin/env python3
"""Trace files: compression ratio and writer cost of plain / .gz / .zst JSONL output, and `report` throughput.

    python benchmarks/trace_files.py                  # 1,000,000 synthetic events
    python benchmarks/trace_files.py --events 5000000 --keep trace-dir
    python benchmarks/trace_files.py --smoke          # 20,000 events: every code path in seconds

The events are synthesized in the shape a real mount writes (tests/data/report-sample.jsonl): processes that
stat, open, read, create, write, flush, release, getxattr (ENODATA) and look up missing names (ENOENT) in a
source tree of a few thousand files, plus temporary files with unique names, so the number of distinct paths
grows with the trace as it does in a real test suite.

Writer cost: CPU time per event of the trace writer process itself (tracing/writer.py: decode, format, count,
write), fed batches of 1024 raw events as the daemon's ProcessSink sends them, counted from the moment it is
ready (its start-up, read from /proc/PID/task/*/schedstat then, left out).
It flushes (and, compressed, ends a block) once per batch, as in a mount. The compressed rows minus the plain
one are what compression costs the writer.

Report: `fuse-passthrough report FILE` run as a command, wall time, events/s and peak RSS. Nothing
is asserted: the numbers are printed (and returned by `rows()` for bench.py).
"""

from __future__ import annotations

import argparse
import marshal
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fuse_passthrough.tracing.formats import format_jsonl_bytes
from fuse_passthrough.tracing.sinks import RotatingFile

T0 = 1_795_490_534.0
EVENTS = 1_000_000
SMOKE_EVENTS = 20_000
WRITER_BATCH = 1024
FORMATS = (("plain", ""), ("gz", ".gz"), ("zst", ".zst"))
COMMS = ["python3", "pytest", "sh", "bash", "cat", "git", "cc1", "ld", "make", "cp", "rm", "ls", "sed", "grep"]
ROOT = "/home/runner/work/project"
# a checkout as deep as the one whose test suite made the trace (about 440 bytes per event)
LONG_ROOT = ("/home/runner/work/some-organisation/some-project-with-a-long-name/.tox/py311-integration/lib/"
             "python3.11/site-packages/some_project_with_a_long_name/tests/integration/fixtures/data")
DIRS = ["/src/pkg", "/tests", "/build", "/.venv/lib/python3.11/site-packages/mod", "/docs"]  # under a root
EXTS = [".py", ".c", ".h", ".o", ".txt", ".json", ".md"]


def _stat(path: str, directory: bool) -> dict[str, Any]:
    h = hash(path) & 0xFFFFFF
    return {"mode": "0o40755" if directory else "0o100644", "size": 4096 if directory else 200 + h % 60000,
            "ino": 2_000_000 + h, "nlink": 2 if directory else 1, "uid": 1000, "gid": 1000}


def synth_events(n: int, seed: int = 1, root: str = ROOT) -> Iterator[dict[str, Any]]:
    """n trace events (schema v1), deterministic for a seed, of a source tree at `root`; see the module docstring
    for their shape."""
    rng = random.Random(seed)
    files = [f"{root}{rng.choice(DIRS)}/sub{rng.randrange(60)}/file_{i}{rng.choice(EXTS)}" for i in range(5000)]
    procs = [(3000 + i, rng.choice(COMMS)) for i in range(400)]
    seq = 0
    ts = T0
    fh = 10

    def event(op: str, path: str | None, pid: int, comm: str, args: dict[str, Any], result: Any = None,
              errno: str | None = None, path2: str | None = None, slow: float = 1.0) -> dict[str, Any]:
        nonlocal seq, ts
        seq += 1
        ts += rng.expovariate(1 / 20e-6)
        duration = int(rng.lognormvariate(9.3, 1.0) * slow)  # median ~11 us, a long tail
        return {"v": 1, "seq": seq, "ts": round(ts, 7), "op": op, "path": path, "path2": path2, "args": args,
                "result": result, "errno": errno, "duration_ns": duration, "pid": pid, "uid": 1000,
                "gid": 1000, "comm": comm}

    while seq < n:
        pid, comm = procs[int(rng.paretovariate(1.2)) % len(procs)]
        if rng.random() < 0.05:  # a process exits, a new one takes its slot
            i = rng.randrange(len(procs))
            procs[i] = (procs[i][0] + 400, rng.choice(COMMS))
        path = files[int(rng.paretovariate(0.8)) % len(files)]
        directory = path.rsplit("/", 1)[0]
        kind = rng.random()
        batch: list[dict[str, Any]] = [event("getattr", directory, pid, comm, {"fh": None}, _stat(directory, True))]
        if kind < 0.35:
            batch += [event("getattr", path, pid, comm, {"fh": None}, _stat(path, False))
                      for _ in range(rng.randint(1, 4))]
        elif kind < 0.5:
            missing = f"{directory}/{rng.choice(['__init__.py', 'conftest.py', 'setup.cfg', 'x.pyc'])}"
            batch.append(event("getattr", missing, pid, comm, {"fh": None}, None, "ENOENT"))
        elif kind < 0.8:
            fh += 1
            size = _stat(path, False)["size"]
            batch.append(event("open", path, pid, comm, {"flags": "O_RDONLY|O_LARGEFILE"}, {"fh": fh}))
            for off in range(0, min(size, 4 * 131072), 131072):
                got = min(131072, size - off)
                batch.append(event("read", path, pid, comm, {"size": 131072, "offset": off, "fh": fh}, got))
            batch.append(event("flush", path, pid, comm, {"fh": fh}, 0))
            batch.append(event("release", path, 0, "[kernel]", {"fh": fh}, 0))
        else:
            fh += 1
            tmp = f"{directory}/tmp{rng.getrandbits(40):010x}.tmp" if rng.random() < 0.5 else path
            batch.append(event("create", tmp, pid, comm, {"mode": "0o100644",
                                                         "flags": "O_WRONLY|O_CREAT|O_TRUNC|O_LARGEFILE"},
                               {"fh": fh}, slow=4))
            batch.append(event("getxattr", tmp, pid, comm, {"name": "security.capability"}, None, "ENODATA"))
            for off in range(0, rng.randint(1, 3) * 4096, 4096):
                batch.append(event("write", tmp, pid, comm, {"size": 4096, "offset": off, "fh": fh}, 4096))
            batch.append(event("flush", tmp, pid, comm, {"fh": fh}, 0))
            batch.append(event("release", tmp, 0, "[kernel]", {"fh": fh}, 0))
            if tmp != path:
                if rng.random() < 0.5:
                    batch.append(event("rename", tmp, pid, comm, {"flags": 0}, 0, path2=path))
                else:
                    batch.append(event("unlink", tmp, pid, comm, {}, 0, slow=3))
        yield from batch[: n - seq + len(batch)] if seq > n else batch


def write_trace(path: Path, n: int, seed: int = 1, root: str = ROOT) -> None:
    """n synthetic events in `path` (compressed after its suffix), written as the writer does: RotatingFile,
    a batch of WRITER_BATCH lines at a time, each batch flushed."""
    out = RotatingFile(str(path))
    batch: list[bytes] = []
    for event in synth_events(n, seed, root):
        batch.append(format_jsonl_bytes(event))
        if len(batch) == WRITER_BATCH:
            out.write_lines(batch)
            out.flush()
            batch = []
    out.write_lines(batch)
    out.close()


def raw_events(n: int, seed: int = 1) -> Iterator[tuple[Any, ...]]:
    """n RawEvent tuples as the daemon ships them to the writer (getattr, ENOENT, open, read, write, release)."""
    rng = random.Random(seed)
    files = [f"{ROOT}{rng.choice(DIRS)}/sub{rng.randrange(60)}/file_{i}{rng.choice(EXTS)}" for i in range(5000)]
    ts = T0
    for seq in range(1, n + 1):
        ts += rng.expovariate(1 / 20e-6)
        path = files[int(rng.paretovariate(0.8)) % len(files)]
        pid = 3000 + int(rng.paretovariate(1.2)) % 400
        k = rng.random()
        if k < 0.45:
            op, args, result, err = "getattr", (path, None), (0o100644, 1234, 2_000_000 + seq, 1, 1000, 1000), 0
        elif k < 0.6:
            op, args, result, err = "getattr", (path + ".missing", None), None, 2
        elif k < 0.7:
            op, args, result, err = "open", (path, os.O_RDONLY), 10 + seq % 100, 0
        elif k < 0.85:
            op, args, result, err = "read", (path, 131072, 0, 10 + seq % 100), 4096, 0
        elif k < 0.95:
            op, args, result, err = "write", (path, 4096, 0, 10 + seq % 100), 4096, 0
        else:
            op, args, result, err = "release", (path, 10 + seq % 100), 0, 0
        yield (seq, round(ts, 7), op, args, result, err, int(rng.lognormvariate(9.3, 1.0)), pid, 1000, 1000,
               rng.choice(COMMS), None, None)  # RawEvent's 13 fields: no cmdline, nothing injected


def cpu_so_far(pid: int) -> float:
    """CPU seconds a running process has used so far, all its threads (schedstat: nanoseconds)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


def writer_process_cpu(out: Path, n: int, seed: int = 1) -> float:
    """CPU seconds of the trace writer process (tracing/writer.py) writing n events to `out`, fed batches of
    WRITER_BATCH as the daemon's ProcessSink sends them, from the moment it is ready: its start-up (imports,
    ~50 ms, and noisier than a small trace's whole cost) left out."""
    cmd = [sys.executable, "-m", "fuse_passthrough.tracing.writer", "--format", "jsonl", "--no-summary",
           "--output", str(out)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.read(1) == b"R"
    startup = cpu_so_far(proc.pid)
    batch: list[tuple[Any, ...]] = []
    for raw in raw_events(n, seed):
        batch.append(raw)
        if len(batch) == WRITER_BATCH:
            body = marshal.dumps(batch)
            proc.stdin.write(struct.pack("<I", len(body)) + body)
            batch = []
    if batch:
        body = marshal.dumps(batch)
        proc.stdin.write(struct.pack("<I", len(body)) + body)
    proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the writer failed: {status}")
    return usage.ru_utime + usage.ru_stime - startup


def run_report(files: list[Path], *args: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of `fuse-passthrough report FILE... ARGS` with its output discarded."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fuse_passthrough", "report", *map(str, files), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"report failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # the largest of the report and its worker processes


def rows(events: int, workdir: Path, seed: int = 1, keep: bool = False) -> list[dict[str, Any]]:
    """One row per output format: sizes, ratio, writer cost, report throughput (text report); then the report
    of the same events in a tree deep enough to make lines as long as the issue's trace (about 440 bytes)."""
    out: list[dict[str, Any]] = []
    plain_bytes = 0
    d = workdir / "trace-files"
    d.mkdir(parents=True, exist_ok=True)
    # (row, file, tree root, is an output format: writer cost and ratio to plain measured)
    rows_made = [*((name, f"trace.jsonl{suffix}", ROOT, True) for name, suffix in FORMATS),
                 ("plain, deep tree", "trace-deep.jsonl", LONG_ROOT, False)]
    for name, file, root, a_format in rows_made:
        path = d / file
        writer = None
        if a_format:
            raw = d / file.replace("trace", "raw", 1)
            writer = writer_process_cpu(raw, events, seed) / events
            raw.unlink()
        write_trace(path, events, seed, root)
        os.sync()  # the report timed alone, not competing with the file's writeback
        size = path.stat().st_size
        plain_bytes = plain_bytes or size
        wall, rss = run_report([path])
        out.append({"format": name, "file": path.name, "events": events, "bytes": size,
                    "bytes_per_event": size / events, "ratio": plain_bytes / size if a_format else None,
                    "writer_us_per_event": writer * 1e6 if writer is not None else None,
                    "report_s": wall, "report_events_per_s": events / wall, "report_peak_rss_mib": rss})
        if not keep and path.name != "trace.jsonl":
            path.unlink()
    if not keep:
        (d / "trace.jsonl").unlink()
    return out


def export_rows(path: Path, events: int) -> list[dict[str, Any]]:
    """What --html and --perfetto add to `report FILE` (plain): seconds and peak RSS."""
    out = []
    for what, args in (("text", []), ("--html", ["--html", str(path) + ".html"]),
                       ("--perfetto", ["--perfetto", str(path) + ".json"])):
        wall, rss = run_report([path], *args)
        out.append({"report": what, "events": events, "s": wall, "events_per_s": events / wall,
                    "peak_rss_mib": rss})
    return out


def render(table: list[dict[str, Any]]) -> str:
    lines = ["| format | events | bytes | bytes/event | ratio | writer µs/event | report s | report events/s | "
             "report peak RSS |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        ratio = f"{r['ratio']:.1f}×" if r["ratio"] is not None else "—"
        writer = f"{r['writer_us_per_event']:.2f}" if r["writer_us_per_event"] is not None else "—"
        lines.append(f"| {r['format']} | {r['events']:,} | {r['bytes']:,} | {r['bytes_per_event']:.1f} | "
                     f"{ratio} | {writer} | {r['report_s']:.2f} | "
                     f"{r['report_events_per_s']:,.0f} | {r['report_peak_rss_mib']:.0f} MiB |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=None,
                   help=f"events per trace (default {EVENTS}; smoke {SMOKE_EVENTS})")
    p.add_argument("--smoke", action="store_true", help="a small trace: exercise every path quickly")
    p.add_argument("--exports", action="store_true", help="also time report --html and --perfetto (plain)")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR", help="write the traces here and keep them")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    events = a.events or (SMOKE_EVENTS if a.smoke else EVENTS)
    workdir = a.keep or Path(tempfile.mkdtemp(prefix="fptrace-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(render(rows(events, workdir, a.seed, keep=a.keep is not None or a.exports)), end="")
        if a.exports:
            print("\n| report | events | s | events/s | peak RSS |\n|---|---:|---:|---:|---:|")
            for r in export_rows(workdir / "trace-files" / "trace.jsonl", events):
                print(f"| {r['report']} | {r['events']:,} | {r['s']:.2f} | {r['events_per_s']:,.0f} | "
                      f"{r['peak_rss_mib']:.0f} MiB |")
    finally:
        if a.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
