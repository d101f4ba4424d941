"""The writer: nothing lost, nothing above the rotation cap, flushed on close."""

import json
import marshal
import os
import struct
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuse_passthrough.tracing import RotatingFile, TraceSink
from fuse_passthrough.tracing.events import RawEvent


@pytest.fixture(params=["compiled", "python"])
def pending_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """ProcessSink's pending events as the C extension keeps them (EventBuffer), and as the Python fallback does."""
    from fuse_passthrough.tracing import sinks

    if request.param == "python":
        monkeypatch.setattr(sinks, "EventBuffer", None)
    else:
        assert sinks.EventBuffer is not None, "make builds the C extension"
    return str(request.param)


def ev(seq: int) -> RawEvent:
    return RawEvent(seq, 1.0, "getattr", (f"/file-{seq}", None), None, 2, 100, 1, 0, 0, "t", None)


def test_every_event_is_written_even_with_a_tiny_queue(tmp_path) -> None:
    out = RotatingFile(str(tmp_path / "t.jsonl"))
    sink = TraceSink(out, "jsonl", queue_size=8)  # producers must wait, never drop
    threads = [threading.Thread(target=lambda base=b: [sink.put(ev(base + i)) for i in range(5000)])
               for b in (0, 100_000, 200_000, 300_000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert len(lines) == 20_000 == sink.written == sink.summary.total_calls
    assert len({json.loads(line)["seq"] for line in lines}) == 20_000


def _write_rotating(path, max_bytes: int, backups: int, events: int) -> None:
    sink = TraceSink(RotatingFile(str(path), max_bytes=max_bytes, backups=backups), "text")
    for i in range(events):
        sink.put(ev(i))
    sink.close()


def test_rotation_keeps_every_file_under_the_cap(tmp_path) -> None:
    path = tmp_path / "t.log"
    _write_rotating(path, max_bytes=10_000, backups=3, events=3000)
    files = [path] + [tmp_path / f"t.log.{i}" for i in range(1, 4)]
    assert all(f.exists() for f in files)
    assert not (tmp_path / "t.log.4").exists()
    for f in files:
        assert 0 < os.path.getsize(f) <= 10_000
    # the newest events are kept, in order, ending with the last one
    newest = path.read_text().splitlines()
    assert newest[-1].startswith("getattr('/file-2999'")


def test_rotation_without_backups_restarts_the_file(tmp_path) -> None:
    path = tmp_path / "t.log"
    _write_rotating(path, max_bytes=5000, backups=0, events=1000)
    assert os.path.getsize(path) <= 5000 and not (tmp_path / "t.log.1").exists()


class Odd:
    """A value marshal cannot write (a custom filesystem's result)."""

    def __repr__(self) -> str:
        return "Odd()"


_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.binary(max_size=8)
            | st.text(max_size=8) | st.sampled_from(["\udc80name", "é", "x" * 255, "y" * 256, ""]) | st.just(Odd()))
_VALUES = st.recursive(_SCALARS, lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=3), inner, max_size=2), max_leaves=6)


@pytest.mark.parametrize("kind", ["compiled", "python"])
@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.lists(_VALUES, max_size=13).map(tuple), max_size=6))
def test_pending_events_leave_as_one_frame_the_writer_reads(events: list[tuple[Any, ...]], kind: str) -> None:
    """What the writer decodes is what was appended: every value marshal can write, unchanged; any other as
    _marshalable makes it (its repr), inside tuples item by item, and nothing else of the event changed."""
    from fuse_passthrough.tracing.sinks import EventBuffer, PendingEvents, _stand_in

    assert EventBuffer is not None, "make builds the C extension"
    pending = EventBuffer(_stand_in) if kind == "compiled" else PendingEvents()
    for raw in events:
        pending.append(raw)
    assert len(pending) == len(events)
    taken = pending.take()
    if not events:
        assert taken is None
        return
    assert taken is not None
    frame, count = taken
    assert count == len(events) and len(pending) == 0 and pending.take() is None
    (length,) = struct.unpack_from("<I", frame)
    assert length == len(frame) - 4
    assert marshal.loads(frame[4:]) == [tuple(map(_stand_in, raw)) for raw in events]


