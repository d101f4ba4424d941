"""Real programs run under `fuse-passthrough trace`, for the findings and diff tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

FP = [sys.executable, "-m", "fuse_passthrough"]


def fuse_mounts(under: Path) -> list[str]:
    """`trace`'s private mounts (in a fuse-passthrough-* directory of $TMPDIR) below `under`."""
    with open("/proc/mounts") as f:
        return [line for line in f if line.split()[1].startswith(f"{under}/fuse-passthrough-")]


def traced(workdir: Path, name: str, program: str, *trace_args: str) -> Path:
    """Run `program` (Python, in isolated mode: no lookups of modules in its directory) under `trace`, in a fresh
    directory `workdir/name`; the JSONL trace's path. The private mount is gone when `trace` returns."""
    d = workdir / name
    d.mkdir()
    (d / "program.py").write_text(textwrap.dedent(program))
    out = workdir / f"{name}.jsonl"
    p = subprocess.run(FP + ["trace", "--source", str(d), "--format", "jsonl", "--output", str(out), "--no-summary",
                             *trace_args, "--", sys.executable, "-I", "program.py"],
                       cwd=d, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "TMPDIR": str(workdir)})  # its private mount: ours alone to check
    assert p.returncode == 0, p.stderr
    assert not fuse_mounts(workdir)
    return out


def report_json(trace: Path, *args: str) -> dict[str, Any]:
    p = subprocess.run(FP + ["report", "--json", *args, str(trace)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def findings(trace: Path, *args: str) -> dict[str, dict[str, Any]]:
    """The report's findings by id."""
    return {f["id"]: f for f in report_json(trace, *args)["findings"]}
