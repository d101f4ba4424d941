"""Bad input: every misuse gives exactly one clear line on stderr, a non-zero status and no mount."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import Mount

PROG = [sys.executable, "-m", "fuse_passthrough"]
FUSERMOUNT = shutil.which("fusermount3") or "/usr/bin/fusermount3"

# Run the command in a private mount namespace where /dev is a tmpfs holding only /dev/null: no /dev/fuse.
NO_DEV_FUSE = ["unshare", "-m", "--propagation", "private", "sh", "-ec",
               'mount -t tmpfs none /dev; mknod -m 666 /dev/null c 1 3; exec "$@"', "sh"]
# ... or where fusermount3 is an empty, non-executable file (the binary is as good as missing; /bin is /usr/bin).
NO_FUSERMOUNT = ["unshare", "-m", "--propagation", "private", "sh", "-ec",
                 f'touch "$EMPTY"; chmod 644 "$EMPTY"; mount --bind "$EMPTY" {FUSERMOUNT}; exec "$@"', "sh"]


def fuse_mounts() -> set[str]:
    with open("/proc/mounts") as f:
        return {line for line in f if line.split(" ")[2].startswith("fuse")}


# (id, argv with SRC/MNT placeholders relative to the work dir, exit status, words the message must contain,
#  wrapper)
CASES: list[tuple[str, list[str], int, list[str], list[str]]] = [
    ("missing-source", ["nosuch", "mnt"], 1, ["source", "does not exist"], []),
    ("source-not-dir", ["file", "mnt"], 1, ["source", "not a directory"], []),
    ("missing-mountpoint", ["src", "nosuch"], 1, ["mountpoint", "does not exist"], []),
    ("mountpoint-not-dir", ["src", "file"], 1, ["mountpoint", "not a directory"], []),
    ("mountpoint-inside-source", ["src", "src/inner"], 1, ["inside the source"], []),
    ("source-inside-mountpoint", ["-o", "nonempty", "full/sub", "full"], 1, ["inside the mountpoint"], []),
    ("mountpoint-already-mounted", ["src", "busy"], 1, ["already mounted"], []),
    ("mountpoint-not-empty", ["src", "full"], 1, ["not empty", "nonempty"], []),
    ("unknown-option", ["-o", "allow_other,bogus", "src", "mnt"], 2, ["unknown mount option 'bogus'"], []),
    ("option-takes-no-value", ["-o", "ro=1", "src", "mnt"], 2, ["'ro' takes no value"], []),
    ("attr-timeout-not-number", ["-o", "attr_timeout=x", "src", "mnt"], 2, ["attr_timeout", "'x'"], []),
    ("entry-timeout-negative", ["-o", "entry_timeout=-1", "src", "mnt"], 2, ["entry_timeout"], []),
    ("attr-timeout-no-value", ["-o", "attr_timeout", "src", "mnt"], 2, ["attr_timeout"], []),
    ("max-read-zero", ["-o", "max_read=0", "src", "mnt"], 2, ["max_read", "positive integer"], []),
    ("fsname-empty", ["-o", "fsname=", "src", "mnt"], 2, ["fsname", "needs a value"], []),
    ("format-xml", ["--format", "xml", "src", "mnt"], 2, ["--format", "xml"], []),
    ("output-max-bytes-abc", ["--output-max-bytes", "abc", "src", "mnt"], 2, ["--output-max-bytes", "abc"], []),
    ("output-backups-negative", ["--output-backups", "-2", "src", "mnt"], 2, ["--output-backups"], []),
    ("pid-negative", ["--pid", "-1", "src", "mnt"], 2, ["--pid", "-1"], []),
    ("uid-not-number", ["--uid", "root", "src", "mnt"], 2, ["--uid", "root"], []),
    ("ops-unknown", ["--ops", "read,nosuchop", "src", "mnt"], 2, ["nosuchop"], []),
    ("exclude-ops-unknown", ["--exclude-ops", "nosuchop", "src", "mnt"], 2, ["nosuchop"], []),
    ("unknown-flag", ["--frobnicate", "src", "mnt"], 2, ["--frobnicate"], []),
    ("missing-arguments", ["src"], 2, ["MOUNTPOINT"], []),
    ("no-dev-fuse", ["src", "mnt"], 1, ["/dev/fuse"], NO_DEV_FUSE),
    ("no-fusermount3", ["src", "mnt"], 1, ["fusermount3 not found"], NO_FUSERMOUNT),
    ("output-is-directory", ["--output", "src", "src", "mnt"], 1, ["cannot write trace output"], []),
    ("output-dir-missing", ["--output", "nodir/t.jsonl", "src", "mnt"], 1, ["cannot write trace output"], []),
    ("summary-json-unwritable", ["--summary-json", "nodir/s.json", "src", "mnt"], 1, ["--summary-json"], []),
    ("background-bad-output", ["-b", "--output", "src", "src", "mnt"], 1, ["cannot write trace output"], []),
    ("fault-unknown-key", ["--fault", "op=write,colour=red,errno=EIO", "src", "mnt"], 2,
     ["--fault", "unknown key 'colour'"], []),
    ("fault-unknown-op", ["--fault", "op=scribble,errno=EIO", "src", "mnt"], 2, ["unknown op scribble"], []),
    ("fault-unknown-errno", ["--fault", "op=write,errno=EWHATEVER", "src", "mnt"], 2,
     ["unknown errno 'EWHATEVER'"], []),
    ("fault-probability-out-of-range", ["--fault", "op=read,errno=EIO,probability=2", "src", "mnt"], 2,
     ["probability must be in [0, 1]"], []),
    ("fault-malformed-duration", ["--fault", "op=read,delay=fast", "src", "mnt"], 2,
     ["malformed duration 'fast'"], []),
    ("fault-nothing-to-inject", ["--fault", "op=read", "src", "mnt"], 2, ["needs errno=, delay= or short="], []),
    ("fault-file-missing", ["--fault-file", "nosuch.rules", "src", "mnt"], 2,
     ["cannot read fault file 'nosuch.rules'"], []),
    ("fault-read-with-passthrough", ["--passthrough", "--fault", "op=read,delay=1ms", "src", "mnt"], 2,
     ["--passthrough and fault rules on read/write exclude each other"], []),
    ("fault-file-bad-line", ["--fault-file", "bad.rules", "src", "mnt"], 2, ["bad.rules:2:", "unknown key"], []),
    ("trace-option-and-output-disagree", ["--output", "a.jsonl", "-o", "trace=b.jsonl", "src", "mnt"], 2,
     ["--output", "-o trace", "disagree"], []),
    ("trace-format-option-xml", ["-o", "trace_format=xml", "src", "mnt"], 2, ["trace_format", "'xml'"], []),
    ("trace-option-unwritable", ["-o", "trace=nodir/t.jsonl", "src", "mnt"], 1, ["cannot write trace output"], []),
    ("log-option-in-foreground", ["-o", "log=d.log", "src", "mnt"], 2, ["'log'", "background"], []),
    ("rotation-without-output", ["--output-max-bytes", "1M", "src", "mnt"], 2,
     ["--output-max-bytes rotates a trace file", "--output FILE"], []),
    ("backups-without-output", ["--output-backups", "3", "src", "mnt"], 2, ["--output-backups", "--output FILE"], []),
    ("summary-json-without-trace", ["--no-trace", "--summary-json", "s.json", "src", "mnt"], 2,
     ["--summary-json", "--no-trace"], []),
    ("remount-with-flags", ["-o", "remount,ro", "--fault", "op=write,errno=EIO", "--output", "t.jsonl", "src",
                            "busy"], 2, ["-o remount changes mount options only", "--fault", "--output"], []),
    # the form mount.fuse3 runs (see test_mount_helper.py): the same one line before anything is started
    ("helper-form-unknown-option", ["src", "mnt", "-o", "rw,dev,suid,bogus"], 2, ["unknown mount option 'bogus'"],
     []),
    ("helper-form-missing-source", ["nosuch", "mnt", "-o", "rw,nodev,nosuid"], 1, ["source", "does not exist"], []),
]


@pytest.fixture
def tree(workdir: Path) -> Path:
    for d in ("src/inner", "mnt", "full/sub", "busy", "busysrc"):
        (workdir / d).mkdir(parents=True)
    (workdir / "file").write_text("x")
    (workdir / "bad.rules").write_text("op=write,errno=EIO\nop=write,errno=EIO,sometimes=1\n")
    return workdir


@pytest.mark.parametrize("argv,status,words,wrapper", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line(tree: Path, argv: list[str], status: int, words: list[str],
                                  wrapper: list[str]) -> None:
    env = dict(os.environ, EMPTY=str(tree / "empty"))
    before = fuse_mounts()
    with Mount(tree / "busysrc", tree / "busy", trace=False):  # for "already mounted"
        before_busy = fuse_mounts()
        try:
            r = subprocess.run(wrapper + PROG + argv, cwd=tree, capture_output=True, text=True, timeout=30,
                               env=env)
        finally:  # a command that mounted instead of refusing (and was killed at the timeout): unmount it
            after = fuse_mounts()
            for line in after - before_busy:
                if str(tree) in line:
                    subprocess.run(["fusermount3", "-u", "-z", line.split(" ")[1]], capture_output=True)
    assert r.returncode == status, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("fuse-passthrough:"), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0]
    assert r.stdout == ""
    assert {m for m in after - before_busy if str(tree) in m} == set()
    assert {m for m in fuse_mounts() - before if str(tree) in m} == set()
    assert not os.listdir(tree / "mnt")


def test_nonempty_option_allows_a_non_empty_mountpoint(tree: Path) -> None:
    (tree / "full" / "hidden").write_text("h")
    (tree / "src" / "visible").write_text("v")
    with Mount(tree / "src", tree / "full", "-o", "nonempty", trace=False) as m:
        assert sorted(os.listdir(m.mnt)) == ["inner", "visible"]
    assert m.returncode == 0
    assert sorted(os.listdir(tree / "full")) == ["hidden", "sub"]


def test_help_and_version_exit_zero(tree: Path) -> None:
    r = subprocess.run(PROG + ["--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("fuse-passthrough ")
    r = subprocess.run(PROG + ["--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "MOUNTPOINT" in r.stdout and r.stderr == ""
