from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import MODE_ARGS, Mount, is_mounted, kernel_io_uring


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long load test, run by `make soak` only")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("-m") == "soak":
        return
    skip = pytest.mark.skip(reason="soak test: run with `make soak`")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse="io_uring" in MODE_ARGS)
def io_uring_stage() -> Iterator[None]:
    """The kernel's FUSE io_uring switched on for the session (the io_uring stage, FPT_MOUNT_ARGS="-o io_uring"),
    and back as it was after."""
    with kernel_io_uring("Y"):
        yield


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory every uid can traverse (tmp_path's parents are 0700)."""
    d = Path("/tmp") / f"fpt-{os.getpid()}-{tmp_path.name}"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    yield d
    for sub in d.iterdir():
        if sub.is_dir() and is_mounted(sub):
            subprocess.run(["fusermount3", "-uz", str(sub)])
    subprocess.run(["rm", "-rf", "--one-file-system", str(d)])


@pytest.fixture
def mount(workdir: Path) -> Iterator[Mount]:
    """SOURCE and a live mount of it (allow_other, JSONL trace), native reference dir alongside."""
    src = workdir / "src"
    src.mkdir(mode=0o755)
    os.chmod(src, 0o777)
    with Mount(src, workdir / "mnt", "-o", "allow_other") as m:
        yield m
