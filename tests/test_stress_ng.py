"""Debian's stress-ng filesystem stressors, with --verify, against the mount (bounded in ops and time)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from helpers import Mount

pytestmark = pytest.mark.skipif(shutil.which("stress-ng") is None, reason="stress-ng not installed")

# stressor -> bogo-op bound (each also stops after --timeout)
STRESSORS = {
    "hdd": 2000, "dir": 2000, "rename": 5000, "link": 500, "symlink": 500, "xattr": 2000, "lockf": 5000,
    "flock": 5000, "fcntl": 2000, "fallocate": 200, "seek": 5000, "sync-file": 200, "copy-file": 200,
    "chmod": 200, "chown": 200, "utime": 5000, "io": 50, "readahead": 200, "mknod": 200, "fifo": 20000,
}


@pytest.mark.parametrize("stressor", list(STRESSORS))
def test_stressor(mount: Mount, stressor: str) -> None:
    cmd = ["stress-ng", f"--{stressor}", "2", f"--{stressor}-ops", str(STRESSORS[stressor]), "--timeout", "6s",
           "--verify", "--temp-path", str(mount.mnt), "--metrics-brief"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}\n{r.stdout}\n{r.stderr}\n{mount.stderr()}"
    assert "passed: 2" in r.stderr + r.stdout or "successful run completed" in r.stderr + r.stdout
    assert list(mount.src.iterdir()) == [], "stress-ng left files behind in the source"
