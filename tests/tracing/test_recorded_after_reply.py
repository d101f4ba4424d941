"""A traced request's event is made after its reply is sent, where the C trampolines send the replies
(lowlevel/_trampolines.c AFTER_REPLY, tracing/_recorder.c): the caller does not wait for its event. Through a real
mount (held_events_mount.py) whose sink holds every event until the test, after its own syscall has returned,
creates a flag file: the held event must see the flag. With replies sent from Python the event is made before the
reply, so it is held while the caller waits, and never sees the flag."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuse_passthrough.lowlevel.binding import DEFERRED_REPLIES
from fuse_passthrough.tracing.layer import Recorder
from helpers import is_mounted

HELPER = Path(__file__).with_name("held_events_mount.py")

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs /dev/fuse, root")


@contextlib.contextmanager
def _held_mount(tmp_path: Path, hold: float, *extra: str) -> Iterator[tuple[Path, Path, Path]]:
    """held_events_mount.py on tmp_path/src at tmp_path/mnt: (mnt, flag, log); unmounted and reaped after."""
    src, mnt, flag, log = tmp_path / "src", tmp_path / "mnt", tmp_path / "flag", tmp_path / "log"
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, str(HELPER), str(src), str(mnt), str(flag), str(log), str(hold),
                             *extra])
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(mnt):  # not os.path.ismount: a stat of the mount would be held too
            assert proc.poll() is None and time.monotonic() < deadline, "the mount did not come up"
            time.sleep(0.05)
        yield mnt, flag, log
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
            proc.kill()
            proc.wait()
    assert not is_mounted(mnt)


def _events(log: Path, timeout: float, until_lookup_of: str = "/f") -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        if any(e["op"] == "lookup" and e["path"] == until_lookup_of for e in events) or time.monotonic() > deadline:
            return events


@pytest.mark.parametrize("replies", ["trampolines", "python"])
def test_a_held_event_does_not_hold_its_caller(tmp_path: Path, replies: str) -> None:
    if replies == "trampolines" and (DEFERRED_REPLIES is None or Recorder is None):
        pytest.skip("the C modules are not built (setup.py)")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"data")
    hold = 10.0 if replies == "trampolines" else 1.0
    with _held_mount(tmp_path, hold, *(["--ctypes-replies"] if replies == "python" else [])) as (mnt, flag, log):
        st = os.stat(mnt / "f")  # a LOOKUP of /f: its event is held until the flag exists
        flag.touch()
        assert st.st_size == 4
        lookups = [e for e in _events(log, 30) if e["op"] == "lookup" and e["path"] == "/f"]
        assert len(lookups) == 1
        # trampolines: the reply went out first, so the stat returned while its event waited for the flag;
        # Python replies: the stat waited for its event, which saw no flag when its hold ran out
        assert lookups[0]["flag"] is (replies == "trampolines")


def test_events_held_up_stop_the_callers_at_a_bound(tmp_path: Path) -> None:
    """Events waiting for the sink (a writer far behind) hold up the callers once 1,024 are waiting (KEPT_BOUND in
    _recorder.c), as the sink's own bound did before events were made after the reply: memory stays bounded."""
    if DEFERRED_REPLIES is None or Recorder is None:
        pytest.skip("the C modules are not built (setup.py)")
    n = 3000
    (tmp_path / "src").mkdir()
    for i in range(n):
        (tmp_path / "src" / f"f{i}").touch()
    done = 0

    def client(mnt: Path) -> None:
        nonlocal done
        for i in range(n):
            os.stat(mnt / f"f{i}")  # a LOOKUP each
            done += 1

    with _held_mount(tmp_path, 60) as (mnt, flag, log):
        worker = threading.Thread(target=client, args=(mnt,))
        worker.start()
        try:
            time.sleep(3)  # 3,000 lookups take ~0.1 s when nothing holds them up
            stalled_at = done
        finally:
            flag.touch()
            worker.join(60)
        assert not worker.is_alive() and done == n
        assert 1000 <= stalled_at < 1200, stalled_at
        lookups = [e["path"] for e in _events(log, 30, f"/f{n - 1}") if e["op"] == "lookup"]
        assert lookups == [f"/f{i}" for i in range(n)]  # every event, in the order of the calls
