"""The package is Python but for one optional C module, src/fuse_passthrough/_columns.c: the per-event part of
`report`'s tally (docs/report.md, "Speed and memory"). Without a C compiler or Python's headers the build goes on
without it, and `report` does the same work in Python, with about 4 times the instructions per event. Everything
else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("fuse_passthrough._columns", ["src/fuse_passthrough/_columns.c"], optional=True)])
