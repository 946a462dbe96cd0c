"""Tests written to kill the surviving mutants of ``vlm_eval/reduce/run.py`` (mutmut, issue 16;
docs/testing.md): the accounting check's every message, the anomaly counters and their
problem lines (orphans, repeated sample_ids, errors for unknown samples, unusable rows,
condition errors), the errored-sample table, stale part removal and summary.json.

Every expected value is worked out by hand (arithmetic in a comment), never by calling the
function under test.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from reduce_builders import preds, preds_frame, sample, write_run
from vlm_eval.layout import RunLayout
from vlm_eval.reduce import reduce_run
from vlm_eval.reduce.partition import bucket_of
from vlm_eval.reduce.run import (ReduceAccountingError, _add_counts, _condition_notes, _json_clean, _json_records,
                                 _part, _positions, _remove_stale, _unusable, accounting_problems, errored_table)


def _errs(*rows):
    """errors/ rows (sample_id, stage, error_type, message, model) as tables.errors gives them."""
    return pd.DataFrame([dict(sample_id=s, stage=st, error_type=t, message=m, model=mo, source=None)
                         for s, st, t, m, mo in rows], columns=["sample_id", "stage", "error_type", "message",
                                                                "model", "source"]).astype(object)


# --------------------------------------------------------------------------- errored_table

def test_errored_table_one_row_per_model_and_errored_sample_with_the_first_samples_row():
    samples = pd.DataFrame({"sample_id": ["s1", "s1", "s2"], "dataset": ["d1", "d9", "d1"],
                            "finding": ["f1", "f9", "f2"]})  # s1 twice: its first row counts
    errs = _errs(("s1", "score", "Timeout", "t", "a"),  # s1 failed for model a only
                 ("s2", "load_image", "Missing", "gone", None),  # s2 failed for every model
                 ("m1", "manifest", "ParseError", "bad row", None))  # never became a sample
    got = errored_table(samples, errs, ["a", "b"], datasets=["d1"])
    # a: s1, s2 (errored_sample_ids, sorted) + manifest m1; b: s2 + m1. m1 is unknown: the run's only dataset d1
    assert list(got.index) == [0, 1, 2, 3, 4]
    assert list(got.columns) == ["model", "sample_id", "dataset", "finding"]
    assert got[["model", "sample_id", "dataset"]].values.tolist() == [
        ["a", "s1", "d1"], ["a", "s2", "d1"], ["a", "m1", "d1"], ["b", "s2", "d1"], ["b", "m1", "d1"]]
    assert got["finding"].tolist()[:2] == ["f1", "f2"] and got["finding"].iloc[2:3].isna().all()
    # two datasets in samples (default: the frame's own): an unknown id is not attributed
    two = errored_table(samples, errs, ["a"])
    assert two["dataset"].tolist()[:2] == ["d1", "d1"] and pd.isna(two["dataset"].iloc[2])


def test_errored_table_without_models_is_empty_with_its_columns():
    got = errored_table(pd.DataFrame({"sample_id": ["s"], "dataset": ["d"], "finding": ["f"]}),
                        _errs(("s", "score", "T", "t", None)), [])
    assert len(got) == 0 and list(got.columns) == ["model", "sample_id", "dataset", "finding"]


# --------------------------------------------------------------------------- accounting_problems

def test_accounting_problems_name_each_violation_with_at_most_3_examples():
    samples = pd.DataFrame({"sample_id": list("abcdefgh")})
    # quadrant rows: a twice, then c d e f g (errored too), none for b or h
    quad = pd.DataFrame({"sample_id": ["a", "a", "c", "d", "e", "f", "g"]})
    errored = np.array(["c", "d", "e", "f", "zz"], dtype=object)  # zz: not a sample, ignored
    assert accounting_problems(samples, quad, errored, "m") == [
        "m: 1 duplicate quadrant rows",
        "m: 4 samples both errored and in quadrants, e.g. ['c', 'd', 'e']",  # c d e f; three shown
        "m: 2 samples neither in quadrants nor errors, e.g. ['b', 'h']"]
    four_missing = pd.DataFrame({"sample_id": ["a"]})
    assert accounting_problems(samples.iloc[:5], four_missing, np.array([], dtype=object), "m") == [
        "m: 4 samples neither in quadrants nor errors, e.g. ['b', 'c', 'd']"]


def test_accounting_problems_count_mismatch_is_reported_when_nothing_else_is():
    # quadrant rows for a sample that is not in samples: no duplicate, no overlap, nothing missing,
    # but 1 distinct quadrant id + 1 errored = 2 != 1 sample
    samples = pd.DataFrame({"sample_id": ["a", "b"]})
    quad = pd.DataFrame({"sample_id": ["a", "ghost"]})
    assert accounting_problems(samples, quad, np.array(["b"], dtype=object), "m") == [
        "m: 2 samples != 2 quadrant rows + 1 errored"]  # 2 distinct quadrant ids + 1 errored = 3 != 2
    # balanced: a in quadrants, b errored: nothing to say
    assert accounting_problems(samples, quad.iloc[:1], np.array(["b"], dtype=object), "m") == []


# --------------------------------------------------------------------------- small helpers

def test_condition_notes_append_the_first_condition_error_to_incomplete_rows_only():
    quad = pd.DataFrame({"sample_id": ["s1", "s2", "s3", "s4"],
                         "incomplete_reason": ["r1", None, "r3", "r4"]})
    partial = _errs(("s1", "image", "swap_missing", "gone", None), ("s1", "image", "swap_other", "later", None),
                    ("s2", "image", "swap_missing", "x", None),  # s2 complete: no note
                    ("s3", "image", "swap_missing", None, None),  # no message: "swap_missing: "
                    ("s9", "image", "swap_missing", "y", None))  # not in quad
    got = _condition_notes(quad, partial)
    reasons = got["incomplete_reason"].tolist()
    assert reasons[0] == "r1; swap_missing: gone" and pd.isna(reasons[1])
    assert reasons[2:] == ["r3; swap_missing: ", "r4"]
    assert quad["incomplete_reason"].tolist()[2:] == ["r3", "r4"]  # the input is not changed


def test_unusable_counts_rows_without_an_error_and_without_a_margin_per_model():
    rows = [dict(sample_id="s", variant=0, condition="image", prompt_id="p", logprob_yes=ly, logprob_no=ln, error=e)
            for ly, ln, e in ((-0.1, -2.0, None),  # usable
                              (None, -2.0, None),  # no margin, no error: unusable
                              (-np.inf, -np.inf, None),  # -inf both: unusable
                              (None, None, "OOM"))]  # an engine error: counted elsewhere
    a = preds_frame(rows, model="a")
    b = preds_frame(rows[1:2] + rows[:1], model="b")
    assert _unusable(pd.concat([a, b], ignore_index=True)) == {"a": 2, "b": 1}
    assert _unusable(a.iloc[:0]) == {} and _unusable(a.iloc[:1]) == {}


def test_json_helpers_keep_15_decimals_and_make_nan_null():
    assert _json_records(pd.DataFrame({"x": [1 / 3, np.nan], "k": ["a", None]})) == [
        {"x": 0.333333333333333, "k": "a"}, {"x": None, "k": None}]
    assert _json_clean({"a": np.float64(2 / 3), "b": np.nan, "c": np.int64(2), "d": [np.float64(0.5)]}) == {
        "a": 0.666666666666667, "b": None, "c": 2, "d": [0.5]}
    assert _json_clean(np.float64(1 / 7)) == 0.142857142857143


def test_positions_are_checked_not_assumed():
    todo = pd.DataFrame({"sample_id": ["b", "d"]})
    mask = np.array([False, True, False, True])
    assert _positions(todo, pd.DataFrame({"sample_id": ["b", "d"]}), mask).tolist() == [1, 3]
    for quad_ids in (["d", "b"], ["b"], ["b", "d", "d"]):
        with pytest.raises(ReduceAccountingError) as info:
            _positions(todo, pd.DataFrame({"sample_id": quad_ids}), mask)
        assert str(info.value) == "quadrant rows are not one per sample of the bucket, in order"


def test_add_counts_sums_per_key():
    total = {"a": 1}
    _add_counts(total, {"a": np.int64(2), "b": 3})
    _add_counts(total, {})
    assert total == {"a": 3, "b": 3} and all(type(v) is int for v in total.values())


def test_remove_stale_keeps_this_reduces_parts_under_a_path_with_a_backslash(tmp_path):
    root = tmp_path / "odd\\name" / "run"  # a legal POSIX folder name
    layout = RunLayout(str(root))
    keep = [_part(layout, m, j) for m in ("a", "b") for j in range(2)]
    stale = [_part(layout, "a", 2), _part(layout, "gone", 0), os.path.join(layout.model_quadrants_dir("a"), "x.txt")]
    for p in keep + stale:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "w").write("x")
    assert keep[0] == str(root / "quadrants" / "model=a" / "part-00000.parquet")
    _remove_stale(layout, ["a", "b"], 2)
    assert all(os.path.exists(p) for p in keep) and not any(os.path.exists(p) for p in stale)


# --------------------------------------------------------------------------- reduce_run anomalies

GOOD = {"s1": ([2, 2, 2], [-1, -1, -1]), "s2": ([-2, -2, -2], [-1, -1, -1]), "s3": ([2, 2, 2], [2, 2, 2])}


def _rows(extra=()):
    return sum((preds(sid, img, txt) for sid, (img, txt) in GOOD.items()), []) + list(extra)


def test_reduce_run_reports_each_anomaly_in_words_counts_and_summary_json(tmp_path, caplog):
    samples = [sample(s, patient=f"p{i}") for i, s in enumerate(GOOD)] + [sample("s1", patient="p0")]  # s1 twice
    ghost = preds("ghost", [5, 5], [], shared=False)  # 2 image rows for an unknown sample, model a
    # model b: s3's 3 image rows without log-probabilities (and without an error): unusable, s3 incomplete
    b_rows = [dict(r, logprob_yes=None) if r["sample_id"] == "s3" and r["condition"] == "image" else r
              for r in _rows()]
    errs = [dict(sample_id="nobody", stage="score", error_type="Timeout", message="t", model="b", source=None),
            dict(sample_id="s3", stage="image", error_type="swap_missing", message="no partner", model=None,
                 source=None)]
    run = write_run(tmp_path / "r", samples, {"a": _rows(ghost), "b": b_rows}, errs)
    with caplog.at_level(logging.WARNING, logger="vlm_eval.reduce.run"):
        counts = reduce_run(run, n_boot=20, seed=5)
    problems = ["1 sample_ids repeated in samples/ (first row kept), e.g. ['s1']",
                "a: 2 prediction rows for sample_ids not in samples/ (ignored)",
                "b: 1 errored sample_ids not in samples/",
                "b: 3 prediction rows without an error but with NaN, missing or infinite log-probabilities "
                "(their samples are incomplete)"]
    assert counts["problems"] == problems
    assert [r.getMessage() for r in caplog.records if r.name == "vlm_eval.reduce.run"] == [
        f"reduce: {p}" for p in problems]
    a, b = counts["models"]["a"], counts["models"]["b"]
    # a: s1..s3 complete (s3's swap error is a condition error, not an errored sample), 2 orphan rows
    assert a == {"n_samples": 3, "complete": 3, "incomplete": 0, "errors": 0, "manifest_errors": 0,
                 "condition_errors": 1, "duplicates_dropped": 0, "orphan_predictions": 2, "unusable_predictions": 0}
    # b: "nobody" counts as an error (1); s3's 3 unusable rows leave it incomplete: 2 complete + 1 incomplete
    assert b == {"n_samples": 3, "complete": 2, "incomplete": 1, "errors": 1, "manifest_errors": 0,
                 "condition_errors": 1, "duplicates_dropped": 0, "orphan_predictions": 0, "unusable_predictions": 3}
    doc = json.loads(open(os.path.join(run, "summary.json")).read())
    assert doc["counts"] == counts["models"] and doc["problems"] == problems and doc["notes"] == counts["notes"]
    assert (doc["n_boot"], doc["seed"]) == (20, 5) and counts["taxonomy"] == doc["taxonomy"]
    assert set(doc) == {"taxonomy", "n_boot", "seed", "rows", "flip_vs_dangerous", "paired", "counts", "problems",
                        "notes"}
    assert doc["rows"] == json.loads(pd.read_parquet(os.path.join(run, "summary.parquet")).to_json(
        orient="records", double_precision=15))


def test_clean_reduce_says_nothing(tmp_path, caplog):
    run = write_run(tmp_path / "r", [sample(s, patient=f"p{i}") for i, s in enumerate(GOOD)], {"a": _rows()})
    with caplog.at_level(logging.WARNING, logger="vlm_eval.reduce.run"):
        counts = reduce_run(run, n_boot=10)
    assert counts["problems"] == [] and not [r for r in caplog.records if r.name == "vlm_eval.reduce.run"]
    assert os.listdir(os.path.join(run, "quadrants", "model=a")) == ["part-00000.parquet"]  # small run: 1 bucket


def test_reduce_run_defaults_are_1000_resamples_and_seed_0(tmp_path):
    run = write_run(tmp_path / "r", [sample(s, patient=f"p{i}") for i, s in enumerate(GOOD)], {"a": _rows()})
    reduce_run(run)
    doc = json.loads(open(os.path.join(run, "summary.json")).read())
    assert (doc["n_boot"], doc["seed"]) == (1000, 0)


def _blank_run(root, conditions):
    """s1..s3 with text_only (shared) and blank (per sample) rows; run.json's job lists ``conditions``."""
    rows = _rows(sum((preds(s, [None] * 3, [1, 1, 1], ablation="blank", shared=False) for s in GOOD), []))
    job = {"name": "t", "taxonomy": {"ablation": "text_only", "reliance": "original"}, "models": [{"name": "a"}],
           "conditions": conditions}
    return write_run(root, [sample(s, patient=f"p{i}") for i, s in enumerate(GOOD)], {"a": rows}, job=job)


