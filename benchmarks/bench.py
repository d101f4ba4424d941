#!/usr/bin/env python3
"""Benchmark fuse-passthrough against the native filesystem and other FUSE passthroughs, in one run.

    python benchmarks/bench.py                 # 3 rounds, 1 GiB, 10,000 files: every target, every workload
    python benchmarks/bench.py --smoke         # tiny sizes, 1 round: exercises every code path in seconds
    python benchmarks/bench.py --targets native,ours_notrace,ours_notrace_st --workloads small_files

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
import importlib.util
import io
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LL_SOURCE = Path("/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c")
LL_FLAGS = ["-DHAVE_UTIMENSAT", "-DHAVE_SETXATTR", "-DHAVE_POSIX_FALLOCATE", "-DHAVE_FALLOCATE",
            "-DHAVE_COPY_FILE_RANGE", "-DHAVE_FSTATAT", "-DHAVE_FDATASYNC"]
MiB = 1 << 20
GiB = 1 << 30


# ---------------------------------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": MiB, "g": GiB}
    mult = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if text[-1:].lower() in units else text
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 8M, 256M, 1G)")
    return int(digits) * mult


def fstype_at(path: str | os.PathLike[str]) -> str | None:
    """Filesystem type of the topmost mount exactly at `path`, None when nothing is mounted there."""
    target = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split(" ")
            if parts[4].replace("\\040", " ") == target:
                found = parts[parts.index("-") + 1]
    return found


def is_fuse_mounted(path: str | os.PathLike[str]) -> bool:
    t = fstype_at(path)
    return t is not None and t.startswith("fuse")


def drop_caches() -> bool:
    """Write back and drop the page cache, dentries and inodes (root only). False when not permitted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def rm_tree(path: Path) -> None:
    """Remove a tree natively, never crossing into another filesystem (a forgotten mount)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def cmd_output(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_description() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / (1 << 20):.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    debian = ""
    try:
        debian = Path("/etc/debian_version").read_text().strip()
    except OSError:
        pass
    pretty = ""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    fs = cmd_output(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", tempfile.gettempdir()])
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "os": pretty,
        "debian_version": debian,
        "libfuse3": cmd_output(["pkg-config", "--modversion", "fuse3"])
        or cmd_output(["dpkg-query", "-W", "-f", "${Version}", "libfuse3-3"]),
        "libfuse2": cmd_output(["dpkg-query", "-W", "-f", "${Version}", "libfuse2"]),
        "python": platform.python_version(),
        "bindfs": cmd_output(["dpkg-query", "-W", "-f", "${Version}", "bindfs"]),
        "loggedfs": cmd_output(["dpkg-query", "-W", "-f", "${Version}", "loggedfs"]),
        "git": cmd_output(["git", "--version"]),
        "workdir_fs": fs,
    }


# ------------------------------------------------------------------------------------------------------ mounts
ACTIVE: list[Mounted] = []


class Mounted:
    """One daemon in the foreground, mounted at `mountpoint`; `stop()` always unmounts and reaps it."""

    def __init__(self, name: str, cmd: list[str], mountpoint: Path, logfile: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.cmd = cmd
        self.mountpoint = mountpoint
        self.logfile = logfile
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.logfile, "ab") as logf:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                         env=self.env, start_new_session=True)
        ACTIVE.append(self)
        deadline = time.monotonic() + 30
        while not is_fuse_mounted(self.mountpoint):
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"{self.name}: daemon exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name}: mount did not appear within 30 s: {self.log_tail()}")
            time.sleep(0.01)
        os.stat(self.mountpoint)  # the first request waits for INIT: from here on the mount serves

    def log_tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-2000:].strip()
        except OSError:
            return ""

    def peak_rss_kib(self) -> int | None:
        """VmHWM of the daemon (its peak resident set), read while it still runs."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def stop(self) -> int | None:
        """Unmount (retrying while busy, lazily as the last resort) and wait for the daemon."""
        try:
            for _ in range(50):
                if not is_fuse_mounted(self.mountpoint):
                    break
                r = subprocess.run(["fusermount3", "-u", str(self.mountpoint)], capture_output=True)
                if r.returncode != 0 and is_fuse_mounted(self.mountpoint):
                    subprocess.run(["umount", str(self.mountpoint)], capture_output=True)
                if is_fuse_mounted(self.mountpoint):
                    time.sleep(0.1)
            if is_fuse_mounted(self.mountpoint):
                log(f"{self.name}: {self.mountpoint} stays busy; lazy unmount")
                subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)
            if self.proc is not None:
                try:
                    return self.proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    log(f"{self.name}: daemon {self.proc.pid} did not exit after unmount; terminating it")
                    self.proc.terminate()
                    try:
                        return self.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                        return self.proc.wait(timeout=10)
            return None
        finally:
            if self in ACTIVE:
                ACTIVE.remove(self)
            if is_fuse_mounted(self.mountpoint):
                subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)


def stop_all() -> None:
    for m in list(ACTIVE):
        try:
            m.stop()
        except Exception as e:  # noqa: BLE001 - keep unmounting the rest
            log(f"cleanup of {m.name} failed: {e}")