def test_an_event_buffer_refers_back_to_names_and_drops_a_failed_event_whole() -> None:
    """Op and process names repeat as back-references within a frame; an event that cannot be encoded (no
    stand-in given) raises, leaves nothing of itself, and the frame's later references still resolve."""
    from fuse_passthrough.tracing.sinks import EventBuffer

    assert EventBuffer is not None, "make builds the C extension"
    op, comm, other = "lookup", "cc1plus", "".join(["getat", "tr"])
    good = [(i, 0.5, op, (f"/f{i}",), None, 0, 10, 1, 0, 0, comm, None, None) for i in range(3)]
    pending = EventBuffer()
    pending.append(good[0])
    with pytest.raises(ValueError):
        pending.append((9, 0.5, other, ("/x",), None, 0, 10, 1, 0, 0, "new-name", None, Odd()))
    assert len(pending) == 1
    pending.append(good[1])
    again = [(n, 0.5, other, ("/y",), None, 0, 10, 1, 0, 0, comm, None, None) for n in (3, 4)]
    pending.append(again[0])
    pending.append(good[2])
    pending.append(again[1])  # "getattr" again: a reference to where the failed event did not leave it
    taken = pending.take()
    assert taken is not None
    frame, count = taken
    assert count == 5 and marshal.loads(frame[4:]) == [good[0], good[1], again[0], good[2], again[1]]
    assert frame.count(b"cc1plus") == 1 and frame.count(b"lookup") == 1  # the others are references
    pending.append(good[0])  # a new frame starts without references into the last one
    second = pending.take()
    assert second is not None and marshal.loads(second[0][4:]) == [good[0]]


def test_an_event_buffer_asks_for_stand_ins_with_nothing_of_the_event_written() -> None:
    """The stand-in function is Python code: another thread may take the GIL while it runs and append (or take)
    events. It must find the buffer whole: here it appends an event itself, which lands whole, before."""
    from fuse_passthrough.tracing.sinks import EventBuffer, _stand_in

    assert EventBuffer is not None, "make builds the C extension"
    other = (7, 0.5, "getattr", ("/other",), None, 0, 10, 1, 0, 0, "cc1", None, None)

    def stand_in(value: Any) -> Any:
        if isinstance(value, Odd) and len(pending) == 1:
            pending.append(other)  # as another thread would, meanwhile
        return _stand_in(value)

    pending = EventBuffer(stand_in)
    first = (1, 0.5, "lookup", ("/a",), None, 0, 10, 1, 0, 0, "cc1", None, None)
    pending.append(first)
    pending.append((2, 0.5, "getxattr", ("/odd", Odd(), 0), Odd(), 0, 10, 1, 0, 0, "cc1", None, None))
    taken = pending.take()
    assert taken is not None and taken[1] == 3
    assert marshal.loads(taken[0][4:]) == [first, other, (2, 0.5, "getxattr", ("/odd", "Odd()", 0), "Odd()", 0, 10,
                                                          1, 0, 0, "cc1", None, None)]


def test_process_sink_writes_everything_and_the_summary(tmp_path, pending_kind: str) -> None:
    from fuse_passthrough.tracing.sinks import ProcessSink

    out, summary = tmp_path / "t.jsonl", tmp_path / "s.json"
    sink = ProcessSink("jsonl", str(out), summary=False, summary_json=str(summary), batch=64, max_pending=100)
    threads = [threading.Thread(target=lambda base=b: [sink.put(tuple(ev(base + i))) for i in range(5000)])
               for b in (0, 100_000, 200_000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    lines = out.read_text().splitlines()
    assert len(lines) == 15_000 == sink.written and sink.lost == 0
    assert len({json.loads(line)["seq"] for line in lines}) == 15_000
    data = json.loads(summary.read_text())
    assert data["total_calls"] == 15_000 and data["ops"]["getattr"]["errors"] == 15_000


def test_the_writer_process_writes_a_value_marshal_cannot_as_its_repr(tmp_path, pending_kind: str) -> None:
    from fuse_passthrough.tracing.sinks import ProcessSink

    out = tmp_path / "t.jsonl"
    sink = ProcessSink("jsonl", str(out), summary=False, batch=2)
    odd = RawEvent(2, 1.0, "getxattr", ("/odd", Odd(), 0), Odd(), 0, 100, 1, 0, 0, "t", ["t", "-x"])
    for raw in (ev(1), odd, ev(3)):
        sink.put(tuple(raw))
    sink.close()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["seq"] for e in events] == [1, 2, 3] and sink.written == 3 and sink.lost == 0
    assert events[1]["path"] == "/odd" and events[1]["args"]["name"] == "Odd()"
    assert events[1]["result"] == {"size": "Odd()"}  # getxattr's result is the value's size


def test_the_writer_process_writes_an_event_it_cannot_describe_without_its_result(tmp_path) -> None:
    """A result the writer cannot encode (a getattr whose result is not attributes) costs that event its result,
    never the writer: every event before and after it is written."""
    from fuse_passthrough.tracing.sinks import ProcessSink

    out = tmp_path / "t.jsonl"
    sink = ProcessSink("jsonl", str(out), summary=False, batch=4)
    bad = RawEvent(2, 1.0, "getattr", ("/bad", None), 0, 0, 100, 1, 0, 0, "t", None)
    for raw in (ev(1), bad, ev(3), ev(4), ev(5)):
        sink.put(tuple(raw))
    sink.close()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5] and sink.lost == 0
    assert events[1]["path"] == "/bad" and events[1]["result"] is None and events[1]["errno"] is None


