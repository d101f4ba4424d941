"""Reading traces: the JSONL schema (msgspec structs, the reference checks), chunks of whole lines of plain,
gzip or zstd files, and their events decoded a slice at a time (fast path, or line by line naming a bad line)."""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

import msgspec

# No BLAS is used here, and OpenBLAS's threads, started when numpy is imported, spin a while on every CPU
# (0.1 s of CPU time, more than reading a 20 MB trace takes)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402 - after the setting above

from ..tracing.compression import CorruptTrace, TraceReader
from ..tracing.events import SCHEMA_VERSION, SUPPORTED_VERSIONS

try:  # the per-event part of the tally, compiled (_columns.c) when the package was built with a C compiler
    from .. import _columns as _compiled
except ImportError:
    _compiled = None  # type: ignore[assignment]

CHUNK = 512 << 10     # bytes of whole lines read (and sent to a worker) at a time
_LINE_ROOM = 16 << 10  # read past a chunk's end, to finish its last line in the same read
SLICE = 512           # lines decoded and tallied together: their objects stay in the CPU cache


class ReportError(Exception):
    """A one-line problem with the input or output files (exit status 1)."""


class Event(msgspec.Struct, gc=False, kw_only=True):
    """One trace event (README, "JSONL schema, version 2"; version 1 is read as well): the fields and types a
    line must have.

    In the order the writer writes them: msgspec matches each key against the field expected next first (11 % fewer
    instructions decoding than in another order)."""

    v: Literal[1, 2, 3] = 1  # SUPPORTED_VERSIONS; a line without "v" reads as version 1, as before
    seq: int | None = None
    ts: float
    op: str
    path: str | None = None
    path2: str | None = None
    args: Any = msgspec.Raw(b"{}")
    result: Any = msgspec.Raw(b"null")
    errno: str | None = None
    duration_ns: Annotated[int, msgspec.Meta(ge=0)]
    pid: int
    uid: int | None = None
    gid: int | None = None
    comm: str | None = None
    cmdline: list[Any] | None = None
    injected: str | None = None  # what a fault rule did to the call (README, "Fault injection")
    delay_ns: int | None = None


class _Object(msgspec.Struct, gc=False):
    """A JSON object whose fields are checked as JSON and skipped."""


class _FullEvent(Event, gc=False, kw_only=True):
    """The same fields, with args and result kept as raw JSON (Raw), decoded when needed."""

    args: msgspec.Raw = msgspec.Raw(b"{}")
    result: msgspec.Raw = msgspec.Raw(b"null")


class _Args(_Object, gc=False):
    """The arguments the findings need (of reads and writes); the others are checked as JSON and skipped."""

    size: int | None = None
    offset: int | None = None
    fh: int | None = None


class _FastEvent(Event, gc=False, kw_only=True):
    """What the tally needs: of the args only size, offset and fh, result raw (for bytes read and written)."""

    args: _Args = msgspec.field(default_factory=_Args)
    result: msgspec.Raw = msgspec.Raw(b"null")


COMPILED_NOTE: str | None = None  # why the compiled columns are not used, when they were built but cannot be
if _compiled is not None:
    try:
        _compiled.setup(Event, _Args, msgspec.Raw)
    except Exception as e:  # a msgspec whose struct layout it does not know, say: the Python path does the same work
        COMPILED_NOTE = f"note: the compiled columns cannot be used ({e}): reading in Python, about 4 times slower"
        _compiled = None  # type: ignore[assignment]

_DECODER = msgspec.json.Decoder(_FastEvent)
_DECODE = _DECODER.decode
_DECODE_FULL = msgspec.json.Decoder(_FullEvent).decode
_FAST_ERRORS = (msgspec.MsgspecError, ValueError)
_OPEN, _CLOSE = ord("{"), ord("}")


# --------------------------------------------------------------------------------------------- reference path

_REQUIRED: dict[str, tuple[type, ...]] = {"op": (str,), "ts": (int, float), "duration_ns": (int,), "pid": (int,)}
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "seq": (int,), "path": (str,), "path2": (str,), "errno": (str,), "comm": (str,), "uid": (int,),
    "gid": (int,), "args": (dict,), "cmdline": (list,), "injected": (str,), "delay_ns": (int,),
}