# ----------------------------------------------------------------------------------------------------- targets
@dataclass
class Target:
    name: str
    label: str
    kind: str  # native | ll | bindfs | loggedfs | ours
    args: list[str] = field(default_factory=list)
    trace: bool = False
    status: str = "ok"  # "ok", "missing: why", "n/a: why", "failed: why"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def all_targets() -> dict[str, Target]:
    ts = [
        Target("native", "native (ext4, no FUSE)", "native"),
        Target("passthrough_ll", "libfuse passthrough_ll (C, default timeout 1 s)", "ll"),
        Target("passthrough_ll_t0", "libfuse passthrough_ll -o timeout=0", "ll", ["-o", "timeout=0"]),
        Target("bindfs", "bindfs (C, libfuse2)", "bindfs"),
        Target("loggedfs", "loggedfs (C++, libfuse2, logs to a file)", "loggedfs"),
        Target("ours_notrace", "fuse-passthrough --no-trace", "ours", ["--no-trace"]),
        Target("ours_trace", "fuse-passthrough --format jsonl --output FILE", "ours", [], trace=True),
        Target("ours_kpassthrough", "fuse-passthrough --passthrough (kernel passthrough, libfuse 3.17), traced",
               "ours", ["--passthrough"], trace=True),
        # levers, not in the default set
        Target("ours_kpassthrough_notrace", "fuse-passthrough --passthrough --no-trace", "ours",
               ["--passthrough", "--no-trace"]),
        Target("ours_notrace_st", "fuse-passthrough --no-trace --single-threaded", "ours",
               ["--no-trace", "--single-threaded"]),
        Target("ours_trace_st", "fuse-passthrough traced, --single-threaded", "ours", ["--single-threaded"],
               trace=True),
        # strict mode (-o timeout=0): the previous default, every lookup reaches the daemon
        Target("ours_notrace_strict", "fuse-passthrough --no-trace -o timeout=0", "ours",
               ["--no-trace", "-o", "timeout=0"]),
        Target("ours_trace_strict", "fuse-passthrough traced -o timeout=0", "ours", ["-o", "timeout=0"],
               trace=True),
        Target("ours_trace_nowatch", "fuse-passthrough traced -o nowatch (cache, no SOURCE watcher)", "ours",
               ["-o", "nowatch"], trace=True),
    ]
    return {t.name: t for t in ts}


DEFAULT_TARGETS = ["native", "passthrough_ll", "passthrough_ll_t0", "bindfs", "loggedfs", "ours_notrace",
                   "ours_trace", "ours_kpassthrough"]


def libfuse_version() -> tuple[int, int]:
    v = cmd_output(["pkg-config", "--modversion", "fuse3"]) or cmd_output(
        ["dpkg-query", "-W", "-f", "${Version}", "libfuse3-3"])
    try:
        major, minor = v.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


# libfuse >= 3.17 for kernel passthrough where the system has an older one: `make libfuse-3.17` builds it.
NEW_LIBFUSE = REPO / ".cache" / "libfuse-3.17" / "lib" / "libfuse3.so.4"


