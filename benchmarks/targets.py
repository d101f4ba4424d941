"""What is measured: the native filesystem and each FUSE filesystem, and how each is mounted and unmounted.

Every daemon runs in the foreground under `Mounted`, which always unmounts it and waits for it; `Session`
mounts one target for one workload and collects what the daemon left behind (peak RSS, trace volume).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import REPO, cmd_output, is_fuse_mounted, log

LL_SOURCE = Path("/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c")
LL_FLAGS = ["-DHAVE_UTIMENSAT", "-DHAVE_SETXATTR", "-DHAVE_POSIX_FALLOCATE", "-DHAVE_FALLOCATE",
            "-DHAVE_COPY_FILE_RANGE", "-DHAVE_FSTATAT", "-DHAVE_FDATASYNC"]


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

    def cpu_seconds(self) -> tuple[float, float] | None:
        """(daemon, trace writer) CPU seconds (user + system, all threads) so far; the writer's is 0 without one.

        Waits until the writer's CPU stops growing (up to 10 s), so that its backlog is counted."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        writers = _children(self.proc.pid)
        writer = 0.0
        deadline = time.monotonic() + 10
        while writers and time.monotonic() < deadline:
            now = sum(_cpu(p) or 0.0 for p in writers)
            if now == writer:
                break
            writer = now
            time.sleep(0.1)
        return (_cpu(self.proc.pid) or 0.0, writer)

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


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (all threads)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def stop_all() -> None:
    for m in list(ACTIVE):
        try:
            m.stop()
        except Exception as e:  # noqa: BLE001 - keep unmounting the rest
            log(f"cleanup of {m.name} failed: {e}")
    kernel_io_uring(False)


# The kernel's FUSE over io_uring switch (shared kernel state): on while a target that asks for io_uring mounts,
# else as the machine had it, and as it was once the run ends (stop_all).
ENABLE_URING = Path("/sys/module/fuse/parameters/enable_uring")
URING_BEFORE = ENABLE_URING.read_text().strip() if ENABLE_URING.exists() else None


def kernel_io_uring(on: bool) -> None:
    if URING_BEFORE is None:
        return
    want = "Y" if on else URING_BEFORE
    if ENABLE_URING.read_text().strip() != want:
        ENABLE_URING.write_text(want)


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


FAULT_BENCH_OPS = ("getattr", "create", "open", "read", "write", "flush", "release", "unlink", "mkdir", "rmdir",
                   "readdir", "opendir", "releasedir", "getxattr", "rename", "utimens", "chmod")


