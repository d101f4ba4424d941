"""The tally: a slice of events at a time into numpy tables numbered by name (docs/report.md, \"Speed and memory\")."""

from __future__ import annotations

import heapq
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from math import log2
from operator import add, attrgetter, is_not, mod, not_, truediv
from typing import Any, cast

# No BLAS is used here, and OpenBLAS's threads, started when numpy is imported, spin a while on every CPU
# (0.1 s of CPU time, more than reading a 20 MB trace takes)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402 - after the setting above

from . import evidence, reading
from .evidence import KINDS, Sequential
from .findings import SLOWEST, Evidence
from .reading import Event, Slice, _Args, _json

# --------------------------------------------------------------------------------------------- tally

def _mix(pos: int) -> int:
    """A position's bits well mixed (Fibonacci hashing): sampling on them spreads over any set of positions."""
    return (pos * 0x9E3779B97F4A7C15 >> 17) & 0xFFFFFFFF

TABLE_CAP = 100_000   # paths, processes, (errno, path) pairs tracked exactly; beyond, the busiest half kept
BYTE_OPS = frozenset({"read", "write", "copy_file_range"})
# one getter per field taken out as a column: no tuple per event (as one getter of all of them would make)
_OP, _PATH, _PID, _COMM, _ERRNO, _DURATION, _TS, _INJECTED, _SEQ, _ARGS, _RESULT = map(attrgetter, (
    "op", "path", "pid", "comm", "errno", "duration_ns", "ts", "injected", "seq", "args", "result"))



@dataclass
class Sample:
    """A bounded sample of events for the charts: the slowest quarter, errors (all of them, or a quarter spread
    evenly over the trace), and every `stride`-th event. The same whatever the order slices come in."""

    limit: int
    errors: dict[int, dict[str, Any]] = field(default_factory=dict)
    error_stride: int = 1  # the errors kept: those whose _mix(position) is a multiple of this
    slowest: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)  # heap of (ns, -pos, event)
    spaced: dict[int, dict[str, Any]] = field(default_factory=dict)
    stride: int = 1

    @property
    def every_error(self) -> bool:
        return self.error_stride == 1

    def add(self, part: Slice, events: list[Event], dur: Sequence[int], errno: Sequence[str | None]) -> None:
        quarter = self.limit // 4
        pos = part.positions()

        def as_dict(i: int) -> dict[str, Any]:
            return part.event(events, i)

        for i in compress(range(len(events)), map(is_not, errno, repeat(None))):
            if _mix(pos[i]) % self.error_stride == 0:
                self.errors[pos[i]] = as_dict(i)
                self._thin_errors(quarter)
        slowest = self.slowest
        floor = slowest[0][0] if len(slowest) >= quarter else -1
        for i in compress(range(len(events)), map(int.__gt__, dur, repeat(floor))):
            if len(slowest) < quarter:
                heapq.heappush(slowest, (dur[i], -pos[i], as_dict(i)))
            elif (dur[i], -pos[i]) > slowest[0][:2]:
                heapq.heapreplace(slowest, (dur[i], -pos[i], as_dict(i)))
        for i in compress(range(len(pos)), map(not_, map(mod, pos, repeat(self.stride)))):
            self.spaced[pos[i]] = as_dict(i)
        self._thin()

    def _thin_errors(self, quarter: int) -> None:
        while len(self.errors) > quarter:
            self.error_stride *= 2
            self.errors = {p: e for p, e in self.errors.items() if _mix(p) % self.error_stride == 0}

    def _thin(self) -> None:
        while len(self.spaced) > self.limit // 2:  # with the errors and the slowest: at most `limit` in all
            self.stride *= 2
            self.spaced = {p: e for p, e in self.spaced.items() if p % self.stride == 0}

    def merge(self, other: Sample) -> None:
        quarter = self.limit // 4
        self.error_stride = max(self.error_stride, other.error_stride)
        self.errors = {p: e for p, e in (self.errors | other.errors).items() if _mix(p) % self.error_stride == 0}
        self._thin_errors(quarter)
        self.slowest = heapq.nlargest(quarter, self.slowest + other.slowest, key=lambda x: x[:2])
        heapq.heapify(self.slowest)
        self.stride = max(self.stride, other.stride)
        self.spaced = {p: e for p, e in (self.spaced | other.spaced).items() if p % self.stride == 0}
        self._thin()

    def events(self) -> list[dict[str, Any]]:
        """The sampled events, each once, in trace order."""
        chosen = dict(self.errors)
        chosen.update((-neg, e) for _, neg, e in self.slowest)
        chosen.update(self.spaced)
        return [chosen[p] for p in sorted(chosen)]


def _note_dropped(counts: list[int], calls: dict[Any, int], keep: set[Any]) -> None:
    dropped = [k for k in calls if k not in keep]
    counts[0] += sum(calls[k] for k in dropped)
    counts[1] += len(dropped)


