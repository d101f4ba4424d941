"""mount(8), fstab and umount: `mount -t fuse.fuse-passthrough SOURCE MOUNTPOINT -o OPTS` through mount.fuse3.

Each test works in a private mount namespace (`unshare -m --propagation private`), kept alive by a `sleep` whose
/proc/PID/root the test uses to reach the mount. In it, /usr/local/sbin holds this checkout's program, linked by
tools/install-launcher.sh as `make test` does for /usr/local/bin (mount(8) removes PATH, so mount.fuse3's shell
searches /usr/local/sbin first), and /run/mount (libmount's utab) and /etc/fstab are the namespace's own, so that
nothing of it reaches the machine. The daemon becomes the test's child when mount(8) exits (the test process is
a subreaper meanwhile): it is reaped, its exit status checked, and killed by pid only if it will not go.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import is_mounted, reap

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = Path(sys.executable).parent / "fuse-passthrough"  # the venv's console script
PR_SET_CHILD_SUBREAPER = 36
MOUNT_OPTS = "rw,nofail,_netdev,x-systemd.automount,noatime"

# Prepares the namespace, then waits. $1: the directory to show at /usr/local/sbin, $2: an fstab or "", $3: "dev"
# for a /dev of our own (a tmpfs with the few devices needed; the test then binds a syslog socket at /dev/log),
# $4: "bin" for an empty /usr/local/bin of our own.
SETUP = r"""
set -e
mkdir -p /run/mount /usr/local/sbin
mount -t tmpfs -o mode=755 tmpfs /run/mount
mount --bind "$1" /usr/local/sbin
if [ -n "$2" ]; then mount --bind "$2" /etc/fstab; fi
if [ "$3" = dev ]; then
  mount -t tmpfs -o mode=755 tmpfs /dev
  mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/urandom c 1 9
  mknod -m 666 /dev/fuse c 10 229; ln -s /proc/self/fd /dev/fd
fi
if [ "$4" = bin ]; then mount -t tmpfs -o mode=755 tmpfs /usr/local/bin; fi
echo ready
exec sleep infinity
"""


class Namespace:
    """A private mount namespace; `run` runs a command in it, `path` reaches a path in it from outside."""

    def __init__(self, workdir: Path, fstab: Path | None = None, own_dev: bool = False,
                 own_local_bin: bool = False) -> None:
        """own_local_bin: an empty /usr/local/bin and /usr/local/sbin (for `make install-launcher`); else the
        program in /usr/local/sbin."""
        sbin = workdir / "sbin"
        sbin.mkdir(parents=True)
        assert PROGRAM.exists(), f"{PROGRAM}: run the tests from the venv (make test)"
        if not own_local_bin:
            r = subprocess.run([str(ROOT / "tools" / "install-launcher.sh"), str(PROGRAM),
                                str(sbin / "fuse-passthrough")], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0 and (sbin / "fuse-passthrough").resolve() == PROGRAM.resolve(), r
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", SETUP, "sh",
                                      str(sbin), str(fstab or ""), "dev" if own_dev else "",
                                      "bin" if own_local_bin else ""],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line != b"ready\n":
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"namespace setup failed: {self.proc.stderr.read() if self.proc.stderr else ''!r}")
        self.pid = self.proc.pid

    def run(self, *cmd: str | os.PathLike[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "--", *map(str, cmd)], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def path(self, path: str | os.PathLike[str]) -> Path:
        return Path(f"/proc/{self.pid}/root") / Path(path).relative_to("/")

    def mounted(self, path: str | os.PathLike[str]) -> str | None:
        """The namespace's mountinfo line for `path`, if it is a mountpoint there."""
        with open(f"/proc/{self.pid}/mountinfo") as f:
            for line in f:
                if line.split(" ")[4] == os.path.realpath(path):
                    return line
        return None

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def our_daemons(workdir: Path) -> set[int]:
    """Our children (reparented daemons) that serve something in workdir."""
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"fuse" in cmdline and str(workdir).encode() in cmdline:
            found.add(int(name))
    return found


