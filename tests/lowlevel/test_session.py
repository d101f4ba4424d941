"""The low-level binding end to end: hello_ll.py (a read-only file system on LowLevelSession) mounted through
the kernel with libfuse 3.14 (the system's) and 3.17 (FUSE_LIBRARY_PATH, the build in .cache), multi- and
single-threaded, and read with ls, stat, cat, getfattr and statvfs. Each daemon is a child process, unmounted
with fusermount3 in teardown and waited for."""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELLO = Path(__file__).with_name("hello_ll.py")
BUILT_317 = ROOT / ".cache/libfuse-3.17/lib/libfuse3.so.4"

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0,
                                reason="needs /dev/fuse and root (libfuse 3.17 is built without fusermount3)")


def _env(lib: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FUSE_LIBRARY_PATH"}
    if lib:
        env["FUSE_LIBRARY_PATH"] = lib
    return env


@functools.cache
def _version(lib: str | None) -> tuple[int, ...]:
    r = subprocess.run([sys.executable, "-c", "from fuse_passthrough.lowlevel import binding; "
                        "print(*binding.VERSION)"], env=_env(lib), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return tuple(int(x) for x in r.stdout.split())


def _library(version: str) -> str | None:
    """The FUSE_LIBRARY_PATH that gives libfuse `version` (None: the system's), or skip."""
    system = _version(None)[:2]
    if version == "3.14":
        if system != (3, 14):
            pytest.skip(f"the system's libfuse is {system}, not 3.14")
        return None
    if system >= (3, 17):
        return None
    if not BUILT_317.exists():
        pytest.skip("libfuse 3.17 absent: `make libfuse-3.17` builds it into .cache/libfuse-3.17")
    return str(BUILT_317)


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


@dataclass
class Hello:
    mnt: Path
    data: bytes
    status_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes]

    def status(self) -> list[dict]:
        if not self.status_path.exists():
            return []
        return [json.loads(line) for line in self.status_path.read_text().splitlines()]

    def run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(cmd), cwd=self.mnt, capture_output=True, text=True, timeout=30)

    def stop(self) -> int:
        """Unmount (lazily as a last resort), wait for the daemon, and return its exit status."""
        if _mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True)
            self.proc.kill()
            self.proc.wait(timeout=20)
            raise
        finally:
            if _mounted(self.mnt):
                subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True)


@pytest.fixture
def start_hello(tmp_path: Path) -> Iterator:
    started: list[Hello] = []

    def start(lib: str | None, *flags: str) -> Hello:
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        data = os.urandom(300_000)
        (tmp_path / "data").write_bytes(data)
        log = tmp_path / "daemon.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, str(HELLO), str(mnt), str(tmp_path / "data"),
                                     str(tmp_path / "status"), *flags], env=_env(lib), stdout=out, stderr=out)
        h = Hello(mnt, data, tmp_path / "status", log, proc)
        started.append(h)
        deadline = time.monotonic() + 30
        while not _mounted(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"hello_ll did not mount (exit {proc.poll()}):\n{log.read_text()}")
            time.sleep(0.05)
        os.stat(mnt)  # waits for INIT: its status line is written by then
        return h

    yield start
    for h in started:
        if h.proc.poll() is None or _mounted(h.mnt):
            h.stop()


@pytest.mark.parametrize("version,flags", [
    ("3.14", ()),
    ("3.14", ("--single-threaded", "--plus")),
    ("3.14", ("--ctypes-replies", "--plus")),
    ("3.17", ("--passthrough", "--plus")),
    ("3.17", ("--single-threaded",)),
    ("3.17", ("--ctypes-replies", "--passthrough")),
    ("3.14", ("--clone-fd",)),
    ("3.17", ("--clone-fd", "--passthrough")),
], ids=["3.14-mt", "3.14-st-plus", "3.14-ctypes-replies", "3.17-mt-plus-passthrough", "3.17-st",
        "3.17-ctypes-replies-passthrough", "3.14-clone-fd", "3.17-clone-fd-passthrough"])