class _Names:
    """Names (paths, processes, operations) numbered in order of appearance."""

    def __init__(self) -> None:
        self.number: dict[Any, int] = {}
        self.names: list[Any] = []

    def numbers(self, keys: Sequence[Any]) -> np.ndarray:
        """The keys' numbers (intp), numbering those not seen before."""
        # -1 for a name not seen before, found in the array (a None would cost a comparison per key in Python)
        ids = np.fromiter(map(self.number.get, keys, repeat(-1)), np.intp, len(keys))
        new = np.flatnonzero(ids < 0)
        if new.size:
            number = self.number
            for i in new.tolist():
                k = keys[i]
                n = number.get(k)
                if n is None:
                    n = number[k] = len(self.names)
                    self.names.append(k)
                ids[i] = n
        return ids

    def __getstate__(self) -> list[Any]:
        return self.names  # sent from a worker: the numbers are the positions

    def __setstate__(self, names: list[Any]) -> None:
        self.names = names
        self.number = {name: i for i, name in enumerate(names)}

    def keep(self, keep: Sequence[int]) -> None:
        """Forget the names not in `keep` (ascending numbers); the kept ones are numbered 0, 1, ... in that order."""
        self.names = [self.names[i] for i in keep]
        self.number = {name: i for i, name in enumerate(self.names)}


def _run_starts(n: int, *columns: np.ndarray) -> np.ndarray:
    """Where the runs of equal rows of these columns (object arrays of n values) start: 0, then every position
    whose row differs from the previous one."""
    change = np.empty(n, dtype=bool)
    change[0] = True
    change[1:] = columns[0][1:] != columns[0][:-1]
    for column in columns[1:]:
        change[1:] |= column[1:] != column[:-1]
    return np.flatnonzero(change)


def _bucket_edges() -> np.ndarray:
    """EDGES[b - 1]: the least ns in latency bucket b or above, by stats._bucket's own formula
    (int(log2(ns) * 16)), so that searchsorted gives exactly its bucket to every ns below 2**63."""
    def bucket(ns: int) -> int:
        return 0 if ns <= 1 else int(log2(ns) * 16)
    edges = []
    for b in range(1, bucket(2**63 - 1) + 1):
        near = 2 ** (b / 16)  # the edge is about here: searched for in a narrow window, by the formula itself
        lo, hi = max(2, int(near * (1 - 1e-9))), min(int(near * (1 + 1e-9)) + 2, 2**63 - 1)
        if bucket(hi) < b or (lo > 2 and bucket(lo - 1) >= b):  # not in the window after all: search it all
            lo, hi = 2, 2**63 - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if bucket(mid) >= b:
                hi = mid
            else:
                lo = mid + 1
        edges.append(lo)
    return np.array(edges, dtype=np.int64)


_EDGES = _bucket_edges()
_PATH_BLANK = np.zeros(evidence.PATH_ROWS, dtype=np.int64)
_PATH_BLANK[evidence.EX0:] = evidence.NO_SEQ
_BUCKETS = len(_EDGES) + 1
_INT64_MAX = (1 << 63) - 1
_EXACT_INT64 = 1 << 62  # time sums stay int64 while every duration seen adds up to less than this


