"""`report` input: plain, .gz and .zst alike, cut-short compressed files, worker processes, bounded memory,
the progress bar."""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import pty
import random
import select
import struct
import subprocess
import sys
import termios
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import reference_report
from test_report import EVENTS, ev, write_trace

from fuse_passthrough import report as report_mod
from fuse_passthrough.report import build, reading, run_report, scan, tally
from fuse_passthrough.report.findings import Thresholds, find
from fuse_passthrough.tracing.compression import Compressor

SAMPLE = Path(__file__).parent.parent / "data" / "report-sample.jsonl"


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events).encode()


def write_as(path: Path, data: bytes) -> Path:
    """`data` in the file, compressed as its name says, each by a different writer than the mount's."""
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    elif path.name.endswith(".zst"):
        path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    else:
        path.write_bytes(data)
    return path


def streamed(codec: str, data: bytes, lines_per_block: int = 7) -> bytes:
    """`data` compressed the way the trace writer does: a flushed block per batch of lines, then the end."""
    c = Compressor(codec)
    lines = data.splitlines(keepends=True)
    out = [c.compress(b"".join(lines[i:i + lines_per_block])) for i in range(0, len(lines), lines_per_block)]
    return b"".join(out) + c.finish()


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = run_report(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def body(text: str) -> str:
    """The report without its first line (which names the files)."""
    return text.split("\n", 1)[1]


def many_events(n: int, seed: int = 3, paths: int = 400) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = f"/d{rng.randrange(20)}/f{int(rng.paretovariate(1.0)) % paths}"
        pid = 100 + int(rng.paretovariate(1.5)) % 50
        failed = rng.random() < 0.1
        out.append(ev(i + 1, i * 1e-5, rng.choice(["getattr", "read", "write", "open"]), p, pid, f"c{pid % 7}",
                      int(rng.lognormvariate(9, 1.2)), None if failed else rng.choice([0, 4096, {"fh": 3}]),
                      "ENOENT" if failed else None, fh=rng.randrange(10)))
    return out


# --------------------------------------------------------------------------------------------- formats

@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_compressed_input_gives_the_plain_report(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 suffix: str) -> None:
    data = SAMPLE.read_bytes()
    plain = write_as(tmp_path / "t.jsonl", data)
    rc, expected, err = run([str(plain), "--top", "20"], capsys)
    assert (rc, err) == (0, "")
    for compressed in (write_as(tmp_path / f"a.jsonl{suffix}", data),
                       tmp_path / f"b.jsonl{suffix}.1"):  # a rotated name: the codec comes from the content
        if not compressed.exists():
            compressed.write_bytes(streamed("gzip" if suffix == ".gz" else "zstd", data))
        rc, out, err = run([str(compressed), "--top", "20"], capsys)
        assert (rc, err) == (0, "")
        assert out.startswith(f"trace: {compressed}\n")
        assert body(out) == body(expected)


def test_several_files_of_mixed_formats_are_one_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = json.loads("[" + ",".join(SAMPLE.read_text().splitlines()) + "]")
    whole = write_as(tmp_path / "all.jsonl", jsonl(events))
    parts = [write_as(tmp_path / "t.jsonl.2.gz", jsonl(events[:50])),
             write_as(tmp_path / "t.jsonl.1", jsonl(events[50:120])),
             write_as(tmp_path / "t.jsonl.zst", jsonl(events[120:]))]
    rc, expected, _ = run([str(whole), "--top", "50"], capsys)
    rc2, out, err = run([*map(str, parts), "--top", "50"], capsys)
    assert (rc, rc2, err) == (0, 0, "")
    assert body(out) == body(expected)


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_cut_short_compressed_file_reads_whole_lines_and_warns_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], codec: str) -> None:
    events = many_events(3000)
    data = jsonl(events)
    full = streamed(codec, data)
    cut = tmp_path / f"t.jsonl.{'zst' if codec == 'zstd' else 'gz'}"
    cut.write_bytes(full[: len(full) * 2 // 3])  # as a killed writer leaves it, or worse: mid-block
    # What a decompressor recovers from the cut file, independently of the report: its whole lines count.
    d = zstandard.ZstdDecompressor().decompressobj() if codec == "zstd" else zlib.decompressobj(31)
    recovered = d.decompress(cut.read_bytes())
    whole = recovered[: recovered.rfind(b"\n") + 1].splitlines()
    assert 0 < len(whole) < len(events)
    rc, out, err = run([str(cut), str(write_as(tmp_path / "more.jsonl", jsonl(EVENTS)))], capsys)
    assert rc == 0
    assert err.count("\n") == 1 and err.startswith(f"fuse-passthrough report: warning: '{cut}' ends before")
    assert f"read its {len(whole)} whole lines" in err
    assert f"\n{len(whole) + len(EVENTS)} operations, " in out
    report, _ = build([str(cut)])
    assert report.events == len(whole)
    assert report.summary.total_calls == len(whole)


def test_truncated_at_a_block_boundary_loses_nothing_written(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A writer killed between batches: every event of every flushed block is there."""
    events = many_events(500)
    c = Compressor("zstd")
    f = tmp_path / "live.jsonl.zst"
    f.write_bytes(c.compress(jsonl(events[:300])) + c.compress(jsonl(events[300:])))  # no end of frame
    rc, out, err = run([str(f)], capsys)
    assert rc == 0 and "read its 500 whole lines" in err and "skipped" not in err
    assert "\n500 operations, " in out


def test_corrupt_compressed_data_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(zstandard.ZstdCompressor().compress(jsonl(many_events(2000))))
    data[len(data) // 2: len(data) // 2 + 40] = bytes(40)
    f = tmp_path / "t.jsonl.zst"
    f.write_bytes(bytes(data))
    rc, out, err = run([str(f)], capsys)
    assert rc == 1 and out == ""
    assert err.startswith(f"fuse-passthrough report: cannot read '{f}': corrupt zstd data") and err.count("\n") == 1


# --------------------------------------------------------------------------------------------- workers

@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of a few KiB, slices of 7 lines: a small trace spans many (the workers inherit this: fork)."""
    monkeypatch.setattr(reading, "CHUNK", 8 << 10)
    monkeypatch.setattr(reading, "SLICE", 7)
    monkeypatch.setattr(tally.evidence, "BATCH", 50)  # the findings' evidence: many batches


@pytest.mark.parametrize("suffix", ["", ".zst"])
def test_workers_give_the_same_report(tmp_path: Path, small_chunks: None, suffix: str, columns: str) -> None:
    events = many_events(4000)
    f = write_as(tmp_path / f"t.jsonl{suffix}", jsonl(events))
    serial, first = build([str(f)], keep_events=True, sample=True, limit=100, jobs=1)
    parallel, first2 = build([str(f)], keep_events=True, sample=True, limit=100, jobs=3)
    assert parallel.as_dict(top=1000) == serial.as_dict(top=1000)
    assert parallel.events == len(events) and parallel.summary.as_dict() == serial.summary.as_dict()
    assert parallel.sample == serial.sample
    assert first == first2 == events[:100]


def test_latency_buckets_are_the_summarys_at_every_edge() -> None:
    """The tally finds a latency's bucket by searching a table of edges; the summary computes int(log2(ns)*16)."""
    import numpy as np

    from fuse_passthrough.tracing.stats import _bucket
    near = sorted({max(0, e + k) for e in tally._EDGES.tolist() for k in (-1, 0, 1)} | {0, 1, 2**63 - 1})
    got = np.searchsorted(tally._EDGES, np.array(near, dtype=np.int64), side="right").tolist()
    assert got == [_bucket(ns) for ns in near]


def odd_events(n: int, seed: int, huge: bool = False) -> list[dict[str, Any]]:
    """Events with what the tally must get right: latencies at bucket edges (0, 1, 2, 2**k +- 1), results of
    reads and writes that are counts (some beyond int64), true, false, floats, objects or failures, injections, the kernel's pid 0, no path, and
    (huge) durations whose sums leave int64."""
    rng = random.Random(seed)
    durations = [0, 1, 2, 3, 2**20 - 1, 2**20, 2**20 + 1, 1_000_003, 2**53 + 1]
    if huge:
        durations += [2**62 + 7, 2**63 + 11, 10**20]
    out = []
    for i in range(n):
        op = rng.choice(["read", "write", "copy_file_range", "getattr", "open", "release"])
        failed = rng.random() < 0.2
        pid = rng.choice([0, 7, 8, 9])
        e = ev(i + 1, rng.random(), op, rng.choice([None, "/a", "/b/c", "/d\udcff", "/é"]), pid, rng.choice(["x", "y"]),
               rng.choice(durations) if rng.random() < 0.5 else int(rng.lognormvariate(9, 3)),
               None if failed else rng.choice([0, 1, 4096, True, {"fh": 3}, [1, 2]]) if rng.random() < 0.97
               else rng.choice([-3, 2**63 - 1, -2**63, 2**70, 1.5, False]),
               rng.choice(["EIO", "ENOENT"]) if failed else None)
        if rng.random() < 0.1:
            e["injected"] = "EIO"
        out.append(e)
    return out


@pytest.fixture(params=["compiled", "python"])
def columns(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Tally with the compiled columns (_columns.c), then with their Python twin (the workers inherit it: fork)."""
    if request.param == "python":
        monkeypatch.setattr(reading, "_compiled", None)
    return str(request.param)


def test_the_compiled_columns_are_built() -> None:
    """make test (and make run) install a C compiler and Python's headers: the build must not have skipped it."""
    assert reading._compiled is not None


@pytest.mark.parametrize("huge", [False, True])
def test_compiled_columns_equal_the_python_ones(huge: bool) -> None:
    """Slice by slice, the same numbers for the same names, the same columns; a slice the compiled code cannot
    take (a duration beyond int64) handed back whole, nothing numbered."""
    import numpy as np
    events = odd_events(3000, seed=12, huge=huge) + evidence_events(2000, seed=12)
    for e in events[::7]:
        e["pid"] = random.Random(e["seq"]).choice([2**63 + 5, -1, 1 << 22])  # beyond what an array could index
    lines = jsonl(events).splitlines()
    compiled, python = tally.Tally(), tally.Tally()
    handed_back = 0
    for first in range(0, len(lines), 50):
        events_, _ = reading.decode_lines(lines[first:first + 50], str, False)
        if huge and first == 0:  # the reference path's events too (another struct type, its own field values)
            events_ = [reading._from_dict(reading.check_event(json.loads(raw))) for raw in lines[:50]]
        got = compiled._columns(events_)
        want = python._python_columns(events_)
        if any(e.duration_ns >= 2**63 for e in events_):
            assert isinstance(got.duration, list)  # from _python_columns
            handed_back += 1
        for name in ("op", "path", "proc", "ts", "kind", "seq", "size", "offset", "fh", "result", "counted"):
            assert np.array_equal(getattr(got, name), getattr(want, name)), name
        assert got.durations() == want.durations() and got.errnos == want.errnos and got.odd == want.odd
        assert got.rare == want.rare and got.slow == want.slow
        for name in ("failed", "injected"):
            a, b = getattr(got, name), getattr(want, name)
            assert (a is None and b is None) or np.array_equal(a, b), name
        for table in ("ops", "paths", "procs"):
            mine, theirs = getattr(compiled, table), getattr(python, table)
            mine, theirs = (mine, theirs) if table == "ops" else (mine.names, theirs.names)
            assert mine.names == theirs.names and mine.number == theirs.number, table
    assert (handed_back > 0) == huge
    assert compiled.op_kind == python.op_kind


@pytest.mark.parametrize("huge", [False, True])
def test_the_tally_equals_the_event_by_event_report(tmp_path: Path, small_chunks: None, huge: bool,
                                                    columns: str) -> None:
    events = odd_events(3000, seed=11, huge=huge)
    f = write_as(tmp_path / "t.jsonl", jsonl(events))
    expected = reference_report(events)
    for jobs in (1, 3):
        got, _ = build([str(f)], jobs=jobs)
        assert got.events == expected.events == len(events)
        assert (got.first_ts, got.last_end) == (expected.first_ts, expected.last_end)
        assert got.as_dict(top=10**6) == expected.as_dict(top=10**6)
        assert {op: vars(s) for op, s in got.summary.ops.items()} == \
            {op: vars(s) for op, s in expected.summary.ops.items()}


def evidence_events(n: int, seed: int) -> list[dict[str, Any]]:
    """Events of every kind the findings look at: reads and writes in and out of sequence (tiny and not, through
    several file handles and processes), opens, creates, syncs, listings, files created then deleted or renamed,
    ENOENT failures, injected faults, odd results and arguments."""
    rng = random.Random(seed)
    out = []
    offsets: dict[tuple[str, int], int] = {}
    for i in range(n):
        path = rng.choice(["/a", "/b/c", "/d\udcff", "/tmp/x", "/tmp/y", None])
        pid = rng.choice([0, 7, 8, 2**70])
        op = rng.choice(["read", "read", "write", "write", "open", "create", "fsync", "fdatasync", "opendir",
                         "mknod", "unlink", "rename", "getattr", "release"])
        fh = rng.choice([1, 2, None])
        args: dict[str, Any] = {}
        result: Any = 0
        if op in ("read", "write"):
            size = rng.choice([1, 100, 1023, 1024, 4096, 65536, "x"])
            at = offsets.get((str(path), pid), 0) if rng.random() < 0.7 else rng.randrange(10**6)
            args = {"size": size, "offset": rng.choice([at, at, at, None, "7"]), "fh": fh}
            result = rng.choice([size if isinstance(size, int) else 5, 0, 17, True, None, {"x": 1}])
            offsets[(str(path), pid)] = at + (result if type(result) is int else 0)
        failed = rng.random() < 0.15
        e = ev(i + 1 if rng.random() < 0.97 else None, i * 1e-4, op, path, pid, rng.choice(["x", "y"]),
               int(rng.lognormvariate(9, 2)), None if failed else result,
               rng.choice(["ENOENT", "ENOENT", "EIO"]) if failed else None)
        e["args"] = args
        if op == "rename":
            e["path2"] = rng.choice(["/doc", "/tmp/z", None])
        if rng.random() < 0.03:
            e["injected"] = "EIO"
        out.append(e)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_the_tallys_evidence_equals_the_event_by_event_one(tmp_path: Path, small_chunks: None, columns: str,
                                                           seed: int) -> None:
    """The findings' evidence gathered with numpy, a batch at a time, equals the reference's, event by event (with
    one reading process; with several, only what docs/report.md says may differ)."""
    from fuse_passthrough.report.findings import Thresholds, find
    events = evidence_events(4000, seed)
    f = write_as(tmp_path / "t.jsonl", jsonl(events))
    expected = reference_report(events)
    got, _ = build([str(f)], jobs=1)
    want, have = expected.evidence, got.evidence
    for name in ("io", "missing", "seqs", "temporary", "saves", "slowest", "faults"):
        assert getattr(have, name) == getattr(want, name), name
    assert {k: dict(c) for k, c in have.io_procs.items()} == {k: dict(c) for k, c in want.io_procs.items()}
    th = Thresholds(reopen_min=2, tiny_io_min=5, random_min=5, relist_min=2)
    assert [x.as_dict() for x in find(got, th)] == [x.as_dict() for x in find(expected, th)]
    several, _ = build([str(f)], jobs=3)
    exact = ("READS_N", "READ_BYTES", "WRITES_N", "WRITTEN", "TINY", "TINY_BYTES", "IO_NS", "OPENS_N", "OPEN_NS",
             "SYNCS_N", "SYNC_NS", "LISTS_N", "LIST_NS", "TINY_NS", "EXTENT")
    from fuse_passthrough.report import evidence as ec
    for name in exact:
        row = getattr(ec, name)
        assert {p: r[row] for p, r in several.evidence.io.items()} == {p: r[row] for p, r in want.io.items()}, name
    assert several.evidence.missing == want.missing and several.evidence.seqs.keys() >= {
        k for k in want.seqs if k[0] not in ("temporary", "save")}


def test_processes_are_told_apart_by_pid_and_name(tmp_path: Path, small_chunks: None, columns: str) -> None:
    """A process is a (pid, comm): a pid under another name (after exec, within a slice too) is another process;
    pids of any size (negative, Linux's limit and beyond, beyond int64) are counted all the same."""
    rng = random.Random(5)
    odd = [-5, (1 << 22) - 1, 1 << 22, 2**63 + 1, 2**70]
    events = []
    for i in range(3000):
        pid = rng.choice(odd) if rng.random() < 0.05 else rng.choice([1, 2, 7, 4000])
        comm = rng.choice(["sh", "python3", None]) if rng.random() < 0.3 else "sh"
        events.append(ev(i + 1, i * 1e-5, "getattr", f"/f{i % 13}", pid, comm, 1000 + i))
    f = write_as(tmp_path / "t.jsonl", jsonl(events))
    expected = reference_report(events)
    assert len(expected.processes) > 20
    for jobs in (1, 3):
        got, _ = build([str(f)], jobs=jobs)
        assert got.as_dict(top=10**6) == expected.as_dict(top=10**6)


def test_busy_processes_stay_exact_when_others_are_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           columns: str) -> None:
    """Dropping processes renumbers the rest: those seen again afterwards are still counted as themselves."""
    monkeypatch.setattr(tally, "TABLE_CAP", 40)
    events = []
    for i in range(3000):  # 5 busy processes (every 3rd event), which exec halfway; 2000 others, once each
        name = "busy" if i < 1500 else "execd"
        pid, comm = (10 + i % 5, name) if i % 3 == 0 else (1000 + i, "once")
        events.append(ev(i + 1, i * 1e-5, "getattr", "/p", pid, comm, 100))
    f = write_as(tmp_path / "t.jsonl", jsonl(events))
    busy = sorted(f"{n}[{10 + k}]" for n in ("busy", "execd") for k in range(5))
    # Which chunks a worker tallies depends on timing (one that finishes its region takes chunks from the back of
    # another's), and pruning is per worker: a worker that sees a busy process once, in a chunk it took from
    # another region, may drop it like any process seen once. So the exact check runs each worker on its own
    # region only (a fixed schedule), and with one job; the timing-dependent schedule must still count every call
    # once, kept or dropped.
    def own_region_only(self: scan._Regions, worker: int) -> Any:
        own = self.regions[worker]
        if own[0] < own[1]:
            own[0] += 1
            return self.chunk(own[0] - 1)
        return None

    for jobs, chunk, fixed in ((3, 8 << 10, True), (1, reading.CHUNK, True), (3, 8 << 10, False)):
        monkeypatch.setattr(reading, "CHUNK", chunk)
        with monkeypatch.context() as m:
            if fixed:
                m.setattr(scan._Regions, "next", own_region_only)
            report, _ = build([str(f)], jobs=jobs)
        assert report.dropped["processes"][1] > 0
        top = report.top_processes("calls", 10)
        assert sorted(name for name, _ in top) == busy
        if fixed:
            assert [g.calls for _, g in top] == [100] * 10
        else:
            kept = sum(g.calls for _, g in report.top_processes("calls", 10**6))
            assert kept + report.dropped["processes"][0] == len(events)
            assert all(g.calls <= 100 for _, g in top)


def line_by_line(path: Path, data: bytes) -> list[dict[str, Any]] | str:
    """The events of a trace read the reference way, one line at a time (json.loads + check_event), or the
    message naming its first malformed line."""
    lines = data.split(b"\n")
    last_open = lines[-1] != b""
    if not last_open:
        lines.pop()
    out = []
    for number, raw in enumerate(lines, 1):
        try:
            d = reading.parse_line(raw, f"{path}:{number}", last_open and number == len(lines))
        except reading.ReportError as e:
            return str(e)
        if d is not None:
            out.append(reading.as_dict(reading._from_dict(d)))
    return out


def read_all(path: Path) -> list[dict[str, Any]] | str:
    try:
        return list(report_mod.read_events(str(path)))
    except reading.ReportError as e:
        return str(e)


# How a line may be laid out; only the first two are one event on a line as the writer makes it, the others must
# read exactly as the line-by-line reference reads them (an event, nothing, or the same error).
LAYOUTS = ["compact", "spaced", "blank", "spaces", "two", "two_spaced", "indented", "crlf", "leading", "trailing",
           "bad_type", "cut", "garbage_after"]


def laid_out(e: dict[str, Any], e2: dict[str, Any], layout: str) -> bytes:
    compact = json.dumps(e, separators=(",", ":"))
    text = {
        "compact": compact, "spaced": json.dumps(e), "blank": "", "spaces": " \t ",
        "two": compact + json.dumps(e2, separators=(",", ":")), "two_spaced": compact + " " + json.dumps(e2),
        "indented": json.dumps(e, indent=1), "crlf": compact + "\r", "leading": " " + compact,
        "trailing": compact + " ", "bad_type": compact.replace('"pid":', '"pid":"x",  "_":', 1),
        "cut": compact[:len(compact) // 2], "garbage_after": compact + "}",
    }[layout]
    return text.encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layouts=st.lists(st.sampled_from(LAYOUTS), min_size=1, max_size=40),
       rare=st.integers(min_value=0, max_value=2), end_newline=st.booleans(), chunk=st.sampled_from([64, 300, 4096]),
       compressed=st.booleans())
def test_whole_chunk_decoding_reads_as_line_by_line(tmp_path_factory: pytest.TempPathFactory, layouts: list[str],
                                                   rare: int, end_newline: bool, chunk: int, compressed: bool,
                                                   columns: str) -> None:
    """A chunk is decoded in one call when every line is one event as the writer writes it; any other layout
    (blank lines, two events on a line, one event over several lines, stray characters) must read exactly as the
    reference reads it line by line: the same events, or the same error naming the same line."""
    # rare layouts only some of the time, so that most examples have whole chunks of good lines
    if rare == 0:
        layouts = [x if x in ("compact", "spaced") else "compact" for x in layouts]
    events = many_events(len(layouts) + 1, seed=len(layouts))
    data = b"\n".join(laid_out(events[i], events[i + 1], x) for i, x in enumerate(layouts))
    data += b"\n" if end_newline else b""
    f = write_as(tmp_path_factory.mktemp("t") / ("t.jsonl.zst" if compressed else "t.jsonl"), data)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(reading, "CHUNK", chunk)
        m.setattr(reading, "SLICE", 5)
        assert read_all(f) == line_by_line(f, data)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.sampled_from([b"{}", b'{"a":1}', b"", b"x", b"{", b"}", b"{x}\r", b" {}", b"{}}{", b"{\n}"]),
                      min_size=1, max_size=8), last_open=st.booleans())
def test_compiled_line_starts_equal_numpys(lines: list[bytes], last_open: bool) -> None:
    import numpy as np
    data = b"\n".join(lines)
    if not last_open or data.endswith(b"\n"):  # as chunks come: ending with a newline unless their last line is open
        data, last_open = data + b"\n", False
    got = reading._compiled.line_starts(memoryview(b"@" + data)[1:], last_open)  # a view, not at its start
    want = reading._numpy_line_starts(data, last_open)
    assert (got is None and want is None) or np.frombuffer(got, np.intp).tolist() == want.tolist()


@pytest.mark.parametrize("end_newline", [True, False])
def test_byte_ranges_cover_every_line_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           end_newline: bool) -> None:
    """However the ranges fall (on a newline, just after one, inside a line longer than the read-ahead), the
    lines of all ranges are the file's lines, each once, in order."""
    monkeypatch.setattr(reading, "_LINE_ROOM", 5)
    rng = random.Random(5)
    lines = [b"x" * rng.choice([0, 1, 2, 3, 7, 12, 40]) for _ in range(60)]
    data = b"\n".join(lines) + (b"\n" if end_newline else b"")
    f = tmp_path / "t.jsonl"
    f.write_bytes(data)
    for chunk in (1, 2, 3, 4, 5, 8, 13, 64, len(data)):
        got = []
        for start in range(0, len(data), chunk):
            part, offset, last_open = reading._read_range(str(f), start, min(start + chunk, len(data)))
            assert data[offset:offset + len(part)] == part
            assert last_open == (bool(part) and not end_newline and offset + len(part) == len(data))
            got.append(part)
        assert b"".join(got) == data, chunk


