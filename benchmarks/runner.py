"""Runs every workload on every target, interleaved, and collects the samples."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import drop_caches, is_fuse_mounted, log
from targets import ACTIVE, Session, Target, stop_all
from workloads import Config, Workload


@dataclass
class Results:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # target -> row -> seconds
    rss: dict[str, int] = field(default_factory=dict)  # target -> max VmHWM KiB
    rss_by_workload: dict[str, dict[str, int]] = field(default_factory=dict)
    logbytes: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # target -> workload -> [b, ev]
    errors: dict[str, list[str]] = field(default_factory=dict)
    cpu: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)  # target -> workload -> [[d, w]]


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
    if s.cpu is not None:
        res.cpu.setdefault(target.name, {}).setdefault(wl.name, []).append(list(s.cpu))
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
