"""Mounting for tests: a real daemon process, always unmounted and reaped, even when the test fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FUSERMOUNT = "fusermount3"
MODE_ARGS = os.environ.get("FPT_MOUNT_ARGS", "").split()
IO_URING_NOTE = "requests go through FUSE over io_uring"
ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"


def set_enable_uring(value: str | None) -> str | None:
    """Set the kernel's FUSE io_uring switch; the value before (None if the kernel has none)."""
    try:
        with open(ENABLE_URING) as f:
            before = f.read().strip()
        if value is not None and value != before:
            with open(ENABLE_URING, "w") as f:
                f.write(value)
        return before
    except OSError:
        return None


@contextmanager
def kernel_io_uring(value: str) -> Iterator[None]:
    """The kernel's FUSE io_uring switch set to `value` ("Y", "N") inside, and back as it was after (it is shared
    kernel state)."""
    before = set_enable_uring(value)
    try:
        yield
    finally:
        set_enable_uring(before)


def is_mounted(path: str | os.PathLike[str]) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split(" ")[4] == target for line in f)


class Mount:
    """`with Mount(src, mnt, "-o", "allow_other") as m:` — daemon in the foreground as a child process.

    Traces go to `m.trace` (JSONL) unless `trace=False`. Teardown unmounts (lazily as a last resort), waits
    for the daemon and kills it only if it will not go.
    """

    def __init__(self, source: Path, mountpoint: Path, *args: str, trace: bool | str = True,
                 env: dict[str, str] | None = None) -> None:
        self.src = Path(source)
        self.mnt = Path(mountpoint)
        self.trace = self.mnt.parent / f"{self.mnt.name}.trace.jsonl"
        self.stderr_path = self.mnt.parent / f"{self.mnt.name}.stderr"
        cmd = [sys.executable, "-m", "fuse_passthrough"]
        if trace is True:
            cmd += ["--format", "jsonl", "--output", str(self.trace)]
        elif trace is False:
            cmd += ["--no-trace"]
        # FPT_MOUNT_ARGS (e.g. "--passthrough"): run a whole test module against another mount mode.
        self.cmd = cmd + MODE_ARGS + list(args) + [str(self.src), str(self.mnt)]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    def __enter__(self) -> Mount:
        self.src.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._stderr, env=self.env)
        deadline = time.monotonic() + 20
        while not is_mounted(self.mnt):
            if self.proc.poll() is not None:
                self._stderr.close()
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"mount did not appear: {self.stderr()}")
            time.sleep(0.02)
        os.stat(self.mnt)  # the first request waits for INIT: after this, the mount is serving
        if "--passthrough" in MODE_ARGS:  # a stage meant to test kernel passthrough must really use it
            assert "kernel passthrough:" in self.stderr(), self.stderr()
        if "io_uring" in MODE_ARGS:  # the same for io_uring (its threads register right after the INIT reply)
            deadline = time.monotonic() + 5
            while IO_URING_NOTE not in self.stderr() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert IO_URING_NOTE in self.stderr(), self.stderr()
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def unmount(self) -> int:
        """Unmount and wait for the daemon; returns its exit status."""
        assert self.proc is not None
        if self.returncode is not None:
            return self.returncode
        if is_mounted(self.mnt):
            subprocess.run([FUSERMOUNT, "-u", str(self.mnt)], capture_output=True)
        try:
            self.returncode = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run([FUSERMOUNT, "-uz", str(self.mnt)], capture_output=True)
            self.proc.kill()
            self.returncode = self.proc.wait(timeout=30)
        if is_mounted(self.mnt):
            subprocess.run([FUSERMOUNT, "-uz", str(self.mnt)], capture_output=True)
        self._stderr.close()
        return self.returncode

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            self.unmount()

    def events(self) -> list[dict[str, Any]]:
        """Events written so far (complete after unmount)."""
        if not self.trace.exists():
            return []
        with open(self.trace) as f:
            return [json.loads(line) for line in f if line.strip()]


def abort_connection(mountpoint: str | os.PathLike[str]) -> None:
    """Abort the FUSE connection of a hung mount (every request in flight fails with ENOTCONN), mounting fusectl
    for the time it takes if it is not mounted."""
    minor = os.minor(os.stat(mountpoint).st_dev) if is_mounted(mountpoint) else None
    if minor is None:
        return
    connections = "/sys/fs/fuse/connections"
    ours = not os.path.exists(f"{connections}/{minor}")
    if ours:
        subprocess.run(["mount", "-t", "fusectl", "fusectl", connections], capture_output=True)
    try:
        with open(f"{connections}/{minor}/abort", "w") as f:
            f.write("1")
    finally:
        if ours:
            subprocess.run(["umount", connections], capture_output=True)


def reap(pid: int, timeout: float = 30) -> int | None:
    """Wait for our child `pid` (a daemon that reparented to us as subreaper, say): its exit status, or None if
    it is still running after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    return None


def as_user(uid: int, gid: int, groups: list[int] | None = None) -> Callable[[], None]:
    """A preexec_fn that gives the child other credentials (no passwd entry needed)."""

    def drop() -> None:
        os.setgroups(groups if groups is not None else [gid])
        os.setgid(gid)
        os.setuid(uid)

    return drop


def run_as(uid: int, gid: int, cmd: list[str], groups: list[int] | None = None, **kw: Any
           ) -> subprocess.CompletedProcess[str]:
    """Run cmd with other credentials (no passwd entry needed)."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, preexec_fn=as_user(uid, gid, groups), **kw)




def wait_for(cond: Any, timeout: float = 10, what: str = "") -> None:
    """Poll `cond` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# statfs f_type of the filesystems whose files have no flush operation (ext2/3/4, xfs, btrfs, tmpfs): close()
# there has nothing to report, and a mount of them opens files with FOPEN_NOFLUSH (no FLUSH requests).
FLUSHLESS_FILESYSTEMS = {0xEF53, 0x58465342, 0x9123683E, 0x01021994}


def close_reports_nothing(path: str | os.PathLike[str]) -> bool:
    """Whether closes of files on `path`'s filesystem send no FLUSH through a default mount of it."""
    import ctypes
    import struct

    buf = ctypes.create_string_buffer(256)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.statfs(os.fsencode(os.fspath(path)), buf) == 0, os.strerror(ctypes.get_errno())
    return struct.unpack_from("=l", buf, 0)[0] & 0xFFFFFFFF in FLUSHLESS_FILESYSTEMS


# A "security.capability" value, a file capability (vfs_cap_data revision 2: cap_net_bind_service permitted and
# effective). A write to the file drops it, natively even root's.
FILE_CAPS = (0x02000001).to_bytes(4, "little") + (1 << 10).to_bytes(4, "little") + bytes(12)
