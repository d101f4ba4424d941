"""syscalls.py's calls on O_PATH descriptors (what a node holds): `utimens` and `fchmod_empty_path` change the
object the descriptor refers to, with UTIME_NOW/UTIME_OMIT as given and the caller's permissions, both through
AT_EMPTY_PATH and through the /proc/self/fd name used where the kernel refuses the flag."""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fuse_passthrough import syscalls

OTHER_UID = 1000

TIMES = [
    ((1_700_000_000, 123), (1_600_000_000, 456_789)),
    ((0, syscalls.UTIME_OMIT), (1_600_000_000, 1)),
    ((1_700_000_000, 5), (0, syscalls.UTIME_OMIT)),
    ((0, syscalls.UTIME_NOW), (0, syscalls.UTIME_OMIT)),
    ((0, syscalls.UTIME_OMIT), (0, syscalls.UTIME_NOW)),
]


@pytest.fixture(params=["AT_EMPTY_PATH", "/proc/self/fd"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each call both ways: AT_EMPTY_PATH where this kernel takes it, and the /proc name it falls back to."""
    if request.param == "/proc/self/fd":
        monkeypatch.setitem(syscalls._empty_path, "utimensat", False)
        monkeypatch.setitem(syscalls._empty_path, "fchmodat2", False)
    yield request.param
    if request.param == "AT_EMPTY_PATH":  # the kernel took it (utimensat: Linux >= 5.8): no fallback recorded
        assert syscalls._empty_path["utimensat"]


def _as_other_user(fn: Callable[[], object]) -> BaseException | None:
    """Run fn() in a thread whose fsuid is OTHER_UID (per thread, as the daemon's workers); its exception."""
    raised: list[BaseException] = []

    def run() -> None:
        syscalls.setfsuid(OTHER_UID)
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            raised.append(e)
        finally:
            syscalls.setfsuid(0)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return raised[0] if raised else None


@pytest.mark.parametrize("kind", ["file", "directory"])
@pytest.mark.parametrize("times", TIMES)
def test_utimens_on_an_o_path_descriptor(tmp_path: Path, way: str, kind: str,
                                         times: tuple[syscalls.Timespec, syscalls.Timespec]) -> None:
    target = tmp_path / "t"
    target.mkdir() if kind == "directory" else target.write_bytes(b"x")
    os.utime(target, ns=(1_000_000_000_000_000_000, 1_100_000_000_000_000_000))
    before = os.stat(target)
    fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        start = time.time_ns()
        syscalls.utimens(fd, times)
        after = os.stat(target)
    finally:
        os.close(fd)
    for (sec, nsec), got, old in ((times[0], after.st_atime_ns, before.st_atime_ns),
                                  (times[1], after.st_mtime_ns, before.st_mtime_ns)):
        if nsec == syscalls.UTIME_OMIT:
            assert got == old
        elif nsec == syscalls.UTIME_NOW:
            assert got >= start - 20_000_000  # the filesystem's clock tick
        else:
            assert got == sec * 10**9 + nsec


def test_utimens_checks_the_callers_permission(tmp_path: Path, way: str) -> None:
    f = tmp_path / "root-owned"
    f.write_bytes(b"x")
    os.chmod(tmp_path, 0o755)
    fd = os.open(f, os.O_PATH | os.O_CLOEXEC)
    try:
        err = _as_other_user(lambda: syscalls.utimens(fd, ((1, 0), (2, 0))))
        assert isinstance(err, OSError) and err.errno == errno.EPERM
        os.chmod(f, 0o666)  # writable: "now" is allowed to anyone who may write, explicit times to the owner only
        assert _as_other_user(lambda: syscalls.utimens(fd, ((0, syscalls.UTIME_NOW), (0, syscalls.UTIME_NOW)))) \
            is None
    finally:
        os.close(fd)


@pytest.mark.parametrize("mode", [0o600, 0o4755, 0o1777, 0o000])
def test_fchmod_on_an_o_path_descriptor(tmp_path: Path, way: str, mode: int) -> None:
    for target in (tmp_path / "file", tmp_path / "dir"):
        target.mkdir() if target.name == "dir" else target.write_bytes(b"x")
        fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            syscalls.fchmod_empty_path(fd, mode)
        finally:
            os.close(fd)
        assert stat.S_IMODE(os.stat(target).st_mode) == mode


def test_fchmod_checks_the_callers_permission(tmp_path: Path, way: str) -> None:
    f = tmp_path / "root-owned"
    f.write_bytes(b"x")
    fd = os.open(f, os.O_PATH | os.O_CLOEXEC)
    try:
        err = _as_other_user(lambda: syscalls.fchmod_empty_path(fd, 0o777))
    finally:
        os.close(fd)
    assert isinstance(err, OSError) and err.errno == errno.EPERM
    assert stat.S_IMODE(os.stat(f).st_mode) != 0o777


def test_close_keeping_gil_closes_and_reports_errors(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"")
    fd = os.open(f, os.O_PATH | os.O_CLOEXEC)
    syscalls.close_keeping_gil(fd)
    with pytest.raises(OSError) as e:  # the number is free again
        os.fstat(fd)
    assert e.value.errno == errno.EBADF
    with pytest.raises(OSError) as e:
        syscalls.close_keeping_gil(fd)
    assert e.value.errno == errno.EBADF
