"""Dense (samples x variants) placement of prediction rows: the fast path of ``metrics``.

Hamilton style, like ``metrics``: each function returns what it is named after.
String keys (sample_id, condition, prompt_id) are factorised once to integer codes;
each side of the method (with-image, an ablation) becomes a ``(n_samples, n_variants_max)``
array of *row numbers* into the deduplicated predictions (-1 = no row), so per-sample
values are row-wise reductions and text-only rows stored once per prompt_id join by a
prompt-code lookup, never a string join.

The result equals the join-based reference of ``tests/unit/reduce/frame_reference.py``
(``variant_table`` + ``sample_aggregates`` + ``incomplete_reason``) and the per-sample
reference of ``tests/unit/reduce/test_reduce_equivalence.py``. Where the dense layout
cannot represent the input (two rows in one cell, or repeated sample_ids in ``samples``)
the builders return None; ``metrics.quadrant_table`` then resolves conflicting rows
(``rows.conflicting_rows``) and tries again, and raises ValueError if it still does not
fit (repeated sample_ids, or several models' rows in one call: ``reduce_run`` passes
neither).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from vlm_eval.reduce.rows import entropy_bits, row_problems, usable
from vlm_eval.schema import IMAGE

AGG_COLUMNS = ["n_img_ok", "n_abl_ok", "n_yes_img", "n_yes_abl", "n_agree", "flips",
               "img_ok", "img_yes", "img_margin", "img_entropy", "abl_ok", "abl_yes", "abl_margin"]


def codes(values) -> tuple[np.ndarray, np.ndarray]:
    """(int64 code per row, -1 = missing; uniques as an object array)."""
    c, uniques = pd.factorize(values if isinstance(values, (pd.Series, pd.Index)) else pd.Series(values))
    return c.astype(np.int64), np.asarray(uniques, dtype=object)


def row_margins(preds: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(ok, margin) per prediction row: usable rows get lp_yes - lp_no, others NaN."""
    ok = usable(preds).to_numpy(dtype=bool)
    ly = preds["logprob_yes"].to_numpy(dtype=float, na_value=np.nan)
    ln = preds["logprob_no"].to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore"):  # inf - inf on rows that are not ok anyway
        return ok, np.where(ok, ly - ln, np.nan)


def sample_positions(samples: pd.DataFrame, preds: pd.DataFrame) -> np.ndarray | None:
    """Per prediction row: the position of its sample_id in ``samples`` (-1 = none/null);
    None when ``samples`` repeats a sample_id."""
    index = pd.Index(samples["sample_id"].to_numpy(dtype=object))
    if not index.is_unique:
        return None
    c, uniques = codes(preds["sample_id"])
    lookup = index.get_indexer(uniques) if len(uniques) else np.zeros(0, np.int64)
    return np.where(c >= 0, lookup[np.maximum(c, 0)] if len(lookup) else -1, -1).astype(np.int64)


def row_variants(preds: pd.DataFrame) -> np.ndarray:
    """variant per prediction row as int64 (-1 = null)."""
    return preds["variant"].astype("Int64").to_numpy(dtype=np.int64, na_value=-1)


def condition_mask(preds: pd.DataFrame, condition: str) -> np.ndarray:
    """True where the row's condition is ``condition``."""
    c, uniques = codes(preds["condition"])
    hit = np.flatnonzero(uniques == condition)
    return (c == hit[0]) if len(hit) else np.zeros(len(preds), bool)


def cell_rows(mask: np.ndarray, pos: np.ndarray, variant: np.ndarray, n_variants: np.ndarray) -> np.ndarray | None:
    """(n_samples, width) row numbers of the rows in ``mask`` placed at (sample, variant)
    for variant in 0..n_variants-1 (-1 = none); None if a cell gets two rows."""
    width = max(int(n_variants.max()) if len(n_variants) else 0, 1)
    grid = np.full(len(n_variants) * width, -1, dtype=np.int64)
    sel = mask & (pos >= 0) & (variant >= 0)
    rows = np.flatnonzero(sel)
    rows = rows[variant[rows] < n_variants[pos[rows]]]
    flat = pos[rows] * width + variant[rows]
    if len(flat) and np.bincount(flat, minlength=len(grid)).max() > 1:
        return None
    grid[flat] = rows
    return grid.reshape(len(n_variants), width)


def shared_rows(preds: pd.DataFrame, mask: np.ndarray, ok: np.ndarray, prompt: np.ndarray, n_prompts: int) -> np.ndarray:
    """Per prompt code: the row stored once per prompt_id (sample_id null) under the
    condition of ``mask`` (the first usable one in row order, else the first), -1 = none."""
    out = np.full(n_prompts, -1, dtype=np.int64)
    rows = np.flatnonzero(mask & preds["sample_id"].isna().to_numpy() & (prompt >= 0))
    rows = rows[np.argsort(~ok[rows], kind="stable")]
    uniq, first = np.unique(prompt[rows], return_index=True)
    out[uniq] = rows[first]
    return out


