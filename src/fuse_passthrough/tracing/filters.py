"""Which events to keep: cheap checks made on the hot path before anything is formatted."""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Iterable
from typing import Any

from .events import ARG_NAMES
from .processes import parent_pid


class EventFilter:
    """Keep an event when it passes every configured criterion (all criteria empty = keep everything).

    ops/exclude_ops are applied when the layer is built (excluded operations are not even wrapped); the rest
    per event: path globs (fnmatch, matched against path and path2), pids, comms, uids, errors only, and
    optionally "descendants of a pid" (for `fuse-passthrough trace`).
    """

    def __init__(self, ops: Iterable[str] = (), exclude_ops: Iterable[str] = (), paths: Iterable[str] = (),
                 pids: Iterable[int] = (), comms: Iterable[str] = (), uids: Iterable[int] = (),
                 errors_only: bool = False, descendants_of: int | None = None) -> None:
        self.ops = frozenset(ops)
        self.exclude_ops = frozenset(exclude_ops)
        unknown = (self.ops | self.exclude_ops) - ARG_NAMES.keys()
        if unknown:
            raise ValueError(f"unknown operation(s): {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(ARG_NAMES))})")
        globs = list(paths)
        self._path_re = re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None
        self.pids = frozenset(pids)
        self.comms = frozenset(comms)
        self.uids = frozenset(uids)
        self.errors_only = errors_only
        self.tree = ProcessTree(descendants_of) if descendants_of is not None else None
        self.active = bool(self._path_re or self.pids or self.comms or self.uids or errors_only or self.tree)

    def accepts_op(self, op: str) -> bool:
        if self.ops and op not in self.ops:
            return False
        return op not in self.exclude_ops

    def accepts(self, op: str, args: tuple[Any, ...], err: int, pid: int, uid: int, comm: str | None,
                result: Any = None) -> bool:
        if self.errors_only and not err:
            return False
        if self.pids and pid not in self.pids:
            return False
        if self.uids and uid not in self.uids:
            return False
        if self.comms and comm not in self.comms:
            return False
        if self._path_re is not None and not self._path_matches(op, args):
            return False
        if self.tree is not None and not self.tree.accepts(op, args, err, pid, result):
            return False
        return True

    def _path_matches(self, op: str, args: tuple[Any, ...]) -> bool:
        assert self._path_re is not None
        names = ARG_NAMES.get(op, ())
        for name, value in zip(names, args, strict=False):
            if name in ("path", "path2") and isinstance(value, str) and self._path_re.match(value):
                return True
        return False


class ProcessTree:
    """Events of one process and its descendants, plus kernel-issued (pid 0) events on their open files.

    Ancestry is read from /proc (`parent_pid`) when a pid is first seen and remembered, so a process that exits
    later is still attributed correctly. File handles opened by members are tracked so that a release or
    writeback the kernel sends with pid 0 is kept when it concerns one of them.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self._member: dict[int, bool] = {root: True}
        # Open handles of members, counted: the daemon may give a released handle's number to a new open before
        # the release is recorded (another worker thread), and both releases must then be kept.
        self._fhs: dict[int, int] = {}
        self._fhs_lock = threading.Lock()

    def is_member(self, pid: int) -> bool:
        known = self._member.get(pid)
        if known is not None:
            return known
        chain: list[int] = []
        p = pid
        result = False
        while p > 1 and len(chain) < 64:
            known = self._member.get(p)
            if known is not None:
                result = known
                break
            chain.append(p)
            p = parent_pid(p)
        for c in chain:
            self._member[c] = result
        return result

    def _released(self, fh: int) -> None:
        with self._fhs_lock:
            n = self._fhs.get(fh, 0)
            if n > 1:
                self._fhs[fh] = n - 1
            elif n:
                del self._fhs[fh]

    def accepts(self, op: str, args: tuple[Any, ...], err: int, pid: int, result: Any = None) -> bool:
        names = ARG_NAMES.get(op, ())
        fh = None
        if "fh" in names:
            i = names.index("fh")
            fh = args[i] if i < len(args) else None
        if pid == 0:
            if fh is None or fh not in self._fhs:
                return False
            if op in ("release", "releasedir"):
                self._released(fh)
            return True
        if not self.is_member(pid):
            return False
        if fh is not None:
            if op in ("release", "releasedir"):
                self._released(fh)
        elif op in ("open", "create", "opendir") and not err and result is not None:
            opened = result[0] if isinstance(result, tuple) else result  # (fh, backing id): kernel passthrough
            if isinstance(opened, int):
                with self._fhs_lock:  # a handle of a member: kernel-issued ops on it belong to the trace
                    self._fhs[opened] = self._fhs.get(opened, 0) + 1
        return True

