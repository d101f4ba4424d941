"""Per-operation statistics, like `strace -c` seen from the filesystem: calls, errors, time, p50/p99, bytes.

Latencies go into log-scale buckets (about 4% wide), so memory stays constant however long the mount runs and
the percentiles are exact to within a bucket.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, TextIO

_BUCKETS_PER_DOUBLING = 16

try:
    from ._jsonl import tally as _tally
except ImportError:  # not built (setup.py): add_batch counts in Python
    _tally = None  # type: ignore[assignment]


def _bucket(ns: int) -> int:
    return 0 if ns <= 1 else int(math.log2(ns) * _BUCKETS_PER_DOUBLING)


def _bucket_value(b: int) -> float:
    """Geometric middle of bucket b, in ns."""
    return float(2 ** ((b + 0.5) / _BUCKETS_PER_DOUBLING))


@dataclass
class OpStats:
    calls: int = 0
    errors: int = 0
    total_ns: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    injected: int = 0  # calls a fault rule acted on
    histogram: dict[int, int] = field(default_factory=dict)

    def add(self, duration_ns: int, failed: bool, nread: int, nwritten: int, injected: bool = False) -> None:
        self.calls += 1
        self.injected += injected
        self.errors += failed
        self.total_ns += duration_ns
        self.bytes_read += nread
        self.bytes_written += nwritten
        b = _bucket(duration_ns)
        self.histogram[b] = self.histogram.get(b, 0) + 1

    def percentile(self, q: float) -> float:
        """Latency in ns below which a fraction q of calls fall."""
        if not self.calls:
            return 0.0
        target = q * self.calls
        seen = 0
        for b in sorted(self.histogram):
            seen += self.histogram[b]
            if seen >= target:
                return _bucket_value(b)
        return _bucket_value(max(self.histogram))


class Summary:
    """Accumulates events (RawEvent or event dicts) and renders the table or JSON."""

    def __init__(self) -> None:
        self.ops: dict[str, OpStats] = {}

    def add(self, op: str, duration_ns: int, failed: bool, result: Any, injected: bool = False) -> None:
        st = self.ops.get(op)
        if st is None:
            st = self.ops[op] = OpStats()
        nread = nwritten = 0
        if not failed and isinstance(result, int):
            if op == "read":
                nread = result
            elif op in ("write", "copy_file_range"):
                nwritten = result
        st.add(duration_ns, failed, nread, nwritten, injected)

    def add_batch(self, items: list[tuple[Any, ...]]) -> None:
        """`add` for each raw event tuple (RawEvent's order): the trace writer's per-event cost, so counted in C
        where _jsonl.c is built (a fifth of this loop's time) and merged here once per operation."""
        ops = self.ops
        tallied = _tally(items) if _tally is not None else None
        if tallied is not None:
            for op, calls, errors, total_ns, nread, nwritten, injected, buckets in tallied:
                st = ops.get(op)
                if st is None:
                    st = ops[op] = OpStats()
                st.calls += calls
                st.errors += errors
                st.total_ns += total_ns
                st.bytes_read += nread
                st.bytes_written += nwritten
                st.injected += injected
                h = st.histogram
                for b, count in buckets:
                    h[b] = h.get(b, 0) + count
            return
        self.add_loop(items)

    def add_loop(self, items: list[tuple[Any, ...]]) -> None:
        """`add_batch` in Python (for a batch the compiled tally leaves to it, or without _jsonl.c)."""
        ops = self.ops
        log2 = math.log2
        for item in items:
            op, result, err, ns = item[2], item[4], item[5], item[6]
            st = ops.get(op)
            if st is None:
                st = ops[op] = OpStats()
            st.calls += 1
            st.total_ns += ns
            if err:
                st.errors += 1
            elif isinstance(result, int):
                if op == "read":
                    st.bytes_read += result
                elif op == "write" or op == "copy_file_range":
                    st.bytes_written += result
            if len(item) > 12 and item[12]:
                st.injected += 1
            b = 0 if ns <= 1 else int(log2(ns) * _BUCKETS_PER_DOUBLING)  # _bucket(ns)
            h = st.histogram
            h[b] = h.get(b, 0) + 1

    def add_event(self, event: dict[str, Any]) -> None:
        self.add(event["op"], event["duration_ns"], event["errno"] is not None, event["result"],
                 "injected" in event)

    @property
    def total_injected(self) -> int:
        return sum(s.injected for s in self.ops.values())

    @property
    def total_calls(self) -> int:
        return sum(s.calls for s in self.ops.values())

    def as_dict(self) -> dict[str, Any]:
        ops = {}
        for op, s in sorted(self.ops.items(), key=lambda kv: -kv[1].total_ns):
            ops[op] = {
                "calls": s.calls, "errors": s.errors, "total_ns": s.total_ns,
                "mean_ns": s.total_ns / s.calls if s.calls else 0.0,
                "p50_ns": s.percentile(0.50), "p99_ns": s.percentile(0.99),
                "bytes_read": s.bytes_read, "bytes_written": s.bytes_written, "injected": s.injected,
            }
        return {"total_calls": self.total_calls, "total_errors": sum(s.errors for s in self.ops.values()),
                "total_injected": self.total_injected,
                "total_ns": sum(s.total_ns for s in self.ops.values()), "ops": ops}

    def write_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.as_dict(), f, indent=2)
            f.write("\n")

    def render(self, out: TextIO) -> None:
        d = self.as_dict()
        total = d["total_ns"] or 1
        # The injected column only where a fault rule acted: a plain trace keeps strace -c's familiar shape.
        inj = bool(d["total_injected"])
        rule = (f"{'-' * 6} {'-' * 10} {'-' * 9} {'-' * 7} " + ("-" * 8 + " " if inj else "")
                + f"{'-' * 9} {'-' * 9} {'-' * 9} {'-' * 12} {'-' * 13}  {'-' * 16}\n")
        out.write(f"{'% time':>6} {'seconds':>10} {'calls':>9} {'errors':>7} " + (f"{'injected':>8} " if inj else "")
                  + f"{'mean us':>9} {'p50 us':>9} {'p99 us':>9} {'bytes read':>12} {'bytes written':>13}  op\n")
        out.write(rule)
        for op, s in d["ops"].items():
            out.write(f"{100 * s['total_ns'] / total:6.2f} {s['total_ns'] / 1e9:10.6f} {s['calls']:9d} "
                      f"{s['errors'] or '':>7} " + (f"{s['injected'] or '':>8} " if inj else "")
                      + f"{s['mean_ns'] / 1e3:9.1f} {s['p50_ns'] / 1e3:9.1f} "
                      f"{s['p99_ns'] / 1e3:9.1f} {s['bytes_read']:12d} {s['bytes_written']:13d}  {op}\n")
        out.write(rule)
        out.write(f"{100.0:6.2f} {d['total_ns'] / 1e9:10.6f} {d['total_calls']:9d} {d['total_errors'] or '':>7} "
                  + (f"{d['total_injected']:>8} " if inj else "")
                  + f"{'':>9} {'':>9} {'':>9} {sum(s['bytes_read'] for s in d['ops'].values()):12d} "
                  f"{sum(s['bytes_written'] for s in d['ops'].values()):13d}  total\n")
        out.flush()