def ours_env(target: Target | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if importlib.util.find_spec("fuse_passthrough") is None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
    if target is not None and "--passthrough" in target.args and libfuse_version() < (3, 17):
        env["FUSE_LIBRARY_PATH"] = str(NEW_LIBFUSE)
    return env


def check_targets(targets: list[Target], bindir: Path) -> None:
    """Set each target's status; build passthrough_ll. A missing tool makes a target "missing", never an error."""
    fuse_ok = os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None
    ll_built: str | None = None
    for t in targets:
        if t.kind == "native":
            continue
        if "--passthrough" in t.args and libfuse_version() < (3, 17) and not NEW_LIBFUSE.exists():
            t.status = "n/a: needs libfuse >= 3.17 (`make libfuse-3.17` builds one; `make bench` does)"
            continue
        if not fuse_ok:
            t.status = "missing: /dev/fuse or fusermount3 not available"
            continue
        if t.kind == "ll":
            if ll_built is None:
                ll_built = build_passthrough_ll(bindir)
            if ll_built.startswith("missing"):
                t.status = ll_built
            else:
                t.extra["binary"] = ll_built
        elif t.kind in ("bindfs", "loggedfs"):
            if shutil.which(t.kind) is None:
                t.status = f"missing: {t.kind} not installed (apt-get install {t.kind}; `make bench` does)"
        elif t.kind == "ours":
            r = subprocess.run([sys.executable, "-c", "import fuse_passthrough.binding"], env=ours_env(t),
                               capture_output=True, text=True)
            if r.returncode != 0:
                last = (r.stderr.strip().splitlines() or ["?"])[-1]
                t.status = f"missing: cannot import fuse_passthrough ({last})"


def build_passthrough_ll(bindir: Path) -> str:
    if shutil.which("gcc") is None:
        return "missing: gcc not installed"
    if not LL_SOURCE.exists():
        return f"missing: {LL_SOURCE} not found (apt-get install libfuse3-dev)"
    flags = cmd_output(["pkg-config", "fuse3", "--cflags", "--libs"])
    if not flags:
        return "missing: pkg-config fuse3 failed (apt-get install pkg-config libfuse3-dev)"
    bindir.mkdir(parents=True, exist_ok=True)
    shutil.copy(LL_SOURCE, bindir / "passthrough_ll.c")
    helpers = LL_SOURCE.parent / "passthrough_helpers.h"
    if helpers.exists():
        shutil.copy(helpers, bindir / "passthrough_helpers.h")
    out = bindir / "passthrough_ll"
    r = subprocess.run(["gcc", "-O2", *LL_FLAGS, str(bindir / "passthrough_ll.c"), *flags.split(), "-o",
                        str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        return f"missing: gcc failed: {r.stderr.strip()[-300:]}"
    return str(out)


class Session:
    """One mount of one target: where the workload works, and what the daemon left behind."""

    def __init__(self, target: Target, src: Path, mnt: Path, workdir: Path) -> None:
        self.target = target
        self.src = src
        self.mnt = mnt
        self.workdir = workdir
        self.mounted: Mounted | None = None
        self.trace_file = workdir / f"{target.name}.trace.jsonl"
        self.loggedfs_log = workdir / f"{target.name}.loggedfs.log"
        self.rss_kib: int | None = None
        self.trace_bytes = 0
        self.trace_events = 0

    @property
    def root(self) -> Path:
        """Where the workload operates."""
        t = self.target
        if t.kind == "native" or t.kind == "loggedfs":
            return self.src  # loggedfs mounts over SOURCE in place
        return self.mnt

    def __enter__(self) -> Session:
        t = self.target
        if t.kind == "native":
            return self
        env = None
        if t.kind == "ll":
            cmd = [t.extra["binary"], "-f", str(self.mnt), "-o", f"source={self.src}", *t.args]
        elif t.kind == "bindfs":
            cmd = ["bindfs", "-f", *t.args, str(self.src), str(self.mnt)]
        elif t.kind == "loggedfs":
            self.loggedfs_log.unlink(missing_ok=True)
            cmd = ["loggedfs", "-f", "-l", str(self.loggedfs_log), *t.args, str(self.src)]
        elif t.kind == "ours":
            cmd = [sys.executable, "-m", "fuse_passthrough", *t.args]
            if t.trace:
                self.trace_file.unlink(missing_ok=True)
                cmd += ["--format", "jsonl", "--output", str(self.trace_file), "--no-summary"]
            cmd += [str(self.src), str(self.mnt)]
            env = ours_env(t)
        else:
            raise RuntimeError(f"cannot mount {t.name}")
        where = self.src if t.kind == "loggedfs" else self.mnt
        self.mounted = Mounted(t.name, cmd, where, self.workdir / f"{t.name}.daemon.log", env)
        self.mounted.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.mounted is None:
            return
        self.rss_kib = self.mounted.peak_rss_kib()
        rc = self.mounted.stop()
        if rc not in (0, None) and exc[0] is None:
            log(f"{self.target.name}: daemon exited with status {rc}: {self.mounted.log_tail()[-300:]}")
        log_path = self.trace_file if self.target.trace else (
            self.loggedfs_log if self.target.kind == "loggedfs" else None)
        if log_path is not None and log_path.exists():
            self.trace_bytes = log_path.stat().st_size
            self.trace_events = count_lines(log_path)
            log_path.unlink()


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


# --------------------------------------------------------------------------------------------------- workloads
@dataclass
class Config:
    size: int
    files: int
    rand_reads: int
    tree_files: int
    par_iters: int
    smoke: bool
    workdir: Path
    cache_drop_ok: bool = True
    tarball: Path | None = None
    tree_count: int = 0
    repo_template: Path | None = None
    repo_files: int = 0


BLOCK = MiB
_block_cache: list[bytes] = []


def data_block() -> bytes:
    if not _block_cache:
        _block_cache.append(random.Random(1).randbytes(BLOCK))
    return _block_cache[0]


def write_big(path: Path, size: int) -> None:
    """Write `size` bytes in 1 MiB blocks and fsync."""
    block = data_block()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = size
        while left > 0:
            n = min(left, BLOCK)
            view = memoryview(block)[:n]
            while view:
                w = os.write(fd, view)
                view = view[w:]
            left -= n
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_big(cfg: Config, src: Path) -> Path:
    p = src / "big.bin"
    if not p.exists() or p.stat().st_size != cfg.size:
        write_big(p, cfg.size)
    return p


def read_all(path: Path) -> int:
    buf = bytearray(BLOCK)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


@dataclass
class Workload:
    name: str
    rows: list[str]
    description: str
    prepare: Callable[[Config, Path], None]  # natively on SOURCE, before the mount, untimed
    run: Callable[[Config, Path], dict[str, float]]  # on the mount; returns seconds per row
    cold: bool = False  # drop the page cache before mounting


# seq_write --------------------------------------------------------------------------------------------------
def prep_seq_write(cfg: Config, src: Path) -> None:
    (src / "big.bin").unlink(missing_ok=True)


def run_seq_write(cfg: Config, root: Path) -> dict[str, float]:
    data_block()
    t0 = time.perf_counter()
    write_big(root / "big.bin", cfg.size)
    return {"seq_write": time.perf_counter() - t0}


# seq_read ---------------------------------------------------------------------------------------------------
def prep_seq_read(cfg: Config, src: Path) -> None:
    ensure_big(cfg, src)


def run_seq_read(cfg: Config, root: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    n = read_all(root / "big.bin")
    dt = time.perf_counter() - t0
    if n != cfg.size:
        raise RuntimeError(f"seq_read: read {n} bytes, expected {cfg.size}")
    return {"seq_read": dt}


# rand_read --------------------------------------------------------------------------------------------------
def prep_rand_read(cfg: Config, src: Path) -> None:
    read_all(ensure_big(cfg, src))  # the source file in the page cache: the FUSE path is what is measured


def run_rand_read(cfg: Config, root: Path) -> dict[str, float]:
    rng = random.Random(42)
    blocks = cfg.size // 4096
    offsets = [rng.randrange(blocks) * 4096 for _ in range(cfg.rand_reads)]
    fd = os.open(root / "big.bin", os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        for off in offsets:
            if len(os.pread(fd, 4096, off)) != 4096:
                raise RuntimeError("rand_read: short read")
        dt = time.perf_counter() - t0
    finally:
        os.close(fd)
    return {"rand_read": dt}


# small files ------------------------------------------------------------------------------------------------
SMALL_DIRS = 10
SMALL_BYTES = 1024


def small_paths(cfg: Config, root: Path) -> list[str]:
    base = root / "small"
    return [str(base / f"d{i % SMALL_DIRS}" / f"f{i:06d}") for i in range(cfg.files)]


def prep_small(cfg: Config, src: Path) -> None:
    rm_tree(src / "small")


def run_small(cfg: Config, root: Path) -> dict[str, float]:
    payload = data_block()[:SMALL_BYTES]
    paths = small_paths(cfg, root)
    out = {}
    t0 = time.perf_counter()
    os.mkdir(root / "small")
    for i in range(SMALL_DIRS):
        os.mkdir(root / "small" / f"d{i}")
    for p in paths:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
    out["small_create"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in paths:
        os.stat(p)
    out["small_stat"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        if len(os.read(fd, 65536)) != SMALL_BYTES:
            raise RuntimeError("small_read: short read")
        os.close(fd)
    out["small_read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in paths:
        os.unlink(p)
    for i in range(SMALL_DIRS):
        os.rmdir(root / "small" / f"d{i}")
    os.rmdir(root / "small")
    out["small_delete"] = time.perf_counter() - t0
    return out


# untar / walk -----------------------------------------------------------------------------------------------
TREE_ROOTS = [f"/usr/lib/python3.{sys.version_info.minor}", "/usr/share/doc", "/usr/lib/python3", "/usr/share/perl5"]
TREE_MAX_FILE = 256 << 10


def source_tree_members(limit: int) -> Iterator[tuple[str, str]]:
    """(absolute path, name in the archive) of up to `limit` regular files/symlinks from real source trees."""
    n = 0
    seen: set[str] = set()
    for top in TREE_ROOTS:
        if not os.path.isdir(top) or os.path.realpath(top) in seen:
            continue
        seen.add(os.path.realpath(top))
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for fn in sorted(filenames):
                p = os.path.join(dirpath, fn)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if os.path.islink(p) or (st.st_size <= TREE_MAX_FILE and os.access(p, os.R_OK)
                                         and (st.st_mode & 0o170000) == 0o100000):
                    yield p, "tree" + p
                    n += 1
                    if n >= limit:
                        return


def make_tarball(cfg: Config) -> None:
    tb = cfg.workdir / "tree.tar"
    count = 0
    with tarfile.open(tb, "w") as tar:
        for path, arc in source_tree_members(cfg.tree_files):
            try:
                tar.add(path, arcname=arc, recursive=False)
                count += 1
            except OSError:
                continue
    cfg.tarball = tb
    cfg.tree_count = count


def prep_untar(cfg: Config, src: Path) -> None:
    rm_tree(src / "untar")
    (src / "untar").mkdir()


def run_untar(cfg: Config, root: Path) -> dict[str, float]:
    assert cfg.tarball is not None
    t0 = time.perf_counter()
    subprocess.run(["tar", "-xf", str(cfg.tarball), "-C", str(root / "untar")], check=True)
    return {"untar": time.perf_counter() - t0}


def prep_walk(cfg: Config, src: Path) -> None:
    marker = src / "untar" / ".complete"
    if not marker.exists():
        prep_untar(cfg, src)
        run_untar(cfg, src)
        marker.touch()


def run_walk(cfg: Config, root: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    n = 0
    for dirpath, dirnames, filenames in os.walk(root / "untar"):
        for name in dirnames + filenames:
            os.lstat(os.path.join(dirpath, name))
            n += 1
    dt = time.perf_counter() - t0
    if n < cfg.tree_count:
        raise RuntimeError(f"walk_lstat: saw {n} entries, expected at least {cfg.tree_count}")
    return {"walk_lstat": dt}


# git status -------------------------------------------------------------------------------------------------
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "core.fsmonitor=false",
       "-c", "core.untrackedCache=false", "-c", "gc.auto=0", "-c", "safe.directory=*"]


def make_repo(cfg: Config) -> None:
    """A git repository of the source tree's files, committed outside any mount."""
    assert cfg.tarball is not None
    repo = cfg.workdir / "repo-template"
    rm_tree(repo)
    repo.mkdir()
    subprocess.run(["tar", "-xf", str(cfg.tarball), "-C", str(repo)], check=True)
    q = {"capture_output": True, "check": True}
    subprocess.run([*GIT, "init", "-q", str(repo)], **q)
    subprocess.run([*GIT, "-C", str(repo), "add", "-A"], **q)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-q", "-m", "bench tree"], **q)
    cfg.repo_template = repo
    cfg.repo_files = int(subprocess.run([*GIT, "-C", str(repo), "ls-files"], capture_output=True, text=True,
                                        check=True).stdout.count("\n"))


def prep_git(cfg: Config, src: Path) -> None:
    assert cfg.repo_template is not None
    dest = src / "repo"
    if not dest.exists():
        subprocess.run(["cp", "-a", str(cfg.repo_template), str(dest)], check=True)
    # refresh the index against SOURCE's own stat data, so every target starts from the same index
    subprocess.run([*GIT, "-C", str(dest), "status", "--porcelain"], capture_output=True, check=True)


def run_git(cfg: Config, root: Path) -> dict[str, float]:
    out = {}
    for row in ("git_status", "git_status_again"):
        t0 = time.perf_counter()
        r = subprocess.run([*GIT, "-C", str(root / "repo"), "status", "--porcelain"], capture_output=True,
                           text=True)
        out[row] = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"git status failed: {r.stderr.strip()}")
        if r.stdout.strip():
            raise RuntimeError(f"git status: the tree looks modified through the mount: {r.stdout[:200]}")
    return out


# parallel clients -------------------------------------------------------------------------------------------
PAR_CLIENTS = 4
PAR_SHARED = 32
PAR_SHARED_BYTES = 64 << 10


def prep_parallel(cfg: Config, src: Path) -> None:
    rm_tree(src / "par")
    shared = src / "par" / "shared"
    shared.mkdir(parents=True)
    for i in range(PAR_SHARED):
        (shared / f"s{i}").write_bytes(data_block()[:PAR_SHARED_BYTES])
    for c in range(PAR_CLIENTS):
        (src / "par" / f"c{c}").mkdir()


def parallel_client(root: Path, client: int, iters: int) -> None:
    """Mixed metadata and reads: create+write, stat, read a shared file, rename, list, delete."""
    mine = root / "par" / f"c{client}"
    shared = root / "par" / "shared"
    payload = data_block()[:4096]
    rng = random.Random(client)
    for i in range(iters):
        p = mine / f"f{i}"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
        os.stat(p)
        s = shared / f"s{rng.randrange(PAR_SHARED)}"
        os.stat(s)
        with open(s, "rb") as f:
            f.read()
        q = mine / f"g{i}"
        os.rename(p, q)
        if i % 10 == 0:
            os.listdir(mine)
        os.unlink(q)


def run_parallel(cfg: Config, root: Path) -> dict[str, float]:
    r, w = os.pipe()
    pids = []
    try:
        for c in range(PAR_CLIENTS):
            pid = os.fork()
            if pid == 0:  # a client: wait for the start signal, work, report by exit status
                status = 1
                try:
                    os.close(w)
                    os.read(r, 1)
                    parallel_client(root, c, cfg.par_iters)
                    status = 0
                except BaseException as e:  # noqa: BLE001
                    print(f"[bench] parallel client {c}: {e!r}", file=sys.stderr, flush=True)
                finally:
                    os._exit(status)
            pids.append(pid)
        os.close(r)
        t0 = time.perf_counter()
        os.write(w, b"x" * PAR_CLIENTS)
        failed = 0
        for pid in pids:
            _, st = os.waitpid(pid, 0)
            failed += os.waitstatus_to_exitcode(st) != 0
        dt = time.perf_counter() - t0
        pids = []
    finally:
        os.close(w)
        for pid in pids:  # only on an error before the start: our own children
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
    if failed:
        raise RuntimeError(f"parallel4: {failed} client(s) failed")
    return {"parallel4": dt}


# deep_tree --------------------------------------------------------------------------------------------------
DEEP_LEVELS = 500


def prep_deep(cfg: Config, src: Path) -> None:
    rm_tree(src / "deep")


def run_deep(cfg: Config, root: Path) -> dict[str, float]:
    """A directory chain DEEP_LEVELS deep, each syscall by its full path from the mount root (relative to a
    descriptor of the root, so paths longer than PATH_MAX work): cost per syscall grows with depth unless
    lookups are cached."""
    levels = 50 if cfg.smoke else DEEP_LEVELS
    names = ["deep"] + ["d"] * (levels - 1)
    paths = ["/".join(names[: i + 1]) for i in range(levels)]
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        t0 = time.perf_counter()
        for p in paths:
            os.mkdir(p, dir_fd=fd)
        t1 = time.perf_counter()
        for p in paths:
            os.stat(p, dir_fd=fd)
        t2 = time.perf_counter()
        for p in reversed(paths):
            os.rmdir(p, dir_fd=fd)
        t3 = time.perf_counter()
    finally:
        os.close(fd)
    return {"deep_tree": t3 - t0, "deep_create": t1 - t0, "deep_stat": t2 - t1, "deep_remove": t3 - t2}


WORKLOADS = {w.name: w for w in [
    Workload("seq_write", ["seq_write"], "write SIZE in 1 MiB blocks + fsync (new file)",
             prep_seq_write, run_seq_write),
    Workload("seq_read", ["seq_read"], "read the SIZE file in 1 MiB blocks, fresh mount, page cache dropped",
             prep_seq_read, run_seq_read, cold=True),
    Workload("rand_read", ["rand_read"], "random 4 KiB preads of the SIZE file (fixed count and seed), fresh "
             "mount; the source file is in the page cache, so the FUSE path is what is measured",
             prep_rand_read, run_rand_read),
    Workload("small_files", ["small_create", "small_stat", "small_read", "small_delete"],
             "N files of 1 KiB in 10 directories: create+write, stat, open+read, unlink (one mount)",
             prep_small, run_small),
    Workload("untar", ["untar"], "tar -xf of a tarball of real files (/usr/lib/python3, /usr/share/doc)",
             prep_untar, run_untar),
    Workload("walk", ["walk_lstat"], "os.walk + lstat of every entry of the untarred tree, fresh mount",
             prep_walk, run_walk),
    Workload("git_status", ["git_status", "git_status_again"],
             "git status --porcelain on a committed repository of the same files (first and second run)",
             prep_git, run_git),
    Workload("parallel", ["parallel4"], "4 processes: create+write 4 KiB, stat, stat+read a shared 64 KiB "
             "file, rename, list every 10th, unlink", prep_parallel, run_parallel),
    Workload("deep_tree", ["deep_tree", "deep_create", "deep_stat", "deep_remove"],
             f"a {DEEP_LEVELS}-level directory chain, each syscall by full path: mkdir every level, stat every "
             "level, rmdir every level (deep_tree = all three)", prep_deep, run_deep),
]}

METADATA_ROWS = ["small_create", "small_stat", "small_read", "small_delete", "untar", "walk_lstat",
                 "git_status", "git_status_again", "parallel4", "deep_tree"]
DATA_ROWS = ["seq_write", "seq_read"]


# --------------------------------------------------------------------------------------------------------- run
@dataclass
class Results:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # target -> row -> seconds
    rss: dict[str, int] = field(default_factory=dict)  # target -> max VmHWM KiB
    rss_by_workload: dict[str, dict[str, int]] = field(default_factory=dict)
    logbytes: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # target -> workload -> [b, ev]
    errors: dict[str, list[str]] = field(default_factory=dict)


def run_one(cfg: Config, target: Target, wl: Workload, src: Path, mnt: Path, res: Results) -> None:
    wl.prepare(cfg, src)
    if wl.cold:
        cfg.cache_drop_ok = drop_caches() and cfg.cache_drop_ok
    with Session(target, src, mnt, cfg.workdir) as s:
        times = wl.run(cfg, s.root)
    for row, dt in times.items():
        res.samples.setdefault(target.name, {}).setdefault(row, []).append(dt)
    if s.rss_kib is not None:
        res.rss[target.name] = max(res.rss.get(target.name, 0), s.rss_kib)
        d = res.rss_by_workload.setdefault(target.name, {})
        d[wl.name] = max(d.get(wl.name, 0), s.rss_kib)
    if target.trace or target.kind == "loggedfs":
        acc = res.logbytes.setdefault(target.name, {}).setdefault(wl.name, [0, 0])
        acc[0] += s.trace_bytes
        acc[1] += s.trace_events


def run_all(cfg: Config, targets: list[Target], workloads: list[Workload], rounds: int) -> Results:
    res = Results()
    src = cfg.workdir / "src"
    mnt = cfg.workdir / "mnt"
    src.mkdir(exist_ok=True)
    mnt.mkdir(exist_ok=True)
    runnable = [t for t in targets if t.ok]
    for rnd in range(rounds):
        k = rnd % max(1, len(runnable))
        order = runnable[k:] + runnable[:k]
        for wl in workloads:
            for t in order:
                if not t.ok:
                    continue
                t0 = time.perf_counter()
                try:
                    run_one(cfg, t, wl, src, mnt, res)
                except Exception as e:  # noqa: BLE001 - one failing target must not stop the others
                    msg = f"round {rnd + 1} {wl.name}: {type(e).__name__}: {e}"
                    log(f"{t.name}: {msg}")
                    res.errors.setdefault(t.name, []).append(msg)
                    if len(res.errors[t.name]) >= 3:
                        t.status = f"failed: {msg}"
                    if ACTIVE:
                        stop_all()
                    recover_source(src)
                    continue
                log(f"round {rnd + 1}/{rounds} {wl.name:<11} {t.name:<20} "
                    f"{time.perf_counter() - t0:7.2f} s (incl. prepare/mount)")
    return res


def recover_source(src: Path) -> None:
    """After a failure, a loggedfs or other mount may still cover SOURCE: make sure it is gone."""
    if is_fuse_mounted(src):
        subprocess.run(["fusermount3", "-uz", str(src)], capture_output=True)


# ------------------------------------------------------------------------------------------------------ report
def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summarize(cfg: Config, targets: list[Target], workloads: list[Workload], res: Results, rounds: int,
              started: float) -> dict[str, Any]:
    rows = [r for w in workloads for r in w.rows]
    med: dict[str, dict[str, float | None]] = {}
    for t in targets:
        med[t.name] = {r: median(res.samples.get(t.name, {}).get(r, [])) for r in rows}

    def ratio(a: str, b: str, row: str) -> float | None:
        x, y = med.get(a, {}).get(row), med.get(b, {}).get(row)
        return x / y if x is not None and y else None

    baselines = {"native": "native", "passthrough_ll": "passthrough_ll",
                 "passthrough_ll_t0": "passthrough_ll_t0", "loggedfs": "loggedfs"}
    ratios: dict[str, dict[str, dict[str, float | None]]] = {}
    for key, base in baselines.items():
        if res.samples.get(base):
            ratios[f"vs_{key}"] = {t.name: {r: ratio(t.name, base, r) for r in rows} for t in targets}
    pairs = [("ours_trace", "ours_notrace"), ("ours_trace_st", "ours_notrace_st"),
             ("ours_trace_strict", "ours_notrace_strict")]
    tracing = {f"{a}/{b}": {r: ratio(a, b, r) for r in rows} for a, b in pairs if a in med and b in med}

    trace_info = {}
    for name, per in res.logbytes.items():
        tb = sum(v[0] for v in per.values())
        te = sum(v[1] for v in per.values())
        trace_info[name] = {
            "bytes": tb, "events": te, "bytes_per_event": (tb / te) if te else None,
            "per_workload": {w: {"bytes": v[0], "events": v[1], "bytes_per_event": v[0] / v[1] if v[1] else None}
                             for w, v in per.items()},
            "note": ("JSONL trace events" if name != "loggedfs" else "loggedfs log lines (one per operation)"),
        }

    goals = evaluate_goals(med, res, rows)
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "duration_s": round(time.perf_counter() - started, 1),
        "machine": machine_description(),
        "config": {
            "rounds": rounds, "smoke": cfg.smoke, "size_bytes": cfg.size, "small_files": cfg.files,
            "rand_reads": cfg.rand_reads, "tree_files": cfg.tree_count, "repo_files": cfg.repo_files,
            "parallel_clients": PAR_CLIENTS, "parallel_iterations_per_client": cfg.par_iters,
            "page_cache_dropped_for_cold_reads": cfg.cache_drop_ok,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        },
        "workloads": {w.name: {"rows": w.rows, "description": w.description} for w in workloads},
        "rows": rows,
        "targets": {t.name: {"label": t.label, "status": t.status, "args": t.args,
                             "peak_rss_kib": res.rss.get(t.name),
                             "peak_rss_kib_by_workload": res.rss_by_workload.get(t.name, {}),
                             "errors": res.errors.get(t.name, [])} for t in targets},
        "samples": res.samples,
        "median_s": med,
        "ratios": ratios,
        "tracing_on_vs_off": tracing,
        "trace": trace_info,
        "goals": goals,
    }


def evaluate_goals(med: dict[str, dict[str, float | None]], res: Results, rows: list[str]) -> list[dict[str, Any]]:
    """The issue's targets, each as met / missed / not measured, with the worst ratio that decides it."""
    goals: list[dict[str, Any]] = []

    def worst(a: str, b: str, rs: list[str]) -> tuple[float | None, str | None]:
        best: tuple[float | None, str | None] = (None, None)
        for r in rs:
            x, y = med.get(a, {}).get(r), med.get(b, {}).get(r)
            if x is None or not y:
                continue
            q = x / y
            if best[0] is None or q > best[0]:
                best = (q, r)
        return best

    def add(goal: str, a: str, b: str, rs: list[str], limit: float) -> None:
        q, row = worst(a, b, [r for r in rs if r in rows])
        goals.append({"goal": goal, "target": a, "baseline": b, "limit": limit, "worst_ratio": q, "worst_row": row,
                      "status": "not measured" if q is None else ("met" if q <= limit else "missed")})

    for ours in ("ours_notrace", "ours_trace"):
        add("seq read/write <= 1.0x passthrough_ll", ours, "passthrough_ll", DATA_ROWS, 1.0)
        add("metadata <= 1.5x passthrough_ll", ours, "passthrough_ll", METADATA_ROWS, 1.5)
        add("metadata <= 1.5x passthrough_ll timeout=0 (same coherence)", ours, "passthrough_ll_t0",
            METADATA_ROWS, 1.5)
        add("faster than loggedfs everywhere", ours, "loggedfs", rows, 1.0)
    add("tracing on <= 1.15x off", "ours_trace", "ours_notrace", rows, 1.15)
    # >= 80 % of native throughput = at most 1.25x native time
    add("kernel passthrough seq read/write >= 80% of native throughput", "ours_kpassthrough", "native",
        DATA_ROWS, 1.25)
    for ours in ("ours_notrace", "ours_trace"):
        kib = res.rss.get(ours)
        goals.append({"goal": "daemon peak RSS < 100 MB", "target": ours, "baseline": None, "limit": 100e6,
                      "value_bytes": kib * 1024 if kib else None,
                      "status": "not measured" if not kib else ("met" if kib * 1024 < 100e6 else "missed")})
    return goals


def fmt_s(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 10 else f"{x:.2f}"


def fmt_r(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def render_markdown(summary: dict[str, Any]) -> str:
    m = summary["machine"]
    c = summary["config"]
    tnames = list(summary["targets"])
    rows = summary["rows"]
    status = {t: v["status"] for t, v in summary["targets"].items()}
    med = summary["median_s"]
    out = io.StringIO()
    w = out.write
    w(f"# fuse-passthrough benchmark ({'smoke' if c['smoke'] else 'full'})\n\n")
    w(f"Generated {summary['generated']} by `{c['command']}` in {summary['duration_s']} s.\n\n")
    w("## Machine\n\n")
    for k in ("cpu", "cores", "memory", "kernel", "os", "debian_version", "libfuse3", "libfuse2", "python",
              "bindfs", "loggedfs", "git", "workdir_fs"):
        w(f"- {k}: {m.get(k) or '–'}\n")
    w("\n## Configuration\n\n")
    w(f"- rounds: {c['rounds']} (medians reported; targets interleaved per workload, order rotated per round)\n")
    w(f"- sequential file: {c['size_bytes'] / MiB:.0f} MiB; random reads: {c['rand_reads']} × 4 KiB; "
      f"small files: {c['small_files']}; untar/walk tree: {c['tree_files']} files; git repo: "
      f"{c['repo_files']} files; parallel: {c['parallel_clients']} clients × "
      f"{c['parallel_iterations_per_client']} iterations\n")
    w(f"- page cache dropped before cold reads: {c['page_cache_dropped_for_cold_reads']}\n\n")
    w("Workloads:\n\n")
    for name, wl in summary["workloads"].items():
        w(f"- **{name}** ({', '.join(wl['rows'])}): {wl['description']}\n")
    w("\nTargets:\n\n")
    for t, v in summary["targets"].items():
        extra = f" — **{v['status']}**" if v["status"] != "ok" else ""
        w(f"- `{t}`: {v['label']}{extra}\n")

    def table(title: str, cell: Callable[[str, str], str], names: list[str], note: str = "") -> None:
        w(f"\n## {title}\n\n")
        if note:
            w(note + "\n\n")
        w("| workload | " + " | ".join(names) + " |\n")
        w("|---|" + "---:|" * len(names) + "\n")
        for r in rows:
            w(f"| {r} | " + " | ".join(cell(t, r) for t in names) + " |\n")

    def sec_cell(t: str, r: str) -> str:
        if status[t] != "ok" and not summary["samples"].get(t):
            return status[t].split(":")[0] if not status[t].startswith("n/a") else status[t]
        return fmt_s(med.get(t, {}).get(r))

    table("Median seconds (lower is better)", sec_cell, tnames)
    w("| peak daemon RSS (VmHWM) | " + " | ".join(
        (f"{summary['targets'][t]['peak_rss_kib'] / 1024:.1f} MiB" if summary["targets"][t]["peak_rss_kib"]
         else "–") for t in tnames) + " |\n")
    for key, title in (("vs_native", "Ratio vs native"), ("vs_passthrough_ll", "Ratio vs passthrough_ll"),
                       ("vs_passthrough_ll_t0", "Ratio vs passthrough_ll -o timeout=0"),
                       ("vs_loggedfs", "Ratio vs loggedfs")):
        rt = summary["ratios"].get(key)
        if not rt:
            continue
        names = [t for t in tnames if t != "native" and summary["samples"].get(t)]
        table(title, lambda t, r, rt=rt: fmt_r(rt.get(t, {}).get(r)), names)
    if summary["tracing_on_vs_off"]:
        pairs = list(summary["tracing_on_vs_off"])
        table("Tracing on vs off", lambda t, r: fmt_r(summary["tracing_on_vs_off"][t].get(r)), pairs)
    if summary["trace"]:
        w("\n## Trace / log volume\n\n| target | bytes | events | bytes per event |\n|---|---:|---:|---:|\n")
        for t, v in summary["trace"].items():
            bpe = v["bytes_per_event"]
            w(f"| {t} ({v['note']}) | {v['bytes']:,} | {v['events']:,} | {bpe:.1f} |\n" if bpe else
              f"| {t} ({v['note']}) | {v['bytes']:,} | {v['events']:,} | – |\n")
    w("\n## Goals\n\n| goal | target | worst ratio (row) | status |\n|---|---|---|---|\n")
    for g in summary["goals"]:
        if "value_bytes" in g:
            v = f"{g['value_bytes'] / 1e6:.1f} MB" if g["value_bytes"] else "–"
        else:
            v = f"{fmt_r(g['worst_ratio'])} ({g['worst_row']})" if g["worst_ratio"] is not None else "–"
        w(f"| {g['goal']} | {g['target']} | {v} | {g['status']} |\n")
    errs = {t: v["errors"] for t, v in summary["targets"].items() if v["errors"]}
    if errs:
        w("\n## Errors\n\n")
        for t, es in errs.items():
            for e in es:
                w(f"- {t}: {e}\n")
    return out.getvalue()


# -------------------------------------------------------------------------------------------------------- main
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
    a = p.parse_args(argv)
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
                 par_iters=20 if smoke else 500, smoke=smoke, workdir=workdir)
    known = all_targets()
    targets = [known[t] for t in a.target_list]
    workloads = [WORKLOADS[w] for w in a.workload_list]

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    status = 0
    try:
        log(f"work directory {workdir}; rounds {rounds}; size {cfg.size / MiB:.0f} MiB; files {cfg.files}")
        check_targets(targets, workdir / "bin")
        for t in targets:
            log(f"target {t.name:<20} {t.status}")
        if any(w.name in ("untar", "walk", "git_status") for w in workloads):
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
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / f"{name}.json").write_text(json.dumps(summary, indent=1, sort_keys=False) + "\n")
        (results_dir / f"{name}.md").write_text(md)
        print(md)
        log(f"results: {results_dir / (name + '.json')}, {results_dir / (name + '.md')}")
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
