"""The JSONL fast path (orjson) writes exactly the bytes of the stdlib encoder, whatever the names hold."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuse_passthrough.tracing import formats
from fuse_passthrough.tracing.events import RawEvent, to_event
from fuse_passthrough.tracing.formats import encoder, format_jsonl, format_jsonl_bytes

# Names as the binding decodes them: any bytes, with undecodable ones as surrogate escapes.
names = st.binary(min_size=1, max_size=40).map(lambda b: "/" + b.decode("utf-8", "surrogateescape"))
ints = st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
stat_tuples = st.tuples(st.integers(0, 0o177777), ints, ints, st.integers(0, 2 ** 32), st.integers(0, 2 ** 32),
                        st.integers(0, 2 ** 32))
# (op, args, result on success) as the tracing layer captures them
captures = st.one_of(
    st.tuples(st.just("getattr"), st.tuples(names, st.none() | ints), stat_tuples),
    st.tuples(st.just("rename"), st.tuples(names, names, st.integers(0, 7)), st.just(0)),
    st.tuples(st.just("getxattr"), st.tuples(names, st.text(max_size=20), st.integers(0, 10)), ints),
    st.tuples(st.just("write"), st.tuples(names, ints, ints, st.integers(0, 1 << 20)), ints),
    st.tuples(st.just("open"), st.tuples(names, st.integers(0, 2 ** 31)), ints | st.tuples(ints, ints)),
    st.tuples(st.just("readlink"), st.tuples(names), names),
)
raw_events = st.builds(
    lambda cap, err, ts, dur, pid, comm: RawEvent(1, ts, cap[0], cap[1], None if err else cap[2], err, dur, pid,
                                                  0, 0, comm, None),
    captures,
    st.sampled_from([0, 2, 61]),
    st.floats(min_value=1e9, max_value=4e9),  # ts, epoch seconds: the one float in an event
    st.integers(0, 10 ** 12),
    st.integers(0, 2 ** 22),
    st.none() | st.text(max_size=16),
)


@pytest.fixture(params=["escaped in C", "stdlib"])
def escaping(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways to write a line with names beyond ASCII: _jsonl.c, and the stdlib where it is not built."""
    if request.param == "stdlib":
        monkeypatch.setattr(formats, "_ascii_escaped", None)
    elif formats._ascii_escaped is None:
        pytest.skip("_jsonl.c is not built")
    return str(request.param)


