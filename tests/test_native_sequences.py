"""Sequences that once hung the mount or lost data (hard links read at once, renames to hidden-looking names),
each run natively and through the mount, default and strict mode, with a time limit.

A sequence that does not finish in time fails its test: the harness aborts the FUSE connection (fusectl) so that
no process stays in D state, and the mount is still unmounted by the fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Mount, abort_connection, run_as

SCRIPT = str(Path(__file__).with_name("native_sequences.py"))
sys.path.insert(0, str(Path(__file__).parent))
from native_sequences import SEQUENCES  # noqa: E402

PY = "/usr/bin/python3"  # runnable by every uid (the virtualenv's may not be)
TIME_LIMIT = 60  # the slowest sequence takes a few seconds; a hang never ends
MODES = {"default": (), "strict": ("-o", "timeout=0")}
OTHER_UID = 1000


def run_sequence(name: str, root: Path, uid: int = 0, mnt: Path | None = None) -> object:
    script = root.parent / "native_sequences.py"  # where every uid may read it
    if not script.exists():
        shutil.copy(SCRIPT, script)
        script.chmod(0o644)
    cmd = [PY, str(script), name, str(root)]
    try:
        if uid:
            done = run_as(uid, uid, cmd, timeout=TIME_LIMIT)
        else:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired:
        if mnt is not None:
            abort_connection(mnt)  # the processes stuck in the mount get ENOTCONN and exit
        pytest.fail(f"{name} did not finish within {TIME_LIMIT} s: hung")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(params=list(MODES))
def mode_mount(request: pytest.FixtureRequest, workdir: Path) -> Iterator[Mount]:
    src = workdir / "src"
    src.mkdir(mode=0o777)
    os.chmod(src, 0o777)
    with Mount(src, workdir / "mnt", "-o", "allow_other", *MODES[request.param], trace=False) as m:
        yield m


@pytest.mark.parametrize("uid", [0, OTHER_UID])
@pytest.mark.parametrize("name", [n for n in SEQUENCES if n != "concurrent_names"])
def test_sequence_as_natively(name: str, uid: int, workdir: Path, mode_mount: Mount) -> None:
    native = workdir / "native"
    native.mkdir(mode=0o777)
    os.chmod(native, 0o777)
    expected = run_sequence(name, native, uid)
    assert run_sequence(name, mode_mount.mnt, uid, mode_mount.mnt) == expected
    # what the mount left in SOURCE is what the native run left
    assert sorted(os.listdir(mode_mount.src)) == sorted(os.listdir(native))


def test_concurrent_names_no_hang_native_bytes(workdir: Path, mode_mount: Mount) -> None:
    """Writers (write(2) and mmap) and readers on three names of one file, threads and processes, for seconds."""
    native = workdir / "native"
    native.mkdir()
    expected = run_sequence("concurrent_names", native)
    assert run_sequence("concurrent_names", mode_mount.mnt, mnt=mode_mount.mnt) == expected
    data = (mode_mount.src / "f").read_bytes()
    assert data == (native / "f").read_bytes()
