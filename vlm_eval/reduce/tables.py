"""Reading a run's tables (samples, predictions, errors, run.json) as pandas frames.

Every path comes from ``vlm_eval.layout.RunLayout``; partitioned folders are read file
by file against their schema (``files``). Predictions are deduplicated
deterministically: a crash and a rerun can leave two rows for the same
``(model, sample_id, variant, condition, prompt_id)`` key; we keep the row of the
latest attempt among the usable ones (a row with an error never beats a usable one),
and report how many were dropped per model.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vlm_eval import storage
from vlm_eval.conditions import ABLATION_NAMES
from vlm_eval.config import TaxonomyConfig
from vlm_eval.layout import RunLayout
from vlm_eval.reduce import files
from vlm_eval.reduce.rows import usable
from vlm_eval.schema import ERRORS, QUADRANTS_FILE, SAMPLES


PREDICTION_KEY = ["model", "sample_id", "variant", "condition", "prompt_id"]
SAMPLE_COLUMNS = ["sample_id", "dataset", "patient_id", "finding", "label", "n_variants"]
# Dedup order after "usable first": the latest attempt (descending, nulls last), then values.
_LATEST = [files.ATTEMPT]
_VALUES = ["logprob_yes", "logprob_no", "other_mass", "image_sha256", "error"]
_ARROW_STR = pd.StringDtype("pyarrow", na_value=np.nan)



def _str(series: pd.Series) -> pd.Series:
    """A nullable string column as object with None for missing (stable across pandas 2/3)."""
    return series.astype(object).where(series.notna(), None)


def run_info(run_url: str) -> dict[str, Any]:
    """run.json as a dict ({} when the run has none yet)."""
    url = RunLayout(run_url).run_json
    return storage.read_json(url) if storage.exists(url) else {}


def _read_all(folder: str, schema: pa.Schema, required, what: str, columns: list[str] | None = None) -> pa.Table | None:
    """Every file of an unpartitioned table folder, checked and read as ``schema`` (only ``columns``)."""
    found = files.checked_files(folder, schema, required, what, key=None)
    if not found:
        return None
    return pa.concat_tables([files.read_file(f, schema, columns) for f in found])


def _samples_table(run_url: str, columns: list[str]) -> pa.Table:
    """samples/ as ``columns`` of SAMPLES, plus ``n_variants`` = len(prompts) when asked for:
    the prompt texts are read a batch at a time and never held (they are most of the table)."""
    found = files.checked_files(RunLayout(run_url).samples_dir, SAMPLES, ("sample_id", "prompts"), "samples", key=None)
    plain = [c for c in columns if c != "n_variants"]
    parts = []
    for f in found:
        table = files.read_file(f, SAMPLES, plain)
        if "n_variants" in columns:
            counts = [pc.fill_null(pc.list_value_length(b.column(0)), 0)
                      for b in files.iter_column(f, "prompts")]
            n = pa.concat_arrays([pc.cast(c, pa.int64()) for c in counts]) if counts else pa.array([], pa.int64())
            table = table.append_column("n_variants", n)
        parts.append(table)
    if not parts:
        empty = SAMPLES.empty_table().select(plain)
        return empty.append_column("n_variants", pa.array([], pa.int64())) if "n_variants" in columns else empty
    return pa.concat_tables(parts)


def job_taxonomy(info: dict[str, Any]) -> TaxonomyConfig:
    """The taxonomy of the resolved job in run.json, else the defaults."""
    job = info.get("job") or {}
    return TaxonomyConfig.model_validate(job.get("taxonomy") or {})


def job_models(info: dict[str, Any]) -> list[str]:
    """Model names listed in the resolved job (a model may have no predictions yet)."""
    return [m["name"] for m in (info.get("job") or {}).get("models") or [] if m.get("name")]


def samples(run_url: str) -> pd.DataFrame:
    """One row per distinct sample: SAMPLE_COLUMNS; n_variants = len(prompts).

    Labels are normalised to 'yes'/'no'/None. A duplicated sample_id keeps its
    first row (sorted order) and is reported by ``duplicate_sample_ids``.
    """
    return samples_frame(_samples_table(run_url, SAMPLE_COLUMNS).select(SAMPLE_COLUMNS))


def compact_samples(run_url: str) -> pa.Table:
    """samples/ as SAMPLE_COLUMNS in Arrow, repeated strings dictionary-encoded: a few bytes
    per sample and no Python object per cell. ``samples_frame`` of any row subset that
    holds every row of its sample_ids gives exactly those samples' rows of ``samples``."""
    table = _samples_table(run_url, SAMPLE_COLUMNS).select(SAMPLE_COLUMNS)
    for col in ("dataset", "patient_id", "finding", "label"):
        i = table.schema.get_field_index(col)
        table = table.set_column(i, col, pc.dictionary_encode(table.column(col)))
    return table


