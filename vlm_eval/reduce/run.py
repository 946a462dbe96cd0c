"""``reduce_run``: prediction shards -> quadrants/, summary.parquet, summary.json.

Accounting identity (README, "Output": every input sample ends in exactly one place):
for each model, every distinct sample of samples/ is either in errors/ (for that
model or for all models) and has no quadrant row, or has exactly one quadrant row
(complete or not). ``accounting_problems`` checks it on what was built; a
violation raises ``ReduceAccountingError`` (a bug, never silently written).
Softer anomalies (duplicate sample_ids in samples/, predictions for unknown
samples, errors for samples not in samples/) are returned under ``problems``.
"""
from __future__ import annotations

import ctypes
import json
import logging
import posixpath

import numpy as np
import pandas as pd
import pyarrow as pa

from vlm_eval import storage
from vlm_eval.config import TaxonomyConfig
from vlm_eval.errors import VlmEvalError
from vlm_eval.layout import RunLayout
from vlm_eval.reduce import files, metrics, partition, quadrows, rows, stats, summary, tables

log = logging.getLogger(__name__)


class ReduceAccountingError(VlmEvalError):
    """samples != quadrant rows + errored samples for some model (a reducer/pipeline bug)."""


def errored_table(samples: pd.DataFrame, errs: pd.DataFrame, models: list[str],
                  datasets: list | None = None) -> pd.DataFrame:
    """One row per (model, errored sample_id) with dataset/finding from samples/.

    Errors for sample_ids absent from samples/ (e.g. manifest rows that never became
    samples) are attributed to the run's dataset when it has exactly one, else None.
    datasets: samples/' distinct datasets when ``samples`` holds only some of its rows.
    """
    info = samples.drop_duplicates("sample_id").set_index("sample_id")[["dataset", "finding"]]
    only = samples["dataset"].dropna().unique() if datasets is None else datasets
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


def _part(layout: RunLayout, model: str, bucket: int) -> str:
    return storage.join(layout.model_quadrants_dir(model), f"part-{bucket:05d}.parquet")


def _remove_stale(layout: RunLayout, models: list[str], k: int) -> None:
    """Remove quadrant files this reduce did not write (older parts, dropped models)."""
    keep = {posixpath.normpath(_part(layout, m, j).replace("\\", "/")) for m in models for j in range(k)}
    for path in storage.list_files(layout.quadrants_dir):
        if posixpath.normpath(path.replace("\\", "/")) not in keep:
            storage.remove(path)


def _json_records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records", double_precision=15))


def _json_clean(obj):
    """NaN -> None, numpy scalars -> Python, recursively (valid JSON)."""
    return json.loads(pd.Series([obj]).to_json(orient="records", double_precision=15))[0]


def _condition_notes(quad: pd.DataFrame, partial: pd.DataFrame) -> pd.DataFrame:
    """Incomplete rows of samples whose ablation input failed (e.g. the swap image) say so."""
    if partial.empty or quad.empty:
        return quad
    first = partial.drop_duplicates("sample_id").set_index("sample_id")
    why = quad["sample_id"].map(first["error_type"] + ": " + first["message"].fillna(""))
    hit = quad["incomplete_reason"].notna().to_numpy() & why.notna().to_numpy()
    if hit.any():
        quad = quad.copy()
        quad.loc[hit, "incomplete_reason"] = quad.loc[hit, "incomplete_reason"] + "; " + why[hit]
    return quad


def _unusable(preds: pd.DataFrame) -> dict[str, int]:
    """Rows per model without an error whose log-probabilities give no margin (NaN, inf)."""
    if preds.empty:
        return {}
    bad = ~rows.usable(preds).to_numpy() & preds["error"].isna().to_numpy()
    return {str(m): int(v) for m, v in preds.loc[bad, "model"].value_counts().items()}


