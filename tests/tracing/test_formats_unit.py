"""The JSONL fast path (orjson) writes exactly the bytes of the stdlib encoder, whatever the names hold."""

from __future__ import annotations

import json

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
