"""Statistics: bootstrap CI coverage on planted clustered data, McNemar, AUROC, Wilson, Pearson."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vlm_eval.reduce import stats


def planted(rng, n_patients=150, share=0.3, concentration=4.0):
    """Samples clustered by patient: each patient has a Beta(share*c, (1-share)*c) rate
    (strong intra-patient correlation) and 1..6 samples; the true share is ``share``."""
    sizes = rng.integers(1, 7, n_patients)
    rate = rng.beta(share * concentration, (1 - share) * concentration, n_patients)
    y = rng.random(sizes.sum()) < np.repeat(rate, sizes)
    return y.astype(float), np.repeat(np.arange(n_patients), sizes)


def coverage(n_sims, clustered, seed=20240607, share=0.3, n_boot=1000):
    rng = np.random.default_rng(seed)
    hits = np.zeros(n_sims, bool)
    for i in range(n_sims):  # independent simulated studies (not bootstrap resamples)
        y, patient = planted(rng, share=share)
        clusters = patient if clustered else np.arange(len(y))
        _, low, high = stats.bootstrap_ratios(y[:, None], np.ones((len(y), 1)), clusters, n_boot, seed=i)
        hits[i] = low[0] <= share <= high[0]
    return hits.mean()


def test_patient_bootstrap_ci_reaches_nominal_coverage():
    cov = coverage(1000, clustered=True)
    print(f"patient-clustered bootstrap 95% CI coverage: {cov:.3f} over 1000 planted studies")
    assert 0.93 <= cov <= 0.97


def test_sample_level_bootstrap_undercovers_clustered_data():
    # why we resample patients: ignoring the clustering gives too-narrow intervals
    cov = coverage(200, clustered=False, n_boot=500)
    print(f"naive (sample-level) bootstrap coverage on the same data: {cov:.3f} over 200 studies")
    assert cov < 0.92


def test_bootstrap_point_estimates_and_seed():
    num = np.array([[1, 2], [0, 1], [1, 0], [1, 3]], float)
    den = np.array([[1, 3], [1, 3], [1, 3], [1, 3]], float)
    cl = np.array([0, 0, 1, 2])
    est, low, high = stats.bootstrap_ratios(num, den, cl, 200, seed=5)
    assert est == pytest.approx([0.75, 0.5])
    again = stats.bootstrap_ratios(num, den, cl, 200, seed=5)
    assert np.array_equal(low, again[1]) and np.array_equal(high, again[2])
    assert (low <= est).all() and (est <= high).all()
    e, lo, hi = stats.bootstrap_ratios(np.zeros((0, 1)), np.zeros((0, 1)), np.zeros(0), 100, 0)
    assert np.isnan(e).all() and np.isnan(lo).all()


def test_bootstrap_weights_resample_every_cluster_count():
    w = stats.bootstrap_weights(7, 50, np.random.default_rng(0))
    assert w.shape == (50, 7) and (w.sum(1) == 7).all()


def test_bootstrap_weights_are_one_draw_of_every_resample_in_chunks_into_one_buffer():
    # the weights are the cluster counts of rng.integers(size=(n_boot, n_clusters)), whatever
    # the chunking: two chunks of 30 into one reused buffer = the first 60 rows of that draw
    draws = np.random.default_rng(3).integers(0, 7, size=(60, 7), dtype=np.int32)
    expected = np.stack([np.bincount(r, minlength=7) for r in draws]).astype(float)
    rng, buf = np.random.default_rng(3), np.full((30, 7), -1.0)
    first = stats.bootstrap_weights(7, 30, rng, buf).copy()
    second = stats.bootstrap_weights(7, 30, rng, buf)
    assert second.base is buf or second is buf  # written into the buffer, not a new array
    assert np.array_equal(np.concatenate([first, second]), expected)
    with pytest.raises(ValueError, match=">= 31 rows of 7"):
        stats.bootstrap_weights(7, 31, rng, buf)  # a buffer too small is refused, never half-filled


def test_distinct_columns_maps_every_column_back():
    m = np.array([[1.0, 2.0, 1.0, 0.0, 2.0, -0.0], [3.0, 4.0, 3.0, 0.0, 4.0, 0.0]])
    distinct, back = stats._distinct_columns(m)
    # columns 0 = 2 and 1 = 4; column 5 equals column 3 as numbers but not byte for byte
    # (-0.0): kept apart, which costs a column of the product and changes no value
    assert distinct.shape == (2, 4) and back.tolist() == [0, 1, 0, 2, 1, 3]
    assert np.array_equal(distinct[:, back], m) and distinct.flags.c_contiguous


def test_cluster_codes_use_patient_else_sample():
    codes = stats.cluster_codes(["p1", None, "p1", None], ["a", "b", "c", "d"])
    assert codes[0] == codes[2] and len(set(codes)) == 3


def test_mcnemar_hand_computed():
    r = stats.mcnemar(1, 5)  # n = 6, P(X <= 1) = 7/64, P(X = 1) = 6/64
    assert r["p_exact"] == pytest.approx(14 / 64)
    assert r["p_midp"] == pytest.approx(2 * (7 / 64 - 3 / 64))
    assert r["statistic"] == pytest.approx(9 / 6)
    even = stats.mcnemar(3, 3)
    assert even["p_exact"] == 1.0 and even["p_midp"] == pytest.approx(1.0)
    assert stats.mcnemar(0, 0)["p_exact"] == 1.0
    big = stats.mcnemar(0, 12)
    assert big["p_exact"] == pytest.approx(2 / 4096) and big["p_midp"] == pytest.approx(1 / 4096)


def test_auroc_hand_computed_with_ties():
    assert stats.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert stats.auroc([1.0, 1.0, 2.0], [1, 0, 0]) == pytest.approx(0.25)
    assert stats.auroc([1.0, np.nan, 3.0], [0, 1, 1]) == pytest.approx(1.0)
    assert np.isnan(stats.auroc([1.0, 2.0], [1, 1]))


def test_wilson_interval_known_values():
    low, high = stats.wilson_interval([0, 5], [10, 10])
    assert low[0] == pytest.approx(0.0, abs=1e-12) and high[0] == pytest.approx(0.27753, abs=1e-4)
    assert low[1] == pytest.approx(0.23659, abs=1e-4) and high[1] == pytest.approx(0.76341, abs=1e-4)
    assert np.isnan(stats.wilson_interval(0, 0)[0])


def test_pearson_and_flip_vs_dangerous():
    x, y = [0.1, 0.2, 0.3, np.nan], [0.9, 0.7, 0.2, 0.5]
    r, n = stats.pearson_r(x, y)
    assert n == 3 and r == pytest.approx(np.corrcoef([0.1, 0.2, 0.3], [0.9, 0.7, 0.2])[0, 1])
    summary = pd.DataFrame({"finding": [None, None, None, "x"], "n": [5, 5, 5, 5],
                            "flip_rate_question": [0.1, 0.2, 0.3, 0.9], "flip_rate_pair": [0.05, 0.1, 0.2, 0.9],
                            "frac_dangerous": [0.6, 0.4, 0.1, 0.0]})
    out = stats.flip_vs_dangerous(summary)
    assert out["n"] == 3 and out["r_question"] < -0.9


def test_paired_comparison_hand_computed():
    def q(quads, consistent):
        n = len(quads)
        return pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
                             "quadrant": quads, "consistent": consistent, "complete": [True] * n})
    a = q(["Dangerous", "Dangerous", "Ideal", "Worst", "Dangerous", "Ideal"], [True, True, True, False, True, True])
    b = q(["Ideal", "Dangerous", "Fragile", "Fragile", "Fragile", "Ideal"], [True, True, False, False, False, True])
    r = stats.paired_comparison(a, b, n_boot=500, seed=1)
    assert r["n"] == 6
    assert r["diff_dangerous"] == pytest.approx(3 / 6 - 1 / 6)
    assert r["diff_dangerous_ci_low"] <= r["diff_dangerous"] <= r["diff_dangerous_ci_high"]
    assert (r["flips_a_only"], r["flips_b_only"]) == (0, 2)
    assert r["mcnemar_flips_p_exact"] == pytest.approx(0.5)
    assert (r["dangerous_a_only"], r["dangerous_b_only"]) == (2, 0)
