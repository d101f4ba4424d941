"""`fuse-passthrough report`: numbers on a hand-built trace, Perfetto export, HTML page in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fuse_passthrough.report import Report, build, perfetto_trace, run_report

T0 = 1_700_000_000.0
EVIL_PATH = '/<script>alert(1)</script>&"x\'.txt'
EVIL_COMM = "<b>evil</b>"
BAD_UTF8_PATH = "/bad\udcff"  # the byte 0xff, as the mount records a file name that is not UTF-8


def ev(seq: int, dt: float, op: str, path: str | None, pid: int, comm: str | None, duration_ns: int,
       result: Any = None, errno: str | None = None, path2: str | None = None, **args: Any) -> dict[str, Any]:
    return {"v": 1, "seq": seq, "ts": T0 + dt, "op": op, "path": path, "path2": path2, "args": args,
            "result": result, "errno": errno, "duration_ns": duration_ns, "pid": pid, "uid": 1000,
            "gid": 1000, "comm": "[kernel]" if pid == 0 else comm}


EVENTS = [
    ev(1, 0.0, "init", "/", 0, None, 5_000),
    ev(2, 0.001, "getattr", "/a", 100, "cat", 10_000, {"mode": "0o100644", "size": 4096}, fh=None),
    ev(3, 0.002, "getattr", "/a", 100, "cat", 20_000, {"mode": "0o100644", "size": 4096}, fh=None),
    ev(4, 0.003, "open", "/a", 100, "cat", 30_000, {"fh": 3}, flags="O_RDONLY"),
    ev(5, 0.004, "read", "/a", 100, "cat", 50_000, 4096, size=4096, offset=0, fh=3),
    ev(6, 0.005, "getattr", "/missing", 200, "ls", 7_000, errno="ENOENT", fh=None),
    ev(7, 0.006, "getattr", "/missing", 200, "ls", 9_000, errno="ENOENT", fh=None),
    ev(8, 0.007, "write", "/b", 300, "dd", 1_000_000, 100, size=100, offset=0, fh=4),
    ev(9, 0.0071, "open", "/secret", 200, "ls", 4_000, errno="EACCES", flags="O_RDONLY"),
    # starts while dd's write (0.007 .. 0.008) is still running: needs its own Perfetto thread
    ev(10, 0.0075, "read", "/b", 300, "dd", 200_000, 100, size=100, offset=0, fh=4),
    ev(11, 0.008, "release", "/a", 0, None, 2_000, fh=3),
    ev(12, 0.009, "getattr", EVIL_PATH, 400, EVIL_COMM, 3_000, errno="ENOENT", fh=None),
    ev(13, 0.010, "getattr", BAD_UTF8_PATH, 400, EVIL_COMM, 1_000, {"mode": "0o100644", "size": 0}, fh=None),
]


def write_trace(path: Path, events: list[dict[str, Any]]) -> Path:
    # The mount's own encoding (formats.format_jsonl): compact, ASCII escapes.
    path.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))
    return path


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    return write_trace(tmp_path / "trace.jsonl", EVENTS)


def report_of(*files: Path) -> Report:
    report, _ = build([str(f) for f in files], keep_events=False)
    return report


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = run_report(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def section(text: str, title: str) -> list[str]:
    """The data rows of one text table (after its title and the header and dash lines)."""
    lines = text.splitlines()
    start = lines.index(title) + 3
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


# --------------------------------------------------------------------------------------------- numbers

def test_summary_numbers(trace: Path) -> None:
    d = report_of(trace).as_dict()
    s = d["summary"]
    assert (d["events"], d["errors"]) == (13, 4)
    assert (s["total_calls"], s["total_errors"], s["total_ns"]) == (13, 4, 1_341_000)
    ops = s["ops"]
    assert list(ops) == ["write", "read", "getattr", "open", "init", "release"]  # by total time
    assert {op: (v["calls"], v["errors"], v["total_ns"]) for op, v in ops.items()} == {
        "getattr": (6, 3, 50_000), "open": (2, 1, 34_000), "read": (2, 0, 250_000),
        "write": (1, 0, 1_000_000), "init": (1, 0, 5_000), "release": (1, 0, 2_000)}
    assert (ops["read"]["bytes_read"], ops["write"]["bytes_written"]) == (4196, 100)
    assert d["span_s"] == pytest.approx(0.010 + 1e-6, abs=1e-6)  # first start to last end


def test_top_paths_and_processes(trace: Path) -> None:
    d = report_of(trace).as_dict(top=10)
    by_calls = [(r["path"], r["calls"], r["errors"], r["total_ns"]) for r in d["top_paths_by_calls"]]
    assert by_calls == [("/a", 5, 0, 112_000), ("/b", 2, 0, 1_200_000), ("/missing", 2, 2, 16_000),
                        ("/", 1, 0, 5_000), ("/secret", 1, 1, 4_000), (EVIL_PATH, 1, 1, 3_000),
                        (BAD_UTF8_PATH, 1, 0, 1_000)]
    assert [r["path"] for r in d["top_paths_by_time"]] == ["/b", "/a", "/missing", "/", "/secret", EVIL_PATH,
                                                           BAD_UTF8_PATH]
    procs = [(r["process"], r["calls"], r["errors"], r["total_ns"]) for r in d["top_processes_by_calls"]]
    assert procs == [("cat[100]", 4, 0, 110_000), ("ls[200]", 3, 3, 20_000), ("dd[300]", 2, 0, 1_200_000),
                     ("[kernel]", 2, 0, 7_000), (f"{EVIL_COMM}[400]", 2, 1, 4_000)]
    assert [r["process"] for r in d["top_processes_by_time"]] == ["dd[300]", "cat[100]", "ls[200]", "[kernel]",
                                                                  f"{EVIL_COMM}[400]"]
    assert report_of(trace).as_dict(top=2)["top_paths_by_calls"][1]["path"] == "/b"
    assert len(report_of(trace).as_dict(top=2)["top_processes_by_time"]) == 2


def test_errors_grouped_by_errno_and_path(trace: Path) -> None:
    d = report_of(trace).as_dict()
    assert [(r["errno"], r["path"], r["count"], r["ops"]) for r in d["errors_by_errno_path"]] == [
        ("ENOENT", "/missing", 2, {"getattr": 2}), ("EACCES", "/secret", 1, {"open": 1}),
        ("ENOENT", EVIL_PATH, 1, {"getattr": 1})]
    assert [(r["errno"], r["count"]) for r in d["errors_by_errno"]] == [("ENOENT", 3), ("EACCES", 1)]


def test_text_report(trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run([str(trace)], capsys)
    assert (rc, err) == (0, "")
    assert "13 operations, 4 failed, 7 paths, 5 processes" in out
    total = next(line for line in out.splitlines() if line.endswith("  total"))
    assert total.split()[:4] == ["100.00", "0.001341", "13", "4"]
    getattr_row = next(line for line in out.splitlines() if line.endswith("  getattr"))
    assert getattr_row.split()[1:4] == ["0.000050", "6", "3"]
    rows = section(out, "top processes by number of operations:")
    assert [r.split()[-1] for r in rows] == ["cat[100]", "ls[200]", "dd[300]", "[kernel]", "<b>evil</b>[400]"]
    assert [r.split() for r in rows[:2]] == [["4", "0.110", "cat[100]"], ["3", "3", "0.020", "ls[200]"]]
    rows = section(out, "top paths by total time:")
    assert [r.split()[-1] for r in rows[:3]] == ["/b", "/a", "/missing"]
    assert rows[0].split()[:2] == ["2", "1.200"]
    assert "/bad\\xff" in out  # the undecodable byte, printable
    rows = section(out, "errors by errno and path:")
    assert [r.split()[:3] for r in rows] == [["2", "ENOENT", "/missing"], ["1", "EACCES", "/secret"],
                                              ["1", "ENOENT", "/<script>alert(1)</script>&\"x'.txt"]]
    rows = section(out, "errors by errno:")
    assert [r.split()[:2] for r in rows] == [["3", "ENOENT"], ["1", "EACCES"]]


def test_top_limits_error_pairs(trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run([str(trace), "--top", "1"], capsys)
    assert rc == 0
    assert [r.split()[:3] for r in section(out, "errors by errno and path:")][:1] == [["2", "ENOENT", "/missing"]]
    assert "... 2 more (errno, path) pairs with 2 errors" in out


def test_several_files_are_one_trace(tmp_path: Path) -> None:
    a = write_trace(tmp_path / "t.jsonl.1", EVENTS[:6])
    b = write_trace(tmp_path / "t.jsonl", EVENTS[6:])
    assert report_of(a, b).as_dict() == report_of(write_trace(tmp_path / "all.jsonl", EVENTS)).as_dict()


def test_blank_lines_and_empty_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text("\n" + json.dumps(EVENTS[1]) + "\n\n")
    assert report_of(f).events == 1
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    rc, out, _ = run([str(empty), "--perfetto", str(tmp_path / "e.json"), "--html", str(tmp_path / "e.html")],
                     capsys)
    assert rc == 0 and "0 operations" in out
    assert json.loads((tmp_path / "e.json").read_text())["traceEvents"] == []
    assert "no operations" in (tmp_path / "e.html").read_text()


# --------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("line, why", [
    ('{"v":1,"seq":3,', "not JSON"),
    ("[1, 2]", "a JSON list"),
    ('{"v":1,"ts":1.0,"duration_ns":5,"pid":1}', "no 'op' field"),
    ('{"v":1,"op":"read","ts":1.0,"duration_ns":"5","pid":1}', "bad 'duration_ns'"),
    ('{"v":1,"op":"read","ts":NaN,"duration_ns":5,"pid":1}', "bad 'ts'"),
    ('{"v":1,"op":"read","ts":1.0,"duration_ns":5,"pid":1,"errno":2}', "bad 'errno'"),
    ('{"v":4,"op":"read","ts":1.0,"duration_ns":5,"pid":1}', "schema version 4"),
])
def test_malformed_line_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, why: str) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps(EVENTS[0]) + "\n" + json.dumps(EVENTS[1]) + "\n" + line + "\n")
    rc, out, err = run([str(f)], capsys)
    assert rc == 1
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"fuse-passthrough report: {f}:3: malformed line")
    assert why in err


def test_cut_short_last_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps(EVENTS[0]) + "\n" + json.dumps(EVENTS[1])[:40])
    rc, _, err = run([str(f)], capsys)
    assert rc == 1
    assert err.startswith(f"fuse-passthrough report: {f}:2: malformed line, not JSON (")
    assert err.endswith("; the last line is incomplete: is the trace still being written?\n")


def test_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "t.jsonl"
    f.write_bytes(json.dumps(EVENTS[0]).encode() + b"\n\xff\xfe\n")
    rc, _, err = run([str(f)], capsys)
    assert rc == 1 and f"{f}:2: malformed line, not UTF-8" in err


def test_missing_and_unreadable_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run([str(tmp_path / "nope.jsonl")], capsys)
    assert rc == 1
    assert err == f"fuse-passthrough report: cannot read '{tmp_path / 'nope.jsonl'}': No such file or directory\n"
    rc, _, err = run([str(tmp_path)], capsys)
    assert rc == 1 and "Is a directory" in err and err.count("\n") == 1


def test_unwritable_output(trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run([str(trace), "--html", str(tmp_path / "no" / "such" / "dir.html")], capsys)
    assert rc == 1 and "cannot write" in err and err.count("\n") == 1


def test_cli_subprocess(trace: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "fuse_passthrough", "report", str(trace)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert "13 operations, 4 failed" in p.stdout
    assert "top processes by total time:" in p.stdout
    p = subprocess.run([sys.executable, "-m", "fuse_passthrough", "report", str(trace) + ".missing"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stdout == "" and "No such file or directory" in p.stderr
    p = subprocess.run([sys.executable, "-m", "fuse_passthrough", "report"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "TRACE.jsonl" in p.stderr


# --------------------------------------------------------------------------------------------- Perfetto

def _no_constants(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON")


def test_perfetto_trace_event_format(trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.perfetto.json"
    rc, stdout, _ = run([str(trace), "--perfetto", str(out)], capsys)
    assert rc == 0 and f"Perfetto trace written to {out}" in stdout
    doc = json.loads(out.read_text(encoding="ascii"), parse_constant=_no_constants)
    assert isinstance(doc, dict) and isinstance(doc["traceEvents"], list)
    assert doc["displayTimeUnit"] in ("ms", "ns")
    by_seq = {e["seq"]: e for e in EVENTS}
    slices = []
    for te in doc["traceEvents"]:
        for key in ("name", "ph", "ts", "pid", "tid"):
            assert key in te, (key, te)
        assert isinstance(te["name"], str) and isinstance(te["pid"], int) and isinstance(te["tid"], int)
        assert isinstance(te["ts"], int | float)
        assert te["ph"] in ("X", "M")
        if te["ph"] == "X":
            slices.append(te)
    assert len(slices) == len(EVENTS)
    first = min(e["ts"] for e in EVENTS)
    for s in slices:
        src = by_seq[s["args"]["seq"]]
        assert s["name"] == src["op"] and s["cat"] == "fuse" and s["pid"] == src["pid"]
        assert isinstance(s["dur"], float) and s["dur"] == src["duration_ns"] / 1000
        assert s["ts"] == pytest.approx((src["ts"] - first) * 1e6, abs=1e-3)
        assert set(s["args"]) == {"path", "path2", "args", "result", "errno", "seq"}
        assert (s["args"]["errno"], s["args"]["result"], s["args"]["args"]) == (src["errno"], src["result"],
                                                                               src["args"])
        if src["path"] != BAD_UTF8_PATH:
            assert s["args"]["path"] == src["path"]
    assert [s["args"]["seq"] for s in slices] == sorted(by_seq)  # in time order
    assert {s["pid"] for s in slices} == {e["pid"] for e in EVENTS}
    # slices of one thread never overlap partially (the format needs them nested)
    threads: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for s in slices:
        threads.setdefault((s["pid"], s["tid"]), []).append(s)
    for group in threads.values():
        for a, b in zip(group, group[1:], strict=False):
            assert a["ts"] + a["dur"] <= b["ts"] + 1e-6
    dd = [s for s in slices if s["pid"] == 300]
    assert dd[0]["tid"] == 300 and dd[1]["tid"] != 300  # the overlapping read got its own thread
    assert all(s["tid"] == s["pid"] for s in slices if s["pid"] != 300)
    # metadata: every process named, the kernel as "kernel", every thread named
    meta = [te for te in doc["traceEvents"] if te["ph"] == "M"]
    names = {te["pid"]: te["args"]["name"] for te in meta if te["name"] == "process_name"}
    assert names == {0: "kernel", 100: "cat", 200: "ls", 300: "dd", 400: EVIL_COMM}
    thread_names = {(te["pid"], te["tid"]) for te in meta if te["name"] == "thread_name"}
    assert thread_names == set(threads)


def test_perfetto_concurrent_lanes_are_reused() -> None:
    events = [ev(1, 0.0, "read", "/x", 7, "p", 1_000_000), ev(2, 0.0001, "read", "/x", 7, "p", 10_000),
              ev(3, 0.0002, "read", "/x", 7, "p", 10_000), ev(4, 0.0005, "read", "/x", 7, "p", 10_000),
              ev(5, 0.002, "read", "/x", 7, "p", 10_000)]
    slices = [te for te in perfetto_trace(events)["traceEvents"] if te["ph"] == "X"]
    assert [s["tid"] for s in slices] == [7, 7 + (1 << 22), 7 + (1 << 22), 7 + (1 << 22), 7]


# --------------------------------------------------------------------------------------------- HTML

CHROMIUM = "/usr/bin/chromium"


def chromium(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium; fails (does not skip) when it is missing: `make test` installs it."""
    exe = shutil.which("chromium") or CHROMIUM
    assert os.path.exists(exe), "chromium is not installed (apt-get install chromium, or run `make test`)"
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile:
        return subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", *args, url],
            capture_output=True, text=True, timeout=120)