def test_the_jobs_conditions_decide_the_ablation_columns(tmp_path):
    # the job ran image + text_only: stray blank rows give no blank columns
    run = _blank_run(tmp_path / "two", ["image", "text_only"])
    reduce_run(run, n_boot=10)
    cols = pq.read_schema(os.path.join(run, "quadrants", "model=a", "part-00000.parquet")).names
    assert not [c for c in cols if c.startswith("blank_")] and "image_prediction" not in cols
    # the job ran blank too: its four columns
    run = _blank_run(tmp_path / "three", ["image", "text_only", "blank"])
    reduce_run(run, n_boot=10)
    cols = pq.read_schema(os.path.join(run, "quadrants", "model=a", "part-00000.parquet")).names
    assert [c for c in cols if c.startswith("blank_")] == ["blank_prediction", "blank_margin", "blank_reliant",
                                                          "blank_margin_shift"]
    q = pd.read_parquet(os.path.join(run, "quadrants", "model=a")).set_index("sample_id")
    assert q["blank_prediction"].tolist() == ["yes", "yes", "yes"]  # margin 1 > 0 for every sample


def test_repeated_sample_ids_show_at_most_3_examples(tmp_path):
    ids = ["s1", "s2", "s3", "s4"]
    samples = [sample(s, patient=f"p{i}") for i, s in enumerate(ids)] * 2  # every sample_id twice
    rows = sum((preds(s, [1, 1, 1], [1, 1, 1]) for s in ids), [])
    counts = reduce_run(write_run(tmp_path / "r", samples, {"a": rows}), n_boot=10)
    assert counts["problems"] == ["4 sample_ids repeated in samples/ (first row kept), e.g. ['s1', 's2', 's3']"]
    assert counts["models"]["a"]["n_samples"] == 4


