"""Dataset adapters and ``load_samples``: from a job's ``dataset`` to canonical samples.

``load_samples(cfg, prompts, conditions, seed)``:

1. runs the adapter (``dataset.adapter``: a built-in name from ``ADAPTERS`` or a
   plug-in ``package.module:Class``) -> samples + row errors;
2. fills a missing ``sample_id`` with a stable hash; a row with neither a question
   nor a finding becomes an error row (``empty_question``);
3. ``vlm_eval.prompts.expand``: question, question_id, prompts = [question] + paraphrases;
4. duplicate ``sample_id``: the first occurrence is kept, every later one becomes an
   error row (``duplicate_sample_id``);
5. ``dataset.limit``: the first N samples are kept (input order), the rest are
   counted in ``stats['limited_out']`` (they are not part of this run's input;
   error rows of the adapter are all kept, so a bad row is never hidden by a limit);
6. ``swap`` in conditions: ``swap_image_uri`` = the image of another patient,
   preferring the same finding with the opposite label (seeded, per sample).

Every adapter row ends as a sample or an error row; ``stats`` records the counts:
``input_rows`` = ``samples`` + ``errors`` (this run's inputs), ``source_rows`` =
``input_rows`` + ``limited_out``, ``errors_by_type``, ``prompt_sources``, ``swap``, ...
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vlm_eval.config import DatasetConfig, PromptsConfig
from vlm_eval.datasets.base import ERROR_COLUMNS, PARAPHRASES, SAMPLE_COLUMNS, SampleSet, empty_errors
from vlm_eval.registry import resolve
from vlm_eval.schema import SAMPLES
from vlm_eval.values import is_missing

ADAPTERS: dict[str, str] = {
    "manifest": "vlm_eval.datasets.manifest:ManifestAdapter",
    "synthetic": "vlm_eval.datasets.synthetic:SyntheticAdapter",
    "padchest": "vlm_eval.datasets.padchest:PadChestAdapter",
    "chexpert": "vlm_eval.datasets.chexpert:CheXpertAdapter",
    "nih": "vlm_eval.datasets.nih:NIHAdapter",
    "mimic_cxr": "vlm_eval.datasets.mimic_cxr:MimicCxrAdapter",
    "vindr": "vlm_eval.datasets.vindr:VinDrAdapter",
    "psf_med": "vlm_eval.datasets.psf_med:PsfMedAdapter",
}
SAMPLE_TABLE_COLUMNS = SAMPLES.names
_SOURCE = "_source"
_KEY = "_prompt_key"  # a sample's row in _Texts (question, question_id, prompts)

__all__ = ["ADAPTERS", "SampleSet", "assign_swaps", "describe_adapters", "get_adapter", "load_samples",
           "load_samples_table"]


def get_adapter(name: str) -> Any:
    """An adapter instance for a built-in name or a ``package.module:Class`` plug-in."""
    obj = resolve(name, "dataset adapter", ADAPTERS)
    return obj() if isinstance(obj, type) else obj


def describe_adapters() -> str:
    """Text for ``vlm-eval datasets``: every adapter, its summary and its options."""
    lines = []
    for name in sorted(ADAPTERS):
        try:
            cls = resolve(name, "dataset adapter", ADAPTERS)
        except (ImportError, Exception) as exc:  # noqa: BLE001 - listing must not fail on one adapter
            lines.append(f"{name}\n    (unavailable: {exc.__class__.__name__})")
            continue
        doc = ((cls.__doc__ or "").strip().splitlines() or [""])[0]
        lines.append(f"{name}\n    {doc}")
        for key, text in sorted(getattr(cls, "options_doc", {}).items()):
            lines.append(f"    options.{key}: {text}")
    return "\n".join(lines)


# ---------------------------------------------------------------- helpers


_missing = is_missing  # the one missing-value rule (vlm_eval.values; H-input's import switch)


def _error_rows(frame: pd.DataFrame, error_type: str, message_fn) -> pd.DataFrame:
    sources = frame[_SOURCE] if _SOURCE in frame else pd.Series([None] * len(frame), index=frame.index)
    rows = [{"sample_id": sid, "stage": "manifest", "error_type": error_type, "message": message_fn(sid, src),
             "model": None, "source": src}
            for sid, src in zip(frame["sample_id"].tolist(), sources.tolist())]
    return pd.DataFrame(rows, columns=ERROR_COLUMNS)


def _pick(pool: list[tuple[str, str]], start: int, patient: str, image: str) -> str | None:
    """First pool entry from ``start`` (cyclic) of another patient and another image."""
    n = len(pool)
    for k in range(n):
        uri, pat = pool[(start + k) % n]
        if pat != patient and uri != image:
            return uri
    return None


def assign_swaps(samples: pd.DataFrame, seed: int = 0) -> tuple[pd.Series, dict[str, int]]:
    """Swap image per sample: another patient's image, opposite label of the same finding
    if possible, else the same finding, else any image. Seeded and stable per sample_id
    (independent of row order). Samples without a patient_id count as their own patient.
    Returns (swap_image_uri series aligned to ``samples``, counts per fallback tier)."""
    from vlm_eval.prompts.sets import normalise_finding

    if len(samples) == 0:
        return pd.Series([], dtype="object", index=samples.index), {}
    patients = [p if not _missing(p) else f"img:{u}"
                for p, u in zip(samples["patient_id"].tolist(), samples["image_uri"].tolist())]
    findings = [normalise_finding(f) if not _missing(f) else None for f in samples["finding"].tolist()]
    labels = [lab if lab in ("yes", "no") else None for lab in samples["label"].tolist()]
    images = samples["image_uri"].tolist()
    by_fl: dict[tuple, dict[str, str]] = {}
    by_f: dict[Any, dict[str, str]] = {}
    every: dict[str, str] = {}
    for uri, pat, f, lab in zip(images, patients, findings, labels):
        by_fl.setdefault((f, lab), {}).setdefault(uri, pat)
        by_f.setdefault(f, {}).setdefault(uri, pat)
        every.setdefault(uri, pat)
    sort = lambda d: sorted(d.items())  # noqa: E731 - deterministic pool order
    pools_fl = {k: sort(v) for k, v in by_fl.items()}
    pools_f = {k: sort(v) for k, v in by_f.items()}
    pool_all = sort(every)
    out, tiers = [], Counter()
    for sid, uri, pat, f, lab in zip(samples["sample_id"].tolist(), images, patients, findings, labels):
        h = int(hashlib.sha256(f"{seed}:{sid}".encode("utf-8")).hexdigest()[:12], 16)
        choice, tier = None, "none"
        opposite = {"yes": "no", "no": "yes"}.get(lab)
        candidates = []
        if opposite and f is not None:
            candidates.append(("opposite_label", pools_fl.get((f, opposite), [])))
        if f is not None:
            candidates.append(("same_finding", pools_f.get(f, [])))
        candidates.append(("any", pool_all))
        for name, pool in candidates:
            if pool:
                choice = _pick(pool, h % len(pool), pat, uri)
                if choice is not None:
                    tier = name
                    break
        out.append(choice)
        tiers[tier] += 1
    return pd.Series(out, index=samples.index, dtype="object"), dict(tiers)


def _missing_mask(values: pd.Series) -> np.ndarray:
    """``_missing`` per row, without a Python object per cell for Arrow strings and categoricals."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        cats = np.array([_missing(v) for v in values.cat.categories] + [True], dtype=bool)
        return cats[values.cat.codes.to_numpy()]  # code -1 (missing) -> the trailing True
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        import pyarrow.compute as pc

        arr = values.array.__arrow_array__()
        # A blank string has no ASCII word character; check only those rows exactly.
        mask = np.array(pc.fill_null(pc.match_substring_regex(arr, r"^\W*$"), True).to_numpy(), dtype=bool)
        rows = np.flatnonzero(mask)
        if len(rows):
            mask[rows] = [_missing(v) for v in pc.take(arr, rows).to_pylist()]
        return mask
    return values.map(_missing).to_numpy(dtype=bool)


