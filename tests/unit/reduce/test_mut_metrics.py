"""Tests written to kill surviving mutants of ``vlm_eval/reduce/metrics.py`` (mutmut, issue 16;
docs/testing.md lists each survivor and the test that kills it or why it is equivalent).

Every expected value is worked out by hand in the test (arithmetic in a comment)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from reduce_builders import logprobs, preds, preds_frame, sample, samples_frame
from vlm_eval.config import TaxonomyConfig
from vlm_eval.reduce import quadrant_table
from vlm_eval.reduce.metrics import extra_ablations, image_reliant


def test_a_sample_without_prompt_variants_is_incomplete_and_says_why():
    # s0 has no prompts (n_variants 0) and no rows; s1: one variant, margin +1 with the image, -1 without
    s = samples_frame([sample("s0", n_variants=0), sample("s1", n_variants=1)])
    got = quadrant_table(s, preds_frame(preds("s1", [1.0], [-1.0])), TaxonomyConfig(ablation="text_only"), ["text_only"])
    assert got["complete"].tolist() == [False, True]  # 0 usable of 0 variants is not complete
    assert got.loc[0, "incomplete_reason"] == "no prompt variants in samples/"
    assert pd.isna(got.loc[1, "incomplete_reason"])
    assert pd.isna(got.loc[0, "prediction"])
    assert math.isnan(got.loc[0, "ablation_agreement"]) and math.isnan(got.loc[0, "margin"])
    # s1: yes (1 > 0) with the image, no (-1) without -> reliant; agreement 0 of 1 = 0.0; shift 1 - (-1) = 2
    assert got.loc[1, "prediction"] == "yes" and got.loc[1, "ablated_prediction"] == "no"
    assert got["image_reliant"].tolist() == [None, True]
    assert got.loc[1, "ablation_agreement"] == 0.0
    assert got.loc[1, "margin_shift"] == pytest.approx(2.0, abs=1e-12)
    assert got.loc[1, "consistent"] is None  # one variant: consistency not measured


def test_image_reliant_of_an_unknown_rule_names_it_and_the_known_ones():
    agg = pd.DataFrame({"img_yes": [True], "abl_yes": [False], "n_yes_img": [1], "n_yes_abl": [0], "n_agree": [0]})
    with pytest.raises(ValueError, match=r"^unknown reliance rule 'sometimes': use original, majority or any$"):
        image_reliant(agg, pd.Series([1]), "sometimes")


def test_two_own_ablation_rows_in_one_cell_are_resolved_and_make_the_sample_incomplete():
    # the with-image cells fit the dense layout, but (s, variant 0, text_only) has two rows with
    # prompt_ids p-b and p-a: conflicting_rows keeps the p-a row (prompt_id order), marked unusable
    s = samples_frame([sample("s", n_variants=1)])
    rows = [dict(sample_id="s", variant=0, condition=c, prompt_id=p, logprob_yes=logprobs(m)[0],
                 logprob_no=logprobs(m)[1], error=None)
            for c, p, m in (("image", "p-a", 1.0), ("text_only", "p-b", 2.0), ("text_only", "p-a", -1.0))]
    got = quadrant_table(s, preds_frame(rows), TaxonomyConfig(ablation="text_only"), ["text_only"])
    assert got["complete"].tolist() == [False]
    assert got.loc[0, "incomplete_reason"] == ("unusable prediction (text_only): 2 text_only predictions for "
                                               "variant 0 with different prompt_ids (p-a, p-b): ambiguous")
    assert got.loc[0, "prediction"] == "yes" and got.loc[0, "margin"] == pytest.approx(1.0, abs=1e-12)
    assert pd.isna(got.loc[0, "ablated_prediction"]) and math.isnan(got.loc[0, "ablated_margin"])


def test_extra_ablations_of_predictions_without_a_condition_column_are_none():
    tax = TaxonomyConfig(ablation="text_only")
    assert extra_ablations(pd.DataFrame({"sample_id": ["s"]}), tax) == []
    # from the rows (registry order), the taxonomy's own ablation and image left out
    pf = pd.DataFrame({"condition": ["blank", "image", "text_only", None, "noise"]})
    assert extra_ablations(pf, tax) == ["blank", "noise"]
