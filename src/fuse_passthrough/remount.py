"""Remount: `mount -o remount,ro MNT`, `fuse-passthrough -o remount,OPTS SOURCE MNT` (and the mount(8) helper form).

What the kernel does for a FUSE remount: the VFS changes the per-mount flags (nosuid, nodev, noexec, the atime
flags) and the superblock's read-only flag; FUSE's own reconfigure accepts that and ignores every option of its
own given through mount(2)'s old API (attr_timeout=5 is silently dropped). So mount(8) runs its helper
(mount.fuse3, then this program) with `remount` among the options, and this program does the mount(2) call.
What can change live: ro/rw (writes get EROFS as natively), [no]suid, [no]dev, [no]exec, sync/async, dirsync,
and the atime options (an inode-core daemon follows its mount's noatime/nodiratime flags: `MountFlagsWatcher`).
Everything else is the daemon's, fixed while it runs: given with a different value, one line and exit status 2.

mount(8) passes the options merged with the fstab line (or, without one, with what /proc/self/mountinfo shows),
so unchanged options come back: they are compared with what the daemon was started with, which a root daemon
records in /run/fuse-passthrough/<device>.json (`DaemonRecord`), removed when it stops.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields

from .errors import UsageError

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 16, 32, 4096
MS_DIRSYNC, MS_NOSYMFOLLOW, MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 128, 256, 1024, 2048, \
    1 << 21, 1 << 24
# Flags a remount may set or clear: option -> (flag, set).
FLAGS = {"ro": (MS_RDONLY, True), "rw": (MS_RDONLY, False), "nosuid": (MS_NOSUID, True),
         "suid": (MS_NOSUID, False), "nodev": (MS_NODEV, True), "dev": (MS_NODEV, False),
         "noexec": (MS_NOEXEC, True), "exec": (MS_NOEXEC, False), "sync": (MS_SYNCHRONOUS, True),
         "async": (MS_SYNCHRONOUS, False), "dirsync": (MS_DIRSYNC, True), "nosymfollow": (MS_NOSYMFOLLOW, True),
         "symfollow": (MS_NOSYMFOLLOW, False), "noatime": (MS_NOATIME, True), "atime": (MS_NOATIME, False),
         "nodiratime": (MS_NODIRATIME, True), "diratime": (MS_NODIRATIME, False),
         "relatime": (MS_RELATIME, True), "norelatime": (MS_RELATIME, False),
         "strictatime": (MS_STRICTATIME, True), "nostrictatime": (MS_STRICTATIME, False)}
RECORDS = "/run/fuse-passthrough"


@dataclass
class MountEntry:
    """One line of /proc/self/mountinfo."""

    mount_id: int
    dev: str  # major:minor
    mountpoint: str
    options: list[str]  # per mount: rw/ro, nosuid, noatime...
    fstype: str
    source: str
    super_options: list[str]


def _unescape(s: str) -> str:
    return s.encode().decode("unicode_escape") if "\\" in s else s  # \040 for a space


def mountinfo() -> list[MountEntry]:
    entries = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            a, b = left.split(" "), right.split(" ")
            entries.append(MountEntry(int(a[0]), a[2], _unescape(a[4]), a[5].split(","), b[0], _unescape(b[1]),
                                      b[2].split(",") if len(b) > 2 else []))
    return entries


def mount_at(path: str) -> MountEntry | None:
    """The mount on top at `path` (the last one mounted there)."""
    found = [e for e in mountinfo() if e.mountpoint == path]
    return found[-1] if found else None


def _flags(entry: MountEntry) -> int:
    """mount(2) flags that keep what a mount has now (a remount replaces the per-mount flags)."""
    flags = 0
    for o in entry.options:
        if o in FLAGS and FLAGS[o][1] and o != "strictatime":
            flags |= FLAGS[o][0]
    if not flags & (MS_NOATIME | MS_RELATIME):
        flags |= MS_STRICTATIME
    return flags


def atime_state(options: list[str]) -> dict[str, bool]:
    """The daemon's noatime/nodiratime from a mount's per-mount options."""
    return {"noatime": "noatime" in options, "nodiratime": "nodiratime" in options}


# -- the daemon's record -----------------------------------------------------------------------------------------
class DaemonRecord:
    """What a root daemon was started with, for remount to tell unchanged options from changed ones."""

    def __init__(self, dev: str, source: str, subtype: str, specs: list[str]) -> None:
        self.path = os.path.join(RECORDS, dev.replace(":", "-") + ".json")
        self.data = {"pid": os.getpid(), "source": source, "subtype": subtype, "options": specs, "applied": []}

    def write(self, applied: list[str] | None = None) -> None:
        if applied is not None:
            self.data["applied"] = applied
        try:
            os.makedirs(RECORDS, mode=0o700, exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}"
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                json.dump(self.data, f)
            os.replace(tmp, self.path)
        except OSError:  # not root: remount then accepts only what the kernel changes
            pass

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


def record_daemon(mnt: str, source: str, subtype: str, specs: list[str]) -> tuple[DaemonRecord, MountEntry] | None:
    """From the daemon's init (its mount is in the mount table by then): record its options; with the mount."""
    entry = mount_at(mnt)
    if entry is None:
        return None
    record = DaemonRecord(entry.dev, source, subtype, specs)
    record.write(entry.options)
    return record, entry


