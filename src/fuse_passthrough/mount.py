"""Mount lifecycle: option parsing, checks that turn every misuse into one clear line, signals while serving."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError as UsageError  # re-exported: inode_mount.py imports it from here
from .options import CONFIG, KERNEL, OPTIONS, TRACE, lookup, split_options
from .options import TRACE_OPTIONS as TRACE_OPTIONS

ATIME_OPTIONS = frozenset({"atime", "noatime", "diratime", "nodiratime", "relatime", "norelatime", "strictatime",
                           "nostrictatime"})  # rows of the option table, kept in order in MountOptions.atime


@dataclass
class MountOptions:
    """Everything -o can say, split by where it goes."""

    kernel: dict[str, Any] = field(default_factory=dict)   # to the session's -o (the kernel, fusermount3)
    config: dict[str, Any] = field(default_factory=dict)   # the daemon's cache settings (inode_mount.serve)
    nonempty: bool = False
    kernel_passthrough: bool = False  # -o passthrough, the same as --passthrough
    watch: bool = True  # cached mounts watch SOURCE for changes made there directly (-o nowatch: not)
    trace: dict[str, Any] = field(default_factory=dict)  # trace=... etc. by the --option's dest (options.TRACE)
    log: str | None = None  # -o log=FILE
    remount: bool = False  # -o remount: change a live mount (remount.py), mount nothing
    max_threads: int = next(o.default for o in OPTIONS if o.name == "max_threads")  # libfuse's workers at most
    park_us: int = next(o.default for o in OPTIONS if o.name == "park_us")  # a finished worker's wait step
    io_uring: bool = False  # -o io_uring: requests through FUSE over io_uring
    # The atime options in the order given (noatime, nodiratime, relatime, strictatime, ...), applied to the
    # daemon's opens of SOURCE.
    atime: list[str] = field(default_factory=list)

    @property
    def strict(self) -> bool:
        """No kernel caching of attributes or names: every lookup reaches the daemon (and the trace)."""
        return not (self.config.get("attr_timeout") or self.config.get("entry_timeout"))

    @classmethod
    def parse(cls, specs: Iterable[str], source: str, subtype: str = "passthrough") -> MountOptions:
        """Read -o items by the option table (options.py); an unknown or malformed one is a UsageError."""
        m = cls()
        default_permissions: bool | None = None  # None: as allow_other/allow_root say (below)
        # Cached by default, exact for changes through the mount (README "Caching and coherence"); no negative
        # entries, so a name created directly in SOURCE is seen at once.
        m.config.update({o.name: o.default for o in OPTIONS if o.goes == CONFIG and o.default is not None})
        m.kernel["fsname"] = source
        m.kernel["subtype"] = subtype
        for spec in specs:
            for item in split_options(spec):
                if item in ATIME_OPTIONS:
                    m.atime.append(item)
                option = lookup(item)
                if option is None:  # accepted and ignored
                    continue
                key, eq, value = item.partition("=")
                v = option.kind.read(key, eq, value)
                if option.goes == KERNEL:
                    m.kernel[key] = v
                elif option.goes == CONFIG:
                    m.config[key] = 1 if v is True else v
                elif option.goes == TRACE:
                    m.trace[option.dest] = v
                elif key == "timeout":  # attr_timeout and entry_timeout; timeout=0: strict (negative too)
                    m.config.update(attr_timeout=v, entry_timeout=v)
                    if v == 0:
                        m.config["negative_timeout"] = 0.0
                elif key == "no_default_permissions":
                    default_permissions = False
                elif key == "nonempty":
                    m.nonempty = True
                elif key == "passthrough":
                    m.kernel_passthrough = True
                elif key == "nowatch":
                    m.watch = False
                elif key == "log":
                    m.log = v
                elif key == "remount":
                    m.remount = True
                elif key == "max_threads":
                    m.max_threads = v
                elif key == "park_us":
                    m.park_us = v
                elif key == "io_uring":
                    m.io_uring = True
                elif key in ATIME_OPTIONS:
                    pass  # kept in m.atime above
                else:  # a DAEMON option of the table that nothing here reads
                    raise AssertionError(f"mount option {key!r} is not handled")
        # The kernel checks permissions itself where more than one user can reach the mount; where only the
        # daemon's own user can, every operation already runs with that user's credentials on SOURCE, and the
        # kernel's checks would only cost requests (a GETATTR of the directory before each create and unlink).
        if default_permissions is None:
            default_permissions = "default_permissions" in m.kernel or bool(
                m.kernel.get("allow_other") or m.kernel.get("allow_root"))
        if default_permissions:
            m.kernel["default_permissions"] = True
        else:
            m.kernel.pop("default_permissions", None)
        if "fsname" in m.kernel:  # libfuse splits -o on unescaped commas
            m.kernel["fsname"] = m.kernel["fsname"].replace("\\", "\\\\").replace(",", "\\,")
        return m


# -- checks ------------------------------------------------------------------------------------------------
def _mounted_paths() -> set[str]:
    paths = set()
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split(" ")[4]
                paths.add(mp.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace"))
    except OSError:
        pass
    return paths


def is_mountpoint(path: str) -> bool:
    return os.path.realpath(path) in _mounted_paths()


def inside(child: str, parent: str) -> bool:
    """Whether the real path `child` is `parent` or below it."""
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def fusermount() -> str | None:
    return shutil.which("fusermount3") or (shutil.which("fusermount3", path="/usr/bin:/bin"))


def unmount(mountpoint: str, lazy: bool = False) -> bool:
    """Unmount with fusermount3 (or umount as a fallback); True on success."""
    tool = fusermount()
    cmd = [tool, "-u", "-q"] + (["-z"] if lazy else []) + [mountpoint] if tool else \
        ["umount"] + (["-l"] if lazy else []) + [mountpoint]
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def check_environment() -> None:
    if not os.path.exists("/dev/fuse"):
        raise UsageError("/dev/fuse does not exist: load the fuse module (modprobe fuse) or, in a container, "
                         "pass the device (--device /dev/fuse)")
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        raise UsageError(f"cannot open /dev/fuse: {e.strerror}") from None
    if fusermount() is None:
        raise UsageError("fusermount3 not found: install the fuse3 package (apt-get install fuse3)")


def check_paths(source: str, mountpoint: str, nonempty: bool = False,
                note: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Validate SOURCE and MOUNTPOINT; returns their real paths. A stale mount (daemon killed) is cleared."""
    if not os.path.exists(source):
        raise UsageError(f"source '{source}' does not exist")
    if not os.path.isdir(source):
        raise UsageError(f"source '{source}' is not a directory")
    try:
        os.stat(mountpoint)
    except OSError as e:
        # the daemon died: "Transport endpoint is not connected", or, for a request caught in the teardown of its
        # FUSE over io_uring queues, "Software caused connection abort"
        if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
            if not unmount(mountpoint, lazy=True):
                raise UsageError(f"mountpoint '{mountpoint}' is a stale FUSE mount; run: "
                                 f"fusermount3 -uz {mountpoint}") from None
            if note:
                note(f"cleared a stale mount at '{mountpoint}' (its daemon had died)")
        elif e.errno == errno.ENOENT:
            raise UsageError(f"mountpoint '{mountpoint}' does not exist") from None
        else:
            raise UsageError(f"mountpoint '{mountpoint}': {e.strerror}") from None
    if not os.path.isdir(mountpoint):
        raise UsageError(f"mountpoint '{mountpoint}' is not a directory")
    src, mnt = os.path.realpath(source), os.path.realpath(mountpoint)
    if inside(mnt, src):
        raise UsageError(f"mountpoint '{mountpoint}' is inside the source '{source}': the filesystem would see "
                         "itself (choose a mountpoint outside the source)")
    if inside(src, mnt):
        raise UsageError(f"source '{source}' is inside the mountpoint '{mountpoint}': the mount would hide it")
    if mnt in _mounted_paths():
        raise UsageError(f"mountpoint '{mountpoint}' is already mounted; unmount it first: fusermount3 -u {mnt}")
    if not nonempty:
        try:
            with os.scandir(mnt) as it:
                busy = next(it, None) is not None
        except OSError as e:
            raise UsageError(f"mountpoint '{mountpoint}': {e.strerror}") from None
        if busy:
            raise UsageError(f"mountpoint '{mountpoint}' is not empty (its files would be hidden; "
                             "use -o nonempty to mount anyway)")
    return src, mnt


# -- signals while libfuse owns the main thread -------------------------------------------------------------
class SignalRelay:
    """Run `handler(signum)` in a helper thread for signals that arrive while the main thread is in libfuse.

    Python runs signal handlers only between bytecodes of the main thread, which is blocked in fuse_main; its
    wakeup fd, however, is written by the C-level handler at once, so a thread reading it reacts immediately.
    """

    def __init__(self, signals: Iterable[int], handler: Callable[[int], None]) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(self._r, True)
        self._handler = handler
        self._signals = list(signals)
        for s in self._signals:
            signal.signal(s, lambda *_: None)
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._run, name="signal-relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self._r, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in self._signals:
                    try:
                        self._handler(signum)
                    except Exception as e:  # never let a summary request kill the relay
                        print(f"fuse-passthrough: signal handler failed: {e}", file=sys.stderr)

    def close(self) -> None:
        signal.set_wakeup_fd(self._old_fd)
        os.close(self._w)  # the relay thread sees EOF and ends; the no-op handlers stay (no late deaths)
