"""reduce_run on a small run folder written with parquet files."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from reduce_builders import preds, sample, write_run
from vlm_eval.config import TaxonomyConfig
from vlm_eval.reduce import reduce_run
from vlm_eval.schema import QUADRANT_COLUMNS, SUMMARY_COLUMNS


def test_reduce_run_writes_contract_tables(tiny_run):
    counts = reduce_run(tiny_run, n_boot=200, seed=3)
    assert counts["models"]["a"] == {"n_samples": 6, "complete": 4, "incomplete": 1, "errors": 1, "manifest_errors": 0,
                                     "condition_errors": 0, "duplicates_dropped": 0, "orphan_predictions": 0,
                                     "unusable_predictions": 0}
    assert counts["models"]["b"]["complete"] == 5 and counts["problems"] == []

    folder = os.path.join(tiny_run, "quadrants")
    q = pd.read_parquet(folder)
    assert set(q.columns) == set(QUADRANT_COLUMNS)
    assert sorted(q["model"].astype(str).unique()) == ["a", "b"]
    for path in ds.dataset(folder, format="parquet", partitioning="hive").files:
        assert "model" not in pq.read_schema(path).names  # the hive key lives in the path only
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 10 and "model" in table.column_names

    a = q[q["model"].astype(str) == "a"].set_index("sample_id")
    assert a.loc[["s1", "s2", "s3", "s4"], "quadrant"].tolist() == ["Ideal", "Fragile", "Dangerous", "Worst"]
    assert not a.loc["s5", "complete"] and "variants [2]" in a.loc["s5", "incomplete_reason"]
    assert "s6" not in a.index  # errored for all models: in errors/, not in quadrants

    summary = pd.read_parquet(os.path.join(tiny_run, "summary.parquet"))
    assert set(SUMMARY_COLUMNS) <= set(summary.columns)
    top = summary[summary["finding"].isna()].set_index("model")
    assert top.loc["a", "n"] == 4 and top.loc["a", "n_incomplete"] == 1 and top.loc["a", "n_errors"] == 1
    assert top.loc["a", "frac_ideal"] == pytest.approx(0.25) and top.loc["b", "frac_dangerous"] == 1.0
    assert top.loc["a", "flip_rate_question"] == pytest.approx(0.5)
    assert top.loc["a", "flip_rate_pair"] == pytest.approx(2 / 8)
    assert top.loc["a", "frac_ideal_ci_low"] <= 0.25 <= top.loc["a", "frac_ideal_ci_high"]
    per_finding = summary[summary["finding"].notna()]
    assert set(per_finding["finding"]) == {"effusion", "nodule"}
    assert per_finding.set_index(["model", "finding"]).loc[("a", "nodule"), "frac_worst"] == 1.0

    doc = json.loads(open(os.path.join(tiny_run, "summary.json")).read())
    assert len(doc["rows"]) == len(summary) and doc["taxonomy"] == {"ablation": "text_only", "reliance": "original"}
    assert doc["paired"][0]["model_a"] == "a" and doc["paired"][0]["n"] == 4


def test_reduce_run_is_deterministic_and_replaces_old_output(tiny_run):
    reduce_run(tiny_run, n_boot=100, seed=1)
    first = pd.read_parquet(os.path.join(tiny_run, "summary.parquet"))
    stale = os.path.join(tiny_run, "quadrants", "model=gone")
    os.makedirs(stale)
    pd.DataFrame({"x": [1]}).to_parquet(os.path.join(stale, "part-00000.parquet"))
    pd.DataFrame({"x": [1]}).to_parquet(os.path.join(tiny_run, "quadrants", "model=a", "old-part.parquet"))
    reduce_run(tiny_run, n_boot=100, seed=1)
    pd.testing.assert_frame_equal(first, pd.read_parquet(os.path.join(tiny_run, "summary.parquet")))
    assert not os.path.exists(os.path.join(stale, "part-00000.parquet"))
    assert os.listdir(os.path.join(tiny_run, "quadrants", "model=a")) == ["part-00000.parquet"]


def test_taxonomy_override_changes_quadrants(tiny_run):
    reduce_run(tiny_run, taxonomy=TaxonomyConfig(reliance="any"), n_boot=50)
    q = pd.read_parquet(os.path.join(tiny_run, "quadrants", "model=a"))
    assert q.set_index("sample_id").loc["s3", "quadrant"] == "Dangerous"
    assert json.loads(open(os.path.join(tiny_run, "summary.json")).read())["taxonomy"]["reliance"] == "any"


def test_duplicates_model_errors_and_accounting(tmp_path):
    samples = [sample(f"s{i}", patient=f"p{i % 3}") for i in range(8)]
    rows = sum((preds(f"s{i}", [1, 1, 1], [-1, -1, -1]) for i in range(8)), [])
    rows_b = sum((preds(f"s{i}", [1, 1, 1], [1, 1, 1]) for i in range(8)), [])
    dup = rows[:5] + rows  # a rerun wrote five rows again
    errors = [dict(sample_id="s7", stage="score", error_type="Timeout", message="t", model="a", source=None),
              dict(sample_id="ghost", stage="manifest", error_type="ParseError", message="bad row", model=None, source=None)]
    run = write_run(tmp_path / "r", samples, {"a": dup, "b": rows_b}, errors)
    counts = reduce_run(run, n_boot=50)
    a, b = counts["models"]["a"], counts["models"]["b"]
    assert a["duplicates_dropped"] == 5 and a["errors"] == 2 and a["complete"] == 7
    assert b["errors"] == 1 and b["complete"] == 8
    # A manifest-stage row never became a sample: counted, not a problem.
    assert a["manifest_errors"] == 1 and not any("not in samples/" in p for p in counts["problems"])
    q = pd.read_parquet(os.path.join(run, "quadrants"))
    for model, c in counts["models"].items():
        n_rows = int((q["model"].astype(str) == model).sum())
        in_samples_errors = c["errors"] - 1  # 'ghost' never became a sample
        assert n_rows + in_samples_errors == c["n_samples"]
    summary = pd.read_parquet(os.path.join(run, "summary.parquet"))
    top = summary[summary["finding"].isna()].set_index("model")
    assert top.loc["a", "n_errors"] == 2 and top.loc["b", "n_errors"] == 1  # ghost attributed to the only dataset
    assert top.loc["a", "frac_ideal"] == 1.0 and np.isfinite(top.loc["a", "frac_ideal_ci_low"])


def test_model_without_predictions_is_all_incomplete(tmp_path):
    run = write_run(tmp_path / "r", [sample("s1"), sample("s2")], {"a": preds("s1", [1, 1, 1], [1, 1, 1])},
                    job={"name": "t", "taxonomy": {}, "models": [{"name": "a"}, {"name": "late"}]})
    counts = reduce_run(run, n_boot=20)
    assert counts["models"]["late"]["incomplete"] == 2 and counts["models"]["a"]["incomplete"] == 1
    q = pd.read_parquet(os.path.join(run, "quadrants"))
    assert len(q) == 4
