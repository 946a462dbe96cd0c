"""Tests written to kill surviving mutants of ``vlm_eval/reduce/partition.py`` (mutmut, issue 16;
docs/testing.md lists each survivor and the test that kills it or why it is equivalent).

What is contract here: every row of a sample lands in the bucket ``bucket_of`` gives its id
(the same in every call, every process and for every input type), null ids are shared, an
empty bucket is an empty table of the shards' schema, and the temp folder is gone on exit --
also when a shard cannot be read."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from reduce_builders import preds, sample, write_run
from vlm_eval.reduce import files
from vlm_eval.reduce.partition import Buckets, bucket_of, n_buckets, sample_buckets

IDS = ["s1", "s2", None, "s3", "s1", "s4", "s5", "s6"]


def _reference_buckets(ids, k):
    # the documented hash, computed here without bucket_of: SipHash of each id (pandas' default
    # key), modulo k; -1 for null
    return [-1 if i is None else int(pd.util.hash_array(np.array([i], dtype=object))[0] % np.uint64(k)) for i in ids]


def test_bucket_of_is_the_documented_hash_for_every_input_type():
    want = _reference_buckets(IDS, 5)
    assert len(set(want) - {-1}) >= 3  # the ids spread over several buckets (else this proves little)
    as_list = bucket_of(IDS, 5)
    assert as_list.dtype == np.int64 and as_list.tolist() == want
    assert bucket_of(pa.array(IDS, pa.string()), 5).tolist() == want
    chunked = pa.chunked_array([pa.array(IDS[:3], pa.string()), pa.array(IDS[3:], pa.string())])
    assert bucket_of(chunked, 5).tolist() == want
    assert bucket_of(pd.Series(IDS, dtype=object), 5).tolist() == want
    # a NaN id (an object column read through pandas) is null like None, not a string "nan" or an error
    assert bucket_of(pd.Series(["s1", np.nan], dtype=object), 5).tolist() == [want[0], -1]
    # two buckets already hash (only k <= 1 is the one-bucket shortcut)
    two = _reference_buckets(IDS, 2)
    assert set(two) == {-1, 0, 1} and bucket_of(IDS, 2).tolist() == two


def test_bucket_of_one_bucket_empty_input_and_all_null():
    one = bucket_of(IDS, 1)
    assert one.dtype == np.int64 and one.tolist() == [0, 0, -1, 0, 0, 0, 0, 0]
    assert bucket_of(IDS, 0).tolist() == [0, 0, -1, 0, 0, 0, 0, 0]  # k <= 1: one bucket
    for k in (1, 4):
        empty = bucket_of(pa.array([], pa.string()), k)
        assert empty.dtype == np.int64 and empty.tolist() == []
    assert bucket_of([None, None], 4).tolist() == [-1, -1]


def test_bucket_of_does_not_vary_between_processes():
    code = "from vlm_eval.reduce.partition import bucket_of; print(bucket_of(['s1','s2','s3','s4','s5','s6'], 7).tolist())"
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert outs == {f"{_reference_buckets(['s1', 's2', 's3', 's4', 's5', 's6'], 7)}\n"}


def test_sample_buckets_hashes_in_chunks_as_int16():
    t = pa.table({"sample_id": pa.array(IDS, pa.string())})
    for chunk in (1, 3, 100):
        got = sample_buckets(t, 5, chunk=chunk)
        assert got.dtype == np.int16 and got.tolist() == _reference_buckets(IDS, 5)


def test_n_buckets_rounds_up_and_never_divides_by_zero():
    assert n_buckets(0) == 1 and n_buckets(1) == 1
    assert n_buckets(10, 5) == 2 and n_buckets(11, 5) == 3  # ceil(11 / 5)
    assert n_buckets(3, 0) == 3  # rows_per_bucket 0 counts as 1


@pytest.fixture
def shards(tmp_path):
    # model a: s1 (2 image rows), s2 (1); model b: s3 (1); shared text_only rows (sample_id null): 2 of a, 1 of b
    run = write_run(tmp_path / "run", [sample(s) for s in ("s1", "s2", "s3")], {
        "a": preds("s1", [1.0, 2.0], [0.5, 0.5]) + preds("s2", [3.0], []),
        "b": preds("s3", [4.0], [0.5]),
    })
    return files.prediction_files(os.path.join(run, "predictions"))


def _rows(table: pa.Table) -> list[tuple]:
    return sorted((r["model"], r["sample_id"], r["condition"], r["prompt_id"]) for r in table.to_pylist())


@pytest.mark.parametrize("k", [1, 3])
def test_buckets_put_each_sample_in_its_bucket_and_null_ids_in_shared(shards, tmp_path, k):
    tmp_root = tmp_path / "spill"
    tmp_root.mkdir()
    with Buckets(shards, k, tmp_root=str(tmp_root)) as parts:
        spill = os.listdir(tmp_root)  # spilled to one temp folder, named for whoever finds it, only when k > 1
        assert len(spill) == (1 if k > 1 else 0) and all(n.startswith("vlm-eval-reduce-") for n in spill)
        owned = {j: parts.own(j) for j in range(k)}
        for j, t in owned.items():
            assert t.column_names[0] == "model" and t.schema.field("model").type == pa.string()
            assert all(bucket_of([s], k)[0] == j for s in t.column("sample_id").to_pylist())
        got = sorted(r for t in owned.values() for r in _rows(t))
        assert got == [("a", "s1", "image", "s1-v0"), ("a", "s1", "image", "s1-v1"),
                       ("a", "s2", "image", "s2-v0"), ("b", "s3", "image", "s3-v0")]
        assert _rows(parts.shared()) == [("a", None, "text_only", "s1-v0"), ("a", None, "text_only", "s1-v1"),
                                         ("b", None, "text_only", "s3-v0")]
    assert os.listdir(tmp_root) == []  # the temp folder is removed on exit
    parts.__exit__(None, None, None)  # a second close (an error path closing again) is harmless


def test_an_empty_bucket_is_an_empty_table_of_the_shards_schema(shards, tmp_path):
    k = 40  # more buckets than samples: most are empty
    used = set(bucket_of(["s1", "s2", "s3"], k).tolist())
    empty = next(j for j in range(k) if j not in used)
    with Buckets(shards, k, tmp_root=str(tmp_path)) as parts:
        full = parts.own(min(used))
        got = parts.own(empty)
        assert got.num_rows == 0 and got.schema == full.schema == parts.shared().schema
    with Buckets([], 3, tmp_root=str(tmp_path)) as parts:  # no shards at all
        for got in (parts.own(0), parts.shared()):
            assert got.num_rows == 0
            assert got.schema.names == ["model"] + files.PREDICTION_READ.names and got.schema == full.schema
    with Buckets([], 1) as parts:
        assert parts.own(0).num_rows == 0 and parts.own(0).schema.names[0] == "model"
    assert not [n for n in os.listdir(tmp_path) if n.startswith("vlm-eval-reduce-")]  # both folders removed


def test_buckets_keep_no_rows_and_no_folder_after_exit(shards, tmp_path):
    parts = Buckets(shards, 1)
    with parts:
        assert parts.own(0).num_rows == 4
    assert parts.own(0).num_rows == 0  # the in-memory bucket is released on exit


def test_a_shard_that_cannot_be_read_leaves_no_temp_folder(shards, tmp_path):
    tmp_root = tmp_path / "spill"
    tmp_root.mkdir()
    gone = files.TableFile(str(tmp_path / "missing.parquet"), "a", 0.0)
    with pytest.raises(FileNotFoundError):
        Buckets([shards[0], gone], 3, tmp_root=str(tmp_root))
    assert os.listdir(tmp_root) == []
