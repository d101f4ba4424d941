"""Where events go, off the filesystem's hot path, never dropped.

`ProcessSink` (what the command line uses) batches raw events and ships them to a writer process
(tracing/writer.py), so formatting runs on another core instead of competing with the filesystem for the GIL.
`TraceSink` does the same work in a thread of the same process: simpler to embed, fine for light traffic.
Both bound what they hold: when the writer falls behind, `put` blocks (the filesystem waits) instead of
dropping events, and `close` writes everything accepted before returning.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import fcntl
import itertools
import marshal
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

from .compression import RESERVE, Compressor, bound, codec_for
from .events import event_of
from .formats import encoder, formatter
from .stats import Summary

try:
    from ._recorder import EventBuffer
except ImportError:  # built without its C extension: PendingEvents below does the same in Python
    EventBuffer = None  # type: ignore[assignment,misc]

_STOP = object()
_BATCH = 2048
_PIPE_BYTES = 1 << 20  # /proc/sys/fs/pipe-max-size's default
_LOOK = 0.02  # seconds between the ProcessSink flusher's looks at the pending events


class EventSink(Protocol):
    def put(self, raw: tuple[Any, ...]) -> None:
        """Receive one event as a tuple in RawEvent's field order."""


class RotatingFile:
    """Append-only file output that rotates at `max_bytes` (FILE -> FILE.1 -> ... FILE.N), never above it.

    max_bytes=0 means no rotation. With backups=0 the file is truncated and restarted when full.

    A FILE named *.zst or *.gz is written compressed (tracing/compression.py): each `write_block` call is one
    or more flushed blocks, so a reader sees every line written so far; each file is a complete stream,
    finished on rotation and on close. `max_bytes` then counts compressed bytes: a batch goes into the
    current file only if its worst-case compressed size still fits, else it is split, and the file rotates
    when not even one line is sure to fit.
    """

    def __init__(self, path: str, max_bytes: int = 0, backups: int = 1) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.codec = codec_for(path)
        self._f = open(path, "wb")  # noqa: SIM115 - owned until close()
        self._comp = Compressor(self.codec) if self.codec else None
        self.size = 0

    def write_lines(self, lines: list[bytes]) -> None:
        self.write_block(b"".join(lines), list(itertools.accumulate(map(len, lines))))

    def write_block(self, data: bytes | bytearray, ends: list[int]) -> None:
        """Whole lines: line i of `data` ends at offset ends[i]. (The writers build a batch into one bytearray
        rather than a list of lines: thousands of small bytes objects alive at once made each encoded line
        cost 1-5 us more in allocation, on top of ~0.4 us to encode it.)"""
        view = memoryview(data)
        if self._comp is not None:
            self._write_compressed(view, ends)
            return
        if not self.max_bytes:
            self._f.write(view)
            self.size += len(view)
            return
        i = start = 0
        while i < len(ends):
            # as many whole lines as fit in the current file
            j = bisect.bisect_right(ends, start + self.max_bytes - self.size, i)
            if j == i:
                if self.size:
                    self._rotate()
                    continue
                j = i + 1  # a line longer than max_bytes: alone in an empty file
            self._f.write(view[start:ends[j - 1]])
            self.size += ends[j - 1] - start
            start, i = ends[j - 1], j

    def _write_compressed(self, view: memoryview, ends: list[int]) -> None:
        assert self._comp is not None
        if not self.max_bytes:
            data = self._comp.compress(view)
            self._f.write(data)
            self.size += len(data)
            return
        i = start = 0
        while i < len(ends):
            # As many lines as are sure to fit, compressed, in the room left (the stream's end reserved).
            room = self.max_bytes - self.size - RESERVE
            j = i
            while j < len(ends) and bound(ends[j] - start) <= room:
                j += 1
            if j == i:
                if self.size:
                    self._rotate()
                    continue
                j = i + 1  # a line that cannot fit even an empty file: alone in one, as in a plain file
            data = self._comp.compress(view[start:ends[j - 1]])
            self._f.write(data)
            self.size += len(data)
            start, i = ends[j - 1], j

    def _rotate(self) -> None:
        self._finish()
        self._f.close()
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                src = f"{self.path}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._f = open(self.path, "wb")  # noqa: SIM115
        self.size = 0
        if self.codec:
            self._comp = Compressor(self.codec)

    def _finish(self) -> None:
        if self._comp is not None:
            self._f.write(self._comp.finish())
            self._comp = None

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._finish()
            self._f.close()