def test_errors_in_several_buckets_reach_the_summary_and_counts(tmp_path):
    ids = [f"s{i}" for i in range(1, 9)]
    samples = [sample(s, patient=f"p{i}", finding="effusion" if i <= 4 else "nodule") for i, s in enumerate(ids, 1)]
    rows = sum((preds(s, [1, 1, 1], [-1, -1, -1]) for s in ids), [])
    errs = [dict(sample_id="s2", stage="image", error_type="missing", message="gone", model=None, source=None),
            dict(sample_id="s7", stage="score", error_type="Timeout", message="t", model="a", source=None),
            dict(sample_id="m1", stage="manifest", error_type="ParseError", message="bad", model=None, source=None)]
    run = write_run(tmp_path / "r", samples, {"a": rows}, errs)
    counts = reduce_run(run, n_boot=10, buckets=4)
    assert bucket_of(["s2", "s7"], 4).tolist() == [2, 0]  # the two errored samples are reduced in different buckets
    assert counts["problems"] == []  # both found in samples/, each in its own bucket
    assert sorted(os.listdir(os.path.join(run, "quadrants", "model=a"))) == [
        f"part-{j:05d}.parquet" for j in range(4)]
    # 8 samples; s2 and s7 errored (+ manifest m1): 6 quadrant rows, all complete; errors 2 + 1 = 3
    assert counts["models"]["a"] == {"n_samples": 8, "complete": 6, "incomplete": 0, "errors": 3, "manifest_errors": 1,
                                     "condition_errors": 0, "duplicates_dropped": 0, "orphan_predictions": 0,
                                     "unusable_predictions": 0}
    s = pd.read_parquet(os.path.join(run, "summary.parquet"))
    n_errors = {(None if pd.isna(f) else f): int(v) for f, v in zip(s["finding"], s["n_errors"])}
    # all findings: s2, s7, m1 (m1 attributed to the run's only dataset "ds"); effusion: s2; nodule: s7
    assert n_errors == {None: 3, "effusion": 1, "nodule": 1}
    assert set(s["dataset"]) == {"ds"}


