"""The report's data: what every output (text, JSON, HTML, diff, findings) reads, made from the tally."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..tracing.events import KERNEL_COMM
from ..tracing.stats import OpStats, Summary

if TYPE_CHECKING:
    from .tally import Tally



DEFAULT_TOP = 10

# --------------------------------------------------------------------------------------------- analysis

def _counter() -> Counter[str]:
    """An empty Counter, made without Counter.__init__ (a report makes one per path: this is 10x cheaper)."""
    return Counter.__new__(Counter)


@dataclass
class Group:
    """Totals for one path, one process, or one (errno, path) pair."""

    calls: int = 0
    errors: int = 0
    total_ns: int = 0
    ops: Counter[str] = field(default_factory=_counter)

    def add(self, event: dict[str, Any]) -> None:
        self.calls += 1
        self.errors += event["errno"] is not None
        self.total_ns += event["duration_ns"]
        self.ops[event["op"]] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "errors": self.errors, "total_ns": self.total_ns, "ops": dict(ranked(self.ops))}


def ranked(ops: Counter[str]) -> list[tuple[str, int]]:
    """Operations and their counts, most first (ties by name)."""
    return sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))


def _group(groups: dict[Any, Group], key: Any) -> Group:
    g = groups.get(key)
    if g is None:
        g = groups[key] = Group()
    return g


def process_label(pid: int, comm: str | None) -> str:
    """'comm[pid]', or '[kernel]' for requests the kernel issued on its own (pid 0)."""
    return KERNEL_COMM if pid == 0 else f"{comm or '?'}[{pid}]"


class Report:
    """Everything the report shows, accumulated one event at a time."""

    def __init__(self) -> None:
        self.summary = Summary()
        self.paths: dict[str, Group] | PathTable = {}  # PathTable: the tally's (event by event: a dict)
        self.processes: dict[tuple[int, str | None], Group] = {}
        self.errors: dict[tuple[str, str | None], Group] = {}
        self.errno_ops: dict[str, Counter[str]] = {}  # errno -> operations: exact even when `errors` is pruned
        self.events = 0
        self.first_ts: float | None = None
        self.last_end: float | None = None
        # table -> (operations, entries) dropped from it to bound memory (see trace_scan.TABLE_CAP)
        self.dropped: dict[str, tuple[int, int]] = {}
        self.sample: list[dict[str, Any]] = []  # events for the HTML charts (a bounded sample)
        self.sample_every_error = True  # the sample holds every failed operation
        from .findings import Evidence  # (the findings use this module)
        self.evidence = Evidence()  # what the findings need beyond the tables
        self.op_max: dict[str, int] = {}  # the longest duration per operation

    @classmethod
    def from_tally(cls, t: Tally) -> Report:
        """The report of a tally (what `build` reads): its arrays read directly, the paths' rows left as columns."""
        t.flush()
        t.evidence.from_rows(t.paths.names.names, t.paths.ev, t.procs.names.names, t.procs.ev)
        r = cls()
        r.events = t.events
        if t.events:
            r.first_ts, r.last_end = t.first_ts, t.last_end
        ops = t.ops.names
        n = len(ops)
        op_ns = t.op_ns[:n].tolist()
        r.op_max = {op: int(x) for op, x in zip(ops, t.op_max[:n].tolist(), strict=True)}
        for o, x in t.far_max.items():
            r.op_max[ops[o]] = max(r.op_max[ops[o]], x)
        hist: dict[int, dict[int, int]] = {}
        rows, cols = np.nonzero(t.hist[:n])
        for o, b, k in zip(rows.tolist(), cols.tolist(), t.hist[rows, cols].tolist(), strict=True):
            hist.setdefault(o, {})[b] = k
        for (o, b), k in t.far_hist.items():
            hist.setdefault(o, {})[b] = hist.get(o, {}).get(b, 0) + k
        errors = t.op_errors[:n].tolist()
        for o in sorted(hist, key=lambda o: (-op_ns[o], ops[o])):
            h, op = hist[o], ops[o]
            r.summary.ops[op] = OpStats(sum(h.values()), errors[o], op_ns[o], t.op_read[op], t.op_written[op],
                                        injected=t.op_injected[op], histogram=dict(sorted(h.items())))
        r.paths = PathTable(t.paths.names.names, t.paths.calls[:n], t.paths.ns, t.paths.errors, ops)
        procs = PathTable(t.procs.names.names, t.procs.calls[:n], t.procs.ns, t.procs.errors, ops)
        processes = r.processes
        for (pid, comm), g in procs.items():
            key = (0, None) if pid == 0 else (pid, comm)  # the kernel's own requests: one row
            mine = processes.get(key)
            if mine is None:
                processes[key] = g
            else:
                mine.calls += g.calls
                mine.errors += g.errors
                mine.total_ns += g.total_ns
                mine.ops.update(g.ops)
        paths = t.paths.names.names
        for (errno, p, o), k in t.error_ops.items():
            g = _group(r.errors, (errno, paths[p]))
            g.ops[ops[o]] += k
            g.calls += k
            g.errors += k
        for (errno, o), k in t.errno_ops.items():
            r.errno_ops.setdefault(errno, _counter())[ops[o]] += k
        r.dropped = {table: (calls, entries) for table, (calls, entries) in t.dropped.items() if entries}
        r.evidence = t.evidence
        if t.sample is not None:
            r.sample = t.sample.events()
            r.sample_every_error = t.sample.every_error
        return r

    def count(self, table: str, n: int) -> str:
        """n, or 'over n' when entries of that table were dropped to bound memory."""
        return f"over {n}" if table in self.dropped else str(n)

    def notes(self) -> list[str]:
        """What the tables leave out, when the trace had more distinct entries than the report tracks."""
        from . import tally  # (tally imports the findings, which use this module)
        names = {"paths": "paths", "processes": "processes", "errors": "(errno, path) pairs"}
        return [f"note: more than {tally.TABLE_CAP} {names[table]}: the least busy were dropped to bound memory, with "
                f"{calls} operations on them; the totals count every operation, the {names[table]} tables may "
                "count low" for table, (calls, _) in self.dropped.items()]

    @property
    def total_errors(self) -> int:
        return sum(s.errors for s in self.summary.ops.values())

    @property
    def span_s(self) -> float:
        if self.first_ts is None or self.last_end is None:
            return 0.0
        return self.last_end - self.first_ts

    def top_paths(self, by: str, n: int) -> list[tuple[str, Group]]:
        if isinstance(self.paths, PathTable):
            return self.paths.top(by, n)
        return _top(self.paths.items(), by, n, lambda k: k)

    def top_processes(self, by: str, n: int) -> list[tuple[str, Group]]:
        ranked = _top(self.processes.items(), by, n, lambda k: (process_label(*k), k[0]))
        return [(process_label(*k), g) for k, g in ranked]

    def error_groups(self, limit: int | None = None) -> list[tuple[str, str | None, Group]]:
        """(errno, path) groups, most errors first; the first `limit` of them, if given."""
        def key(kv: tuple[tuple[str, str | None], Group]) -> Any:
            return (-kv[1].calls, kv[0][0], kv[0][1] or "")
        items = self.errors.items()
        top = sorted(items, key=key) if limit is None else heapq.nsmallest(limit, items, key=key)
        return [(errno, path, g) for (errno, path), g in top]

    def errno_totals(self) -> list[tuple[str, Group]]:
        """Failed operations per errno, most first: counted exactly, even when (errno, path) pairs were dropped."""
        totals = [(errno, Group(calls=sum(ops.values()), errors=sum(ops.values()), ops=ops))
                  for errno, ops in self.errno_ops.items()]
        return sorted(totals, key=lambda kv: (-kv[1].calls, kv[0]))

    def as_dict(self, top: int = DEFAULT_TOP) -> dict[str, Any]:
        """The report as JSON-ready data (what the text and HTML renderings show)."""
        return {
            "events": self.events, "errors": self.total_errors, "first_ts": self.first_ts,
            "span_s": self.span_s, "summary": self.summary.as_dict(),
            "top_paths_by_calls": [{"path": p, **g.as_dict()} for p, g in self.top_paths("calls", top)],
            "top_paths_by_time": [{"path": p, **g.as_dict()} for p, g in self.top_paths("time", top)],
            "top_processes_by_calls": [{"process": p, **g.as_dict()} for p, g in self.top_processes("calls", top)],
            "top_processes_by_time": [{"process": p, **g.as_dict()} for p, g in self.top_processes("time", top)],
            "errors_by_errno": [{"errno": e, "count": g.calls, "ops": dict(ranked(g.ops))}
                                for e, g in self.errno_totals()],
            "errors_by_errno_path": [{"errno": e, "path": p, "count": g.calls, "ops": dict(ranked(g.ops))}
                                     for e, p, g in self.error_groups()],
        }


