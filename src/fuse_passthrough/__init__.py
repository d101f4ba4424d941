"""fuse-passthrough: a POSIX-faithful FUSE passthrough filesystem that traces every operation."""

__version__ = "0.1.0"
