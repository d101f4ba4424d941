"""The main command, `fuse-passthrough [options] SOURCE MOUNTPOINT`: mount, serve in the foreground or as a
daemon (-b), flush the trace and print the summary at unmount."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

from .arguments import (
    PROG,
    Parser,
    apply_trace_options,
    build_filter,
    check_rotation,
    fault_file_rules,
    note,
    open_output,
)
from .errors import UsageError
from .inode_mount import serve
from .mount import MountOptions, check_environment, check_paths
from .mount_helper import SUBTYPE, SyslogForwarder, drop_privileges_mountpoint, is_helper_form
from .options import OPTIONS, add_arguments, mount_options_help
from .remount import is_remount, remount

MOUNT_DESCRIPTION = f"""\
Mirror SOURCE at MOUNTPOINT with FUSE, passing every operation through to SOURCE unchanged, and record each
operation the kernel sends: caller (pid, process name, uid/gid), operation, arguments, result or errno, and
duration. Data bytes and xattr values are never recorded, only their lengths.

The filesystem runs in the foreground until it is unmounted (fusermount3 -u MOUNTPOINT), or until Ctrl-C,
SIGTERM or SIGHUP; it then writes every pending event, prints a per-operation summary (like strace -c) and
exits 0. SIGUSR1 prints the summary so far without stopping.

other commands:
  {PROG} trace [--source DIR] [options] -- CMD [ARGS...]   run CMD on a private mount, print what it did
  {PROG} demo                                               the classic "what happens when I..." walks, live
  {PROG} report TRACE.jsonl [--perfetto OUT] [--html OUT]   summarise a saved JSONL trace
"""

MOUNT_EPILOG = mount_options_help() + f"""\

mount(8) and fstab (see README):
  mount -t fuse.fuse-passthrough SOURCE MOUNTPOINT -o trace=/var/log/t.jsonl,trace_format=jsonl
  SOURCE MOUNTPOINT fuse.fuse-passthrough trace=/var/log/t.jsonl,nofail 0 0        (an /etc/fstab line)
  mount.fuse3 runs `{PROG} SOURCE MOUNTPOINT -o OPTS`, OPTS always with dev or nodev and suid or
  nosuid. In that form the program returns once the mount is usable, silently; the daemon logs to syslog (or
  log=FILE) and traces only with trace=FILE. `umount MOUNTPOINT` stops it, the trace flushed.

examples:
  {PROG} ~/src /mnt/src                      trace everything to stderr, Ctrl-C to stop
  {PROG} -b --format jsonl --output t.jsonl ~/src /mnt/src   in the background, JSON lines to a file
  {PROG} --errors-only --path '*.py' ~/src /mnt/src          only failed operations on Python files
  {PROG} -o allow_other,ro /srv/data /mnt/data
  {PROG} --fault 'op=fsync,errno=EIO,nth=2' ~/src /mnt/src   the second fsync fails (see --fault below)

exit status:
  0 unmounted cleanly; 1 mount or runtime failure; 2 invalid arguments or options
