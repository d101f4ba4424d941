"""What every layer that wraps an Operations object shares (tracing, fault injection, your own).

- `WRAPPABLE_OPS`: every callback mfusepy may look up on an Operations object. A layer exposes exactly the ones
  its inner object implements, so libfuse sees the same filesystem.
- `copy_settings`: the attributes mfusepy and the binding read off the object (use_ns, flag_*, backing_files,
  direct_io_for).
- Call notes: an inner layer says what it did to the current call (the fault layer: "injected ENOSPC") and an
  outer one (the tracing layer) reads it after the call returns, in the same thread, without either knowing
  the other's type.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from .binding import mfusepy

# Argument names per operation, in mfusepy call order ("size" stands for write's and setxattr's data, which a
# trace reduces to its length). "path"/"path2" become top-level fields of trace events.
ARG_NAMES: dict[str, tuple[str, ...]] = {
    "getattr": ("path", "fh"),
    "readlink": ("path",),
    "mknod": ("path", "mode", "dev"),
    "mkdir": ("path", "mode"),
    "unlink": ("path",),
    "rmdir": ("path",),
    "symlink": ("path", "path2"),          # path = the new link, path2 = its target text
    "rename": ("path", "path2", "flags"),
    "link": ("path2", "path"),             # path = existing file, path2 = the new name
    "chmod": ("path", "mode", "fh"),
    "chown": ("path", "uid", "gid", "fh"),
    "truncate": ("path", "length", "fh"),
    "open": ("path", "flags"),
    "create": ("path", "mode", "flags"),
    "read": ("path", "size", "offset", "fh"),
    "write": ("path", "size", "offset", "fh"),
    "statfs": ("path",),
    "flush": ("path", "fh"),
    "release": ("path", "fh"),
    "fsync": ("path", "datasync", "fh"),
    "setxattr": ("path", "name", "size", "flags", "position"),
    "getxattr": ("path", "name", "position"),
    "listxattr": ("path",),
    "removexattr": ("path", "name"),
    "opendir": ("path",),
    "readdir": ("path", "fh"),
    "readdir_with_offset": ("path", "offset", "fh"),
    "releasedir": ("path", "fh"),
    "fsyncdir": ("path", "datasync", "fh"),
    "init": ("path",),
    "destroy": ("path",),
    "access": ("path", "mask"),
    "utimens": ("path", "times", "fh"),
    "fallocate": ("path", "mode", "offset", "length", "fh"),
    "copy_file_range": ("path", "fh_in", "offset_in", "path2", "fh_out", "offset_out", "size", "flags"),
    "lseek": ("path", "fh", "offset", "whence"),
    "flock": ("path", "fh", "operation"),
    "lock": ("path", "fh", "cmd", "lock"),
}

WRAPPABLE_OPS = tuple(dict.fromkeys([*ARG_NAMES, *(f[0] for f in mfusepy.fuse_operations._fields_),
                                     "readdir_with_offset", "init_with_config"]))
_SETTINGS = ("use_ns", "flag_nopath", "flag_nullpath_ok", "backing_files", "direct_io_for")


def copy_settings(inner: Any, outer: Any) -> None:
    for name in _SETTINGS:
        if hasattr(inner, name):
            setattr(outer, name, getattr(inner, name))


def implemented_ops(inner: Any) -> Iterator[tuple[str, Callable[..., Any]]]:
    """(name, callable) for each operation `inner` implements (libfuse_ignore'd defaults left out)."""
    for op in WRAPPABLE_OPS:
        fn = getattr(inner, op, None)
        if fn is not None and callable(fn) and not getattr(fn, "libfuse_ignore", False):
            yield op, fn


_notes = threading.local()


def leave_note(note: dict[str, Any]) -> None:
    """Attach `note` to the call this thread is serving (replaces an earlier note of the same call)."""
    _notes.value = note


def clear_note() -> None:
    _notes.value = None


def take_note() -> dict[str, Any] | None:
    note: dict[str, Any] | None = getattr(_notes, "value", None)
    if note is not None:
        _notes.value = None
    return note