def _like(sums: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Time sums to add to `target`: Python ints if it holds Python ints (int64 scalars could overflow there)."""
    return sums.astype(object) if target.dtype == object else sums


def room() -> int:
    """The most names a table holds in a worker: pruning happens after a slice has been numbered, so a slice's
    worth of new names (reading.SLICE) can be over the cap until then. Its arrays never have more columns."""
    return TABLE_CAP + reading.SLICE


def _busiest(calls: np.ndarray, ns: np.ndarray, cap: int) -> np.ndarray:
    """The names a pruned table keeps (ascending numbers): the busiest cap // 4 by operations and the busiest
    cap // 4 by time, ties to the first seen."""
    n = len(calls)
    by_calls = np.lexsort((np.arange(n), -calls))[:cap // 4]
    by_time = sorted(range(n), key=lambda i: -ns[i])[:cap // 4] if ns.dtype == object else \
        np.lexsort((np.arange(n), -ns))[:cap // 4]
    return np.union1d(by_calls, np.asarray(by_time, dtype=np.int64))


def _blocks(n: int, size: int = 16384) -> list[slice]:
    """0..n in slices: fancy indexing a block at a time makes temporaries of a block, not of the table."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class _Table:
    """Per name (path or process): calls per operation (a matrix: operations x names), time and errors, in numpy
    arrays that grow by doubling up to room() names (pruned beyond TABLE_CAP)."""

    def __init__(self, blank: np.ndarray) -> None:
        self.names = _Names()
        self.calls = np.zeros((4, 256), dtype=np.int64)
        self.ns = np.zeros(256, dtype=np.int64)
        self.errors = np.zeros(256, dtype=np.int64)
        self.blank = blank  # a new name's evidence rows (evidence.PATH_ROWS or PROC_ROWS)
        self.examples = bool((blank == evidence.NO_SEQ).any())  # rows of example seqs (the paths')
        self.ev = np.repeat(blank[:, None], 256, axis=1)

    def fit(self, ops: int) -> None:
        """Room for `ops` operations and every name numbered so far."""
        rows, cols = self.calls.shape
        need = len(self.names.names)
        if ops > rows or need > cols:
            if need > cols:  # doubling, but never past room(): the tables are pruned before they hold more
                cols = max(need, min(2 * need, room()))
            calls = np.zeros((max(rows, ops + 8), cols), dtype=np.int64)  # operations are few: 8 spare rows
            calls[:rows, :self.calls.shape[1]] = self.calls
            self.calls = calls
            if len(self.ns) < cols:
                self.ns = np.concatenate([self.ns, np.zeros(cols - len(self.ns), dtype=self.ns.dtype)])
                self.errors = np.concatenate([self.errors, np.zeros(cols - len(self.errors), dtype=np.int64)])
            if self.ev.shape[1] < cols:
                more = np.repeat(self.blank[:, None], cols - self.ev.shape[1], axis=1).astype(self.ev.dtype)
                self.ev = np.concatenate([self.ev, more], axis=1)

    def add(self, oi: np.ndarray, ni: np.ndarray, dur: np.ndarray, failed: np.ndarray | None) -> None:
        np.add.at(self.calls, (oi, ni), 1)
        np.add.at(self.ns, ni, dur)
        if failed is not None:
            np.add.at(self.errors, ni[failed], 1)

    def calls_per_name(self) -> np.ndarray:
        return self.calls[:, :len(self.names.names)].sum(axis=0)

    def keep(self, cap: int) -> tuple[int, int, dict[int, int]]:
        """Keep the busiest quarter by operations and the busiest quarter by time (at most half the cap).

        Returns (operations on the names dropped, names dropped, old number -> new number)."""
        n = len(self.names.names)
        calls = self.calls_per_name()
        keep = _busiest(calls, self.ns[:n], cap)
        dropped_calls = int(calls.sum() - calls[keep].sum())
        self.names.keep(keep.tolist())
        size = self.calls.shape[1]
        calls_kept = np.zeros_like(self.calls)
        calls_kept[:, :len(keep)] = self.calls[:, keep]
        self.calls = calls_kept
        ns_kept = np.zeros(size, dtype=self.ns.dtype)
        ns_kept[:len(keep)] = self.ns[keep]
        self.ns = ns_kept
        errors = np.zeros(size, dtype=np.int64)
        errors[:len(keep)] = self.errors[keep]
        self.errors = errors
        ev = np.repeat(self.blank[:, None], self.ev.shape[1], axis=1).astype(self.ev.dtype)
        ev[:, :len(keep)] = self.ev[:, keep]
        self.ev = ev
        return dropped_calls, n - len(keep), {old: new for new, old in enumerate(keep.tolist())}

    def compact(self) -> None:
        """Arrays without the room to grow, one at a time (a worker's tally, before it is sent)."""
        n = len(self.names.names)
        self.calls = np.ascontiguousarray(self.calls[:, :n])
        self.ns = self.ns[:n].copy()
        self.errors = self.errors[:n].copy()
        self.ev = np.ascontiguousarray(self.ev[:, :n])

    def exact(self) -> None:
        """Time sums as Python ints from now on (they might leave int64's range)."""
        if self.ns.dtype != object:
            self.ns = self.ns.astype(object)
            self.ev = self.ev.astype(object)

    def __getstate__(self) -> dict[str, Any]:
        n = len(self.names.names)  # sent without the room to grow
        return {"names": self.names, "calls": self.calls[:, :n], "ns": self.ns[:n], "errors": self.errors[:n],
                "blank": self.blank, "examples": self.examples, "ev": self.ev[:, :n]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def merge(self, other: _Table, ops: np.ndarray, nops: int, cap: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Add another tally's table (`ops` maps its operation numbers to ours); if the two have more than `cap`
        names together, keep the names `keep` would keep after adding them all, without making the arrays of all of
        them (the report's process would hold four tables' worth at once: both tables, their union, the pruned).

        Returns (their number -> our new number, our old number -> new number, operations on the names dropped,
        names dropped); -1 for a name dropped."""
        mine_n, their_n = len(self.names.names), len(other.names.names)
        if self.ns.dtype != other.ns.dtype:
            self.exact()
        # the union of the names: ours, then theirs not among ours, in their order (as numbering them would)
        union = np.fromiter(map(self.names.number.get, other.names.names, repeat(-1)), np.intp, their_n)
        new = np.flatnonzero(union < 0)
        union[new] = mine_n + np.arange(len(new))
        total = mine_n + len(new)
        names = self.names.names + [other.names.names[i] for i in new.tolist()]
        dropped_calls = 0
        if total > cap:
            calls = np.zeros(total, dtype=np.int64)
            calls[:mine_n] = self.calls_per_name()
            calls[union] += other.calls_per_name()
            ns = np.zeros(total, dtype=self.ns.dtype)
            ns[:mine_n] = self.ns[:mine_n]
            ns[union] += _like(other.ns[:their_n], ns)
            kept = _busiest(calls, ns, cap)
            dropped_calls = int(calls.sum() - calls[kept].sum())
            renumber = np.full(total, -1, dtype=np.intp)
            renumber[kept] = np.arange(len(kept))
            names = [names[i] for i in kept.tolist()]
        else:
            renumber = np.arange(total, dtype=np.intp)
        k = len(names)
        to_mine, to_theirs = renumber[:mine_n], renumber[union]
        rows = max(self.calls.shape[0], nops)
        calls_new = np.zeros((rows, k), dtype=np.int64)
        ns_new = np.zeros(k, dtype=self.ns.dtype)
        errors_new = np.zeros(k, dtype=np.int64)
        ev_new = np.repeat(self.blank[:, None], k, axis=1).astype(self.ev.dtype)
        src = np.flatnonzero(to_mine >= 0)
        dst = to_mine[src]
        for b in _blocks(len(src)):
            calls_new[:self.calls.shape[0], dst[b]] = self.calls[:, src[b]]
            ev_new[:, dst[b]] = self.ev[:, src[b]]
        ns_new[dst] = self.ns[src]
        errors_new[dst] = self.errors[src]
        src = np.flatnonzero(to_theirs >= 0)
        dst = to_theirs[src]  # distinct: += adds each once
        for b in _blocks(len(src)):
            calls_new[np.ix_(ops, dst[b])] += other.calls[:len(ops), src[b]]
            theirs = other.ev[:, src[b]]
            if ev_new.dtype == object:
                theirs = theirs.astype(object)
            ev_new[:, dst[b]] = evidence.merge_rows(ev_new[:, dst[b]], theirs) if self.examples \
                else ev_new[:, dst[b]] + theirs
        ns_new[dst] += _like(other.ns[src], ns_new)
        errors_new[dst] += other.errors[src]
        self.calls, self.ns, self.errors, self.ev = calls_new, ns_new, errors_new, ev_new
        self.names.names = names
        self.names.number = {name: i for i, name in enumerate(names)}
        return to_theirs, to_mine, dropped_calls, total - k


_RARE = (evidence.CREATE, evidence.MKNOD, evidence.UNLINK, evidence.RENAME)  # matched by name, in Python


@dataclass
class Columns:
    """Events as columns (Tally._columns): the numbers of their operations, paths and processes, their durations (an
    int64 array, or a list when some do not fit), start times, which failed (None: none) and their errnos, which a
    fault rule acted on (None: none); for the findings, each operation's kind (evidence.KINDS), the seq, the args'
    size, offset and fh and the result (int64, evidence.ints: _NONE where not an int), and `counted`, what the
    summary adds to bytes read or written (int results, True as 1)."""

    op: np.ndarray
    path: np.ndarray
    proc: np.ndarray
    duration: np.ndarray | list[int]
    ts: np.ndarray
    failed: np.ndarray | None
    errnos: list[str]
    injected: np.ndarray | None
    kind: np.ndarray
    seq: np.ndarray
    size: np.ndarray
    offset: np.ndarray
    fh: np.ndarray
    result: np.ndarray
    counted: np.ndarray
    odd: bool  # a result is an integer beyond int64: the slice's bytes are added in Python (counted: zeros)
    rare: list[Event]  # the events that succeeded with a path whose kind is one of _RARE, in order
    slow: list[Event]  # the events longer than the slowest kept when the slice was taken

    def durations(self) -> list[int]:
        return self.duration if isinstance(self.duration, list) else self.duration.tolist()

    def duration_array(self) -> np.ndarray:
        """The durations as int64 (each fits: their sum, with every other seen, is below _EXACT_INT64)."""
        return np.array(self.duration, dtype=np.int64) if isinstance(self.duration, list) else self.duration

    def duration_sum(self) -> int:
        d = self.duration
        if isinstance(d, list):
            return sum(d)
        return int(d.sum()) if int(d.max()) < 1 << 53 else sum(d.tolist())  # < 2**53 each: no int64 overflow

    @staticmethod
    def join(parts: list[Columns]) -> Columns:
        """Several slices' columns as one (their durations int64 arrays); rare and slow are left empty."""
        if len(parts) == 1:
            return parts[0]

        def flags(name: str) -> np.ndarray | None:
            got = [getattr(c, name) for c in parts]
            if all(g is None for g in got):
                return None
            return np.concatenate([np.zeros(len(c.op), dtype=bool) if g is None else g for c, g in zip(parts, got,
                                                                                                      strict=True)])

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(c, name) for c in parts])

        return Columns(cat("op"), cat("path"), cat("proc"), cat("duration"), cat("ts"), flags("failed"),
                       [e for c in parts for e in c.errnos], flags("injected"), cat("kind"), cat("seq"), cat("size"),
                       cat("offset"), cat("fh"), cat("result"), cat("counted"), False, [], [])


def _compiled_columns(got: tuple[Any, ...]) -> Columns:
    """Columns from what the compiled columns() or scan() return."""
    (op, path, proc, dur, ts, failed, errnos, injected, kind, seq, size, offset, fh, result, counted, odd, rare,
     slow) = got
    return Columns(np.frombuffer(op, np.intp), np.frombuffer(path, np.intp),
                   np.frombuffer(proc, np.intp), np.frombuffer(dur, np.int64),
                   np.frombuffer(ts, np.float64),
                   None if failed is None else np.frombuffer(failed, np.bool_), errnos,
                   None if injected is None else np.frombuffer(injected, np.bool_),
                   np.frombuffer(kind, np.int8), np.frombuffer(seq, np.int64),
                   np.frombuffer(size, np.int64), np.frombuffer(offset, np.int64),
                   np.frombuffer(fh, np.int64), np.frombuffer(result, np.int64),
                   np.frombuffer(counted, np.int64), odd, rare, slow)


class Tally:
    """The events' totals, accumulated in a worker (or the report's process).

    Paths, processes and operations are numbered as they appear, a slice at a time (the compiled columns); counts
    and time sums are kept in numpy arrays indexed by those numbers, updated a batch of slices at a time (np.add.at)
    rather than an event at a time. model.Report reads them, with nothing converted in between."""

    def __init__(self, sample: int = 0, tiny_bytes: int = 1024) -> None:
        self.events = 0
        self.first_ts = math.inf
        self.last_end = -math.inf
        self.ops = _Names()
        self.paths = _Table(_PATH_BLANK)
        self.procs = _Table(np.zeros(evidence.PROC_ROWS, dtype=np.int64))
        self.hist = np.zeros((4, _BUCKETS), dtype=np.int64)  # operations x latency buckets
        self.far_hist: Counter[tuple[int, int]] = Counter()  # (operation, bucket): latencies of 2**63 ns and more
        self.op_ns = np.zeros(4, dtype=np.int64)
        self.op_errors = np.zeros(4, dtype=np.int64)
        self.seen_ns = 0  # every duration added up: while below _EXACT_INT64, no int64 sum can overflow
        self.error_ops: Counter[tuple[str, int, int]] = Counter()  # (errno, path, op)
        self.errno_ops: Counter[tuple[str, int]] = Counter()  # (errno, op): exact, whatever is pruned
        self.op_read: Counter[str] = Counter()
        self.op_written: Counter[str] = Counter()
        self.op_injected: Counter[str] = Counter()
        self.byte_ops = np.zeros(0, dtype=bool)  # per operation number: whether it reads or writes bytes
        self.dropped: dict[str, list[int]] = {"paths": [0, 0], "processes": [0, 0], "errors": [0, 0]}
        self.sample = Sample(sample) if sample else None
        self.evidence = Evidence()  # what the findings need besides the tables' evidence rows
        self.tiny_bytes = tiny_bytes
        self.op_kind = bytearray()  # per operation number: its kind (evidence.KINDS), extended by _columns
        self.pending: list[Columns] = []  # slices numbered, not yet added (a batch at a time)
        self.pending_events = 0
        self.sequential = Sequential()
        self.pid_number: dict[Any, int] = {}  # pids numbered (a key of `sequential`)
        self.proc_pid = np.zeros(0, dtype=np.int64)  # per process number: its pid's number
        self.op_max = np.zeros(4, dtype=np.int64)  # the longest duration per operation (below 2**63)
        self.far_max: dict[int, int] = {}  # operation -> the longest duration, of those of 2**63 ns or more

    def add(self, events: list[Event], part: Slice) -> None:
        """A slice: its columns taken out (the events can be freed after this), the few events the findings look
        at one by one seen now; the columns added with the next batch."""
        if not events:
            return
        c = self._columns(events)
        self._one_by_one(events, c)
        if self.sample is not None:
            self.sample.add(part, events, c.durations(), list(map(_ERRNO, events)))
        self._add(c)

    def add_lines(self, data: memoryview, starts: np.ndarray, first: int, last: int) -> bool:
        """Lines first..last-1 of a chunk (`starts` from reading.line_starts), read by the compiled scanner straight
        from their bytes into the columns `add` takes out of decoded events (no object per event); False, having
        done nothing, where it does not apply (not built, a chart sample kept, faults being followed) or refuses a
        line (anything but the writer's own layout: then the slice is decoded and added as events)."""
        if self.sample is not None or self.evidence.pending or last <= first:
            return False
        c = self._scan_columns(data, starts, first, last)
        if c is None:
            return False
        self._one_by_one([], c)
        self._add(c)
        return True

    def _scan_columns(self, data: memoryview, starts: np.ndarray, first: int, last: int) -> Columns | None:
        """What _columns() takes out of the events of lines first..last-1, read from their bytes by the compiled
        scanner; None (nothing numbered) where it is not built or refuses a line."""
        compiled = reading._compiled
        if compiled is None or not hasattr(compiled, "scan"):  # a module built before scan() existed
            return None
        got = compiled.scan(data, starts, first, last, self.ops.number, self.ops.names, self.op_kind, KINDS,
                            self.paths.names.number, self.paths.names.names, self.procs.names.number,
                            self.procs.names.names, min(self.evidence.slow_floor(), _INT64_MAX))
        if got is None:
            return None

        def event(i: int) -> Event:  # one of the few events followed one by one (rare, slow): decoded as before
            return cast(Event, reading._DECODE(data[starts[first + i]:starts[first + i + 1]]))

        return _compiled_columns(got[:16] + ([event(i) for i in got[16]], [event(i) for i in got[17]]))

    def _add(self, c: Columns) -> None:
        """A slice's columns: added now (exactly, when sums might leave int64) or with the next batch."""
        seen = self.seen_ns + c.duration_sum()
        if seen >= _EXACT_INT64 or isinstance(c.duration, list):
            self.flush()  # the batch so far in int64; this slice, and every one after it, exactly
            self.seen_ns = seen
            self._add_columns(c)
        else:
            self.seen_ns = seen
            self.pending.append(c)
            self.pending_events += len(c.op)
            if self.pending_events < evidence.BATCH and len(self.paths.names.names) <= TABLE_CAP \
                    and len(self.procs.names.names) <= TABLE_CAP:
                self.evidence.bound()
                return
            self.flush()
        self._bound()

    def flush(self) -> None:
        """Add the slices taken so far."""
        if self.pending:
            c = Columns.join(self.pending)
            self.pending, self.pending_events = [], 0
            self._add_columns(c)

    def _add_columns(self, c: Columns) -> None:
        """Add events' columns into the tables."""
        oi, pi, ki, ts, failed = c.op, c.path, c.proc, c.ts, c.failed
        self.events += len(oi)
        exact = self.seen_ns >= _EXACT_INT64
        if exact:
            self._exact()
        self.first_ts = min(self.first_ts, float(ts.min()))
        ops = len(self.ops.names)
        self._fit_ops(ops)
        self.paths.fit(ops)
        self.procs.fit(ops)
        if exact:
            dur = c.durations()
            d = np.array(dur, dtype=object)
            self.last_end = max(self.last_end, max(map(add, ts.tolist(), map(truediv, dur, repeat(1e9)))))
            every = [0 if n <= 1 else int(log2(n) * 16) for n in dur]
            self.far_hist.update((o, b) for o, b in zip(oi.tolist(), every, strict=True) if b >= _BUCKETS)
            near = np.array(every, dtype=object) < _BUCKETS
            hist_at = (oi[near], np.array(every, dtype=object)[near].astype(np.intp))
        else:
            d = c.duration_array()
            if int(d.max()) < 1 << 53:  # d / 1e9 as Python computes it: the int is exactly a double
                self.last_end = max(self.last_end, float((ts + d / 1e9).max()))
            else:
                self.last_end = max(self.last_end,
                                    max(map(add, ts.tolist(), map(truediv, c.durations(), repeat(1e9)))))
            hist_at = (oi, np.searchsorted(_EDGES, d, side="right"))
        np.add.at(self.hist, hist_at, 1)
        np.add.at(self.op_ns, oi, d)
        if exact:
            big = self.far_max
            for o, x in zip(oi.tolist(), dur, strict=True):
                if x >= 1 << 63:
                    big[o] = max(big.get(o, 0), x)
                elif x > self.op_max[o]:
                    self.op_max[o] = x
        else:
            np.maximum.at(self.op_max, oi, d)
        self._add_bytes(c)
        self.paths.add(oi, pi, d, failed)
        self.procs.add(oi, ki, d, failed)
        self._add_evidence(c, d)
        if failed is not None:
            at = np.flatnonzero(failed)
            failed_ops = oi[at]
            np.add.at(self.op_errors, failed_ops, 1)
            self.error_ops.update(zip(c.errnos, pi[at].tolist(), failed_ops.tolist(), strict=True))
            self.errno_ops.update(zip(c.errnos, failed_ops.tolist(), strict=True))
        if c.injected is not None:
            names = self.ops.names
            self.op_injected.update(names[o] for o in oi[c.injected].tolist())

    def _one_by_one(self, events: list[Event], c: Columns) -> None:
        """What the findings follow event by event (few events): files created then deleted or renamed, the slowest,
        the processes that met an injected fault; and a slice's bytes when a result is beyond int64."""
        ev = self.evidence
        if c.rare:
            created = ev.created
            for e in c.rare:
                path = e.path or ""  # (rare events have a path)
                if e.op in ("create", "mknod"):
                    created[path] = -1
                elif created.pop(path, None) is not None:
                    if e.op == "unlink":
                        ev.deleted(e)
                    elif e.path2 is not None:
                        ev.saved(e)
        slow = c.slow
        if len(slow) > SLOWEST:
            slow = heapq.nlargest(SLOWEST, slow, key=lambda e: (e.duration_ns, -(e.seq or 0)))
        for e in slow:
            ev.slow(e)
        if ev.pending or c.injected is not None:
            # from the first fault on (or the slice's start, when faults are being followed), every event of a
            # process being followed; `pending` grows as faults are met
            pending, follow = ev.pending, ev.follow
            start = 0 if pending or c.injected is None else int(np.flatnonzero(c.injected)[0])
            for i in range(start, len(events)):
                e = events[i]
                if e.pid in pending or e.injected is not None:
                    follow(e)
        if c.odd:
            for e, failed in zip(events, c.failed if c.failed is not None else repeat(False), strict=False):
                if e.op in BYTE_OPS and not failed:
                    r = _json(e.result)
                    if isinstance(r, int):
                        (self.op_read if e.op == "read" else self.op_written)[e.op] += r
            c.counted = np.zeros(len(events), dtype=np.int64)

    def _add_evidence(self, c: Columns, d: np.ndarray) -> None:
        """Add the events the findings count into the tables' evidence rows (evidence.add_batch): successful reads,
        writes, opens, creates, syncs, listings, mknods, unlinks and renames with a path; ENOENT failures."""
        kind = c.kind
        pi = c.path
        none = self.paths.names.number.get(None)
        dir_reads = kind == evidence.DIR_READ
        if dir_reads.any():
            kind = kind.copy()
            kind[dir_reads] = np.where((c.offset[dir_reads] == 0) & (c.fh[dir_reads] == 0), evidence.LIST,
                                       evidence.OTHER)
        ok = kind > 0
        if none is not None:
            ok &= pi != none
        if c.failed is not None:
            ok &= ~c.failed
            at = np.flatnonzero(c.failed)
            missing = at[np.array(c.errnos, dtype=object) == "ENOENT"]
            if none is not None and missing.size:
                missing = missing[pi[missing] != none]
            if missing.size:
                kind = kind.copy()
                kind[missing] = evidence.MISSING
                ok[missing] = True
        picked = np.flatnonzero(ok)
        if not picked.size:
            return
        k = kind[picked]
        parts = [pi[picked], c.proc[picked], k, d[picked], c.seq[picked]]
        at = picked[(k == evidence.READ) | (k == evidence.WRITE)]
        io = None
        if at.size:
            procs = c.proc[at]
            if len(self.proc_pid) < len(self.procs.names.names):
                number = self.pid_number
                new = [number.setdefault(pid, len(number)) for pid, _ in self.procs.names.names[len(self.proc_pid):]]
                self.proc_pid = np.concatenate([self.proc_pid, np.array(new, dtype=np.int64)])
            io = [pi[at], kind[at], c.fh[at], self.proc_pid[procs], c.offset[at], c.size[at], c.result[at], d[at],
                  procs, c.seq[at]]
        evidence.add_batch(self.paths.ev, self.procs.ev, parts, io, self.tiny_bytes, self.sequential)
        if len(self.sequential.last_end) > evidence.EVIDENCE_CAP:
            self._forget_ends()

    def _forget_ends(self) -> None:
        """Where the accesses ended, forgotten: the next access of each file is classified as if it were the
        first (an approximation, documented)."""
        self.sequential.last_end.clear()
        self.pid_number.clear()
        self.proc_pid = np.zeros(0, dtype=np.int64)

    def _columns(self, events: list[Event]) -> Columns:
        """The slice's fields as columns, its operations, paths and processes numbered: compiled where built."""
        if reading._compiled is not None:
            got = reading._compiled.columns(events, self.ops.number, self.ops.names, self.op_kind, KINDS,
                                            self.paths.names.number, self.paths.names.names,
                                            self.procs.names.number, self.procs.names.names,
                                            min(self.evidence.slow_floor(), _INT64_MAX))
            if got is not None:
                return _compiled_columns(got)
        return self._python_columns(events)

    def _python_columns(self, events: list[Event]) -> Columns:
        """_columns() in Python (any event: also durations beyond int64)."""
        n = len(events)
        dur = list(map(_DURATION, events))
        errno = list(map(_ERRNO, events))
        ts = np.fromiter(map(_TS, events), np.float64, n)
        oi = self.ops.numbers(list(map(_OP, events)))
        for name in self.ops.names[len(self.op_kind):]:
            self.op_kind.append(KINDS.get(name, 0))
        # Events come in runs (one process statting one path): each run's path and process are looked up once
        # (looking up a long path among many costs several cache misses; comparing it with the previous one, none)
        paths = np.array(list(map(_PATH, events)), dtype=object)
        runs = _run_starts(n, paths)
        pi = np.repeat(self.paths.names.numbers(paths[runs].tolist()), np.diff(runs, append=n))
        pid = np.array(list(map(_PID, events)), dtype=object)
        comm = np.array(list(map(_COMM, events)), dtype=object)
        runs = _run_starts(n, pid, comm)
        procs = list(zip(pid[runs].tolist(), comm[runs].tolist(), strict=True))
        ki = np.repeat(self.procs.names.numbers(procs), np.diff(runs, append=n))
        failed = np.fromiter(map(is_not, errno, repeat(None)), bool, n)
        injected = np.fromiter(map(is_not, map(_INJECTED, events), repeat(None)), bool, n)
        kind = np.frombuffer(bytes(self.op_kind), np.int8)[oi]
        args = list(map(_ARGS, events))
        size, offset, fh = (evidence.ints([a.get(name) if isinstance(a, dict) else getattr(a, name, None)
                                           if isinstance(a, _Args) else None for a in args])
                            for name in ("size", "offset", "fh"))
        results = list(map(_json, map(_RESULT, events)))
        odd = any(r.__class__ is int and not -1 << 63 <= r < 1 << 63 for r in results)
        counted = np.array([int(r) if isinstance(r, int) and -1 << 63 <= r < 1 << 63 else 0 for r in results],
                           dtype=np.int64)
        floor = self.evidence.slow_floor()
        rare = [e for e, k, f, p in zip(events, kind.tolist(), failed.tolist(), map(_PATH, events), strict=True)
                if k in _RARE and not f and p is not None]
        return Columns(oi, pi, ki, dur, ts, failed if failed.any() else None,
                       [e for e in errno if e is not None], injected if injected.any() else None, kind,
                       evidence.ints(list(map(_SEQ, events))), size, offset, fh, evidence.ints(results),
                       counted, odd, rare, [e for e in events if e.duration_ns > floor])

    def _exact(self) -> None:
        """Time sums as Python ints from now on."""
        if self.op_ns.dtype != object:
            self.flush()
            self.paths.exact()
            self.procs.exact()
            self.op_ns = self.op_ns.astype(object)

    def _fit_ops(self, ops: int) -> None:
        if ops > len(self.op_ns):
            grow = 2 * ops - len(self.op_ns)
            self.op_ns = np.concatenate([self.op_ns, np.zeros(grow, dtype=self.op_ns.dtype)])
            self.op_errors = np.concatenate([self.op_errors, np.zeros(grow, dtype=np.int64)])
            self.hist = np.concatenate([self.hist, np.zeros((grow, _BUCKETS), dtype=np.int64)])
            self.op_max = np.concatenate([self.op_max, np.zeros(grow, dtype=np.int64)])

    def merge(self, other: Tally) -> None:
        """Add the tally of another process (its own numbering), then bound the tables as `add` does."""
        self.flush()
        other.flush()
        self.events += other.events
        self.first_ts = min(self.first_ts, other.first_ts)
        self.last_end = max(self.last_end, other.last_end)
        self.seen_ns += other.seen_ns
        if self.seen_ns >= _EXACT_INT64:
            self._exact()
        k = len(other.ops.names)
        ops = self.ops.numbers(other.ops.names)
        nops = len(self.ops.names)
        self._fit_ops(nops)
        self.hist[ops] += other.hist[:k]
        self.op_ns[ops] += _like(other.op_ns[:k], self.op_ns)
        self.op_errors[ops] += other.op_errors[:k]
        self.op_max[ops] = np.maximum(self.op_max[ops], other.op_max[:k])
        to_op = ops.tolist()
        for o, x in other.far_max.items():
            self.far_max[to_op[o]] = max(self.far_max.get(to_op[o], 0), x)
        self.evidence.merge(other.evidence)
        self.far_hist.update({(to_op[o], b): n for (o, b), n in other.far_hist.items()})
        path_of_theirs, path_of_mine, calls, paths_dropped = self.paths.merge(other.paths, ops, nops, TABLE_CAP)
        if paths_dropped:
            self._dropped("paths", calls, paths_dropped)
            renumber = path_of_mine.tolist()
            self.error_ops = Counter({(e, renumber[p], o): n for (e, p, o), n in self.error_ops.items()
                                      if renumber[p] >= 0})
        _, _, calls, procs_dropped = self.procs.merge(other.procs, ops, nops, TABLE_CAP)
        if procs_dropped:
            self._dropped("processes", calls, procs_dropped)
        if paths_dropped or procs_dropped:
            self._forget_ends()  # its keys are the old numbers
        to_path = path_of_theirs.tolist()
        self.error_ops.update({(e, to_path[p], to_op[o]): n for (e, p, o), n in other.error_ops.items()
                               if to_path[p] >= 0})
        self.errno_ops.update({(e, to_op[o]): n for (e, o), n in other.errno_ops.items()})
        for mine, theirs in ((self.op_read, other.op_read), (self.op_written, other.op_written),
                             (self.op_injected, other.op_injected)):
            mine.update(theirs)
        for table, (calls, entries) in other.dropped.items():
            self.dropped[table][0] += calls
            self.dropped[table][1] += entries
        if self.sample is not None and other.sample is not None:
            self.sample.merge(other.sample)
        self._bound()

    def _add_bytes(self, c: Columns) -> None:
        """Bytes read and written: the results of the reads and writes that succeeded."""
        if len(self.byte_ops) != len(self.ops.names):
            self.byte_ops = np.array([name in BYTE_OPS for name in self.ops.names], dtype=bool)
        done = self.byte_ops[c.op] if c.failed is None else self.byte_ops[c.op] & ~c.failed
        at = np.flatnonzero(done & (c.counted != 0))
        if not at.size:
            return
        got, oi = c.counted[at], c.op[at]
        names = self.ops.names
        if int(np.abs(got).max()) < 1 << 40:  # no sum overflow
            sums = np.zeros(len(names), dtype=np.int64)
            np.add.at(sums, oi, got)
            pairs = zip(np.flatnonzero(sums).tolist(), sums[sums != 0].tolist(), strict=True)
        else:
            pairs = zip(oi.tolist(), got.tolist(), strict=True)
        for o, n in pairs:
            op = names[o]
            (self.op_read if op == "read" else self.op_written)[op] += n

    def _bound(self) -> None:
        """At most TABLE_CAP paths, processes and (errno, path) pairs."""
        if len(self.paths.names.names) > TABLE_CAP or len(self.procs.names.names) > TABLE_CAP:
            self.flush()  # the pending slices' numbers are about to change
            self._forget_ends()
        if len(self.paths.names.names) > TABLE_CAP:
            self._prune("paths", self.paths)
        if len(self.procs.names.names) > TABLE_CAP:
            self._prune("processes", self.procs)
        if len(self.error_ops) > TABLE_CAP:
            self._prune_errors()
        self.evidence.bound()

    def held(self) -> dict[str, int]:
        """The entries of every table that grows with distinct names, and the columns of the name tables' arrays:
        what the memory of a tally depends on (bounded: docs/report.md, "Speed and memory"; tested)."""
        ev = self.evidence
        return {"paths": len(self.paths.names.names), "path columns": self.paths.calls.shape[1],
                "processes": len(self.procs.names.names), "process columns": self.procs.calls.shape[1],
                "error pairs": len({key[:2] for key in self.error_ops}), "ends": len(self.sequential.last_end),
                "created": len(ev.created), "temporary": len(ev.temporary), "saves": len(ev.saves),
                "example seqs": len(ev.seqs), "file processes": max(map(len, ev.io_procs.values()), default=0)}

    def compact(self) -> None:
        """What a worker sends: the tables without their room to grow, and without where the accesses ended (of no
        use to the merge)."""
        self._forget_ends()
        self.paths.compact()
        self.procs.compact()

    def _dropped(self, table: str, calls: int, entries: int) -> None:
        self.dropped[table][0] += calls
        self.dropped[table][1] += entries

    def _prune(self, table: str, names: _Table) -> None:
        calls, entries, renumber = names.keep(TABLE_CAP)
        self._dropped(table, calls, entries)
        if table == "paths":
            self.error_ops = Counter({(e, renumber[p], o): n for (e, p, o), n in self.error_ops.items()
                                      if p in renumber})

    def _prune_errors(self) -> None:
        counts: Counter[tuple[str, int]] = Counter()
        for (e, p, _), n in self.error_ops.items():
            counts[(e, p)] += n
        if len(counts) > TABLE_CAP:
            keep = {k for k, _ in counts.most_common(TABLE_CAP // 2)}
            _note_dropped(self.dropped["errors"], counts, keep)
            self.error_ops = Counter({k: n for k, n in self.error_ops.items() if k[:2] in keep})