"""


def mount_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, usage=f"{PROG} [options] SOURCE MOUNTPOINT", description=MOUNT_DESCRIPTION,
                epilog=MOUNT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", help="the directory to mirror")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an empty directory to mount it on")
    add_arguments(p, "mount")
    return p


def run_mount(argv: list[str]) -> int:
    parser = mount_parser()
    args = parser.parse_args(argv)
    if is_remount(args.options):  # mount -o remount (through mount.fuse3) or by hand: nothing is mounted
        _only_mount_options(parser, args)
        return remount(args.source, args.mountpoint, args.options)
    helper = is_helper_form(argv)  # run by mount(8)/mount.fuse3: see mount_helper.py
    opts = MountOptions.parse(args.options, os.path.abspath(args.source), subtype=SUBTYPE if helper else "passthrough")
    _apply_trace_options(parser, args, opts)
    if helper:
        if drop_privileges_mountpoint(args.mountpoint):
            raise UsageError("mount option drop_privileges is not supported (the daemon needs root to act as each "
                             "caller); mount.fuse3 has mounted already: umount the mountpoint", 2)
        args.background = True
        args.no_trace = args.no_trace or not args.output  # trace only to where -o trace=FILE says
    elif opts.log and not args.background:
        raise UsageError("mount option 'log' is for background mounts (-b, mount(8), fstab); in the foreground "
                         "messages go to stderr", 2)
    if not args.background:  # (with -b the trace goes to a file of its own)
        check_rotation(parser, args)
    if args.no_trace and args.summary_json:
        raise UsageError("--summary-json summarizes the trace: not with --no-trace (or, from mount(8), without -o "
                         "trace=FILE)", 2)
    args.passthrough = args.passthrough or opts.kernel_passthrough
    check_faults(args)  # before the path is made absolute: messages name the file as the user gave it
    if args.fault_file:
        args.fault_file = os.path.abspath(args.fault_file)  # a daemon works in "/"
    if args.passthrough:
        check_kernel_passthrough(opts)
    check_environment()
    filt = build_filter(args)
    src, mnt = check_paths(args.source, args.mountpoint, opts.nonempty, note=note)
    if args.summary_json:
        _check_writable(args.summary_json, "--summary-json")
    if args.background:
        return _background(args, src, mnt, opts, filt, helper=helper)
    output = None if args.no_trace else open_output(args)
    return serve(args, src, mnt, opts, filt, output)


def _only_mount_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """-o remount changes a live mount's -o options; flags (tracing, faults, filters, -b...) are the daemon's from
    its start: a usage error rather than ignored."""
    given = [o.flags[-1] for o in OPTIONS if o.flags and "mount" in o.commands and o.name != "options"
             and o.name in vars(args) and getattr(args, o.name) != parser.get_default(o.name)]
    if given:
        raise UsageError(f"-o remount changes mount options only, not {', '.join(given)} (those hold from the "
                         "mount's start: unmount and mount again)", 2)


def _apply_trace_options(parser: argparse.ArgumentParser, args: argparse.Namespace, opts: MountOptions) -> None:
    """-o trace=FILE, trace_format=..., trace_max_bytes=N, trace_backups=N, notrace: the same as the --options."""
    apply_trace_options(parser, args, opts.trace)
    if opts.trace.get("no_trace") and opts.trace.get("output"):
        raise UsageError("mount options 'notrace' and 'trace' exclude each other", 2)


def check_kernel_passthrough(opts: MountOptions) -> None:
    """What can be known before mounting; whether the kernel offers passthrough is checked at init."""
    from .lowlevel.binding import VERSION
    if VERSION < (3, 17):
        raise UsageError(f"--passthrough needs libfuse >= 3.17 (this machine has libfuse "
                         f"{VERSION[0]}.{VERSION[1]}; Debian 13 ships 3.17)")
    if os.geteuid() != 0:
        raise UsageError("--passthrough needs root: the kernel lets only CAP_SYS_ADMIN register backing files")
    if opts.config.get("direct_io"):
        raise UsageError("--passthrough and -o direct_io exclude each other (direct_io sends all data through "
                         "the daemon)", 2)


def check_faults(args: argparse.Namespace) -> None:
    """Rules that cannot work are refused before mounting."""
    rules = [*args.fault, *fault_file_rules(args)]
    if args.passthrough and any(rule.ops & {"read", "write"} for rule in rules):
        raise UsageError("--passthrough and fault rules on read/write exclude each other (the kernel reads and "
                         "writes passed-through files without asking the daemon)", 2)


def _check_writable(path: str, what: str) -> None:
    """Fail now, not after hours of serving, when a file written at exit cannot be written."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"cannot write {what} file '{path}': it is a directory")
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write {what} file '{path}': {parent} is not a directory")
    target = path if os.path.exists(path) else parent
    if not os.access(target, os.W_OK):
        raise UsageError(f"cannot write {what} file '{path}': permission denied")


_READY = b"\0fuse-passthrough-ready\n"