def check_event(obj: Any) -> dict[str, Any]:
    """The event with every schema field present, or ValueError saying what is wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError(f"not a trace event (a JSON {type(obj).__name__}, expected an object)")
    v = obj.get("v", SCHEMA_VERSION)
    if v not in SUPPORTED_VERSIONS:
        raise ValueError(f"unsupported event schema version {v!r} (this report reads versions "
                         f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))})")
    for name, types in _REQUIRED.items():
        if name not in obj:
            raise ValueError(f"not a trace event (no {name!r} field)")
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"bad {name!r} field: {value!r}")
    if obj["duration_ns"] < 0:
        raise ValueError(f"bad 'duration_ns' field: {obj['duration_ns']!r}")
    if not math.isfinite(obj["ts"]):
        raise ValueError(f"bad 'ts' field: {obj['ts']!r}")
    for name, types in _OPTIONAL.items():
        value = obj.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            raise ValueError(f"bad {name!r} field: {value!r}")
    for name in ("seq", "path", "path2", "result", "errno", "comm"):
        obj.setdefault(name, None)
    obj.setdefault("args", {})
    return obj


def parse_line(raw: bytes, where: str, last: bool) -> dict[str, Any] | None:
    """One line through the reference path: the event, None for a blank line, or ReportError."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ReportError(f"{where}: malformed line, not UTF-8 text") from None
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        hint = "; the last line is incomplete: is the trace still being written?" if last else ""
        raise ReportError(f"{where}: malformed line, not JSON "
                          f"({e.msg.removesuffix(' at')} at column {e.colno}){hint}") from None
    try:
        return check_event(obj)
    except ValueError as e:
        raise ReportError(f"{where}: malformed line, {e}") from None


def _from_dict(d: dict[str, Any]) -> Event:
    return Event(op=d["op"], ts=float(d["ts"]), duration_ns=d["duration_ns"], pid=d["pid"], seq=d["seq"],
                 path=d["path"], path2=d["path2"], args=d["args"], result=d["result"], errno=d["errno"],
                 comm=d["comm"], uid=d.get("uid"), gid=d.get("gid"), cmdline=d.get("cmdline"),
                 injected=d.get("injected"), delay_ns=d.get("delay_ns"))


def _json(value: Any) -> Any:
    return msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value


def as_dict(e: Event, line: bytes | None = None) -> dict[str, Any]:
    """The event as the JSON object it was read from (every schema field; cmdline, injected, delay_ns when
    present).

    `line`: the line it was decoded from (needed for an event of the fast path, which skipped its args)."""
    if isinstance(e.args, _Object):
        assert line is not None
        e = _DECODE_FULL(line)
    d = {"v": e.v, "seq": e.seq, "ts": e.ts, "op": e.op, "path": e.path, "path2": e.path2,
         "args": _json(e.args), "result": _json(e.result), "errno": e.errno, "duration_ns": e.duration_ns,
         "pid": e.pid, "uid": e.uid, "gid": e.gid, "comm": e.comm}
    if e.cmdline is not None:
        d["cmdline"] = e.cmdline
    if e.injected is not None:
        d["injected"] = e.injected
    if e.delay_ns is not None:
        d["delay_ns"] = e.delay_ns
    return d


def full_event(e: Event, line: bytes) -> Event:
    """The event with its args (skipped on the fast path) as raw JSON, from the line it was decoded from."""
    return _DECODE_FULL(line) if isinstance(e.args, _Object) else e


def decode_lines(lines: list[bytes], where: Callable[[int], str], last_open: bool
                 ) -> tuple[list[Event], Sequence[int]]:
    """The events of `lines` and the index of the line each came from; ReportError for a malformed one.

    `last_open`: the last line has no newline (the end of a file that was cut short, or is still written)."""
    try:
        fast: list[Event] = list(map(_DECODE, lines))
        return fast, range(len(fast))
    except _FAST_ERRORS:
        pass
    events: list[Event] = []
    index: list[int] = []
    last = len(lines) - 1
    for i, raw in enumerate(lines):
        e: Event
        try:
            e = _DECODE(raw)
        except _FAST_ERRORS:
            d = parse_line(raw, where(i), last_open and i == last)
            if d is None:
                continue
            e = _from_dict(d)
        events.append(e)
        index.append(i)
    return events, index


def line_starts(data: bytes | memoryview, last_open: bool) -> np.ndarray | None:
    """Where each line of `data` starts, and its end (len(data)) last; None unless every line starts with "{" and
    ends with "}", as the writer's lines do (only then can their events be decoded several lines at a time)."""
    if _compiled is not None:
        starts = _compiled.line_starts(data, last_open)
        return None if starts is None else np.frombuffer(starts, np.intp)
    return _numpy_line_starts(data, last_open)


