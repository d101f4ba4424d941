"""What the targets are measured with: each workload's untimed preparation on SOURCE and its timed run on the
mount, and the inputs they share (the data file, the tarball of a real source tree, the git repository).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from common import MiB, rm_tree


@dataclass
class Config:
    """One run's sizes, and the shared inputs made for it before the first mount (tarball, repository)."""

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
    cpus: tuple[int, ...] | None = None  # --cpus: every process of the run confined to these CPUs
    settle: float = 0.0  # --settle: seconds the bench sleeps before each timed phase


BLOCK = MiB
_block_cache: list[bytes] = []


def phase_start(cfg: Config) -> float:
    """The start of a timed phase, after `cfg.settle` seconds of sleep (see bench.py --settle)."""
    if cfg.settle:
        time.sleep(cfg.settle)
    return time.perf_counter()


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
    t0 = phase_start(cfg)
    write_big(root / "big.bin", cfg.size)
    return {"seq_write": time.perf_counter() - t0}


# seq_read ---------------------------------------------------------------------------------------------------
def prep_seq_read(cfg: Config, src: Path) -> None:
    ensure_big(cfg, src)


def run_seq_read(cfg: Config, root: Path) -> dict[str, float]:
    t0 = phase_start(cfg)
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
        t0 = phase_start(cfg)
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
    t0 = phase_start(cfg)
    os.mkdir(root / "small")
    for i in range(SMALL_DIRS):
        os.mkdir(root / "small" / f"d{i}")
    for p in paths:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
    out["small_create"] = time.perf_counter() - t0
    t0 = phase_start(cfg)
    for p in paths:
        os.stat(p)
    out["small_stat"] = time.perf_counter() - t0
    t0 = phase_start(cfg)
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        if len(os.read(fd, 65536)) != SMALL_BYTES:
            raise RuntimeError("small_read: short read")
        os.close(fd)
    out["small_read"] = time.perf_counter() - t0
    t0 = phase_start(cfg)
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
    t0 = phase_start(cfg)
    subprocess.run(["tar", "-xf", str(cfg.tarball), "-C", str(root / "untar")], check=True)
    return {"untar": time.perf_counter() - t0}


def prep_walk(cfg: Config, src: Path) -> None:
    marker = src / "untar" / ".complete"
    if not marker.exists():
        prep_untar(cfg, src)
        run_untar(cfg, src)
        marker.touch()


def run_walk(cfg: Config, root: Path) -> dict[str, float]:
    t0 = phase_start(cfg)
    n = 0
    for dirpath, dirnames, filenames in os.walk(root / "untar"):
        for name in dirnames + filenames:
            os.lstat(os.path.join(dirpath, name))
            n += 1
    dt = time.perf_counter() - t0
    if n < cfg.tree_count:
        raise RuntimeError(f"walk_lstat: saw {n} entries, expected at least {cfg.tree_count}")
    return {"walk_lstat": dt}


# reread ------------------------------------------------------------------------------------------------------
def run_reread(cfg: Config, root: Path) -> dict[str, float]:
    """Every file of the untarred tree opened, read and closed, twice (as a build re-reads its headers): the
    second pass is what the kernel's cache can answer (names, attributes, and pages kept across opens)."""
    paths = []
    for dirpath, _dirnames, filenames in os.walk(root / "untar"):
        paths.extend(os.path.join(dirpath, f) for f in filenames)
    paths = [p for p in paths if not os.path.islink(p)]
    if len(paths) < cfg.tree_count // 2:
        raise RuntimeError(f"reread: found {len(paths)} files, expected about {cfg.tree_count}")
    out = {}
    for row in ("reread_first", "reread_again"):
        t0 = phase_start(cfg)
        for p in paths:
            with open(p, "rb", buffering=0) as f:
                while f.read(1 << 20):
                    pass
        out[row] = time.perf_counter() - t0
    return out


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
        t0 = phase_start(cfg)
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
        t0 = phase_start(cfg)
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
        t0 = phase_start(cfg)
        for p in paths:
            os.mkdir(p, dir_fd=fd)
        create = time.perf_counter() - t0
        t0 = phase_start(cfg)
        for p in paths:
            os.stat(p, dir_fd=fd)
        stat = time.perf_counter() - t0
        t0 = phase_start(cfg)
        for p in reversed(paths):
            os.rmdir(p, dir_fd=fd)
        remove = time.perf_counter() - t0
    finally:
        os.close(fd)
    return {"deep_tree": create + stat + remove, "deep_create": create, "deep_stat": stat, "deep_remove": remove}


# testsuite ---------------------------------------------------------------------------------------------------
# A real file-system test suite: CPython's own tests of the modules that work on files (temporary files and
# directories, archives, copies and moves, links, permissions, globbing, mailboxes, byte-compiling), run with
# their working and temporary directories on the mount (Debian's libpython3.X-testsuite). Every test must pass
# there as it does natively: a failure is an error of the run, not a time.
TESTSUITE = ["test_shutil", "test_tarfile", "test_zipfile", "test_tempfile", "test_os", "test_glob", "test_pathlib",
             "test_mailbox", "test_py_compile", "test_zipimport", "test_dbm_dumb", "test_fileinput", "test_filecmp"]
TESTSUITE_SMOKE = ["test_glob", "test_fileinput"]


def prep_testsuite(cfg: Config, src: Path) -> None:
    rm_tree(src / "testsuite")
    (src / "testsuite").mkdir()


def run_testsuite(cfg: Config, root: Path) -> dict[str, float]:
    where = root / "testsuite"
    tests = TESTSUITE_SMOKE if cfg.smoke else TESTSUITE
    t0 = phase_start(cfg)
    r = subprocess.run(["python3", "-m", "test", "--tempdir", str(where), "-j2", *tests], cwd=where,
                       env={**os.environ, "TMPDIR": str(where)}, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError("testsuite: " + (" ".join(r.stdout.split("== Tests result")[-1].split())[:400]
                                            or r.stderr.strip()[-400:]))
    return {"testsuite": dt}


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
    Workload("reread", ["reread_first", "reread_again"], "open+read+close every file of the untarred tree, "
             "twice (a build re-reading its headers), fresh mount", prep_walk, run_reread),
    Workload("git_status", ["git_status", "git_status_again"],
             "git status --porcelain on a committed repository of the same files (first and second run)",
             prep_git, run_git),
    Workload("parallel", ["parallel4"], "4 processes: create+write 4 KiB, stat, stat+read a shared 64 KiB "
             "file, rename, list every 10th, unlink", prep_parallel, run_parallel),
    Workload("deep_tree", ["deep_tree", "deep_create", "deep_stat", "deep_remove"],
             f"a {DEEP_LEVELS}-level directory chain, each syscall by full path: mkdir every level, stat every "
             "level, rmdir every level (deep_tree = all three)", prep_deep, run_deep),
    Workload("testsuite", ["testsuite"], "CPython's tests of the file modules (shutil, tarfile, zipfile, tempfile, "
             "os, glob, pathlib, mailbox, ...; 2,474 tests, 2 workers) with their working and temporary "
             "directories on the mount; every test must pass", prep_testsuite, run_testsuite),
]}

METADATA_ROWS = ["small_create", "small_stat", "small_read", "small_delete", "untar", "walk_lstat",
                 "reread_first", "reread_again", "git_status", "git_status_again", "parallel4", "deep_tree"]
DATA_ROWS = ["seq_write", "seq_read"]
