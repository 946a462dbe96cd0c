"""Tests written to kill surviving mutants of ``vlm_eval/reduce/rows.py`` (mutmut, issue 16;
docs/testing.md lists each survivor and the test that kills it or why it is equivalent).

Every expected value is worked out by hand in the test (arithmetic in a comment)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from vlm_eval.reduce.rows import PROBLEM, entropy_bits, finite_margin, usable


def test_entropy_bits_of_a_list_with_null_infinities_and_a_tiny_margin_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # +-inf margins compute 0 * -inf inside, silenced by np.errstate
        got = entropy_bits([0.0, None, np.inf, -np.inf, 3e-16])
    # m = 0: p = q = 1/2 -> 1 bit; None -> NaN; +-inf: p or q = 0 -> 0 bits;
    # m = 3e-16: -(p ln p + q ln q) / ln 2 rounds to 1.0000000000000002 in float64, clipped to 1
    assert got.dtype == np.float64
    assert got[0] == 1.0 and np.isnan(got[1]) and got[2] == 0.0 and got[3] == 0.0
    assert got[4] == 1.0


def test_finite_margin_rejects_plus_inf_on_either_side():
    ly = np.array([np.inf, -1.0, -np.inf, -1.0])
    ln = np.array([-1.0, np.inf, -np.inf, -2.0])
    # +inf yes, +inf no, -inf both (NaN margin): no; -1 - -2 = 1: yes
    assert finite_margin(ly, ln).tolist() == [False, False, False, True]


def test_usable_with_a_problem_column_keeps_engine_errors_unusable_and_the_index():
    pf = pd.DataFrame({"logprob_yes": [-0.1, -0.1, -0.1], "logprob_no": [-2.0, -2.0, -2.0],
                       "error": ["boom", None, None], PROBLEM: [None, "ambiguous", None]},
                      index=[10, 20, 30])
    got = usable(pf)
    # row 10: an engine error; row 20: set aside by conflicting_rows; row 30: usable
    assert got.tolist() == [False, False, True]
    assert got.index.tolist() == [10, 20, 30]
