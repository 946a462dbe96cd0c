"""Tests written to kill surviving mutants of ``vlm_eval/reduce/stats.py`` (mutmut, issue 16;
docs/testing.md lists the survivors and why the rest are equivalent)."""
from __future__ import annotations

import numpy as np

from vlm_eval.reduce import stats


def test_cluster_codes_rows_without_patient_or_sample_id_share_one_cluster_apart_from_all_others():
    # p1 -> patient cluster 0; "x" (no patient) -> its own cluster 1 (codes after the patients');
    # the two rows with neither id -> -1 (pandas 3's astype(str) keeps None missing): one
    # cluster of their own, never merged with p1 or x
    codes = stats.cluster_codes(["p1", None, None, ""], ["a", "x", None, None])
    assert codes.dtype == np.int64 and codes.tolist() == [0, 1, -1, -1]


def test_bootstrap_weights_with_int64_draws_are_the_same_counts_below_2_to_the_32():
    # why bootstrap_weights' int32/int64 choice cannot change a CI: numpy draws a bounded
    # integer below 2**32 from the same 32-bit stream whatever the output dtype
    a = np.random.default_rng(9).integers(0, 1000, size=500, dtype=np.int32)
    b = np.random.default_rng(9).integers(0, 1000, size=500, dtype=np.int64)
    assert np.array_equal(a, b)


def test_bootstrap_ratios_with_fractional_denominators():
    # two clusters, num [1, 0], den [0.25, 0.25]: est = 1 / 0.5 = 2. A resample picks
    # (0, 0) -> 2 / 0.5 = 4, (0, 1) or (1, 0) -> 1 / 0.5 = 2, (1, 1) -> 0 / 0.5 = 0
    # (probabilities 1/4, 1/2, 1/4): with 400 resamples the 2.5 % and 97.5 % quantiles are 0 and 4.
    # Every resampled denominator is 0.5 here: a ratio is never divided by anything else.
    est, lo, hi = stats.bootstrap_ratios(np.array([1.0, 0.0]), np.array([0.25, 0.25]), np.array([0, 1]),
                                         n_boot=400, seed=3)
    assert est[0] == 2.0 and lo[0] == 0.0 and hi[0] == 4.0
