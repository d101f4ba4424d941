"""Helpers every part of the benchmark shares: paths, sizes, logging, mount detection, cleanup."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MiB = 1 << 20
GiB = 1 << 30


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": MiB, "g": GiB}
    mult = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if text[-1:].lower() in units else text
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 8M, 256M, 1G)")
    return int(digits) * mult


def fstype_at(path: str | os.PathLike[str]) -> str | None:
    """Filesystem type of the topmost mount exactly at `path`, None when nothing is mounted there."""
    target = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split(" ")
            if parts[4].replace("\\040", " ") == target:
                found = parts[parts.index("-") + 1]
    return found


def is_fuse_mounted(path: str | os.PathLike[str]) -> bool:
    t = fstype_at(path)
    return t is not None and t.startswith("fuse")


def drop_caches() -> bool:
    """Write back and drop the page cache, dentries and inodes (root only). False when not permitted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def scratch(prefix: str) -> tuple[Path, Path, Path]:
    """(work, src, mnt): a new directory in /tmp with an empty SOURCE and MOUNTPOINT, SOURCE holding a small file
    `f`, for the single-file loops (remove `work` with rm_tree)."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    src, mnt = work / "src", work / "mnt"
    src.mkdir()
    mnt.mkdir()
    (src / "f").write_bytes(b"hello\n")
    return work, src, mnt


def rm_tree(path: Path) -> None:
    """Remove a tree natively, never crossing into another filesystem (a forgotten mount)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def cmd_output(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