def reduce_run(run_url: str, taxonomy: TaxonomyConfig | None = None, n_boot: int = 1000, seed: int = 0,
               *, buckets: int | None = None) -> dict:
    """Rebuild quadrants/ and summary.{parquet,json} of the run at ``run_url``.

    taxonomy: None = the job's (run.json), else the override. buckets: how many sample
    partitions to reduce one at a time (None = from the row count, ``partition.n_buckets``);
    the tables do not depend on it. Returns counts per model ``{"models": {model:
    {n_samples, complete, incomplete, errors, condition_errors, duplicates_dropped,
    orphan_predictions, unusable_predictions}}, "problems": [str, ...], "notes": [str, ...],
    "taxonomy": {ablation, reliance}}``. TableFileError if a table file does not fit.
    """
    layout = RunLayout(run_url)
    info = tables.run_info(run_url)
    taxonomy = taxonomy or tables.job_taxonomy(info)
    conditions = (info.get("job") or {}).get("conditions")
    ablations = [c for c in conditions if c != "image"] if conditions else None  # None: those in predictions/
    found = files.prediction_files(layout.predictions_dir)
    k = buckets or partition.n_buckets(sum(max(f.rows, 0) for f in found))
    samples = tables.compact_samples(run_url)  # Arrow, a bucket's rows become a frame in turn
    sample_bucket = partition.sample_buckets(samples, k)
    keys = tables.sample_keys(samples)  # what the summary keeps of a sample: codes, no strings
    errs = tables.errors(run_url)
    partial = tables.condition_errors(errs)
    models = sorted({f.key for f in found} | set(tables.job_models(info)))
    problems: list[str] = []
    dup_samples = tables.duplicate_sample_ids(run_url)
    if dup_samples:
        problems.append(f"{len(dup_samples)} sample_ids repeated in samples/ (first row kept), e.g. {dup_samples[:3]}")
    errored = {m: tables.errored_sample_ids(errs, m) for m in models}
    totals = {m: {"complete": 0, "rows": 0, "orphan_predictions": 0} for m in models}
    dropped: dict[str, int] = {}
    unusable: dict[str, int] = {}
    acc = quadrows.QuadRowsBuilder(models, keys["datasets"], keys["findings"])
    n_samples = 0
    datasets: dict = {}  # distinct datasets of samples/, in order of first sight
    known = {m: np.zeros(len(errored[m]), dtype=bool) for m in models}  # errored ids found in samples/
    err_ids = pd.Index(np.concatenate([np.asarray(errored[m], dtype=object) for m in models] + [
        errs.loc[errs["stage"] == "manifest", "sample_id"].to_numpy(dtype=object)]), dtype=object).dropna().unique()
    err_info = []  # samples/ rows of errored sample_ids (for errored_table)
    with partition.Buckets(found, k) as parts:
        shared, drop_shared = tables.deduped_predictions(tables.prediction_frame(parts.shared()))
        _add_counts(dropped, drop_shared)
        _add_counts(unusable, _unusable(shared))
        for j in range(k):  # one bucket of samples in memory at a time
            own, drop_own = tables.deduped_predictions(tables.prediction_frame(parts.own(j)))
            _add_counts(dropped, drop_own)
            _add_counts(unusable, _unusable(own))
            preds = pd.concat([own, shared], ignore_index=True) if len(shared) else own
            del own
            in_bucket = sample_bucket == j
            part = samples.filter(pa.array(in_bucket)).append_column("_row", pa.array(np.flatnonzero(in_bucket)))
            part_samples = tables.samples_frame(part)
            del part, in_bucket
            part_rows = part_samples.pop("_row").to_numpy()  # each row's position in samples
            n_samples += len(part_samples)
            datasets.update(dict.fromkeys(part_samples["dataset"].dropna().unique()))
            if len(err_ids):
                err_info.append(part_samples[part_samples["sample_id"].isin(err_ids)])
            for m_code, model in enumerate(models):  # one step per model
                todo_mask = ~part_samples["sample_id"].isin(errored[model]).to_numpy()
                todo = part_samples[todo_mask]
                mine = preds[preds["model"] == model]
                quad = metrics.quadrant_table(todo, mine, taxonomy, ablations)
                known[model] |= pd.Index(errored[model]).isin(part_samples["sample_id"])
                violations = accounting_problems(part_samples, quad, errored[model], model)
                if violations:
                    raise ReduceAccountingError("; ".join(violations))
                quad = _condition_notes(quad, partial[partial["model"].isna() | (partial["model"] == model)])
                storage.write_parquet_atomic(tables.quadrant_arrow(quad), _part(layout, model, j))
                totals[model]["complete"] += int(quad["complete"].sum())
                totals[model]["rows"] += len(quad)
                totals[model]["orphan_predictions"] += metrics.orphan_predictions(part_samples, mine)
                at = part_rows[_positions(todo, quad, todo_mask)]
                acc.add(m_code, quad, dataset=keys["dataset"][at], finding=keys["finding"][at],
                        order=keys["order"][at], cluster=keys["cluster"][at])
            del preds
            _release_memory()  # a bucket's freed pages, before the next one
    del samples, sample_bucket, keys
    _release_memory()  # the buckets' freed pages, before the summary's largest group
    _remove_stale(layout, models, k)
    counts: dict = {}
    n_manifest_errors = tables.manifest_error_count(errs)
    for model in models:
        t = totals[model]
        unknown_errors = int((~known[model]).sum())
        if t["orphan_predictions"]:
            problems.append(f"{model}: {t['orphan_predictions']} prediction rows for sample_ids not in samples/ (ignored)")
        if unknown_errors:
            problems.append(f"{model}: {unknown_errors} errored sample_ids not in samples/")
        if unusable.get(model):
            problems.append(f"{model}: {unusable[model]} prediction rows without an error but with NaN, "
                            "missing or infinite log-probabilities (their samples are incomplete)")
        counts[model] = {
            "n_samples": int(n_samples),
            "complete": t["complete"],
            "incomplete": t["rows"] - t["complete"],
            "errors": int(len(errored[model])) + n_manifest_errors,
            "manifest_errors": n_manifest_errors,
            "condition_errors": tables.condition_error_count(partial, model),
            "duplicates_dropped": int(dropped.get(model, 0)),
            "orphan_predictions": t["orphan_predictions"],
            "unusable_predictions": int(unusable.get(model, 0)),
        }
    all_quad = acc.rows()  # compact per-sample rows (quadrows.QuadRows)
    del acc
    info_rows = pd.concat(err_info, ignore_index=True) if err_info else pd.DataFrame(columns=tables.SAMPLE_COLUMNS)
    table = summary.summary_table(all_quad, errored_table(info_rows, errs, models, list(datasets)), n_boot, seed)
    notes = summary.notes(all_quad)
    storage.write_parquet_atomic(summary.to_arrow(table), layout.summary_parquet)
    doc = {
        "taxonomy": taxonomy.model_dump(),
        "n_boot": n_boot,
        "seed": seed,
        "rows": _json_records(table),
        "flip_vs_dangerous": _json_clean(stats.flip_vs_dangerous(table)),
        "paired": _json_clean(summary.paired_table(all_quad, n_boot, seed)),
        "counts": counts,
        "problems": problems,
        "notes": notes,
    }
    storage.write_json_atomic(doc, layout.summary_json)
    for p in problems:
        log.warning("reduce: %s", p)
    return {"models": counts, "problems": problems, "notes": notes, "taxonomy": taxonomy.model_dump()}


def _positions(todo: pd.DataFrame, quad: pd.DataFrame, todo_mask: np.ndarray) -> np.ndarray:
    """Positions in the bucket's samples frame of ``quad``'s rows: row i of quad is sample i
    of todo (``metrics.quadrant_table`` builds one row per sample, in order; its only path
    since the frame fallback left the package), checked rather than assumed."""
    q_ids = quad["sample_id"].to_numpy(dtype=object)
    t_ids = todo["sample_id"].to_numpy(dtype=object)
    if len(q_ids) != len(t_ids) or not bool((q_ids == t_ids).all()):
        raise ReduceAccountingError("quadrant rows are not one per sample of the bucket, in order")
    return np.flatnonzero(todo_mask)


def _release_memory() -> None:
    """Give freed memory back to the OS (Arrow's pool; glibc's heap where there is one)."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _add_counts(total: dict[str, int], more: dict[str, int]) -> None:
    for key, v in more.items():
        total[key] = total.get(key, 0) + int(v)
