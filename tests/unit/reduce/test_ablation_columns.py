"""Every ablation of a run in the tables: A_prediction / A_margin / A_reliant /
A_margin_shift per extra ablation, frac_A_reliant in the summary (hand-computed)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reduce_builders import preds, preds_frame, sample, samples_frame, write_run
from vlm_eval.config import TaxonomyConfig
from vlm_eval.reduce import deduped_predictions, quadrant_table, reduce_run, summary_table
from vlm_eval.reduce.metrics import extra_ablations

ABL_COLS = ("prediction", "margin", "reliant", "margin_shift")


def ablated(sid, margins, ablation):
    """Per-sample rows of ``ablation`` (sample_id/variant set), None = row missing."""
    rows = preds(sid, [None] * len(margins), margins, ablation=ablation, shared=False)
    return [r for r in rows if r["condition"] == ablation]


def case():
    samples = [sample("s1"), sample("s2", label="no"), sample("s3", patient="p3")]
    rows = (preds("s1", [2, 1, 3], [-1, -1, -1]) + preds("s2", [-2, -1, -3], [-1, -1, -1])
            + preds("s3", [1, 1, 1], [1, 1, 1])
            # swap: s1 v0 flips (yes -> no), v1/v2 stay yes; s2 stays no; s3 v0 is a tie (= no)
            + ablated("s1", [-1, 2, 2], "swap") + ablated("s2", [-0.5, -1, -1], "swap")
            + ablated("s3", [0, 1, -1], "swap")
            # blank: s1 stays yes; s2 has none at all; s3 v0 flips, only variant 0 scored
            + ablated("s1", [1.5, 1, 1], "blank") + ablated("s3", [-1, None, None], "blank"))
    return samples, rows


def table(samples, rows, reliance="original", ablations=None, ablation="text_only"):
    deduped, _ = deduped_predictions(preds_frame(rows))
    q = quadrant_table(samples_frame(samples), deduped, TaxonomyConfig(ablation=ablation, reliance=reliance),
                       ablations)
    return q.set_index("sample_id")


def test_columns_hand_computed_original_rule():
    samples, rows = case()
    q = table(samples, rows, ablations=["text_only", "blank", "swap"])
    extra = [f"{a}_{c}" for a in ("blank", "swap") for c in ABL_COLS]
    assert list(q.columns[-8:]) == extra
    assert q["swap_prediction"].to_dict() == {"s1": "no", "s2": "no", "s3": "no"}
    assert q["swap_margin"].to_dict() == pytest.approx({"s1": -1.0, "s2": -0.5, "s3": 0.0})
    assert q["swap_margin_shift"].to_dict() == pytest.approx({"s1": 3.0, "s2": -1.5, "s3": 1.0})
    assert q["swap_reliant"].to_dict() == {"s1": True, "s2": False, "s3": True}
    assert q.loc["s1", "blank_prediction"] == "yes" and q.loc["s1", "blank_reliant"] == False  # noqa: E712
    assert q.loc["s1", "blank_margin_shift"] == pytest.approx(0.5)
    assert pd.isna(q.loc["s2", "blank_prediction"]) and pd.isna(q.loc["s2", "blank_reliant"])
    assert math.isnan(q.loc["s2", "blank_margin"]) and math.isnan(q.loc["s2", "blank_margin_shift"])
    # original needs only variant 0: s3's blank v0 (-1) vs image v0 (+1) -> reliant
    assert q.loc["s3", "blank_reliant"] == True and q.loc["s3", "blank_margin_shift"] == pytest.approx(2.0)  # noqa: E712
    # the extra ablations never change the quadrant or completeness
    assert q["complete"].all()
    assert q["quadrant"].to_dict() == {"s1": "Ideal", "s2": "Dangerous", "s3": "Dangerous"}


def test_other_reliance_rules_need_every_variant():
    samples, rows = case()
    maj = table(samples, rows, reliance="majority", ablations=["text_only", "blank", "swap"])
    # s1 swap votes yes (2 of 3) like the image -> not reliant; s3 swap: yes, no(tie), no -> votes no
    assert maj["swap_reliant"].to_dict() == {"s1": False, "s2": False, "s3": True}
    assert pd.isna(maj.loc["s3", "blank_reliant"])  # blank has only variant 0 for s3
    any_ = table(samples, rows, reliance="any", ablations=["text_only", "blank", "swap"])
    assert any_["swap_reliant"].to_dict() == {"s1": True, "s2": False, "s3": True}
    assert any_.loc["s1", "blank_reliant"] == False  # noqa: E712


def test_existing_columns_unchanged_and_inferred_ablations():
    samples, rows = case()
    base_rows = [r for r in rows if r["condition"] in ("image", "text_only")]
    base = table(samples, base_rows)
    with_extra = table(samples, rows)  # ablations inferred from predictions: blank, swap
    pd.testing.assert_frame_equal(with_extra[base.columns], base)
    assert [c for c in with_extra.columns if c.endswith("_reliant")] == ["image_reliant", "blank_reliant",
                                                                         "swap_reliant"]
    frame = preds_frame(rows)
    assert extra_ablations(frame, TaxonomyConfig(ablation="swap")) == ["text_only", "blank"]
    assert extra_ablations(frame, TaxonomyConfig(), ["swap", "text_only", "noise"]) == ["swap", "noise"]


def test_shared_text_only_rows_as_an_extra_ablation():
    samples, rows = case()
    q = table(samples, rows, ablation="swap", ablations=["text_only", "blank", "swap"])
    assert (q["ablation"] == "swap").all() and q["image_reliant"].to_dict() == {"s1": True, "s2": False, "s3": True}
    assert q["text_only_prediction"].to_dict() == {"s1": "no", "s2": "no", "s3": "yes"}
    assert q["text_only_reliant"].to_dict() == {"s1": True, "s2": False, "s3": False}
    assert q["text_only_margin_shift"].to_dict() == pytest.approx({"s1": 3.0, "s2": -1.0, "s3": 0.0})
    assert "swap_reliant" not in q


def test_listed_ablation_without_predictions_gives_null_columns():
    samples, rows = case()
    q = table(samples, rows, ablations=["text_only", "noise"])
    assert q["noise_prediction"].isna().all() and q["noise_reliant"].isna().all()
    assert q["noise_margin"].isna().all() and q["noise_margin_shift"].isna().all()
    assert "swap_reliant" not in q


def test_summary_frac_reliant_over_rows_where_defined():
    samples, rows = case()
    q = table(samples, rows, ablations=["text_only", "blank", "swap"]).reset_index().assign(model="m")
    errored = pd.DataFrame(columns=["model", "sample_id", "dataset", "finding"])
    s = summary_table(q, errored, n_boot=200, seed=0)
    overall = s[s["finding"].isna()].iloc[0]
    assert overall["frac_swap_reliant"] == pytest.approx(2 / 3)
    assert overall["frac_blank_reliant"] == pytest.approx(1 / 2)  # s2 has no blank rows: left out
    for a in ("swap", "blank"):
        low, est, high = (overall[f"frac_{a}_reliant{x}"] for x in ("_ci_low", "", "_ci_high"))
        assert 0.0 <= low <= est <= high <= 1.0
    assert overall["frac_ideal"] == pytest.approx(1 / 3)  # existing columns as before


def test_reduce_run_writes_the_columns(tmp_path):
    samples, rows = case()
    job = {"name": "t", "conditions": ["image", "text_only", "blank", "swap", "noise"],
           "taxonomy": {"ablation": "text_only", "reliance": "original"}, "models": [{"name": "m"}]}
    run = write_run(tmp_path / "run", samples, {"m": rows}, job=job)
    reduce_run(run, n_boot=50)
    q = pd.read_parquet(f"{run}/quadrants").set_index("sample_id").sort_index()
    assert q["swap_reliant"].tolist() == [True, False, True]
    assert q["noise_prediction"].isna().all()  # listed in conditions, nothing scored yet
    assert str(q["swap_reliant"].dtype) in ("bool", "boolean", "object")
    assert q["blank_margin_shift"].dtype == np.float64
    summary = pd.read_parquet(f"{run}/summary.parquet")
    overall = summary[summary["finding"].isna()].iloc[0]
    assert overall["frac_swap_reliant"] == pytest.approx(2 / 3)
    assert np.isnan(overall["frac_noise_reliant"])
