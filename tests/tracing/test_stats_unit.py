"""Summary numbers: counts, errors, totals, percentiles within a bucket, bytes."""

import io
import json

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