class StreamOutput:
    """Output to an already open binary stream (stderr by default); not closed by us."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._s = stream

    def write_lines(self, lines: list[bytes]) -> None:
        self._s.write(b"".join(lines))

    def write_block(self, data: bytes | bytearray, ends: list[int]) -> None:
        self._s.write(data)

    def flush(self) -> None:
        self._s.flush()

    def close(self) -> None:
        self.flush()


class TraceSink:
    """Receives RawEvents from the tracing layer; formats and writes them off the hot path."""

    def __init__(self, output: RotatingFile | StreamOutput | None, fmt: str = "text", *,
                 queue_size: int = 65536, on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.output = output
        self.encode = encoder(fmt)
        self.summary = Summary()
        self.written = 0
        self._on_event = on_event
        self._q: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()  # guards summary against a concurrent snapshot (SIGUSR1)
        self._thread = threading.Thread(target=self._run, name="trace-writer", daemon=True)
        self._thread.start()
        self._closed = False

    def put(self, raw: tuple[Any, ...]) -> None:
        self._q.put(raw)  # blocks when full: the filesystem waits rather than losing events

    def _run(self) -> None:
        q = self._q
        encode = self.encode
        while True:
            batch = [q.get()]
            try:
                while len(batch) < _BATCH:
                    batch.append(q.get_nowait())
            except queue.Empty:
                pass
            block, ends = bytearray(), []
            items = [item for item in batch if item is not _STOP]
            stop = len(items) < len(batch)
            with self._lock:
                self.summary.add_batch(items)
                for item in items:
                    event = event_of(item)
                    if self._on_event is not None:
                        self._on_event(event)
                    if self.output is not None:
                        block += encode(event)
                        ends.append(len(block))
                self.written += len(items)
            if self.output is not None and ends:
                self.output.write_block(block, ends)
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
                snap.ops[op] = dataclasses.replace(st, histogram=dict(st.histogram))
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


_FRAME = struct.Struct("<I")
_SUMMARY_FRAME = _FRAME.pack(0)  # no events: the writer prints the summary so far


class PendingEvents:
    """Events not sent yet, and how they leave: `take()` gives one frame of everything appended since the last take
    (a 4-byte little-endian length, then the marshal'ed list of event tuples: what tracing/writer.py reads) and its
    event count, or None.

    This is the Python version; _recorder.c's EventBuffer, used where it is built, encodes each event when it is
    appended (the compiled tracing layer writes its fields straight in), so no tuples pile up for the collector
    and no marshal.dumps of the batch holds the GIL."""

    def __init__(self) -> None:
        self._events: collections.deque[tuple[Any, ...]] = collections.deque()
        self.append = self._events.append  # a deque: appends from several threads need no lock of ours

    def __len__(self) -> int:
        return len(self._events)

    def take(self) -> tuple[bytes, int] | None:
        popleft = self._events.popleft
        batch = [popleft() for _ in range(len(self._events))]
        if not batch:
            return None
        try:
            body = marshal.dumps(batch)
        except ValueError:  # a custom filesystem returned something exotic: record its repr
            body = marshal.dumps([tuple(map(_stand_in, t)) for t in batch])
        return _FRAME.pack(len(body)) + body, len(batch)


def pending_events() -> Any:
    """An EventBuffer where the C extension is built, else a PendingEvents."""
    return EventBuffer(_stand_in) if EventBuffer is not None else PendingEvents()


class ProcessSink:
    """Ship raw events in marshal'ed batches to a writer process that formats and writes them.

    The hot path appends an event to the pending ones (`pending_events`: encoded as it comes, where the C
    extension is built; atomic, no lock). A flusher thread looks at them every 20 ms and sends them once none came
    during the last look (the traffic paused: an interactive user sees their events within ~40 ms), once `batch`
    are pending, or once the oldest has waited `max_delay` seconds. Under steady traffic the writer so wakes about
    once a second rather than 50 times: on a 2-core VM each wake-up of a busy writer cost the client and the daemon
    ~5 ms of wall time in scheduling (untar, traced: 4.3 s with 20 ms sends, 2.9 s with 1 s; no trace 2.1 s;
    docs/benchmarks.md 2026-12-07 03:10). A full pipe blocks the flusher, and `max_pending` events waiting block
    the filesystem.
    The writer process prints the summary itself when its input ends (see tracing/writer.py).

    When the daemon may (root), the writer runs under SCHED_IDLE while it keeps up: on a 2-core machine a
    writer competing at normal priority with the client and the daemon cost ~10 us of latency per event for
    ~3 us of its own CPU (4-level lstat: +36 % traced; about +10 % with SCHED_IDLE). An idle-class task can starve
    behind unrelated busy processes, so once `boost_at` events are pending the writer is put back to
    SCHED_OTHER, and returned to SCHED_IDLE when the flusher finds the backlog gone.
    """

    def __init__(self, fmt: str = "text", output: str | None = None, *, max_bytes: int = 0, backups: int = 1,
                 summary: bool = True, summary_json: str | None = None, batch: int = 8192,
                 max_pending: int = 65536, boost_at: int = 16384, max_delay: float = 1.0,
                 idle_writer: bool | None = None) -> None:
        formatter(fmt)  # reject an unknown format here, not in the writer
        cmd = [sys.executable, "-m", "fuse_passthrough.tracing.writer", "--format", fmt,
               "--max-bytes", str(max_bytes), "--backups", str(backups)]
        if output:
            cmd += ["--output", output]
        if not summary:
            cmd.append("--no-summary")
        if summary_json:
            cmd += ["--summary-json", summary_json]
        # SIGUSR1 (summary request) must not kill the writer before it has installed its handler: the
        # ignored disposition survives exec, and the writer replaces it.
        try:
            previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        except ValueError:  # not the main thread
            previous = None
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        finally:
            if previous is not None:
                signal.signal(signal.SIGUSR1, previous)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.read(1)  # the writer has its output open and its signal handlers set
        self.proc.stdout.close()
        if not ready:
            self.proc.wait()
            raise OSError(f"the trace writer failed to start (exit status {self.proc.returncode})")
        assert self.proc.stdin is not None
        self._fd = self.proc.stdin.fileno()
        try:  # a gathered batch (MBs) through a 64 KiB pipe takes a wake-up of both sides per 64 KiB
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        except OSError:  # above /proc/sys/fs/pipe-max-size for this user: the default size works, in more pieces
            pass
        self._batch = batch
        self._max_delay = max_delay
        self._max_pending = max_pending
        self._pending = pending_events()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._closing = False
        self._summary_wanted = False  # a summary frame to send after what is pending
        self.written = 0
        self.lost = 0
        self._boost_at = boost_at
        self._idle_writer = os.geteuid() == 0 if idle_writer is None else idle_writer
        self.writer_idle = False  # the writer's current scheduling class is SCHED_IDLE
        if self._idle_writer:
            self._set_writer_idle(True)
        self._thread = threading.Thread(target=self._run, name="trace-flusher", daemon=True)
        self._thread.start()

    def put(self, raw: tuple[Any, ...]) -> None:
        pending = self._pending
        pending.append(raw)  # atomic: an EventBuffer's append holds the GIL throughout, a deque's needs no lock
        n = len(pending)
        if n >= self._batch:
            self._backlog(n)

    def hot_path(self) -> tuple[Any, int, Callable[[int], None]]:
        """`put` in parts, for the compiled tracing layer (_recorder.c): append to the pending events (an
        EventBuffer: encoded there), then call the function with their count once it reaches the batch size."""
        return self._pending, self._batch, self._backlog

    def _backlog(self, n: int) -> None:
        """`n` events are pending, at least a batch: wake the flusher; wait while the writer is too far behind."""
        pending = self._pending
        if not self._wake.is_set():
            self._wake.set()
        if n >= self._max_pending:
            with self._room:
                while len(pending) >= self._max_pending:
                    self._room.wait()  # the writer is behind: wait rather than drop
        elif n >= self._boost_at and self.writer_idle:
            self._set_writer_idle(False)  # the writer is behind: it must not wait for idle CPU

    def _set_writer_idle(self, idle: bool) -> None:
        policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
        try:
            os.sched_setscheduler(self.proc.pid, policy, os.sched_param(0))
        except OSError:  # not permitted (non-root), or the writer is gone: leave it as it is, and stop trying
            self._idle_writer = False
            self.writer_idle = False
            return
        self.writer_idle = idle

    def _run(self) -> None:
        seen = 0  # events pending at the last look, not sent
        since = 0.0  # when they were first seen
        while True:
            self._wake.wait(_LOOK)
            self._wake.clear()
            with self._lock:
                closing = self._closing  # read before taking the events: all of them were put before close
                summary, self._summary_wanted = self._summary_wanted, False
            n = len(self._pending)
            if n and n < self._batch and not (closing or summary):
                now = time.monotonic()
                if not seen:
                    since = now
                if n > seen and now - since < self._max_delay:
                    seen = n
                    continue  # still coming: let them gather
            seen = 0
            taken = self._pending.take()
            with self._room:
                self._room.notify_all()
            count = taken[1] if taken is not None else 0
            if self._idle_writer and not self.writer_idle and count < self._batch:
                self._set_writer_idle(True)  # caught up
            if taken is not None:
                self._send(*taken)
            if summary:
                self._send(_SUMMARY_FRAME, 0)
            if closing:
                return

    def _send(self, frame: bytes, count: int) -> None:
        data = memoryview(frame)
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as e:
            # The writer died (killed, disk error): say so loudly, and keep the filesystem serving.
            if not self.lost:
                print(f"fuse-passthrough: the trace writer stopped ({e.strerror}); events from now on are "
                      "counted as lost, not written", file=sys.stderr)
            self.lost += count
            return
        self.written += count

    def request_summary(self) -> None:
        """Have the writer print the summary so far, with every event put before this call: an empty frame after
        them (a signal to the writer could overtake the events still in the pipe)."""
        with self._lock:
            if self._closing:
                return  # the final summary is on its way
            self._summary_wanted = True
        self._wake.set()

    def close(self) -> int:
        """Send every pending event, end the writer's input, wait for it; returns its exit status."""
        with self._lock:
            if self._closing:
                return self.proc.wait()
            self._closing = True
        self._wake.set()
        self._thread.join()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        status = self.proc.wait()
        if self.lost:
            print(f"fuse-passthrough: {self.lost} events were lost because the trace writer stopped",
                  file=sys.stderr)
        return status


def _stand_in(value: Any) -> Any:
    """An event's field as an EventBuffer writes it: unchanged where marshal can write it, a tuple item by item,
    anything else as `_marshalable` makes it."""
    if type(value) is tuple:
        return tuple(map(_stand_in, value))
    try:
        marshal.dumps(value)
    except ValueError:
        return _marshalable(value)
    return value


def _marshalable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (tuple, list)):
        return tuple(_marshalable(v) for v in value)
    if isinstance(value, dict):
        return {str(k): _marshalable(v) for k, v in value.items()}
    return repr(value)
