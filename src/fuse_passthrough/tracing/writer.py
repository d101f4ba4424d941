"""The trace writer process: decodes, formats, counts and writes what the daemon's ProcessSink sends it.

Decoding, counting and formatting an event cost about as much CPU as recording it (docs/benchmarks.md, 2026-12-06:
~0.65 µs against ~0.9, the lines, the timestamps and the tally in C, tracing/_jsonl.c). In the daemon that would
compete with the filesystem threads for the GIL on every operation; in a process of its own it runs on another
core. Input on stdin: frames of a 4-byte little-endian length and a marshal'ed list of raw event tuples; a frame
of length 0 asks for the summary so far (what the daemon sends on its own SIGUSR1: after every event before it). On
EOF everything is written, the summary is printed (unless --no-summary) and written as JSON (--summary-json), and
the process exits 0.
SIGUSR1 to the writer itself prints the summary so far, between frames.
"""

from __future__ import annotations

import argparse
import gc
import marshal
import signal
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .events import event_of
from .formats import encode_jsonl_batch, encode_text_batch, encoder
from .sinks import RotatingFile, StreamOutput
from .stats import Summary

_HEADER = struct.Struct("<I")


class FrameReader:
    """Reads the input's frames into one buffer, reused from frame to frame (a new `bytes` per frame, copied
    from the pieces read, cost the writer page faults and copies of every frame)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buf = bytearray(1 << 16)

    def read(self, n: int) -> memoryview | None:
        """The next `n` bytes, valid until the next call; None at the end of the input."""
        if len(self._buf) < n:
            self._buf = bytearray(n)  # a new one: a view of the old one may still be held
        view = memoryview(self._buf)[:n]
        got = 0
        while got < n:
            k = self._stream.readinto(view[got:])
            if not k:
                return None
            got += k
        return view


class SummaryRequests:
    """SIGUSR1's summary, printed at once while the writer waits for input, else when the frame at hand is done.

    Python runs the handler between any two bytecodes of the main thread: in the middle of a frame the summary
    is half-updated (an operation counted whose latency is not yet in its histogram) and a text trace to stderr
    half-written; in the middle of a summary, stderr is (a reentrant write raises). Requests that come while a
    summary is being printed are answered by it.
    """

    def __init__(self, render: Callable[[], None]) -> None:
        self._render = render
        self._busy = False
        self._rendering = False
        self._asked = False

    def handler(self, signum: int, frame: Any) -> None:
        if self._rendering:
            return
        if self._busy:
            self._asked = True
        else:
            self._answer()

    def now(self) -> None:
        """A request read from the input, between frames."""
        if not self._rendering:
            self._answer()

    def _answer(self) -> None:
        self._rendering = True
        try:
            self._render()
        finally:
            self._rendering = False

    @contextmanager
    def busy(self) -> Iterator[None]:
        self._busy = True
        try:
            yield
        finally:
            self._busy = False
            if self._asked:  # a request that came meanwhile (one that comes from here on is answered at once)
                self._asked = False
                self._answer()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fuse-passthrough-writer")
    p.add_argument("--format", default="text")
    p.add_argument("--output")
    p.add_argument("--max-bytes", type=int, default=0)
    p.add_argument("--backups", type=int, default=1)
    p.add_argument("--summary-json")
    p.add_argument("--no-summary", action="store_true")
    args = p.parse_args(argv)

    output: RotatingFile | StreamOutput
    if args.output:
        output = RotatingFile(args.output, args.max_bytes, args.backups)
    else:
        output = StreamOutput(sys.stderr.buffer)
    encode = encoder(args.format)
    jsonl = args.format == "jsonl"
    summary = Summary()
    requests = SummaryRequests(lambda: summary.render(sys.stderr))
    signal.signal(signal.SIGUSR1, requests.handler)
    # Stopping is the daemon's decision (it closes our input): a Ctrl-C for the foreground group, or a SIGTERM
    # for the session, must not cut the trace short.
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    sys.stdout.buffer.write(b"R")  # ready: the daemon may mount now
    sys.stdout.buffer.close()

    frames = FrameReader(sys.stdin.buffer)
    written = 0
    unencodable = 0

    def encode_item(item: tuple[Any, ...]) -> bytes:
        nonlocal unencodable
        try:
            event = event_of(item)
        except Exception as e:  # a result this version cannot describe: the event without it, never a stop
            if not unencodable:
                print(f"fuse-passthrough: trace writer: the result of {item[2]} event {item[0]} could not be "
                      f"encoded ({type(e).__name__}: {e}); written without it (said once)", file=sys.stderr)
            unencodable += 1
            event = event_of((*item[:4], None, *item[5:]))
        return encode(event)

    # The writer's only objects beyond its set-up are each frame's events, tuples freed by their reference counts
    # once the frame is written: nothing for the cycle collector, whose passes over them were ~7 % of its CPU.
    gc.freeze()
    gc.disable()
    while True:
        header = frames.read(_HEADER.size)
        if header is None:
            break
        size = _HEADER.unpack(header)[0]
        if not size:
            requests.now()
            continue
        body = frames.read(size)
        if body is None:
            break
        with requests.busy():
            items = marshal.loads(body)
            summary.add_batch(items)
            block, ends = (encode_jsonl_batch if jsonl else encode_text_batch)(items, encode_item)
            output.write_block(block, ends)
            written += len(ends)
            output.flush()
    # Python's exit puts SIGUSR1 back to its default action, which kills: a request during the daemon's unmount
    # must not turn a complete trace into a writer "killed by a signal" (the final summary, if any, answers it).
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    output.close()
    if not args.no_summary and written:
        summary.render(sys.stderr)
    if args.summary_json:
        try:
            summary.write_json(args.summary_json)
        except OSError as e:
            print(f"fuse-passthrough: cannot write --summary-json file '{args.summary_json}': {e.strerror}",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