def test_cli_jobs_option(tmp_path: Path, capsys: pytest.CaptureFixture[str], small_chunks: None) -> None:
    f = write_as(tmp_path / "t.jsonl", jsonl(many_events(3000)))
    rc, out1, _ = run([str(f), "--jobs", "1"], capsys)
    rc2, out2, err = run([str(f), "--jobs", "2"], capsys)
    assert (rc, rc2, err) == (0, 0, "") and out1 == out2


def test_a_worker_names_the_first_malformed_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 small_chunks: None) -> None:
    lines = jsonl(many_events(3000)).splitlines(keepends=True)
    bad_at = [1700, 2600]  # 1-based line numbers, in different chunks
    for n in bad_at:
        lines[n - 1] = b'{"v":1,"op":"read","ts":1.0,"duration_ns":"5","pid":1}\n'
    f = tmp_path / "t.jsonl"
    f.write_bytes(b"".join(lines))
    for jobs in ("1", "3"):
        rc, out, err = run([str(f), "--jobs", jobs], capsys)
        assert (rc, out) == (1, "")
        assert err == f"fuse-passthrough report: {f}:{bad_at[0]}: malformed line, bad 'duration_ns' field: '5'\n"


def test_a_missing_second_file_after_a_good_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                small_chunks: None) -> None:
    good = write_as(tmp_path / "t.jsonl", jsonl(many_events(2000)))
    rc, out, err = run([str(good), str(tmp_path / "nope.jsonl"), "--jobs", "2"], capsys)
    assert (rc, out) == (1, "")
    assert err == f"fuse-passthrough report: cannot read '{tmp_path / 'nope.jsonl'}': No such file or directory\n"


