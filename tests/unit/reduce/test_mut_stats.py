"""Tests written to kill surviving mutants of reduce/stats.py (mutmut, issue 16; docs/testing.md).

Expected values are worked out by hand (arithmetic in comments) or by the plain
reference algorithms of test_summary_reference.py, never by the function under test."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from test_summary_reference import ref_bootstrap_ratios
from vlm_eval.reduce import paired_comparison


def _quad(rows):
    return pd.DataFrame(rows, columns=["sample_id", "patient_id", "quadrant", "consistent", "complete"])


def test_paired_comparison_defaults_are_1000_resamples_seed_0():
    # 20 samples s00..s19 of 13 patients (s00-s13 two per patient p0..p6, s14-s19 alone)
    # A Dangerous where i % 3 == 0 (s00 s03 s06 s09 s12 s15 s18: 7/20); B where i % 4 == 0 (s00 s04 s08 s12 s16: 5/20)
    ids = [f"s{i:02d}" for i in range(20)]
    pids = [f"p{i // 2}" if i < 14 else f"q{i}" for i in range(20)]
    a = _quad([(s, p, "Dangerous" if i % 3 == 0 else "Ideal", True, True) for i, (s, p) in enumerate(zip(ids, pids))])
    b = _quad([(s, p, "Dangerous" if i % 4 == 0 else "Ideal", True, True) for i, (s, p) in enumerate(zip(ids, pids))])
    got = paired_comparison(a, b)
    # diff = 7/20 - 5/20 = 0.1
    assert (got["frac_dangerous_a"], got["frac_dangerous_b"], got["diff_dangerous"]) == pytest.approx((0.35, 0.25, 0.1))
    da = np.array([i % 3 == 0 for i in range(20)], dtype=float)
    db = np.array([i % 4 == 0 for i in range(20)], dtype=float)
    num = np.stack([da - db, da, db], 1)

    def ref(n_boot, seed):
        _, lo, hi = ref_bootstrap_ratios(num, np.ones_like(num), pids, n_boot, seed)
        return lo[0], hi[0]
    want = ref(1000, 0)
    assert (got["diff_dangerous_ci_low"], got["diff_dangerous_ci_high"]) == pytest.approx(want, abs=1e-12)
    # the check can tell: 1001 resamples, or seed 1, give another interval
    assert ref(1001, 0) != pytest.approx(want, abs=1e-12) and ref(1000, 1) != pytest.approx(want, abs=1e-12)


def test_wilson_interval_at_n_0_is_nan_without_a_warning():
    import warnings

    from vlm_eval.reduce import wilson_interval

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 (invalid) and z^2/(2*0) (divide) must stay silent
        lo, hi = wilson_interval([0, 3], [0, 10])
    # n = 0 -> NaN; 3/10: z = 1.959964, centre = (0.3 + 0.19207) / 1.38415 = 0.35551,
    # half = 1.959964 * sqrt(0.021 + 0.0096038) / 1.38415 = 0.24772 -> (0.10779, 0.60322)
    assert np.isnan(lo[0]) and np.isnan(hi[0])
    assert (lo[1], hi[1]) == pytest.approx((0.10779, 0.60322), abs=1e-4)


def test_pearson_r_edge_cases_without_warnings():
    import math
    import warnings

    from vlm_eval.reduce import pearson_r

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant side must be caught before np.corrcoef (0/0 warns)
        # x = [-1, 1, -1, 1] (std exactly 1), y = [0, 1, 0, 2]: dx = x, dy = [-.75, .25, -.75, 1.25];
        # sum dx dy = 3, sum dx^2 = 4, sum dy^2 = 2.75 -> r = 3 / sqrt(11) = 0.904534
        assert pearson_r([-1, 1, -1, 1], [0, 1, 0, 2]) == (pytest.approx(3 / math.sqrt(11)), 4)
        assert pearson_r([0, 1, 0, 2], [-1, 1, -1, 1]) == (pytest.approx(3 / math.sqrt(11)), 4)
        r, n = pearson_r([1, 1, 1, 1], [1, 2, 3, 4])  # no variance in x
        assert math.isnan(r) and n == 4
        r, n = pearson_r([1, 2, 3, 4], [5, 5, 5, 5])  # no variance in y
        assert math.isnan(r) and n == 4
        r, n = pearson_r([1, 2], [3, 5])  # two pairs: not measured (would be exactly 1)
        assert math.isnan(r) and n == 2
    # null / NaN / inf pairs are left out: the 3 finite pairs (1, 2), (2, 4), (5, 10) lie on y = 2x -> r = 1
    assert pearson_r([1, 2, None, 4, 5, np.inf], [2, 4, 6, None, 10, 1]) == (pytest.approx(1.0), 3)


def test_flip_vs_dangerous_uses_rows_with_n_above_0_and_no_finding():
    from vlm_eval.reduce import flip_vs_dangerous

    summary = pd.DataFrame({
        "finding": [None, None, None, None, None, "nodule"],
        "n": [1, 5, 5, 5, 0, 5],
        "flip_rate_question": [0.0, 0.2, 0.4, 0.6, 1.0, 0.9],
        "flip_rate_pair": [0.0, 0.1, 0.3, 0.2, 1.0, 0.9],
        "frac_dangerous": [1.0, 0.2, 0.4, 0.8, 0.0, 0.1],
    })
    got = flip_vs_dangerous(summary)
    # rows 0-3. question: dx = [-.3, -.1, .1, .3], dy = [.4, -.4, -.2, .2]: sum dx dy = -0.04,
    # sum dx^2 = 0.2, sum dy^2 = 0.4 -> r = -0.04 / sqrt(0.08) = -0.141421
    # pair: dx = [-.15, -.05, .15, .05]: sum dx dy = -0.06, sum dx^2 = 0.05 -> r = -0.06 / sqrt(0.02) = -0.424264
    assert got["n"] == 4
    assert (got["r_question"], got["r_pair"]) == pytest.approx((-0.141421, -0.424264), abs=1e-6)


def test_seed_for_mixes_the_key_into_the_seed():
    import zlib

    from vlm_eval.reduce.stats import seed_for

    # documented: SeedSequence([seed, crc32(repr(key))]); the key is the tuple of the extra arguments
    want = np.random.SeedSequence([7, zlib.crc32(repr(("m1", "ds")).encode())])
    assert seed_for(7, "m1", "ds").entropy == want.entropy
    a, b = (np.random.default_rng(seed_for(7, *k)).random(3) for k in (("m1", "ds"), ("m2", "ds")))
    assert not np.allclose(a, b)  # two groups of one run get two bootstrap streams


def test_cluster_codes_are_sorted_patients_then_sorted_lone_samples():
    from vlm_eval.reduce.stats import cluster_codes

    # patients sorted: p1 -> 0, p2 -> 1; then samples without a patient ("" and " " are none), sorted: s2 2, s5 3, s6 4
    got = cluster_codes(["p2", None, "p1", "p2", "", " "], ["s1", "s5", "s3", "s4", "s2", "s6"])
    assert got.tolist() == [1, 3, 0, 1, 2, 4] and got.dtype == np.int64


def test_auroc_drops_null_scores_and_is_nan_silently_for_one_class():
    import math
    import warnings

    from vlm_eval.reduce import auroc

    # None is no score: positives {0.9, 0.4}, negatives {0.1, 0.4}: pairs (0.9 > 0.1, 0.9 > 0.4, 0.4 > 0.1, 0.4 = 0.4)
    # = 3 + 1/2 of 4 -> 0.875
    assert auroc([0.9, None, 0.4, 0.1, 0.4], [True, True, True, False, False]) == pytest.approx(0.875)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(auroc([0.1, 0.2], [True, True])) and math.isnan(auroc([0.1, 0.2], [False, False]))


def test_bootstrap_ratios_defaults_are_1000_resamples_seed_0_level_95():
    from vlm_eval.reduce import bootstrap_ratios

    # 12 rows of 7 clusters, a ratio of sums: sum(num) = 15.0, sum(den) = 20 -> estimate 0.75
    clusters = [0, 0, 1, 2, 2, 3, 4, 4, 5, 5, 6, 6]
    num = np.array([0.3, 1.7, 0.2, 2.5, 0.9, 1.1, 0.4, 3.0, 0.6, 1.3, 0.8, 2.2])[:, None]
    den = np.array([1, 2, 1, 3, 1, 2, 1, 2, 1, 1, 2, 3.0])[:, None]
    est, lo, hi = bootstrap_ratios(num, den, np.array(clusters))
    assert est[0] == pytest.approx(0.75)
    want = ref_bootstrap_ratios(num, den, clusters, 1000, 0)
    assert (lo[0], hi[0]) == pytest.approx((want[1][0], want[2][0]), abs=1e-12)
    # the check can tell: 1001 resamples or seed 1 give another interval
    for n_boot, seed in ((1001, 0), (1000, 1)):
        other = ref_bootstrap_ratios(num, den, clusters, n_boot, seed)
        assert (other[1][0], other[2][0]) != pytest.approx((want[1][0], want[2][0]), abs=1e-12)


def test_bootstrap_ratios_with_a_zero_denominator_is_nan_without_a_warning():
    import warnings

    from vlm_eval.reduce import bootstrap_ratios

    # columns: 1/2 = 0.5; 0/0 (invalid) -> NaN; 1/0 (divide) -> NaN; no interval where the estimate is NaN
    num = np.array([[1, 0, 1], [0, 0, 0.0]])
    den = np.array([[1, 0, 0], [1, 0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est, lo, hi = bootstrap_ratios(num, den, np.array([0, 1]), n_boot=50, seed=3)
    assert est[0] == 0.5 and np.isnan(est[1:]).all()
    assert 0.0 <= lo[0] <= 0.5 <= hi[0] <= 1.0 and np.isnan(lo[1:]).all() and np.isnan(hi[1:]).all()


def test_bootstrap_ratios_with_0_and_1_resamples():
    from vlm_eval.reduce import bootstrap_ratios

    num, den, clusters = np.array([1.0, 0.0, 1.0, 1.0]), np.ones(4), np.array([0, 1, 2, 3])
    est, lo, hi = bootstrap_ratios(num, den, clusters, n_boot=0)
    assert est[0] == 0.75 and np.isnan(lo[0]) and np.isnan(hi[0])  # 3/4; no resamples, no interval
    est, lo, hi = bootstrap_ratios(num, den, clusters, n_boot=1, seed=5)
    # one resample: both ends are its ratio, a multiple of 1/4 within [0, 1]
    assert est[0] == 0.75 and lo[0] == hi[0] and lo[0] * 4 == round(lo[0] * 4) and 0.0 <= lo[0] <= 1.0


def test_bootstrap_ratios_in_chunks_with_zero_denominator_resamples_equals_the_reference(monkeypatch):
    from vlm_eval.reduce import stats

    # 10 resample-cells per chunk and 4 clusters -> chunks of 2 resamples; 301 is not a multiple of 2
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 10)
    clusters = [0, 1, 1, 2, 3]
    # denominators 0 (cluster 0), 1 (cluster 3) and 2 / 3: resamples with a denominator of 0 (NaN) and of 1 occur
    num = np.array([[0.0], [1.0], [0.37], [0.0], [0.83]])
    den = np.array([[0.0], [1.0], [1.0], [0.0], [1.0]])
    for level in (0.5, 0.8, 0.98):
        est, lo, hi = stats.bootstrap_ratios(num, den, np.array(clusters), n_boot=301, seed=4, level=level)
        assert est[0] == pytest.approx(2.2 / 3)  # (1 + 0.37 + 0.83) / 3
        _, r_lo, r_hi = ref_bootstrap_ratios(num, den, clusters, 301, 4, level=level)
        assert (lo[0], hi[0]) == pytest.approx((r_lo[0], r_hi[0]), abs=1e-12), level
    # 9 clusters of varied ratios, 20 cells per chunk -> chunks of 2; the last chunk holds the 301st resample alone
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 20)
    num = np.array([0.0, 1.0, 0.37, 0.0, 0.83, 1.9, 0.11, 2.6, 0.5])[:, None]
    den = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 2.0, 1.0, 3.0, 1.0])[:, None]
    est, lo, hi = stats.bootstrap_ratios(num, den, np.arange(9), n_boot=301, seed=4)
    assert est[0] == pytest.approx(0.731)  # 7.31 / 10
    _, r_lo, r_hi = ref_bootstrap_ratios(num, den, list(range(9)), 301, 4)
    assert (lo[0], hi[0]) == pytest.approx((r_lo[0], r_hi[0]), abs=1e-12)


def test_bootstrap_ratios_interval_is_nan_and_silent_when_no_resample_has_a_denominator():
    import warnings

    from vlm_eval.reduce import bootstrap_ratios

    # only cluster 0 of 50 has a denominator; seed 2's single resample of 50 draws never picks cluster 0
    # (checked with numpy's generator), so the estimate is 1.0 and the interval is not measured
    # (column 1; column 0 has num = den = 1 everywhere: every resample gives 1)
    num = np.zeros((50, 2))
    den = np.zeros((50, 2))
    num[:, 0] = den[:, 0] = 1.0
    num[0, 1] = den[0, 1] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est, lo, hi = bootstrap_ratios(num, den, np.arange(50), n_boot=1, seed=2)
    assert est.tolist() == [1.0, 1.0] and lo[0] == hi[0] == 1.0
    assert np.isnan(lo[1]) and np.isnan(hi[1])
