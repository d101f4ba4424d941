"""Run a filesystem operation with the calling process's credentials.

When the daemon runs as root for other users (`-o allow_other`), objects must be created by the caller, not by
root and chowned afterwards: another user would see a root-owned file in between, setgid directories would give
the wrong group, and the source would not enforce its own rules (sticky bits, protected_hardlinks, setuid
clearing). Linux keeps fsuid, fsgid and the supplementary groups per thread, so each libfuse worker thread takes
on the caller's identity for the duration of one operation and drops it afterwards.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from types import TracebackType

from . import syscalls


class CallerCredentials:
    """Context manager: the current FUSE caller's fsuid/fsgid/groups for the calling thread.

    `context` gives (uid, gid, pid, umask) of the caller and `caller_groups` its supplementary groups (those of
    the request the thread serves).
    """

    def __init__(self, enabled: bool | None = None, groups: bool = True, *,
                 context: Callable[[], tuple[int, int, int, int]],
                 caller_groups: Callable[[], list[int] | None]) -> None:
        self._context = context
        self._caller_groups = caller_groups
        if enabled is None:
            enabled = os.geteuid() == 0 and syscalls.has_thread_credentials()
        self.enabled = enabled
        self._uid = os.geteuid()
        self._gid = os.getegid()
        self._groups = os.getgroups()
        self._with_groups = groups  # False: fsuid/fsgid only (enough for setuid clearing, half the cost)
        self._switched = threading.local()

    def switches(self) -> bool:
        """Whether entering switches anything (the caller is not the daemon's own uid and gid)."""
        if not self.enabled:
            return False
        uid, gid, _pid, _umask = self._context()
        return uid != self._uid or gid != self._gid

    def __enter__(self) -> bool:
        """Switch to the caller; returns True when a switch happened."""
        if not self.enabled:
            return False
        uid, gid, _pid, _umask = self._context()
        if uid == self._uid and gid == self._gid:
            self._switched.on = False
            return False
        if self._with_groups:
            groups = self._caller_groups()
            syscalls.setgroups_thread(groups if groups is not None else [gid])
        syscalls.setfsgid(gid)
        syscalls.setfsuid(uid)
        self._switched.on = True
        return True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.enabled and self._switched.on:
            syscalls.setfsuid(self._uid)
            syscalls.setfsgid(self._gid)
            if self._with_groups:
                syscalls.setgroups_thread(self._groups)
            self._switched.on = False


def kills_privileges(proc: str, mode: int, as_caller: CallerCredentials) -> bool:
    """Is this chmod of `proc` the kernel clearing setuid/setgid after a write or truncate by a user who may
    write to the file but does not own it? FUSE sends that as a chmod (kill_priv), which the caller could not
    do; the source would clear the bits itself on such a write. True when only those bits go and the caller
    may write, so the daemon may do it."""
    cur, new = stat.S_IMODE(os.stat(proc).st_mode), stat.S_IMODE(mode)
    removed = cur & ~new
    if new & ~cur or not removed or removed & ~(stat.S_ISUID | stat.S_ISGID):
        return False
    with as_caller:
        return os.access(proc, os.W_OK, effective_ids=True)
