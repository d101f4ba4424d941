"""`fuse-passthrough trace -- CMD`: what a command does to a filesystem, seen from the filesystem.

DIR (default: the current directory) is mounted at a private temporary mount point outside DIR by a daemon process
of its own session (so a Ctrl-C meant for CMD does not stop it first). CMD is forked first and held until the mount
is ready, so its pid is known to the daemon, which keeps only the events of CMD's process tree (and the
kernel-issued events on files it opened). CMD runs in the mirror of the user's directory; its writes land in DIR.
Afterwards the mount is always removed, the events are printed, then the summary table, and the exit status is
CMD's.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from .arguments import PROG, Parser, apply_trace_options, check_rotation, fault_file_rules, open_output
from .errors import UsageError
from .mount import MountOptions, check_environment, inside
from .options import TRACE, add_arguments, lookup, split_options
from .private_mount import PrivateMount
from .tracing import StreamOutput, Summary
from .tracing.formats import encoder

USAGE = f"{PROG} trace [--source DIR] [--format text|jsonl] [--output FILE] [filters] -- CMD [ARGS...]"


def trace_parser() -> argparse.ArgumentParser:
    p = Parser(prog=f"{PROG} trace", usage=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter,
                description=__doc__.split("\n\n", 1)[0] + "\n\n" + __doc__.split("\n\n", 1)[1])
    add_arguments(p, "trace")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    return p


def _daemon_filter_args(args: argparse.Namespace) -> list[str]:
    out = []
    if args.ops:
        out += ["--ops", ",".join(args.ops)]
    if args.exclude_ops:
        out += ["--exclude-ops", ",".join(args.exclude_ops)]
    for g in args.path:
        out += ["--path", g]
    for pid in args.pid:
        out += ["--pid", str(pid)]
    for c in args.comm:
        out += ["--comm", c]
    for u in args.uid:
        out += ["--uid", str(u)]
    if args.errors_only:
        out.append("--errors-only")
    if args.cmdline:
        out.append("--cmdline")
    # the mount options but those of tracing, which are the trace command's own (its flags)
    mount_options = [item for spec in args.options for item in split_options(spec)
                     if (option := lookup(item)) is None or option.goes != TRACE]
    if mount_options:
        out += ["-o", ",".join(mount_options)]
    for rule in args.fault:
        out += ["--fault", rule.text]
    if args.fault_file:
        out += ["--fault-file", os.path.abspath(args.fault_file)]
    return out


def _held_child(command: list[str], cwd: str) -> tuple[int, int]:
    """Fork CMD, held before exec until a byte arrives on the returned fd."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            if not os.read(r, 1):
                os._exit(127)  # the mount failed: never run CMD elsewhere
            os.close(r)
            _set_process_name(os.path.basename(command[0]))  # its chdir below is CMD's first action
            os.chdir(cwd)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execvp(command[0], command)
        except OSError as e:
            print(f"{PROG} trace: cannot run {command[0]}: {e.strerror}", file=sys.stderr)
            os._exit(127)
    os.close(r)
    return pid, w


def _set_process_name(name: str) -> None:
    import ctypes
    pr_set_name = 15
    ctypes.CDLL(None).prctl(pr_set_name, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def _relay(pid: int, signum: int) -> None:
    """Pass a signal on to CMD, which may have ended already."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def run_trace(argv: list[str]) -> int:
    parser = trace_parser()
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError(f"no command given; usage: {USAGE}", 2)
    source = os.path.realpath(args.source)
    if not os.path.isdir(source):
        raise UsageError(f"source '{args.source}' is not a directory")
    opts = MountOptions.parse(args.options, source)  # every -o checked before anything is mounted
    if opts.trace.get("no_trace"):
        raise UsageError("mount option 'notrace': trace shows what CMD does, so it always traces", 2)
    if opts.log or opts.remount:
        raise UsageError(f"mount option '{'log' if opts.log else 'remount'}' is for mounts, not for trace (which "
                         "prints the filesystem's messages itself and mounts a private mirror)", 2)
    apply_trace_options(parser, args, opts.trace)  # -o trace=FILE, trace_format=...: as --output, --format...
    check_rotation(parser, args)
    fault_file_rules(args)  # a bad rules file is a usage error before anything is mounted
    check_environment()
    here = os.path.realpath(os.getcwd())
    rel = os.path.relpath(here, source) if inside(here, source) else "."
    pm = PrivateMount(source)
    output = None
    try:
        output = open_output(args) if args.output else None  # compressed, rotated: as the mount's
        return _run_held(pm, command, rel, args, output)
    finally:
        if output is not None:
            output.close()
        pm.cleanup()  # after a failed start too: its directory holds the daemon's log


def _run_held(pm: PrivateMount, command: list[str], rel: str, args: argparse.Namespace, output: Any) -> int:
    """CMD run held until `pm` is mounted, then in the mirror of `rel`; the trace printed; CMD's exit status."""
    child, go = _held_child(command, os.path.join(pm.mountpoint, rel))
    pm.cmd[-2:-2] = ["--descendants-of", str(child), *_daemon_filter_args(args)]
    # Ctrl-C reaches CMD (same process group); we wait for it to end, then clean up.
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, lambda s, f: _relay(child, signal.SIGTERM))
    old_hup = signal.signal(signal.SIGHUP, lambda s, f: _relay(child, signal.SIGHUP))
    status = 1
    try:
        try:
            pm.start()
        except UsageError:
            os.close(go)  # the held child exits without running CMD
            os.waitpid(child, 0)
            raise
        os.write(go, b"x")
        os.close(go)
        _, wstatus = os.waitpid(child, 0)
        status = os.waitstatus_to_exitcode(wstatus)
        if status < 0:
            status = 128 - status
    finally:
        pm.stop()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGHUP, old_hup)
    for line in pm.daemon_log().splitlines():  # the filesystem's own complaints, if any, are the user's too
        if line:
            print(f"{PROG} trace: filesystem: {line}", file=sys.stderr)
    _print_trace(pm, args, output)
    return status


def _print_trace(pm: PrivateMount, args: argparse.Namespace, output: Any) -> None:
    encode = encoder(args.format)
    if output is None:
        sys.stderr.flush()  # the filesystem's messages, printed before
        output = StreamOutput(sys.stderr.buffer)
    summary = Summary()
    lines: list[bytes] = []
    for event in pm.events():
        summary.add_event(event)
        lines.append(encode(event))
        if len(lines) == 4096:
            output.write_lines(lines)
            lines = []
    output.write_lines(lines)
    output.flush()
    if not args.no_summary:
        sys.stderr.write("\n")
        summary.render(sys.stderr)
        _print_findings(pm.trace_path)
    if args.summary_json:
        summary.write_json(args.summary_json)


def _print_findings(trace_path: str) -> None:
    """The findings of `report` (docs/report.md, "Findings"), one line each, after the summary table."""
    from .report import ReportError, build
    from .report.findings import find, render_findings
    try:
        report, _ = build([trace_path])
    except (ReportError, OSError) as e:
        print(f"{PROG} trace: no findings: {e}", file=sys.stderr)
        return
    found = find(report)
    render_findings(found, sys.stderr, verbose=False)
    if found:
        sys.stderr.write("  (evidence and fixes: save the trace with --format jsonl --output FILE, then "
                         f"`{PROG} report FILE`)\n")
