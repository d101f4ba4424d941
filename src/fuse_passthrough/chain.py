"""The inode core's layers: one typed `Call` per request through a chain of layers, then the operations.

    chain = LayerChain(InodeOperations(src), [TracingLayer(sink), FaultLayer(rules)])
    LowLevelSession(chain, mountpoint)     # the chain has exactly the handlers the operations have

For each request the chain builds one `Call` (operation, request, node id, arguments) and hands it to the first
layer with a `next` continuation; each layer does what it does before and after `next(call)` (or instead of it:
raise OSError to fail the call, return to answer it) and returns the handler's result. The innermost `next` calls
the operation's handler with `(req, *call.args)` and stores the result in `call.result`. The binding sends the
reply from what the chain returns, so a layer never replies itself.

What a layer may read or set on the call, all on the object (no thread-local notes, no settings copied between
wrappers):

- `op` (the low-level handler's name: lookup, setattr, readdirplus, forget_multi...), `req`, `ino` (the node the
  call is about; the parent for lookup/mknod/mkdir/create/unlink/rmdir/rename/symlink/tmpfile), `args` (the
  handler's arguments after `req`; a layer may replace them, e.g. a shorter read);
- `path`, `path2`: the node table's paths (computed on first use, then kept: a layer that wants the name an
  unlink removes asks before `next`); `path2` is the second name of rename and link, and copy_file_range's
  output file;
- `caller`: (uid, gid, pid, umask) from fuse_req_ctx, read on first use (kernel requests: pid 0);
- `result` / `errno`: the outcome (`errno` is set by the layer that sees an OSError; 0 = success);
- `injected` ({"errno": n} | {"short": n}, with "delay_ns"), `delay_ns`, `short`: what a fault layer did;
- `backing_id`: the kernel passthrough backing id an open or create replied with (0: none).

A layer is any object with `handle(call, next)`; `wants(op)` (optional) says which operations it needs to see:
an operation no layer wants gets the operations' own handler, at no cost. `direct(op, handler, nodes, context)`
(optional) may return a handler of `(req, *args)` that does what `handle` would do around `handler`, without a
`Call`: the chain uses it when that layer is the only one wanting `op` (the tracing layer of a default mount). `init` and `destroy` go through the
chain too (req 0, no node).
"""

from __future__ import annotations

import errno as errno_mod
import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .lowlevel import abi

Next = Callable[["Call"], Any]

# Where each handler's paths come from: ((node arg, name arg or None), second path or None), positions in the
# arguments after req. An op not listed has no path ("/" for init and destroy).
_NODE = ((0, None), None)
_ENTRY = ((0, 1), None)
PATH_ARGS: dict[str, tuple[tuple[int, int | None], tuple[int, int | None] | None]] = {
    **{op: _NODE for op in ("forget", "getattr", "setattr", "readlink", "open", "read", "write", "flush", "release",
                            "fsync", "opendir", "readdir", "readdirplus", "releasedir", "fsyncdir", "statfs",
                            "access", "setxattr", "getxattr", "listxattr", "removexattr", "fallocate", "lseek",
                            "tmpfile", "getlk", "setlk", "flock")},
    **{op: _ENTRY for op in ("lookup", "mknod", "mkdir", "unlink", "rmdir", "create")},
    "symlink": ((1, 2), None),
    "link": ((0, None), (1, 2)),
    "rename": ((0, 1), (2, 3)),
    "copy_file_range": ((0, None), (3, None)),
}
LIFECYCLE = frozenset({"init", "destroy"})
_OPEN_OPS = {"open": 1, "create": 3, "tmpfile": 2, "opendir": 1}  # where `fi` is among the arguments


class PathSource(Protocol):
    def path(self, ino: int, name: bytes | None = None) -> str | None: ...


_caller: Callable[[int], tuple[int, int, int, int]] | None = None


