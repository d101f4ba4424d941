#!/usr/bin/env python3
"""Where does our daemon spend its time? Sample it with py-spy while a bench workload runs on it.

    python benchmarks/profile_daemon.py --py-spy /path/to/py-spy [--target ours_notrace] [--workload small_files]

Writes collapsed stacks (flamegraph input) to benchmarks/work/profile-TARGET-WORKLOAD.txt and prints the
functions with the most samples, inclusive and exclusive. py-spy is not a project dependency: install it where
you like (`pip install py-spy`) and pass its path. Uses bench.py's targets and workloads (targets.py,
workloads.py) unchanged.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, MiB, parse_size, rm_tree  # noqa: E402
from targets import Session, all_targets, check_targets, stop_all  # noqa: E402
from workloads import WORKLOADS, Config, make_repo, make_tarball  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--py-spy", default=shutil.which("py-spy"), help="path of the py-spy binary")
    p.add_argument("--target", default="ours_notrace", help="one of bench.py's ours_* targets")
    p.add_argument("--workload", default="small_files", help="one of bench.py's workloads")
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--size", type=parse_size, default=256 * MiB)
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--native", action="store_true", help="include C frames (libfuse, ctypes)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp"),
                   help="where the scratch directory goes (a tmpfs: the daemon without the disk's noise)")
    a = p.parse_args()
    if not a.py_spy:
        p.error("py-spy not found: pass --py-spy PATH")
    target = all_targets()[a.target]
    wl = WORKLOADS[a.workload]
    workdir = Path(tempfile.mkdtemp(prefix="fpprof-", dir=a.workdir))
    out = HERE / "work" / f"profile-{a.target}-{a.workload}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    cfg = Config(size=a.size, files=a.files, rand_reads=20000, tree_files=6000, par_iters=500, smoke=False,
                 workdir=workdir)
    src, mnt = workdir / "src", workdir / "mnt"
    src.mkdir()
    mnt.mkdir()
    try:
        check_targets([target], workdir / "bin")
        if not target.ok:
            print(f"{target.name}: {target.status}", file=sys.stderr)
            return 1
        if a.workload in ("untar", "walk", "git_status"):
            make_tarball(cfg)
        if a.workload == "git_status":
            make_repo(cfg)
        wl.prepare(cfg, src)
        with Session(target, src, mnt, workdir) as s:
            assert s.mounted is not None and s.mounted.proc is not None
            spy = subprocess.Popen([a.py_spy, "record", "--pid", str(s.mounted.proc.pid), "--rate", str(a.rate),
                                    "--format", "raw", "--threads", *(["--native"] if a.native else ["--nonblocking"]), "-o", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1.0)  # py-spy attaches
            try:
                times = wl.run(cfg, s.root)
            finally:
                spy.send_signal(signal.SIGINT)
                _, err = spy.communicate(timeout=60)
                if spy.returncode not in (0, -signal.SIGINT) or not out.exists():
                    print(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-500:]}", file=sys.stderr)
        print("seconds:", {k: round(v, 3) for k, v in times.items()})
    finally:
        stop_all()
        rm_tree(workdir)
    report(out, a.top)
    print(f"collapsed stacks: {out}")
    return 0


def report(path: Path, top: int) -> None:
    incl: collections.Counter[str] = collections.Counter()
    excl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        if frames and frames[0].startswith(("thread", "process")):
            frames = [f for f in frames if not f.startswith(("thread", "process"))]
        count = int(n)
        total += count
        for f in set(frames):
            incl[f] += count
        if frames:
            excl[frames[-1]] += count
    print(f"{total} samples")
    print("inclusive:")
    for f, n in incl.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    print("exclusive (where the sample was taken):")
    for f, n in excl.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {f}")


if __name__ == "__main__":
    sys.exit(main())
