"""The taxonomy on hand-computed cases (README, "The method, exactly")."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reduce_builders import logprobs, preds, preds_frame, sample, samples_frame
from vlm_eval.config import TaxonomyConfig
from vlm_eval.reduce import deduped_predictions, entropy_bits, margin, prediction, quadrant_table


def table(samples, rows, reliance="original", ablation="text_only"):
    deduped, _ = deduped_predictions(preds_frame(rows))
    q = quadrant_table(samples_frame(samples), deduped, TaxonomyConfig(ablation=ablation, reliance=reliance))
    return q.set_index("sample_id")


def test_scalar_definitions():
    assert list(prediction(margin([1.0, 0.0, -0.5], [0.0, 0.0, 0.0]))) == ["yes", "no", "no"]
    h = entropy_bits(np.array([0.0, math.log(3.0), -math.log(3.0), 800.0, -800.0]))
    p = 0.75
    expected = -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    assert h[0] == pytest.approx(1.0)
    assert h[1] == pytest.approx(expected) and h[2] == pytest.approx(expected)
    assert h[3] == pytest.approx(0.0, abs=1e-12) and h[4] == pytest.approx(0.0, abs=1e-12)


def test_every_quadrant_and_columns():
    samples = [sample("ideal"), sample("fragile"), sample("dangerous"), sample("worst", label="no")]
    rows = (preds("ideal", [2, 1, 3], [-1, -2, -1]) + preds("fragile", [2, -1, 3], [-1, -1, -1])
            + preds("dangerous", [2, 1, 3], [1, 2, 1]) + preds("worst", [2, -1, -3], [1, 1, 1]))
    q = table(samples, rows)
    assert q["quadrant"].to_dict() == {"ideal": "Ideal", "fragile": "Fragile", "dangerous": "Dangerous", "worst": "Worst"}
    assert q.loc["fragile", "flips"] == 1 and q.loc["worst", "flips"] == 2
    assert q.loc["worst", "flip_rate"] == pytest.approx(1.0) and q.loc["fragile", "flip_rate"] == pytest.approx(0.5)
    assert q.loc["ideal", "margin"] == pytest.approx(2.0) and q.loc["ideal", "ablated_margin"] == pytest.approx(-1.0)
    assert q.loc["ideal", "margin_shift"] == pytest.approx(3.0)
    assert q.loc["ideal", "ablation_agreement"] == 0.0 and q.loc["dangerous", "ablation_agreement"] == 1.0
    assert q.loc["fragile", "ablation_agreement"] == pytest.approx(1 / 3)
    assert q.loc["worst", "correct"] is False or q.loc["worst", "correct"] == False  # noqa: E712
    assert q.loc["ideal", "correct"] == True  # noqa: E712
    assert q["complete"].all() and q["incomplete_reason"].isna().all()
    assert (q["ablation"] == "text_only").all()


def test_margin_tie_is_no():
    q = table([sample("tie", label="no")], preds("tie", [0, 0, 0], [-1, -1, -1]))
    row = q.loc["tie"]
    assert row["prediction"] == "no" and row["margin"] == 0.0 and row["entropy"] == pytest.approx(1.0)
    assert row["consistent"] == True and row["image_reliant"] == False  # noqa: E712
    assert row["quadrant"] == "Dangerous" and row["correct"] == True  # noqa: E712


def test_reliance_rules_disagree_on_the_same_data():
    samples = [sample("a"), sample("b"), sample("c"), sample("d", n_variants=2)]
    rows = (preds("a", [1, 1, 1], [1, -1, -1])     # original: no; majority: yes (vote no); any: yes
            + preds("b", [1, 1, 1], [-1, 1, 1])    # original: yes; majority: no; any: yes
            + preds("c", [1, 1, 1], [1, 1, -1])    # original: no; majority: no; any: yes
            + preds("d", [1, 1], [1, -1]))         # 1-1 tie votes 'no': majority yes; original no
    got = {r: table(samples, rows, reliance=r)["image_reliant"].astype(bool).to_dict() for r in ("original", "majority", "any")}
    assert got["original"] == {"a": False, "b": True, "c": False, "d": False}
    assert got["majority"] == {"a": True, "b": False, "c": False, "d": True}
    assert got["any"] == {"a": True, "b": True, "c": True, "d": True}
    assert table(samples, rows, reliance="majority").loc["a", "quadrant"] == "Ideal"
    assert table(samples, rows, reliance="original").loc["a", "quadrant"] == "Dangerous"


def test_majority_tie_on_with_image_side():
    # with image 1 yes / 1 no -> vote 'no'; ablated 2 no -> vote 'no': not reliant
    q = table([sample("t", n_variants=2)], preds("t", [1, -1], [-1, -1]), reliance="majority")
    assert q.loc["t", "image_reliant"] == False and q.loc["t", "quadrant"] == "Worst"  # noqa: E712


def test_ci_single_variant_consistency_is_not_measured():
    # one variant: nothing to be consistent with -> consistent/flips/quadrant null (not a vacuous True),
    # but the sample is complete and its reliance is measured
    q = table([sample("one", n_variants=1)], preds("one", [1], [-1]))
    row = q.loc["one"]
    assert pd.isna(row["flips"]) and pd.isna(row["consistent"]) and np.isnan(row["flip_rate"])
    assert pd.isna(row["quadrant"]) and row["complete"] == True and row["image_reliant"] == True  # noqa: E712


def test_incomplete_rows_say_why():
    samples = [sample("miss_img"), sample("miss_abl"), sample("err"), sample("ok")]
    rows = (preds("miss_img", [1, 1, None], [1, 1, 1]) + preds("miss_abl", [1, 1, 1], [None, None, None])
            + preds("err", [1, 1, 1], [1, 1, 1], errors={1: "CUDA out of memory"}) + preds("ok", [1, 1, 1], [1, 1, 1]))
    q = table(samples, rows)
    assert q["complete"].to_dict() == {"miss_img": False, "miss_abl": False, "err": False, "ok": True}
    assert q.loc["miss_img", "incomplete_reason"].startswith("missing image predictions for variants [2]")
    assert q.loc["miss_abl", "incomplete_reason"] == "missing text_only prediction for variants [0, 1, 2]"
    assert q.loc["err", "incomplete_reason"] == "engine error: CUDA out of memory"
    for sid in ("miss_img", "miss_abl", "err"):
        assert pd.isna(q.loc[sid, "quadrant"]) and pd.isna(q.loc[sid, "consistent"])
        assert pd.isna(q.loc[sid, "image_reliant"]) and np.isnan(q.loc[sid, "ablation_agreement"])
    # variant 0 is still reported where it exists
    assert q.loc["miss_abl", "prediction"] == "yes" and pd.isna(q.loc["miss_abl", "ablated_prediction"])
    assert q.loc["ok", "quadrant"] == "Dangerous"


def test_text_only_joins_via_prompt_id_shared_by_two_samples():
    pids = ["q-effusion-v0", "q-effusion-v1"]
    rows = (preds("s1", [2, 2], [], prompt_ids=pids) + preds("s2", [-1, -1], [], prompt_ids=pids)
            + preds("s1", [], [0.5, -0.5], prompt_ids=pids))  # stored once per prompt
    q = table([sample("s1", n_variants=2), sample("s2", n_variants=2)], rows)
    assert q["complete"].all()
    assert q["ablated_margin"].tolist() == pytest.approx([0.5, 0.5])
    assert q["ablated_prediction"].tolist() == ["yes", "yes"]
    assert q["quadrant"].tolist() == ["Dangerous", "Ideal"]


def test_sample_specific_ablation_rows_are_used():
    rows = preds("s", [1, 1], [-1, -1], ablation="blank", shared=False)
    q = table([sample("s", n_variants=2)], rows, ablation="blank")
    assert q.loc["s", "ablation"] == "blank" and q.loc["s", "quadrant"] == "Ideal"


def test_duplicates_dropped_deterministically():
    base = preds("s", [1, 1, 1], [-1, -1, -1])
    ly, ln = logprobs(-3.0)
    dup_err = dict(base[0], logprob_yes=None, logprob_no=None, error="crash")
    dup_other = dict(base[1], logprob_yes=ly, logprob_no=ln)  # same key, different values
    rows = base + [dup_err, dup_other, dict(base[3])]
    frame = preds_frame(rows)
    kept, dropped = deduped_predictions(frame)
    assert dropped == {"m": 3} and len(kept) == len(base)
    shuffled, _ = deduped_predictions(frame.sample(frac=1.0, random_state=7))
    pd.testing.assert_frame_equal(kept, shuffled)
    # the error row lost to the usable one for variant 0
    v0 = kept[(kept["variant"] == 0) & (kept["condition"] == "image")]
    assert v0["error"].isna().all() and v0["logprob_yes"].notna().all()
    # for variant 1 the lower logprob_yes sorts first: the deterministic pick is the m = -3 row
    v1 = kept[(kept["variant"] == 1) & (kept["condition"] == "image")]
    assert float(v1["logprob_yes"].iloc[0]) == pytest.approx(ly)