def ablated_cells(own: np.ndarray, img: np.ndarray, shared: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    """Ablated row per cell: the sample's own row, else the shared row of the with-image
    row's prompt_id (-1 = none)."""
    if len(prompt) == 0 or len(shared) == 0:
        return own
    img_prompt = np.where(img >= 0, prompt[np.maximum(img, 0)], -1)
    via = np.where(img_prompt >= 0, shared[np.maximum(img_prompt, 0)], -1)
    return np.where(own >= 0, own, via)


def cell_values(cells: np.ndarray, ok: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ok, yes, margin) per cell; no row = not ok, not yes, NaN."""
    present = cells >= 0
    safe = np.maximum(cells, 0)
    if len(ok) == 0:
        return np.zeros(cells.shape, bool), np.zeros(cells.shape, bool), np.full(cells.shape, np.nan)
    c_ok = present & ok[safe]
    margin = np.where(c_ok, m[safe], np.nan)
    return c_ok, margin > 0, margin


def aggregates(img: np.ndarray, abl: np.ndarray, ok: np.ndarray, m: np.ndarray) -> pd.DataFrame:
    """Per sample (positional): AGG_COLUMNS, as ``frame_reference.sample_aggregates`` after
    reindexing (booleans False and counts 0 where a sample has no variants)."""
    i_ok, i_yes, i_m = cell_values(img, ok, m)
    a_ok, a_yes, a_m = cell_values(abl, ok, m)
    ok0, yes0 = i_ok[:, 0], i_yes[:, 0]
    flips = (i_ok[:, 1:] & ok0[:, None] & (i_yes[:, 1:] != yes0[:, None])).sum(1)
    return pd.DataFrame(
        {
            "n_img_ok": i_ok.sum(1), "n_abl_ok": a_ok.sum(1),
            "n_yes_img": i_yes.sum(1), "n_yes_abl": a_yes.sum(1),
            "n_agree": (i_ok & a_ok & (i_yes == a_yes)).sum(1), "flips": flips,
            "img_ok": ok0, "img_yes": yes0, "img_margin": i_m[:, 0], "img_entropy": entropy_bits(i_m[:, 0]),
            "abl_ok": a_ok[:, 0], "abl_yes": a_yes[:, 0], "abl_margin": a_m[:, 0],
        }
    )


def _variant_list(mask_row: np.ndarray) -> str:
    return ", ".join(str(v) for v in np.flatnonzero(mask_row))


def incomplete_reasons(img: np.ndarray, abl: np.ndarray, ok: np.ndarray, preds: pd.DataFrame,
                       n_variants: np.ndarray, todo: np.ndarray, ablation: str) -> np.ndarray:
    """Why each sample in ``todo`` (bool, positional) is incomplete, as
    ``frame_reference.incomplete_reason`` words it; None elsewhere."""
    out = np.full(len(n_variants), None, dtype=object)
    idx = np.flatnonzero(todo)
    if not len(idx):
        return out
    width = img.shape[1]
    within = np.arange(width)[None, :] < n_variants[idx, None]
    im, ab = img[idx], abl[idx]
    safe_ok = ok if len(ok) else np.zeros(1, bool)
    i_pres, a_pres = im >= 0, ab >= 0
    i_bad = i_pres & ~safe_ok[np.maximum(im, 0)]
    a_bad = a_pres & ~safe_ok[np.maximum(ab, 0)]
    missing_img, missing_abl = within & ~i_pres, i_pres & ~a_pres
    err_img = np.where(i_bad.any(1), im[np.arange(len(idx)), i_bad.argmax(1)], -1)
    err_abl = np.where(a_bad.any(1), ab[np.arange(len(idx)), a_bad.argmax(1)], -1)
    need = np.unique(np.concatenate([err_img, err_abl]))
    need = need[need >= 0]
    text = dict(zip(need.tolist(), row_problems(preds, need)))

    for k, s in enumerate(idx):
        parts = []
        if missing_img[k].any():
            parts.append(f"missing image predictions for variants [{_variant_list(missing_img[k])}]")
        if err_img[k] >= 0:
            kind, msg = text[err_img[k]]
            parts.append(f"{kind}: {msg}")
        if missing_abl[k].any():
            parts.append(f"missing {ablation} prediction for variants [{_variant_list(missing_abl[k])}]")
        if err_abl[k] >= 0:
            kind, msg = text[err_abl[k]]
            parts.append(f"{kind} ({ablation}): {msg}")
        out[s] = "; ".join(parts) if parts else np.nan
    return out


def layout(samples: pd.DataFrame, preds: pd.DataFrame) -> dict | None:
    """Integer keys of ``preds`` against ``samples``, computed once: sample position, variant,
    prompt code, (ok, margin) per row, n_variants and the with-image cells; None when the
    dense layout does not fit."""
    pos = sample_positions(samples, preds)
    if pos is None:
        return None
    n = samples["n_variants"].to_numpy(dtype=np.int64)
    variant = row_variants(preds)
    img = cell_rows(condition_mask(preds, IMAGE), pos, variant, n)
    if img is None:
        return None
    ok, m = row_margins(preds)
    prompt, uniques = codes(preds["prompt_id"])
    return {"pos": pos, "variant": variant, "n": n, "img": img, "ok": ok, "margin": m,
            "prompt": prompt, "n_prompts": len(uniques)}


def ablation_cells(preds: pd.DataFrame, lay: dict, ablation: str) -> np.ndarray | None:
    """Ablated row per cell for ``ablation`` (own row, else shared by prompt_id); None when
    a cell has two own rows."""
    mask = condition_mask(preds, ablation)
    own = cell_rows(mask, lay["pos"], lay["variant"], lay["n"])
    if own is None:
        return None
    shared = shared_rows(preds, mask, lay["ok"], lay["prompt"], lay["n_prompts"])
    return ablated_cells(own, lay["img"], shared, lay["prompt"])