def test_a_broken_quadrant_table_stops_the_reduce_with_every_violation_named(tmp_path, monkeypatch):
    from vlm_eval.reduce import metrics

    real = metrics.quadrant_table

    def broken(todo, mine, taxonomy, ablations=None):  # s2's row replaced by a second s1 row
        q = real(todo, mine, taxonomy, ablations)
        return q.iloc[[0, 0, 2]].reset_index(drop=True)

    monkeypatch.setattr(metrics, "quadrant_table", broken)
    run = write_run(tmp_path / "r", [sample(s, patient=f"p{i}") for i, s in enumerate(GOOD)], {"a": _rows()})
    with pytest.raises(ReduceAccountingError) as info:
        reduce_run(run, n_boot=10)
    assert str(info.value) == ("a: 1 duplicate quadrant rows; "
                               "a: 1 samples neither in quadrants nor errors, e.g. ['s2']")
    assert not os.path.exists(os.path.join(run, "summary.json"))  # never silently written


def test_an_unknown_manifest_error_is_not_given_a_dataset_when_the_run_has_two(tmp_path):
    ids = [f"s{i}" for i in range(1, 5)]
    samples = [sample(s, patient=f"p{i}", dataset="d1" if i <= 2 else "d2") for i, s in enumerate(ids, 1)]
    rows = sum((preds(s, [1, 1, 1], [-1, -1, -1]) for s in ids), [])
    errs = [dict(sample_id="s1", stage="image", error_type="missing", message="gone", model=None, source=None),
            dict(sample_id="m1", stage="manifest", error_type="ParseError", message="bad", model=None, source=None)]
    run = write_run(tmp_path / "r", samples, {"a": rows}, errs)
    reduce_run(run, n_boot=10, buckets=2)
    s = pd.read_parquet(os.path.join(run, "summary.parquet"))
    top = s[s["finding"].isna()]
    n_errors = {(None if pd.isna(d) else d): int(v) for d, v in zip(top["dataset"], top["n_errors"])}
    # s1 (d1) errored; m1 never became a sample and the run has two datasets: it belongs to neither
    # (only to the all-datasets row, if any). d1: 1, d2: 0.
    assert n_errors["d1"] == 1 and n_errors["d2"] == 0


