"""The findings' evidence gathered with numpy, a batch of slices at a time, on the tally's own numbering.

The tally (tally.Tally) takes the few fields the findings need out of each slice as columns (the compiled columns:
seq, the args' size, offset and fh, the result), and a batch of slices at a time picks the events the findings
count (successful reads, writes, opens, creates, syncs, listings, mknods, unlinks and renames with a path, and
ENOENT failures); `add_batch` adds them into per-path rows of the path table (`PATH_ROWS` below, next to its calls
and time) and per-process rows of the process table (`PROC_ROWS`), with a handful of numpy calls. So the evidence
lives where the tables live: it grows, is pruned, sent from a worker and merged with them, and the findings read
the rows they need from the arrays.

What stays per event in Python is rare: files created then deleted or renamed (matched by name), the slowest
operations and what follows an injected fault (tally.Tally._one_by_one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# per-path rows
(READS_N, READ_BYTES, WRITES_N, WRITTEN, SEQ, RAND, TINY, TINY_BYTES, EXTENT, IO_NS, OPENS_N, OPEN_NS, SYNCS_N,
 SYNC_NS, LISTS_N, LIST_NS, TINY_NS, MISSING_N, MISSING_NS, _SPARE) = range(20)
EXAMPLES = 3  # example seqs per path and kind: the smallest
EXAMPLE_KINDS = ("open", "tiny", "sync", "list", "missing")
EX0 = 20      # the first example row: kind k's are EX0 + 3k .. EX0 + 3k + 2, ascending, NO_SEQ where fewer
PATH_ROWS = EX0 + EXAMPLES * len(EXAMPLE_KINDS)
IO_ROWS = MISSING_NS + 1  # the rows that are counts (added when merged; EXTENT is a maximum)
# per-process rows: requests of each kind
PROC_KINDS = ("open", "tiny", "sync", "missing")
PROC_ROWS = len(PROC_KINDS)
NO_SEQ = np.iinfo(np.int64).max
_NONE = np.iinfo(np.int64).min  # a field that is absent (or not an int that fits)

# operation kinds (Tally.op_kind, per operation number)
OTHER, READ, WRITE, OPEN, CREATE, SYNC, LIST, MKNOD, UNLINK, RENAME, MISSING, DIR_READ = range(12)  # MISSING: ENOENT
# DIR_READ: a readdir, a listing (LIST) where it starts one without a handle (offset 0, fh 0: the kernel opened
# the directory itself, no opendir), else OTHER (Tally._add_evidence); it never reaches add_batch.
KINDS = {"read": READ, "write": WRITE, "open": OPEN, "create": CREATE, "fsync": SYNC, "fdatasync": SYNC,
         "opendir": LIST, "mknod": MKNOD, "unlink": UNLINK, "rename": RENAME, "readdir": DIR_READ,
         "readdirplus": DIR_READ}
# per kind: the row its count and its time go to (_SPARE: none), its example kind and process kind (-1: none)
_COUNT_ROW = np.array([_SPARE, READS_N, WRITES_N, OPENS_N, OPENS_N, SYNCS_N, LISTS_N, _SPARE, _SPARE, _SPARE,
                       MISSING_N])
_NS_ROW = np.array([_SPARE, IO_NS, IO_NS, OPEN_NS, OPEN_NS, SYNC_NS, LIST_NS, _SPARE, _SPARE, _SPARE, MISSING_NS])
_BYTES_ROW = np.array([_SPARE, READ_BYTES, WRITTEN, _SPARE, _SPARE, _SPARE, _SPARE, _SPARE, _SPARE, _SPARE, _SPARE])
_EX_KIND = np.array([-1, -1, -1, 0, 0, 2, 3, -1, -1, -1, 4])  # EXAMPLE_KINDS
_PROC_KIND = np.array([-1, -1, -1, 0, 0, 2, -1, -1, -1, -1, 3])  # PROC_KINDS
EVIDENCE_CAP = 100_000  # (path, file handle, pid) ends remembered, files created and not yet deleted, ...
BATCH = 8192  # events taken out as columns before they are added, together (fewer, larger numpy calls)


def ints(values: Sequence[Any]) -> np.ndarray:
    """Ints as int64; anything else (None, a bool, a float, an int beyond int64) as _NONE."""
    if set(map(type, values)) <= {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            pass
    return np.array([v if v.__class__ is int and _NONE < v < 1 << 63 else _NONE for v in values], dtype=np.int64)


def add_examples(ev: np.ndarray, kind: np.ndarray, path: np.ndarray, seq: np.ndarray) -> None:
    """Keep, per path and example kind, the EXAMPLES smallest seqs (the same whatever order events come in)."""
    base = EX0 + EXAMPLES * kind
    keep = (seq != _NONE) & np.asarray(seq < ev[base + EXAMPLES - 1, path], dtype=bool)
    if not keep.any():
        return
    base, path, seq = base[keep], path[keep], seq[keep]
    key = base.astype(np.int64) * ev.shape[1] + path
    order = np.lexsort((seq, key))
    key, seq, base, path = key[order], seq[order], base[order], path[order]
    new = np.empty(len(key), dtype=bool)
    new[0] = True
    new[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    rank = np.arange(len(key)) - starts[group]
    few = rank < EXAMPLES
    cand = np.full((len(starts), 2 * EXAMPLES), NO_SEQ, dtype=np.int64)
    gb, gp = base[starts], path[starts]
    for j in range(EXAMPLES):
        cand[:, j] = ev[gb + j, gp]
    cand[group[few], EXAMPLES + rank[few]] = seq[few]
    _smallest(cand)
    for j in range(EXAMPLES):
        ev[gb + j, gp] = cand[:, j]


def _smallest(cand: np.ndarray) -> None:
    """Each row sorted, each seq once (a repeat becomes NO_SEQ): the first EXAMPLES columns are the smallest."""
    cand.sort(axis=1)
    dup = cand[:, 1:] == cand[:, :-1]
    if dup.any():
        cand[:, 1:][dup] = NO_SEQ
        cand.sort(axis=1)


def merge_rows(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Per-path rows of two tallies for the same paths (columns), combined: counts added, extents the larger,
    example seqs the smallest."""
    out = mine.copy()
    out[:IO_ROWS] = mine[:IO_ROWS] + theirs[:IO_ROWS]
    out[EXTENT] = np.maximum(mine[EXTENT], theirs[EXTENT])
    for k in range(len(EXAMPLE_KINDS)):
        rows = slice(EX0 + EXAMPLES * k, EX0 + EXAMPLES * (k + 1))
        cand = np.concatenate([mine[rows], theirs[rows]]).T.astype(np.int64)
        _smallest(cand)
        out[rows] = cand[:, :EXAMPLES].T
    return out