# --------------------------------------------------------------------------------------------- bounds

def test_tables_are_bounded_and_keep_the_busiest(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tally, "TABLE_CAP", 40)
    busy = [f"/busy{i}" for i in range(5)]
    events = []
    for i in range(3000):  # 5 busy paths (every 3rd event), then 2000 paths seen once each
        path = busy[i % 5] if i % 3 == 0 else f"/once/{i}"
        events.append(ev(i + 1, i * 1e-5, "getattr", path, 100 + i % 90, "p", 1000 + i % 7))
    f = write_as(tmp_path / "t.jsonl", jsonl(events))
    for jobs, chunk in ((3, 8 << 10), (1, reading.CHUNK)):  # workers' tables bounded, and once merged
        monkeypatch.setattr(reading, "CHUNK", chunk)
        report, _ = build([str(f)], jobs=jobs)
        assert report.events == report.summary.total_calls == 3000  # totals stay exact
        assert len(report.paths) <= 40 and len(report.processes) <= 90
        top = report.top_paths("calls", 5)
        assert sorted(p for p, _ in top) == busy
        assert [g.calls for _, g in top] == [200] * 5  # counted exactly: never dropped
        assert report.dropped["paths"][0] == 3000 - sum(g.calls for g in report.paths.values())
    rc, out, err = run([str(f)], capsys)
    assert (rc, err) == (0, "")
    assert f"3000 operations, 0 failed, over {len(report.paths)} paths, " in out
    dropped = 3000 - sum(g.calls for g in report.paths.values())
    assert f"note: more than 40 paths: the least busy were dropped to bound memory, with {dropped} operations" in out