@pytest.fixture
def namespaces(workdir: Path) -> Iterator[Any]:
    """`namespaces(fstab=None, own_dev=False)` -> a Namespace; at teardown every mount of workdir in them is
    unmounted, every daemon reaped (killed by pid only if it will not go), every namespace ended."""
    libc = ctypes.CDLL(None, use_errno=True)
    made: list[Namespace] = []

    def make(fstab: Path | None = None, own_dev: bool = False, own_local_bin: bool = False) -> Namespace:
        ns = Namespace(workdir / f"ns{len(made)}", fstab, own_dev, own_local_bin)
        made.append(ns)
        return ns

    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield make
    finally:
        try:
            for ns in made:
                for mnt in sorted(workdir.glob("*mnt*")):
                    if ns.mounted(mnt):
                        ns.run("umount", mnt)
                    if ns.mounted(mnt):
                        ns.run("fusermount3", "-uz", mnt)
            for pid in our_daemons(workdir):
                if reap(pid, 20) is None:
                    os.kill(pid, signal.SIGKILL)
                    reap(pid, 20)
        finally:
            for ns in made:
                ns.close()
            libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def trace_events(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL trace, each required to be complete and parseable."""
    data = path.read_text()
    assert data.endswith("\n"), "trace ends with a partial line"
    return [json.loads(line) for line in data.splitlines()]


def daemon_pid(log: Path) -> int:
    found = re.search(r"^fuse-passthrough: mounted .* \(pid (\d+)\)", log.read_text(), re.M)
    assert found, log.read_text()
    return int(found.group(1))


def summaries(text: str) -> int:
    return len(re.findall(r"^100\.00 .* total$", text, re.M))


def exercise(mnt: Path) -> None:
    """File operations that must all reach the trace."""
    assert os.listdir(mnt) == ["a"]
    assert (mnt / "a").read_bytes() == b"abc"
    (mnt / "f").write_bytes(b"hello")
    os.rename(mnt / "f", mnt / "g")
    (mnt / "d").mkdir()
    os.unlink(mnt / "g")
    assert sorted(os.listdir(mnt)) == ["a", "d"]
    os.rmdir(mnt / "d")


EXERCISED = {"init", "getattr", "readdir", "open", "read", "create", "write", "rename", "mkdir", "unlink",
             "rmdir", "release", "destroy"}


def make_tree(workdir: Path) -> tuple[Path, Path]:
    src, mnt = workdir / "src", workdir / "mnt"
    src.mkdir()
    mnt.mkdir()
    (src / "a").write_bytes(b"abc")
    return src, mnt


def test_mount_t_returns_usable_and_umount_flushes_the_trace(workdir: Path, namespaces: Any) -> None:
    ns = namespaces()
    src, mnt = make_tree(workdir)
    trace, log = workdir / "t.jsonl", workdir / "daemon.log"
    for _ in range(2):  # "usable on return" must not depend on luck
        for f in (trace, log):
            f.unlink(missing_ok=True)
        r = ns.run("mount", "-t", "fuse.fuse-passthrough", src, mnt, "-o",
                   f"trace={trace},trace_format=jsonl,{MOUNT_OPTS},log={log}")
        assert r.returncode == 0, r.stderr
        assert r.stdout == r.stderr == ""  # a mount helper is silent when all is well
        # Usable at once, without waiting or retrying.
        exercise(ns.path(mnt))
        line = ns.mounted(mnt)
        assert line is not None
        assert f" - fuse.fuse-passthrough {src} " in line, line  # the type fstab names, the source
        assert "noatime" in line.split(" - ")[0], line  # a real mount flag reached the kernel
        assert not is_mounted(mnt)  # the machine outside the namespace never saw it
        pid = daemon_pid(log)
        r = ns.run("umount", mnt)
        assert r.returncode == 0, r.stderr
        assert reap(pid) == 0, log.read_text()
        assert ns.mounted(mnt) is None
        events = trace_events(trace)
        assert events[-1]["op"] == "destroy"
        assert EXERCISED <= {e["op"] for e in events}, {e["op"] for e in events}
        assert {e["path"] for e in events if e["op"] == "rename"} == {"/f"}
        text = log.read_text()
        assert summaries(text) == 1 and "Traceback" not in text, text
    assert os.listdir(src) == ["a"]


def test_fstab_entry_mount_by_mountpoint_and_umount(workdir: Path, namespaces: Any) -> None:
    src, mnt = make_tree(workdir)
    trace, log = workdir / "t.jsonl", workdir / "daemon.log"
    fstab = workdir / "fstab"
    fstab.write_text(
        "# a private fstab for this test\n"
        f"{src} {mnt} fuse.fuse-passthrough trace={trace},trace_format=jsonl,trace_max_bytes=64M,"
        f"{MOUNT_OPTS},nodev,nosuid,x-systemd.idle-timeout=60,comment=test,log={log} 0 0\n")
    ns = namespaces(fstab=fstab)
    r = ns.run("mount", mnt)  # the mountpoint alone: mount(8) takes the rest from /etc/fstab
    assert r.returncode == 0, r.stderr
    assert r.stdout == r.stderr == ""
    exercise(ns.path(mnt))
    line = ns.mounted(mnt)
    assert line is not None
    flags = line.split(" - ")[0]
    assert "nosuid" in flags and "nodev" in flags and "noatime" in flags, line
    # `mount -a` knows the entry is mounted (same source, target and type): nothing is mounted twice.
    r = ns.run("mount", "-a", "-v")
    assert r.returncode == 0 and "already mounted" in r.stdout, r
    with open(f"/proc/{ns.pid}/mountinfo") as f:
        assert sum(line.split(" ")[4] == str(mnt) for line in f) == 1
    pid = daemon_pid(log)
    r = ns.run("umount", mnt)
    assert r.returncode == 0, r.stderr
    assert reap(pid) == 0, log.read_text()
    events = trace_events(trace)
    assert events[-1]["op"] == "destroy"
    assert EXERCISED <= {e["op"] for e in events}
    assert summaries(log.read_text()) == 1


def test_default_is_no_trace_and_the_log_goes_to_syslog(workdir: Path, namespaces: Any) -> None:
    src, mnt = make_tree(workdir)
    ns = namespaces(own_dev=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(str(ns.path("/dev/log")))  # the namespace's /dev is its own
        syslog.settimeout(20)
        r = ns.run("mount", "-t", "fuse.fuse-passthrough", src, mnt, "-o", MOUNT_OPTS)
        assert r.returncode == 0, r.stderr
        assert r.stdout == r.stderr == ""
        exercise(ns.path(mnt))
        messages: list[str] = []
        found = None
        while found is None:  # libfuse 3.14 logs a harmless line first (README, "Known noise")
            messages.append(syslog.recv(65536).decode())
            # <facility daemon (3) * 8 + info (6)>, the ident with the daemon's pid
            found = re.match(r"<30>.* fuse-passthrough\[(\d+)\]: fuse-passthrough: mounted (\S+) at (\S+) "
                             r"\(pid \d+\); not tracing", messages[-1])
            assert len(messages) < 10, messages
        assert (found.group(2), found.group(3)) == (str(src), str(mnt))
        pid = int(found.group(1))
        r = ns.run("umount", mnt)
        assert r.returncode == 0, r.stderr
        assert reap(pid) == 0
        syslog.settimeout(0.5)
        later = []
        try:
            while True:
                later.append(syslog.recv(65536).decode())
        except TimeoutError:
            pass
    assert not any("Traceback" in m or " total" in m for m in later), later  # no trace, so no summary
    assert sorted(p.name for p in workdir.iterdir()) == ["mnt", "ns0", "src"]  # no trace file anywhere here


def fuse_mounts(ns: Namespace) -> set[str]:
    with open(f"/proc/{ns.pid}/mountinfo") as f:
        return {line for line in f if " - fuse" in line}


# (id, -o options, exit status, words the one line must contain); SRC is replaced by a missing source.
BAD: list[tuple[str, str, int, list[str]]] = [
    ("unknown-option", "bogus", 2, ["unknown mount option 'bogus'"]),
    ("flag-with-value", "noatime=1", 2, ["'noatime' takes no value"]),
    ("trace-format-xml", "trace_format=xml", 2, ["trace_format", "'xml'"]),
    ("trace-max-bytes-abc", "trace_max_bytes=abc", 2, ["trace_max_bytes", "'abc'"]),
    ("trace-backups-negative", "trace_backups=-1", 2, ["trace_backups"]),
    ("trace-empty", "trace=", 2, ["'trace' needs a value"]),
    ("notrace-and-trace", "notrace,trace=/tmp/x.jsonl", 2, ["notrace", "trace"]),
    ("trace-unwritable", "trace=WORK/nodir/t.jsonl", 1, ["cannot write trace output"]),
    ("log-unwritable", "log=WORK/nodir/d.log", 1, ["cannot write log file"]),
    ("missing-source", "SRC", 1, ["source", "does not exist"]),
]


@pytest.mark.parametrize("opts,status,words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_options_give_one_line_and_mount_nothing(workdir: Path, namespaces: Any, opts: str, status: int,
                                                     words: list[str]) -> None:
    src, mnt = make_tree(workdir)
    ns = namespaces()
    before = fuse_mounts(ns)
    if opts == "SRC":
        src, opts = workdir / "nosuch", ""
    opts = opts.replace("WORK", str(workdir))
    r = ns.run("mount", "-t", "fuse.fuse-passthrough", src, mnt, "-o", ",".join(filter(None, [MOUNT_OPTS, opts])))
    assert r.returncode == status, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fuse-passthrough: "), r.stderr
    for w in words:
        assert w in lines[0]
    assert r.stdout == ""
    assert fuse_mounts(ns) == before
    assert not our_daemons(workdir)


def test_drop_privileges_is_refused_in_one_line(workdir: Path, namespaces: Any) -> None:
    """mount.fuse3 mounts before running us with drop_privileges; we refuse, and say what is left to do."""
    src, mnt = make_tree(workdir)
    ns = namespaces()
    r = ns.run("mount", "-t", "fuse.fuse-passthrough", src, mnt, "-o", "drop_privileges")
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "drop_privileges is not supported" in lines[0] and "umount" in lines[0], r.stderr
    # (the namespace's teardown unmounts what mount.fuse3 left)


def test_the_usual_command_line_form_stays_in_the_foreground(workdir: Path) -> None:
    """Options after the operands, as mount.fuse3 writes them, but not its dev/suid pair: not the helper form."""
    src, mnt = make_tree(workdir)
    trace = workdir / "t.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "fuse_passthrough", str(src), str(mnt), "-o",
                             f"rw,noatime,trace={trace},trace_format=jsonl"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not is_mounted(mnt):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        exercise(mnt)
        assert proc.poll() is None  # still serving in the foreground
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        try:
            status = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
            proc.kill()
            status = proc.wait(timeout=30)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    assert status == 0, err
    assert summaries(err) == 1  # the summary on stderr, as in the foreground
    assert EXERCISED <= {e["op"] for e in trace_events(trace)}  # -o trace=FILE, trace_format= as --output/--format


def test_make_install_launcher_is_what_mount_runs(workdir: Path, namespaces: Any) -> None:
    """After `make test` (or `make run`) as root, `mount -t fuse.fuse-passthrough` works: on a machine whose
    /usr/local/bin has no fuse-passthrough, the target links this checkout's there, and mount(8) runs it."""
    src, mnt = make_tree(workdir)
    ns = namespaces(own_local_bin=True)
    r = ns.run("mount", "-t", "fuse.fuse-passthrough", src, mnt, "-o", MOUNT_OPTS)
    assert r.returncode != 0 and ns.mounted(mnt) is None  # nothing installed in this namespace yet
    r = ns.run("make", "-s", "-C", ROOT, "install-launcher", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "install-launcher: /usr/local/bin/fuse-passthrough -> " in r.stdout, r.stdout
    assert Path(os.readlink(ns.path("/usr/local/bin/fuse-passthrough"))).resolve() == PROGRAM.resolve()
    r = ns.run("make", "-s", "-C", ROOT, "install-launcher", timeout=600)
    assert r.returncode == 0 and "install-launcher" not in r.stdout, r  # already there: nothing to say
    log = workdir / "daemon.log"
    r = ns.run("mount", "-t", "fuse.fuse-passthrough", src, mnt, "-o", f"{MOUNT_OPTS},log={log}")
    assert r.returncode == 0, r.stderr
    assert os.listdir(ns.path(mnt)) == ["a"]
    pid = daemon_pid(log)
    assert ns.run("umount", mnt).returncode == 0
    assert reap(pid) == 0


@pytest.mark.parametrize("existing", ["nothing", "ours", "a file", "another link", "a dangling link"])
def test_install_launcher_never_replaces_a_working_program(workdir: Path, existing: str) -> None:
    link, other = workdir / "bin" / "fuse-passthrough", workdir / "other"
    link.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    if existing == "ours":
        link.symlink_to(PROGRAM)
    elif existing == "a file":
        link.write_text("#!/bin/sh\n")
    elif existing == "another link":
        link.symlink_to(other)
    elif existing == "a dangling link":
        link.symlink_to(workdir / "gone")
    before = link.read_text() if existing == "a file" else None
    r = subprocess.run([str(ROOT / "tools" / "install-launcher.sh"), str(PROGRAM), str(link)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r
    if existing in ("nothing", "a dangling link"):
        assert os.readlink(link) == str(PROGRAM) and f"{link} -> {PROGRAM}" in r.stdout
    elif existing == "ours":
        assert os.readlink(link) == str(PROGRAM) and r.stdout == ""
    elif existing == "a file":
        assert not link.is_symlink() and link.read_text() == before and "left alone" in r.stdout
    else:
        assert os.readlink(link) == str(other) and "left alone" in r.stdout


@pytest.mark.parametrize("log", ["syslog", "log=FILE"])
def test_a_mount_the_kernel_refuses_is_explained_to_the_mount_caller(workdir: Path, namespaces: Any,
                                                                      log: str) -> None:
    """blksize= passes our checks, but only fuseblk takes it: the daemon fails after forking, and what libfuse
    said reaches mount(8)'s caller whichever way the daemon logs."""
    src, mnt = make_tree(workdir)
    ns = namespaces()
    before = fuse_mounts(ns)
    opts = f"{MOUNT_OPTS},blksize=4096" + (f",log={workdir / 'daemon.log'}" if log == "log=FILE" else "")
    r = ns.run("mount", "-t", "fuse.fuse-passthrough", src, mnt, "-o", opts)
    assert r.returncode == 1, r.stderr
    assert "mount failed" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("fuse-passthrough: mounting"), r.stderr
    assert fuse_mounts(ns) == before
    assert not our_daemons(workdir)


def test_fault_rules_as_a_mount_option(workdir: Path, namespaces: Any) -> None:
    """fstab has no --fault-file: -o fault_file=FILE is the same, and its rules apply on the daemon."""
    ns = namespaces()
    src, mnt = make_tree(workdir)
    rules, log = workdir / "faults.rules", workdir / "daemon.log"
    rules.write_text("op=mkdir,errno=EDQUOT\n")
    r = ns.run("mount", "-t", "fuse.fuse-passthrough", src, mnt, "-o", f"fault_file={rules},{MOUNT_OPTS},log={log}")
    assert r.returncode == 0, r.stderr
    pid = daemon_pid(log)
    try:
        made = ns.run("mkdir", ns.path(mnt) / "d")
        assert made.returncode != 0 and "quota" in made.stderr.lower(), made.stderr
        assert ns.run("touch", ns.path(mnt) / "f").returncode == 0
    finally:
        assert ns.run("umount", mnt).returncode == 0
        assert reap(pid) == 0, log.read_text()
    assert sorted(os.listdir(src)) == ["a", "f"]
    assert "fault rule: op=mkdir,errno=EDQUOT" in log.read_text()


def test_remount_through_mount8(workdir: Path, namespaces: Any) -> None:
    """`mount -o remount,ro MNT`: mount(8) runs mount.fuse3 with the fstab line's options and remount,ro, which
    runs us; the unchanged options (trace=...) are accepted, a changed one is refused in one line."""
    src, mnt = make_tree(workdir)
    trace, log = workdir / "t.jsonl", workdir / "daemon.log"
    fstab = workdir / "fstab"
    fstab.write_text(f"{src} {mnt} fuse.fuse-passthrough trace={trace},trace_format=jsonl,timeout=2,nodev,nosuid,"
                     f"nofail,log={log} 0 0\n")
    ns = namespaces(fstab=fstab)
    r = ns.run("mount", mnt)
    assert r.returncode == 0, r.stderr
    pid = daemon_pid(log)
    inside = ns.path(mnt)
    r = ns.run("mount", "-o", "remount,ro", mnt)
    assert r.returncode == 0 and r.stdout == r.stderr == "", r
    line = ns.mounted(mnt)
    assert line is not None and line.split(" ")[5].startswith("ro,"), line
    with pytest.raises(OSError) as e:
        (inside / "a").write_bytes(b"x")
    assert e.value.errno == 30  # EROFS
    r = ns.run("mount", "-o", "remount,timeout=5", mnt)
    assert r.returncode != 0 and "'timeout' cannot change on a live mount" in r.stderr, r
    r = ns.run("mount", "-o", "remount,rw", mnt)
    assert r.returncode == 0, r
    (inside / "a").write_bytes(b"written")
    assert (src / "a").read_bytes() == b"written"
    r = ns.run("umount", mnt)
    assert r.returncode == 0, r.stderr
    assert reap(pid) == 0, log.read_text()
    assert not [n for n in os.listdir("/run/fuse-passthrough") if n.endswith(".json")
                if str(src) in open(f"/run/fuse-passthrough/{n}").read()]
