"""Per-prompt and per-sample metrics of the method (README, "The method, exactly").

Hamilton style: each function returns the table or column it is named after and
takes the tables it needs. Everything is vectorised (numpy / pandas groupby).

Decisions made here (documented in the README's method section too):

- prediction = 'yes' iff margin > 0, so a tie (margin == 0) is 'no'.
- ``majority`` reliance: the vote over variants is 'yes' iff strictly more than half
  of the variants say 'yes'; a tie votes 'no' (the same convention as margin == 0).
- margin_shift = with-image margin - ablated margin, both of variant 0.
- A row with an ``error``, a null/NaN log-probability, -inf for both answers, or two
  rows for one (sample, variant, condition) with different prompt_ids is not a usable
  prediction (``rows.usable``); its sample is incomplete and says why.
- Only complete rows get image_reliant / ablation_agreement; only complete rows with
  two or more variants get consistent / flips / flip_rate / quadrant (one variant:
  consistency is *not measured*, null, never a vacuous True). Incomplete rows keep
  variant 0's prediction, margin and ablated values where they exist, and say why in
  ``incomplete_reason``.
- Every other ablation A of the run (``conditions`` minus ``image`` and minus
  ``taxonomy.ablation``) adds ``A_prediction``, ``A_margin`` (variant 0 under A),
  ``A_margin_shift`` (with-image margin - A margin, variant 0) and ``A_reliant``
  (the taxonomy's reliance rule applied to A instead of the quadrant's ablation;
  e.g. ``swap_reliant`` = swap sensitivity). ``A_reliant`` is set where its rule can
  be evaluated: variant 0 usable under image and A (``original``), else every
  variant usable under both. These columns never change completeness or quadrants.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from vlm_eval.conditions import ABLATION_NAMES, IMAGE
from vlm_eval.config import TaxonomyConfig
from vlm_eval.reduce import dense
from vlm_eval.reduce.rows import conflicting_rows, entropy_bits, margin, prediction

__all__ = ["entropy_bits", "margin", "prediction", "quadrant_table"]


def image_reliant(agg: pd.DataFrame, n_variants: pd.Series, rule: str) -> pd.Series:
    """Reliance under ``rule``: original | majority (ties vote 'no') | any."""
    if rule == "original":
        return agg["img_yes"] != agg["abl_yes"]
    if rule == "majority":
        return (2 * agg["n_yes_img"] > n_variants) != (2 * agg["n_yes_abl"] > n_variants)
    if rule == "any":
        return agg["n_agree"] < n_variants
    raise ValueError(f"unknown reliance rule {rule!r}: use original, majority or any")


def quadrant(consistent: pd.Series, reliant: pd.Series) -> np.ndarray:
    """Ideal / Fragile / Dangerous / Worst from consistent x image_reliant."""
    c, r = consistent.to_numpy(dtype=bool), reliant.to_numpy(dtype=bool)
    return np.select([c & r, ~c & r, c & ~r], ["Ideal", "Fragile", "Dangerous"], "Worst").astype(object)


def _nullable(values, mask: np.ndarray) -> np.ndarray:
    out = np.asarray(values, dtype=object).copy()
    out[~mask] = None
    return out


def extra_ablations(preds: pd.DataFrame, taxonomy: TaxonomyConfig, ablations: list[str] | None = None) -> list[str]:
    """The run's ablations other than ``taxonomy.ablation``, in the given order.

    ablations: the job's conditions minus ``image`` (None = the ablations that occur in
    ``preds``, in the condition registry's order).
    """
    if ablations is None:
        present = set(preds["condition"].dropna().unique()) if "condition" in preds else set()
        ablations = [a for a in ABLATION_NAMES if a in present]
    return [a for a in dict.fromkeys(ablations) if a not in (IMAGE, taxonomy.ablation)]


def ablation_columns(agg: pd.DataFrame, n: np.ndarray, ablation: str, rule: str) -> pd.DataFrame:
    """``A_prediction, A_margin, A_reliant, A_margin_shift`` for ablation A = ``ablation``.

    agg: ``dense.aggregates`` of A's cells, one row per sample (positional);
    one output row per sample (RangeIndex); see the module docstring.
    """
    has_img, has_abl = agg["img_ok"].to_numpy(dtype=bool), agg["abl_ok"].to_numpy(dtype=bool)
    defined = has_img & has_abl if rule == "original" else complete_mask(agg, n)
    reliant = image_reliant(agg, n, rule).to_numpy(dtype=bool)
    m_img = np.where(has_img, agg["img_margin"].to_numpy(dtype=float), np.nan)
    m_abl = np.where(has_abl, agg["abl_margin"].to_numpy(dtype=float), np.nan)
    return pd.DataFrame(
        {
            f"{ablation}_prediction": _nullable(np.where(agg["abl_yes"], "yes", "no"), has_abl),
            f"{ablation}_margin": m_abl,
            f"{ablation}_reliant": _nullable(reliant, defined),
            f"{ablation}_margin_shift": m_img - m_abl,
        }
    )


def complete_mask(agg: pd.DataFrame, n: np.ndarray) -> np.ndarray:
    """True where every variant is usable with the image and under the ablation."""
    return (n > 0) & (agg["n_img_ok"].to_numpy() == n) & (agg["n_abl_ok"].to_numpy() == n)


def quadrant_columns(samples: pd.DataFrame, agg: pd.DataFrame, reasons: np.ndarray, taxonomy: TaxonomyConfig) -> pd.DataFrame:
    """The QUADRANT_COLUMNS (minus ``model``) from per-sample aggregates (``dense.aggregates``,
    positional: integer counts, boolean flags)."""
    n = samples["n_variants"].to_numpy(dtype=np.int64)
    complete = complete_mask(agg, n)
    reasons = np.where(n == 0, "no prompt variants in samples/", np.asarray(reasons, dtype=object))
    flips = agg["flips"].to_numpy(dtype=np.int64)
    measured = complete & (n > 1)  # one variant: nothing to be consistent with (not measured)
    consistent = pd.Series(flips == 0, index=agg.index)
    reliant = image_reliant(agg, n, taxonomy.reliance)
    has_pred = agg["img_ok"].to_numpy(dtype=bool)
    has_abl = agg["abl_ok"].to_numpy(dtype=bool)
    pred = _nullable(np.where(agg["img_yes"], "yes", "no"), has_pred)
    label = samples["label"].to_numpy(dtype=object)
    known = has_pred & pd.notna(label)
    with np.errstate(invalid="ignore", divide="ignore"):
        flip_rate = np.where(complete & (n > 1), flips / np.maximum(n - 1, 1), np.nan)
        agreement = np.where(complete, agg["n_agree"].to_numpy(dtype=float) / np.maximum(n, 1), np.nan)
    m_img = np.where(has_pred, agg["img_margin"].to_numpy(dtype=float), np.nan)
    m_abl = np.where(has_abl, agg["abl_margin"].to_numpy(dtype=float), np.nan)
    return pd.DataFrame(
        {
            "dataset": samples["dataset"].to_numpy(dtype=object),
            "sample_id": samples["sample_id"].to_numpy(dtype=object),
            "patient_id": samples["patient_id"].to_numpy(dtype=object),
            "finding": samples["finding"].to_numpy(dtype=object),
            "label": label,
            "n_variants": n,
            "prediction": pred,
            "margin": m_img,
            "entropy": np.where(has_pred, agg["img_entropy"].to_numpy(dtype=float), np.nan),
            "correct": _nullable(pred == label, known),
            "consistent": _nullable(consistent.to_numpy(), measured),
            "flips": _nullable(flips, measured),
            "flip_rate": flip_rate,
            "ablation": taxonomy.ablation,
            "ablated_prediction": _nullable(np.where(agg["abl_yes"], "yes", "no"), has_abl),
            "ablated_margin": m_abl,
            "image_reliant": _nullable(reliant.to_numpy(dtype=bool), complete),
            "margin_shift": m_img - m_abl,
            "ablation_agreement": agreement,
            "quadrant": _nullable(quadrant(consistent, reliant), measured),
            "complete": complete,
            "incomplete_reason": _nullable(reasons, ~complete),
        }
    )


def quadrant_table(samples: pd.DataFrame, preds: pd.DataFrame, taxonomy: TaxonomyConfig,
                   ablations: list[str] | None = None) -> pd.DataFrame:
    """One quadrant row per sample of ``samples`` for one model's deduped ``preds``.

    Columns: vlm_eval.schema.QUADRANT_COLUMNS minus ``model``, then the four columns of
    ``ablation_columns`` for each of ``extra_ablations(preds, taxonomy, ablations)``.
    Computed on the dense (samples x variants) layout of ``dense``. Two rows for one
    (sample, variant, condition) are resolved by ``rows.conflicting_rows`` first. The
    layout then fits unless ``samples`` repeats a sample_id or ``preds`` holds several
    models: a ValueError (``reduce_run`` dedupes samples/ and passes one model at a time).
    """
    extras = extra_ablations(preds, taxonomy, ablations)
    lay, cells = _dense_cells(samples, preds, taxonomy, extras)
    if lay is None:  # a cell with two rows: resolve the conflicts (rare), then try again
        resolved = conflicting_rows(preds)
        if resolved is not preds:
            preds = resolved
            lay, cells = _dense_cells(samples, preds, taxonomy, extras)
    if lay is None:
        raise ValueError(_misfit(samples, preds))
    n, ok = lay["n"], lay["ok"]
    agg = dense.aggregates(lay["img"], cells[taxonomy.ablation], ok, lay["margin"])
    todo = ~complete_mask(agg, n) & (n > 0)
    reasons = dense.incomplete_reasons(lay["img"], cells[taxonomy.ablation], ok, preds, n, todo, taxonomy.ablation)
    table = quadrant_columns(samples, agg, reasons, taxonomy)
    cols = [ablation_columns(dense.aggregates(lay["img"], cells[a], ok, lay["margin"]), n, a, taxonomy.reliance)
            for a in extras]
    return pd.concat([table, *cols], axis=1) if cols else table


def _misfit(samples: pd.DataFrame, preds: pd.DataFrame) -> str:
    """Why the dense layout cannot hold the input even after ``conflicting_rows``."""
    ids = samples["sample_id"]
    repeated = ids[ids.duplicated()].unique().tolist()
    if repeated:
        return (f"quadrant_table: samples repeats sample_id {repeated[0]!r} ({len(repeated)} repeated in all); "
                "give each sample once (reduce_run dedupes samples/ first, keeping the first row)")
    # else a cell keeps two rows after conflicting_rows, whose key includes the model
    models = sorted(map(str, preds["model"].dropna().unique()))
    return (f"quadrant_table: predictions of models {models} in one call; "
            "pass one model's predictions at a time (as reduce_run does)")


def _dense_cells(samples: pd.DataFrame, preds: pd.DataFrame, taxonomy: TaxonomyConfig, extras: list[str]):
    """(layout, ablated cells per ablation) of the dense path, or (None, {}) where it does not fit."""
    lay = dense.layout(samples, preds)
    cells = {a: dense.ablation_cells(preds, lay, a) for a in [taxonomy.ablation, *extras]} if lay else {}
    if lay is None or any(c is None for c in cells.values()):
        return None, {}
    return lay, cells


def orphan_predictions(samples: pd.DataFrame, preds: pd.DataFrame) -> int:
    """Prediction rows whose sample_id is not in samples/ (surfaced, never used)."""
    c, uniques = dense.codes(preds["sample_id"])
    # object Index: a hash-table isin (a str Index would build one Arrow scalar per value)
    known = pd.Index(uniques, dtype=object).isin(samples["sample_id"].to_numpy(dtype=object))
    return int(((c >= 0) & ~known[np.maximum(c, 0)]).sum()) if len(uniques) else 0
