"""The report built one event at a time, in plain Python: the reference the column-wise tally (numpy, compiled
columns, several workers) must equal, tables and findings' evidence alike."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

from fuse_passthrough.report import evidence as ec
from fuse_passthrough.report.findings import SYNCS, Evidence, _examples
from fuse_passthrough.report.model import Report, _counter, _group
from fuse_passthrough.report.reading import _from_dict, check_event

OPENS = frozenset({"open", "create"})


class ReferenceEvidence:
    """findings.Evidence gathered event by event (the tally gathers it a batch at a time, with numpy)."""

    def __init__(self, tiny_bytes: int = 1024) -> None:
        self.tiny_bytes = tiny_bytes
        self.ev = Evidence()
        self.rows: dict[str, list[int]] = {}  # path -> evidence_columns' rows READS_N..MISSING_NS
        self.last_end: dict[tuple[str, Any, int], int] = {}

    def _row(self, path: str) -> list[int]:
        row = self.rows.get(path)
        if row is None:
            row = self.rows[path] = [0] * ec.IO_ROWS
        return row

    def _example(self, kind: str, path: str, seq: int | None) -> None:
        _examples(self.ev.seqs.setdefault((kind, path), []), seq)

    def _proc(self, kind: str, e: Any) -> None:
        self.ev.io_procs.setdefault(kind, Counter())[(e.pid, None if e.pid == 0 else e.comm)] += 1

    def add(self, e: Any) -> None:
        ev = self.ev
        if e.duration_ns > ev.slow_floor():
            ev.slow(e)
        if e.injected is not None or e.pid in ev.pending:
            ev.follow(e)
        path, op = e.path, e.op
        if path is None:
            return
        if e.errno is not None:
            if e.errno == "ENOENT":
                row = self._row(path)
                row[ec.MISSING_N] += 1
                row[ec.MISSING_NS] += e.duration_ns
                self._example("missing", path, e.seq)
                self._proc("missing", e)
            return
        if op in ("read", "write"):
            a = e.args
            size, offset, fh = a.get("size"), a.get("offset"), a.get("fh")
            r = e.result if e.result.__class__ is int else None
            size = size if size.__class__ is int else None
            row = self._row(path)
            reading = op == "read"
            row[ec.READS_N if reading else ec.WRITES_N] += 1
            row[ec.READ_BYTES if reading else ec.WRITTEN] += r or 0
            row[ec.IO_NS] += e.duration_ns
            if offset.__class__ is int:
                key = (path, fh, e.pid)
                last = self.last_end.get(key)
                row[ec.SEQ if last == offset or (last is None and offset == 0) else ec.RAND] += 1
                end = offset + (r if r is not None else size if size is not None else 0)
                self.last_end[key] = end
                if reading:
                    row[ec.EXTENT] = max(row[ec.EXTENT], end)
            if size is not None and size < self.tiny_bytes:
                row[ec.TINY] += 1
                row[ec.TINY_BYTES] += r or 0
                row[ec.TINY_NS] += e.duration_ns
                self._example("tiny", path, e.seq)
                self._proc("tiny", e)
        elif op in OPENS:
            row = self._row(path)
            row[ec.OPENS_N] += 1
            row[ec.OPEN_NS] += e.duration_ns
            self._example("open", path, e.seq)
            self._proc("open", e)
            if op == "create":
                ev.created[path] = e.seq if e.seq is not None else -1
        elif op in SYNCS:
            row = self._row(path)
            row[ec.SYNCS_N] += 1
            row[ec.SYNC_NS] += e.duration_ns
            self._example("sync", path, e.seq)
            self._proc("sync", e)
        elif op == "opendir":
            row = self._row(path)
            row[ec.LISTS_N] += 1
            row[ec.LIST_NS] += e.duration_ns
            self._example("list", path, e.seq)
        elif op == "mknod":
            ev.created[path] = e.seq if e.seq is not None else -1
        elif op == "unlink":
            if ev.created.pop(path, None) is not None:
                ev.deleted(e)
        elif op == "rename":
            if ev.created.pop(path, None) is not None and e.path2 is not None:
                ev.saved(e)

    def evidence(self) -> Evidence:
        ev = self.ev
        ev.path_names = list(self.rows)
        ev.path_rows = np.array(list(self.rows.values()), dtype=object).T.reshape(ec.IO_ROWS, len(self.rows))
        ev.created = {}
        return ev



class ReferenceReport(Report):
    """A Report that adds one event (a checked event dict) at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.gather = ReferenceEvidence()

    def add(self, event: dict[str, Any]) -> None:
        self.summary.add_event(event)
        self.gather.add(_from_dict(event))
        self.op_max[event["op"]] = max(self.op_max.get(event["op"], 0), event["duration_ns"])
        self.events += 1
        start = float(event["ts"])
        end = start + event["duration_ns"] / 1e9
        self.first_ts = start if self.first_ts is None else min(self.first_ts, start)
        self.last_end = end if self.last_end is None else max(self.last_end, end)
        if event["path"] is not None:
            _group(self.paths, event["path"]).add(event)
        pid = event["pid"]
        _group(self.processes, (pid, None if pid == 0 else event["comm"])).add(event)
        if event["errno"] is not None:
            _group(self.errors, (event["errno"], event["path"])).add(event)
            self.errno_ops.setdefault(event["errno"], _counter())[event["op"]] += 1

    def done(self) -> ReferenceReport:
        self.evidence = self.gather.evidence()
        return self


def reference_report(events: list[dict[str, Any]]) -> ReferenceReport:
    """The report of these events (dicts as they would be written), built one event at a time."""
    r = ReferenceReport()
    for e in events:
        r.add(check_event(json.loads(json.dumps(e))))
    return r.done()

