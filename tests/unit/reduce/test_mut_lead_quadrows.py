"""Tests written to kill surviving mutants of ``vlm_eval/reduce/quadrows.py`` (mutmut, issue 16;
docs/testing.md lists the survivors and why the rest are equivalent). Expected values are
worked out by hand in the comments."""
from __future__ import annotations

import numpy as np
import pandas as pd

from vlm_eval.reduce import quadrows, summary
from vlm_eval.reduce.quadrows import QuadRows, QuadRowsBuilder


def test_quadrant_and_flag_codes_of_known_missing_and_other_values():
    q = quadrows._quadrant_codes(pd.Series(["Ideal", "Fragile", "Dangerous", "Worst", None, "Bogus"]))
    # index in QUADRANTS; null -1; anything else -2 (never a quadrant's code, and "?" in paired frames)
    assert q.dtype == np.int8 and q.tolist() == [0, 1, 2, 3, -1, -2]
    t = quadrows._tri(pd.Series([True, False, None, "x"], dtype=object))
    assert t.dtype == np.int8 and t.tolist() == [1, 0, -1, 2]


def test_sample_ranks_are_byte_order_with_null_first_for_arrow_and_object_ids():
    ids = ["b", "a", None, "c", "a", "B"]
    # sorted: None ("") < "B" < "a" (rows 1 and 4, one rank) < "b" < "c"
    expected = [3, 2, 0, 4, 2, 1]
    arrow = quadrows._sample_ranks(pd.Series(ids, dtype=pd.StringDtype("pyarrow", na_value=np.nan)))
    plain = quadrows._sample_ranks(pd.Series(ids, dtype=object))
    assert arrow.tolist() == expected and plain.tolist() == expected and plain.dtype == np.int64
    # a NaN (float) for a missing id in an object column is missing too, not an error
    nan_ids = quadrows._sample_ranks(pd.Series([np.nan if v is None else v for v in ids], dtype=object))
    assert nan_ids.tolist() == expected


def _frame(n_variants_dtype="float64", **over) -> pd.DataFrame:
    f = pd.DataFrame({
        "model": ["m", "m", "m", "m"], "dataset": ["d2", "d1", None, "d2"], "finding": ["b", "a", "b", "a"],
        "sample_id": ["s3", "s1", "s4", "s2"], "patient_id": ["p1", "p1", None, ""],
        "complete": [True, True, True, False], "quadrant": ["Ideal", "Dangerous", "Worst", None],
        "correct": [True, False, True, None], "consistent": [True, True, False, None],
        "flips": [0.0, 0.0, 1.0, None], "n_variants": [3.0, 3.0, 3.0, 3.0],
        "entropy": [0.5, 0.1, 0.9, None], "margin": [1.0, -2.0, 0.2, None],
        "ablation_agreement": [1.0, 1.0, 0.0, None],
        "image_reliant": [True, False, False, None], "blank_reliant": [True, None, False, None],
    })
    f["n_variants"] = f["n_variants"].astype(n_variants_dtype)
    for k, v in over.items():
        f[k] = v
    return f


def test_from_frame_with_nullable_columns_gives_float_measures_and_non_negative_codes():
    # a quadrant table read back with pandas' nullable dtypes (Float64 / Int64 / boolean with <NA>)
    f = _frame("Int64").convert_dtypes()
    f["complete"] = pd.array([True, True, True, None], dtype="boolean")  # <NA>: not complete
    rows = QuadRows.from_frame(f)
    assert rows.complete.dtype == np.bool_ and rows.complete.tolist() == [True, True, True, False]
    for name in ("flips", "n_variants", "entropy", "margin", "agreement"):
        a = getattr(rows, name)
        assert a.dtype == np.float64, name
    assert np.isnan(rows.entropy[3]) and rows.flips.tolist()[:3] == [0.0, 0.0, 1.0]
    # codes index their lists: never negative; the missing dataset is the None entry
    assert rows.dataset.min() >= 0 and rows.datasets[rows.dataset[2]] is None
    assert rows.model.dtype == np.int32 and rows.dataset.dtype == np.int32
    # order: rank in sample_id order (s1 < s2 < s3 < s4), int64
    assert rows.order.dtype == np.int64 and rows.order.tolist() == [2, 0, 3, 1]
    # "image_reliant" is the quadrant's own reliance, not an extra ablation
    assert list(rows.reliant) == ["blank"] and rows.reliant["blank"].tolist() == [1, -1, 0, -1]


def test_builder_keeps_compact_dtypes_and_an_empty_builder_gives_typed_empty_rows():
    b = QuadRowsBuilder(["m"], ["d"], ["a", "b"])
    f = _frame()
    b.add(0, f, dataset=np.zeros(4, np.int32), finding=np.array([1, 0, 1, 0], np.int32),
          order=np.array([2, 0, 3, 1], np.int32), cluster=np.array([0, 0, 2, 3], np.int64))
    rows = b.rows()
    # the per-sample arrays stay small: model int16, flags int8, flips / n_variants float32 (exact for small ints)
    assert rows.model.dtype == np.int16 and rows.quadrant.dtype == np.int8 and rows.correct.dtype == np.int8
    assert rows.flips.dtype == np.float32 and rows.n_variants.dtype == np.float32
    assert rows.entropy.dtype == np.float64 and rows.n_variants.tolist() == [3.0, 3.0, 3.0, 3.0]
    assert list(rows.reliant) == ["blank"] and rows.reliant["blank"].dtype == np.int8
    empty = QuadRowsBuilder(["m"], [], []).rows()
    assert len(empty) == 0
    assert {f: getattr(empty, f).dtype for f in QuadRows.FIELDS} == {f: np.dtype(t) for f, t in
                                                                    quadrows._BUILT_DTYPE.items()}


def test_summary_rows_come_in_sorted_key_order_and_errored_only_keys_are_kept():
    f = _frame()
    errored = pd.DataFrame({"model": ["m"], "sample_id": ["s9"], "dataset": ["d0"], "finding": ["c"]})
    table = summary.summary_table(f, errored, n_boot=20, seed=0)
    keys = list(zip(table["dataset"], table["finding"].fillna("-")))
    # datasets sorted with the missing one last: d0 (errored only), d1, d2, None; then per finding
    assert keys == [("d0", "-"), ("d1", "-"), ("d2", "-"), (None, "-"),
                    ("d0", "c"), ("d1", "a"), ("d2", "a"), ("d2", "b"), (None, "b")]
    d0 = table[(table["dataset"] == "d0") & table["finding"].isna()].iloc[0]
    assert d0["n"] == 0 and d0["n_errors"] == 1
    d2 = table[(table["dataset"] == "d2") & table["finding"].isna()].iloc[0]
    assert d2["n"] == 1 and d2["n_incomplete"] == 1 and d2["frac_ideal"] == 1.0  # s3 Ideal; s2 incomplete


def test_sample_ranks_are_dense_and_shared_by_rows_of_one_sample():
    # sorted ids: None ("") < "a" < "b": ranks 0, 1, 2; the two rows of "a" (and of "b") share one
    got = quadrows._sample_ranks(pd.Series(["b", "a", None, "a", "b"], dtype=object))
    assert got.dtype == np.int64 and got.tolist() == [2, 1, 0, 1, 2]
    assert quadrows._sample_ranks(pd.Series(["s", "s"])).tolist() == [0, 0]  # two rows, one sample
    assert quadrows._sample_ranks(pd.Series(["s"])).tolist() == [0]
