"""Command line: `fuse-passthrough SOURCE MOUNTPOINT`, plus the `trace`, `demo` and `report` commands."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from . import __version__
from .mount import (
    ALL_OPTIONS,
    STOP_SIGNALS,
    MountOptions,
    SessionStopper,
    SignalRelay,
    UsageError,
    check_environment,
    check_paths,
    keep_signal_handlers,
)

PROG = "fuse-passthrough"

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

MOUNT_EPILOG = f"""\
mount options (-o, comma separated, repeatable):
  allow_other            let other users use the mount (root, or user_allow_other in /etc/fuse.conf)
  default_permissions    the kernel checks SOURCE's permissions for every caller (on unless
                         no_default_permissions is given)
  ro                     read-only mount
  fsname=NAME, subtype=NAME   what mount(8) shows (default: SOURCE, type fuse.passthrough)
  timeout=S              how long the kernel caches attributes and names (attr_timeout and entry_timeout);
                         default 1. Changes made through the mount are invalidated at once, hard links
                         included; changes made directly in SOURCE show within S seconds (sooner with the
                         SOURCE watcher). Cached lookups and stats never reach the daemon, so the trace
                         shows what the kernel asked, not every syscall.
  timeout=0              strict mode: no caching; every lookup and stat reaches the daemon and the trace,
                         and changes made directly in SOURCE are seen at once (slower: one request per
                         path component of every syscall)
  nowatch                do not watch SOURCE (inotify) for changes made there directly; they are then
                         seen within the timeout instead of ~0.1 s
  attr_timeout=S, entry_timeout=S, negative_timeout=S
                         the kernel's cache lifetimes one by one (negative_timeout defaults to 0)
  kernel_cache, auto_cache, direct_io, hard_remove   libfuse high-level options
  nonempty               allow a non-empty MOUNTPOINT (its files are hidden while mounted)
  passthrough            the same as --passthrough
  also: {', '.join(o for o in ALL_OPTIONS if o not in ('allow_other', 'default_permissions', 'ro', 'fsname',
        'subtype', 'timeout', 'nowatch', 'attr_timeout', 'entry_timeout', 'negative_timeout', 'kernel_cache', 'auto_cache',
        'direct_io', 'hard_remove', 'nonempty', 'passthrough'))}

examples:
  {PROG} ~/src /mnt/src                      trace everything to stderr, Ctrl-C to stop
  {PROG} -b --format jsonl --output t.jsonl ~/src /mnt/src   in the background, JSON lines to a file
  {PROG} --errors-only --path '*.py' ~/src /mnt/src          only failed operations on Python files
  {PROG} -o allow_other,ro /srv/data /mnt/data

exit status:
  0 unmounted cleanly; 1 mount or runtime failure; 2 invalid arguments or options
