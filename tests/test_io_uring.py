"""FUSE over io_uring (lowlevel/uring.c): requests served by a thread per CPU through the kernel's io_uring queues,
the same results as through /dev/fuse, and clear failures where it cannot be had. The POSIX suites run through it in
the io_uring stage of `make test` (FPT_MOUNT_ARGS="-o io_uring")."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fuse_passthrough.lowlevel import binding
from helpers import IO_URING_NOTE, MODE_ARGS, Mount, is_mounted, kernel_io_uring

KERNEL_HAS_IT = os.path.exists("/sys/module/fuse/parameters/enable_uring")
needs_io_uring = pytest.mark.skipif(not KERNEL_HAS_IT or os.geteuid() != 0 or not binding.io_uring_built(),
                                    reason="needs a kernel with FUSE over io_uring, root and a build with liburing")


@pytest.fixture
def uring_on() -> Iterator[None]:
    with kernel_io_uring("Y"):
        yield


@pytest.fixture
def uring_off() -> Iterator[None]:
    with kernel_io_uring("N"):
        yield


def ring_threads(pid: int) -> list[str]:
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            names.append(Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip())
        except OSError:
            pass
    return sorted(n for n in names if n.startswith("fuse-ring-"))


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@needs_io_uring
@pytest.mark.parametrize("mode", ["", "--passthrough"])
def test_requests_go_through_io_uring_with_the_same_results(workdir: Path, uring_on: None, mode: str) -> None:
    if mode and binding.VERSION < (3, 17):
        pytest.skip("kernel passthrough needs libfuse >= 3.17 (the 3.17 stage of make test runs it)")
    src, mnt = workdir / "src", workdir / "mnt"
    big = os.urandom(3 << 20)  # more than one request's payload (1 MiB): split by the kernel
    with Mount(src, mnt, *([mode] if mode else []), "-o", "io_uring") as m:
        assert m.proc is not None
        assert wait_for(lambda: IO_URING_NOTE in m.stderr()), m.stderr()
        cpus = os.cpu_count() or 1
        assert ring_threads(m.proc.pid) == sorted(f"fuse-ring-{i}" for i in range(cpus))
        (mnt / "d").mkdir()
        for i in range(300):
            (mnt / "d" / f"f{i:03d}").write_bytes(b"x" * i)
        (mnt / "big").write_bytes(big)
        assert hashlib.sha256((src / "big").read_bytes()).digest() == hashlib.sha256(big).digest()
        os.posix_fadvise(os.open(mnt / "big", os.O_RDONLY), 0, 0, os.POSIX_FADV_DONTNEED)
        assert (mnt / "big").read_bytes() == big
        assert sorted(os.listdir(mnt / "d")) == sorted(os.listdir(src / "d"))
        assert [os.stat(mnt / "d" / f"f{i:03d}").st_size for i in range(300)] == list(range(300))
        os.setxattr(mnt / "big", "user.k", b"v")
        assert os.getxattr(src / "big", "user.k") == b"v"
        with pytest.raises(FileExistsError):
            os.mkdir(mnt / "d")
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "nothing")
        os.rename(mnt / "big", mnt / "d" / "big")
        for p in (mnt / "d").iterdir():
            p.unlink()
        (mnt / "d").rmdir()
        assert os.listdir(src) == []
    ops = {e["op"] for e in m.events()}
    data = set() if mode else {"write", "read"}  # kernel passthrough: reads and writes never reach the daemon
    assert {"mkdir", "create", "setxattr", "rename", "unlink", "rmdir"} | data <= ops, ops


@needs_io_uring
def test_clients_on_every_cpu_are_served(workdir: Path, uring_on: None) -> None:
    """Each CPU's requests go to that CPU's queue: a client pinned to each CPU, all at once."""
    src, mnt = workdir / "src", workdir / "mnt"
    cpus = sorted(os.sched_getaffinity(0))
    with Mount(src, mnt, "-o", "io_uring", trace=False) as m:
        assert wait_for(lambda: IO_URING_NOTE in m.stderr()), m.stderr()
        code = ("import os,sys; c=int(sys.argv[1]); os.sched_setaffinity(0,{c}); d=sys.argv[2]+f'/c{c}'; "
                "os.mkdir(d); [open(f'{d}/{i}','w').write(str(i)) for i in range(200)]; "
                "assert all(open(f'{d}/{i}').read()==str(i) for i in range(200))")
        procs = [subprocess.Popen([sys.executable, "-c", code, str(c), str(mnt)]) for c in cpus]
        assert [p.wait(timeout=60) for p in procs] == [0] * len(cpus)
        assert sorted(os.listdir(src)) == sorted(f"c{c}" for c in cpus)


def opens_while_a_mkdir_waits(workdir: Path, max_threads: int, mkdir_cpu: int, opens_cpu: int) -> tuple[bool, float,
                                                                                                      list[str]]:
    """Mount with -o io_uring,max_threads=N and every mkdir delayed 2 s (an injected fault); a mkdir from one CPU,
    then 100 opens from another (or the same): whether the mkdir still waited when the opens were done, how long
    they took, and the daemon's ring threads then."""
    src = workdir / "src"
    (src / "d").mkdir(parents=True)
    (src / "f").write_bytes(b"x")
    pin = "import os,sys,time; os.sched_setaffinity(0,{%d}); "
    opens = pin % opens_cpu + ("t=time.monotonic(); [os.close(os.open(sys.argv[1], os.O_RDONLY)) for _ in range(100)];"
                               " print(time.monotonic()-t)")
    with Mount(src, workdir / "mnt", "-o", "io_uring", "-o", f"max_threads={max_threads}", "--fault",
               "op=mkdir,delay=2s") as m:
        assert wait_for(lambda: IO_URING_NOTE in m.stderr()), m.stderr()
        blocked = subprocess.Popen([sys.executable, "-c", pin % mkdir_cpu + "os.mkdir(sys.argv[1])",
                                    str(m.mnt / "d" / "slow")])
        try:
            time.sleep(0.3)
            r = subprocess.run([sys.executable, "-c", opens, str(m.mnt / "f")], capture_output=True, text=True,
                               timeout=60)
            assert r.returncode == 0, r.stderr
            still_blocked = blocked.poll() is None
        finally:
            assert blocked.wait(timeout=30) == 0
        assert m.proc is not None
        threads = ring_threads(m.proc.pid)
    assert (src / "d" / "slow").is_dir()
    return still_blocked, float(r.stdout), threads