def _duplicated(values: pd.Series) -> np.ndarray:
    """``Series.duplicated(keep="first")``; for Arrow strings without a Python object per row."""
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow" and not values.isna().any():
        import pyarrow.compute as pc

        arr = values.array.__arrow_array__()
        # A stable sort puts equal ids together, the earliest row first (no hash table
        # of every id: that held several copies of the column).
        order = pc.sort_indices(arr)
        ids = arr.take(order)
        dup = np.zeros(len(values), dtype=bool)
        if len(values) > 1:
            same = pc.equal(ids.slice(1), ids.slice(0, len(values) - 1)).to_numpy()
            dup[order.to_numpy()[1:][same]] = True
        return dup
    return values.duplicated(keep="first").to_numpy(dtype=bool)


@dataclass
class _Texts:
    """Question, question_id and prompts per distinct prompt key (``_KEY`` of a sample row)."""

    questions: list
    question_ids: list
    prompts: list


def _all_str(values: pd.Series) -> bool:
    if values.dtype != object:
        return True
    return all(isinstance(v, str) for v in pd.unique(values.dropna()))


def _expand(samples: pd.DataFrame, cfg: PromptsConfig, pset) -> tuple[pd.DataFrame, _Texts, dict]:
    """``prompts.expand`` once per distinct (question, finding, question_id), not per sample
    (the result depends only on those): samples get a ``_KEY`` column into the returned
    texts. Rows with their own paraphrases, or keys of several prompt sources, take the
    per-row path (same result)."""
    from vlm_eval.prompts import expand

    cols = ["question", "finding", "question_id"]
    dedupe = len(samples) > 0 and all(_all_str(samples[c]) for c in cols) and (
        PARAPHRASES not in samples or _missing_mask(samples[PARAPHRASES]).all())
    if dedupe:
        key = None
        for c in cols:
            codes = pd.factorize(samples[c])[0].astype(np.int64)
            key = codes if key is None else pd.factorize(key * (int(codes.max()) + 2) + (codes + 1))[0]
        _, first = np.unique(key, return_index=True)  # key codes are in first-seen order
        uniq = expand(samples.iloc[first], cfg, pset)
        sources = dict(uniq.attrs.get("prompt_sources", {}))
        if len(sources) == 1:
            texts = _Texts(uniq["question"].tolist(), uniq["question_id"].tolist(), uniq["prompts"].tolist())
            out = samples.drop(columns=["question", "question_id"]).assign(**{_KEY: key})
            return out, texts, {next(iter(sources)): len(samples)}
    full = expand(samples, cfg, pset)
    pool: dict = {}
    key = np.fromiter((pool.setdefault((q, i, tuple(p)), len(pool)) for q, i, p in zip(
        full["question"].tolist(), full["question_id"].tolist(), full["prompts"].tolist())), np.int64, len(full))
    texts = _Texts([k[0] for k in pool], [k[1] for k in pool], [list(k[2]) for k in pool])
    out = full.drop(columns=["question", "question_id", "prompts"]).assign(**{_KEY: key})
    return out, texts, dict(full.attrs.get("prompt_sources", {}))