def _column_codes(col: pa.ChunkedArray, values: list, blank_is_null: bool = False) -> np.ndarray:
    """int32 code of each value of a (dictionary) string column in ``values`` (extended in
    place; null -> the code of None, or -1 where ``blank_is_null``: also "" / blank)."""
    index: dict = {}
    out = np.empty(len(col), dtype=np.int32)
    start = 0
    for chunk in col.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = pc.dictionary_encode(chunk)
        mapping = np.empty(len(chunk.dictionary) + 1, dtype=np.int32)
        for i, v in enumerate(chunk.dictionary.to_pylist()):
            if v is None or (blank_is_null and not v.strip()):
                mapping[i] = -1
                continue
            if v not in index:
                index[v] = len(values)
                values.append(v)
            mapping[i] = index[v]
        mapping[-1] = -1  # null
        idx = pc.fill_null(chunk.indices, len(chunk.dictionary)).to_numpy(zero_copy_only=False)
        out[start:start + len(chunk)] = mapping[idx.astype(np.int64)]
        start += len(chunk)
    if not blank_is_null and (out < 0).any():
        out[out < 0] = len(values)
        values.append(None)
    return out


def sample_keys(table: pa.Table) -> dict:
    """Per row of a ``compact_samples`` table, what the summary keeps of it (``quadrows.QuadRows``):
    ``order`` (rank in sample_id order, stable), ``cluster`` (its patient, else its own:
    the classes of ``stats.cluster_codes``), ``dataset``/``finding`` codes into the lists
    ``datasets``/``findings`` (None = missing). No string per sample."""
    n = table.num_rows
    order = np.empty(n, dtype=np.int64 if n >= 2**31 else np.int32)
    order[pc.sort_indices(table.column("sample_id")).to_numpy()] = np.arange(n, dtype=order.dtype)
    patients: list = []
    cluster = _column_codes(table.column("patient_id"), patients, blank_is_null=True).astype(np.int64)
    unknown = cluster < 0  # no patient: the sample is its own cluster
    cluster[unknown] = len(patients) + order[unknown]
    datasets: list = []
    findings: list = []
    return {"order": order, "cluster": cluster, "dataset": _column_codes(table.column("dataset"), datasets),
            "finding": _column_codes(table.column("finding"), findings), "datasets": datasets, "findings": findings}


def samples_frame(table: pa.Table) -> pd.DataFrame:
    """``samples`` of an Arrow table of SAMPLE_COLUMNS (dictionary columns decoded)."""
    cols = {}
    for name, col in zip(table.column_names, table.columns):
        cols[name] = col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col
    df = pa.table(cols).to_pandas()
    for col in ("sample_id", "dataset", "patient_id", "finding"):
        df[col] = _str(df[col])
    label = df["label"].astype(object).where(df["label"].notna(), "").astype(str).str.strip().str.lower()
    df["label"] = label.astype(object).where(label.isin(["yes", "no"]), None)  # None, not NaN (pandas 3 str)
    df["n_variants"] = df["n_variants"].astype("int64")
    df = df[df["sample_id"].notna()].sort_values("sample_id", kind="mergesort")
    sid = df["sample_id"].to_numpy(dtype=object)
    first = np.ones(len(sid), dtype=bool)
    first[1:] = sid[1:] != sid[:-1]  # sorted: a repeated sample_id follows its first row
    return df[first].reset_index(drop=True)


def duplicate_sample_ids(run_url: str) -> list[str]:
    """sample_ids that occur more than once in samples/ (a pipeline bug to surface)."""
    table = _samples_table(run_url, ["sample_id"])
    counts = pc.value_counts(table.column("sample_id"))
    repeated = pc.and_(pc.greater(counts.field("counts"), 1), pc.is_valid(counts.field("values")))
    return sorted(counts.field("values").filter(repeated).to_pylist())


def raw_predictions(run_url: str) -> pd.DataFrame:
    """Every prediction row of every model, not deduped: ``model`` (string, from the
    folder name), PREDICTIONS_FILE's columns and ``attempt`` (the run.json attempt that
    wrote the row; null in older shards).

    String columns stay Arrow-backed (pandas ``str``, missing = NaN): no Python object
    per cell; ``variant`` is Int64. TableFileError if a file does not fit the schema.
    """
    found = files.prediction_files(RunLayout(run_url).predictions_dir)
    parts = [files.with_keys(files.read_file(f, files.PREDICTION_READ), f) for f in found]
    return prediction_frame(pa.concat_tables(parts) if parts else None)


