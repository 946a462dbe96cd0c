"""Tests written to kill surviving mutants of the reducer (mutmut, issue 16; docs/testing.md).

Every expected value is worked out by hand in the test (arithmetic in a comment), never by
calling the function under test."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reduce_builders import preds_frame, sample, samples_frame
from vlm_eval.reduce import margin, prediction
from vlm_eval.reduce.metrics import orphan_predictions
from vlm_eval.reduce.rows import conflicting_rows, row_problem


def test_prediction_of_a_list_with_null_and_nan():
    # 2.0 > 0 -> yes; None and NaN -> no prediction (None, never ''); a tie 0.0 -> no; -0.5 -> no
    got = prediction([2.0, None, float("nan"), 0.0, -0.5])
    assert list(got) == ["yes", None, None, "no", "no"]
    assert got[1] is None and got[2] is None


def test_margin_of_null_and_of_two_minus_inf_is_nan_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # -inf - -inf would warn "invalid value" outside np.errstate
        got = margin([-1.0, None, -np.inf, 0], [-3.0, -1.0, -np.inf, None])
    # -1 - -3 = 2; a null log-probability -> NaN; -inf - -inf -> NaN; a null on the other side -> NaN
    assert got.dtype == np.float64
    assert got[0] == 2.0 and np.isnan(got[1:]).all()
    assert margin([1], [3]).dtype == np.float64  # integer input still gives float margins


def _rows(*rows):
    return preds_frame([dict(sample_id=s, variant=v, condition=c, prompt_id=p, logprob_yes=-0.1, logprob_no=-2.0, error=None)
                        for s, v, c, p in rows])


def test_conflicting_rows_with_exactly_two_rows_in_one_cell():
    # two image rows for (s, variant 0) with prompt_ids p-b and p-a: the p-a row kept (prompt_id order), marked
    got = conflicting_rows(_rows(("s", 0, "image", "p-b"), ("s", 0, "image", "p-a")))
    assert len(got) == 1 and got.loc[0, "prompt_id"] == "p-a"
    assert got.loc[0, "_problem"] == "2 image predictions for variant 0 with different prompt_ids (p-a, p-b): ambiguous"


def test_conflicting_rows_ignores_shared_rows_that_carry_a_variant():
    # text_only rows stored once per prompt_id (sample_id null) are not sample-specific, even with a
    # variant: two of them under one condition and variant are no conflict
    pf = _rows((None, 0, "text_only", "p-a"), (None, 0, "text_only", "p-b"), ("s", 0, "image", "p-a"))
    assert conflicting_rows(pf) is pf
    # nor are rows with a sample_id but no variant
    pf = _rows(("s", None, "text_only", "p-a"), ("s", None, "text_only", "p-b"), ("s", 0, "image", "p-a"))
    assert conflicting_rows(pf) is pf


def test_conflicting_rows_two_cells_null_prompt_id_and_a_non_default_index():
    pf = _rows(("s", 0, "image", "zeta"), ("t", 1, "image", "b"), ("s", 0, "image", None),  # cell (s, 0): zeta, null
               ("s", 1, "image", "x"),  # alone in its cell
               ("t", 1, "image", "a"), ("t", 1, "image", "c"),  # cell (t, 1): b, a, c
               ("t", 1, "text_only", "a"))  # another condition: another cell
    pf.index = [10, 11, 12, 13, 14, 15, 16]
    got = conflicting_rows(pf)
    # (s, 0): a named prompt_id before null -> zeta kept; (t, 1): a < b < c -> a kept; 7 - 1 - 2 = 4 rows, RangeIndex
    assert list(got.columns) == list(pf.columns) + ["_problem"] and list(got.index) == [0, 1, 2, 3]
    assert list(zip(got["sample_id"], got["variant"], got["condition"], got["prompt_id"])) == [
        ("s", 0, "image", "zeta"), ("s", 1, "image", "x"), ("t", 1, "image", "a"), ("t", 1, "text_only", "a")]
    assert got["_problem"].tolist() == [
        "2 image predictions for variant 0 with different prompt_ids (null, zeta): ambiguous", None,
        "3 image predictions for variant 1 with different prompt_ids (a, b, c): ambiguous", None]
    assert got.loc[1, "_problem"] is None and got.loc[3, "_problem"] is None
    # two sample-specific rows, no conflict: the input itself comes back (no copy, no _problem column)
    pf = _rows(("s", 0, "image", "a"), ("s", 1, "image", "b"), ("s", 0, "text_only", "a"))
    assert conflicting_rows(pf) is pf


def test_row_problem_words_every_kind():
    assert row_problem(None, -1.0, -2.0, problem="two rows") == ("unusable prediction", "two rows")
    assert row_problem("OOM", None, None) == ("engine error", "OOM")
    assert row_problem(None, None, -1.0) == ("unusable prediction", "missing or NaN log-probability")
    assert row_problem(None, -1.0, None) == ("unusable prediction", "missing or NaN log-probability")
    assert row_problem(None, -np.inf, -np.inf) == ("unusable prediction", "log-probability -inf for both answers")
    assert row_problem(None, np.inf, -1.0) == ("unusable prediction", "a +inf log-probability")


def test_orphan_predictions_of_no_rows_and_of_shared_rows_only_is_0():
    samples = samples_frame([sample("s")])
    assert orphan_predictions(samples, _rows()) == 0  # no prediction rows at all
    assert orphan_predictions(samples, _rows((None, None, "text_only", "p"))) == 0  # a shared row is no orphan
    # s is known; x twice and y once are not: 3 orphan rows
    assert orphan_predictions(samples, _rows(("s", 0, "image", "p"), ("x", 0, "image", "p"), ("x", 1, "image", "p"),
                                             ("y", 0, "image", "p"), (None, 0, "text_only", "p"))) == 3
