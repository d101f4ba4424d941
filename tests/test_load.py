"""Load: concurrent clients mixing every kind of operation on one mount; no deadlock, no stray errno, no lost or
corrupted data, and a daemon whose memory does not keep growing.

`pytest` runs a short version (SOAK_SECONDS, default 8 s); `make soak` runs the long one (-m soak).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import Mount

CLIENTS = 8

# One client: owns c<ID>/ (and c<ID>/sub/), keeps a model of what its files hold and checks it as it goes; all
# clients share `counter`, incremented under an exclusive fcntl lock. Any OSError is a failure. Prints a JSON
# report: operation counts, increments, the final model (name -> sha256).
CLIENT = r"""
import errno, fcntl, hashlib, json, os, random, sys, time
mnt, cid, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rnd = random.Random(cid * 7919 + int(seconds))
home = os.path.join(mnt, f"c{cid}")
os.mkdir(home)
os.mkdir(os.path.join(home, "sub"))
model = {}          # relative name -> bytes
counts = {}
incs = 0
serial = 0

def path(name):
    return os.path.join(home, name)

def new_name():
    global serial
    serial += 1
    return ("sub/" if rnd.random() < 0.3 else "") + f"f{serial}"

def check(name):
    with open(path(name), "rb") as f:
        got = f.read()
    if got != model[name]:
        raise AssertionError(f"{name}: {len(got)} bytes read, {len(model[name])} expected")

deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    op = rnd.choice(["create", "create", "write", "append", "read", "read", "rename", "replace", "delete",
                     "truncate", "lock", "lock", "list", "stat"])
    names = sorted(model)
    if not names and op not in ("create", "lock", "list"):
        op = "create"
    counts[op] = counts.get(op, 0) + 1
    if op == "create":
        name = new_name()
        data = os.urandom(rnd.choice([0, 1, 100, 4096, 5000, 70000]))
        fd = os.open(path(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        model[name] = data
    elif op == "write":
        name = rnd.choice(names)
        old = model[name]
        off = rnd.randrange(len(old) + 1)
        data = os.urandom(rnd.choice([1, 512, 4096, 10000]))
        fd = os.open(path(name), os.O_WRONLY)
        try:
            assert os.pwrite(fd, data, off) == len(data)
        finally:
            os.close(fd)
        model[name] = old[:off] + data + old[off + len(data):]
    elif op == "append":
        name = rnd.choice(names)
        data = os.urandom(rnd.choice([1, 300, 8192]))
        with open(path(name), "ab") as f:
            f.write(data)
        model[name] += data
    elif op == "read":
        check(rnd.choice(names))
    elif op in ("rename", "replace"):
        old = rnd.choice(names)
        new = rnd.choice(names) if op == "replace" and len(names) > 1 else new_name()
        if new == old:
            continue
        os.rename(path(old), path(new))
        model[new] = model.pop(old)
    elif op == "delete":
        name = rnd.choice(names)
        os.unlink(path(name))
        del model[name]
    elif op == "truncate":
        name = rnd.choice(names)
        size = rnd.randrange(len(model[name]) + 2000)
        os.truncate(path(name), size)
        model[name] = model[name][:size].ljust(size, b"\0")
    elif op == "lock":
        fd = os.open(os.path.join(mnt, "counter"), os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            n = int(os.pread(fd, 32, 0) or b"0")
            os.pwrite(fd, b"%020d" % (n + 1), 0)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        incs += 1
    elif op == "list":
        got = {f for f in os.listdir(home) if f != "sub"} | {"sub/" + f for f in os.listdir(path("sub"))}
        if got != set(model):
            raise AssertionError(f"listing differs: {sorted(got ^ set(model))[:5]}")
    elif op == "stat":
        name = rnd.choice(names)
        st = os.stat(path(name))
        if st.st_size != len(model[name]):
            raise AssertionError(f"{name}: size {st.st_size}, expected {len(model[name])}")
for name in model:
    check(name)
print(json.dumps({"counts": counts, "incs": incs,
                  "model": {k: hashlib.sha256(v).hexdigest() for k, v in model.items()}}))
"""


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def run_load(workdir: Path, seconds: float, *mount_args: str, max_growth_mib: float = 16) -> dict[str, Any]:
    src = workdir / "src"
    src.mkdir()
    (src / "counter").write_bytes(b"%020d" % 0)
    with Mount(src, workdir / "mnt", *mount_args) as m:
        assert m.proc is not None
        pid = m.proc.pid
        clients = [subprocess.Popen([sys.executable, "-c", CLIENT, str(m.mnt), str(i), str(seconds)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for i in range(CLIENTS)]
        try:
            samples: list[tuple[float, int]] = []
            start = time.monotonic()
            while any(c.poll() is None for c in clients) and time.monotonic() - start < seconds + 60:
                samples.append((time.monotonic() - start, rss_kib(pid)))
                time.sleep(min(0.25, seconds / 40))
            reports = []
            for c in clients:
                # No deadlock: every client ends within a bound of the run time.
                out, err = c.communicate(timeout=max(1.0, seconds + 60 - (time.monotonic() - start)))
                assert c.returncode == 0, f"client failed: {err[-2000:]}"
                reports.append(json.loads(out))
        finally:
            for c in clients:
                if c.poll() is None:
                    c.kill()
                    c.wait()
        assert m.proc.poll() is None, "the daemon died under load"
        end_rss = rss_kib(pid)
        assert m.unmount() == 0, m.stderr()[-2000:]
    # Content: every client's files, exactly, and nothing else; the shared counter saw every increment.
    for i, r in enumerate(reports):
        home = src / f"c{i}"
        found = {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in home.rglob("*") if p.is_file()}
        assert found == r["model"], f"client {i}: source differs from what it wrote"
    incs = sum(r["incs"] for r in reports)
    assert incs > 0 and int((src / "counter").read_bytes()) == incs
    ops = sum(sum(r["counts"].values()) for r in reports)
    assert ops > CLIENTS * 20
    # Memory: no growth between the middle of the run and its end beyond a fixed allowance.
    mid = [kib for t, kib in samples if t >= seconds / 2]
    assert mid, samples
    growth = (max(mid[-1], end_rss) - mid[0]) / 1024
    assert growth < max_growth_mib, f"daemon RSS grew {growth:.1f} MiB in the second half: {samples}"
    assert "internal error" not in m.stderr()
    return {"ops": ops, "incs": incs, "rss_kib": samples, "growth_mib": growth}


def test_load(workdir: Path) -> None:
    seconds = float(os.environ.get("SOAK_SECONDS") or 8)
    run_load(workdir, min(seconds, 30))


@pytest.mark.soak
@pytest.mark.timeout(0)
@pytest.mark.parametrize("mode", ["mt", "st"])
def test_soak(workdir: Path, mode: str) -> None:
    seconds = float(os.environ.get("SOAK_SECONDS") or 300)
    stats = run_load(workdir, seconds, *(["-s"] if mode == "st" else []), max_growth_mib=32)
    print(f"soak {mode}: {stats['ops']} ops in {seconds:.0f} s, RSS growth {stats['growth_mib']:.1f} MiB")
