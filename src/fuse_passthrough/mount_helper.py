"""The mount(8) helper form: `mount -t fuse.fuse-passthrough SOURCE MOUNTPOINT -o OPTS` and fstab lines.

mount(8) runs /sbin/mount.fuse3, which drops the options meant for mount(8) itself (user, nofail, _netdev, noauto,
...; mount(8) has already dropped x-* and comment=) and runs, through /bin/sh with mount(8)'s PATH removed (so
dash's default /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin applies):

    fuse-passthrough SOURCE MOUNTPOINT -o OPTS

where OPTS always names `dev` or `nodev` and `suid` or `nosuid`: mount.fuse3 adds `dev` unless it was given `nodev`
and `suid` unless `nosuid`. That shape is how we know we were started as a mount helper. The parent process is no
guide (mount(8) forks mount.fuse3, which execs /bin/sh; a shell may or may not exec us in turn), nor is a missing
terminal (an administrator runs mount(8) at a terminal, systemd does not). People type options first, and never
need dev and suid together, so an interactive `fuse-passthrough SOURCE MOUNTPOINT` stays in the foreground.

In helper form the program returns once the mount is usable, like every mount helper, with the filesystem served
by a daemon (mount_command._background); it prints nothing on success; the daemon logs to syslog (or -o log=FILE)
and traces only when told where to (-o trace=FILE): a mount made at boot has no terminal to trace to.
"""

from __future__ import annotations

import os
import re
import sys
import threading

SUBTYPE = "fuse-passthrough"  # the type in fstab (fuse.fuse-passthrough), shown again by /proc/mounts


def is_helper_form(argv: list[str]) -> bool:
    """True for exactly what mount.fuse3 runs: SOURCE MOUNTPOINT -o OPTS, OPTS with dev|nodev and suid|nosuid."""
    if len(argv) != 4 or argv[2] != "-o" or argv[0].startswith("-") or argv[1].startswith("-"):
        return False
    opts = set(argv[3].split(","))
    return bool(opts & {"dev", "nodev"}) and bool(opts & {"suid", "nosuid"})


def drop_privileges_mountpoint(mountpoint: str) -> bool:
    """mount.fuse3 -o drop_privileges mounts itself and passes the FUSE device as /dev/fd/N instead."""
    return re.fullmatch(r"/dev/fd/\d+", mountpoint) is not None


class SyslogForwarder:
    """The daemon's stderr (its own messages, libfuse's, the trace writer's summary) as syslog lines.

    Call `start` in the daemon: fd 2 becomes a pipe read by a thread that logs each line (ident fuse-passthrough,
    facility daemon; under systemd: journalctl -t fuse-passthrough). Lines written before `ready` are also kept,
    so that the mount(8) caller can be shown why a mount failed. `finish` logs what is left and returns them.
    """

    def __init__(self) -> None:
        self._early: list[bytes] = []
        self._ready = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import syslog
        syslog.openlog("fuse-passthrough", syslog.LOG_PID, syslog.LOG_DAEMON)
        r, w = os.pipe()  # not inheritable: children get fd 2 only
        os.dup2(w, 2)
        os.close(w)
        self._thread = threading.Thread(target=self._run, args=(r,), name="syslog", daemon=True)
        self._thread.start()

    def _run(self, r: int) -> None:
        import syslog
        with os.fdopen(r, "rb") as f:
            for line in f:
                with self._lock:
                    if not self._ready:
                        self._early.append(line)
                text = line.decode("utf-8", "replace").rstrip()
                if text:
                    syslog.syslog(syslog.LOG_INFO, text)

    def ready(self) -> None:
        with self._lock:
            self._ready = True

    def finish(self, timeout: float = 5.0) -> bytes:
        """Close our stderr, wait for the lines still in the pipe; returns the lines from before `ready`."""
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        if self._thread is not None:
            self._thread.join(timeout)  # a program the daemon started may still hold the pipe: do not hang
        with self._lock:
            return b"" if self._ready else b"".join(self._early)