def dump_dom(page: Path) -> tuple[str, str]:
    p = chromium(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom"], page.as_uri())
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout, p.stderr


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture
def html_page(trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "report.html"
    rc, stdout, _ = run([str(trace), "--html", str(out)], capsys)
    assert rc == 0 and f"HTML report written to {out}" in stdout
    return out


def test_html_is_self_contained_and_escaped(html_page: Path) -> None:
    text = html_page.read_text()
    assert "<script src" not in text and "<link" not in text and "@import" not in text and "url(" not in text
    assert not re.search(r"(?i)https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text)
    assert "alert(1)</script>" not in text and EVIL_COMM not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;x&#x27;.txt" in text
    assert "&lt;b&gt;evil&lt;/b&gt;[400]" in text
    assert text.count("<script>") == 2  # the error hook and the page's own script
    for table in ("Per operation", "Top paths by operations", "Top paths by total time",
                  "Top processes by operations", "Top processes by total time", "Errors by errno and path"):
        assert f"<h2>{table}</h2>" in text
    assert text.count('<circle class="pt') == len(EVENTS)


def test_html_renders_without_errors(html_page: Path) -> None:
    dom, stderr = dump_dom(html_page)
    root = re.search(r"<html[^>]*>", dom)
    assert root, dom[:500]
    assert 'data-report-ready="1"' in root.group(0), root.group(0)
    assert "data-report-error" not in root.group(0), root.group(0)
    assert console_messages(stderr) == []
    # the untrusted strings stayed text: no element was injected
    assert "<script>alert(1)" not in dom and "<b>evil</b>" not in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert dom.count("<script>") == 2


def test_html_error_detection_works(html_page: Path, tmp_path: Path) -> None:
    """The negative control: a page that throws, or reaches for the network, is caught."""
    broken = tmp_path / "broken.html"
    broken.write_text(html_page.read_text().replace(
        "<main>", '<main><script>throw new Error("boom")</script><img src="http://example.invalid/x.png">', 1))
    dom, stderr = dump_dom(broken)
    root = re.search(r"<html[^>]*>", dom)
    assert root and "data-report-error" in root.group(0) and "boom" in root.group(0)
    messages = console_messages(stderr)
    assert any("boom" in m for m in messages) and any("Content Security Policy" in m for m in messages)


def png_pixels(data: bytes) -> Iterator[bytes]:
    """The pixels of an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes), as RGB bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, []
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    prev = bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if ftype == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif ftype == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif ftype == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b, c = prev[i], prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        for x in range(0, stride, channels):
            yield bytes(line[x:x + 3])
        prev = line


def test_html_screenshot_is_not_blank(html_page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    p = chromium([f"--screenshot={shot}", "--window-size=1200,900", "--virtual-time-budget=5000"],
                 html_page.as_uri())
    assert p.returncode == 0 and shot.exists(), p.stderr[-2000:]
    counts: dict[bytes, int] = {}
    for px in png_pixels(shot.read_bytes()):
        counts[px] = counts.get(px, 0) + 1
    total = sum(counts.values())
    assert total == 1200 * 900
    background = max(counts.values())
    assert len(counts) > 50, f"only {len(counts)} distinct colors"
    assert total - background > total // 10, "the page is mostly one color"
    assert b"\x1d\x23\x30" in counts  # the header bar color: the page's CSS applied



def test_real_sample_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tests/data/report-sample.jsonl: a trace recorded from a real mount (the one docs/report.md shows)."""
    sample = Path(__file__).parent.parent / "data" / "report-sample.jsonl"
    events = [json.loads(line) for line in sample.read_text().splitlines()]
    pj, page = tmp_path / "s.json", tmp_path / "s.html"
    rc, out, err = run([str(sample), "--top", "100", "--perfetto", str(pj), "--html", str(page)], capsys)
    assert (rc, err) == (0, "")
    d = report_of(sample).as_dict(top=100)
    assert d["events"] == len(events) and d["errors"] == sum(e["errno"] is not None for e in events)
    assert sum(r["calls"] for r in d["top_processes_by_calls"]) == len(events)
    assert sum(r["count"] for r in d["errors_by_errno_path"]) == d["errors"]
    assert f"{len(events)} operations, {d['errors']} failed" in out
    slices = [te for te in json.loads(pj.read_text())["traceEvents"] if te["ph"] == "X"]
    assert len(slices) == len(events)
    assert {s["pid"] for s in slices} == {e["pid"] for e in events}
    dom, stderr = dump_dom(page)
    root = re.search(r"<html[^>]*>", dom)
    assert root and 'data-report-ready="1"' in root.group(0) and "data-report-error" not in root.group(0)
    assert console_messages(stderr) == []