def _finalise(samples: pd.DataFrame, texts: _Texts) -> pd.DataFrame:
    """Exactly the SAMPLES columns; text columns as object with None; prompts as list[str].

    Repeated values (an image's URI for each of its findings, the finding's question and
    prompt list, labels, ...) share one Python object: at archive scale (millions of
    samples) one object per cell would multiply the driver's memory.
    """
    keys = samples[_KEY].tolist()
    per_key = {"question": texts.questions, "question_id": texts.question_ids}
    cols: dict[str, pd.Series] = {}
    for name in SAMPLE_TABLE_COLUMNS:
        pool: dict = {}
        if name == "prompts":
            shared = [pool.setdefault(tuple(map(str, p)), list(map(str, p))) for p in texts.prompts]
            values = [shared[k] for k in keys]
        elif name in per_key:
            shared = [None if _missing(v) else pool.setdefault(str(v), str(v)) for v in per_key[name]]
            values = [shared[k] for k in keys]
        elif name == "sample_id" and name in samples:
            values = [None if _missing(v) else str(v) for v in samples[name].tolist()]
        elif name in samples:
            values = [None if _missing(v) else pool.setdefault(str(v), str(v)) for v in samples[name].tolist()]
        else:
            values = [None] * len(samples)
        cols[name] = pd.Series(values, dtype="object")  # object + None: pandas 3 would infer str + NaN
    out = pd.DataFrame(cols, columns=SAMPLE_TABLE_COLUMNS)
    return out.reset_index(drop=True)


# ---------------------------------------------------------------- load_samples


def load_samples(cfg: DatasetConfig, prompts: PromptsConfig, conditions: list[str] | None = None,
                 seed: int = 0) -> SampleSet:
    """Run the adapter, expand prompts, dedupe, limit and assign swaps (see module doc)."""
    samples, texts, errors, stats = _load(cfg, prompts, conditions, seed)
    out = _finalise(samples, texts)
    return SampleSet(samples=out, errors=errors, stats=stats)


