"""Argument helpers shared by the commands: the one-line-error parser, the value types (which the option table,
options.py, names), and what the tracing and fault options turn into (filter, output, rules)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from .errors import UsageError

PROG = "fuse-passthrough"


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit status 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


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


def apply_trace_options(parser: argparse.ArgumentParser, args: argparse.Namespace, trace: dict[str, Any]) -> None:
    """-o trace=FILE, trace_format=..., trace_max_bytes=N, trace_backups=N (`MountOptions.trace`): the same as their
    --options; a one-line usage error where both are given and differ."""
    from .options import TRACE_OPTIONS
    flags = {dest: f"-o {key}" for key, dest in TRACE_OPTIONS.items()}
    for dest, value in trace.items():
        given = getattr(args, dest)
        if given != parser.get_default(dest) and given != value:
            option = "--" + dest.replace("_", "-")
            raise UsageError(f"{option} and {flags[dest]} disagree; give one of them", 2)
        setattr(args, dest, value)


def check_rotation(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--output-max-bytes and --output-backups rotate a trace file: a usage error without one (stderr)."""
    for dest in ("output_max_bytes", "output_backups"):
        if not args.output and getattr(args, dest) != parser.get_default(dest):
            raise UsageError(f"--{dest.replace('_', '-')} rotates a trace file: give --output FILE too", 2)


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


