"""The package is Python but for four optional C modules, built where a C compiler and Python's headers are (else
the build goes on without them, and the same work is done in Python):

- src/fuse_passthrough/_columns.c: the per-event part of `report`'s tally (docs/report.md, "Speed and memory");
  without it `report` does the same work with about 4 times the instructions per event;
- src/fuse_passthrough/lowlevel/_trampolines.c: the low-level binding's C entry points, which send each reply after
  the Python callback has released the GIL (lowlevel/binding.py); without it replies are sent from Python;
- src/fuse_passthrough/tracing/_jsonl.c: the trace writer's per-event work: its JSONL and text lines
  (tracing/formats.py) and the summary's tally (tracing/stats.py); without it the lines are written in Python
  (orjson, the stdlib, format_text: about 5 times the writer's CPU for text) and the tally is a Python loop;
- src/fuse_passthrough/tracing/_recorder.c: the tracing layer's per-request work (timing, caller, event tuple,
  hand-off to the sink; tracing/layer.py); without it a Python closure does the same.

None links libfuse (the binding loads it at run time). Everything else is in pyproject.toml."""

import os

from setuptools import Extension, setup

# FUSE over io_uring (lowlevel/uring.c) where liburing's headers are (liburing-dev); else the binding has none
URING = os.path.exists("/usr/include/liburing.h")

setup(ext_modules=[
    Extension("fuse_passthrough._columns", ["src/fuse_passthrough/_columns.c"], optional=True),
    Extension("fuse_passthrough.lowlevel._trampolines",
              ["src/fuse_passthrough/lowlevel/_trampolines.c", "src/fuse_passthrough/lowlevel/uring.c",
               "src/fuse_passthrough/lowlevel/turn.c"],
              define_macros=[("FPT_HAVE_URING", "1")] if URING else [], libraries=["uring"] if URING else [],
              depends=["src/fuse_passthrough/lowlevel/uring.h", "src/fuse_passthrough/lowlevel/turn.h"], optional=True),
    Extension("fuse_passthrough.tracing._jsonl", ["src/fuse_passthrough/tracing/_jsonl.c"], optional=True),
    Extension("fuse_passthrough.tracing._recorder", ["src/fuse_passthrough/tracing/_recorder.c"], optional=True),
])