def test_errors_by_errno_stay_exact_when_pairs_are_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tally, "TABLE_CAP", 40)
    events = [ev(i + 1, i * 1e-5, "getattr" if i % 4 else "open", f"/gone/{i}", 100, "p", 1000,
                 errno="EIO" if i % 10 == 0 else "ENOENT") for i in range(3000)]
    f = write_as(tmp_path / "t.jsonl", jsonl(events))
    expected = {}
    for e in events:
        expected.setdefault(e["errno"], Counter())[e["op"]] += 1
    assert expected == {"ENOENT": {"getattr": 2100, "open": 600}, "EIO": {"getattr": 150, "open": 150}}
    for jobs in (1, 2):
        report, _ = build([str(f)], jobs=jobs)
        assert report.dropped and len(report.errors) <= 40  # (errno, path) pairs dropped with their paths
        d = report.as_dict()
        assert [(r["errno"], r["count"], r["ops"]) for r in d["errors_by_errno"]] == \
            [("ENOENT", 2700, expected["ENOENT"]), ("EIO", 300, expected["EIO"])]
        assert d["errors"] == 3000


def test_chart_sample_is_bounded_and_keeps_errors_and_the_slowest(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_mod, "CHART_POINTS", 400)
    events = many_events(6000)
    f = write_as(tmp_path / "t.jsonl", jsonl(events))
    report, _ = build([str(f)], sample=True)
    assert 100 < len(report.sample) <= 400 + 2 * 100
    seqs = [e["seq"] for e in report.sample]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    by_seq = {e["seq"]: e for e in events}
    assert all(e == by_seq[e["seq"]] for e in report.sample)
    slowest = sorted(events, key=lambda e: -e["duration_ns"])[:100]
    assert {e["seq"] for e in slowest} <= set(seqs)  # the slowest quarter, always
    errors = [e["seq"] for e in events if e["errno"] is not None]
    assert len(errors) > 100 and not report.sample_every_error
    kept = [s for s in seqs if s in set(errors)]
    assert len(kept) >= 50  # a quarter of the sample, give or take: spread over the trace, not its first errors
    assert kept[0] < len(events) * 0.2 and kept[-1] > len(events) * 0.8
    page = report_mod.render_html(report, report.sample, [str(f)])
    assert f"of {len(events)} operations (the slowest kept, errors and the rest sampled evenly)" in page

    few = [dict(e, errno=None, result=0) if e["seq"] % 100 else e for e in events]  # 60 errors: all kept
    report, _ = build([str(write_as(tmp_path / "few.jsonl", jsonl(few)))], sample=True)
    assert report.sample_every_error
    assert {e["seq"] for e in few if e["errno"]} <= {e["seq"] for e in report.sample}
    page = report_mod.render_html(report, report.sample, [str(f)])
    assert f"of {len(events)} operations (every error and the slowest kept)" in page


