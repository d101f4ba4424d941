"""Fault rules: parsing (every key, every refusal) and when a rule fires (nth, every, after, times, probability)."""

from __future__ import annotations

import errno
import random

import pytest

from fuse_passthrough.faults import RuleError, parse_rule, parse_rules_file


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
