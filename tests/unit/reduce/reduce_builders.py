"""Builders for small hand-made runs: samples, prediction rows from margins, run folders.

(A plain module, not conftest.py, so ``import`` cannot pick another directory's conftest.)
"""
from __future__ import annotations

import math
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vlm_eval import storage
from vlm_eval.schema import ERRORS, PREDICTIONS_FILE, SAMPLES, conform


def logprobs(m: float) -> tuple[float, float]:
    """(logprob_yes, logprob_no) whose margin is exactly m (up to float rounding)."""
    return -math.log1p(math.exp(-m)) if m > -700 else m, -math.log1p(math.exp(m)) if m < 700 else -m


def sample(sid, n_variants=3, label="yes", patient=None, finding="effusion", dataset="ds"):
    return {
        "sample_id": sid, "dataset": dataset, "image_uri": f"mem://{sid}.png", "question_id": "q",
        "question": "Is there X?", "prompts": [f"p{i}" for i in range(n_variants)], "label": label,
        "patient_id": patient, "study_id": None, "finding": finding, "split": "test",
    }


def preds(sid, img, abl, ablation="text_only", shared=True, prompt_ids=None, errors=None):
    """Rows for one sample: with-image margins ``img`` and ablated margins ``abl``
    (None = row missing); errors: {variant: message} for failed image rows."""
    prompt_ids = prompt_ids or [f"{sid}-v{i}" for i in range(len(img))]
    rows = []
    for i, m in enumerate(img):
        if m is None:
            continue
        err = (errors or {}).get(i)
        ly, ln = (None, None) if err else logprobs(m)
        rows.append(dict(sample_id=sid, variant=i, condition="image", prompt_id=prompt_ids[i],
                         logprob_yes=ly, logprob_no=ln, error=err))
    for i, m in enumerate(abl):
        if m is None:
            continue
        ly, ln = logprobs(m)
        rows.append(dict(sample_id=None if shared else sid, variant=None if shared else i, condition=ablation,
                         prompt_id=prompt_ids[i], logprob_yes=ly, logprob_no=ln, error=None))
    return rows


def samples_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    out = df[["sample_id", "dataset", "patient_id", "finding", "label"]].astype(object)
    out["n_variants"] = df["prompts"].map(len).astype("int64")
    return out


def preds_frame(rows: list[dict], model="m") -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=[f.name for f in PREDICTIONS_FILE])
    df = df.astype(object).where(df.notna(), None)
    df["logprob_yes"] = df["logprob_yes"].astype(float)
    df["logprob_no"] = df["logprob_no"].astype(float)
    df["other_mass"] = df["other_mass"].astype(float)
    df["variant"] = df["variant"].astype("Int64")
    return df.assign(model=model)


def _write(table: pa.Table, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)


def write_run(root, samples: list[dict], predictions: dict[str, list[dict]], errors=None, job=None) -> str:
    """A run folder under ``root``: samples/, predictions/model=NAME/, errors/, run.json."""
    run = str(root)
    _write(conform(pa.Table.from_pylist(samples), SAMPLES), f"{run}/samples/part-0.parquet")
    for model, rows in predictions.items():
        half = len(rows) // 2  # two shards per model, like a real run
        for k, chunk in enumerate((rows[:half], rows[half:])):
            table = conform(pa.Table.from_pylist(chunk, schema=PREDICTIONS_FILE), PREDICTIONS_FILE)
            _write(table, f"{run}/predictions/model={model}/shard-{k}.parquet")
    if errors:
        _write(conform(pa.Table.from_pylist(errors), ERRORS), f"{run}/errors/part-0.parquet")
    job = job or {"name": "t", "taxonomy": {"ablation": "text_only", "reliance": "original"},
                  "models": [{"name": m} for m in predictions]}
    storage.write_json_atomic({"run_id": "t-1", "job": job, "status": "succeeded"}, f"{run}/run.json")
    return run


