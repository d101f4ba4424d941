"""The trace writer process: SIGUSR1 prints the summary so far, whenever it comes, and never stops the writer."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fuse_passthrough.tracing.events import RawEvent
from fuse_passthrough.tracing.writer import FrameReader, SummaryRequests


def test_a_request_during_a_frame_is_answered_once_the_frame_is_done() -> None:
    printed: list[str] = []
    requests = SummaryRequests(lambda: printed.append("summary"))
    with requests.busy():
        requests.handler(signal.SIGUSR1, None)
        requests.handler(signal.SIGUSR1, None)
        assert printed == []  # the summary may be half-updated here
    assert printed == ["summary"]  # both requests, answered by one summary
    requests.handler(signal.SIGUSR1, None)
    assert printed == ["summary", "summary"]  # between frames: at once


def test_a_request_during_a_summary_is_answered_by_it() -> None:
    printed: list[str] = []

    def render() -> None:
        printed.append("start")
        requests.handler(signal.SIGUSR1, None)  # a signal mid-print: no second, nested summary
        printed.append("end")

    requests = SummaryRequests(render)
    requests.handler(signal.SIGUSR1, None)
    with requests.busy():
        pass
    assert printed == ["start", "end"]


ASK = """
import os, signal, sys, time
while True:
    os.kill(int(sys.argv[1]), signal.SIGUSR1)
    time.sleep(0.0005)
"""


@pytest.mark.parametrize("fmt", ["jsonl", "text"])
def test_summary_requests_while_events_stream_in(tmp_path: Path, capfd: pytest.CaptureFixture[str], fmt: str) -> None:
    """A request every half millisecond while frames arrive (many operations, each new to the summary for a
    while), the trace in a file (JSONL) or on the same stderr as the summaries (text): every event written, the
    writer's exit status 0, summaries printed."""
    from fuse_passthrough.tracing.sinks import ProcessSink

    out = tmp_path / "t.jsonl"
    sink = ProcessSink(fmt, str(out) if fmt == "jsonl" else None, batch=64, idle_writer=False)
    # From a process of its own: a thread of ours would send them only as often as it gets the GIL.
    asker = subprocess.Popen([sys.executable, "-c", ASK, str(sink.proc.pid)])
    n = 200_000 if fmt == "jsonl" else 50_000
    try:
        for i in range(n):
            sink.put(tuple(RawEvent(i, 1.0, f"op{i % 500}", (f"/f{i}",), None, 2, 100 + i, 1, 0, 0, "t", None)))
    finally:
        asker.kill()
        asker.wait()
    status = sink.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[err.find("Traceback"):][:3000]
    assert status == 0 and sink.lost == 0 and sink.written == n
    trace = out.read_text() if fmt == "jsonl" else err
    if fmt == "jsonl":
        assert len(trace.splitlines()) == n
    else:
        assert sum(1 for line in trace.splitlines() if re.match(r"op\d+\(\) -> ", line)) == n
    assert err.count(" total\n") >= 2  # the requests' summaries, and the final one


def test_a_request_while_the_writer_exits_does_not_kill_it(tmp_path: Path) -> None:
    """Python's exit puts signal handlers back to their default action: a SIGUSR1 then would end the writer as
    killed by a signal after it wrote everything, and the daemon would report a failed trace."""
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-m", "fuse_passthrough.tracing.writer", "--format", "jsonl",
                                 "--output", str(tmp_path / "t.jsonl")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.read(1) == b"R"
        proc.stdout.close()
        proc.stdin.close()  # EOF: the writer finishes and exits, under a stream of requests
        while proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGUSR1)
            except ProcessLookupError:
                break
        assert proc.wait() == 0


class Trickle:
    """A stream that gives at most `step` bytes per read, as a pipe may."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.at = data, step, 0

    def readinto(self, view: memoryview) -> int:
        n = min(len(view), self.step, len(self.data) - self.at)
        view[:n] = self.data[self.at:self.at + n]
        self.at += n
        return n


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_frames_are_read_whole_from_pieces_and_a_cut_one_is_the_end(step: int) -> None:
    big = bytes(range(256)) * 1024  # larger than the first buffer: a new one, while the last view is still held
    stream = Trickle(b"abc" + big + b"xy", step)
    frames = FrameReader(stream)
    first = frames.read(3)
    assert first is not None and bytes(first) == b"abc"
    second = frames.read(len(big))
    assert second is not None and bytes(second) == big
    assert bytes(first) == b"abc"  # the view of the smaller buffer still shows its frame
    assert frames.read(3) is None  # two bytes left: the input ended inside a frame


def test_the_writer_process_does_not_load_the_daemon() -> None:
    """The daemon waits for the writer before it mounts: the writer imports what it formats with, not the
    tracing layer, the node table or libfuse, while the package's names stay importable from it."""
    code = ("import sys, fuse_passthrough.tracing.writer\n"
            "print(sorted(m for m in sys.modules if m.startswith('fuse_passthrough')))\n"
            "from fuse_passthrough.tracing import TracingLayer, TraceSink, to_event, stats\n"
            "print(TracingLayer.__module__, TraceSink.__module__, to_event.__module__, stats.__name__)\n"
            "try:\n"
            "    from fuse_passthrough.tracing import nothing_of_that_name\n"
            "except ImportError:\n"
            "    print('refused')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded, names, refused = out.splitlines()
    for heavy in ("fuse_passthrough.tracing.layer", "fuse_passthrough.inode_ops", "fuse_passthrough.inodes",
                  "fuse_passthrough.lowlevel.binding", "fuse_passthrough.chain"):
        assert f"'{heavy}'" not in loaded
    assert "'fuse_passthrough.tracing.formats'" in loaded
    assert names == ("fuse_passthrough.tracing.layer fuse_passthrough.tracing.sinks fuse_passthrough.tracing.events "
                     "fuse_passthrough.tracing.stats")
    assert refused == "refused"
