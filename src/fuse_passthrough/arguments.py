"""Argument helpers shared by the commands: the one-line-error parser, value types, and the tracing
options (output, format, filters) that the mount and `trace` both take."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from .errors import UsageError
from .faults.rules import KEYS as FAULT_KEYS

PROG = "fuse-passthrough"


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit status 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def add_trace_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tracing")
    g.add_argument("--format", choices=("text", "jsonl"), default="text",
                   help="text: one readable line per operation; jsonl: one JSON object per line (see README)")
    g.add_argument("--output", metavar="FILE",
                   help="write events to FILE (default: stderr; with --background, a file in $TMPDIR); "
                   "FILE ending in .zst or .gz is written compressed (zstd, gzip), readable while written")
    g.add_argument("--output-max-bytes", type=byte_size, default=0, metavar="N",
                   help="rotate FILE when it would exceed N bytes (suffixes k, M, G; compressed bytes for "
                   ".zst/.gz: each rotated file is a complete compressed file); 0 = never")
    g.add_argument("--output-backups", type=nonneg_int, default=1, metavar="N",
                   help="rotated files to keep: FILE.1 ... FILE.N (default 1; 0 = truncate and restart)")
    g.add_argument("--no-trace", action="store_true", help="do not record operations at all")
    g.add_argument("--cmdline", action="store_true", help="add each caller's full command line to events")
    g.add_argument("--summary-json", metavar="FILE", help="also write the summary as JSON to FILE")
    g.add_argument("--no-summary", action="store_true", help="do not print the summary table")
    f = p.add_argument_group("filters (an event is kept when it passes all of them)")
    f.add_argument("--ops", type=comma_list, default=[], metavar="OP,...", help="only these operations")
    f.add_argument("--exclude-ops", type=comma_list, default=[], metavar="OP,...", help="not these operations")
    f.add_argument("--path", action="append", default=[], metavar="GLOB",
                   help="only paths matching GLOB (fnmatch, '*' crosses '/'); repeatable")
    f.add_argument("--pid", action="append", type=nonneg_int, default=[], help="only this caller pid; repeatable")
    f.add_argument("--comm", action="append", default=[], help="only this process name; repeatable")
    f.add_argument("--uid", action="append", type=nonneg_int, default=[], help="only this caller uid; repeatable")
    f.add_argument("--errors-only", action="store_true", help="only failed operations")
    # For `trace`: keep only events of this process tree (and kernel-issued events on its files).
    f.add_argument("--descendants-of", type=nonneg_int, default=None, help=argparse.SUPPRESS)


def add_fault_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fault injection (see README: Fault injection)")
    g.add_argument("--fault", action="append", type=fault_rule, default=[], metavar="RULE",
                   help="inject a fault into matching calls, e.g. 'op=write,path=*.db,errno=ENOSPC' or "
                        "'op=read,delay=50ms,probability=0.1,seed=7'; keys: " + ", ".join(FAULT_KEYS)
                        + "; repeatable")
    g.add_argument("--fault-file", metavar="FILE",
                   help="rules from FILE, one per line ('#' comments); read again whenever FILE changes, "
                        "on the live mount")


def fault_rule(value: str) -> Any:
    from .faults import RuleError, parse_rule
    try:
        return parse_rule(value)
    except RuleError as e:
        raise argparse.ArgumentTypeError(f"{e}: {value!r}") from None


def fault_file_rules(args: argparse.Namespace) -> list[Any]:
    """The rules of --fault-file (none without it); a one-line usage error if the file is unusable."""
    if not args.fault_file:
        return []
    from .faults import RuleError, read_rules
    try:
        return read_rules(args.fault_file)
    except RuleError as e:
        raise UsageError(str(e), 2) from None


def comma_list(value: str) -> list[str]:
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


nonneg_int = int_at_least(0)


def byte_size(value: str) -> int:
    units = {"k": 1 << 10, "K": 1 << 10, "m": 1 << 20, "M": 1 << 20, "g": 1 << 30, "G": 1 << 30}
    mult = units.get(value[-1:], 1)
    digits = value[:-1] if value[-1:] in units else value
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {value!r} (examples: 1000000, 64M, 1G)")
    return int(digits) * mult


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


def note(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


