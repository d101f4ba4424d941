"""Summary numbers: counts, errors, totals, percentiles within a bucket, bytes."""

import io
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuse_passthrough.tracing import stats
from fuse_passthrough.tracing.stats import Summary


def test_counts_totals_and_bytes() -> None:
    s = Summary()
    for d in (1000, 2000, 3000, 4000):
        s.add("read", d, False, 4096)
    s.add("read", 10_000, True, None)
    s.add("write", 500, False, 10)
    d = s.as_dict()
    r = d["ops"]["read"]
    assert (r["calls"], r["errors"], r["total_ns"], r["bytes_read"]) == (5, 1, 20_000, 4 * 4096)
    assert r["mean_ns"] == 4000
    assert d["ops"]["write"]["bytes_written"] == 10
    assert d["total_calls"] == 6 and d["total_errors"] == 1


def test_percentiles_are_within_a_bucket() -> None:
    s = Summary()
    for i in range(1, 1001):
        s.add("getattr", i * 1000, False, None)
    st = s.ops["getattr"]
    assert abs(st.percentile(0.5) - 500_000) / 500_000 < 0.05
    assert abs(st.percentile(0.99) - 990_000) / 990_000 < 0.05


def test_render_and_json(tmp_path) -> None:
    s = Summary()
    s.add("open", 1500, False, 3)
    out = io.StringIO()
    s.render(out)
    text = out.getvalue()
    assert "open" in text and "total" in text and "% time" in text
    s.write_json(str(tmp_path / "s.json"))
    assert json.loads((tmp_path / "s.json").read_text())["ops"]["open"]["calls"] == 1


@pytest.mark.parametrize("counting", ["compiled", "python"])
@given(st.lists(st.tuples(
    st.sampled_from(["read", "write", "copy_file_range", "getattr", "lookup"]),
    st.one_of(st.integers(0, 10**12), st.sampled_from([(1 << 63) - 1, 1 << 63, 1 << 70, -5, 0, 1, 2])),
    st.sampled_from([0, 0, 2, 28]),
    st.one_of(st.none(), st.integers(0, 1 << 40), st.sampled_from([1 << 64, -1]), st.booleans(), st.text(max_size=2)),
    st.sampled_from([None, "", "errno=EIO"])), max_size=40))
def test_a_batch_adds_up_as_its_events_one_by_one(counting: str, events: list[tuple[Any, ...]]) -> None:
    """In C (_jsonl.tally, which leaves durations beyond 64 bits and the like to the loop) and in Python alike."""
    if counting == "compiled" and stats._tally is None:
        pytest.skip("the C module _jsonl is not built")
    items = [(i, 0.0, op, (), result, err, ns, 1, 0, 0, "x", None, injected)
             for i, (op, ns, err, result, injected) in enumerate(events)]
    one_by_one, batch = Summary(), Summary()
    for item in items:
        one_by_one.add(item[2], item[6], bool(item[5]), item[4], bool(item[12]))
    if counting == "compiled":
        batch.add_batch(items)
    else:
        batch.add_loop(items)
    assert batch.as_dict() == one_by_one.as_dict()
    assert {op: s.histogram for op, s in batch.ops.items()} == {op: s.histogram for op, s in one_by_one.ops.items()}
    assert list(batch.ops) == list(one_by_one.ops)  # the same order, for equal totals in the summary table


def test_the_compiled_tally_counts_common_batches_itself() -> None:
    """The C tally answers a writer's usual batch (None would mean the Python loop did the work)."""
    if stats._tally is None:
        pytest.skip("the C module _jsonl is not built")
    items = [(i, 0.0, ("read", "getattr", "write")[i % 3], (), 4096, i % 5 == 0, 1000 + i, 1, 0, 0, "x", None, None)
             for i in range(3000)]
    rows = stats._tally(items)
    assert rows is not None and [r[0] for r in rows] == ["read", "getattr", "write"]
    assert sum(r[1] for r in rows) == 3000 and sum(sum(c for _, c in r[7]) for r in rows) == 3000
    assert stats._tally(items + [(0, 0.0, "read", (), 0, 0, 1 << 64, 1, 0, 0, "x", None, None)]) is None
