"""Tests written to kill surviving mutants of ``vlm_eval/reduce/dense.py`` (mutmut, issue 16;
docs/testing.md lists each survivor and the test that kills it or why it is equivalent).

Every expected value is worked out by hand in the test (arithmetic in a comment), never by
calling the function under test. The dense functions are tested directly against their
documented contracts (-1 = no row, int64 / bool / float64 arrays) where ``quadrant_table``
cannot reach a case with deduplicated input.
"""
from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

import test_reduce_properties as properties
from reduce_builders import logprobs, preds_frame, sample, samples_frame
from test_reduce_properties import SETTINGS, runs
from vlm_eval.config import TaxonomyConfig
from vlm_eval.reduce import dense, quadrant_table

TAX = TaxonomyConfig(ablation="text_only")


def _row(sid, v, cond, pid, m=None, error=None):
    ly, ln = (None, None) if m is None else logprobs(m)
    return dict(sample_id=sid, variant=v, condition=cond, prompt_id=pid, logprob_yes=ly, logprob_no=ln, error=error)


def test_row_margins_are_float64_nan_for_unusable_rows_of_object_columns_without_a_warning():
    pf = pd.DataFrame({"logprob_yes": pd.Series([None, -0.5, -np.inf, -0.25], dtype=object),
                       "logprob_no": pd.Series([None, -1.5, -np.inf, -2.25], dtype=object),
                       "error": [None, None, None, "boom"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # -inf - -inf warns "invalid value" outside np.errstate
        ok, m = dense.row_margins(pf)
    # row 0 null -> not usable; row 1 -0.5 - -1.5 = 1.0; row 2 both -inf -> not usable; row 3 an error
    assert ok.dtype == bool and ok.tolist() == [False, True, False, False]
    assert m.dtype == np.float64
    assert m[1] == 1.0 and np.isnan(m[[0, 2, 3]]).all()


def test_codes_of_a_list_and_of_arrow_strings():
    c, u = dense.codes(["b", None, "a", "b"])  # a plain list is wrapped in a Series
    # first-seen order: b -> 0, a -> 1; None -> -1
    assert c.dtype == np.int64 and c.tolist() == [0, -1, 1, 0]
    assert u.dtype == object and u.tolist() == ["b", "a"]
    c, u = dense.codes(pd.Series(["x", None, "x"], dtype="string[pyarrow]"))
    assert c.tolist() == [0, -1, 0] and u.dtype == object and u.tolist() == ["x"]
    c, u = dense.codes(pd.Series([3, 1, 3]))  # uniques are an object array whatever the column's dtype
    assert c.tolist() == [0, 1, 0] and u.dtype == object and u.tolist() == [3, 1]


def test_row_variants_null_is_minus_1():
    got = dense.row_variants(pd.DataFrame({"variant": pd.array([2, None, 0], dtype="Int64")}))
    assert got.dtype == np.int64 and got.tolist() == [2, -1, 0]


def test_sample_positions_of_null_and_unknown_sample_ids_are_minus_1():
    samples = pd.DataFrame({"sample_id": ["s1", "s2"]})
    pf = pd.DataFrame({"sample_id": [None, "s2", "zz", "s1", None]})
    # None -> -1 (null), s2 -> 1, zz -> -1 (not in samples), s1 -> 0
    got = dense.sample_positions(samples, pf)
    assert got.dtype == np.int64 and got.tolist() == [-1, 1, -1, 0, -1]


def test_cell_rows_ignore_variants_beyond_the_sample_and_mark_empty_cells_minus_1():
    # samples 0 and 1 have one variant each (width 1); row 1 is variant 1 of sample 0: out of range, ignored
    # (placed anyway it would land in sample 1's cell, flat index 0 * 1 + 1 = 1, on top of row 2)
    mask = np.array([True, True, True, False])
    pos = np.array([0, 0, 1, 0])
    variant = np.array([0, 1, 0, 0])
    got = dense.cell_rows(mask, pos, variant, np.array([1, 1]))
    assert got.dtype == np.int64 and got.tolist() == [[0], [2]]
    # sample 1 without rows: its cells are -1 (no row); width = max n_variants = 2
    got = dense.cell_rows(np.array([True]), np.array([0]), np.array([1]), np.array([2, 1]))
    assert got.tolist() == [[-1, 0], [-1, -1]]


def test_shared_rows_take_the_first_usable_row_in_row_order():
    # prompt 0: 20 shared rows, rows 0..16 unusable, 17, 18, 19 usable -> row 17 (numpy's default
    # argsort of 20 booleans is not stable and would give row 19); prompt 1: rows 20 (usable)
    # and 21 (not) -> 20; prompt 2: only row 22, unusable -> 22 (else the first); prompt 3: none -> -1
    n = 23
    pf = pd.DataFrame({"sample_id": [None] * n})
    ok = np.array([False] * 17 + [True] * 3 + [True, False, False])
    prompt = np.array([0] * 20 + [1, 1, 2])
    got = dense.shared_rows(pf, np.ones(n, bool), ok, prompt, 4)
    assert got.dtype == np.int64 and got.tolist() == [17, 20, 22, -1]


def test_ablated_cells_without_shared_rows_or_prompt_ids():
    own = np.array([[-1], [3]])
    img = np.array([[0], [1]])
    # no prompt has a shared row (n_prompts 0: every prompt_id null): the own rows as they are
    got = dense.ablated_cells(own, img, np.zeros(0, np.int64), np.array([-1, -1, -1, -1]))
    assert got.tolist() == [[-1], [3]]
    # sample 0's image row 0 has a null prompt_id (-1): no shared row to take -> -1, never another sentinel
    got = dense.ablated_cells(np.array([[-1], [-1]]), np.array([[0], [1]]), np.array([2]), np.array([-1, 0, 0]))
    assert got.tolist() == [[-1], [2]]  # sample 1: its image row 1 has prompt 0, whose shared row is 2


def test_cell_values_without_prediction_rows_are_bool_false_and_float_nan():
    ok, yes, m = dense.cell_values(np.full((2, 2), -1), np.zeros(0, bool), np.zeros(0))
    assert ok.dtype == bool and yes.dtype == bool and m.dtype == np.float64
    assert not ok.any() and not yes.any() and np.isnan(m).all() and m.shape == (2, 2)


def test_incomplete_reason_when_the_first_prediction_row_is_the_ablation():
    # s1 (2 variants): row 0 = its own text_only row for variant 0, an engine error; image rows for v0, v1 and
    # an own text_only row for v1 are fine -> the only reason is row 0's error
    # s2 (2 variants): row 0 of ITS frame is its usable own text_only row for v0; image v1 missing
    s = samples_frame([sample("s1", n_variants=2), sample("s2", n_variants=2)])
    pf = preds_frame([_row("s1", 0, "text_only", "p0", error="CUDA out of memory"), _row("s1", 0, "image", "p0", 2.0),
                      _row("s1", 1, "image", "p1", 1.0), _row("s1", 1, "text_only", "p1", 1.0)])
    got = quadrant_table(s.iloc[:1].reset_index(drop=True), pf, TAX, ["text_only"])
    assert not got.loc[0, "complete"]
    assert got.loc[0, "incomplete_reason"] == "engine error (text_only): CUDA out of memory"
    pf = preds_frame([_row("s2", 0, "text_only", "p0", 1.0), _row("s2", 0, "image", "p0", 2.0)])
    got = quadrant_table(s.iloc[1:].reset_index(drop=True), pf, TAX, ["text_only"])
    # v1 has no image row; v0's text_only row (row 0) is present, so no "missing text_only" part
    assert got.loc[0, "incomplete_reason"] == "missing image predictions for variants [1]"


# --- A cheaper twin of test_reduce_properties.test_dense_path_equals_the_reference for the
# per-mutant runs: that test's own body on the same kind of random runs, with its second
# reference (the join-based frame_reference path, 2/3 of its time) replaced by the dense path
# itself plus the checks that assert_same does not make (index, dtypes), so only the per-sample
# reference comparison remains. setup.cfg [mutmut] runs this one per mutant instead of the
# original (which still runs in `make test`).
# dtypes that do not depend on the data (string columns are StringDtype or object, e.g. object
# when every value is null, so they are not pinned)
KINDS = {"n_variants": "i8", "margin": "f8", "entropy": "f8", "flip_rate": "f8", "ablated_margin": "f8",
         "margin_shift": "f8", "ablation_agreement": "f8", "complete": "b",
         "correct": "O", "consistent": "O", "flips": "O", "image_reliant": "O",
         "blank_margin": "f8", "blank_margin_shift": "f8", "blank_reliant": "O"}


def _kind(dtype) -> str:
    if isinstance(dtype, pd.StringDtype):
        return "str"
    return {"O": "O", "b": "b"}.get(dtype.kind, dtype.str.lstrip("<>=|")[-2:])


def _dense_path_checked(samples_df, kept, tax, extras):
    """Stands in for frame_quadrant_table: the dense result itself, its index and dtypes checked."""
    got = quadrant_table(samples_df, kept, tax, ["text_only", *extras])
    assert isinstance(got.index, pd.RangeIndex) and got.index.equals(pd.RangeIndex(len(samples_df)))
    kinds = {c: _kind(t) for c, t in got.dtypes.items()}
    assert {c: kinds.get(c) for c in KINDS} == KINDS
    assert all(kinds[c] in ("str", "O") for c in got.columns if c not in KINDS)
    return got


@settings(SETTINGS, max_examples=15)
@given(runs(), st.sampled_from(["original", "majority", "any"]))
def test_dense_path_equals_the_per_sample_reference_fast(case, rule):
    with mock.patch.object(properties, "frame_quadrant_table", _dense_path_checked):
        properties.test_dense_path_equals_the_reference.hypothesis.inner_test(case, rule)