def all_targets() -> dict[str, Target]:
    ts = [
        Target("native", "native (ext4, no FUSE)", "native"),
        Target("passthrough_ll", "libfuse passthrough_ll (C, default timeout 1 s)", "ll"),
        Target("passthrough_ll_t0", "libfuse passthrough_ll -o timeout=0", "ll", ["-o", "timeout=0"]),
        # passthrough_ll answers getxattr ENOSYS unless -o xattr: the kernel then never asks again (no
        # security.capability check before a file's first write or a chown); ours serves extended attributes
        Target("passthrough_ll_xattr", "libfuse passthrough_ll -o xattr (extended attributes, as ours)", "ll",
               ["-o", "xattr"]),
        Target("bindfs", "bindfs (C, libfuse2)", "bindfs"),
        Target("loggedfs", "loggedfs (C++, libfuse2, logs to a file)", "loggedfs"),
        Target("ours_notrace", "fuse-passthrough --no-trace", "ours", ["--no-trace"]),
        Target("ours_trace", "fuse-passthrough --format jsonl --output FILE", "ours", [], trace=True),
        Target("ours_kpassthrough", "fuse-passthrough --passthrough (kernel passthrough, libfuse 3.17), traced",
               "ours", ["--passthrough"], trace=True),
        # FUSE over io_uring (Linux >= 6.14): the bench switches the kernel's enable_uring on for these mounts only
        Target("ours_notrace_uring", "fuse-passthrough --no-trace -o io_uring (FUSE over io_uring)", "ours",
               ["--no-trace", "-o", "io_uring"]),
        Target("ours_trace_uring", "fuse-passthrough traced, -o io_uring", "ours", ["-o", "io_uring"], trace=True),
        # levers, not in the default set
        Target("ours_kpassthrough_notrace", "fuse-passthrough --passthrough --no-trace", "ours",
               ["--passthrough", "--no-trace"]),
        Target("ours_notrace_st", "fuse-passthrough --no-trace --single-threaded", "ours",
               ["--no-trace", "--single-threaded"]),
        Target("ours_trace_st", "fuse-passthrough traced, --single-threaded", "ours", ["--single-threaded"],
               trace=True),
        # worker threads (default one per core, 2 to 4; libfuse's is 10): fewer hand the interpreter lock around
        # less, more serve more at once
        *(Target(f"ours_notrace_mt{n}", f"fuse-passthrough --no-trace -o max_threads={n}", "ours",
                 ["--no-trace", "-o", f"max_threads={n}"]) for n in (1, 2, 3, 4, 10)),
        *(Target(f"ours_trace_mt{n}", f"fuse-passthrough traced -o max_threads={n}", "ours",
                 ["-o", f"max_threads={n}"], trace=True) for n in (1, 2, 3, 4, 10)),
        # parked workers (-o park_us, default 1000): 0, every worker reads the next request as soon as it is done
        # (before 2026-12-06 14:45); other steps
        *(Target(f"ours_notrace_park{n}", f"fuse-passthrough --no-trace -o park_us={n}", "ours",
                 ["--no-trace", "-o", f"park_us={n}"]) for n in (0, 200, 5000)),
        *(Target(f"ours_trace_park{n}", f"fuse-passthrough traced -o park_us={n}", "ours",
                 ["-o", f"park_us={n}"], trace=True) for n in (0, 200, 5000)),
        # every open of a directory answered (OPENDIR/RELEASEDIR), as before 2026-12-05 10:30
        Target("ours_trace_dir_handles", "fuse-passthrough traced -o dir_handles", "ours", ["-o", "dir_handles"],
               trace=True),
        # a FLUSH at every close() of a writer, as before 2026-12-05 14:00 (now only where SOURCE's close() reports)
        Target("ours_trace_flush", "fuse-passthrough traced -o flush", "ours", ["-o", "flush"], trace=True),
        # strict mode (-o timeout=0): the previous default, every lookup reaches the daemon
        Target("ours_notrace_strict", "fuse-passthrough --no-trace -o timeout=0", "ours",
               ["--no-trace", "-o", "timeout=0"]),
        Target("ours_trace_strict", "fuse-passthrough traced -o timeout=0", "ours", ["-o", "timeout=0"],
               trace=True),
        Target("ours_trace_nowatch", "fuse-passthrough traced -o nowatch (cache, no SOURCE watcher)", "ours",
               ["-o", "nowatch"], trace=True),
        # cache lifetimes (issue 18, item 3): the timeouts of every entry and attribute reply, and file pages
        # dropped at every open (noauto_cache, the behaviour before 2026-12-04) or kept while unchanged
        Target("ours_trace_t1_drop", "fuse-passthrough traced -o timeout=1,noauto_cache (the old default)", "ours",
               ["-o", "timeout=1,noauto_cache"], trace=True),
        Target("ours_trace_t1", "fuse-passthrough traced -o timeout=1 (pages kept while unchanged)", "ours",
               ["-o", "timeout=1"], trace=True),
        Target("ours_trace_t10", "fuse-passthrough traced -o timeout=10", "ours", ["-o", "timeout=10"], trace=True),
        Target("ours_trace_t60", "fuse-passthrough traced -o timeout=60", "ours", ["-o", "timeout=60"], trace=True),
        Target("ours_trace_t1d", "fuse-passthrough traced -o timeout=86400 (passthrough_hp's cache=always)",
               "ours", ["-o", "timeout=86400"], trace=True),
        Target("ours_trace_t1d_drop", "fuse-passthrough traced -o timeout=86400,noauto_cache", "ours",
               ["-o", "timeout=86400,noauto_cache"], trace=True),
        # fault rules that match every call's op but never its path: the cost of matching, nothing injected
        Target("ours_trace_faults", "fuse-passthrough traced, fault rules matched on every call", "ours",
               ["--fault", f"op={'|'.join(FAULT_BENCH_OPS)},path=/no-such-dir/*,delay=1ms"], trace=True),
    ]
    # Before/after in one run: FPT_BENCH_BASE=DIR (a checkout, or `git archive REV src` unpacked) adds the same
    # targets running DIR/src's code.
    base = os.environ.get("FPT_BENCH_BASE")
    if base:
        ts += [Target("base_notrace", f"{base}: --no-trace", "ours", ["--no-trace"], extra={"src": base}),
               Target("base_trace", f"{base}: traced", "ours", [], trace=True, extra={"src": base}),
               Target("base_notrace_uring", f"{base}: --no-trace -o io_uring", "ours", ["--no-trace", "-o", "io_uring"],
                      extra={"src": base}),
               Target("base_trace_uring", f"{base}: traced, -o io_uring", "ours", ["-o", "io_uring"], trace=True,
                      extra={"src": base})]
    return {t.name: t for t in ts}


DEFAULT_TARGETS = ["native", "passthrough_ll", "passthrough_ll_t0", "bindfs", "loggedfs", "ours_notrace",
                   "ours_trace", "ours_notrace_uring", "ours_trace_uring", "ours_kpassthrough"]


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
    if target is not None and "src" in target.extra:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(target.extra["src"]) / "src"),
                                                        env.get("PYTHONPATH", "")) if p)
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
        if "io_uring" in t.args and (URING_BEFORE is None or (URING_BEFORE != "Y" and os.geteuid() != 0)):
            t.status = ("n/a: the kernel has no FUSE over io_uring (Linux >= 6.14)" if URING_BEFORE is None else
                        "n/a: switching the kernel's FUSE io_uring on needs root")
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
            r = subprocess.run([sys.executable, "-c", "import fuse_passthrough.lowlevel.binding"], env=ours_env(t),
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
        self.cpu: tuple[float, float] | None = None  # (daemon, writer) CPU seconds, read before the unmount

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
        kernel_io_uring("io_uring" in t.args)
        where = self.src if t.kind == "loggedfs" else self.mnt
        self.mounted = Mounted(t.name, cmd, where, self.workdir / f"{t.name}.daemon.log", env)
        self.mounted.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.mounted is None:
            return
        self.rss_kib = self.mounted.peak_rss_kib()
        self.cpu = self.mounted.cpu_seconds()
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
