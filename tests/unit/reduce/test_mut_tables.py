"""Tests written to kill surviving mutants of ``vlm_eval/reduce/tables.py`` (mutmut, issue 16;
docs/testing.md lists each survivor and the test that kills it or why it is equivalent).

Every expected value is written out by hand from the hand-built run folder."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reduce_builders import logprobs, preds, preds_frame, sample, write_run
from vlm_eval.reduce import tables
from vlm_eval.reduce.files import TableFileError
from vlm_eval.schema import QUADRANTS_FILE, SAMPLES

SAMPLE_COLUMNS = ["sample_id", "dataset", "patient_id", "finding", "label", "n_variants"]
PREDICTION_COLUMNS = ["model", "sample_id", "variant", "condition", "prompt_id", "logprob_yes", "logprob_no",
                      "other_mass", "image_sha256", "error", "attempt"]


@pytest.fixture
def run(tmp_path):
    # s1: 3 prompts; s2: prompts null (0 variants). Model a: one image row for s1; model b: no rows.
    s2 = dict(sample("s2"), prompts=None)
    return write_run(tmp_path / "run", [sample("s1"), s2], {"a": preds("s1", [1.0], [None]), "b": []})


def test_samples_n_variants_counts_prompts_and_null_prompts_count_0(run):
    got = tables.samples(run)
    assert list(got.columns) == SAMPLE_COLUMNS
    assert got["sample_id"].tolist() == ["s1", "s2"]
    assert str(got["n_variants"].dtype) == "int64" and got["n_variants"].tolist() == [3, 0]
    assert got.loc[0, "patient_id"] is None  # a null id is None, not NaN


def test_an_empty_samples_file_next_to_a_full_one_adds_no_rows(run):
    pq.write_table(SAMPLES.empty_table(), os.path.join(run, "samples", "part-1.parquet"))
    got = tables.samples(run)
    assert got["sample_id"].tolist() == ["s1", "s2"] and got["n_variants"].tolist() == [3, 0]


def test_raw_predictions_keep_every_row_with_the_model_from_the_folder(run):
    got = tables.raw_predictions(run)
    assert list(got.columns) == PREDICTION_COLUMNS
    assert str(got["variant"].dtype) == "Int64" and str(got["attempt"].dtype) == "Int64"
    assert len(got) == 1
    row = got.iloc[0]
    assert (row["model"], row["sample_id"], row["variant"], row["condition"], row["prompt_id"]) == ("a", "s1", 0, "image", "s1-v0")
    assert (row["logprob_yes"], row["logprob_no"]) == logprobs(1.0)


def test_a_run_without_samples_or_prediction_files_reads_as_empty_tables(run):
    shutil.rmtree(os.path.join(run, "samples"))
    shutil.rmtree(os.path.join(run, "predictions"))
    got = tables.samples(run)
    assert list(got.columns) == SAMPLE_COLUMNS and len(got) == 0
    assert str(got["n_variants"].dtype) == "int64"
    assert tables.duplicate_sample_ids(run) == []
    preds_ = tables.raw_predictions(run)
    assert list(preds_.columns) == PREDICTION_COLUMNS and len(preds_) == 0
    assert str(preds_["variant"].dtype) == "Int64" and str(preds_["attempt"].dtype) == "Int64"


def test_a_bad_samples_file_is_named_as_not_a_samples_file(run):
    with open(os.path.join(run, "samples", "junk.parquet"), "w") as f:
        f.write("junk")
    with pytest.raises(TableFileError, match=r"1 file\(s\) under .*samples are not samples files:\n.*junk\.parquet"):
        tables.samples(run)


def test_a_bad_errors_file_is_named_as_not_an_errors_file(run):
    os.makedirs(os.path.join(run, "errors"), exist_ok=True)
    with open(os.path.join(run, "errors", "junk.parquet"), "w") as f:
        f.write("junk")
    with pytest.raises(TableFileError, match=r"1 file\(s\) under .*errors are not errors files:\n.*junk\.parquet"):
        tables.errors(run)


def test_quadrants_put_the_model_of_the_folder_first_as_a_plain_string(run):
    os.makedirs(os.path.join(run, "quadrants", "model=a"))
    pq.write_table(pa.table({"sample_id": ["s1"], "margin": [1.5]}), os.path.join(run, "quadrants", "model=a", "part-0.parquet"))
    got = tables.quadrants(run)
    assert list(got.columns) == ["model", "sample_id", "margin"]
    assert got["model"].dtype == object and got["model"].tolist() == ["a"]
    assert got["margin"].tolist() == [1.5]


def test_quadrants_of_an_unreduced_run_are_empty_with_model_first(run):
    got = tables.quadrants(run)
    assert len(got) == 0 and list(got.columns) == ["model"] + list(QUADRANTS_FILE.names)
    assert got.columns[0] == "model" and "dataset" in got.columns


def test_samples_frame_normalises_labels_and_keeps_the_first_row_of_every_repeated_id():
    t = pa.table({"sample_id": ["s1", "s2", "s2", "s3", "s3"], "dataset": ["d0", "d1", "d2", "d3", "d4"],
                  "patient_id": [None] * 5, "finding": ["f"] * 5, "label": [" Yes", "maybe", "no", None, "NO "],
                  "n_variants": pa.array([1, 2, 3, 4, 5], pa.int64())})
    got = tables.samples_frame(t)
    # s2 and s3 repeat: their first rows (d1, d3) are kept; labels stripped and lower-cased, others None
    assert got["sample_id"].tolist() == ["s1", "s2", "s3"]
    assert got["dataset"].tolist() == ["d0", "d1", "d3"] and got["n_variants"].tolist() == [1, 2, 4]
    assert got["label"].tolist() == ["yes", None, None]


def test_samples_frame_unknown_labels_are_none_as_documented():  # was NaN under pandas 3 until 8a62ebf
    t = pa.table({"sample_id": ["s1"], "dataset": ["d"], "patient_id": [None], "finding": ["f"], "label": ["maybe"],
                  "n_variants": pa.array([1], pa.int64())})
    assert tables.samples_frame(t).loc[0, "label"] is None


def test_raw_prediction_strings_stay_arrow_backed(run):
    got = tables.raw_predictions(run)
    for col in ("model", "sample_id", "condition", "prompt_id", "error"):
        assert isinstance(got[col].dtype, pd.StringDtype) and got[col].dtype.storage == "pyarrow", col


def test_condition_errors_skip_a_null_error_type_and_count_per_model():
    errs = pd.DataFrame({"sample_id": ["s1", "s2", "s3", "s4", None], "model": ["a", "b", None, "a", "a"],
                         "stage": ["image"] * 5,
                         "error_type": [None, "swap_missing", "noise_failed", "image_missing", "swap_missing"]})
    got = tables.condition_errors(errs)
    # s1: null type; s4: the sample's own image; the last row has no sample_id -> s2 and s3 remain
    assert got["sample_id"].tolist() == ["s2", "s3"]
    # model a: its own rows (none left) and the all-models row s3 -> 1; model b: s2 and s3 -> 2
    assert tables.condition_error_count(got, "a") == 1
    assert tables.condition_error_count(got, "b") == 2


def test_quadrant_schema_adds_ablation_columns_and_ignores_others():
    df = pd.DataFrame(columns=["model", "sample_id", "blank_prediction", "blank_margin", "blank_reliant",
                               "blank_margin_shift", "notes"])
    got = tables.quadrant_schema(df)
    assert got.names == list(QUADRANTS_FILE.names) + ["blank_prediction", "blank_margin", "blank_reliant",
                                                      "blank_margin_shift"]
    assert [str(got.field(n).type) for n in got.names[-4:]] == ["string", "double", "bool", "double"]


def test_run_info_of_a_run_without_run_json_is_empty(tmp_path):
    assert tables.run_info(str(tmp_path)) == {}


def test_quadrant_arrow_fills_missing_columns_with_typed_nulls():
    df = pd.DataFrame({"sample_id": ["s1", "s2"], "margin": [0.5, None]})
    got = tables.quadrant_arrow(df)
    assert got.schema.names == list(QUADRANTS_FILE.names) and got.num_rows == 2
    assert got.column("sample_id").to_pylist() == ["s1", "s2"] and got.column("margin").to_pylist() == [0.5, None]
    assert got.column("complete").type == pa.bool_() and got.column("complete").to_pylist() == [None, None]
    assert got.column("n_variants").type == pa.int32() and got.column("n_variants").null_count == 2


def test_quadrant_arrow_converts_nullable_columns_directly_and_names_a_column_it_cannot_write():
    # pandas' nullable dtypes and object columns with pd.NA / NaN become nulls of the schema's type
    df = pd.DataFrame({"sample_id": pd.Series(["s1", None], dtype="string"),
                       "complete": pd.Series([True, None], dtype="boolean"),
                       "n_variants": pd.Series([3, None], dtype="Int64"),
                       "margin": pd.Series([0.25, pd.NA], dtype=object)})
    got = tables.quadrant_arrow(df)
    assert got.column("sample_id").to_pylist() == ["s1", None]
    assert got.column("complete").to_pylist() == [True, None]
    assert got.column("n_variants").type == pa.int32() and got.column("n_variants").to_pylist() == [3, None]
    assert got.column("margin").to_pylist() == [0.25, None]
    # a column the reducer should never build (a bool where the contract says string): a ValueError
    # naming the column and both types, not a bare pyarrow error and not a silent re-conversion
    bad = pd.DataFrame({"sample_id": pd.Series([True, None], dtype="boolean")})
    with pytest.raises(ValueError, match=r"quadrant column 'sample_id' \(pandas dtype boolean\) cannot be written as Arrow string"):
        tables.quadrant_arrow(bad)


def test_column_codes_over_several_chunks_with_blanks_and_nulls():
    col = pa.chunked_array([pa.array(["x", "y"]), pa.array([None, "x", " "]), pa.array(["y"])])
    values: list = []
    # blank_is_null: x -> 0, y -> 1, null and " " -> -1
    got = tables._column_codes(col, values, blank_is_null=True)
    assert got.dtype == np.int32 and got.tolist() == [0, 1, -1, 0, -1, 1] and values == ["x", "y"]
    values = []
    # otherwise " " is a value (2) and null gets the last code (3, values gains None)
    assert tables._column_codes(col, values).tolist() == [0, 1, 3, 0, 2, 1] and values == ["x", "y", " ", None]


def test_sample_keys_dtypes_order_and_own_clusters():
    t = pa.table({"sample_id": ["b", "a", "c"], "dataset": ["d1", "d2", None], "patient_id": ["p1", None, " "],
                  "finding": ["f", "f", "g"], "label": ["yes", "no", None],
                  "n_variants": pa.array([1, 1, 1], pa.int64())})
    got = tables.sample_keys(t)
    # ranks in sample_id order: b -> 1, a -> 0, c -> 2; patients [p1]: a and c are their own clusters 1 + rank
    assert got["order"].dtype == np.int32 and got["order"].tolist() == [1, 0, 2]
    assert got["cluster"].dtype == np.int64 and got["cluster"].tolist() == [0, 1, 3]
    assert got["datasets"] == ["d1", "d2", None] and got["dataset"].tolist() == [0, 1, 2]


def test_sort_codes_put_missing_last_for_object_and_arrow_strings():
    # sorted: a -> 0, b -> 1; missing -> 2 (the number of distinct values)
    for dtype in (object, "string[pyarrow]"):
        got = tables.sort_codes(pd.Series(["b", None, "a"], dtype=dtype))
        assert got.dtype == np.int64 and got.tolist() == [1, 2, 0], dtype


def test_key_order_is_lexicographic_stable_and_exact_for_wide_codes():
    assert tables.key_order(np.zeros((0, 5), np.int64)).tolist() == []
    # second column decides: (0, 1) after (0, 0)
    assert tables.key_order(np.array([[0, 1], [0, 0]])).tolist() == [1, 0]
    # 20 equal keys and 10 smaller ones: equal keys keep their row order (stable)
    codes = np.array([[1, 0]] * 20 + [[0, 0]] * 10)
    assert tables.key_order(codes).tolist() == list(range(20, 30)) + list(range(20))
    # sizes 2001**5 = 3.2e16 > 2**53: a float64 combined key would lose the last digit (rows tie)
    wide = np.array([[2000, 0, 0, 0, 1], [2000, 0, 0, 0, 0], [0, 2000, 2000, 2000, 2000]])
    assert tables.key_order(wide).tolist() == [2, 1, 0]
    # sizes 7001**5 = 1.7e19 > 2**63: the combined int64 key would overflow; lexsort is used instead
    huge = np.array([[7000, 0, 0, 0, 0], [0, 7000, 7000, 7000, 7000]])
    assert tables.key_order(huge).tolist() == [1, 0]
    # ... and every column counts there: rows 0 and 1 differ only in column 1
    huge = np.array([[0, 1, 7000, 7000, 7000], [0, 0, 7000, 7000, 7000], [7000, 7000, 0, 0, 0]])
    assert tables.key_order(huge).tolist() == [1, 0, 2]


def test_deduped_predictions_sort_rows_by_key_and_keep_the_columns():
    # no repeated key: s2's row then s1's -> sorted by sample_id: s1, s2; nothing dropped
    pf = preds_frame(preds("s2", [1.0], [None]) + preds("s1", [-1.0], [None]))
    kept, dropped = tables.deduped_predictions(pf)
    assert kept["sample_id"].tolist() == ["s1", "s2"] and dropped == {}
    assert list(kept.columns) == list(pf.columns)
    # already in key order: the same rows and columns, a fresh RangeIndex
    kept, _ = tables.deduped_predictions(pf.iloc[::-1].set_axis([7, 9]))
    assert kept["sample_id"].tolist() == ["s1", "s2"] and list(kept.columns) == list(pf.columns)
    assert kept.index.tolist() == [0, 1]