def test_a_manifest_error_of_a_kept_sample_id_counts_under_that_samples_finding(tmp_path):
    # the second manifest row of sample_id s5 (a nodule) was rejected (stage "manifest"); s5 itself is a sample
    ids = [f"s{i}" for i in range(1, 7)]
    samples = [sample(s, patient=f"p{i}", finding="effusion" if i <= 3 else "nodule") for i, s in enumerate(ids, 1)]
    rows = sum((preds(s, [1, 1, 1], [-1, -1, -1]) for s in ids), [])
    errs = [dict(sample_id="s5", stage="manifest", error_type="duplicate_sample_id", message="again", model=None,
                 source=None)]
    run = write_run(tmp_path / "r", samples, {"a": rows}, errs)
    counts = reduce_run(run, n_boot=10)
    assert counts["models"]["a"]["complete"] == 6 and counts["models"]["a"]["errors"] == 1  # s5 is still scored
    s = pd.read_parquet(os.path.join(run, "summary.parquet"))
    n_errors = {(None if pd.isna(f) else f): int(v) for f, v in zip(s["finding"], s["n_errors"])}
    assert n_errors == {None: 1, "effusion": 0, "nodule": 1}


def test_orphans_of_every_bucket_are_counted(tmp_path):
    ids = ["s1", "s2", "s3"]
    orphans = ["o1", "o2", "o3", "o5"]  # buckets (of 4) 2, 3, 0, 1: one in each
    assert bucket_of(orphans, 4).tolist() == [2, 3, 0, 1]
    rows = sum((preds(s, [1, 1, 1], [-1, -1, -1]) for s in ids), [])
    rows += sum((preds(o, [1], [], shared=False) for o in orphans), [])  # 1 image row each
    run = write_run(tmp_path / "r", [sample(s, patient=f"p{i}") for i, s in enumerate(ids)], {"a": rows})
    counts = reduce_run(run, n_boot=10, buckets=4)
    assert counts["models"]["a"]["orphan_predictions"] == 4
    assert counts["problems"] == ["a: 4 prediction rows for sample_ids not in samples/ (ignored)"]