def read_record(dev: str) -> dict[str, object] | None:
    try:
        with open(os.path.join(RECORDS, dev.replace(":", "-") + ".json")) as f:
            data = json.load(f)
        os.kill(int(data["pid"]), 0)  # a record left by a daemon that was killed is no guide
        return data  # type: ignore[no-any-return]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class MountFlagsWatcher:
    """Calls `changed(per-mount options)` whenever the flags of mount `mount_id` change (poll on
    /proc/self/mountinfo: the kernel flags it at every change of the mount table), from a thread of its own."""

    def __init__(self, mount_id: int, changed: Callable[[list[str]], None]) -> None:
        self._id, self._changed = mount_id, changed
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="mountinfo", daemon=True)
        self._thread.start()

    def _options(self) -> list[str] | None:
        for e in mountinfo():
            if e.mount_id == self._id:
                return e.options
        return None

    def _run(self) -> None:
        last = self._options()
        with open("/proc/self/mountinfo") as f:
            poller = select.poll()
            poller.register(f, select.POLLPRI | select.POLLERR)
            poller.register(self._stop_r, select.POLLIN)
            while True:
                f.read()  # re-arms the change notification
                events = poller.poll()
                if any(fd == self._stop_r for fd, _ in events):
                    return
                f.seek(0)
                now = self._options()
                if now is None:  # unmounted
                    return
                if now != last:
                    last = now
                    self._changed(now)

    def close(self) -> None:
        """Idempotent: destroy and the daemon's last cleanup both call it."""
        if self._stop_w == -1:
            return
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        os.close(self._stop_r)
        os.close(self._stop_w)
        self._stop_r = self._stop_w = -1


# -- the command -------------------------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


def set_nodiratime(mnt: str) -> None:
    """Give the mount at `mnt` the nodiratime flag that libfuse refuses as a mount option (a bind remount,
    which changes the mount's flags and nothing of the filesystem), so that the mount table shows it and a
    remount keeps it, as natively. Needs root; without it nodiratime stays the daemon's alone."""
    entry = mount_at(mnt)
    if entry is not None and "nodiratime" not in entry.options:
        _libc.mount(None, os.fsencode(mnt), None, MS_REMOUNT | MS_BIND | _flags(entry) | MS_NODIRATIME, None)


def is_remount(specs: list[str]) -> bool:
    from .options import split_options
    return any(item == "remount" for spec in specs for item in split_options(spec))


def remount(source: str, mountpoint: str, specs: list[str]) -> int:
    """Change the options of the mount at `mountpoint` live; a UsageError for what cannot change."""
    from .mount import MountOptions
    from .options import lookup, split_options

    mnt = os.path.realpath(mountpoint)
    entry = mount_at(mnt)
    if entry is None or not entry.fstype.startswith("fuse"):
        raise UsageError(f"remount: nothing of ours is mounted at '{mountpoint}'", 1)
    flags = _flags(entry)
    current = set(entry.options) | set(entry.super_options)
    rest = []
    for item in (i for spec in specs for i in split_options(spec)):
        if item == "remount":
            continue
        if item in FLAGS:
            bit, on = FLAGS[item]
            if bit in (MS_NOATIME, MS_RELATIME, MS_STRICTATIME) and on:  # the last atime option wins
                flags &= ~(MS_NOATIME | MS_RELATIME | MS_STRICTATIME)
            flags = flags | bit if on else flags & ~bit
        elif item not in current:  # what mountinfo shows (mount(8) merges it back in) is unchanged
            rest.append(item)
    record = read_record(entry.dev)
    for item in rest:
        option = lookup(item)  # an unknown option: one line, status 2
        if option is None:  # accepted and ignored (mount(8)'s own)
            continue
        key = item.partition("=")[0]
        if record is None:
            raise UsageError(f"remount: option '{key}' cannot change on a live mount (only ro/rw, [no]suid, "
                             "[no]dev, [no]exec, sync/async, dirsync and the atime options can; this daemon's "
                             "options are unknown, so unchanged ones cannot be told apart)", 2)
        specs0 = [str(s) for s in record["options"]]  # type: ignore[attr-defined]
        before = MountOptions.parse(specs0, str(record["source"]), str(record["subtype"]))
        after = MountOptions.parse(specs0 + [item], str(record["source"]), str(record["subtype"]))
        if any(getattr(before, f.name) != getattr(after, f.name) for f in fields(MountOptions) if f.name != "atime"):
            raise UsageError(f"remount: option '{key}' cannot change on a live mount (only ro/rw, [no]suid, "
                             "[no]dev, [no]exec, sync/async, dirsync and the atime options can); unmount and "
                             "mount again", 2)
    if _libc.mount(os.fsencode(entry.source), os.fsencode(mnt), None, MS_REMOUNT | flags, None) != 0:
        e = ctypes.get_errno()
        why = "files are open for writing" if e == 16 else os.strerror(e)
        raise UsageError(f"remount of '{mountpoint}' failed: {why}", 1)
    _wait_applied(entry, record)
    return 0


def _wait_applied(entry: MountEntry, record: dict[str, object] | None, timeout: float = 2.0) -> None:
    """Return once the daemon applies the new flags (its record says so), so the next access sees them."""
    import time
    now = next((e for e in mountinfo() if e.mount_id == entry.mount_id), None)
    if record is None or now is None or atime_state(now.options) == atime_state(entry.options):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        again = read_record(entry.dev)
        if again is not None and atime_state(list(again.get("applied", []))) == atime_state(now.options):  # type: ignore[call-overload]
            return
        time.sleep(0.01)
