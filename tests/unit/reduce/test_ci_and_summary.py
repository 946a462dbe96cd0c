"""Summary numbers against hand-computed values (issue 16.2), CIs that do not lie
(issue 11.10) and the anomaly counters each triggered once (issue 16.3)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from reduce_builders import preds, sample, write_run
from vlm_eval.reduce import reduce_run, summary_table
from vlm_eval.reduce.run import ReduceAccountingError, accounting_problems
from vlm_eval.reduce.stats import cluster_codes, wilson_interval

Z = 1.959963984540054  # the 97.5 % normal quantile


def quad_rows(rows: list[tuple]) -> pd.DataFrame:
    """Quadrant rows (model m, dataset ds) from (sid, patient, quadrant, correct, entropy, margin, agreement)."""
    recs = []
    for sid, patient, q, correct, h, m, agree in rows:
        consistent = None if q is None else q in ("Ideal", "Dangerous")
        recs.append(dict(model="m", dataset="ds", sample_id=sid, patient_id=patient, finding="effusion",
                         complete=q is not None, quadrant=q, correct=correct, consistent=consistent,
                         flips=None if q is None else (0 if consistent else 1), n_variants=3, entropy=h, margin=m,
                         ablation_agreement=agree if q is not None else np.nan))
    return pd.DataFrame(recs)


NO_ERRORS = pd.DataFrame(columns=["model", "sample_id", "dataset", "finding"])
HAND = [("r1", "p1", "Ideal", True, 0.2, 2.0, 0.0), ("r2", "p1", "Ideal", False, 0.4, -1.5, 1 / 3),
        ("r3", "p2", "Dangerous", True, 0.1, 3.0, 1.0), ("r4", "p3", "Dangerous", None, 0.3, 2.5, 1.0),
        ("r5", "p4", "Fragile", True, 0.9, 0.2, 2 / 3), ("r6", "p5", "Worst", False, 0.8, -0.4, 1 / 3),
        ("r7", "p6", None, None, np.nan, np.nan, np.nan)]  # r7: incomplete


def test_summary_values_hand_computed():
    top = summary_table(quad_rows(HAND), NO_ERRORS, n_boot=50).iloc[0]
    assert (top["n"], top["n_incomplete"], top["n_labelled"]) == (6, 1, 5)
    # accuracy: correct / labelled = (r1, r3, r5) / (r1, r2, r3, r5, r6) = 3/5
    assert top["accuracy"] == pytest.approx(3 / 5)
    # per quadrant: Ideal r1 yes r2 no = 1/2; Dangerous r3 (r4 unlabelled) = 1/1; Fragile r5 = 1/1; Worst r6 = 0/1
    assert [top[f"accuracy_{q}"] for q in ("ideal", "dangerous", "fragile", "worst")] == pytest.approx([0.5, 1, 1, 0])
    # mean entropy per quadrant: Ideal (0.2+0.4)/2 = 0.3; Dangerous (0.1+0.3)/2 = 0.2; Fragile 0.9; Worst 0.8
    assert [top[f"entropy_{q}"] for q in ("ideal", "dangerous", "fragile", "worst")] == pytest.approx([.3, .2, .9, .8])
    # agreement: (0 + 1/3 + 1 + 1 + 2/3 + 1/3) / 6 = (10/3) / 6 = 5/9
    assert top["ablation_agreement"] == pytest.approx(5 / 9)
    # flip rates: 2 inconsistent of 6; pairs: 2 flips / (6 samples x 2 pairs) = 1/6
    assert top["flip_rate_question"] == pytest.approx(2 / 6) and top["flip_rate_pair"] == pytest.approx(1 / 6)
    assert top["frac_dangerous"] == pytest.approx(2 / 6) and top["mean_entropy"] == pytest.approx(2.7 / 6)
    # AUROC, Dangerous positive, entropy score: positives {.1, .3} vs negatives {.2, .4, .9, .8}:
    # pairs with positive > negative: (.3 > .2) only -> 1 of 2 x 4 = 1/8
    assert top["auroc_entropy_dangerous"] == pytest.approx(1 / 8)
    # -|margin|: positives {-3, -2.5} vs negatives {-2, -1.5, -.2, -.4}: no positive ranks higher -> 0
    assert top["auroc_abs_margin_dangerous"] == pytest.approx(0.0)
    assert top["n_auroc_excluded"] == 0


def test_nan_entropy_is_left_out_not_counted_as_zero_bits():
    rows = [("a", "p1", "Dangerous", True, np.nan, 2.0, 1.0), ("b", "p2", "Dangerous", True, 0.5, 1.0, 1.0),
            ("c", "p3", "Ideal", True, 0.7, -1.0, 0.0)]
    top = summary_table(quad_rows(rows), NO_ERRORS, n_boot=20).iloc[0]
    assert top["entropy_dangerous"] == pytest.approx(0.5)  # (0.5) / 1, not (0 + 0.5) / 2
    assert top["mean_entropy"] == pytest.approx((0.5 + 0.7) / 2)
    assert top["n_auroc_excluded"] == 1  # the row the AUROC cannot rank is counted, not dropped silently


def test_ci_paraphrases_zero_flip_rate_is_not_measured(tmp_path):
    samples = [sample(f"s{i}", n_variants=1, patient=f"p{i}") for i in range(4)]
    rows = sum((preds(f"s{i}", [1], [-1]) for i in range(4)), [])
    run = write_run(tmp_path / "r", samples, {"m": rows})
    counts = reduce_run(run, n_boot=50)
    top = pd.read_parquet(os.path.join(run, "summary.parquet")).query("finding.isna()").iloc[0]
    assert top["n"] == 4 and top["n_single_variant"] == 4 and counts["models"]["m"]["complete"] == 4
    for col in ("flip_rate_question", "flip_rate_question_ci_low", "flip_rate_question_ci_high", "flip_rate_pair",
                "frac_ideal", "frac_dangerous_ci_high"):
        assert np.isnan(top[col]), col  # not 0 with CI [0, 0]
    assert top["accuracy"] == 1.0  # what *is* measured stays
    doc = json.loads(open(os.path.join(run, "summary.json")).read())
    assert any("consistency not measured for 4" in n for n in doc["notes"])


def test_ci_wilson_where_the_bootstrap_collapses(tmp_path):
    samples = [sample(f"s{i}", patient=f"p{i}") for i in range(5)]
    rows = sum((preds(f"s{i}", [1, 1, 1], [1, 1, 1]) for i in range(5)), [])  # all Dangerous
    run = write_run(tmp_path / "r", samples, {"m": rows})
    reduce_run(run, n_boot=200)
    top = pd.read_parquet(os.path.join(run, "summary.parquet")).query("finding.isna()").iloc[0]
    # Wilson for 5/5: low = 1 / (1 + z^2/5) = 0.5655, high = 1; for 0/5: [0, (z^2/5) / (1 + z^2/5)] = [0, 0.4345]
    assert top["frac_dangerous"] == 1.0
    assert top["frac_dangerous_ci_low"] == pytest.approx(1 / (1 + Z * Z / 5)) and top["frac_dangerous_ci_high"] == 1.0
    assert top["frac_ideal_ci_low"] == pytest.approx(0.0, abs=1e-12)
    assert top["frac_ideal_ci_high"] == pytest.approx((Z * Z / 5) / (1 + Z * Z / 5))
    low, high = wilson_interval(5, 5)
    assert (float(low), float(high)) == pytest.approx((top["frac_dangerous_ci_low"], 1.0))


def _random_quadrants(seed: int, n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    q = rng.choice(["Ideal", "Fragile", "Dangerous", "Worst"], n)
    rows = [(f"s{i:04d}", f"p{rng.integers(60)}", q[i], bool(rng.random() < 0.7), float(rng.random()),
             float(rng.normal()), float(rng.integers(0, 4) / 3)) for i in range(n)]
    return quad_rows(rows)


def test_ci_do_not_depend_on_input_row_order():
    frame = _random_quadrants(3)
    a = summary_table(frame, NO_ERRORS, n_boot=300, seed=1)
    b = summary_table(frame.sample(frac=1.0, random_state=11).reset_index(drop=True), NO_ERRORS, n_boot=300, seed=1)
    pd.testing.assert_frame_equal(a, b)


def test_ci_empty_patient_ids_are_not_one_cluster():
    codes = cluster_codes(["", " ", None, "p1", "p1"], ["a", "b", "c", "d", "e"])
    assert len(set(codes[:3])) == 3 and codes[3] == codes[4] and codes[3] not in codes[:3]
    frame = _random_quadrants(5, n=80)
    as_none = summary_table(frame.assign(patient_id=None), NO_ERRORS, n_boot=200)
    as_empty = summary_table(frame.assign(patient_id=""), NO_ERRORS, n_boot=200)
    pd.testing.assert_frame_equal(as_none, as_empty)
    one_patient = summary_table(frame.assign(patient_id="p"), NO_ERRORS, n_boot=200)
    assert (as_empty["frac_ideal_ci_high"] - as_empty["frac_ideal_ci_low"]).iloc[0] < \
        (one_patient["frac_ideal_ci_high"] - one_patient["frac_ideal_ci_low"]).iloc[0]


# ---------------------------------------------------------------- anomaly counters


def test_anomaly_orphan_predictions_are_counted(tmp_path):
    rows = preds("s", [1, 1, 1], [1, 1, 1]) + [r for r in preds("ghost", [1, 1], [1, 1]) if r["condition"] == "image"]
    run = write_run(tmp_path / "r", [sample("s")], {"m": rows})
    counts = reduce_run(run, n_boot=10)
    assert counts["models"]["m"]["orphan_predictions"] == 2
    assert counts["problems"] == ["m: 2 prediction rows for sample_ids not in samples/ (ignored)"]


def test_anomaly_duplicate_sample_ids_are_reported(tmp_path):
    samples = [sample("s"), dict(sample("s"), label="no"), sample("t")]
    rows = preds("s", [1, 1, 1], [1, 1, 1]) + preds("t", [1, 1, 1], [1, 1, 1])
    run = write_run(tmp_path / "r", samples, {"m": rows})
    counts = reduce_run(run, n_boot=10)
    assert counts["problems"] == ["1 sample_ids repeated in samples/ (first row kept), e.g. ['s']"]
    assert counts["models"]["m"]["n_samples"] == 2 and counts["models"]["m"]["complete"] == 2


def test_anomaly_accounting_errors_are_named():
    samples = pd.DataFrame({"sample_id": ["a", "b", "c"]})
    quad = pd.DataFrame({"sample_id": ["a", "a", "c"]})
    found = accounting_problems(samples, quad, np.array(["c"], dtype=object), "m")
    assert found == ["m: 1 duplicate quadrant rows", "m: 1 samples both errored and in quadrants, e.g. ['c']",
                     "m: 1 samples neither in quadrants nor errors, e.g. ['b']"]
    assert accounting_problems(samples, pd.DataFrame({"sample_id": ["a", "b"]}), np.array(["c"], dtype=object), "m") == []
    assert issubclass(ReduceAccountingError, Exception) and math.isfinite(1.0)


def test_ci_single_variant_samples_are_not_paired_as_flips():
    from vlm_eval.reduce.stats import paired_comparison

    a = quad_rows([("s1", "p1", "Ideal", True, .1, 1., 0.), ("s2", "p2", "Dangerous", True, .1, 1., 1.)])
    one = a.iloc[[1]].assign(sample_id="s3", consistent=None, quadrant=None, flips=None, n_variants=1)
    res = paired_comparison(pd.concat([a, one]), pd.concat([a, one]), n_boot=20)
    assert res["n"] == 2 and res["flips_a_only"] == 0 and res["flips_b_only"] == 0


def test_ci_mixed_single_and_multi_variant_group_keeps_its_flip_rates():
    frame = quad_rows(HAND[:6])
    one = frame.iloc[[0]].assign(sample_id="solo", consistent=None, quadrant=None, flips=None, n_variants=1)
    top = summary_table(pd.concat([frame, one], ignore_index=True), NO_ERRORS, n_boot=20).iloc[0]
    # the single-variant row adds no pair and no consistency: 2 flips / 12 pairs, 2 of 6 inconsistent
    assert top["flip_rate_pair"] == pytest.approx(1 / 6) and top["flip_rate_question"] == pytest.approx(2 / 6)
    assert top["frac_dangerous"] == pytest.approx(2 / 6) and top["n"] == 7 and top["n_single_variant"] == 1


def test_nan_scores_left_out_of_the_auroc_are_named_in_the_notes():
    from vlm_eval.reduce.summary import notes

    rows = [("a", "p1", "Dangerous", True, np.nan, 2.0, 1.0), ("b", "p2", "Ideal", True, 0.5, 1.0, 0.0)]
    assert notes(quad_rows(rows)) == ["1 complete samples have no entropy or margin: the AUROC columns leave "
                                      "them out (n_auroc_excluded)"]
