"""The reducer's anomaly counters fire, with the right counts, and never change the tables
(issue 16.3): orphan predictions, sample_ids repeated in samples/, errors for unknown
samples, dropped duplicate predictions."""
from __future__ import annotations

import os
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reduce"))
from reduce_builders import preds, sample, write_run  # noqa: E402

from vlm_eval.reduce import reduce_run  # noqa: E402
from vlm_eval.schema import SAMPLES, conform  # noqa: E402

GOOD = {"s1": ([2, 2, 2], [-1, -1, -1]), "s2": ([-2, -2, -2], [-1, -1, -1])}


def _run(tmp_path, extra_rows=(), errors=None, name="run"):
    samples = [sample(sid, patient=f"p{i}") for i, sid in enumerate(GOOD)]
    rows = sum((preds(sid, img, txt) for sid, (img, txt) in GOOD.items()), []) + list(extra_rows)
    return write_run(tmp_path / name, samples, {"m": rows}, errors)


def _tables(run):
    q = pd.read_parquet(os.path.join(run, "quadrants")).drop(columns="model")
    s = pd.read_parquet(os.path.join(run, "summary.parquet"))
    return q.sort_values("sample_id").reset_index(drop=True), s


def test_clean_run_reports_no_anomaly(tmp_path):
    counts = reduce_run(_run(tmp_path), n_boot=50)
    assert counts["problems"] == []
    m = counts["models"]["m"]
    assert (m["orphan_predictions"], m["duplicates_dropped"], m["errors"]) == (0, 0, 0)


def test_orphan_predictions_are_counted_and_ignored(tmp_path):
    clean = _run(tmp_path, name="clean")
    reduce_run(clean, n_boot=50)
    ghost = preds("ghost", [5, 5, 5], [5, 5, 5], shared=False) + preds("ghost2", [1], [], shared=False)
    run = _run(tmp_path, extra_rows=ghost)
    counts = reduce_run(run, n_boot=50)
    # 3 image + 3 text_only rows for ghost, 1 image row for ghost2: 7 rows for unknown samples
    assert counts["models"]["m"]["orphan_predictions"] == 7
    assert any("7" in p and "not in samples" in p for p in counts["problems"]), counts["problems"]
    (q, s), (q0, s0) = _tables(run), _tables(clean)
    pd.testing.assert_frame_equal(q, q0)  # ignored: the tables are those of the clean run
    pd.testing.assert_frame_equal(s, s0)


def test_repeated_sample_ids_are_reported_and_counted_once(tmp_path):
    run = _run(tmp_path)
    dup = conform(pa.Table.from_pylist([sample("s1", patient="p0")]), SAMPLES)
    pq.write_table(dup, os.path.join(run, "samples", "part-1.parquet"))
    counts = reduce_run(run, n_boot=50)
    assert any("s1" in p and "repeated" in p for p in counts["problems"]), counts["problems"]
    q, s = _tables(run)
    assert list(q["sample_id"]) == ["s1", "s2"]
    assert counts["models"]["m"]["n_samples"] == 2 and int(s.loc[s["finding"].isna(), "n"].iloc[0]) == 2


def test_errors_for_unknown_samples_are_reported(tmp_path):
    errs = [dict(sample_id="nobody", stage="image", error_type="missing", message="gone", model=None, source="u")]
    counts = reduce_run(_run(tmp_path, errors=errs), n_boot=50)
    assert any("errored sample_ids not in samples" in p and "1" in p for p in counts["problems"]), counts["problems"]


def test_dropped_duplicate_predictions_are_counted(tmp_path):
    repeat = preds("s1", [2, 2, 2], [])[:2]  # variants 0 and 1 of s1 written twice
    run = _run(tmp_path, extra_rows=repeat)
    counts = reduce_run(run, n_boot=50)
    assert counts["models"]["m"]["duplicates_dropped"] == 2
    clean = _run(tmp_path, name="clean")
    reduce_run(clean, n_boot=50)
    pd.testing.assert_frame_equal(_tables(run)[0], _tables(clean)[0])
