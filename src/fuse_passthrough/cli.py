"""Command line entry point: dispatches to the mount command or to `trace`, `demo` and `report`."""

from __future__ import annotations

import sys

from .arguments import PROG
from .errors import UsageError


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
        from .mount_command import run_mount
        return run_mount(argv)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.status
    except ImportError as e:  # libfuse3 missing
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