def _numpy_line_starts(data: bytes | memoryview, last_open: bool) -> np.ndarray | None:
    """line_starts() with numpy (where the compiled one is not built)."""
    chars = np.frombuffer(data, np.uint8)
    if not len(chars):
        return np.zeros(1, dtype=np.intp)
    newlines = np.flatnonzero(chars == 10)
    ends = newlines - 1 if not last_open else np.append(newlines - 1, len(chars) - 1)
    starts = np.concatenate(([0], newlines + 1, [len(chars)])) if last_open else np.concatenate(([0], newlines + 1))
    if not (chars[starts[:-1]] == _OPEN).all() or not (chars[ends] == _CLOSE).all():
        return None
    return starts


def decode_several(lines: bytes | memoryview, count: int) -> list[Event] | None:
    """The events of `count` lines that line_starts() found each start with "{" and end with "}", decoded in one
    call (no object per line: about twice as fast as line by line); None unless each line is one well-formed event
    (then they go through decode_lines, which says which line is not and why)."""
    try:
        events = cast(list[Event], _DECODER.decode_lines(lines))
    except _FAST_ERRORS:
        return None
    # decode_lines reads whitespace-separated objects, blank lines skipped. No object goes on past a line's end here
    # (a JSON object never has "}" then "{" inside it) and no line is blank: every line holds one object or more, so
    # as many objects as lines means one on each.
    return events if len(events) == count else None


# --------------------------------------------------------------------------------------------- chunks

@dataclass
class Chunk:
    """Whole lines of one file: shipped as `data`, or (a plain regular file) the lines that start in the byte
    range [start, end), for the process tallying them to read itself.

    `index` numbers the chunks over all the files: a line's position in the trace is index << 24 | its number in
    the chunk (a chunk has fewer than 2**24 lines)."""

    file: int
    index: int
    data: bytes | None = None
    line: int = 0            # the number of the data's first line in its file
    last_open: bool = False  # the data ends with a line that has no newline (the file's end)
    start: int = 0
    end: int = 0


def _count_lines(path: str, offset: int) -> int:
    """Newlines in the file before `offset` (to name a malformed line of a range chunk)."""
    n = 0
    with open(path, "rb") as f:
        while offset > 0:
            block = f.read(min(CHUNK, offset))
            if not block:
                break
            n += block.count(b"\n")
            offset -= len(block)
    return n


def _read_range(path: str, start: int, end: int) -> tuple[memoryview, int, bool]:
    """The lines of the file that start in [start, end): (data, its offset, whether it ends without newline)."""
    with open(path, "rb") as f:
        fd = f.fileno()
        begin = max(start - 1, 0)
        # one read, with room to finish the last line (the rest is read only for a longer line); the lines are
        # a view of it, not a copy
        data = os.pread(fd, end - begin + _LINE_ROOM, begin)
        first = 0
        if start > 0:  # a line starts at start if the byte before it is a newline
            first = data.find(b"\n", 0, end - begin) + 1
            if not first:
                return memoryview(b""), end, False
        if first >= end - begin:  # the first line starts at `end` or later: the next range's
            return memoryview(b""), begin + first, False
        cut = data.find(b"\n", max(end - begin - 1, first)) + 1
        if cut:
            return memoryview(data)[first:cut], begin + first, False
        parts = [data[first:]]
        pos = begin + len(data)
        while True:  # a last line longer than _LINE_ROOM, or the end of the file
            more = os.pread(fd, 1 << 16, pos)
            if not more:
                return memoryview(b"".join(parts)), begin + first, True
            cut = more.find(b"\n") + 1
            parts.append(more[:cut] if cut else more)
            pos += len(parts[-1])
            if cut:
                return memoryview(b"".join(parts)), begin + first, False


class Lines:
    """A chunk's lines, split out of its data when first needed (decoding does not need them)."""

    def __init__(self, data: bytes | memoryview, last_open: bool) -> None:
        self._data: bytes | memoryview | None = data
        self._last_open = last_open
        self._lines: list[bytes] = []

    @property
    def lines(self) -> list[bytes]:
        if self._data is not None:
            self._lines = bytes(self._data).split(b"\n")
            if not self._last_open:
                self._lines.pop()  # the empty string after the last newline
            self._data = None
        return self._lines


@dataclass
class Slice:
    """Where a slice's events come from: event i is line index[i] of the chunk, whose first line is at `base`."""

    chunk: Lines
    index: Sequence[int]
    base: int

    def positions(self) -> Sequence[int]:
        index = self.index
        if isinstance(index, range):
            return range(index.start + self.base, index.stop + self.base)
        return [self.base + i for i in index]

    def event(self, events: list[Event], i: int) -> dict[str, Any]:
        """Event i as its full dict."""
        return as_dict(events[i], self.chunk.lines[self.index[i]])