def _background(args: argparse.Namespace, src: str, mnt: str, opts: MountOptions, filt: Any,
                helper: bool = False) -> int:
    """Fork a daemon that mounts; return 0 once the mount is usable, 1 with its error if it fails.

    The daemon's messages go to -o log=FILE, else (-b) to a new file in $TMPDIR, else (helper form) to syslog.
    """
    made: list[str] = []  # temporary files to remove again if the mount fails
    log_path: str | None = None
    log_start = 0  # where this run's messages begin in the log
    try:
        if not args.no_trace and not args.output:
            fd, args.output = tempfile.mkstemp(prefix="fuse-passthrough-", suffix=".trace")
            os.close(fd)
            made.append(args.output)
        output = None if args.no_trace else open_output(args)
        if opts.log:
            log_path = os.path.abspath(opts.log)
            try:
                os.close(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
                log_start = os.stat(log_path).st_size
            except OSError as e:
                raise UsageError(f"cannot write log file '{opts.log}': {e.strerror}") from None
        elif not helper:
            fd, log_path = tempfile.mkstemp(prefix="fuse-passthrough-", suffix=".log")
            os.close(fd)
            made.append(log_path)
    except BaseException:
        _remove(made)
        raise
    if args.output:  # the daemon works in "/"
        args.output = os.path.abspath(args.output)
    if args.summary_json:
        args.summary_json = os.path.abspath(args.summary_json)
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(r)
        os.setsid()
        os.chdir("/")  # hold no directory busy
        _close_inherited_fds()  # e.g. a pipe of whoever ran mount(8), who would wait for its end forever
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        forwarder = None
        if log_path is not None:
            log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
            os.dup2(log, 2)  # everything, libfuse's mount errors included; the parent shows them on failure
            os.close(log)
        else:
            forwarder = SyslogForwarder()
            forwarder.start()
        readied = False

        def ready() -> None:
            nonlocal readied
            if helper:
                where = f"trace: {args.output}" if not args.no_trace else "not tracing (no -o trace=FILE)"
                note(f"mounted {src} at {mnt} (pid {os.getpid()}); {where}")
                sys.stderr.flush()
            if forwarder is not None:
                forwarder.ready()
            # `w` is not inherited by programs the daemon runs (non-inheritable), so closing it here, or the
            # daemon's exit, is the parent's EOF.
            readied = True
            os.write(w, _READY)
            os.close(w)

        try:
            status = serve(args, src, mnt, opts, filt, output, on_ready=ready)
        except BaseException as e:  # noqa: BLE001 - the daemon must always report and exit
            print(f"{PROG}: {e}", file=sys.stderr)
            status = 1
        sys.stderr.flush()
        if forwarder is not None:
            early = forwarder.finish()
            if not readied:  # the parent shows why the mount failed
                os.write(w, early)
        os._exit(status)
    os.close(w)
    if output is not None:
        output.close()
    text = b""
    while _READY not in text:
        data = os.read(r, 65536)
        if not data:
            break
        text += data
    os.close(r)
    if _READY in text:
        if not helper:  # a mount helper says nothing when all is well
            where = f"trace: {args.output}; " if args.output and not args.no_trace else ""
            print(f"{PROG}: mounted {src} at {mnt} (pid {pid}); {where}log: {log_path}; "
                  f"stop with: fusermount3 -u {mnt}", file=sys.stderr)
        return 0
    os.waitpid(pid, 0)
    logged = text
    if log_path is not None:
        try:
            with open(log_path, "rb") as f:
                f.seek(log_start)
                logged += f.read()
        except OSError:
            pass
    _remove(made)
    sys.stderr.write(logged.decode("utf-8", "replace"))
    if not logged.strip():
        print(f"{PROG}: the filesystem exited before the mount was ready", file=sys.stderr)
    return 1


def _close_inherited_fds() -> None:
    """Close the descriptors this process was started with beyond 0-2 (ours are all non-inheritable)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    os.close(fd)
            except OSError:
                pass


def _remove(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