def load_samples_table(cfg: DatasetConfig, prompts: PromptsConfig, conditions: list[str] | None = None,
                       seed: int = 0):
    """``load_samples`` for the driver at archive scale: the same samples, held compactly
    (codes into distinct values, prompts once per distinct list); ``.write_parquet``
    writes the SAMPLES table image-major in bounded chunks. See ``_samples_table``."""
    from vlm_eval.datasets._samples_table import CompactSamples

    samples, texts, errors, stats = _load(cfg, prompts, conditions, seed)
    return CompactSamples.build(samples, texts, errors, stats)


def _load(cfg: DatasetConfig, prompts: PromptsConfig, conditions: list[str] | None,
          seed: int) -> tuple[pd.DataFrame, _Texts, pd.DataFrame, dict]:
    from vlm_eval.datasets.manifest import default_sample_id
    from vlm_eval.prompts import load_prompt_set

    conditions = list(conditions) if conditions is not None else ["image", "text_only"]
    pset = load_prompt_set(prompts.set)  # a bad set name stops before the dataset is read
    sset = get_adapter(cfg.adapter).load(cfg)
    # Shallow: pandas copies on write, so the adapter's frame is never changed, and
    # releasing ``sset`` lets each step below free the previous frame (driver memory).
    samples = sset.samples.copy(deep=False)
    for col in SAMPLE_COLUMNS:
        if col not in samples:
            samples[col] = None
    adapter_errors = sset.errors if sset.errors is not None else empty_errors()
    stats: dict[str, Any] = {"adapter": cfg.adapter, **sset.stats,
                             "adapter_samples": len(samples), "adapter_errors": len(adapter_errors)}
    del sset
    error_parts = [adapter_errors.reindex(columns=ERROR_COLUMNS)]

    no_id = pd.Series(_missing_mask(samples["sample_id"]), index=samples.index)
    if no_id.any():
        samples.loc[no_id, "sample_id"] = [
            default_sample_id(u, q if not _missing(q) else None, f if not _missing(f) else None)
            for u, q, f in zip(samples.loc[no_id, "image_uri"], samples.loc[no_id, "question"],
                               samples.loc[no_id, "finding"])]
    nothing = pd.Series(_missing_mask(samples["question"]) & _missing_mask(samples["finding"]), index=samples.index)
    if nothing.any():
        error_parts.append(_error_rows(samples[nothing], "empty_question", lambda sid, src: (
            f"{src or sid}: the sample has neither a question nor a finding to take the question from")))
        samples = samples[~nothing]

    samples, texts, sources = _expand(samples, prompts, pset)
    stats["prompt_sources"] = sources
    stats["prompt_set"] = {"name": pset.name, "version": pset.version, "sha256": pset.sha256}

    dup = pd.Series(_duplicated(samples["sample_id"]), index=samples.index)
    if dup.any():
        error_parts.append(_error_rows(samples[dup], "duplicate_sample_id", lambda sid, src: (
            f"{src + ': ' if src else ''}sample_id {sid!r} was already used by an earlier row; the first "
            "is kept. Make sample_id unique, or leave it empty to use a hash of image and question")))
        samples = samples[~dup]
    stats["duplicates"] = int(dup.sum())

    stats["limited_out"] = 0
    if cfg.limit is not None and len(samples) > cfg.limit:
        stats["limited_out"] = len(samples) - cfg.limit
        samples = samples.iloc[: cfg.limit]

    if "swap" in conditions:
        swaps, tiers = assign_swaps(samples, seed)
        samples = samples.assign(swap_image_uri=swaps)
        stats["swap"] = tiers
    samples = samples.drop(columns=[PARAPHRASES], errors="ignore")
    errors = pd.concat([e for e in error_parts if len(e)], ignore_index=True) if any(
        len(e) for e in error_parts) else empty_errors()
    errors = errors.reindex(columns=ERROR_COLUMNS).astype("object")
    errors = errors.where(errors.notna(), None)
    stats["samples"] = len(samples)
    stats["errors"] = len(errors)
    stats["errors_by_type"] = {str(k): int(v) for k, v in errors["error_type"].value_counts().items()}
    stats["input_rows"] = len(samples) + len(errors)  # this run's inputs: every one is a sample or an error
    stats["source_rows"] = stats["input_rows"] + stats["limited_out"]
    return samples.reset_index(drop=True), texts, errors, stats
