"""A private mount of a directory for one run (`trace -- CMD`, `demo`): a daemon of its own session serving SOURCE
at a fresh temporary mount point, its trace in a JSONL file beside it, all removed afterwards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from .errors import UsageError
from .mount import inside, is_mountpoint, unmount


def private_parent(source: str) -> str:
    """Where the private mount point and its files go: the first of the usual temporary directories that is outside
    `source` (a mount point inside SOURCE would make the filesystem see itself, and a trace file there would be
    one of the files CMD sees)."""
    candidates = [tempfile.gettempdir(), os.environ.get("XDG_RUNTIME_DIR"), "/run", "/dev/shm", "/var/tmp"]
    for d in candidates:
        if d and os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK) and not inside(os.path.realpath(d), source):
            return d
    tried = ", ".join(dict.fromkeys(d for d in candidates if d))
    raise UsageError(f"no place for a private mount point outside the source '{source}' (tried {tried}): "
                     "trace a directory below it (--source DIR)")


class PrivateMount:
    """A daemon serving `source` at a fresh temporary directory, writing a JSONL trace to a temporary file."""

    def __init__(self, source: str, daemon_args: list[str] | None = None) -> None:
        self.source = os.path.realpath(source)
        self.dir = tempfile.mkdtemp(prefix="fuse-passthrough-", dir=private_parent(self.source))
        self.mountpoint = os.path.join(self.dir, "mnt")
        os.mkdir(self.mountpoint)
        self.trace_path = os.path.join(self.dir, "trace.jsonl")
        self.stderr_path = os.path.join(self.dir, "daemon.log")
        self.cmd = [sys.executable, "-m", "fuse_passthrough", "--format", "jsonl", "--output", self.trace_path,
                    "--no-summary", *(daemon_args or []), self.source, self.mountpoint]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not is_mountpoint(self.mountpoint):
            if self.proc.poll() is not None:
                raise UsageError(f"the filesystem did not start: {self.daemon_log().strip()}")
            if time.monotonic() > deadline:
                raise UsageError("the filesystem did not come up in time")
            time.sleep(0.01)

    def daemon_log(self) -> str:
        try:
            return Path(self.stderr_path).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int | None:
        """Unmount (waiting out a busy mount briefly, then lazily), reap the daemon, remove the mount point."""
        status = None
        if self.proc is not None:
            for _ in range(50):
                if not is_mountpoint(self.mountpoint) or unmount(self.mountpoint):
                    break
                time.sleep(0.1)  # still busy: a straggling child of CMD
            else:
                unmount(self.mountpoint, lazy=True)
            try:
                status = self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                status = self.proc.wait()
        try:
            os.rmdir(self.mountpoint)
        except OSError:
            pass
        return status

    def events(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.trace_path, "rb") as f:
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        event = orjson.loads(line)  # a third of json.loads's time
                    except orjson.JSONDecodeError:  # a name that is not UTF-8: its escaped lone surrogates
                        event = json.loads(line)
                    yield event
        except FileNotFoundError:
            return

    def cleanup(self) -> None:
        if not is_mountpoint(self.mountpoint):
            shutil.rmtree(self.dir, ignore_errors=True)
