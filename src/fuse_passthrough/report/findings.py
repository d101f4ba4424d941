"""Findings: the few patterns in a trace that cost the traced program, ranked, with evidence and what fixes them.

Two halves:

- `Evidence` is what the findings need beyond the report's tables, gathered in the report's own streaming pass
  (trace_scan.Tally hands it the events of a slice that matter: reads, writes, opens, syncs, creates, unlinks,
  renames, directory listings, failed lookups, the slowest, and what follows an injected fault). Its memory is
  bounded like the tables': at most `EVIDENCE_CAP` paths per kind, the busiest kept.
- `find(report, thresholds)` turns the report (its per-operation, per-path and per-error tables) and the
  evidence into `Finding`s, most costly first. Every threshold is a field of `Thresholds`, settable with
  `report --threshold NAME=VALUE` (docs/report.md, "Findings").
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from . import evidence as ec
from .evidence import (
    EVIDENCE_CAP,
    EXAMPLES,
    EXTENT,
    IO_NS,
    LIST_NS,
    LISTS_N,
    OPEN_NS,
    OPENS_N,
    RAND,
    READ_BYTES,
    READS_N,
    SEQ,
    SYNC_NS,
    SYNCS_N,
    TINY,
    TINY_BYTES,
    TINY_NS,
    WRITES_N,
    WRITTEN,
)
from .model import process_label

if TYPE_CHECKING:
    from .model import Report

SLOWEST = 20            # the slowest operations kept, for the slow-outliers finding
FAULTS_KEPT = 1000      # injected faults followed (what the program did next)
KERNEL_COMM = "[kernel]"

READS = frozenset({"read"})
WRITES = frozenset({"write"})
SYNCS = frozenset({"fsync", "fdatasync"})
OPENS = frozenset({"open", "create"})
LISTINGS = frozenset({"opendir"})
# operations Evidence looks at one by one (failed lookups and faults come in addition)
WATCHED = READS | WRITES | SYNCS | OPENS | LISTINGS | frozenset({"unlink", "rename", "mknod"})
# requests about names and attributes rather than file contents
DATA_OPS = frozenset({"read", "write", "copy_file_range", "fallocate", "fsync", "fdatasync", "flush", "lseek",
                      "truncate"})
CLEANUP_OPS = frozenset({"release", "releasedir", "flush"})
# failures that are not the program's doing: the kernel asks for security.capability before writes, and a
# file system without xattrs says so
BENIGN_ERRORS = {("getxattr", "ENODATA"), ("getxattr", "EOPNOTSUPP"), ("listxattr", "EOPNOTSUPP"),
                 ("getxattr", "ENOTSUP"), ("listxattr", "ENOTSUP")}



def _examples(seqs: list[int], seq: int | None) -> None:
    """Keep the EXAMPLES smallest seqs (the same whatever order the events come in)."""
    if seq is None:
        return
    if len(seqs) < EXAMPLES:
        if seq not in seqs:
            seqs.append(seq)
            seqs.sort()
    elif seq < seqs[-1] and seq not in seqs:
        seqs[-1] = seq
        seqs.sort()


@dataclass
class Evidence:
    """What the findings need beyond the report's tables.

    Per path and process, the counts are rows of the tally's tables (evidence.py); `from_rows` keeps the columns of
    the paths that have any (`path_names`, `path_rows`: the findings select from them with numpy, names read only
    for the rows shown) and reads the example seqs and the processes by name. The rest is kept here, event by event, as the tally
    meets the (few) events concerned: files created then deleted or renamed into place, the slowest operations,
    injected faults and what followed them."""

    # per path with any evidence: its name and its rows READS_N..MISSING_NS (a column per path, the tally's arrays)
    path_names: list[str] = field(default_factory=list)
    path_rows: Any = field(default_factory=lambda: np.zeros((ec.IO_ROWS, 0), dtype=np.int64))
    io_procs: dict[str, Counter[tuple[int, str | None]]] = field(default_factory=dict)  # kind -> processes
    seqs: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (kind, path) -> example seqs
    created: dict[str, int] = field(default_factory=dict)  # path -> seq of its create (still there)
    temporary: dict[str, list[int]] = field(default_factory=dict)  # path -> [files created and deleted]
    saves: dict[str, list[int]] = field(default_factory=dict)  # target -> [renames of new files onto it]
    slowest: list[tuple[int, int, str, str | None, int, str | None]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)  # injected faults and what followed
    pending: dict[int, int] = field(default_factory=dict)  # pid -> index in faults, still being followed

    # ------------------------------------------------------------------------------------------- gathering

    def _proc(self, kind: str, pid: int, comm: str | None) -> None:
        c = self.io_procs.get(kind)
        if c is None:
            c = self.io_procs[kind] = Counter()
        c[(pid, None if pid == 0 else comm)] += 1

    def _seq(self, kind: str, path: str, seq: int | None) -> None:
        """An example seq: the EXAMPLES smallest kept (the same whatever --jobs)."""
        s = self.seqs.get((kind, path))
        if s is None:
            s = self.seqs[(kind, path)] = []
        _examples(s, seq)

    def deleted(self, e: Any) -> None:
        """A file created in the trace, deleted (e: its unlink)."""
        t = self.temporary.get(e.path)
        if t is None:
            t = self.temporary[e.path] = [0]
        t[0] += 1
        self._seq("temporary", e.path, e.seq)
        self._proc("temporary", e.pid, e.comm)

    def saved(self, e: Any) -> None:
        """A file created in the trace, renamed onto e.path2 (e: the rename)."""
        s = self.saves.get(e.path2)
        if s is None:
            s = self.saves[e.path2] = [0]
        s[0] += 1
        self._seq("save", e.path2, e.seq)
        self._proc("save", e.pid, e.comm)

    def slow_floor(self) -> int:
        """The duration an operation must exceed to be among the slowest kept (-1: room left)."""
        return self.slowest[0][0] if len(self.slowest) >= SLOWEST else -1

    def slow(self, e: Any) -> None:
        item = (e.duration_ns, -(e.seq or 0), e.op, e.path, e.pid, e.comm)
        if len(self.slowest) < SLOWEST:
            heapq.heappush(self.slowest, item)
        elif item[:2] > self.slowest[0][:2]:
            heapq.heapreplace(self.slowest, item)

    def follow(self, e: Any) -> None:
        """An event of a process that met an injected fault (or the fault itself): what it did next."""
        pid = e.pid
        at = self.pending.get(pid)
        if at is not None:
            f = self.faults[at]
            if e.op == f["op"] and e.path == f["path"]:
                f["next"] = "retried"
                f["retry_ok"] = e.errno is None
                f["next_seq"] = e.seq
                del self.pending[pid]
            elif e.op not in CLEANUP_OPS and f["next"] is None:
                f["next"] = "carried on"
                f["next_seq"] = e.seq
        if e.injected is not None and len(self.faults) < FAULTS_KEPT:
            self.pending[pid] = len(self.faults)
            self.faults.append({"seq": e.seq, "op": e.op, "path": e.path, "injected": e.injected,
                                "errno": e.errno, "process": process_label(pid, e.comm), "next": None})

    def from_rows(self, paths: Sequence[Any], path_rows: Any, procs: Sequence[tuple[int, str | None]],
                  proc_rows: Any) -> None:
        """The per-path and per-process evidence of the tally's tables (numpy rows, a column per name)."""
        n = len(paths)
        rows = path_rows[:, :n]
        io_part = rows[:ec.IO_ROWS]
        used = np.flatnonzero(io_part.any(axis=0))
        none = [i for i in used.tolist() if paths[i] is None]
        if none:
            used = used[used != none[0]]
        self.path_names = [paths[i] for i in used.tolist()]
        self.path_rows = io_part[:, used]
        for k, kind in enumerate(ec.EXAMPLE_KINDS):
            ex = rows[ec.EX0 + ec.EXAMPLES * k: ec.EX0 + ec.EXAMPLES * (k + 1)]
            have = np.flatnonzero(ex[0] != ec.NO_SEQ)
            for i, seqs in zip(have.tolist(), ex[:, have].T.tolist(), strict=True):
                if paths[i] is not None:
                    self.seqs[(kind, paths[i])] = [int(x) for x in seqs if x != ec.NO_SEQ]
        counts = proc_rows[:, :len(procs)]
        for k, kind in enumerate(ec.PROC_KINDS):
            at = np.flatnonzero(counts[k])
            if at.size:
                c = self.io_procs.setdefault(kind, Counter())
                for i, x in zip(at.tolist(), counts[k, at].tolist(), strict=True):
                    pid, comm = procs[i]
                    c[(pid, None if pid == 0 else comm)] += int(x)

    def _select(self, mask: Any, rows: slice = slice(None)) -> list[tuple[str, list[int]]]:
        """(path, its rows as a list) of the paths where mask holds."""
        at = np.flatnonzero(mask).tolist()
        return list(zip([self.path_names[i] for i in at], self.path_rows[rows, at].T.tolist(), strict=True))

    def _io_mask(self) -> Any:
        """Which paths have reads, writes, opens, syncs or listings (not only ENOENT failures)."""
        return self.path_rows[:ec.MISSING_N].any(axis=0)

    @property
    def io(self) -> dict[str, list[int]]:
        """Per path with reads, writes, opens, syncs or listings: its rows READS_N..MISSING_NS."""
        return dict(self._select(self._io_mask()))

    @property
    def missing(self) -> dict[str, list[int]]:
        """Per path looked up in vain: [ENOENT failures, their ns]."""
        return dict(self._select(self.path_rows[ec.MISSING_N] != 0, slice(ec.MISSING_N, ec.MISSING_NS + 1)))

    # ------------------------------------------------------------------------------------------- bounds, merge

    def __getstate__(self) -> dict[str, Any]:
        """Sent from a worker without the files created and not yet deleted: of no use to the merge."""
        state = dict(self.__dict__)
        state["created"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def bound(self) -> None:
        """At most EVIDENCE_CAP entries per table: the busiest half kept."""
        if len(self.created) > EVIDENCE_CAP:
            self.created.clear()  # only what follows is matched: an approximation, documented
        for kind, procs in self.io_procs.items():  # the processes that deleted or saved files: a pid each
            if len(procs) > EVIDENCE_CAP:
                self.io_procs[kind] = Counter(dict(procs.most_common(EVIDENCE_CAP // 2)))
        for name in ("temporary", "saves"):
            table = getattr(self, name)
            if len(table) > EVIDENCE_CAP:
                setattr(self, name, dict(heapq.nlargest(EVIDENCE_CAP // 2, table.items(), key=lambda kv: kv[1][0])))
                kind = "temporary" if name == "temporary" else "save"
                kept = getattr(self, name)
                self.seqs = {k: v for k, v in self.seqs.items() if k[0] != kind or k[1] in kept}

    def merge(self, other: Evidence) -> None:
        """Add another worker's evidence (each worker's events are in order; between workers, approximately)."""
        for kind, c in other.io_procs.items():
            self.io_procs.setdefault(kind, Counter()).update(c)
        for key, s in other.seqs.items():
            mine_s = self.seqs.setdefault(key, [])
            for seq in s:
                _examples(mine_s, seq)
        for table in ("temporary", "saves"):
            mine_t, theirs = getattr(self, table), getattr(other, table)
            for k, v in theirs.items():
                if k in mine_t:
                    mine_t[k] = [a + b for a, b in zip(mine_t[k], v, strict=True)]
                else:
                    mine_t[k] = v
        for item in other.slowest:
            if len(self.slowest) < SLOWEST:
                heapq.heappush(self.slowest, item)
            elif item[:2] > self.slowest[0][:2]:
                heapq.heapreplace(self.slowest, item)
        self.faults = sorted(self.faults + other.faults, key=lambda f: f["seq"] or 0)[:FAULTS_KEPT]
        self.pending = {}
        self.bound()


# ------------------------------------------------------------------------------------------------ analysis

@dataclass
class Thresholds:
    """When a pattern becomes a finding (README and docs/report.md, "Findings", explain each)."""

    reopen_min: int = 5          # a file opened this many times or more is re-opened
    reread_factor: float = 3.0   # ... or read this many times its size (bytes read / the furthest byte read)
    redundant_min: int = 20      # warning: at least this many extra opens (or re-read file sizes) over all files
    tiny_io_bytes: int = 1024    # a read or write asking for fewer bytes is tiny (a page is 4096)
    tiny_io_min: int = 100       # warning: a file with this many tiny reads or writes, mostly sequential
    fsync_min: int = 10          # warning: at least this many fsync/fdatasync ...
    fsync_per_mib: float = 4.0   # ... and at least this many per MiB written, or
    fsync_per_s: float = 10.0    # ... at least this many per second of the trace
    missing_min: int = 100       # warning: at least this many lookups of missing paths (ENOENT) ...
    missing_share: float = 0.05  # ... and at least this share of all requests
    search_min: int = 3          # a name tried in this many directories (or a directory probed for this
    #                              many names) is a search pattern
    metadata_min: int = 1000     # warning: at least this many metadata requests ...
    metadata_time_share: float = 0.8  # ... taking at least this share of the time in requests
    random_min: int = 100        # a file with this many reads/writes, over half not where the last ended
    relist_min: int = 10         # warning: a directory listed this many times
    errors_min: int = 10         # warning: this many failures (other than ENOENT and the kernel's xattr probes)
    slow_ms: float = 1000.0      # warning: an operation slower than this

    def set(self, text: str) -> None:
        """NAME=VALUE; ValueError with a one-line reason."""
        name, sep, value = text.partition("=")
        known = {f.name: f for f in fields(self)}
        if not sep or name not in known:
            raise ValueError(f"unknown threshold {name!r} (known: {', '.join(known)})" if sep
                             else f"threshold {text!r} is not NAME=VALUE")
        kind = type(getattr(self, name))
        try:
            number = kind(value)
        except ValueError:
            raise ValueError(f"threshold {name} wants a{'n integer' if kind is int else ' number'}, "
                             f"not {value!r}") from None
        if number < 0:
            raise ValueError(f"threshold {name} must not be negative")
        setattr(self, name, number)


@dataclass
class Finding:
    """One pattern: what, how much it accounts for, the evidence, why it costs and what usually fixes it."""

    id: str
    level: str              # "warning" or "info"
    title: str
    time_ns: int            # time in the requests it accounts for
    requests: int           # requests it accounts for
    why: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _labels(counter: Counter[tuple[int, str | None]] | None, n: int = 3) -> list[dict[str, Any]]:
    if not counter:
        return []
    return [{"process": process_label(*k), "requests": c} for k, c in
            sorted(counter.items(), key=lambda kv: (-kv[1], process_label(*kv[0])))[:n]]


def _top_by(items: Iterable[tuple[str, Any]], key: Any, n: int = 5) -> list[tuple[str, Any]]:
    return heapq.nsmallest(n, items, key=lambda kv: (-key(kv[1]), kv[0]))


def find(report: Report, th: Thresholds | None = None) -> list[Finding]:
    """The report's findings, warnings first, then by time and requests accounted for."""
    th = th or Thresholds()
    ev: Evidence = report.evidence
    out: list[Finding] = []
    span = report.span_s
    ops = report.summary.ops
    total_requests = sum(s.calls for s in ops.values())

    def seqs(kind: str, path: str) -> list[int]:
        return list(ev.seqs.get((kind, path), []))

    # Each finding's rule is applied, in Python, to the paths that numpy selects from the evidence's columns with a
    # looser test (or the same one): the rows of every path would cost a Python list each
    col = ev.path_rows
    io_any = ev._io_mask()

    def loosely(value: float) -> float:
        return value * (1 - 1e-9) if value > 0 else value

    # redundant reads: the same file opened, or its bytes read, many times
    rows = []
    ratio = col[READ_BYTES].astype(np.float64) / np.maximum(col[EXTENT], 1).astype(np.float64)
    unread = (col[EXTENT] == 0) & (th.reread_factor <= 0)  # (a factor of 0.0)
    for path, r in ev._select(io_any & ((col[OPENS_N] >= th.reopen_min) | (ratio >= loosely(th.reread_factor))
                                        | unread)):
        factor = r[READ_BYTES] / r[EXTENT] if r[EXTENT] else 0.0
        if r[OPENS_N] >= th.reopen_min or (factor >= th.reread_factor and r[READS_N] > 1):
            rows.append((path, r, factor))
    if rows:
        extra = sum(max(r[OPENS_N] - 1, 0) + max(int(f) - 1, 0) for _, r, f in rows)
        rows.sort(key=lambda x: (-(x[1][OPENS_N] + x[1][READS_N]), x[0]))
        out.append(Finding(
            "redundant-reads", "warning" if extra >= th.redundant_min else "info",
            f"{len(rows)} file{'s' if len(rows) != 1 else ''} opened or read again and again",
            sum(r[OPEN_NS] + r[IO_NS] for _, r, _ in rows), sum(r[OPENS_N] + r[READS_N] for _, r, _ in rows),
            "every open is a lookup and an open request (and, without a kept page cache, the bytes again); a "
            "configuration file re-read per task multiplies them",
            "read it once and keep it (cache the parsed result), or pass it to child processes",
            {"files": [{"path": p, "opens": r[OPENS_N], "reads": r[READS_N], "bytes_read": r[READ_BYTES],
                        "size_read": r[EXTENT], "times_read": round(f, 2), "seqs": seqs("open", p)}
                       for p, r, f in rows[:5]],
             "extra_opens_or_rereads": extra, "processes": _labels(ev.io_procs.get("open"))}))

    # tiny I/O, in sequence
    rows2 = [(p, r) for p, r in ev._select(io_any & (col[TINY] >= th.tiny_io_min))
             if r[TINY] >= th.tiny_io_min and r[SEQ] >= r[RAND]]
    if rows2:
        rows2.sort(key=lambda x: (-x[1][TINY], x[0]))
        n = sum(r[TINY] for _, r in rows2)
        nbytes = sum(r[TINY_BYTES] for _, r in rows2)
        out.append(Finding(
            "tiny-io", "warning",
            f"{n} reads/writes of less than {th.tiny_io_bytes} bytes, in sequence, on {len(rows2)} file"
            f"{'s' if len(rows2) != 1 else ''}",
            sum(r[TINY_NS] for _, r in rows2), n,
            "each request costs a round trip through the kernel and the file system whatever its size: "
            f"{nbytes / max(n, 1):.0f} bytes on average here, a page is 4096",
            "buffer: write whole blocks (a buffered stream, larger buffer, no flush per line), read in large chunks",
            {"files": [{"path": p, "tiny": r[TINY], "tiny_bytes": r[TINY_BYTES], "reads": r[READS_N],
                        "writes": r[WRITES_N], "sequential": r[SEQ], "seqs": seqs("tiny", p)} for p, r in rows2[:5]],
             "bytes": nbytes, "processes": _labels(ev.io_procs.get("tiny"))}))

    # fsync storms
    synced = ev._select(io_any & (col[SYNCS_N] != 0))
    syncs = sum(r[SYNCS_N] for _, r in synced)
    if syncs:
        written = sum(s.bytes_written for s in ops.values())
        per_mib = syncs / max(written / (1 << 20), 1e-9)
        per_s = syncs / span if span > 0 else 0.0
        storm = syncs >= th.fsync_min and (per_mib >= th.fsync_per_mib or per_s >= th.fsync_per_s)
        top = _top_by(synced, lambda r: r[SYNCS_N])
        out.append(Finding(
            "fsync-storm" if storm else "fsync", "warning" if storm else "info",
            f"{syncs} fsync/fdatasync: {per_mib:.1f} per MiB written, {per_s:.1f} per second",
            sum(r[SYNC_NS] for _, r in synced), syncs,
            "each sync waits for the device to make the data durable; many small syncs serialise the writes",
            "sync once per batch or transaction (group commit), or only where durability is needed",
            {"syncs": syncs, "bytes_written": written, "per_mib": round(per_mib, 2), "per_second": round(per_s, 2),
             "files": [{"path": p, "syncs": r[SYNCS_N], "bytes_written": r[WRITTEN], "seqs": seqs("sync", p)}
                       for p, r in top], "processes": _labels(ev.io_procs.get("sync"))}))

    # lookups of missing paths, grouped into search patterns
    missing = ev.missing
    if missing:
        n = sum(m[0] for m in missing.values())
        ns = sum(m[1] for m in missing.values())
        by_name: dict[str, set[str]] = {}
        by_dir: dict[str, set[str]] = {}
        for path in missing:
            d, name = _split(path)
            by_name.setdefault(name, set()).add(d)
            by_dir.setdefault(d, set()).add(name)
        names = _top_by(((k, v) for k, v in by_name.items() if len(v) >= th.search_min), len)
        dirs = _top_by(((k, v) for k, v in by_dir.items() if len(v) >= th.search_min), len)
        storm = n >= th.missing_min and n >= th.missing_share * max(total_requests, 1)
        out.append(Finding(
            "missing-paths", "warning" if storm else "info",
            f"{n} lookups of {len(missing)} paths that do not exist (ENOENT)",
            ns, n,
            "a search path tries each directory in turn for each name: every miss is a request, and misses are "
            "cached only briefly",
            "shorten the search path (PATH, PYTHONPATH, include and library paths), put the likely directory "
            "first, or look the name up once and remember it",
            {"same_name_in_directories": [{"name": k, "directories": len(v), "examples": sorted(v)[:3]}
                                          for k, v in names],
             "same_directory_probed": [{"directory": k, "names": len(v), "examples": sorted(v)[:3]}
                                       for k, v in dirs],
             "paths": [{"path": p, "lookups": m[0], "seqs": seqs("missing", p)}
                       for p, m in _top_by(missing.items(), lambda m: m[0])],
             "processes": _labels(ev.io_procs.get("missing"))}))

    # metadata against data
    meta = [(op, s) for op, s in ops.items() if op not in DATA_OPS]
    meta_n, meta_ns = sum(s.calls for _, s in meta), sum(s.total_ns for _, s in meta)
    all_ns = sum(s.total_ns for s in ops.values())
    if total_requests and meta_n:
        share_t = meta_ns / all_ns if all_ns else 0.0
        share_n = meta_n / total_requests
        heavy = meta_n >= th.metadata_min and share_t >= th.metadata_time_share
        if heavy or share_n >= 0.5:
            out.append(Finding(
                "metadata-heavy", "warning" if heavy else "info",
                f"metadata requests: {100 * share_n:.0f}% of requests, {100 * share_t:.0f}% of the time",
                meta_ns, meta_n,
                "stats, lookups, listings and xattr probes do no useful I/O; at this share they are the work",
                "stat once and keep the result, avoid walking trees repeatedly, raise the mount's attribute and "
                "entry timeouts where coherence allows",
                {"metadata_requests": meta_n, "data_requests": total_requests - meta_n, "metadata_ns": meta_ns,
                 "data_ns": all_ns - meta_ns,
                 "operations": {op: s.calls for op, s in sorted(meta, key=lambda kv: -kv[1].calls)[:6]},
                 "paths": [{"path": p, "requests": g.calls} for p, g in report.top_paths("calls", 5)]}))

    # repeated listings of the same directory
    lists = [(p, r) for p, r in ev._select(io_any & (col[LISTS_N] >= th.relist_min)) if r[LISTS_N] >= th.relist_min]
    if lists:
        lists.sort(key=lambda x: (-x[1][LISTS_N], x[0]))
        n = sum(r[LISTS_N] for _, r in lists)
        out.append(Finding(
            "repeated-listings", "warning",
            f"{len(lists)} director{'ies' if len(lists) != 1 else 'y'} listed {th.relist_min} times or more "
            f"({n} listings)",
            sum(r[LIST_NS] for _, r in lists), n,
            "each listing reads the whole directory again (opendir, readdir, often a stat per entry)",
            "list once and keep the result, or watch the directory (inotify) instead of polling it",
            {"directories": [{"path": p, "listings": r[LISTS_N], "seqs": seqs("list", p)} for p, r in lists[:5]]}))

    # random access
    rand = [(p, r) for p, r in ev._select(io_any & (col[RAND] > col[SEQ]))
            if r[SEQ] + r[RAND] >= th.random_min and r[RAND] > r[SEQ]]
    if rand:
        rand.sort(key=lambda x: (-x[1][RAND], x[0]))
        out.append(Finding(
            "random-access", "info", f"{len(rand)} file{'s' if len(rand) != 1 else ''} read or written mostly "
            "out of sequence", sum(r[IO_NS] for _, r in rand), sum(r[SEQ] + r[RAND] for _, r in rand),
            "out-of-sequence access defeats readahead and write merging (expected for databases and indexes)",
            "if not inherent, sort the accesses by offset, or read the file whole",
            {"files": [{"path": p, "random": r[RAND], "sequential": r[SEQ]} for p, r in rand[:5]]}))

    # temporary files and atomic saves (informational)
    if ev.temporary:
        n = sum(t[0] for t in ev.temporary.values())
        top_temporary = _top_by(ev.temporary.items(), lambda t: t[0])
        shown = {p for p, _ in top_temporary}
        bytes_written = {p: r[WRITTEN] for p, r in ev._select(io_any & np.array([p in shown for p in ev.path_names],
                                                                          dtype=bool))}
        out.append(Finding(
            "temporary-files", "info", f"{n} file{'s' if n != 1 else ''} created and deleted within the run",
            0, n, "each costs a create, writes and an unlink that leave nothing behind",
            "keep short-lived data in memory or on tmpfs when it need not be on this file system",
            {"files": [{"path": p, "times": t[0], "bytes_written": bytes_written.get(p, 0), "seqs": seqs("temporary", p)}
                       for p, t in top_temporary],
             "processes": _labels(ev.io_procs.get("temporary"))}))
    if ev.saves:
        n = sum(s[0] for s in ev.saves.values())
        out.append(Finding(
            "atomic-saves", "info", f"{n} new file{'s' if n != 1 else ''} renamed into place (atomic saves)",
            0, n, "write-then-rename is the safe way to replace a file; noted so it is not mistaken for churn",
            "nothing, unless the same file is saved far more often than it changes",
            {"targets": [{"path": p, "renames": s[0], "seqs": seqs("save", p)}
                         for p, s in _top_by(ev.saves.items(), lambda s: s[0])],
             "processes": _labels(ev.io_procs.get("save"))}))

    # slow outliers
    if ev.slowest:
        worst = sorted(ev.slowest, key=lambda x: (-x[0], -x[1]))
        slow = worst[0][0] >= th.slow_ms * 1e6
        per_op = {}
        for op, s in sorted(ops.items(), key=lambda kv: -kv[1].total_ns)[:6]:
            per_op[op] = {"p99_ns": round(s.percentile(0.99)), "max_ns": report.op_max.get(op)}
        out.append(Finding(
            "slow-outliers", "warning" if slow else "info",
            f"slowest operation {worst[0][2]} {worst[0][0] / 1e6:.1f} ms", sum(x[0] for x in worst), len(worst),
            "a few slow requests can stall a program more than many fast ones (p99 and max against the mean)",
            "look at what the slow paths have in common (a network mount below, a lock, a cold cache, a sync)",
            {"per_operation": per_op,
             "slowest": [{"op": op, "ns": ns, "path": path, "process": process_label(pid, comm), "seq": -negseq}
                         for ns, negseq, op, path, pid, comm in worst[:5]]}))

    # errors by errno
    totals = report.errno_totals()
    if totals:
        serious = sum(n for errno, g in totals if errno != "ENOENT" for op, n in g.ops.items()
                      if (op, errno) not in BENIGN_ERRORS)
        n = sum(g.calls for _, g in totals)
        groups = report.error_groups(50)
        out.append(Finding(
            "errors", "warning" if serious >= th.errors_min else "info",
            f"{n} failed requests: " + ", ".join(f"{e} x{g.calls}" for e, g in totals[:4]), 0, n,
            "failures the program does not expect end in retries or give-ups; expected ones still cost requests "
            "(the kernel probes security.capability before writes: ENODATA from getxattr is normal)",
            "look at the top paths of each errno: permissions (EACCES, EPERM), full disks (ENOSPC), races",
            {"by_errno": [{"errno": e, "count": g.calls, "ops": dict(g.ops.most_common(4)),
                           "paths": [{"path": p, "count": gg.calls} for ee, p, gg in groups if ee == e][:3]}
                          for e, g in totals[:8]], "unexpected": serious}))

    # injected faults and what the program did next
    if ev.faults:
        outcome = Counter(f["next"] or "gave up" for f in ev.faults)
        out.append(Finding(
            "injected-faults", "info", f"{len(ev.faults)} injected faults: "
            + ", ".join(f"{k} {v}" for k, v in sorted(outcome.items())), 0, len(ev.faults),
            "what the program did right after each fault the rules injected",
            "a program that gives up on a transient error (EIO, EINTR, ENOSPC cleared) may want a retry",
            {"outcomes": dict(outcome),
             "faults": [{**{k: f[k] for k in ("seq", "op", "path", "injected", "process")},
                         "next": f["next"] or "gave up", **({"next_seq": f["next_seq"]} if "next_seq" in f else {}),
                         **({"retry_ok": f["retry_ok"]} if "retry_ok" in f else {})} for f in ev.faults[:10]]}))

    out.sort(key=lambda f: (f.level != "warning", -f.time_ns, -f.requests, f.id))
    return out


def _split(path: str) -> tuple[str, str]:
    """os.path.split(path), in a third of the time."""
    i = path.rfind("/") + 1
    head = path[:i]
    if head and head.count("/") != len(head):
        head = head.rstrip("/")
    return head, path[i:]


def _fmt_ns(ns: int) -> str:
    return f"{ns / 1e6:.1f} ms" if ns < 10**10 else f"{ns / 1e9:.1f} s"


def _evidence_lines(ev: dict[str, Any]) -> list[str]:
    """The evidence as short indented lines: numbers first, then each list's first rows."""
    lines = []
    scalars = [f"{k}={v}" for k, v in ev.items() if not isinstance(v, (list, dict))]
    if scalars:
        lines.append(", ".join(scalars))
    for k, v in ev.items():
        if isinstance(v, list) and v:
            for row in v[:5]:
                if isinstance(row, dict):
                    lines.append(f"{k}: " + ", ".join(f"{a}={_display(b)}" for a, b in row.items()))
        elif isinstance(v, dict) and v:
            lines.append(f"{k}: " + ", ".join(f"{a}={_display(b)}" for a, b in v.items()))
    return lines


def _display(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{a}={_display(b)}" for a, b in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_display(x) for x in v) + "]"
    if isinstance(v, str):
        from .text import display
        return display(v)
    return str(v)


def render_findings(findings: Sequence[Finding], out: TextIO, verbose: bool = True) -> None:
    """The findings as text: one headline each, then (verbose) the evidence, why and the usual fix."""
    out.write("\nfindings (most costly first):\n")
    if not findings:
        out.write("  (none)\n")
        return
    for i, f in enumerate(findings, 1):
        out.write(f"  {i}. [{f.level}] {f.id}: {_display(f.title)} ({f.requests} requests, {_fmt_ns(f.time_ns)})\n")
        if verbose:
            for line in _evidence_lines(f.evidence):
                out.write(f"       {line}\n")
            out.write(f"       why: {f.why}\n       fix: {f.fix}\n")