def test_hello_through_the_kernel(version: str, flags: tuple[str, ...], start_hello) -> None:
    h: Hello = start_hello(_library(version), *flags)
    init = h.status()[0]
    assert init["event"] == "init"
    assert tuple(init["version"][:2]) == tuple(int(x) for x in version.split("."))
    assert init["supports_passthrough"] is (version == "3.17")
    # replies sent by the C trampolines (the module is built by make), or from Python where asked
    assert init["trampolines"] is ("--ctypes-replies" not in flags)
    # With them, the session's I/O is theirs on both versions: workers wait for requests in poll on a
    # non-blocking fd (libfuse's own I/O reads a blocking one).
    assert init["nonblocking"] is init["trampolines"]

    ls = h.run("ls", "-1a")
    assert sorted(ls.stdout.split()) == [".", "..", "boom", "data", "hello", "pt"], ls.stderr
    st = h.run("stat", "-c", "%s %a %F %i %Y", "hello", "data", ".")
    assert st.returncode == 0, st.stderr
    assert st.stdout.splitlines() == ["13 444 regular file 2 1700000000", "300000 444 regular file 3 1700000000",
                                      "0 755 directory 1 1700000000"]
    assert h.run("cat", "hello").stdout == "Hello World!\n"
    assert (h.mnt / "data").read_bytes() == h.data        # fuse_reply_data from the file's fd
    assert (h.mnt / "pt").read_bytes() == h.data
    with open(h.mnt / "data", "rb") as f:
        f.seek(123_457)
        assert f.read(1000) == h.data[123_457:124_457]
    for _ in range(2):  # an unexpected exception: EIO, logged once
        boom = h.run("stat", "boom")
        assert boom.returncode != 0 and "Input/output error" in boom.stderr
    missing = h.run("stat", "missing")
    assert missing.returncode != 0 and "No such file" in missing.stderr
    assert os.getxattr(h.mnt / "hello", "user.greeting") == b"hi"
    assert os.listxattr(h.mnt / "hello") == ["user.greeting"]
    # The binding answers size queries (size 0) and too-small buffers (ERANGE) from the handler's full value.
    libc = ctypes.CDLL(None, use_errno=True)
    path, name, buf = str(h.mnt / "hello").encode(), b"user.greeting", ctypes.create_string_buffer(16)
    assert libc.getxattr(path, name, None, 0) == 2
    assert libc.getxattr(path, name, buf, 1) == -1 and ctypes.get_errno() == errno.ERANGE
    assert libc.listxattr(path, None, 0) == len(b"user.greeting\0")
    assert libc.listxattr(path, buf, 3) == -1 and ctypes.get_errno() == errno.ERANGE
    with pytest.raises(OSError) as exc:
        os.getxattr(h.mnt / "data", "user.greeting")
    assert exc.value.errno == 61  # ENODATA
    sv = os.statvfs(h.mnt)
    assert (sv.f_bsize, sv.f_namemax, sv.f_blocks) == (4096, 255, 1000)
    # A write's data: a view of libfuse's buffer, not a copy, released when the handler returns (kept, it
    # fails instead of showing the next request's bytes).
    assert (h.mnt / "sink").read_bytes() == b"NoneType b'' nothing written"
    fd = os.open(h.mnt / "sink", os.O_WRONLY)
    try:
        assert os.pwrite(fd, b"written data", 0) == 12
    finally:
        os.close(fd)
    assert (h.mnt / "sink").read_bytes() == b"memoryview b'written data' released"
    if "--clone-fd" in flags:  # each worker reads its own clone of the session's fd (3.17: ours, non-blocking)
        fds = [os.path.join(f"/proc/{h.proc.pid}/fd", n) for n in os.listdir(f"/proc/{h.proc.pid}/fd")]
        fuse_fds = [fd for fd in fds if os.path.realpath(fd) == "/dev/fuse"]
        assert len(fuse_fds) >= 2, fuse_fds
        nonblocking = []
        for fd in fuse_fds:
            with open(fd.replace("/fd/", "/fdinfo/")) as info:
                fd_flags = next(int(line.split()[1], 8) for line in info if line.startswith("flags:"))
            nonblocking.append(bool(fd_flags & os.O_NONBLOCK))
        # 3.17 leaves cloning to the session's I/O (ours: clones wait in poll too); 3.14 clones blocking fds
        assert nonblocking.count(True) == (len(fuse_fds) if version == "3.17" else 1), nonblocking

    assert h.stop() == 0
    assert not _mounted(h.mnt)
    log = h.log_path.read_text()
    assert log.count("unexpected RuntimeError") == 1, log
    assert "without -o clone_fd" not in log and "failed to clone" not in log, log
    destroy = h.status()[-1]
    assert destroy["event"] == "destroy"
    counts = destroy["counts"]
    assert counts.get("read_2") and counts.get("read_3")
    if "--plus" in flags:
        assert counts.get("readdirplus"), counts
    if "--single-threaded" in flags:
        assert destroy["threads"] == 1
    if init.get("passthrough"):  # the kernel read /pt from the backing file itself
        assert "read_4" not in counts, counts
    else:
        assert counts.get("read_4")