def test_process_sink_survives_a_dead_writer(tmp_path, capfd) -> None:
    from fuse_passthrough.tracing.sinks import ProcessSink

    sink = ProcessSink("text", str(tmp_path / "t.log"), batch=1)
    sink.proc.kill()
    sink.proc.wait()
    for i in range(10):
        sink.put(tuple(ev(i)))  # must not block or raise
    sink.close()
    assert sink.lost == 10 and "lost" in capfd.readouterr().err


def _policy(pid: int) -> int:
    return os.sched_getscheduler(pid)


def test_process_sink_writer_is_idle_class_until_it_falls_behind(tmp_path) -> None:
    """As root the writer runs SCHED_IDLE; a backlog puts it back to SCHED_OTHER (so busy unrelated processes
    cannot starve the trace and with it the filesystem), and it returns to SCHED_IDLE once caught up."""
    import signal
    import time

    from fuse_passthrough.tracing.sinks import ProcessSink

    assert os.geteuid() == 0, "the tests run as root"
    out = tmp_path / "t.jsonl"
    sink = ProcessSink("jsonl", str(out), summary=False, batch=256, boost_at=3000, max_pending=8000)
    try:
        assert _policy(sink.proc.pid) == os.SCHED_IDLE and sink.writer_idle
        sink.proc.send_signal(signal.SIGSTOP)  # a writer that gets no CPU: the pipe fills, events pile up
        putter = threading.Thread(target=lambda: [sink.put(tuple(ev(i))) for i in range(6000)])
        putter.start()
        deadline = time.monotonic() + 20
        while sink.writer_idle:
            assert time.monotonic() < deadline, "the writer was not boosted"
            time.sleep(0.01)
        assert _policy(sink.proc.pid) == os.SCHED_OTHER
        sink.proc.send_signal(signal.SIGCONT)
        putter.join()
        extra = 0
        while not sink.writer_idle:  # caught up: back to idle at the next small batch
            assert time.monotonic() < deadline, "the writer stayed boosted"
            sink.put(tuple(ev(99_999)))
            extra += 1
            time.sleep(0.05)
        assert _policy(sink.proc.pid) == os.SCHED_IDLE
    finally:
        sink.proc.send_signal(signal.SIGCONT)
        sink.close()
    assert len(out.read_text().splitlines()) == sink.written == 6000 + extra and sink.lost == 0


def test_process_sink_leaves_the_writer_alone_when_asked(tmp_path) -> None:
    from fuse_passthrough.tracing.sinks import ProcessSink

    sink = ProcessSink("jsonl", str(tmp_path / "t.jsonl"), summary=False, idle_writer=False)
    try:
        assert _policy(sink.proc.pid) == os.SCHED_OTHER and not sink.writer_idle
    finally:
        sink.close()


# --------------------------------------------------------------------------------------------- compressed output

def _decompress(path) -> bytes:
    """One complete compressed file, decompressed by the codec's own library (an end marker is required)."""
    import gzip

    import zstandard

    data = path.read_bytes()
    if path.name.split(".jsonl")[1].startswith(".gz"):
        return gzip.decompress(data)
    d = zstandard.ZstdDecompressor().decompressobj()
    out = d.decompress(data)
    assert d.eof and not d.unused_data, f"{path} is not one complete zstd frame"
    return out


def _rotated_in_order(directory, name: str) -> list:
    files = [p for p in directory.iterdir() if p.name.startswith(name)]
    return sorted(files, key=lambda p: -int(p.name.rsplit(".", 1)[1]) if p.name.rsplit(".", 1)[1].isdigit() else 0)


@pytest.mark.parametrize("suffix", [".zst", ".gz"])
def test_compressed_rotation_gives_complete_files_under_the_cap(tmp_path, suffix: str) -> None:
    name = f"t.jsonl{suffix}"
    sink = TraceSink(RotatingFile(str(tmp_path / name), max_bytes=8_000, backups=1000), "jsonl", queue_size=64)
    for i in range(6000):
        sink.put(ev(i))
    sink.close()
    files = _rotated_in_order(tmp_path, name)
    assert len(files) > 3
    lines = []
    for f in files:
        assert 0 < f.stat().st_size <= 8_000, f
        lines += _decompress(f).splitlines()  # each file decompresses on its own
    assert [json.loads(line)["seq"] for line in lines] == list(range(6000))  # together: every event, in order
    assert sum(f.stat().st_size for f in files) * 3 < sum(map(len, lines))  # and it did compress