def chunk_events(chunk: Chunk, files: list[str],
                 take_lines: Callable[[memoryview, np.ndarray, int, int], bool] | None = None
                 ) -> Iterator[tuple[list[Event], Slice]]:
    """The chunk's events a slice at a time, with where they come from; ReportError for a malformed line.

    take_lines(data, starts, first, last): offered each slice of lines that each start with "{" and end with "}"
    before it is decoded; when it returns True (it took them: Tally.add_lines), the slice is not decoded."""
    path = files[chunk.file]
    data: bytes | memoryview
    if chunk.data is None:
        data, offset, last_open = _read_range(path, chunk.start, chunk.end)
        first_line = None
    else:
        data, offset, last_open, first_line = chunk.data, 0, chunk.last_open, chunk.line
    lines = Lines(data, last_open)
    base = chunk.index << 24
    starts = line_starts(data, last_open)
    count = len(starts) - 1 if starts is not None else len(lines.lines)
    view = memoryview(data)
    for first in range(0, count, SLICE):
        last = min(first + SLICE, count)
        if starts is not None and take_lines is not None and take_lines(view, starts, first, last):
            continue
        # a slice at a time, decoded just before it is tallied: its objects are still in the CPU cache
        events = decode_several(view[starts[first]:starts[last]], last - first) if starts is not None else None
        if events is not None:
            yield events, Slice(lines, range(first, last), base)
            continue

        def where(i: int, first: int = first) -> str:
            number = (first_line if first_line is not None else _count_lines(path, offset) + 1) + first + i
            return f"{path}:{number}"

        events, index = decode_lines(lines.lines[first:last], where, last_open and last == count)
        yield events, Slice(lines, range(first + index.start, first + index.stop) if isinstance(index, range)
                            else [first + i for i in index], base)


def read_chunks(files: list[str], on_progress: Callable[[int], None] | None = None,
                on_truncated: Callable[[str, int, int], None] | None = None) -> Iterator[Chunk]:
    """The files in chunks of about CHUNK bytes, in order; ReportError for a file that cannot be read.

    A plain regular file is cut into byte ranges, read by whoever tallies them; anything else (compressed,
    a pipe) is read here and its lines shipped."""
    index = 0
    for number, path in enumerate(files):
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise ReportError(f"cannot read '{path}': {e.strerror}") from None
        with f:
            try:
                st = os.fstat(f.fileno())
                reader = TraceReader(f)
                if reader.codec is None and stat.S_ISREG(st.st_mode):
                    for start in range(0, st.st_size, CHUNK):
                        end = min(start + CHUNK, st.st_size)
                        yield Chunk(number, index, start=start, end=end)
                        index += 1
                        if on_progress is not None:
                            on_progress(end - start)
                    continue
                line = 1
                consumed = 0
                pending: list[bytes] = []
                size = 0
                for block in reader.blocks(CHUNK):
                    if on_progress is not None and reader.consumed != consumed:
                        on_progress(reader.consumed - consumed)
                        consumed = reader.consumed
                    pending.append(block)
                    size += len(block)
                    if size < CHUNK:
                        continue
                    data = b"".join(pending)
                    cut = data.rfind(b"\n") + 1
                    if not cut:
                        pending, size = [data], len(data)
                        continue
                    rest = data[cut:]
                    pending, size = ([rest], len(rest)) if rest else ([], 0)
                    yield Chunk(number, index, data[:cut], line)
                    index += 1
                    line += data.count(b"\n", 0, cut)
            except OSError as e:
                raise ReportError(f"cannot read '{path}': {e.strerror}") from None
            except CorruptTrace as e:
                raise ReportError(f"cannot read '{path}': {e}") from None
            data = b"".join(pending)
            if reader.truncated:
                # A compressed stream cut short: every whole line counts, a part of one cannot be read.
                cut = data.rfind(b"\n") + 1
                if on_truncated is not None:
                    on_truncated(path, line - 1 + data.count(b"\n", 0, cut), len(data) - cut)
                data = data[:cut]
            if data:
                yield Chunk(number, index, data, line, last_open=not data.endswith(b"\n"))
                index += 1



# --------------------------------------------------------------------------------------------- reading

def read_events(path: str) -> Iterator[dict[str, Any]]:
    """The events of one JSONL trace file (plain, .gz or .zst); ReportError names the file and line of anything
    unreadable."""
    for chunk in read_chunks([path]):
        for events, part in chunk_events(chunk, [path]):
            for i in range(len(events)):
                yield part.event(events, i)