class Sequential:
    """Where the last read or write of each (path, file handle, pid) ended: a read or write that starts there (or
    at 0, the first time) is sequential."""

    def __init__(self) -> None:
        self.last_end: dict[tuple[int, int, int], int] = {}

    def classify(self, path: np.ndarray, fh: np.ndarray, pid: np.ndarray, offset: np.ndarray, end: np.ndarray
                 ) -> np.ndarray:
        """Whether each access (in trace order) is sequential; remembers where each key's last one ended."""
        n = len(path)
        order = np.lexsort((np.arange(n), pid, fh, path))
        p, f, q, off, e = path[order], fh[order], pid[order], offset[order], end[order]
        first = np.empty(n, dtype=bool)
        first[0] = True
        first[1:] = (p[1:] != p[:-1]) | (f[1:] != f[:-1]) | (q[1:] != q[:-1])
        prev = np.empty(n, dtype=np.int64)
        prev[1:] = e[:-1]
        at = np.flatnonzero(first)
        keys = list(zip(p[at].tolist(), f[at].tolist(), q[at].tolist(), strict=True))
        last = ints(list(map(self.last_end.get, keys)))
        prev[at] = last
        sequential = prev == off
        sequential[at] |= (last == _NONE) & (off[at] == 0)
        ends = np.append(at[1:], n) - 1
        self.last_end.update(zip(zip(p[ends].tolist(), f[ends].tolist(), q[ends].tolist(), strict=True),
                                 e[ends].tolist(), strict=True))
        out = np.empty(n, dtype=bool)
        out[order] = sequential
        return out


def add_batch(paths_ev: np.ndarray, procs_ev: np.ndarray, parts: list[np.ndarray] | None,
              io: list[np.ndarray] | None, tiny_bytes: int, sequence: Sequential) -> None:
    """Add a batch of picked events (Tally._add_evidence) into the path and process rows."""
    if parts is not None:
        path, proc, kind, dur, seq = parts
        np.add.at(paths_ev, (_COUNT_ROW[kind], path), 1)
        np.add.at(paths_ev, (_NS_ROW[kind], path), dur)
        ex, pk = _EX_KIND[kind], _PROC_KIND[kind]
        has = pk >= 0
        np.add.at(procs_ev, (pk[has], proc[has]), 1)
        has = ex >= 0
        add_examples(paths_ev, ex[has], path[has], seq[has])
    if io is None:
        return
    path, kind, fh, pid, offset, size, result, dur, proc, seq = io
    got = np.where(result != _NONE, result, 0)
    np.add.at(paths_ev, (_BYTES_ROW[kind], path), got)
    tiny = (size != _NONE) & (size < tiny_bytes)
    if tiny.any():
        tp = path[tiny]
        np.add.at(paths_ev[TINY], tp, 1)
        np.add.at(paths_ev[TINY_BYTES], tp, got[tiny])
        np.add.at(paths_ev[TINY_NS], tp, dur[tiny])
        np.add.at(procs_ev[PROC_KINDS.index("tiny")], proc[tiny], 1)
        add_examples(paths_ev, np.full(len(tp), EXAMPLE_KINDS.index("tiny")), tp, seq[tiny])
    placed = offset != _NONE
    if placed.any():
        path, kind, offset = path[placed], kind[placed], offset[placed]
        step = np.where(result[placed] != _NONE, result[placed], np.where(size[placed] != _NONE, size[placed], 0))
        end = offset + step
        sequential = sequence.classify(path, fh[placed], pid[placed], offset, end)
        np.add.at(paths_ev, (np.where(sequential, SEQ, RAND), path), 1)
        reading = kind == READ
        np.maximum.at(paths_ev[EXTENT], path[reading], end[reading])
