"""What the events say about callers, read from /proc without ever waiting on the caller.

A request's caller may be blocked in the kernel on that very request, holding locks that some /proc files take:
an exec holds the task's exec_update_lock while it closes close-on-exec files (a FLUSH to us), and a page fault
holds the mm's mmap_lock while it reads a page (a READ). So only files that take no such lock are read while
serving a request: `comm` and `status`. `stat` (exec_update_lock, since the ptrace_may_access fix) and
`cmdline` (mmap_lock) are not, or only with a bounded wait on another thread.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

from .events import KERNEL_COMM


class ProcessNames:
    """pid -> comm (and optionally cmdline) from /proc; None when the process is gone.

    Each pid's /proc/PID/comm stays open, so a read is a single pread, and a reused pid makes the old descriptor
    fail (ESRCH) and be reopened. Reads are cached: a syscall on the hot path releases the GIL, which costs far
    more than the read itself when several requests are in flight. The name is read at every event while the
    process is young (the first YOUNG_NS after its first event: where fork is followed by exec, which renames
    it), then at most once per TTL_NS.
    """

    YOUNG_NS = 50_000_000
    TTL_NS = 1_000_000_000
    MAX_OPEN = 512
    CMDLINE_WAIT_S = 0.01

    def __init__(self, with_cmdline: bool = False) -> None:
        self.with_cmdline = with_cmdline
        # pid -> (first seen, last read, comm, cmdline), times in perf_counter ns (the tracing layer reads it
        # directly for the cache hit that most events are)
        self.cache: dict[int, tuple[int, int, str | None, list[str] | None]] = {}
        self._fds: dict[tuple[int, str], int] = {}
        # One lock for the descriptor table: a descriptor closed by one thread while another reads it could be
        # reused by a file opened meanwhile, and its contents would be read as a process name.
        self._lock = threading.Lock()
        # Its one thread starts with the first read (ThreadPoolExecutor starts threads on demand).
        self._cmdline_reader: concurrent.futures.ThreadPoolExecutor | None = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fpt-cmdline") if with_cmdline else None)

    def _read(self, pid: int, what: str, size: int) -> bytes | None:
        with self._lock:
            return self._read_locked(pid, what, size)

    def _read_locked(self, pid: int, what: str, size: int) -> bytes | None:
        key = (pid, what)
        for _attempt in range(2):
            fd = self._fds.get(key)
            if fd is None:
                try:
                    fd = os.open(f"/proc/{pid}/{what}", os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    return None
                if len(self._fds) >= self.MAX_OPEN:
                    self._evict()
                self._fds[key] = fd
            try:
                data = os.pread(fd, size, 0)
            except OSError:
                data = b""
            if data:
                return data
            self._forget(key, fd)  # the process is gone, or the pid now belongs to another one
        return None

    def _forget(self, key: tuple[int, str], fd: int) -> None:
        if self._fds.get(key) == fd:
            del self._fds[key]
            os.close(fd)

    def _evict(self) -> None:
        for key in list(self._fds)[: self.MAX_OPEN // 2]:
            fd = self._fds.pop(key, None)
            if fd is not None:
                os.close(fd)

    def lookup(self, pid: int, now_ns: int) -> tuple[str | None, list[str] | None]:
        if pid == 0:  # in the cache too, where the tracing layer looks first (releases and forgets are pid 0)
            self.cache[0] = (now_ns - self.YOUNG_NS - 1, now_ns, KERNEL_COMM, None)
            return KERNEL_COMM, None
        hit = self.cache.get(pid)
        if hit is not None and now_ns - hit[0] > self.YOUNG_NS and now_ns - hit[1] < self.TTL_NS:
            return hit[2], hit[3]
        comm, cmdline = self._read_names(pid)
        if len(self.cache) > 4096:
            self.cache.clear()
        self.cache[pid] = (hit[0] if hit is not None else now_ns, now_ns, comm, cmdline)
        return comm, cmdline

    def _read_names(self, pid: int) -> tuple[str | None, list[str] | None]:
        raw = self._read(pid, "comm", 64)
        if raw is None:
            return None, None
        comm = raw.rstrip(b"\n").decode("utf-8", "replace")
        return comm, self._read_cmdline(pid) if self.with_cmdline else None

    def _read_cmdline(self, pid: int) -> list[str] | None:
        """None when the process is gone or its mm is locked for longer than CMDLINE_WAIT_S (then the read
        finishes on the reader thread once the caller moves on, and is dropped); None after close() too."""
        reader = self._cmdline_reader
        if reader is None:
            return None
        try:
            data = reader.submit(_read_proc, pid, "cmdline", 65536).result(self.CMDLINE_WAIT_S)
        except (concurrent.futures.TimeoutError, RuntimeError):  # RuntimeError: shut down meanwhile
            return None
        if data is None:
            return None
        return [a.decode("utf-8", "replace") for a in data.split(b"\0")[:-1]]

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            if self._cmdline_reader is not None:
                self._cmdline_reader.shutdown(wait=False, cancel_futures=True)
                self._cmdline_reader = None


def parent_pid(pid: int) -> int:
    """The parent of `pid`; 0 when it is gone. From /proc/PID/status, which takes no lock that the caller of
    a request can hold (see the module's docstring)."""
    data = _read_proc(pid, "status", 4096)
    if data is None:
        return 0
    start = data.find(b"\nPPid:")
    if start < 0:
        return 0
    return int(data[start + 6:data.index(b"\n", start + 6)])


def _read_proc(pid: int, what: str, size: int) -> bytes | None:
    try:
        fd = os.open(f"/proc/{pid}/{what}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, size) or None
    except OSError:
        return None
    finally:
        os.close(fd)