@settings(max_examples=400, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # the fixture holds for every example
@given(raw=raw_events)
def test_fast_jsonl_is_byte_identical_to_the_stdlib(escaping: str, raw: RawEvent) -> None:
    event = to_event(raw)
    line = format_jsonl_bytes(event)
    assert line == format_jsonl(event).encode("ascii")
    assert line.endswith(b"\n") and line.isascii()
    assert json.loads(line) == json.loads(format_jsonl(event))


def test_both_paths_are_taken(escaping: str) -> None:
    plain = to_event(RawEvent(1, 1.5, "getattr", ("/a", None), None, 2, 10, 1, 0, 0, "sh", None))
    odd = to_event(RawEvent(1, 1.5, "getattr", ("/\udcff\u00e9", None), None, 2, 10, 1, 0, 0, "sh", None))
    for event in (plain, odd):
        assert encoder("jsonl")(event) == format_jsonl(event).encode("ascii")
    assert b"\\udcff\\u00e9" in encoder("jsonl")(odd)


def test_names_beyond_ascii_from_the_fast_path(escaping: str) -> None:
    """DEL, a Latin letter, a CJK one and one beyond the BMP: orjson writes them raw, the line escapes them as the
    stdlib does."""
    event = to_event(RawEvent(1, 1.5, "getattr", ("/a\x7f\u00e6\u4e2d\U0001f600", None), None, 2, 10, 1, 0, 0,
                              "sh\u00e6", None))
    line = format_jsonl_bytes(event)
    assert line == format_jsonl(event).encode("ascii")
    assert b"/a\\u007f\\u00e6\\u4e2d\\ud83d\\ude00" in line


def test_del_in_an_ascii_line_is_escaped_as_the_stdlib_does(escaping: str) -> None:
    # orjson writes DEL raw, and a line holding nothing else beyond printable ASCII is still ASCII
    event = to_event(RawEvent(1, 1.5, "getattr", ("/a\x7f", None), None, 2, 10, 1, 0, 0, "sh", None))
    assert format_jsonl_bytes(event) == format_jsonl(event).encode("ascii")
    assert b"/a\\u007f" in format_jsonl_bytes(event)


@settings(max_examples=400, derandomize=True)
@given(st.text())
def test_c_escaping_is_the_stdlibs_for_any_text(text: str) -> None:
    if formats._ascii_escaped is None:
        pytest.skip("_jsonl.c is not built")
    try:
        utf8 = json.dumps(text, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # lone surrogates: never in orjson's output (it refuses them)
        return
    assert formats._ascii_escaped(utf8) == json.dumps(text).encode()


def test_c_escaping_refuses_what_is_not_utf8() -> None:
    if formats._ascii_escaped is None:
        pytest.skip("_jsonl.c is not built")
    for bad in (b"\xff", b"a\xc3", b"\xe0\x80\x80", b"\xf4\x90\x80\x80", b"\xed\xa0\x80x"[:2]):
        with pytest.raises(ValueError):
            formats._ascii_escaped(bad)


# -- the compiled writer: a batch of raw events at once (formats.encode_jsonl_batch, _jsonl.c encode_events)
big_ints = st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
timespecs = st.tuples(big_ints, st.sampled_from([0, 5, (1 << 30) - 1, (1 << 30) - 2]) | st.integers(0, 10 ** 9))
tricky_names = st.sampled_from(["/a\x7f", "/t\tn\nr\r\b\f\x01", '/q"\\', "/\U0001f600\u00e9", "/\udcff"])
ARG_VALUES = {
    "path": st.none() | names | tricky_names, "path2": st.none() | names | tricky_names,
    "mode": st.none() | st.integers(0, 0o177777) | big_ints, "flags": st.none() | st.integers(0, 2 ** 32),
    "mask": st.integers(0, 8), "whence": st.integers(0, 6), "times": st.none() | st.tuples(timespecs, timespecs),
    "dev": st.integers(0, 2 ** 40), "uid": st.sampled_from([-1, 0, 1000]), "gid": st.sampled_from([-1, 0, 1000]),
    "name": st.text(max_size=20), "lock": st.none() | st.text(max_size=5),
}
other_values = st.none() | st.booleans() | big_ints | st.text(max_size=10)
statfs = st.fixed_dictionaries({k: st.integers(0, 2 ** 40) for k in ("f_bsize", "f_blocks", "f_bfree", "f_files",
                                                                      "f_ffree")})
RESULTS = {
    "stat": stat_tuples | st.lists(st.integers(0, 9), min_size=6, max_size=6),
    "fh": big_ints | st.tuples(ints, ints), "entries": big_ints, "size": big_ints, "statfs": statfs,
}


@st.composite
def any_raw_events(draw: st.DrawFn) -> tuple[object, ...]:
    from fuse_passthrough.tracing.events import ARG_NAMES, RESULT_FORMS

    op = draw(st.sampled_from(sorted(ARG_NAMES)) | st.just("no_such_op"))
    arg_names = ARG_NAMES.get(op, ("path", "size"))
    args = tuple(draw(ARG_VALUES.get(n, other_values)) for n in arg_names)
    args = args[:draw(st.integers(0, len(args)))] if draw(st.booleans()) else args
    if draw(st.integers(0, 19)) == 0:
        args += (1,)  # more arguments than the operation has names for
    form = RESULT_FORMS.get(op)
    result = draw(st.none() | (RESULTS[form] if form else other_values | st.lists(st.text(max_size=5), max_size=3)))
    err = draw(st.sampled_from([0, 0, 0, 2, 61, 9999]))
    ts = draw(st.floats(min_value=1e9, max_value=4e9) | st.sampled_from([0.0, 1e16, 1.5]))
    comm = draw(st.none() | st.text(max_size=16))
    cmdline = draw(st.none() | st.none() | st.lists(st.text(max_size=5), max_size=2))
    injected = draw(st.none() | st.none() | st.just({"errno": 28}) | st.just({"short": 3, "delay_ns": 5}))
    return (draw(big_ints), ts, op, args, result, err, draw(st.integers(0, 10 ** 12)), draw(st.integers(0, 2 ** 22)),
            draw(st.sampled_from([0, 1000])), draw(st.sampled_from([0, 1000])), comm, cmdline, injected)


def _python_line(item: tuple[object, ...]) -> bytes:
    from fuse_passthrough.tracing.events import event_of

    line = format_jsonl_bytes(event_of(item))
    assert line == format_jsonl(event_of(item)).encode("ascii")
    return line


def _python_text_line(item: tuple[object, ...]) -> bytes:
    from fuse_passthrough.tracing.events import event_of

    return encoder("text")(event_of(item))


# format -> (the compiled batch encoder, the batch function, the Python path's line)
BATCHES = {"jsonl": ("_encode_events", formats.encode_jsonl_batch, _python_line),
           "text": ("_encode_text_events", formats.encode_text_batch, _python_text_line)}


@pytest.mark.parametrize("fmt", BATCHES)
@settings(max_examples=600, derandomize=True)
@given(st.lists(any_raw_events(), max_size=20))
def test_compiled_batches_are_byte_identical_to_the_python_path(fmt: str, items: list[tuple[object, ...]]) -> None:
    compiled, batch, python_line = BATCHES[fmt]
    if getattr(formats, compiled) is None:
        pytest.skip("_jsonl.c is not built")
    block, ends = batch(items, python_line)
    lines = [python_line(i) for i in items]
    assert bytes(block) == b"".join(lines)
    assert [len(x) for x in lines] == [e - s for s, e in zip([0, *ends], ends, strict=False)]


def _near_powers_of_two() -> list[float]:
    """The fast ts path's edge cases: each power of two from 2**28 to 2**53 and its nearest neighbours (a power of
    two has a nearer neighbour below than above)."""
    out = []
    for e in range(28, 54):
        for direction in (0.0, math.inf):
            x = 2.0 ** e
            for _ in range(4):
                out.append(x)
                x = math.nextafter(x, direction)
    return out


@settings(max_examples=1500, derandomize=True)
@given(st.lists(st.floats(min_value=2.0 ** 27, max_value=2.0 ** 54) | st.sampled_from(_near_powers_of_two()) |
                st.builds(lambda i, f: float(f"{i}.{f}"), st.integers(2 ** 28, 2 ** 40), st.integers(0, 10 ** 7)),
                min_size=1, max_size=20))
def test_compiled_timestamps_are_python_reprs(stamps: list[float]) -> None:
    """An event's ts, written by _jsonl.c's own shortest round-trip digits for 2**28 <= ts < 2**53 (and by
    Python's for the others), is repr(ts): the same line as the stdlib encoder writes."""
    if formats._encode_events is None:
        pytest.skip("_jsonl.c is not built")
    items = [(i, ts, "getattr", ("/a", None), (0o100644, 1, 2, 1, 0, 0), 0, 10, 5, 0, 0, "sh", None, None)
             for i, ts in enumerate(stamps)]
    block, ends = formats.encode_jsonl_batch(items, _python_line)
    written = [json.loads(line)["ts"] for line in bytes(block).splitlines()]
    assert [repr(ts) for ts in written] == [repr(ts) for ts in stamps]
    assert bytes(block) == b"".join(_python_line(i) for i in items)


USUAL_EVENTS = [
    (1, 1.5, "lookup", ("/a/\u00e9\udcff",), (0o100644, 3, 7, 1, 0, 0), 0, 10, 5, 0, 0, "sh", None, None),
    (2, 1.5, "create", ("/a/b", 0o100644, 0o100301), 17, 0, 10, 5, 0, 0, "sh", None, None),
    (3, 1.5, "getxattr", ("/a/b", "security.capability", 0), None, 61, 10, 5, 0, 0, "sh", None, None),
    (4, 1.5, "write", ("/a/b", 4, 0, 17), 4, 0, 10, 5, 0, 0, "sh", None, None),
    (5, 1.5, "release", ("/a/b", 17), 0, 0, 10, 0, 0, 0, "[kernel]", None, None),
    (6, 1.5, "readdirplus", ("/a", 0, 0), 12, 0, 10, 5, 0, 0, None, None, None),
    (7, 1.5, "open", ("/a/b'q", 0o100000), (18, 2), 0, 10, 5, 0, 0, "c\u00e4t", None, None),
    (8, 1.5, "utimens", ("/a/b", ((1, (1 << 30) - 1), (2, 3)), None), 0, 0, 10, 5, 0, 0, "touch", None, None),
    (9, 1.5, "readlink", ("/l",), "t\x00rget", 0, 10, 5, 0, 0, "", None, None),
]
UNUSUAL_EVENTS = [
    (10, 1.5, "getattr", ("/a", None), None, 2, 10, 5, 0, 0, "sh", ["sh", "-c"], None),  # cmdline
    (11, 1.5, "write", ("/a", 4, 0, 1), None, 28, 10, 5, 0, 0, "sh", None, {"errno": 28}),  # injected
    (12, 1.5, "write", ("/a", 4, 2 ** 70, 1), 4, 0, 10, 5, 0, 0, "sh", None, None),  # beyond 64 bits
    (13, 1.5, "statfs", ("/",), {"f_bsize": 4096}, 0, 10, 5, 0, 0, "df", None, None),  # a result of its own
    (14, 1.5, "mystery", ("/a",), 0, 0, 10, 5, 0, 0, "sh", None, None),  # an operation events.py lacks
]


@pytest.mark.parametrize("fmt,in_python", [("jsonl", [10, 11, 12, 14]), ("text", [10, 11, 13, 14])])
def test_compiled_batches_leave_only_the_unusual_to_python(fmt: str, in_python: list[int]) -> None:
    """The writer's usual events in C (names beyond ASCII, surrogate escapes, quotes), the rest in Python. (JSONL
    writes a statfs result itself; text writes an argument beyond 64 bits through format_text's own text.)"""
    compiled, batch, python_line = BATCHES[fmt]
    if getattr(formats, compiled) is None:
        pytest.skip("_jsonl.c is not built")
    called = []

    def line(item: tuple[object, ...]) -> bytes:
        called.append(item[0])
        return python_line(item)

    items = USUAL_EVENTS + UNUSUAL_EVENTS
    block, ends = batch(items, line)
    assert bytes(block) == b"".join(python_line(i) for i in items)
    assert called == in_python
    assert len(ends) == len(items)


def test_text_lines_end_with_the_command_line_where_events_have_one() -> None:
    """--cmdline in the text format: the caller's command line, quoted as a shell would read it back."""
    event = to_event(RawEvent(3, 1.5, "getattr", ("/a b", None), (0o100644, 1, 2, 1, 0, 0), 0, 10, 42, 0, 0, "cat",
                              ["cat", "a b", "it's"]))
    line = formats.format_text(event)
    assert line.endswith("""cat[42] uid=0 gid=0  $ cat 'a b' 'it'"'"'s'\n"""), line
    event["cmdline"] = None  # without --cmdline
    assert formats.format_text(event).endswith("cat[42] uid=0 gid=0\n")
