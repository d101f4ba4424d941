"""Where events go: a bounded queue and one writer thread that formats, counts and writes in batches.

The filesystem thread only enqueues. When the writer falls behind, `put` blocks (the filesystem waits) instead
of dropping events; `close` drains everything accepted before returning, so every event reaches the output.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import IO, Any

from .events import RawEvent, to_event
from .formats import formatter
from .stats import Summary

_STOP = object()
_BATCH = 2048


class RotatingFile:
    """Append-only file output that rotates at `max_bytes` (FILE -> FILE.1 -> ... FILE.N), never above it.

    max_bytes=0 means no rotation. With backups=0 the file is truncated and restarted when full.
    """

    def __init__(self, path: str, max_bytes: int = 0, backups: int = 1) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._f = open(path, "wb")  # noqa: SIM115 - owned until close()
        self.size = 0

    def write_lines(self, lines: list[bytes]) -> None:
        if not self.max_bytes:
            data = b"".join(lines)
            self._f.write(data)
            self.size += len(data)
            return
        chunk: list[bytes] = []
        chunk_size = 0
        for line in lines:
            if self.size + chunk_size + len(line) > self.max_bytes and (self.size or chunk_size):
                self._f.write(b"".join(chunk))
                chunk, chunk_size = [], 0
                self._rotate()
            chunk.append(line)
            chunk_size += len(line)
        self._f.write(b"".join(chunk))
        self.size += chunk_size

    def _rotate(self) -> None:
        self._f.close()
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                src = f"{self.path}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._f = open(self.path, "wb")  # noqa: SIM115
        self.size = 0

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class StreamOutput:
    """Output to an already open binary stream (stderr by default); not closed by us."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._s = stream

    def write_lines(self, lines: list[bytes]) -> None:
        self._s.write(b"".join(lines))

    def flush(self) -> None:
        self._s.flush()

    def close(self) -> None:
        self.flush()


class TraceSink:
    """Receives RawEvents from the tracing layer; formats and writes them off the hot path."""

    def __init__(self, output: RotatingFile | StreamOutput | None, fmt: str = "text", *,
                 queue_size: int = 65536, on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.output = output
        self.format = formatter(fmt)
        self.summary = Summary()
        self.written = 0
        self._on_event = on_event
        self._q: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()  # guards summary against a concurrent snapshot (SIGUSR1)
        self._thread = threading.Thread(target=self._run, name="trace-writer", daemon=True)
        self._thread.start()
        self._closed = False

    def put(self, raw: RawEvent) -> None:
        self._q.put(raw)  # blocks when full: the filesystem waits rather than losing events

    def _run(self) -> None:
        q = self._q
        fmt = self.format
        while True:
            batch = [q.get()]
            try:
                while len(batch) < _BATCH:
                    batch.append(q.get_nowait())
            except queue.Empty:
                pass
            lines = []
            stop = False
            with self._lock:
                for raw in batch:
                    if raw is _STOP:
                        stop = True
                        continue
                    self.summary.add(raw.op, raw.duration_ns, bool(raw.err), raw.result)
                    event = to_event(raw)
                    if self._on_event is not None:
                        self._on_event(event)
                    if self.output is not None:
                        lines.append(fmt(event).encode("utf-8", "backslashreplace"))
                self.written += len(batch) - stop
            if self.output is not None and lines:
                self.output.write_lines(lines)
                if q.empty():
                    self.output.flush()
            if stop:
                if self.output is not None:
                    self.output.flush()
                return

    def summary_snapshot(self) -> Summary:
        with self._lock:
            snap = Summary()
            for op, st in self.summary.ops.items():
                copy = type(st)(st.calls, st.errors, st.total_ns, st.bytes_read, st.bytes_written,
                                dict(st.histogram))
                snap.ops[op] = copy
            return snap

    def close(self) -> None:
        """Write every accepted event, then stop the writer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._q.put(_STOP)
        self._thread.join()
        if self.output is not None:
            self.output.close()