def test_loaded_library() -> None:
    """In this process: the library FUSE_LIBRARY_PATH names (else the system's), and the layout for its version."""
    from fuse_passthrough.lowlevel import abi, binding

    expected = os.environ.get("FUSE_LIBRARY_PATH")
    if expected:
        assert binding.LIBRARY_PATH == expected
    assert binding.LAYOUT is abi.layout_for(binding.VERSION[:2])
    assert binding.supports_passthrough is (binding.VERSION[:2] >= (3, 17))
    assert binding.FileInfo is binding.LAYOUT.file_info
    if binding.supports_passthrough:
        assert binding.FileInfo.backing_id.offset == 36
    else:
        with pytest.raises(OSError):
            binding.passthrough_open(0, 0)


_STATS = ("import os, sys\n"
          "for _ in range(int(sys.argv[2])):\n"
          "    os.stat(sys.argv[1])\n")


def _stat_clients(path: Path, clients: int, calls: int) -> list[subprocess.Popen[bytes]]:
    """`clients` processes, each stat()ing `path` `calls` times (a LOOKUP each: entry timeout 0)."""
    return [subprocess.Popen([sys.executable, "-c", _STATS, str(path), str(calls)]) for _ in range(clients)]


@pytest.mark.parametrize("version", ["3.14", "3.17"])
def test_parked_workers_serve_around_a_blocked_request(version: str, start_hello) -> None:
    """-o park_us (loop(park_us=...)): with two workers and parallel clients, a worker that finishes while the
    other runs a request parks instead of reading the next; a request blocked for longer than a step does not make
    the other worker park, so clients are served around it. The step here (50 ms) would make each of the 800
    stats wait a step if it did: 40 s at least, not within the blocked request's 3 s."""
    h: Hello = start_hello(_library(version), "--max-threads=2", "--park-us=50000")
    blocked = subprocess.Popen([sys.executable, "-c", "import os, sys; os.stat(sys.argv[1])", str(h.mnt / "slow")])
    try:
        time.sleep(0.5)  # the slow GETATTR is inside its handler, older than a step
        clients = _stat_clients(h.mnt / "hello", 4, 200)
        for c in clients:
            assert c.wait(timeout=60) == 0
        assert blocked.poll() is None, "the 800 stats were not served while the slow GETATTR was blocked"
        assert blocked.wait(timeout=30) == 0
        clients = _stat_clients(h.mnt / "hello", 4, 500)  # nothing blocked: workers park
        for c in clients:
            assert c.wait(timeout=120) == 0
    finally:
        if blocked.poll() is None:
            blocked.kill()
            blocked.wait()
    assert h.stop() == 0
    destroy = h.status()[-1]
    assert destroy["counts"]["lookup"] >= 2801, destroy
    assert destroy["parks"] > 0, destroy


def test_no_parking_at_park_us_0(start_hello) -> None:
    """The same parallel clients with park_us 0: no worker ever parks."""
    h: Hello = start_hello(None, "--max-threads=2")
    for c in _stat_clients(h.mnt / "hello", 4, 500):
        assert c.wait(timeout=120) == 0
    assert h.stop() == 0
    destroy = h.status()[-1]
    assert destroy["counts"]["lookup"] >= 2000 and destroy["parks"] == 0, destroy