def request_caller(req: int) -> tuple[int, int, int, int]:
    """(uid, gid, pid, umask) of the process behind a low-level request."""
    global _caller
    if not req:
        return (0, 0, 0, 0)
    if _caller is None:
        from .lowlevel import binding as ll  # loads libfuse: not at import
        _caller = ll.caller
    return _caller(req)


class Call:
    """One request on its way through the layers (see the module docstring). Built once per request."""

    __slots__ = ("op", "req", "args", "result", "errno", "injected", "delay_ns", "short", "_nodes", "_path",
                 "_path2", "_caller", "_context")
    _UNSET: Any = object()

    def __init__(self, op: str, req: int, args: tuple[Any, ...], nodes: PathSource | None = None,
                 context: Callable[[int], tuple[int, int, int, int]] = request_caller) -> None:
        self.op = op
        self.req = req
        self.args = args
        self.result: Any = None
        self.errno = 0
        self.injected: dict[str, int] | None = None
        self.delay_ns = 0
        self.short: int | None = None
        self._nodes = nodes
        self._path: Any = Call._UNSET
        self._path2: Any = Call._UNSET
        self._caller: tuple[int, int, int, int] | None = None
        self._context = context

    def __repr__(self) -> str:
        return f"Call({self.op}, ino={self.ino}, args={self.args!r}, errno={self.errno})"

    @property
    def ino(self) -> int:
        """The node the call is about (the parent directory for calls that name an entry); 0 for none."""
        where = PATH_ARGS.get(self.op)
        return int(self.args[where[0][0]]) if where is not None else 0

    def _resolve(self, which: int) -> str | None:
        if self.op in LIFECYCLE:
            return "/" if which == 0 else None
        where = PATH_ARGS.get(self.op)
        if where is None or self._nodes is None:
            return None
        spec = where[which]
        if spec is None:
            return None
        node, name = spec
        return self._nodes.path(self.args[node], None if name is None else self.args[name])

    @property
    def path(self) -> str | None:
        """The call's path from the node table (None when unknown, e.g. an unlinked file); kept once read."""
        if self._path is Call._UNSET:
            self._path = self._resolve(0)
        return self._path  # type: ignore[no-any-return]

    @property
    def path2(self) -> str | None:
        if self._path2 is Call._UNSET:
            self._path2 = self._resolve(1)
        return self._path2  # type: ignore[no-any-return]

    @property
    def caller(self) -> tuple[int, int, int, int]:
        """(uid, gid, pid, umask); read from the request on first use (valid while the request is served)."""
        if self._caller is None:
            self._caller = self._context(self.req) if self.req else (0, 0, 0, 0)  # init, destroy: the kernel
        return self._caller

    @property
    def fi(self) -> Any:
        """The open file's fuse_file_info, for calls that have one (None otherwise)."""
        if self.op in _OPEN_OPS:
            return self.args[_OPEN_OPS[self.op]]
        for a in self.args[::-1]:
            if hasattr(a, "fh") and hasattr(a, "flags"):
                return a
        return None

    @property
    def backing_id(self) -> int:
        """The backing id an open/create/tmpfile replied with (kernel passthrough); 0 for none."""
        if self.op not in _OPEN_OPS:
            return 0
        return int(getattr(self.args[_OPEN_OPS[self.op]], "backing_id", 0) or 0)

    def fail(self, exc: BaseException) -> int:
        """Record an exception as the outcome; its errno (EIO for anything but an OSError with one)."""
        e = exc.errno if isinstance(exc, OSError) else None
        self.errno = e if isinstance(e, int) and e > 0 else errno_mod.EIO
        return self.errno


def event_ops(call: Call) -> tuple[str, ...]:
    """The operations a call counts as in traces and fault rules (the path core's names): a SETATTR is one
    chmod / chown / truncate / utimens per kind of attribute it changes, getattr when it changes none."""
    if call.op != "setattr":
        return (call.op,)
    return setattr_ops(call.args[2])


