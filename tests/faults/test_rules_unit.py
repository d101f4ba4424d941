"""Fault rules: parsing (every key, every refusal) and when a rule fires (nth, every, after, times, probability)."""

from __future__ import annotations

import errno
import random

import pytest

from fuse_passthrough.faults import FaultInjectingOperations, RuleError, parse_rule, parse_rules_file


def fired(rule_text: str, calls: int) -> list[int]:
    """The 1-based numbers of the matching calls the rule acts on."""
    rule = parse_rule(rule_text)
    return [n for n in range(1, calls + 1) if rule.fires()]


def test_every_key_is_parsed() -> None:
    r = parse_rule("op=read|write, path=/data/*.db, comm=a|b, pid=7|8, uid=1000, errno=ENOSPC, delay=1.5ms, "
                   "nth=3, every=2, after=1, times=4, probability=0.25, seed=9")
    assert r.ops == {"read", "write"} and r.path == "/data/*.db" and r.comms == {"a", "b"}
    assert r.pids == {7, 8} and r.uids == {1000} and r.errno == errno.ENOSPC and r.delay_ns == 1_500_000
    assert (r.nth, r.every, r.after, r.times, r.probability, r.seed) == (3, 2, 1, 4, 0.25, 9)
    assert parse_rule("op=write,errno=28").errno == 28
    assert parse_rule("op=write,errno=eio").errno == errno.EIO
    assert parse_rule("op=read,short=10").short == 10
    assert [parse_rule(f"op=mkdir,delay={d}").delay_ns for d in ("7ns", "3us", "3µs", "2ms", "1s", ".5s")] == [
        7, 3_000, 3_000, 2_000_000, 1_000_000_000, 500_000_000]