def test_perfetto_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = write_trace(tmp_path / "t.jsonl", EVENTS)
    out = tmp_path / "p.json"
    rc, stdout, _ = run([str(trace), "--perfetto", str(out), "--perfetto-limit", "5"], capsys)
    assert rc == 0 and f"Perfetto trace written to {out} (the first 5 of 13 operations" in stdout
    slices = [te for te in json.loads(out.read_text())["traceEvents"] if te["ph"] == "X"]
    assert sorted(s["args"]["seq"] for s in slices) == [1, 2, 3, 4, 5]


# --------------------------------------------------------------------------------------------- progress

def test_progress_bar_on_a_terminal_only(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_mod, "PROGRESS_MIN_BYTES", 0)
    f = write_as(tmp_path / "t.jsonl", jsonl(many_events(2000)))
    rc, out, err = run([str(f)], capsys)  # stderr captured: not a terminal
    assert (rc, err) == (0, "") and "2000 operations" in out

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal of 100 columns
    tty = open(slave, "w", closefd=True)  # noqa: SIM115 - closed below
    monkeypatch.setattr(sys, "stderr", tty)
    try:
        rc = run_report([str(f)])
        tty.flush()
    finally:
        monkeypatch.undo()
    shown = b""
    # Read while the terminal is open (a pty's buffer is gone once its last end closes), until it has been
    # quiet for a while: the tty layer passes the output on asynchronously.
    while select.select([master], [], [], 1.0)[0]:
        shown += os.read(master, 65536)
    tty.close()
    os.close(master)
    assert rc == 0
    text = shown.decode(errors="replace")
    assert "reading" in text and "B/s" in text  # the bar: bytes read and the rate
    assert text.endswith("\r") or text.rstrip(" ").endswith("\r")  # cleared at the end: the line blanked
    assert "2000 operations" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_a_trace_from_a_pipe(tmp_path: Path, suffix: str) -> None:
    """`zstdcat t.jsonl.zst | report /dev/stdin`, or the compressed bytes themselves: nothing is read twice."""
    data = write_as(tmp_path / f"t.jsonl{suffix}", SAMPLE.read_bytes()).read_bytes()
    expected = subprocess.run([sys.executable, "-m", "fuse_passthrough", "report", str(SAMPLE)], capture_output=True,
                              text=True, timeout=60)
    for jobs in ("1", "2"):
        p = subprocess.run([sys.executable, "-m", "fuse_passthrough", "report", "/dev/stdin", "--jobs", jobs],
                           input=data, capture_output=True, timeout=60)
        assert p.returncode == 0 and p.stderr == b"", p.stderr
        assert body(p.stdout.decode()) == body(expected.stdout)