@needs_io_uring
@pytest.mark.parametrize("max_threads", [1, 3])
def test_a_blocked_request_holds_back_its_cpu_only_until_a_spare_thread_comes(workdir: Path, uring_on: None,
                                                                             max_threads: int) -> None:
    """A mkdir delayed 2 s and 100 opens from the same CPU: with -o max_threads=3 a spare thread for that CPU
    serves the opens while the mkdir waits; with max_threads=1 they wait for it."""
    cpu = min(os.sched_getaffinity(0))
    still_blocked, seconds, threads = opens_while_a_mkdir_waits(workdir, max_threads, cpu, cpu)
    if max_threads > 1:
        assert still_blocked and seconds < 1.0, (still_blocked, seconds)
        assert threads.count(f"fuse-ring-{cpu}") == 2, threads  # one spare was enough
    else:
        assert not still_blocked and seconds > 1.0, (still_blocked, seconds)
        assert threads.count(f"fuse-ring-{cpu}") == 1, threads


@needs_io_uring
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_blocked_request_does_not_hold_back_the_other_cpus(workdir: Path, uring_on: None) -> None:
    """Ring threads take turns at Python (turn.c), but not behind a request that blocks: with one thread per CPU,
    100 opens from another CPU are served while the delayed mkdir still waits."""
    blocked_cpu, other_cpu = sorted(os.sched_getaffinity(0))[:2]
    still_blocked, seconds, _ = opens_while_a_mkdir_waits(workdir, 1, blocked_cpu, other_cpu)
    assert still_blocked and seconds < 1.0, (still_blocked, seconds)


@needs_io_uring
def test_unmount_while_a_client_waits_ends_the_ring_threads(workdir: Path, uring_on: None) -> None:
    """A lazy unmount with a process still working inside: the daemon ends (its ring threads with it), 0."""
    src, mnt = workdir / "src", workdir / "mnt"
    with Mount(src, mnt, "-o", "io_uring", trace=False) as m:
        assert wait_for(lambda: IO_URING_NOTE in m.stderr()), m.stderr()
        stop = threading.Event()

        def busy() -> None:
            i = 0
            while not stop.is_set():
                try:
                    os.stat(mnt / f"n{i % 7}")
                except OSError:
                    pass
                i += 1

        t = threading.Thread(target=busy)
        t.start()
        try:
            time.sleep(0.2)
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=True)
            assert m.proc is not None
            assert m.proc.wait(timeout=20) == 0, m.stderr()
        finally:
            stop.set()
            t.join()
    assert not is_mounted(mnt)


@needs_io_uring
@pytest.mark.skipif("io_uring" in MODE_ARGS, reason="the io_uring stage adds -o io_uring to every mount")
def test_without_the_option_requests_go_through_dev_fuse(workdir: Path, uring_on: None) -> None:
    """The kernel offering io_uring is not enough: a mount uses it only when asked (-o io_uring)."""
    with Mount(workdir / "src", workdir / "mnt", trace=False) as m:
        (m.mnt / "f").write_text("x")
        assert m.proc is not None
        assert ring_threads(m.proc.pid) == []
        assert IO_URING_NOTE not in m.stderr()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching the kernel's io_uring off needs root")
def test_io_uring_where_the_kernel_offers_none_is_one_clear_line(workdir: Path, uring_off: None) -> None:
    (workdir / "src").mkdir()
    (workdir / "mnt").mkdir()
    r = subprocess.run([sys.executable, "-m", "fuse_passthrough", "-o", "io_uring", str(workdir / "src"),
                        str(workdir / "mnt")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fuse-passthrough: -o io_uring: "), r.stderr
    assert not is_mounted(workdir / "mnt")


def test_io_uring_with_single_threaded_is_one_clear_line(workdir: Path) -> None:
    (workdir / "src").mkdir()
    (workdir / "mnt").mkdir()
    r = subprocess.run([sys.executable, "-m", "fuse_passthrough", "-s", "-o", "io_uring", str(workdir / "src"),
                        str(workdir / "mnt")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["fuse-passthrough: -o io_uring: not with -s (one thread serves every "
                                             "request there)"], r.stderr
    assert not is_mounted(workdir / "mnt")
