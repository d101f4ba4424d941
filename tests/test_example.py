"""The README's "trace your own filesystem" example mounts, serves and traces."""

import subprocess
import sys
import time
from pathlib import Path

from helpers import is_mounted

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "traced_hello.py"


def test_wrapped_custom_filesystem_is_traced(workdir: Path) -> None:
    mnt = workdir / "hello"
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), str(mnt)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not is_mounted(mnt) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (mnt / "hello").read_text() == "Hello from a traced filesystem!\n"
        assert sorted(p.name for p in mnt.iterdir()) == ["hello"]
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)])
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "read('/hello', 4096, 0, 0) = 32" in err
    assert "getattr('/nope'" not in err and "readdir('/', 0, 0) = {entries=3}" in err
    assert "total" in err


FLAKY = EXAMPLE.parent / "flaky_disk.py"


def test_fault_layer_as_a_library(workdir: Path) -> None:
    src, mnt = workdir / "src", workdir / "mnt"
    src.mkdir()
    mnt.mkdir()
    (src / "f").write_bytes(b"abc")
    proc = subprocess.Popen([sys.executable, str(FLAKY), str(src), str(mnt)], stderr=subprocess.PIPE, text=True)
    results = []
    try:
        deadline = time.monotonic() + 20
        while not is_mounted(mnt) and time.monotonic() < deadline:
            time.sleep(0.02)
        for _ in range(6):
            try:
                results.append((mnt / "f").read_bytes())
            except OSError as e:
                results.append(e.strerror)
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)])
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert results.count("Input/output error") >= 2 and results.count(b"abc") >= 2, results
    assert "-> EIO  <<INJECTED>>" in err
    header = next(line for line in err.splitlines() if line.lstrip().startswith("% time"))
    assert "injected" in header.split()