@pytest.mark.parametrize("text,words", [
    ("op=write,colour=red,errno=EIO", ["unknown key 'colour'"]),
    ("errno=EIO", ["op=... is required"]),
    ("op=frobnicate,errno=EIO", ["unknown op frobnicate"]),
    ("op=write|frob,errno=EIO", ["unknown op frob"]),
    ("op=write,errno=ENOTANERRNO", ["unknown errno 'ENOTANERRNO'"]),
    ("op=write,errno=0", ["errno out of range"]),
    ("op=write,errno=SPC", ["unknown errno"]),
    ("op=write", ["needs errno=, delay= or short="]),
    ("op=write,probability=1.5,errno=EIO", ["probability must be in [0, 1]"]),
    ("op=write,probability=-0.1,errno=EIO", ["probability must be in [0, 1]"]),
    ("op=write,probability=often,errno=EIO", ["probability must be a number"]),
    ("op=write,delay=5", ["malformed duration '5'"]),
    ("op=write,delay=5 parsecs", ["malformed duration"]),
    ("op=write,delay=-5ms", ["malformed duration"]),
    ("op=write,nth=0,errno=EIO", ["nth must be >= 1"]),
    ("op=write,every=x,errno=EIO", ["every must be an integer"]),
    ("op=write,times=0,errno=EIO", ["times must be >= 1"]),
    ("op=write,after=-1,errno=EIO", ["after must be >= 0"]),
    ("op=write,pid=me,errno=EIO", ["pid must be an integer"]),
    ("op=write,seed=3,errno=EIO", ["seed is for probability="]),
    ("op=mkdir,short=3", ["short applies to read and write only"]),
    ("op=write,short=0", ["short must be >= 1"]),
    ("op=write,short=3,errno=EIO", ["errno and short exclude each other"]),
    ("op=release,errno=EIO", ["cannot be injected into release"]),
    ("op=write,errno=EIO,errno=EIO", ["errno given twice"]),
    ("op=write,EIO", ["is not key=value"]),
])
def test_bad_rules_are_refused_with_a_reason(text: str, words: list[str]) -> None:
    with pytest.raises(RuleError) as e:
        parse_rule(text)
    message = str(e.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message


def test_release_takes_a_delay() -> None:
    assert parse_rule("op=release,delay=1ms").delay_ns == 1_000_000


def test_when_a_rule_fires() -> None:
    assert fired("op=write,errno=EIO", 4) == [1, 2, 3, 4]
    assert fired("op=write,errno=EIO,nth=3", 10) == [3]
    assert fired("op=write,errno=EIO,every=3", 10) == [3, 6, 9]
    assert fired("op=write,errno=EIO,after=7", 10) == [8, 9, 10]
    assert fired("op=write,errno=EIO,times=2", 10) == [1, 2]
    assert fired("op=write,errno=EIO,after=2,times=2", 10) == [3, 4]
    assert fired("op=write,errno=EIO,every=2,times=3", 10) == [2, 4, 6]
    assert fired("op=write,errno=EIO,probability=0", 50) == []
    assert fired("op=write,errno=EIO,probability=1", 5) == [1, 2, 3, 4, 5]


def test_probability_with_a_seed_is_the_seeded_sequence() -> None:
    got = fired("op=write,errno=EIO,probability=0.3,seed=7", 200)
    rng = random.Random(7)
    assert got == [n for n in range(1, 201) if rng.random() < 0.3]
    assert got == fired("op=write,errno=EIO,probability=0.3,seed=7", 200)
    assert got != fired("op=write,errno=EIO,probability=0.3,seed=8", 200)
    assert 30 < len(got) < 90


def test_rules_file_lines_comments_and_errors() -> None:
    rules = parse_rules_file("# slow disk\n\nop=read,delay=1ms\n  op=write,errno=ENOSPC  \n", "r.txt")
    assert [r.text for r in rules] == ["op=read,delay=1ms", "op=write,errno=ENOSPC"]
    with pytest.raises(RuleError, match=r"^r.txt:3: unknown key 'x'"):
        parse_rules_file("op=read,delay=1ms\n# ok\nop=write,x=1\n", "r.txt")


class Recorder:
    """An inner filesystem that records what reached it."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self.calls.append(("write", path, data))
        return len(data)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self.calls.append(("read", path, size))
        return b"x" * size

    def rename(self, old: str, new: str, flags: int) -> None:
        self.calls.append(("rename", old, new))


def test_layer_errno_short_path_and_caller() -> None:
    inner = Recorder()
    caller = [(0, 0, 100)]
    ops = FaultInjectingOperations(inner, [parse_rule("op=write,path=/d/*.db,errno=ENOSPC"),
                                           parse_rule("op=read,short=2,uid=1000"),
                                           parse_rule("op=rename,path=/b,errno=EXDEV,pid=42")],
                                   context=lambda: caller[0])
    with pytest.raises(OSError) as e:
        ops.write("/d/x.db", b"data", 0, 1)
    assert e.value.errno == errno.ENOSPC and inner.calls == []  # nothing reached the filesystem
    assert ops.write("/d/x.txt", b"data", 0, 1) == 4
    assert ops.read("/f", 10, 0, 1) == b"x" * 10  # uid 0: not this rule's
    caller[0] = (1000, 1000, 100)
    assert ops.read("/f", 10, 0, 1) == b"xx"
    ops.rename("/a", "/b", 0)  # pid 100, not 42
    caller[0] = (0, 0, 42)
    with pytest.raises(OSError):
        ops.rename("/a", "/b", 0)  # path2 matches too
    assert inner.calls == [("write", "/d/x.txt", b"data"), ("read", "/f", 10), ("read", "/f", 2),
                           ("rename", "/a", "/b")]
    assert ops.direct_io_for("/f") and not Recorder.__dict__.get("direct_io_for")


def test_layer_exposes_exactly_what_the_inner_object_implements() -> None:
    ops = FaultInjectingOperations(Recorder(), [parse_rule("op=write,errno=EIO")])
    assert callable(ops.read) and callable(ops.rename) and not hasattr(ops, "mkdir")
    assert ops.read.__self__ is not ops  # not wrapped: no rule names it, so it costs nothing  # type: ignore[attr-defined]
    reloadable = FaultInjectingOperations(Recorder(), [], reloadable=True)
    assert reloadable.read("/f", 3, 0, 1) == b"xxx"
    reloadable.set_rules([parse_rule("op=read,errno=EIO")])
    with pytest.raises(OSError):
        reloadable.read("/f", 3, 0, 1)
