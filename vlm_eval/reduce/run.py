"""``reduce_run``: prediction shards -> quadrants/, summary.parquet, summary.json.

Accounting identity (CONTRACT: "Every input sample ends in exactly one place"):
for each model, every distinct sample of samples/ is either in errors/ (for that
model or for all models) and has no quadrant row, or has exactly one quadrant row
(complete or not). ``accounting_problems`` checks it on what was built; a
violation raises ``ReduceAccountingError`` (a bug, never silently written).
Softer anomalies (duplicate sample_ids in samples/, predictions for unknown
samples, errors for samples not in samples/) are returned under ``problems``.
"""
from __future__ import annotations

import json
import logging
import posixpath

import numpy as np
import pandas as pd

from vlm_eval import storage
from vlm_eval.config import TaxonomyConfig
from vlm_eval.errors import VlmEvalError
from vlm_eval.reduce import metrics, stats, summary, tables

log = logging.getLogger(__name__)
PART = "part-00000.parquet"


class ReduceAccountingError(VlmEvalError):
    """samples != quadrant rows + errored samples for some model (a reducer/pipeline bug)."""


def errored_table(samples: pd.DataFrame, errs: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """One row per (model, errored sample_id) with dataset/finding from samples/.

    Errors for sample_ids absent from samples/ (e.g. manifest rows that never became
    samples) are attributed to the run's dataset when it has exactly one, else None.
    """
    info = samples.drop_duplicates("sample_id").set_index("sample_id")[["dataset", "finding"]]
    only = samples["dataset"].dropna().unique()
    frames = []
    for model in models:  # one step per model
        manifest_ids = errs.loc[errs["stage"] == "manifest", "sample_id"].to_numpy(dtype=object)
        ids = np.concatenate([tables.errored_sample_ids(errs, model), manifest_ids])
        f = pd.DataFrame({"model": model, "sample_id": ids})
        f = f.join(info, on="sample_id")
        unknown = ~f["sample_id"].isin(info.index)
        if len(only) == 1:
            f.loc[unknown, "dataset"] = only[0]
        frames.append(f)
    if not frames:
        return pd.DataFrame(columns=["model", "sample_id", "dataset", "finding"])
    return pd.concat(frames, ignore_index=True)


def accounting_problems(samples: pd.DataFrame, quad: pd.DataFrame, errored_ids: np.ndarray, model: str) -> list[str]:
    """Violations of: samples = quadrant rows + errored samples (disjoint), for ``model``."""
    problems = []
    ids = pd.Index(samples["sample_id"])
    q_ids = pd.Index(quad["sample_id"])
    err = ids.intersection(pd.Index(errored_ids))
    if q_ids.has_duplicates:
        problems.append(f"{model}: {int(q_ids.duplicated().sum())} duplicate quadrant rows")
    overlap = q_ids.intersection(err)
    if len(overlap):
        problems.append(f"{model}: {len(overlap)} samples both errored and in quadrants, e.g. {list(overlap[:3])}")
    missing = ids.difference(q_ids).difference(err)
    if len(missing):
        problems.append(f"{model}: {len(missing)} samples neither in quadrants nor errors, e.g. {list(missing[:3])}")
    if len(q_ids.unique()) + len(err) != len(ids) and not problems:
        problems.append(f"{model}: {len(ids)} samples != {len(q_ids)} quadrant rows + {len(err)} errored")
    return problems


def _replace_model_folder(quad_root: str, model: str, frame: pd.DataFrame) -> None:
    """Write model=NAME/part-00000.parquet atomically, then remove older parts."""
    folder = storage.join(quad_root, f"model={model}")
    target = storage.join(folder, PART)
    storage.write_parquet_atomic(tables.quadrant_arrow(frame), target)
    for path in storage.list_files(folder):
        if posixpath.basename(path) != PART:
            storage.remove(path)


def _remove_stale_models(quad_root: str, models: list[str]) -> None:
    keep = {f"model={m}" for m in models}
    for path in storage.list_files(quad_root):
        rel = path.replace("\\", "/").split("/")
        parts = [p for p in rel if p.startswith("model=")]
        if parts and parts[-1] not in keep:
            storage.remove(path)


def _json_records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records", double_precision=15))


def _json_clean(obj):
    """NaN -> None, numpy scalars -> Python, recursively (valid JSON)."""
    return json.loads(pd.Series([obj]).to_json(orient="records", double_precision=15))[0]


def reduce_run(run_url: str, taxonomy: TaxonomyConfig | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Rebuild quadrants/ and summary.{parquet,json} of the run at ``run_url``.

    taxonomy: None = the job's (run.json), else the override. Returns counts per model
    ``{"models": {model: {n_samples, complete, incomplete, errors, duplicates_dropped,
    orphan_predictions}}, "problems": [str, ...], "taxonomy": {ablation, reliance}}``.
    """
    info = tables.run_info(run_url)
    taxonomy = taxonomy or tables.job_taxonomy(info)
    conditions = (info.get("job") or {}).get("conditions")
    ablations = [c for c in conditions if c != "image"] if conditions else None  # None: those in predictions/
    samples = tables.samples(run_url)
    preds, dropped = tables.deduped_predictions(tables.raw_predictions(run_url))
    errs = tables.errors(run_url)
    models = sorted(set(preds["model"].dropna().unique()) | set(tables.job_models(info)))
    problems: list[str] = []
    dup_samples = tables.duplicate_sample_ids(run_url)
    if dup_samples:
        problems.append(f"{len(dup_samples)} sample_ids repeated in samples/ (first row kept), e.g. {dup_samples[:3]}")
    quad_root = storage.join(run_url, "quadrants")
    counts: dict = {}
    frames = []
    for model in models:  # one step per model
        errored = tables.errored_sample_ids(errs, model)
        todo = samples[~samples["sample_id"].isin(errored)]
        quad = metrics.quadrant_table(todo, preds[preds["model"] == model], taxonomy, ablations)
        violations = accounting_problems(samples, quad, errored, model)
        if violations:
            raise ReduceAccountingError("; ".join(violations))
        orphans = metrics.orphan_predictions(samples, preds[preds["model"] == model])
        unknown_errors = int((~pd.Index(errored).isin(samples["sample_id"])).sum())
        n_manifest_errors = tables.manifest_error_count(errs)
        if orphans:
            problems.append(f"{model}: {orphans} prediction rows for sample_ids not in samples/ (ignored)")
        if unknown_errors:
            problems.append(f"{model}: {unknown_errors} errored sample_ids not in samples/")
        _replace_model_folder(quad_root, model, quad)
        n_complete = int(quad["complete"].sum())
        counts[model] = {
            "n_samples": int(len(samples)),
            "complete": n_complete,
            "incomplete": int(len(quad) - n_complete),
            "errors": int(len(errored)) + n_manifest_errors,
            "manifest_errors": n_manifest_errors,
            "duplicates_dropped": int(dropped.get(model, 0)),
            "orphan_predictions": orphans,
        }
        frames.append(quad.assign(model=model))
    _remove_stale_models(quad_root, models)
    all_quad = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model"] + tables.QUADRANTS_FILE.names)
    table = summary.summary_table(all_quad, errored_table(samples, errs, models), n_boot, seed)
    storage.write_parquet_atomic(summary.to_arrow(table), storage.join(run_url, "summary.parquet"))
    doc = {
        "taxonomy": taxonomy.model_dump(),
        "n_boot": n_boot,
        "seed": seed,
        "rows": _json_records(table),
        "flip_vs_dangerous": _json_clean(stats.flip_vs_dangerous(table)),
        "paired": _json_clean(summary.paired_table(all_quad, n_boot, seed)),
        "counts": counts,
        "problems": problems,
    }
    storage.write_json_atomic(doc, storage.join(run_url, "summary.json"))
    for p in problems:
        log.warning("reduce: %s", p)
    return {"models": counts, "problems": problems, "taxonomy": taxonomy.model_dump()}
