"""The reducer keeps for the summary only compact per-sample arrays (``quadrows.QuadRows``),
appended a bucket and model at a time (issue 13.7). The summary, its notes and the paired
comparisons built from them equal those of the quadrant frame the run wrote, whatever
the bucket count: patients missing, empty or blank, two datasets and a missing one,
errored samples, and an extra ablation present in some buckets only."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from reduce_builders import preds, sample, write_run
from vlm_eval.reduce import quadrows, reduce_run, summary, tables
from vlm_eval.reduce.run import _json_clean, _json_records, errored_table

N_BOOT, SEED = 120, 3


def varied_run(root, n=90, seed=11) -> str:
    rng = np.random.default_rng(seed)
    patients = [None, "", "  ", "p1", "p2", "p3", "p4", " p1"]
    datasets = ["ds_a", "ds_b", None]
    samples = [sample(f"s{i:03d}", n_variants=int(rng.integers(1, 4)), patient=patients[i % len(patients)],
                      label=rng.choice(["yes", "no"]), finding=rng.choice(["effusion", "nodule"]),
                      dataset=datasets[i % 3]) for i in range(n)]
    models = {}
    for model in ("a", "b"):
        rows = []
        for s in samples:
            k = len(s["prompts"])
            pids = [f"{s['finding']}-v{v}" for v in range(k)]
            rows += preds(s["sample_id"], [float(rng.normal(0, 2)) for _ in range(k)], [], prompt_ids=pids)
        for f in ("effusion", "nodule"):  # text_only once per prompt_id
            rows += preds(f"x-{f}", [None] * 3, [float(rng.normal()) for _ in range(3)],
                          prompt_ids=[f"{f}-v{v}" for v in range(3)])
        for s in samples[:3]:  # an extra ablation for three samples only (absent from most buckets)
            k = len(s["prompts"])
            rows += preds(s["sample_id"], [None] * k, [float(rng.normal()) for _ in range(k)], ablation="blank",
                          shared=False, prompt_ids=[f"{s['finding']}-v{v}" for v in range(k)])
        models[model] = rows
    errs = [dict(sample_id="s004", stage="image", error_type="missing", message="gone", model=None, source="u"),
            dict(sample_id="s010", stage="score", error_type="Timeout", message="t", model="b", source="u")]
    return write_run(root, samples, models, errs)


@pytest.mark.parametrize("buckets", [1, 5])
def test_compact_rows_give_the_summary_of_the_written_quadrants(tmp_path, buckets):
    run = varied_run(tmp_path / "r")
    reduce_run(run, n_boot=N_BOOT, seed=SEED, buckets=buckets)
    frame = tables.quadrants(run)
    assert "blank_reliant" in frame.columns and frame["patient_id"].isin(["", "  "]).any()
    errored = errored_table(tables.samples(run), tables.errors(run), ["a", "b"])
    expected = summary.summary_table(frame, errored, N_BOOT, SEED)
    assert expected["dataset"].isna().any() and "frac_blank_reliant" in expected.columns
    assert pq.read_table(os.path.join(run, "summary.parquet")).equals(summary.to_arrow(expected))
    with open(os.path.join(run, "summary.json")) as f:
        doc = json.load(f)
    assert doc["rows"] == _json_records(expected)
    assert doc["paired"] == _json_clean(summary.paired_table(frame, N_BOOT, SEED))
    assert len(doc["paired"]) == 3  # a vs b on ds_a, ds_b and the missing dataset
    assert doc["notes"] == summary.notes(frame)


def test_builder_pieces_equal_the_whole_frame():
    rng = np.random.default_rng(0)
    n = 40
    quad = pd.DataFrame({
        "model": "m", "dataset": "ds", "sample_id": [f"s{i:02d}" for i in rng.permutation(n)],
        "patient_id": [None if i % 5 == 0 else f"p{i % 7}" for i in range(n)], "finding": "effusion",
        "complete": rng.random(n) > 0.1, "quadrant": rng.choice(["Ideal", "Fragile", "Dangerous", "Worst"], n),
        "correct": rng.choice([True, False, None], n), "consistent": rng.choice([True, False, None], n),
        "flips": rng.integers(0, 3, n).astype(float), "n_variants": 3, "entropy": rng.random(n),
        "margin": rng.normal(size=n), "ablation_agreement": rng.random(n),
        "blank_reliant": pd.array(rng.choice([True, False], n), dtype=object),
    })
    quad.loc[20:, "blank_reliant"] = None  # the second piece has no blank_reliant column at all
    whole = quadrows.QuadRows.from_frame(quad)
    builder = quadrows.QuadRowsBuilder(whole.models, whole.datasets, whole.findings)
    for lo, hi, cols in ((0, 20, quad.columns), (20, n, [c for c in quad.columns if c != "blank_reliant"])):
        sl = slice(lo, hi)
        builder.add(0, quad.iloc[lo:hi][cols], dataset=whole.dataset[sl], finding=whole.finding[sl],
                    order=whole.order[sl], cluster=whole.cluster[sl])
    pieces = builder.rows()
    none = pd.DataFrame(columns=["model", "sample_id", "dataset", "finding"])
    pd.testing.assert_frame_equal(summary.summary_table(pieces, none, 50, 1), summary.summary_table(quad, none, 50, 1))
    assert summary.notes(pieces) == summary.notes(quad)
    assert pieces.reliant["blank"].tolist() == whole.reliant["blank"].tolist()


def test_sample_keys_over_several_chunks():
    import pyarrow as pa
    import pyarrow.compute as pc

    from vlm_eval.reduce.stats import cluster_codes

    ids = ["s3", "s1", "é", "s2", "s0", "a"]
    patients = ["p1", None, "  ", "p1", "", "p2"]
    datasets = ["x", None, "y", "x", "y", None]
    chunk = lambda lo, hi: pa.table({"sample_id": ids[lo:hi], "patient_id": patients[lo:hi],  # noqa: E731
                                     "dataset": datasets[lo:hi], "finding": ["f"] * (hi - lo)})
    table = pa.concat_tables([chunk(0, 2), chunk(2, 6)])
    table = table.set_column(1, "patient_id", pc.dictionary_encode(table.column("patient_id")))
    keys = tables.sample_keys(table)
    assert [ids[i] for i in np.argsort(keys["order"])] == sorted(ids)
    ref = cluster_codes(pd.Series(patients, dtype=object), pd.Series(ids, dtype=object))
    same = lambda c: [[c[i] == c[j] for j in range(len(ids))] for i in range(len(ids))]  # noqa: E731
    assert same(keys["cluster"]) == same(ref)
    assert [keys["datasets"][c] for c in keys["dataset"]] == datasets