def test_a_named_pipe_with_workers_is_opened_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`report FIFO --jobs 2`: the FIFO is opened once, by its reader (opened first to look at it, its writer
    could lose its reader between the two opens and get EPIPE), and read whole."""
    import builtins
    import threading

    events = many_events(5000)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    opened: list[str] = []
    real_open = builtins.open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def write() -> None:
        with real_open(fifo, "wb") as w:
            w.write(jsonl(events))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        monkeypatch.setattr(builtins, "open", counting_open)
        totals, _ = scan.scan([str(fifo)], jobs=2)
        monkeypatch.undo()
    finally:
        if writer.is_alive():  # the scan failed before opening the FIFO: let the writer go
            with real_open(fifo, "rb") as r:
                r.read()
        writer.join(timeout=30)
    assert opened.count(str(fifo)) == 1
    assert totals.events == len(events)


def test_regions_hand_out_every_chunk_once_own_region_first() -> None:
    """Plain files are split into one contiguous region per worker: a worker takes its own region from the front,
    then the back of the region with most left; every chunk is handed out exactly once, then None."""
    chunks = [reading.Chunk(0, i, start=i, end=i + 1) for i in range(10)]
    regions = scan._Regions(len(chunks), chunks.__getitem__, 3)
    got: dict[int, list[int]] = {0: [], 1: [], 2: []}
    order = [0, 0, 0, 0, 0, 1, 0, 2, 0, 1, 1, 2, 2, 0]  # worker 0 is fast, finishes its region, then steals
    for worker in order:
        chunk = regions.next(worker)
        if chunk is not None:
            got[worker].append(chunk.index)
    # regions [0 1 2] [3 4 5] [6 7 8 9]; a tie for the fullest goes to the first
    assert got == {0: [0, 1, 2, 9, 5, 8, 4], 1: [3, 7], 2: [6]}
    assert sorted(sum(got.values(), [])) == list(range(10))
    assert all(regions.next(w) is None for w in range(3))


@pytest.mark.parametrize("sizes", [[0], [5], [8 << 10], [(8 << 10) + 1, 0, 3, 3 * (8 << 10)]])
def test_plain_chunks_are_the_ones_read_chunks_makes(tmp_path: Path, small_chunks: None, sizes: list[int]) -> None:
    files = []
    for i, size in enumerate(sizes):
        (tmp_path / f"{i}.jsonl").write_bytes(b"x" * size)
        files.append(str(tmp_path / f"{i}.jsonl"))
    plain = scan._PlainChunks(files)
    assert [plain[i] for i in range(len(plain))] == list(reading.read_chunks(files))


@pytest.mark.parametrize("suffix", ["", ".zst"])
def test_a_worker_that_dies_is_an_error_not_a_hang(tmp_path: Path, small_chunks: None,
                                                   monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    f = write_as(tmp_path / f"t.jsonl{suffix}", jsonl(many_events(3000)))

    def dies(tally: Any, chunk: Any, files: Any) -> None:  # in a forked worker: whichever gets the first chunk
        if chunk.index == 0:
            os._exit(3)

    monkeypatch.setattr(scan, "_tally_chunk", dies)
    with pytest.raises(reading.ReportError, match=r"a report worker process died \(exit status 3\)"):
        scan.scan([str(f)], jobs=2)


def test_compiled_columns_that_cannot_set_up_fall_back_with_one_note(tmp_path: Path) -> None:
    """A compiled helper that rejects the Event struct (a msgspec layout it does not know): `report` reads in
    Python, says so once on stderr, and gives the same report."""
    f = write_as(tmp_path / "t.jsonl", jsonl(odd_events(500, seed=3)))
    code = ("import sys\nfrom fuse_passthrough import _columns\n"
            "def setup(*types):\n    raise TypeError('field op is not an object slot')\n"
            "_columns.setup = setup\n"
            "from fuse_passthrough.report import run_report\nsys.exit(run_report(sys.argv[1:]))\n")
    fell_back = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True, timeout=60)
    normal = subprocess.run([sys.executable, "-m", "fuse_passthrough", "report", str(f)], capture_output=True,
                            text=True, timeout=60)
    assert fell_back.returncode == normal.returncode == 0, fell_back.stderr
    assert fell_back.stderr.count("\n") == 1
    assert "compiled columns cannot be used (field op is not an object slot)" in fell_back.stderr
    assert normal.stderr == "" and fell_back.stdout == normal.stdout


# --------------------------------------------------------------------------------------------- memory bound

def distinct_events(n: int) -> list[dict[str, Any]]:
    """n events in which every table meets new names all the time: each file is created, read, written, synced and
    deleted (a temporary file) or renamed into place, by a process of its own, and a name is looked up in vain."""
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < n:
        path, pid, comm = f"/build/{i}/obj.o", 10_000 + i, f"cc{i % 9}"
        seq = len(out)
        out += [ev(seq + 1, seq * 1e-5, "create", path, pid, comm, 2_000, {"fh": i}, fh=i),
                ev(seq + 2, seq * 1e-5, "write", path, pid, comm, 3_000 + i % 100, 100, size=100, offset=0, fh=i),
                ev(seq + 3, seq * 1e-5, "read", path, pid, comm, 1_000, 100, size=100, offset=0, fh=i),
                ev(seq + 4, seq * 1e-5, "fsync", path, pid, comm, 9_000, 0, fh=i),
                ev(seq + 5, seq * 1e-5, "getattr", f"/include/{i}.h", pid, comm, 700, errno="ENOENT"),
                ev(seq + 6, seq * 1e-5, "open", f"/etc/{i}", pid, comm, 700, errno="EACCES", flags="O_RDONLY"),
                ev(seq + 7, seq * 1e-5, "unlink", path, pid, comm, 4_000) if i % 2 else
                ev(seq + 7, seq * 1e-5, "rename", path, pid, comm, 4_000, path2=f"/out/{i}.o")]
        i += 1
    return out[:n]


def tally_of(path: Path, jobs: int = 1) -> tally.Tally:
    t, _ = scan.scan([str(path)], jobs=jobs)
    return t


@pytest.fixture
def small_caps(monkeypatch: pytest.MonkeyPatch) -> int:
    """Every cap at 600 (100,000 in use), so that a test trace goes past them many times over."""
    from fuse_passthrough.report import evidence, findings
    monkeypatch.setattr(tally, "TABLE_CAP", 600)
    monkeypatch.setattr(evidence, "EVIDENCE_CAP", 600)
    monkeypatch.setattr(findings, "EVIDENCE_CAP", 600)
    return 600


def test_what_a_tally_holds_stays_under_the_caps_however_long_the_trace(tmp_path: Path, small_caps: int) -> None:
    """The memory bound of docs/report.md ("Speed and memory"), counted: every table that grows with distinct
    names (paths, processes, (errno, path) pairs, where accesses ended, files created, deleted and renamed, their
    example seqs and processes) holds at most its cap (and a slice or batch more, pruned at the next), and the
    tables' arrays have at most the cap plus a slice of columns, in a worker and once merged: the same for a
    trace of N and of 4N events, each with N/7 new paths and processes per N events."""
    cap = small_caps
    bound = {"paths": cap + reading.SLICE, "path columns": cap + reading.SLICE,
             "processes": cap + reading.SLICE, "process columns": cap + reading.SLICE,
             "error pairs": cap + tally.evidence.BATCH, "ends": cap + tally.evidence.BATCH,
             "created": cap + reading.SLICE, "temporary": cap + reading.SLICE, "saves": cap + reading.SLICE,
             "example seqs": 2 * (cap + reading.SLICE), "file processes": cap + reading.SLICE}
    n = 30_000
    held: dict[tuple[int, int], dict[str, int]] = {}
    for events in (n, 4 * n):
        f = write_as(tmp_path / f"t{events}.jsonl", jsonl(distinct_events(events)))
        for jobs in (1, 2):
            t = tally_of(f, jobs)
            assert t.events == events
            assert t.dropped["paths"][1] > 0 and t.dropped["processes"][1] > 0  # pruned, many times
            got = t.held()
            assert got.keys() == bound.keys()
            assert {k: v for k, v in got.items() if v > bound[k]} == {}, got
            held[events, jobs] = got
    assert held[4 * n, 1]["path columns"] == held[n, 1]["path columns"] == cap + reading.SLICE  # grown to the cap


def test_a_tallys_traced_memory_does_not_grow_with_the_trace(tmp_path: Path, small_caps: int) -> None:
    """The same, in bytes: the peak of the memory Python and numpy allocate (tracemalloc: counted, not timed) while
    tallying 4N events is not above 1.5 times that of N events (it grows with the cap, not the trace)."""
    import tracemalloc
    peaks = []
    for events in (20_000, 80_000):
        f = write_as(tmp_path / f"t{events}.jsonl", jsonl(distinct_events(events)))
        tracemalloc.start()
        try:
            t = tally_of(f)
            del t
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks


def test_merging_keeps_what_pruning_the_merged_table_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A merge whose tables have more names together than the cap keeps the names, counts and evidence that adding
    them all and then pruning would keep (the report's process never holds the union's arrays)."""
    events = distinct_events(3000)  # 1287 paths, 643 in each half: over the cap of 800 only together
    halves = [write_as(tmp_path / f"h{k}.jsonl", jsonl(part)) for k, part in enumerate((events[:1500], events[1500:]))]
    monkeypatch.setattr(tally, "TABLE_CAP", 10**6)
    whole = tally_of(halves[0])
    whole.merge(tally_of(halves[1]))
    monkeypatch.setattr(tally, "TABLE_CAP", 800)
    whole._bound()  # the union, pruned
    pruned = tally_of(halves[0])
    pruned.merge(tally_of(halves[1]))  # pruned while merged
    assert pruned.dropped == whole.dropped and pruned.dropped["paths"][1] > 0
    columns = ("path columns", "process columns")  # (the union pruned keeps the union's room)
    assert {k: v for k, v in pruned.held().items() if k not in columns} == \
        {k: v for k, v in whole.held().items() if k not in columns}
    a, b = build_report(whole), build_report(pruned)
    assert a.as_dict(top=10**6) == b.as_dict(top=10**6)
    assert [f.as_dict() for f in find(a, Thresholds())] == [f.as_dict() for f in find(b, Thresholds())]