"""


def add_trace_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tracing")
    g.add_argument("--format", choices=("text", "jsonl"), default="text",
                   help="text: one readable line per operation; jsonl: one JSON object per line (see README)")
    g.add_argument("--output", metavar="FILE",
                   help="write events to FILE (default: stderr; with --background, a file in $TMPDIR); "
                   "FILE ending in .zst or .gz is written compressed (zstd, gzip), readable while written")
    g.add_argument("--output-max-bytes", type=_size, default=0, metavar="N",
                   help="rotate FILE when it would exceed N bytes (suffixes k, M, G; compressed bytes for "
                   ".zst/.gz: each rotated file is a complete compressed file); 0 = never")
    g.add_argument("--output-backups", type=_nonneg_int, default=1, metavar="N",
                   help="rotated files to keep: FILE.1 ... FILE.N (default 1; 0 = truncate and restart)")
    g.add_argument("--no-trace", action="store_true", help="do not record operations at all")
    g.add_argument("--cmdline", action="store_true", help="add each caller's full command line to events")
    g.add_argument("--summary-json", metavar="FILE", help="also write the summary as JSON to FILE")
    g.add_argument("--no-summary", action="store_true", help="do not print the summary table")
    f = p.add_argument_group("filters (an event is kept when it passes all of them)")
    f.add_argument("--ops", type=_csv, default=[], metavar="OP,...", help="only these operations")
    f.add_argument("--exclude-ops", type=_csv, default=[], metavar="OP,...", help="not these operations")
    f.add_argument("--path", action="append", default=[], metavar="GLOB",
                   help="only paths matching GLOB (fnmatch, '*' crosses '/'); repeatable")
    f.add_argument("--pid", action="append", type=_nonneg_int, default=[], help="only this caller pid; repeatable")
    f.add_argument("--comm", action="append", default=[], help="only this process name; repeatable")
    f.add_argument("--uid", action="append", type=_nonneg_int, default=[], help="only this caller uid; repeatable")
    f.add_argument("--errors-only", action="store_true", help="only failed operations")
    # For `trace`: keep only events of this process tree (and kernel-issued events on its files).
    f.add_argument("--descendants-of", type=_nonneg_int, default=None, help=argparse.SUPPRESS)


def _csv(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum, with a one-line error otherwise."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}: {value!r}")
        return n

    return parse


_nonneg_int = int_at_least(0)


def _size(value: str) -> int:
    units = {"k": 1 << 10, "K": 1 << 10, "m": 1 << 20, "M": 1 << 20, "g": 1 << 30, "G": 1 << 30}
    mult = units.get(value[-1:], 1)
    digits = value[:-1] if value[-1:] in units else value
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {value!r} (examples: 1000000, 64M, 1G)")
    return int(digits) * mult


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit status 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def mount_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, usage=f"{PROG} [options] SOURCE MOUNTPOINT", description=MOUNT_DESCRIPTION,
                epilog=MOUNT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", help="the directory to mirror")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an empty directory to mount it on")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                   help="mount options, see below")
    p.add_argument("-b", "--background", action="store_true",
                   help="return once the mount is usable; the filesystem keeps running in the background")
    p.add_argument("-s", "--single-threaded", action="store_true",
                   help="serve one request at a time (faster for a single client; see README)")
    p.add_argument("-d", "--debug", action="store_true", help="also print libfuse's own request log")
    p.add_argument("--passthrough", action="store_true",
                   help="kernel passthrough: reads and writes bypass the daemon (needs libfuse >= 3.17 and "
                        "CONFIG_FUSE_PASSTHROUGH; data I/O is then not traced)")
    p.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    add_trace_arguments(p)
    return p


def build_filter(args: argparse.Namespace, descendants_of: int | None = None) -> Any:
    from .tracing import EventFilter
    if descendants_of is None:
        descendants_of = getattr(args, "descendants_of", None)
    try:
        return EventFilter(ops=args.ops, exclude_ops=args.exclude_ops, paths=args.path, pids=args.pid,
                           comms=args.comm, uids=args.uid, errors_only=args.errors_only,
                           descendants_of=descendants_of)
    except ValueError as e:
        raise UsageError(str(e), 2) from None


def open_output(args: argparse.Namespace) -> Any:
    """The trace output; opened before mounting so an unwritable file fails early."""
    from .tracing import RotatingFile, StreamOutput
    if args.output:
        try:
            return RotatingFile(args.output, args.output_max_bytes, args.output_backups)
        except OSError as e:
            raise UsageError(f"cannot write trace output '{args.output}': {e.strerror}") from None
    return StreamOutput(sys.stderr.buffer)


def run_mount(argv: list[str]) -> int:
    args = mount_parser().parse_args(argv)
    opts = MountOptions.parse(args.options, os.path.abspath(args.source))
    args.passthrough = args.passthrough or opts.kernel_passthrough
    if args.passthrough:
        check_kernel_passthrough(opts)
    check_environment()
    filt = build_filter(args)
    src, mnt = check_paths(args.source, args.mountpoint, opts.nonempty, note=_note)
    if args.summary_json:
        _check_writable(args.summary_json, "--summary-json")
    if args.background:
        return _background(args, src, mnt, opts, filt)
    output = None if args.no_trace else open_output(args)
    return serve(args, src, mnt, opts, filt, output)


def check_kernel_passthrough(opts: MountOptions) -> None:
    """What can be known before mounting; whether the kernel offers passthrough is checked at init."""
    from .binding import FUSE_VERSION, kernel_passthrough_supported
    if not kernel_passthrough_supported():
        raise UsageError(f"--passthrough needs libfuse >= 3.17 (this machine has libfuse "
                         f"{FUSE_VERSION[0]}.{FUSE_VERSION[1]}; Debian 13 ships 3.17)")
    if os.geteuid() != 0:
        raise UsageError("--passthrough needs root: the kernel lets only CAP_SYS_ADMIN register backing files")
    if opts.config.get("direct_io"):
        raise UsageError("--passthrough and -o direct_io exclude each other (direct_io sends all data through "
                         "the daemon)", 2)


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


def serve(args: argparse.Namespace, src: str, mnt: str, opts: MountOptions, filt: Any, output: Any,
          on_ready: Any = None) -> int:
    """Mount and serve until unmounted; flush the trace and print the summary. Returns the exit status."""
    from . import binding
    from .passthrough import Passthrough
    from .tracing import TracingOperations
    from .tracing.sinks import ProcessSink

    ops: Any = Passthrough(src, kernel_passthrough=args.passthrough)
    sink = None
    if output is not None:
        output.close()  # it was opened to fail early; the writer process (re)opens it
        sink = ProcessSink(args.format, args.output, max_bytes=args.output_max_bytes,
                           backups=args.output_backups, summary=not args.no_summary,
                           summary_json=args.summary_json)
        ops = TracingOperations(ops, sink, filt, with_cmdline=args.cmdline)

    stopper = SessionStopper()

    def on_signal(signum: int) -> None:
        if signum != signal.SIGUSR1:
            stopper.request(signum)  # SIGINT, SIGTERM, SIGHUP: unmount and exit 0
        elif sink is not None:
            sink.request_summary()

    def on_init() -> None:
        stopper.attach()
        if args.passthrough:  # the kernel has accepted it
            _note("kernel passthrough: reads and writes of files go from the kernel straight to SOURCE; they "
                  "are not traced (open/create events say which files)")
        if on_ready is not None:
            on_ready()

    relay = SignalRelay([signal.SIGUSR1, *STOP_SIGNALS], on_signal)
    status = 0
    try:
        with keep_signal_handlers():
            binding.mount(ops, mnt, threads=not args.single_threaded, debug=args.debug, options=opts.kernel,
                          config=opts.config, on_init=on_init, watch=src if opts.watch else None)
    except binding.KernelPassthroughUnavailable:
        status = 1  # said at init, in one line
    except RuntimeError:
        print(f"{PROG}: mounting '{mnt}' failed (see the message above)", file=sys.stderr)
        status = 1
    finally:
        relay.close()
        if sink is not None and sink.close() != 0:  # the writer prints the summary and writes its JSON
            status = 1
        ops_root = getattr(ops, "inner", ops)
        ops_root.close()
    return status


_READY = b"\0fuse-passthrough-ready\n"


def _background(args: argparse.Namespace, src: str, mnt: str, opts: MountOptions, filt: Any) -> int:
    """Fork a daemon that mounts; return 0 once the mount is usable, 1 with its error if it fails."""
    made: list[str] = []  # temporary files to remove again if the mount fails
    try:
        if not args.no_trace and not args.output:
            fd, args.output = tempfile.mkstemp(prefix="fuse-passthrough-", suffix=".trace")
            os.close(fd)
            made.append(args.output)
        output = None if args.no_trace else open_output(args)
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
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
        os.dup2(log, 2)  # everything, libfuse's mount errors included; the parent shows them on failure
        os.close(log)

        def ready() -> None:
            # `w` is not inherited by programs the daemon runs (non-inheritable), so closing it here, or the
            # daemon's exit, is the parent's EOF.
            os.write(w, _READY)
            os.close(w)

        try:
            status = serve(args, src, mnt, opts, filt, output, on_ready=ready)
        except BaseException as e:  # noqa: BLE001 - the daemon must always report and exit
            print(f"{PROG}: {e}", file=sys.stderr)
            status = 1
        sys.stderr.flush()
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
        where = f"trace: {args.output}; " if args.output and not args.no_trace else ""
        print(f"{PROG}: mounted {src} at {mnt} (pid {pid}); {where}log: {log_path}; "
              f"stop with: fusermount3 -u {mnt}", file=sys.stderr)
        return 0
    os.waitpid(pid, 0)
    try:
        with open(log_path, "rb") as f:
            logged = f.read()
    except OSError:
        logged = b""
    _remove(made)
    sys.stderr.write(logged.decode("utf-8", "replace"))
    if not logged.strip():
        print(f"{PROG}: the filesystem exited before the mount was ready", file=sys.stderr)
    return 1


def _remove(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def _note(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "trace":
            from .trace_command import run_trace
            return run_trace(argv[1:])
        if argv and argv[0] == "demo":
            from .demo import run_demo
            return run_demo(argv[1:])
        if argv and argv[0] == "report":
            from .report import run_report
            return run_report(argv[1:])
        return run_mount(argv)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.status
    except ImportError as e:  # libfuse3 missing
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