@functools.cache  # a few combinations of bits, asked at every traced SETATTR
def setattr_ops(to_set: int) -> tuple[str, ...]:
    """The operations a SETATTR with these `to_set` bits counts as (event_ops)."""
    ops = []
    if to_set & abi.FUSE_SET_ATTR_MODE:
        ops.append("chmod")
    if to_set & (abi.FUSE_SET_ATTR_UID | abi.FUSE_SET_ATTR_GID):
        ops.append("chown")
    if to_set & abi.FUSE_SET_ATTR_SIZE:
        ops.append("truncate")
    if to_set & (abi.FUSE_SET_ATTR_ATIME | abi.FUSE_SET_ATTR_MTIME | abi.FUSE_SET_ATTR_ATIME_NOW
                 | abi.FUSE_SET_ATTR_MTIME_NOW):
        ops.append("utimens")
    return tuple(ops) or ("getattr",)


class Layer(Protocol):
    def handle(self, call: Call, next: Next) -> Any:
        """Do this layer's part and return the result of `next(call)` (or raise OSError to fail the call)."""


# Every handler LowLevelSession may register, in the order the chain looks for them.
HANDLERS = ("init", "destroy", "lookup", "forget", "forget_multi", "getattr", "setattr", "readlink", "mknod",
            "mkdir", "symlink", "link", "unlink", "rmdir", "rename", "open", "create", "tmpfile", "read", "write",
            "flush", "release", "fsync", "opendir", "readdir", "readdirplus", "releasedir", "fsyncdir", "statfs",
            "access", "setxattr", "getxattr", "listxattr", "removexattr", "getlk", "setlk", "flock", "fallocate",
            "copy_file_range", "lseek")


class LayerChain:
    """The handlers of `operations`, each passed through `layers` (the first is the outermost).

    Exposes exactly the handlers `operations` has, so libfuse sees the same file system. An operation no layer
    wants is the operations' own bound method. `nodes` (default: `operations.nodes`) gives the calls' paths.
    """

    def __init__(self, operations: Any, layers: Sequence[Any] = (), *, nodes: PathSource | None = None,
                 context: Callable[[int], tuple[int, int, int, int]] = request_caller) -> None:
        self.operations = operations
        self.layers = tuple(layers)
        self.nodes = nodes if nodes is not None else getattr(operations, "nodes", None)
        self._context = context
        for op in HANDLERS:
            fn = getattr(operations, op, None)
            if fn is None:
                continue
            wanting = [layer for layer in self.layers if _wants(layer, op)]
            setattr(self, op, self._chained(op, fn, wanting) if wanting else fn)

    def _chained(self, op: str, fn: Callable[..., Any], layers: list[Any]) -> Callable[..., Any]:
        if op in LIFECYCLE:
            def terminal(call: Call) -> Any:
                call.result = result = fn(*call.args)
                return result
        else:
            def terminal(call: Call) -> Any:
                call.result = result = fn(call.req, *call.args)
                return result
        if len(layers) == 1 and op not in LIFECYCLE:
            direct = getattr(layers[0], "direct", None)
            fast = direct(op, fn, self.nodes, self._context) if direct is not None else None
            if fast is not None:
                return fast  # type: ignore[no-any-return]
        step: Next = terminal
        for layer in reversed(layers):
            step = _link(layer.handle, step)
        first = step
        nodes, context = self.nodes, self._context
        if op in LIFECYCLE:
            def lifecycle(*args: Any) -> Any:
                return first(Call(op, 0, args, nodes, context))
            lifecycle.__name__ = op
            return lifecycle

        def handler(req: int, *args: Any) -> Any:
            return first(Call(op, req, args, nodes, context))
        handler.__name__ = op
        return handler

    def close(self) -> None:
        """Close the layers that have a close() (not the operations)."""
        for layer in self.layers:
            close = getattr(layer, "close", None)
            if close is not None:
                close()


def _link(handle: Callable[[Call, Next], Any], nxt: Next) -> Next:
    def step(call: Call) -> Any:
        return handle(call, nxt)
    return step


def _wants(layer: Any, op: str) -> bool:
    wants = getattr(layer, "wants", None)
    return True if wants is None else bool(wants(op))