def test_condition_error_notes_are_per_model(tmp_path):
    # swap is the taxonomy's ablation; x has no swap rows (its partner failed), y has them
    rows = preds("x", [2, 1, 3], []) + preds("y", [2, 1, 3], [-1, -1, -1], ablation="swap", shared=False)
    errs = [dict(sample_id="x", stage="image", error_type="swap_load", message="slow", model="b", source=None),
            dict(sample_id="x", stage="image", error_type="swap_missing", message="partner gone", model=None,
                 source=None),
            dict(sample_id="y", stage="image", error_type="swap_load", message="late", model="b", source=None)]
    job = {"name": "t", "taxonomy": {"ablation": "swap"}, "conditions": ["image", "swap"],
           "models": [{"name": "a"}, {"name": "b"}]}
    run = write_run(tmp_path / "r", [sample("x", patient="p1"), sample("y", patient="p2")], {"a": rows, "b": rows},
                    errs, job=job)
    counts = reduce_run(run, n_boot=10)
    q = pd.read_parquet(os.path.join(run, "quadrants"))
    why = {m: q[(q["model"].astype(str) == m) & (q["sample_id"] == "x")]["incomplete_reason"].iloc[0]
           for m in ("a", "b")}
    # a: only the all-model row applies; b: its own row comes first in errors/
    assert why["a"].endswith("; swap_missing: partner gone") and "swap_load" not in why["a"]
    assert why["b"].endswith("; swap_load: slow") and "swap_missing" not in why["b"]
    assert why["a"][: -len("; swap_missing: partner gone")] == why["b"][: -len("; swap_load: slow")]
    # distinct samples with a condition error for the model or for all: a: x; b: x and y (y kept its swap rows:
    # complete, no note)
    assert counts["models"]["a"]["condition_errors"] == 1 and counts["models"]["b"]["condition_errors"] == 2
    assert q[q["sample_id"] == "y"]["complete"].tolist() == [True, True]


