"""The fault-injection layer: rules (rules.py) applied to the chain's `Call` objects (chain.py), making calls
fail, stall or come up short.

    chain = LayerChain(InodeOperations(src), [TracingLayer(sink), FaultLayer([parse_rule("op=fsync,errno=EIO")])])

A rule's `op=` names the operations as traces do (chain.event_ops: a SETATTR that changes the mode is `chmod`;
`lookup`, `readdirplus`, `tmpfile` are the low-level requests' own); `path=` matches the call's paths from the node
table (`call.path`, `call.path2`, computed only when a rule has a path). An injected errno is raised instead of
calling the operation; a delay is slept before it; `short` hands read/write a smaller size. What was done is set
on the call (`injected`, `delay_ns`, `short`), where an outer tracing layer finds it. Files a short-read rule
matches are opened with direct_io: a short read through the page cache would be taken for the end of the file.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..chain import HANDLERS, Call, Next, event_ops
from ..tracing.processes import ProcessNames
from .rules import FaultRule

_SETATTR_OPS = ("chmod", "chown", "truncate", "utimens", "getattr")
_OPENS = frozenset({"open", "create"})


class FaultLayer:
    """Apply `rules` to matching calls. With `reloadable=False` only the operations named by a rule (and open /
    create for short reads' direct_io) pass through this layer; with `reloadable=True` every one does (one dict
    lookup when no rule names it), so `set_rules` may bring rules for any operation later."""

    def __init__(self, rules: Iterable[FaultRule] = (), *, reloadable: bool = False) -> None:
        self._names = ProcessNames()
        self._lock = threading.Lock()
        self._by_op: dict[str, tuple[FaultRule, ...]] = {}
        self._short_reads: tuple[FaultRule, ...] = ()
        self.rules: tuple[FaultRule, ...] = ()
        self.reloadable = reloadable
        self.set_rules(rules)

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
            self._short_reads = tuple(r for r in by_op.get("read", ()) if r.short is not None)

    def wants(self, op: str) -> bool:
        if self.reloadable:
            return op in HANDLERS
        if op in _OPENS and self._short_reads:
            return True
        names = _SETATTR_OPS if op == "setattr" else (op,)
        return any(name in self._by_op for name in names)

    def _rules_for(self, call: Call) -> tuple[FaultRule, ...]:
        if call.op != "setattr":
            return self._by_op.get(call.op, ())
        by_op = self._by_op
        found: dict[int, FaultRule] = {}
        for op in event_ops(call):
            for rule in by_op.get(op, ()):
                found.setdefault(id(rule), rule)
        return tuple(found.values())

    def handle(self, call: Call, next: Next) -> Any:
        rules = self._rules_for(call)
        if not rules:
            return self._after_open(call, next(call)) if call.op in _OPENS and self._short_reads else next(call)
        action = decide(rules, lambda rule: rule.matches_paths(call.path, call.path2), lambda: call.caller,
                        self._names)
        if action is None:
            return self._after_open(call, next(call)) if call.op in _OPENS and self._short_reads else next(call)
        err, delay_ns, short = action
        call.injected = action_note(err, delay_ns, short)
        call.delay_ns = delay_ns
        if delay_ns:
            time.sleep(delay_ns / 1e9)
        if err:
            raise OSError(err, os.strerror(err))
        if short is not None:
            call.short = short
            a = call.args
            if call.op == "read":  # (ino, size, off, fi)
                call.args = (a[0], min(a[1], short), *a[2:])
            elif call.op == "write":  # (ino, data, off, fi)
                call.args = (a[0], a[1][:short], *a[2:])
        result = next(call)
        return self._after_open(call, result) if call.op in _OPENS and self._short_reads else result

    def _after_open(self, call: Call, result: Any) -> Any:
        """A file a short-read rule matches is served with direct_io (not with a backing id: reads of a
        passed-through file never reach the daemon, and --passthrough refuses read/write rules)."""
        fi = call.fi
        if fi is not None and not call.backing_id and any(r.matches_paths(call.path, None)
                                                          for r in self._short_reads):
            fi.direct_io = 1
            fi.keep_cache = 0
        return result

    def close(self) -> None:
        self._names.close()


def decide(rules: Iterable[FaultRule], path_matches: Callable[[FaultRule], bool],
           context: Callable[[], tuple[int, ...]], names: ProcessNames) -> tuple[int, int, int | None] | None:
    """(errno, delay_ns, short) from every rule that fires on a call, or None.

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