def build_report(t: tally.Tally) -> Any:
    from fuse_passthrough.report.model import Report
    return Report.from_tally(t)


def _same_columns(got: Any, want: Any) -> None:
    import numpy as np
    for name in ("op", "path", "proc", "ts", "kind", "seq", "size", "offset", "fh", "result", "counted"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert got.durations() == want.durations() and got.errnos == want.errnos and got.odd == want.odd
    assert got.rare == want.rare and got.slow == want.slow
    for name in ("failed", "injected"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None and b is None) or np.array_equal(a, b), name


def _same_names(a: tally.Tally, b: tally.Tally) -> None:
    for table in ("ops", "paths", "procs"):
        mine, theirs = getattr(a, table), getattr(b, table)
        mine, theirs = (mine, theirs) if table == "ops" else (mine.names, theirs.names)
        assert mine.names == theirs.names and mine.number == theirs.number, table
    assert a.op_kind == b.op_kind


def test_scanned_lines_equal_the_decoded_events() -> None:
    """The compiled scanner reads the writer's lines into the columns the events decoded by msgspec give, slice by
    slice (the same numbers for the same names); a slice with any line it does not take (escapes, an int beyond
    int64, injected, another layout) is handed back with nothing numbered."""
    from fuse_passthrough.tracing.formats import format_jsonl_bytes
    events = odd_events(3000, seed=5) + evidence_events(3000, seed=5)
    for e in events[::11]:
        e["pid"] = random.Random(e["seq"]).choice([2**63 + 5, -1, 1 << 22, 2**63 - 1])
    for i, e in enumerate(events):
        if i // 40 % 2 == 0:  # every other slice without what the scanner hands back
            e.pop("injected", None)
            for name in ("path", "path2"):
                if isinstance(e[name], str) and not e[name].isascii():
                    e[name] = "/plain" + str(i % 7)
            if e["pid"] > 2**63 - 1:
                e["pid"] = 5
            if isinstance(e["result"], int) and not -2**63 <= e["result"] < 2**63:
                e["result"] = -1
    lines = [format_jsonl_bytes(e) if i % 3 else json.dumps(e, separators=(",", ":")).encode() + b"\n"
             for i, e in enumerate(events)]
    scanned, decoded = tally.Tally(), tally.Tally()
    taken = handed_back = 0
    for first in range(0, len(lines), 40):
        data = b"".join(lines[first:first + 40])
        starts = reading.line_starts(data, False)
        assert starts is not None
        n = len(starts) - 1
        got = scanned._scan_columns(memoryview(data), starts, 0, n)
        events_, _ = reading.decode_lines(data.splitlines(), str, False)
        if got is None:
            handed_back += 1
            _same_names(scanned, decoded)  # nothing numbered
            decoded._columns(events_)
            scanned._columns(events_)
            continue
        taken += 1
        _same_columns(got, decoded._columns(events_))
        _same_names(scanned, decoded)
    assert taken > 10 and handed_back > 10


def _mutations(line: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(line))
    what = rng.randrange(4)
    if what == 0:
        return line[:at] + line[at + 1:]
    if what == 1:
        return line[:at] + bytes([rng.choice(b'{}[]":,0123456789.eE+-tnfrualsx \\\t\x01\x80')]) + line[at:]
    if what == 2:
        return line[:at] + bytes([rng.choice(b'{}[]":,0123456789.eE+-tnfrualsx \\\x7f')]) + line[at + 1:]
    cut = rng.randrange(len(line))
    return line[:min(at, cut)] + line[max(at, cut):]


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), count=st.integers(min_value=1, max_value=3))
def test_a_line_the_scanner_takes_is_one_msgspec_decodes_alike(seed: int, count: int) -> None:
    """Whatever is changed in a writer's line (a byte removed, added or replaced, a piece cut out), the scanner
    takes it only if msgspec decodes it, alone, to an event with the same columns."""
    from fuse_passthrough.tracing.formats import format_jsonl_bytes
    rng = random.Random(seed)
    base = (odd_events(30, seed=seed % 1000) + evidence_events(30, seed=seed % 1000))[rng.randrange(60)]
    base["ts"] = rng.choice([base["ts"], rng.random() * 2e9, rng.random() * 1e-300, rng.random() * 1e308,
                             float(rng.randrange(10**17)), rng.uniform(-1e6, 1e6)])  # every float read alike
    line = format_jsonl_bytes(base).rstrip(b"\n")
    for _ in range(count):
        line = _mutations(line, rng)
    data = line + b"\n"
    starts = reading.line_starts(data, False)
    if starts is None or len(starts) != 2:
        return
    scanned, decoded = tally.Tally(), tally.Tally()
    got = scanned._scan_columns(memoryview(data), starts, 0, 1)
    if got is None:
        assert not scanned.paths.names.names and not scanned.ops.names
        return
    event = reading._DECODE(line)  # must not raise
    _same_columns(got, decoded._columns([event]))
    _same_names(scanned, decoded)


def test_the_scanner_takes_a_name_only_of_printable_ascii_without_escapes() -> None:
    """Every byte at every position of a name (the scanner checks 8 bytes at a time, then one by one): taken only
    when printable ASCII and neither a quote nor a backslash (msgspec then reads the same string)."""
    line = (b'{"v":2,"seq":1,"ts":1.5,"op":"getattr","path":"%s","path2":null,"args":{},"result":0,"errno":null,'
            b'"duration_ns":5,"pid":3,"uid":0,"gid":0,"comm":"x"}\n')
    for pos in range(19):
        for b in range(256):
            name = bytearray(b"/abcdefghijklmnopqr")
            name[pos] = b
            data = line.replace(b"%s", bytes(name))
            starts = reading.line_starts(data, False)
            if starts is None or len(starts) != 2:
                continue  # a newline
            got = tally.Tally()._scan_columns(memoryview(data), starts, 0, 1)
            assert (got is not None) == (0x20 <= b < 0x7f and b not in b'"\\'), (pos, b)