def prediction_frame(table: pa.Table | None) -> pd.DataFrame:
    """Prediction rows (as ``raw_predictions`` reads them) as a pandas frame."""
    if table is None:
        table = files.with_keys(files.PREDICTION_READ.empty_table(), files.TableFile("", "", 0.0))
    df = table.to_pandas(types_mapper={pa.string(): _ARROW_STR, pa.large_string(): _ARROW_STR}.get)
    df["variant"] = df["variant"].astype("Int64")
    df[files.ATTEMPT] = df[files.ATTEMPT].astype("Int64")
    return df


def sort_codes(values: pd.Series) -> np.ndarray:
    """Integer codes in sorted order of the values, missing last (sort_values' order).

    Arrow-backed strings are encoded and their distinct values sorted by Arrow (byte order
    of UTF-8 = code point order, as pandas sorts them), without a Python object per value."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        enc = pc.dictionary_encode(pa.chunked_array(pa.array(values.array))).combine_chunks()
        n_uniques = len(enc.dictionary)
        rank = np.empty(n_uniques, dtype=np.int64)
        rank[pc.sort_indices(enc.dictionary).to_numpy()] = np.arange(n_uniques)
        out = np.full(len(values), n_uniques, dtype=np.int64)
        valid = enc.indices.is_valid().to_numpy(zero_copy_only=False)
        out[valid] = rank[pc.drop_null(enc.indices).to_numpy().astype(np.int64)]
        return out
    codes, uniques = pd.factorize(values, sort=True)
    return np.where(codes < 0, len(uniques), codes).astype(np.int64)


def key_codes(preds: pd.DataFrame) -> np.ndarray:
    """(n, len(PREDICTION_KEY)) sort codes of the key columns (``sort_codes``), computed once."""
    return np.stack([sort_codes(preds[c]) for c in PREDICTION_KEY], 1)


def key_order(codes: np.ndarray) -> np.ndarray:
    """Row order sorting rows by their ``key_codes`` (stable, lexicographic, missing last).

    One stable argsort of a combined int64 key where the code ranges fit (the same
    permutation as ``np.lexsort``), else ``np.lexsort``.
    """
    sizes = [int(col.max()) + 1 if len(col) else 1 for col in codes.T]
    if math.prod(sizes) < 2**62:
        combined = np.zeros(len(codes), dtype=np.int64)
        for j, n in enumerate(sizes):
            combined = combined * n + codes[:, j]
        return np.argsort(combined, kind="stable")
    return np.lexsort(codes.T[::-1])


def deduped_predictions(preds: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """(one row per PREDICTION_KEY, dropped rows per model).

    Deterministic whatever the row order: rows are sorted by the key, then usable rows
    first, then the latest ``attempt`` (where the frame has it), then by
    values; the first row of each key is kept.
    The key sort runs on integer codes; only the rows of repeated keys are
    sorted by values (the same order as one sort of every row by all columns).
    """
    if preds.empty:
        return preds.copy(), {}
    codes = key_codes(preds)
    order = key_order(codes)
    keys = codes[order]
    del codes  # (n, 5) int64: free before the next copy
    dup = np.concatenate([[False], (keys[1:] == keys[:-1]).all(1)])
    del keys
    if dup.any():
        group = np.cumsum(~dup) - 1
        in_dup = np.bincount(group)[group] > 1
        slots = np.flatnonzero(in_dup)
        rows = np.sort(order[slots])
        sub = preds.iloc[rows].reset_index(drop=True)
        sub = sub.assign(_bad=~usable(sub).to_numpy())
        latest = [c for c in _LATEST if c in sub]
        sub = sub.assign(**{f"_neg{c}": -sub[c].astype("float64") for c in latest})  # descending, nulls last
        by = PREDICTION_KEY + ["_bad"] + [f"_neg{c}" for c in latest] + [c for c in _VALUES if c in sub]
        order[slots] = rows[sub.sort_values(by, na_position="last", kind="mergesort").index.to_numpy()]
    dropped = preds["model"].iloc[order[dup]].value_counts().astype(int).to_dict()
    keep = order[~dup]
    if len(keep) == len(preds) and bool((keep == np.arange(len(keep))).all()):
        kept = preds.reset_index(drop=True)  # already in key order, nothing dropped: no copy of every column
    else:
        kept = preds.iloc[keep].reset_index(drop=True)
    return kept, {str(k): int(v) for k, v in dropped.items()}


def errors(run_url: str) -> pd.DataFrame:
    """errors/ rows (schema ERRORS); empty frame when there are none."""
    table = _read_all(RunLayout(run_url).errors_dir, ERRORS, ("sample_id", "stage", "error_type", "message"), "errors")
    if table is None:
        table = ERRORS.empty_table()
    df = table.to_pandas()
    for col in df.columns:
        df[col] = _str(df[col])
    return df


def _condition_error_mask(errs: pd.DataFrame) -> np.ndarray:
    """Rows where only an ablation's own input failed: error_type ``<ablation>_...``
    (e.g. ``swap_missing``: the swap partner's image), not the sample's image."""
    kinds = errs["error_type"].astype(object).where(errs["error_type"].notna(), "")
    prefixes = tuple(f"{a}_" for a in ABLATION_NAMES)
    return kinds.map(lambda t: t.startswith(prefixes)).to_numpy(dtype=bool)


def condition_errors(errs: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``_condition_error_mask``: the sample keeps its quadrant, only that
    ablation's columns are blank (and its incomplete_reason says why)."""
    return errs[_condition_error_mask(errs) & errs["sample_id"].notna().to_numpy()]


def condition_error_count(partial: pd.DataFrame, model: str) -> int:
    """Distinct samples with a ``condition_errors`` row for ``model`` (or all models)."""
    mine = partial[partial["model"].isna() | (partial["model"] == model)]
    return int(mine["sample_id"].nunique())


def errored_sample_ids(errs: pd.DataFrame, model: str) -> np.ndarray:
    """Distinct sample_ids of samples/ that failed for ``model`` (model-specific or all models).

    Stage ``manifest`` rows are input rows that never became samples (e.g. the second
    of two rows with one sample_id): they must not knock the first one out; nor do
    ``condition_errors`` (an ablation's own input failed, the sample is still scored).
    """
    mask = (errs["sample_id"].notna() & (errs["model"].isna() | (errs["model"] == model))
            & (errs["stage"] != "manifest") & ~_condition_error_mask(errs))
    return np.sort(errs.loc[mask, "sample_id"].unique().astype(object))


def manifest_error_count(errs: pd.DataFrame) -> int:
    """Input rows rejected before they became samples (they count against every model)."""
    return int((errs["stage"] == "manifest").sum())


# Per-ablation extra columns (metrics.ablation_columns): name suffix -> type.
ABLATION_COLUMN_TYPES = {"_prediction": pa.string(), "_margin_shift": pa.float64(),
                         "_margin": pa.float64(), "_reliant": pa.bool_()}


def quadrant_schema(df: pd.DataFrame) -> pa.Schema:
    """QUADRANTS_FILE plus the frame's per-ablation columns (``A_prediction``, ...), in frame order."""
    fields = list(QUADRANTS_FILE)
    for name in df.columns:
        if name in QUADRANTS_FILE.names or name == "model":
            continue
        typ = next((t for suffix, t in ABLATION_COLUMN_TYPES.items() if name.endswith(suffix)), None)
        if typ is not None:
            fields.append(pa.field(name, typ))
    return pa.schema(fields)


def quadrant_arrow(df: pd.DataFrame) -> pa.Table:
    """A quadrant frame (without ``model``) as an Arrow table of ``quadrant_schema(df)``."""
    schema = quadrant_schema(df)
    cols = []
    for field in schema:
        if field.name not in df:
            cols.append(pa.nulls(len(df), field.type))
            continue
        values = df[field.name]
        try:  # None / NaN / pd.NA -> null directly (no object copy of the column)
            cols.append(pa.array(values, type=field.type, from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            # The reducer builds these columns, so this is a bug, not bad input: name it.
            raise ValueError(
                f"quadrant column {field.name!r} (pandas dtype {values.dtype}) cannot be "
                f"written as Arrow {field.type}: {exc}"
            ) from exc
    return pa.Table.from_arrays(cols, schema=schema)


def quadrants(run_url: str) -> pd.DataFrame:
    """The written quadrant tables of all models (``model``, a string, from the folder)."""
    found = files.list_table_files(RunLayout(run_url).quadrants_dir)
    parts = [files.with_keys(files.read_parquet(f), f) for f in found if f.key]
    if not parts:
        return pd.DataFrame(columns=["model"] + QUADRANTS_FILE.names)
    df = pa.concat_tables(parts, promote_options="permissive").to_pandas()
    df["model"] = _str(df["model"])
    return df
