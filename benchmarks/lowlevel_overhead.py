#!/usr/bin/env python3
"""Per-request cost of the low-level binding (src/fuse_passthrough/lowlevel), against the same file system in C.

    python benchmarks/lowlevel_overhead.py [--n 20000] [--rounds 3]

Each variant mounts a one-file file system with attribute timeout 0, opens the file, and times N fstat() calls:
each is one GETATTR request through the kernel, libfuse and the handler. The C variant (compiled here against
the system's libfuse with gcc) is the floor: the difference is what the Python binding adds per request.
Variants: c (multi-threaded C), py (multi-threaded, thread state kept per worker: the default), py-nokeep
(ctypes makes a thread state per callback), py-st (single-threaded loop), py-pydll (the attr reply through
PyDLL, keeping the GIL across the writev to /dev/fuse). Needs root and /dev/fuse; unmounts what it mounts.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

C_SOURCE = r"""
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
static void fill(fuse_ino_t ino, struct stat *st) {
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_mode = ino == 1 ? (S_IFDIR | 0755) : (S_IFREG | 0444);
    st->st_nlink = 1;
    st->st_size = 13;
}
static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
    struct fuse_entry_param e;
    if (parent != 1 || strcmp(name, "f") != 0) { fuse_reply_err(req, ENOENT); return; }
    memset(&e, 0, sizeof e);
    e.ino = 2;
    fill(2, &e.attr);
    fuse_reply_entry(req, &e);
}
static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    struct stat st;
    (void)fi;
    fill(ino, &st);
    fuse_reply_attr(req, &st, 0.0);
}
static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    (void)ino;
    fuse_reply_open(req, fi);
}
static const struct fuse_lowlevel_ops ops = { .lookup = ll_lookup, .getattr = ll_getattr, .open = ll_open };
int main(int argc, char *argv[]) {
    char *args_v[] = { argv[0], "-o", "ro", NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, args_v);
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, NULL);
    if (!se || fuse_set_signal_handlers(se) || fuse_session_mount(se, argv[1])) return 1;
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    int ret = fuse_session_loop_mt(se, cfg);
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return ret < 0;
}
"""


def serve(variant: str, mountpoint: str) -> int:
    from fuse_passthrough.lowlevel import binding as ll

    if variant == "py-pydll":  # the attr reply keeps the GIL (the getattr callback looks it up at each call)
        f = ctypes.PyDLL(ll.LIBRARY_PATH).fuse_reply_attr
        f.restype, f.argtypes = ll._reply_attr.restype, ll._reply_attr.argtypes
        ll._reply_attr = f

    def attr(ino: int) -> ll.Stat:
        st = ll.Stat()
        st.st_ino, st.st_nlink, st.st_size = ino, 1, 13
        st.st_mode = 0o40755 if ino == 1 else 0o100444
        return st

    class Ops:
        def lookup(self, req: int, parent: int, name: bytes) -> ll.EntryParam:
            if parent != 1 or name != b"f":
                raise OSError(2, "no such file")
            return ll.entry_param(2, attr(2), 0.0, 0.0)

        def getattr(self, req: int, ino: int, fi: object) -> tuple[ll.Stat, float]:
            return attr(ino), 0.0

        def open(self, req: int, ino: int, fi: object) -> None:
            pass

    session = ll.LowLevelSession(Ops(), mountpoint, ["ro"], keep_thread_states=variant != "py-nokeep")
    return 0 if session.run(single_threaded=variant == "py-st") >= 0 else 1


def mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/PID/stat utime, stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(cmd: list[str], mnt: Path, n: int) -> tuple[float, float]:
    """Seconds per fstat() through a fresh mount made by `cmd`, and the daemon's CPU seconds per request."""
    proc = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + 30
        while not mounted(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd} did not mount")
            time.sleep(0.05)
        fd = os.open(mnt / "f", os.O_RDONLY)
        try:
            for _ in range(1000):  # warm up: workers started, thread states made
                os.fstat(fd)
            c0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            for _ in range(n):
                os.fstat(fd)
            t1, c1 = time.perf_counter(), cpu_seconds(proc.pid)
            return (t1 - t0) / n, (c1 - c0) / n
        finally:
            os.close(fd)
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)
            proc.kill()
            proc.wait()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        return serve(sys.argv[2], sys.argv[3])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default="c,py,py-nokeep,py-st,py-pydll")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mnt = work / "mnt"
        mnt.mkdir()
        exe = work / "hello_c"
        cflags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True,
                                check=True).stdout.split()
        (work / "hello_c.c").write_text(C_SOURCE)
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(work / "hello_c.c"), *cflags], check=True)
        variants = a.variants.split(",")
        results: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(a.rounds):  # alternate the variants, so a busy spell of the machine hits all of them
            for v in variants:
                cmd = [str(exe), str(mnt)] if v == "c" else [sys.executable, __file__, "--serve", v, str(mnt)]
                wall, daemon_cpu = measure(cmd, mnt, a.n)
                results[v].append(wall)
                cpu[v].append(daemon_cpu)
        lib = os.environ.get("FUSE_LIBRARY_PATH", "system libfuse")
        print(f"per fstat (one GETATTR), {a.n} calls, median of {a.rounds} rounds; Python variants on {lib}:")
        print(f"  {'variant':10s} {'wall µs':>8s} {'daemon CPU µs':>14s}   (wall rounds | CPU rounds)")
        for v, r in results.items():
            print(f"  {v:10s} {statistics.median(r) * 1e6:8.1f} {statistics.median(cpu[v]) * 1e6:14.1f}   "
                  f"({', '.join(f'{x * 1e6:.1f}' for x in r)} | {', '.join(f'{x * 1e6:.1f}' for x in cpu[v])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