def test_shared_rows_count_as_unusable_and_as_dropped_duplicates(tmp_path):
    # text_only rows are shared (no sample_id): s3's three have no log-probability; s1's first is written twice
    rows = _rows()
    rows = [dict(r, logprob_yes=None) if r["sample_id"] is None and r["prompt_id"].startswith("s3-") else r
            for r in rows]
    rows.append(next(dict(r) for r in rows if r["sample_id"] is None and r["prompt_id"] == "s1-v0"))
    run = write_run(tmp_path / "r", [sample(s, patient=f"p{i}") for i, s in enumerate(GOOD)], {"a": rows})
    counts = reduce_run(run, n_boot=10)
    a = counts["models"]["a"]
    assert (a["unusable_predictions"], a["duplicates_dropped"], a["complete"], a["incomplete"]) == (3, 1, 2, 1)
    assert counts["problems"] == ["a: 3 prediction rows without an error but with NaN, missing or infinite "
                                  "log-probabilities (their samples are incomplete)"]


def test_buckets_are_sized_from_the_prediction_row_count(tmp_path, monkeypatch):
    from vlm_eval.reduce import partition

    sized = []
    real = partition.n_buckets
    monkeypatch.setattr(partition, "n_buckets", lambda total, *a, **k: sized.append(total) or real(total, *a, **k))
    # model a: 3 samples x (3 image + 3 text_only rows) = 18 rows in 2 shards; model b: 2 empty shards (0 rows each)
    run = write_run(tmp_path / "r", [sample(s, patient=f"p{i}") for i, s in enumerate(GOOD)], {"a": _rows(), "b": []})
    reduce_run(run, n_boot=10)
    assert sized == [18]


def test_an_ambiguous_variant_in_a_bucketed_reduce_loses_no_shared_row(tmp_path):
    # s1's variant 1 has two image rows with different prompt_ids (s1-v1 and aaa): kept is aaa (prompt_id order),
    # marked ambiguous; aaa has no text_only row, so variant 1 also lacks its text_only prediction. Variants 0
    # and 2 keep their shared text_only rows (s1-v0, s1-v2): the collapsing of the two rows removes nothing else.
    rows = _rows() + [dict(preds("s1", [2, 2, 2], [])[1], prompt_id="aaa")]
    run = write_run(tmp_path / "r", [sample(s, patient=f"p{i}") for i, s in enumerate(GOOD)], {"a": rows})
    reduce_run(run, n_boot=10, buckets=2)
    q = pd.read_parquet(os.path.join(run, "quadrants")).set_index("sample_id")
    assert q.loc["s1", "incomplete_reason"] == (
        "unusable prediction: 2 image predictions for variant 1 with different prompt_ids (aaa, s1-v1): ambiguous; "
        "missing text_only prediction for variants [1]")
    assert q.loc[["s2", "s3"], "complete"].tolist() == [True, True]