def _top(items: Iterable[tuple[Any, Group]], by: str, n: int, name: Any) -> list[tuple[Any, Group]]:
    if by == "calls":
        def key(kv: tuple[Any, Group]) -> Any:
            return (-kv[1].calls, -kv[1].total_ns, name(kv[0]))
    else:
        def key(kv: tuple[Any, Group]) -> Any:
            return (-kv[1].total_ns, -kv[1].calls, name(kv[0]))
    return heapq.nsmallest(n, items, key=key)  # sorted(items, key=key)[:n], in less time




class PathTable:
    """Per name (a path; a process, as (pid, comm)): its calls per operation, time and errors, as the tally's arrays
    (operations x names, then a value per name). A Group is made for a name only when it is read: a report shows
    the top few of up to 100,000 paths."""

    def __init__(self, names: list[Any], calls: np.ndarray, ns: np.ndarray, errors: np.ndarray, ops: list[str]) -> None:
        n = len(names)
        keep = [i for i, name in enumerate(names) if name is not None]  # operations without a path: no row
        at = np.array(keep, dtype=np.intp) if len(keep) < n else None
        self.names = [names[i] for i in keep] if at is not None else list(names)
        self.calls = calls[:, :n] if at is None else calls[:, at]
        self.ns = ns[:n] if at is None else ns[at]
        self.errors = errors[:n] if at is None else errors[at]
        self.ops = ops
        self.totals = self.calls.sum(axis=0)

    def __len__(self) -> int:
        return len(self.names)

    def group(self, i: int) -> Group:
        column = self.calls[:, i]
        at = np.flatnonzero(column)
        ops = _counter()
        dict.update(ops, zip([self.ops[o] for o in at.tolist()], column[at].tolist(), strict=True))
        return Group(int(self.totals[i]), int(self.errors[i]), int(self.ns[i]), ops)

    def items(self) -> Iterator[tuple[Any, Group]]:
        return ((name, self.group(i)) for i, name in enumerate(self.names))

    def values(self) -> Iterator[Group]:
        return (self.group(i) for i in range(len(self.names)))

    def top(self, by: str, n: int) -> list[tuple[Any, Group]]:
        """model._top of the rows: the n first by calls (or time), then time (calls), then name."""
        if n >= len(self.names) or self.ns.dtype == object:
            return _top(self.items(), by, n, lambda k: k)
        first, second = (self.totals, self.ns) if by == "calls" else (self.ns, self.totals)
        order = np.lexsort((-second, -first))
        last = order[n - 1]
        # the n first, and every row tied with the n-th (ties are ordered by name)
        tied = np.flatnonzero((first == first[last]) & (second == second[last]))
        chosen = np.union1d(order[:n], tied).tolist()
        return _top(((self.names[i], self.group(i)) for i in chosen), by, n, lambda k: k)