@pytest.mark.parametrize("suffix", [".zst", ".gz"])
def test_compressed_output_is_readable_while_written(tmp_path, suffix: str) -> None:
    """Every write_lines (write_block) ends in a flushed block: a reader sees all lines so far, before the file is closed."""
    from fuse_passthrough.tracing.compression import TraceReader

    path = tmp_path / f"t.jsonl{suffix}"
    out = RotatingFile(str(path))
    for batch in range(3):
        out.write_lines([f'{{"n":{batch * 10 + i}}}\n'.encode() for i in range(10)])
        out.flush()
        with open(path, "rb") as f:
            reader = TraceReader(f)
            data = b"".join(reader.blocks())
        assert reader.truncated  # no end marker yet
        assert [json.loads(line)["n"] for line in data.splitlines()] == list(range(batch * 10 + 10))
    out.close()
    assert [json.loads(line)["n"] for line in _decompress(path).splitlines()] == list(range(30))


@given(st.lists(st.lists(st.integers(1, 120), max_size=30), max_size=12), st.integers(20, 400))
@settings(max_examples=60, deadline=None)
def test_rotation_splits_batches_only_between_lines(tmp_path_factory, batches: list, max_bytes: int) -> None:
    """Whatever the batches and line lengths: every line whole in one file, in order, nothing lost (enough
    backups), and no file above the cap unless it holds one line longer than the cap alone."""
    d = tmp_path_factory.mktemp("rot")
    out = RotatingFile(str(d / "t.log"), max_bytes=max_bytes, backups=10_000)
    n = 0
    for batch in batches:
        lines = []
        for length in batch:
            lines.append(f"{n:06d}".encode().ljust(length, b"x")[:max(length, 6)] + b"\n")
            n += 1
        out.write_lines(lines)
    out.close()
    files = _rotated_in_order(d, "t.log")
    got = []
    for f in files:
        data = f.read_bytes()
        file_lines = data.splitlines(keepends=True)
        assert len(data) <= max_bytes or len(file_lines) == 1, (f.name, len(data))
        got += file_lines
    assert [int(line[:6]) for line in got] == list(range(n))


# --------------------------------------------------------------------------------------------- when events are sent

def _line_count(path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def _eventually(cond: Any, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_process_sink_sends_events_once_they_pause(tmp_path, pending_kind: str) -> None:
    """A few events, then nothing: they reach the file within a few looks, though neither the batch size nor the
    longest wait is anywhere near (an interactive user sees their events at once)."""
    from fuse_passthrough.tracing.sinks import ProcessSink

    out = tmp_path / "t.jsonl"
    sink = ProcessSink("jsonl", str(out), summary=False, batch=10**6, max_delay=3600)
    try:
        for i in range(5):
            sink.put(tuple(ev(i)))
        assert _eventually(lambda: _line_count(out) == 5), "paused events were not sent"
    finally:
        sink.close()
    assert _line_count(out) == 5


def test_process_sink_gathers_a_steady_stream(tmp_path, pending_kind: str) -> None:
    """Events that keep coming go to the writer together, once per `max_delay` (each wake-up of a busy writer
    costs the filesystem's client far more than the writer's CPU), yet they do go while the stream lasts."""
    import time

    from fuse_passthrough.tracing.sinks import ProcessSink

    out = tmp_path / "t.jsonl"
    sink = ProcessSink("jsonl", str(out), summary=False, batch=10**6, max_delay=0.5)
    counts = []
    try:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 2.0:
            sink.put(tuple(ev(i)))
            i += 1
            counts.append(_line_count(out))
            time.sleep(0.002)  # steady: an event in every 20 ms look
    finally:
        sink.close()
    assert _line_count(out) == i == sink.written
    steps = sorted(set(counts))
    # Sent every 20 ms, the file would have grown ~100 times; every 0.5 s, 3 or 4 times (a few more where this
    # process is held up for a look's length: a pause, for the flusher).
    assert 2 <= len(steps) - 1 <= 10, (len(steps), steps)


def test_a_summary_request_counts_every_event_put_before_it(tmp_path, capfd, pending_kind: str) -> None:
    """The summary asked for (the daemon's SIGUSR1) counts every event put before the request, even events the
    flusher had not sent yet."""
    from fuse_passthrough.tracing.sinks import ProcessSink

    out = tmp_path / "t.jsonl"
    sink = ProcessSink("jsonl", str(out), summary=False, batch=10**6, max_delay=3600)
    err = ""
    try:
        for i in range(123):
            sink.put(tuple(ev(i)))
        sink.request_summary()

        def printed() -> bool:
            nonlocal err
            err += capfd.readouterr().err
            return err.endswith(" total\n")

        assert _eventually(printed), err
    finally:
        sink.close()
    total = [line.split() for line in err.splitlines() if line.endswith(" total")]
    assert len(total) == 1 and total[0][2] == "123", err
