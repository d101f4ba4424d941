#!/usr/bin/env python3
"""Numbers for the design decision: high-level libfuse (path per request) vs low-level (inode table) passthrough.

    python benchmarks/prototypes/measure_design.py               # 3 timed rounds, every target and workload
    python benchmarks/prototypes/measure_design.py --smoke       # tiny sizes, 1 round (checks the code paths)

Targets: native, passthrough_ll (libfuse's C example, built here), hl_t0 / hl_cache1 / hl_cache1_traced (the
project's fuse-passthrough), ll_proto / ll_proto_st (benchmarks/prototypes/lowlevel_proto.py, multi-/single-threaded).
Workloads: small (create/stat/read/delete of N 1 KiB files in 10 dirs), deep (a D-level d/d/d chain: mkdir, stat,
rmdir by full path), parallel4 (4 processes x I iterations). Round 0 is untimed: it counts the FUSE requests the
kernel sends per phase (tracefs event fuse:fuse_request_send, filtered on the mount's connection) and the daemon's
CPU time. Rounds 1..N are timed, interleaved (target order rotates), each workload on a fresh mount.

Every mount is unmounted in a `finally` (fusermount3 -u, retried; -uz as the last resort) and its daemon waited
for; only processes started here are signalled, by pid. Results: benchmarks/results/design-prototypes.{md,json}.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import is_fuse_mounted  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = REPO / "benchmarks" / "results"
PROTO = HERE / "lowlevel_proto.py"
VENV = REPO / ".venv" / "bin"
FP = VENV / "fuse-passthrough"
PY = VENV / "python"
LL_SRC_CANDIDATES = [Path("/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c"),
                     Path("/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c.gz")]
LL_FLAGS = ["-DHAVE_UTIMENSAT", "-DHAVE_SETXATTR", "-DHAVE_POSIX_FALLOCATE", "-DHAVE_FALLOCATE",
            "-DHAVE_COPY_FILE_RANGE", "-DHAVE_FSTATAT", "-DHAVE_FDATASYNC"]
TRACEFS = Path("/sys/kernel/tracing")
ALL_TARGETS = ["native", "passthrough_ll", "hl_t0", "hl_cache1", "hl_cache1_traced", "hl_head_cache1", "ll_proto",
               "ll_proto_st"]
HEAD_SNAPSHOT: Path | None = None  # the committed src/ (git archive HEAD), for hl_head_cache1
WORKLOADS = {"small": ["small_create", "small_stat", "small_read", "small_delete"],
             "deep": ["deep_create", "deep_stat", "deep_remove"],
             "parallel4": ["parallel4"]}


def log(msg: str) -> None:
    print(f"[design] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ mounts
def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


class Mount:
    """A daemon mounting SRC at MNT: started, waited for in mountinfo, unmounted and reaped in stop()."""

    def __init__(self, cmd: list[str], mnt: str, logfile: str) -> None:
        self.cmd, self.mnt, self.logfile = cmd, mnt, logfile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.logfile, "ab") as lf:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf,
                                         start_new_session=True)
        deadline = time.monotonic() + 30
        while not is_fuse_mounted(self.mnt):
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited ({self.proc.returncode}) before mounting: {self.cmd}\n"
                                   + Path(self.logfile).read_text()[-2000:])
            if time.monotonic() > deadline:
                raise RuntimeError(f"not mounted after 30 s: {self.cmd}")
            time.sleep(0.02)

    def stop(self) -> None:
        try:
            for _attempt in range(20):
                if not is_fuse_mounted(self.mnt):
                    break
                r = subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True, text=True)
                if r.returncode == 0:
                    break
                time.sleep(0.25)
            if is_fuse_mounted(self.mnt):
                log(f"fusermount3 -u failed repeatedly on {self.mnt}; lazy unmount")
                subprocess.run(["fusermount3", "-uz", self.mnt], capture_output=True)
        finally:
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    log(f"daemon {self.proc.pid} still running after unmount: SIGTERM")
                    self.proc.send_signal(signal.SIGTERM)
                    try:
                        self.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                        self.proc.wait()


def build_passthrough_ll(tmp: Path) -> Path:
    src = next((p for p in LL_SRC_CANDIDATES if p.exists()), None)
    if src is None:
        raise SystemExit("passthrough_ll.c not found: apt-get install libfuse3-dev")
    c = tmp / "passthrough_ll.c"
    if src.suffix == ".gz":
        import gzip
        c.write_bytes(gzip.decompress(src.read_bytes()))
    else:
        shutil.copy(src, c)
    out = tmp / "passthrough_ll"
    flags = subprocess.run(["pkg-config", "fuse3", "--cflags", "--libs"], check=True, capture_output=True,
                           text=True).stdout.split()
    subprocess.run(["gcc", "-O2", *LL_FLAGS, f"-I{src.parent}", str(c), *flags, "-o", str(out)], check=True)
    return out


def snapshot_head(tmp: Path) -> Path:
    out = tmp / "head"
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD", "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out / "src"


def git_state() -> dict[str, str]:
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True).stdout

    import hashlib
    return {"head": git("rev-parse", "HEAD").strip(),
            "worktree_diff_sha1": hashlib.sha1(git("diff", "HEAD", "--", "src").encode()).hexdigest()[:12],
            "diffstat": git("diff", "--shortstat", "HEAD", "--", "src").strip()}


def target_cmd(name: str, src: str, mnt: str, tmp: Path, tag: str, ll_bin: Path) -> list[str] | None:
    if name == "native":
        return None
    if name == "passthrough_ll":
        return [str(ll_bin), "-f", mnt, "-o", f"source={src}"]
    if name == "hl_t0":  # explicit: the working tree's default became a 1 s cache while this was written
        return [str(FP), "--no-trace", "-o", "attr_timeout=0,entry_timeout=0", src, mnt]
    if name == "hl_head_cache1":  # the committed code (no hard-link coherence layer), cached
        assert HEAD_SNAPSHOT is not None
        return ["env", f"PYTHONPATH={HEAD_SNAPSHOT}", str(PY), "-m", "fuse_passthrough", "--no-trace",
                "-o", "attr_timeout=1,entry_timeout=1", src, mnt]
    if name == "hl_cache1":
        return [str(FP), "--no-trace", "-o", "attr_timeout=1,entry_timeout=1", src, mnt]
    if name == "hl_cache1_traced":
        return [str(FP), "--format", "jsonl", "--output", str(tmp / f"trace-{tag}.jsonl"),
                "-o", "attr_timeout=1,entry_timeout=1", src, mnt]
    if name in ("ll_proto", "ll_proto_st"):
        return [str(PY), str(PROTO), "--timeout", "1", "--counts", str(tmp / f"counts-{tag}.json")] + \
            (["--single-threaded"] if name == "ll_proto_st" else []) + [src, mnt]
    raise ValueError(name)


# ------------------------------------------------------------------------------------------------ request counting
class RequestCounter:
    """Counts FUSE requests per opcode with the tracefs event fuse:fuse_request_send in a private instance."""

    LINE = re.compile(r"opcode \d+ \((\w+)\)")

    def __init__(self) -> None:
        self.inst: Path | None = None
        self.mounted_tracefs = False
        if not (TRACEFS / "events").exists():
            r = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True)
            self.mounted_tracefs = r.returncode == 0
        if not (TRACEFS / "events" / "fuse" / "fuse_request_send").exists():
            log("tracefs event fuse:fuse_request_send unavailable: no kernel request counts")
            return
        inst = TRACEFS / "instances" / f"design_proto_{os.getpid()}"
        inst.mkdir()
        self.inst = inst
        (inst / "buffer_size_kb").write_text("32768")

    def start(self, mnt: str) -> None:
        if self.inst is None:
            return
        dev = os.stat(mnt).st_dev
        conn = (os.major(dev) << 20) | os.minor(dev)  # the kernel's dev_t encoding
        ev = self.inst / "events" / "fuse" / "fuse_request_send"
        (ev / "filter").write_text(f"connection == {conn}")
        (self.inst / "trace").write_text("")
        (ev / "enable").write_text("1")

    def stop(self) -> dict[str, int] | None:
        if self.inst is None:
            return None
        ev = self.inst / "events" / "fuse" / "fuse_request_send"
        (ev / "enable").write_text("0")
        counts: collections.Counter[str] = collections.Counter()
        with open(self.inst / "trace") as f:
            for line in f:
                m = self.LINE.search(line)
                if m:
                    counts[m.group(1).removeprefix("FUSE_")] += 1
        lost = 0
        for stats in (self.inst / "per_cpu").glob("cpu*/stats"):
            for line in stats.read_text().splitlines():
                if line.startswith("overrun:"):
                    lost += int(line.split()[1])
        (self.inst / "trace").write_text("")
        if lost:
            counts["_LOST_EVENTS"] = lost
        return dict(counts.most_common())

    def close(self) -> None:
        if self.inst is not None:
            try:
                (self.inst / "events" / "fuse" / "fuse_request_send" / "enable").write_text("0")
                self.inst.rmdir()
            except OSError as e:
                log(f"could not remove trace instance {self.inst}: {e}")
        if self.mounted_tracefs:
            subprocess.run(["umount", str(TRACEFS)], capture_output=True)


# ------------------------------------------------------------------------------------------------ workloads
# Each workload is a list of (phase name, callable) run in order on one mount; only the callables are timed.
KiB = 1024


def small_phases(root: str, n: int) -> list[tuple[str, Callable[[], None]]]:
    dirs = [f"{root}/s{d}" for d in range(10)]
    paths = [f"{dirs[i % 10]}/f{i}" for i in range(n)]
    data = b"x" * KiB

    def create() -> None:
        for d in dirs:
            os.mkdir(d)
        for p in paths:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, data)
            os.close(fd)

    def stat_() -> None:
        for p in paths:
            os.stat(p)

    def read() -> None:
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            os.read(fd, 4096)
            os.close(fd)

    def delete() -> None:
        for p in paths:
            os.unlink(p)
        for d in dirs:
            os.rmdir(d)

    return [("small_create", create), ("small_stat", stat_), ("small_read", read), ("small_delete", delete)]


def deep_phases(root: str, depth: int) -> list[tuple[str, Callable[[], None]]]:
    paths = [root + "/d" * k for k in range(1, depth + 1)]
    assert len(paths[-1]) < 4000

    def create() -> None:
        for p in paths:
            os.mkdir(p)

    def stat_() -> None:
        for p in paths:
            os.stat(p)

    def remove() -> None:
        for p in reversed(paths):
            os.rmdir(p)

    return [("deep_create", create), ("deep_stat", stat_), ("deep_remove", remove)]


def _parallel_worker(root: str, w: int, iters: int, go: Any, ready: Any) -> None:
    d = f"{root}/p{w}"
    shared = f"{root}/shared"
    data = b"y" * (4 * KiB)
    ready.put(w)
    go.wait()
    for i in range(iters):
        f, g = f"{d}/f{i}", f"{d}/g{i}"
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.close(fd)
        os.stat(f)
        os.stat(shared)
        fd = os.open(shared, os.O_RDONLY)
        while os.read(fd, 65536):
            pass
        os.close(fd)
        os.rename(f, g)
        if i % 10 == 0:
            os.listdir(d)
        os.unlink(g)
    os._exit(0)


def parallel_phases(root: str, iters: int, nproc: int = 4) -> list[tuple[str, Callable[[], None]]]:
    def run() -> None:
        ctx = mp.get_context("fork")
        go, ready = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_parallel_worker, args=(root, w, iters, go, ready)) for w in range(nproc)]
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=60)
        t0 = time.perf_counter()
        go.set()
        for p in procs:
            p.join()
        run.elapsed = time.perf_counter() - t0  # type: ignore[attr-defined]
        if any(p.exitcode != 0 for p in procs):
            raise RuntimeError("a parallel4 worker failed")

    return [("parallel4", run)]


def parallel_setup(root: str, nproc: int = 4) -> None:
    for w in range(nproc):
        os.mkdir(f"{root}/p{w}")
    with open(f"{root}/shared", "wb") as f:
        f.write(os.urandom(64 * KiB))


def parallel_cleanup(root: str, nproc: int = 4) -> None:
    for w in range(nproc):
        os.rmdir(f"{root}/p{w}")
    os.unlink(f"{root}/shared")


# ------------------------------------------------------------------------------------------------ one run
def run_one(target: str, workload: str, args: argparse.Namespace, tmp: Path, ll_bin: Path, tag: str,
            counter: RequestCounter | None) -> dict[str, Any]:
    src = tmp / f"src-{tag}"
    mnt = tmp / f"mnt-{tag}"
    src.mkdir()
    mnt.mkdir()
    cmd = target_cmd(target, str(src), str(mnt), tmp, tag, ll_bin)
    root = str(src) if cmd is None else str(mnt)
    out: dict[str, Any] = {"times": {}, "requests": {}, "daemon_cpu": {}}
    mount = Mount(cmd, str(mnt), str(tmp / f"daemon-{tag}.log")) if cmd else None
    try:
        if mount:
            mount.start()
        if workload == "small":
            phases = small_phases(root, args.files)
        elif workload == "deep":
            phases = deep_phases(root, args.depth)
        else:
            parallel_setup(root)
            phases = parallel_phases(root, args.iters)
        for phase, fn in phases:
            os.sync()
            if counter and mount:
                counter.start(str(mnt))
            cpu0 = cpu_seconds(mount.proc.pid) if mount and mount.proc else float("nan")
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            dt = getattr(fn, "elapsed", dt)
            out["times"][phase] = dt
            if mount and mount.proc:
                out["daemon_cpu"][phase] = cpu_seconds(mount.proc.pid) - cpu0
            if counter and mount:
                out["requests"][phase] = counter.stop()
        if workload == "parallel4":
            parallel_cleanup(root)
    finally:
        if mount:
            mount.stop()
        if mount and target.startswith("ll_proto"):
            cf = tmp / f"counts-{tag}.json"
            if cf.exists():
                out["proto_counts"] = json.loads(cf.read_text())
                cf.unlink()
        shutil.rmtree(src, ignore_errors=True)
        try:
            mnt.rmdir()
        except OSError as e:
            log(f"could not remove {mnt}: {e}")
        tf = tmp / f"trace-{tag}.jsonl"
        if tf.exists():
            out["trace_bytes"] = tf.stat().st_size
            tf.unlink()
    return out


# ------------------------------------------------------------------------------------------------ spot check
def spot_check(target: str, tmp: Path, ll_bin: Path) -> dict[str, Any]:
    """Hard links under cached attributes: one kernel inode per source inode, or one per path?"""
    tag = f"spot-{target}"
    src, mnt = tmp / f"src-{tag}", tmp / f"mnt-{tag}"
    src.mkdir()
    mnt.mkdir()
    cmd = target_cmd(target, str(src), str(mnt), tmp, tag, ll_bin)
    root = str(src) if cmd is None else str(mnt)
    mount = Mount(cmd, str(mnt), str(tmp / f"daemon-{tag}.log")) if cmd else None
    r: dict[str, Any] = {}
    try:
        if mount:
            mount.start()
        a, b, c, d = (f"{root}/{x}" for x in "abcd")
        open(a, "wb").close()
        os.stat(a)
        os.link(a, b)
        r["nlink_b_after_link"] = os.stat(b).st_nlink
        r["nlink_a_after_link"] = os.stat(a).st_nlink
        r["same_st_ino"] = os.stat(a).st_ino == os.stat(b).st_ino
        os.unlink(a)
        r["nlink_b_after_unlink_a"] = os.stat(b).st_nlink
        open(c, "wb").close()
        os.link(c, d)
        os.stat(c), os.stat(d)
        with open(c, "r+b") as f:
            f.write(b"0123456789")
        r["size_d_after_write_via_c"] = os.stat(d).st_size
        time.sleep(1.2)
        r["after_1.2s"] = {"nlink_b": os.stat(b).st_nlink, "size_d": os.stat(d).st_size}
        r["ok"] = (r["nlink_b_after_link"] == 2 and r["nlink_a_after_link"] == 2
                   and r["nlink_b_after_unlink_a"] == 1 and r["size_d_after_write_via_c"] == 10)
        for p in (b, c, d):
            os.unlink(p)
    finally:
        if mount:
            mount.stop()
        shutil.rmtree(src, ignore_errors=True)
        mnt.rmdir()
    return r


# ------------------------------------------------------------------------------------------------ report
def fmt_s(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def report(res: dict[str, Any]) -> str:
    targets, phases = res["targets"], res["phases"]
    med = res["medians"]
    lines = ["# Design prototypes: high-level vs low-level libfuse passthrough", "",
             f"Generated by `benchmarks/prototypes/measure_design.py` on {res['machine']['date']} "
             f"({res['machine']['kernel']}, {res['machine']['cpus']} CPUs, libfuse {res['machine']['libfuse']}, "
             f"source on {res['machine']['source_fs']}). {res['rounds']} timed rounds, medians in seconds; "
             f"ratio = time / passthrough_ll (C, libfuse example, 1 s cache).", "",
             f"Sizes: small = {res['params']['files']} files of 1 KiB in 10 dirs; deep = {res['params']['depth']}-level "
             f"chain by full path; parallel4 = 4 processes x {res['params']['iters']} iterations.", "",
             "Targets: hl_* = the project's fuse-passthrough (high-level API) from the working tree "
             f"(HEAD {res['project_git']['before']['head'][:10]} + uncommitted src changes: "
             f"{res['project_git']['before']['diffstat'] or 'none'}), hl_t0 with `-o attr_timeout=0,entry_timeout=0`; "
             "hl_head_cache1 = the committed HEAD code (before the hard-link coherence layer) with 1 s timeouts; "
             "ll_proto(_st) = benchmarks/prototypes/lowlevel_proto.py, timeout 1, default_permissions, "
             "multi-/single-threaded. passthrough_ll runs without default_permissions (its own default).", "",
             "## Median seconds (ratio vs passthrough_ll)", "",
             "| phase | " + " | ".join(targets) + " |",
             "|---|" + "---:|" * len(targets)]
    for ph in phases:
        base = med.get("passthrough_ll", {}).get(ph)
        cells = []
        for t in targets:
            v = med.get(t, {}).get(ph)
            ratio = f" ({v / base:.2f}x)" if v is not None and base else ""
            cells.append(fmt_s(v) + ratio)
        lines.append(f"| {ph} | " + " | ".join(cells) + " |")
    lines += ["", "## FUSE requests per phase (kernel tracepoint fuse_request_send, untimed round 0)", "",
              "Forgets are not counted by this tracepoint (see ll_proto daemon counts below).", "",
              "| phase | " + " | ".join(t for t in targets if t != "native") + " |",
              "|---|" + "---:|" * (len(targets) - 1)]
    for ph in phases:
        cells = []
        for t in targets:
            if t == "native":
                continue
            rq = res["requests"].get(t, {}).get(ph)
            cells.append(str(sum(v for k, v in rq.items() if not k.startswith("_"))) if rq else "–")
        lines.append(f"| {ph} | " + " | ".join(cells) + " |")
    lines += ["", "### Requests by opcode", ""]
    for ph in phases:
        lines.append(f"- **{ph}**: " + "; ".join(
            f"{t}: " + ", ".join(f"{k} {v}" for k, v in (res['requests'].get(t, {}).get(ph) or {}).items())
            for t in targets if t != "native"))
    lines += ["", "## Cost per request: median phase time / requests (µs); daemon CPU µs / request (round 0)", "",
              "| phase | " + " | ".join(t for t in targets if t != "native") + " |",
              "|---|" + "---:|" * (len(targets) - 1)]
    for ph in phases:
        cells = []
        for t in targets:
            if t == "native":
                continue
            rq = res["requests"].get(t, {}).get(ph)
            n = sum(v for k, v in rq.items() if not k.startswith("_")) if rq else 0
            v = med.get(t, {}).get(ph)
            cpu = res["daemon_cpu"].get(t, {}).get(ph)
            if n and v is not None:
                cells.append(f"{v / n * 1e6:.1f} / {cpu / n * 1e6:.1f}" if cpu is not None else f"{v / n * 1e6:.1f}")
            else:
                cells.append("–")
        lines.append(f"| {ph} | " + " | ".join(cells) + " |")
    lines += ["", "## ll_proto daemon-side counts per workload (round 0, including forgets)", ""]
    for t in ("ll_proto", "ll_proto_st"):
        for wl, c in res.get("proto_counts", {}).get(t, {}).items():
            lines.append(f"- {t} / {wl}: total {c.get('total')}: " +
                         ", ".join(f"{k} {v}" for k, v in c.get("counts", {}).items()))
    lines += ["", "## Hard-link spot check (cached attributes)", "",
              "a created and stat'ed, `ln a b`, then nlink via b and a; `unlink a`, nlink via b at once. "
              "c, d = hard links, both stat'ed, 10 bytes written via c, size via d at once. "
              "Expected 2 / 2 / 1 / 10.", "",
              "| target | nlink b after ln | nlink a after ln | nlink b after rm a | size d after write c | "
              "same st_ino | after 1.2 s (nlink b, size d) | correct |",
              "|---|---:|---:|---:|---:|---|---|---|"]
    for t, r in res["spot_check"].items():
        if "error" in r:
            lines.append(f"| {t} | error: {r['error']} |")
            continue
        lines.append(f"| {t} | {r['nlink_b_after_link']} | {r['nlink_a_after_link']} | "
                     f"{r['nlink_b_after_unlink_a']} | {r['size_d_after_write_via_c']} | {r['same_st_ino']} | "
                     f"{r['after_1.2s']['nlink_b']}, {r['after_1.2s']['size_d']} | {'yes' if r['ok'] else 'NO'} |")
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--targets", default=",".join(ALL_TARGETS))
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--depth", type=int, default=500)
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round, results not written")
    p.add_argument("--no-counts", action="store_true", help="skip the untimed counting round 0")
    p.add_argument("--no-spot-check", action="store_true")
    p.add_argument("--workdir", help="parent of the temp dir (default /tmp; must not be tmpfs)")
    p.add_argument("--results-dir", default=str(RESULTS))
    args = p.parse_args()
    if args.smoke:
        args.rounds, args.files, args.depth, args.iters = 1, 200, 40, 30
    targets = args.targets.split(",")
    workloads = args.workloads.split(",")
    soft, hard = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)
    __import__("resource").setrlimit(__import__("resource").RLIMIT_NOFILE, (hard, hard))

    tmp = Path(tempfile.mkdtemp(prefix="design-proto-", dir=args.workdir))
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp)], capture_output=True, text=True).stdout.strip()
    if fs == "tmpfs":
        shutil.rmtree(tmp)
        raise SystemExit(f"{tmp} is on tmpfs: pass --workdir on a disk filesystem")
    log(f"work dir {tmp} ({fs})")
    counter = None
    times: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    requests: dict[str, dict[str, Any]] = collections.defaultdict(dict)
    daemon_cpu: dict[str, dict[str, float]] = collections.defaultdict(dict)
    proto_counts: dict[str, dict[str, Any]] = collections.defaultdict(dict)
    spot: dict[str, Any] = {}
    try:
        ll_bin = build_passthrough_ll(tmp)
        global HEAD_SNAPSHOT
        HEAD_SNAPSHOT = snapshot_head(tmp)
        git_before = git_state()
        if not args.no_counts:
            counter = RequestCounter()
            log("round 0 (untimed): request counts")
            for wl in workloads:
                for t in targets:
                    out = run_one(t, wl, args, tmp, ll_bin, f"{t}-{wl}-r0", counter)
                    requests[t].update(out["requests"])
                    daemon_cpu[t].update(out["daemon_cpu"])
                    if "proto_counts" in out:
                        proto_counts[t][wl] = out["proto_counts"]
                    log(f"  {wl:9s} {t:17s} " + " ".join(f"{k}={v:.3f}" for k, v in out["times"].items()))
        for rnd in range(1, args.rounds + 1):
            order = targets[(rnd - 1) % len(targets):] + targets[:(rnd - 1) % len(targets)]
            log(f"round {rnd}/{args.rounds}: {' '.join(order)}")
            for wl in workloads:
                for t in order:
                    out = run_one(t, wl, args, tmp, ll_bin, f"{t}-{wl}-r{rnd}", None)
                    for ph, v in out["times"].items():
                        times[t][ph].append(v)
                    log(f"  {wl:9s} {t:17s} " + " ".join(f"{k}={v:.3f}" for k, v in out["times"].items()))
        if not args.no_spot_check:
            for t in ["native", "passthrough_ll", "hl_t0", "hl_cache1", "hl_head_cache1", "ll_proto", "ll_proto_st"]:
                try:
                    spot[t] = spot_check(t, tmp, ll_bin)
                except Exception as e:  # report, don't abort the whole run
                    spot[t] = {"error": repr(e)}
                log(f"  spot check {t}: {spot[t]}")
    finally:
        if counter:
            counter.close()
        shutil.rmtree(tmp, ignore_errors=True)

    phases = [ph for wl in workloads for ph in WORKLOADS[wl]]
    medians = {t: {ph: statistics.median(v) for ph, v in times[t].items()} for t in targets}
    libfuse = subprocess.run(["pkg-config", "--modversion", "fuse3"], capture_output=True, text=True).stdout.strip()
    res = {
        "machine": {"date": time.strftime("%Y-%m-%d %H:%M"), "kernel": platform.release(), "cpus": os.cpu_count(),
                    "libfuse": libfuse, "python": platform.python_version(), "source_fs": fs},
        "params": {"files": args.files, "depth": args.depth, "iters": args.iters},
        "rounds": args.rounds, "targets": targets, "phases": phases,
        "times": {t: dict(v) for t, v in times.items()}, "medians": medians,
        "requests": dict(requests), "daemon_cpu": dict(daemon_cpu), "proto_counts": dict(proto_counts),
        "spot_check": spot,
        "project_git": {"before": git_before, "after": git_state()},
    }
    if res["project_git"]["before"] != res["project_git"]["after"]:
        log("WARNING: the project's src/ changed during the run (another engineer editing): hl_* numbers mix versions")
    md = report(res)
    print(md)
    if not args.smoke:
        out = Path(args.results_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "design-prototypes.md").write_text(md)
        (out / "design-prototypes.json").write_text(json.dumps(res, indent=1) + "\n")
        log(f"wrote {out / 'design-prototypes.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
