"""The fault-injection layer: wraps any mfusepy Operations object and makes calls fail, stall or come up short.

    from fuse_passthrough.faults import FaultInjectingOperations, parse_rule
    ops = FaultInjectingOperations(MyFilesystem(), [parse_rule("op=fsync,errno=EIO,nth=2")])
    ops = TracingOperations(ops, sink)   # outside it, so the trace shows what was injected

An injected errno is raised *instead of* calling the inner operation, so nothing reaches the filesystem below; a
delay is slept before the inner call; `short` hands the inner read/write a smaller size. Each injection leaves a
call note (layers.py) that the tracing layer puts into the event.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..binding import fuse_context
from ..layers import copy_settings, implemented_ops, leave_note
from ..tracing.layer import ProcessNames
from .rules import FaultRule


class FaultInjectingOperations:
    """Forwards to `inner`, applying `rules` to matching calls.

    With `reloadable=False`, only operations named by a rule are wrapped: the others cost nothing. With
    `reloadable=True` every operation is wrapped (one dict lookup when no rule names it), so `set_rules` may
    bring rules for any operation later.
    `context` returns (uid, gid, pid, ...) of the caller; it defaults to the FUSE context.
    """

    def __init__(self, inner: Any, rules: Iterable[FaultRule] = (), *, reloadable: bool = False,
                 context: Callable[[], tuple[int, ...]] = fuse_context) -> None:
        self.inner = inner
        self._context = context
        self._names = ProcessNames()
        self._by_op: dict[str, tuple[FaultRule, ...]] = {}
        self._lock = threading.Lock()
        self.rules: tuple[FaultRule, ...] = ()
        self.set_rules(rules)
        copy_settings(inner, self)
        wanted = None if reloadable else set(self._by_op)
        for op, fn in implemented_ops(inner):
            setattr(self, op, self._wrap(op, fn) if wanted is None or op in wanted else fn)

    def set_rules(self, rules: Iterable[FaultRule]) -> None:
        """Replace the rules; calls that start afterwards use the new ones (counters start again at 0)."""
        new = tuple(rules)
        by_op: dict[str, list[FaultRule]] = {}
        for rule in new:
            for op in rule.ops:
                by_op.setdefault(op, []).append(rule)
        with self._lock:
            self.rules = new
            self._by_op = {op: tuple(rs) for op, rs in by_op.items()}  # swapped whole: readers take no lock

    def _wrap(self, op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        decide = self._decide

        def injecting(*args: Any) -> Any:
            rules = self._by_op.get(op)
            if not rules:
                return fn(*args)
            action = decide(op, args, rules)
            if action is None:
                return fn(*args)
            err, delay_ns, short = action
            leave_note(action_note(err, delay_ns, short))
            if delay_ns:
                time.sleep(delay_ns / 1e9)
            if err:
                raise OSError(err, os.strerror(err))
            if short is not None:
                args = _shortened(op, args, short)
            return fn(*args)

        injecting.__name__ = op
        return injecting

    def _decide(self, op: str, args: tuple[Any, ...], rules: tuple[FaultRule, ...]
                ) -> tuple[int, int, int | None] | None:
        return decide(rules, lambda rule: rule.matches_path(op, args), self._context, self._names)

    def direct_io_for(self, path: str) -> bool:
        """Whether files opened at `path` need direct I/O (the binding asks at open): a short read through the
        page cache would be taken for the end of the file, and the file would look truncated."""
        return any(rule.short is not None and rule.matches_path("read", (path,))
                   for rule in self._by_op.get("read", ()))

    def close(self) -> None:
        """Release this layer's own resources (not the inner object's)."""
        self._names.close()


def decide(rules: Iterable[FaultRule], path_matches: Callable[[FaultRule], bool],
           context: Callable[[], tuple[int, ...]], names: ProcessNames) -> tuple[int, int, int | None] | None:
    """(errno, delay_ns, short) from every rule that fires on a call, or None (shared by both cores' layers).

    `path_matches(rule)` says whether the call's paths match the rule's path=; `context()` gives (uid, gid, pid,
    ...) of the caller, asked only when a rule names one. Every matching rule counts the call (so each rule's
    nth/every/after see the same calls whatever the others do); delays add up; the first rule with an errno or
    short decides the outcome.
    """
    caller: tuple[int, int, str | None] | None = None
    err = delay_ns = 0
    short: int | None = None
    fired = False
    for rule in rules:
        if not path_matches(rule):
            continue
        if rule.needs_caller:
            if caller is None:
                ctx = context()
                pid = ctx[2]
                comm = names.lookup(pid, time.perf_counter_ns())[0] if rule.comms else None
                caller = (pid, ctx[0], comm)
            elif rule.comms and caller[2] is None:
                caller = (caller[0], caller[1], names.lookup(caller[0], time.perf_counter_ns())[0])
            if not rule.matches_caller(*caller):
                continue
        if not rule.fires():
            continue
        fired = True
        delay_ns += rule.delay_ns
        if not err and short is None:
            err = rule.errno
            short = rule.short
    return (err, delay_ns, short) if fired else None


def action_note(err: int, delay_ns: int, short: int | None) -> dict[str, int]:
    note: dict[str, int] = {}
    if err:
        note["errno"] = err
    elif short is not None:
        note["short"] = short
    if delay_ns:
        note["delay_ns"] = delay_ns
    return note


def _shortened(op: str, args: tuple[Any, ...], short: int) -> tuple[Any, ...]:
    """read(path, size, offset, fh) / write(path, data, offset, fh) with at most `short` bytes."""
    if op == "read":
        return (args[0], min(args[1], short), *args[2:])
    return (args[0], args[1][:short], *args[2:])
