"""The binding's per-request conversions in C (_trampolines.c: stat_from, entry_from) give the same bytes as
their Python definitions (the fallback where the module is not built), for any os.stat_result."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuse_passthrough.lowlevel import binding as ll

pytestmark = pytest.mark.skipif(ll._trampolines is None, reason="_trampolines.c is not built")

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
S64 = st.integers(-(2**63), 2**63 - 1)
NS = st.integers(-(2**62), 2**62)  # times before 1970 too: tv_nsec stays in [0, 1e9)


@st.composite
def stat_results(draw: st.DrawFn) -> os.stat_result:
    values = {"st_mode": draw(U32), "st_ino": draw(U64), "st_dev": draw(U64), "st_nlink": draw(U64),
              "st_uid": draw(U32), "st_gid": draw(U32), "st_size": draw(S64), "st_atime_ns": draw(NS),
              "st_mtime_ns": draw(NS), "st_ctime_ns": draw(NS), "st_blksize": draw(S64), "st_blocks": draw(S64),
              "st_rdev": draw(U64)}
    # os.stat_result has no keyword constructor: its fields in their places, found as binding.py finds them
    probe = os.stat_result(tuple(range(os.stat_result.n_fields)))
    fields: list[object] = [0] * os.stat_result.n_fields
    for name, value in values.items():
        fields[getattr(probe, name)] = value
    return os.stat_result(fields)


@given(stat_results())
def test_stat_from_in_c_is_the_python_one(s: os.stat_result) -> None:
    assert ll.stat_from is not ll._stat_from
    assert bytes(ll.stat_from(s)) == bytes(ll._stat_from(s))


@given(stat_results(), U64, U64, st.floats(0, 1e9), st.floats(0, 1e9))
def test_entry_from_in_c_is_the_python_one(s: os.stat_result, ino: int, generation: int, attr_timeout: float,
                                           entry_timeout: float) -> None:
    assert bytes(ll.entry_from(ino, s, attr_timeout, entry_timeout, generation)) == bytes(
        ll._entry_from(ino, s, attr_timeout, entry_timeout, generation))


def test_a_real_stat() -> None:
    s = os.lstat("/")
    attr = ll.stat_from(s)
    assert (attr.st_ino, attr.st_mode, attr.st_mtim.tv_sec * 10**9 + attr.st_mtim.tv_nsec) == (
        s.st_ino, s.st_mode, s.st_mtime_ns)


def test_not_a_stat_result() -> None:
    with pytest.raises(TypeError):
        ll.stat_from((1, 2, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ll._trampolines.fill_stat(ll.EntryParam(), os.lstat("/"))  # the wrong struct: its size differs
