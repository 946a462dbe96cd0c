"""Reducing by buckets of samples (issue 13.7) gives the tables of the one-pass reduce:
quadrants, summary.parquet and summary.json, on a run with two models, shared text_only
rows, rerun duplicates, engine errors, NaN rows, orphans and errored samples."""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from reduce_builders import preds, sample, write_run
from vlm_eval.reduce import reduce_run
from vlm_eval.reduce.partition import bucket_of, n_buckets
from vlm_eval.reduce.tables import quadrants


def messy_run(root, n=120, seed=4) -> str:
    rng = np.random.default_rng(seed)
    samples = [sample(f"s{i:03d}", n_variants=int(rng.integers(1, 4)), patient=f"p{rng.integers(40)}",
                      label=rng.choice(["yes", "no"]), finding=rng.choice(["effusion", "nodule"])) for i in range(n)]
    models = {}
    for model in ("a", "b"):
        rows = []
        for s in samples:
            k = len(s["prompts"])
            img = [float(rng.normal(0, 2)) if rng.random() > 0.03 else None for _ in range(k)]
            pids = [f"{s['finding']}-v{v}" for v in range(k)]
            rows += [r for r in preds(s["sample_id"], img, [], prompt_ids=pids)]
        for f in ("effusion", "nodule"):  # text_only once per prompt_id, one rerun with other values
            rows += preds(f"x-{f}", [None] * 3, [float(rng.normal()) for _ in range(3)],
                          prompt_ids=[f"{f}-v{v}" for v in range(3)])
        rows += [dict(r, logprob_yes=r["logprob_yes"] - 1.0) for r in rows[:15]]  # rerun duplicates
        rows[20] = dict(rows[20], logprob_yes=math.nan)  # a NaN without error
        rows[30] = dict(rows[30], logprob_yes=None, logprob_no=None, error="CUDA out of memory")
        rows += preds("orphan", [1.0], [])
        models[model] = rows
    errs = [dict(sample_id="s005", stage="image", error_type="missing", message="gone", model=None, source="u"),
            dict(sample_id="s007", stage="score", error_type="Timeout", message="t", model="b", source="u")]
    return write_run(root, samples, models, errs)


def _reduce_copy(src: str, dst: str, buckets: int) -> dict:
    shutil.copytree(src, dst)
    return reduce_run(dst, n_boot=200, seed=2, buckets=buckets)


def test_partition_buckets_give_the_tables_of_one_pass(tmp_path):
    src = messy_run(tmp_path / "src")
    one = _reduce_copy(src, str(tmp_path / "one"), buckets=1)
    many = _reduce_copy(src, str(tmp_path / "many"), buckets=5)
    assert one == many  # counts, problems, notes
    assert one["models"]["a"]["duplicates_dropped"] == 15 and one["models"]["a"]["orphan_predictions"] == 1
    key = ["model", "sample_id"]
    q1 = quadrants(str(tmp_path / "one")).sort_values(key).reset_index(drop=True)
    q5 = quadrants(str(tmp_path / "many")).sort_values(key).reset_index(drop=True)
    assert len(q1) == 2 * 120 - 1 - 2  # s005 errored for both models, s007 for b
    pd.testing.assert_frame_equal(q1, q5)
    assert len(os.listdir(tmp_path / "many" / "quadrants" / "model=a")) == 5
    assert os.listdir(tmp_path / "one" / "quadrants" / "model=a") == ["part-00000.parquet"]
    s1 = pd.read_parquet(tmp_path / "one" / "summary.parquet")
    s5 = pd.read_parquet(tmp_path / "many" / "summary.parquet")
    pd.testing.assert_frame_equal(s1, s5)
    d1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    d5 = json.loads((tmp_path / "many" / "summary.json").read_text())
    assert d1 == d5


def test_partition_rebucketing_removes_the_old_parts(tmp_path):
    run = messy_run(tmp_path / "r", n=30)
    reduce_run(run, n_boot=20, buckets=4)
    reduce_run(run, n_boot=20, buckets=1)
    assert os.listdir(os.path.join(run, "quadrants", "model=a")) == ["part-00000.parquet"]
    assert len(quadrants(run)) == 2 * 30 - 1 - 2


def test_partition_bucket_of_is_stable_and_spreads():
    ids = [f"mimic-{i:09d}" for i in range(20000)] + [None]
    b = bucket_of(ids, 8)
    assert b[-1] == -1 and set(b[:-1]) == set(range(8))
    counts = np.bincount(b[:-1], minlength=8)
    assert counts.min() > 2000  # about 2500 each
    shuffled = bucket_of(ids[::-1], 8)[::-1]
    assert np.array_equal(b, shuffled)  # a sample's bucket depends on its id only
    assert n_buckets(0) == 1 and n_buckets(10_000_000, 1_500_000) == 7


@pytest.mark.parametrize("k", [2, 3])
def test_partition_small_runs_with_more_buckets_than_samples(tmp_path, k):
    run = write_run(tmp_path / "r", [sample("only")], {"m": preds("only", [1, 1, 1], [-1, -1, -1])})
    counts = reduce_run(run, n_boot=10, buckets=k)
    assert counts["models"]["m"]["complete"] == 1
    assert quadrants(run)["quadrant"].tolist() == ["Ideal"]
