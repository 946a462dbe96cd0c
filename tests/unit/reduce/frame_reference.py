"""The join-based ("frame") computation of the quadrant table: a reference the tests
compare the reducer's dense path (``vlm_eval.reduce.metrics.quadrant_table``) with.

It used to live in ``vlm_eval/reduce/metrics.py`` as a fallback for inputs the dense
(samples x variants) layout cannot hold; ``reduce_run`` never produced such inputs (it
dedupes samples/ and resolves conflicting rows first), so the fallback was dead code in
the package and now lives here. It builds one row per expected (sample, variant) by
pandas merges, aggregates with ``groupby`` and words ``incomplete_reason`` itself; only
the last step (aggregates -> table columns: ``quadrant_columns``, ``ablation_columns``)
and the per-row arithmetic of ``rows`` are shared with the package. The fully
independent per-sample reference is ``ref_quadrants`` in test_reduce_equivalence.py.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from vlm_eval.conditions import IMAGE
from vlm_eval.config import TaxonomyConfig
from vlm_eval.reduce.metrics import ablation_columns, quadrant_columns
from vlm_eval.reduce.rows import conflicting_rows, entropy_bits, margin, row_problems, usable


def scored_predictions(preds: pd.DataFrame) -> pd.DataFrame:
    """Prediction rows plus ok, margin, yes (bool), entropy, and ``why`` ((kind, text) of
    ``rows.row_problem``) on unusable rows; unusable rows get NaN/False."""
    ok = usable(preds).to_numpy()
    m = np.where(ok, margin(preds["logprob_yes"], preds["logprob_no"]), np.nan)
    why = np.full(len(preds), None, dtype=object)
    bad = np.flatnonzero(~ok)
    if len(bad):
        why[bad] = pd.Series(row_problems(preds, bad), dtype=object).to_numpy()
    return preds.assign(ok=ok, margin=m, yes=m > 0, entropy=entropy_bits(m), why=why)


def variant_grid(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per expected (sample_id, variant): variants 0..n_variants-1."""
    n = samples["n_variants"].to_numpy(dtype=np.int64)
    sid = np.repeat(samples["sample_id"].to_numpy(dtype=object), n)
    variant = np.arange(n.sum(), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    return pd.DataFrame({"sample_id": sid, "variant": variant})


def _side(rows: pd.DataFrame, prefix: str, keys: list[str]) -> pd.DataFrame:
    cols = {"ok": "ok", "margin": "margin", "yes": "yes", "entropy": "entropy", "why": "why"}
    out = rows[keys + list(cols)].rename(columns={c: f"{prefix}_{c}" for c in cols})
    return out.assign(**{f"{prefix}_present": True})


def image_side(scored: pd.DataFrame) -> pd.DataFrame:
    """With-image rows keyed (sample_id, variant), with the prompt_id used for joins."""
    rows = scored[(scored["condition"] == IMAGE) & scored["sample_id"].notna() & scored["variant"].notna()]
    rows = rows.assign(variant=rows["variant"].astype("int64"))
    side = _side(rows, "img", ["sample_id", "variant"])
    return side.assign(prompt_id=rows["prompt_id"].to_numpy())


def ablated_side(scored: pd.DataFrame, grid_with_image: pd.DataFrame, ablation: str) -> pd.DataFrame:
    """Ablated rows aligned to grid_with_image's (sample_id, variant) rows.

    A row stored for the sample (sample_id, variant set) wins; otherwise an
    image-free row stored once per prompt_id (sample_id null) joins through the
    prompt_id of the sample's with-image row.
    """
    rows = scored[scored["condition"] == ablation]
    own = rows[rows["sample_id"].notna() & rows["variant"].notna()]
    own = _side(own.assign(variant=own["variant"].astype("int64")), "abl", ["sample_id", "variant"])
    shared = rows[rows["sample_id"].isna() & rows["prompt_id"].notna()].sort_values("ok", ascending=False, kind="mergesort")
    shared = _side(shared.drop_duplicates("prompt_id"), "abl", ["prompt_id"])
    keys = grid_with_image[["sample_id", "variant", "prompt_id"]]
    a = keys.merge(own, on=["sample_id", "variant"], how="left")
    b = keys.merge(shared, on="prompt_id", how="left")
    use_own = a["abl_present"].eq(True).to_numpy()
    cols = [c for c in a.columns if c.startswith("abl_")]
    out = pd.DataFrame({c: np.where(use_own, a[c].to_numpy(dtype=object), b[c].to_numpy(dtype=object)) for c in cols})
    return pd.concat([keys[["sample_id", "variant"]].reset_index(drop=True), out], axis=1)


def variant_table(samples: pd.DataFrame, scored: pd.DataFrame, ablation: str) -> pd.DataFrame:
    """One row per expected (sample, variant): with-image and ablated prediction side by side."""
    grid = variant_grid(samples).merge(image_side(scored), on=["sample_id", "variant"], how="left")
    abl = ablated_side(scored, grid, ablation)
    vt = pd.concat([grid.reset_index(drop=True), abl.drop(columns=["sample_id", "variant"])], axis=1)
    for side in ("img", "abl"):
        vt[f"{side}_present"] = vt[f"{side}_present"].eq(True)
        vt[f"{side}_ok"] = vt[f"{side}_ok"].eq(True)
        vt[f"{side}_yes"] = vt[f"{side}_yes"].eq(True) & vt[f"{side}_ok"]
        vt[f"{side}_margin"] = pd.to_numeric(vt[f"{side}_margin"], errors="coerce").astype(float)
        vt[f"{side}_entropy"] = pd.to_numeric(vt[f"{side}_entropy"], errors="coerce").astype(float)
    return vt


def sample_aggregates(vt: pd.DataFrame) -> pd.DataFrame:
    """Per sample: counts over variants and variant 0's values (index sample_id)."""
    v0 = vt[vt["variant"] == 0].set_index("sample_id")
    yes0 = vt["sample_id"].map(v0["img_yes"]).eq(True).to_numpy()
    ok0 = vt["sample_id"].map(v0["img_ok"]).eq(True).to_numpy()
    both = vt["img_ok"] & vt["abl_ok"]
    frame = pd.DataFrame(
        {
            "sample_id": vt["sample_id"],
            "n_img_ok": vt["img_ok"].astype(int),
            "n_abl_ok": vt["abl_ok"].astype(int),
            "n_yes_img": vt["img_yes"].astype(int),
            "n_yes_abl": vt["abl_yes"].astype(int),
            "n_agree": (both & (vt["img_yes"] == vt["abl_yes"])).astype(int),
            "flips": ((vt["variant"] >= 1) & vt["img_ok"] & ok0 & (vt["img_yes"].to_numpy() != yes0)).astype(int),
        }
    )
    agg = frame.groupby("sample_id", sort=False).sum()
    v0_cols = ["img_ok", "img_yes", "img_margin", "img_entropy", "abl_ok", "abl_yes", "abl_margin"]
    return agg.join(v0[v0_cols], how="left")


def _variants_text(vt: pd.DataFrame, mask: pd.Series) -> pd.Series:
    sub = vt.loc[mask, ["sample_id", "variant"]]
    return sub.assign(v=sub["variant"].astype(str)).groupby("sample_id", sort=False)["v"].agg(", ".join)


def _first_problem(vt: pd.DataFrame, mask: pd.Series, col: str, ablation: str | None) -> pd.Series:
    sub = vt.loc[mask, ["sample_id", col]]
    where = f" ({ablation})" if ablation else ""
    msg = sub[col].map(lambda w: f"{w[0]}{where}: {w[1]}")
    return msg.groupby(sub["sample_id"].to_numpy(), sort=False).first()


def incomplete_reason(vt: pd.DataFrame, ablation: str) -> pd.Series:
    """Why a sample is incomplete ('; '-joined), indexed by sample_id; absent = complete."""
    parts = [
        "missing image predictions for variants [" + _variants_text(vt, ~vt["img_present"]) + "]",
        _first_problem(vt, vt["img_present"] & ~vt["img_ok"], "img_why", None),
        f"missing {ablation} prediction for variants [" + _variants_text(vt, vt["img_present"] & ~vt["abl_present"]) + "]",
        _first_problem(vt, vt["abl_present"] & ~vt["abl_ok"], "abl_why", ablation),
    ]
    parts = [p.astype(object) for p in parts if len(p)]
    if not parts:
        return pd.Series(dtype=object)
    stacked = pd.concat(parts)
    return stacked.groupby(level=0, sort=False).agg("; ".join)


def object_strings(preds: pd.DataFrame) -> pd.DataFrame:
    """``preds`` with its string key columns as object/None (what the frame path expects)."""
    cols = [c for c in ("model", "sample_id", "condition", "prompt_id", "error") if c in preds]
    return preds.assign(**{c: preds[c].astype(object).where(preds[c].notna(), None) for c in cols})


def per_sample(agg: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """``agg`` in the order of ``ids`` as ``dense.aggregates`` gives it: a sample without
    variants (absent from ``agg``) counts 0 and is not ok / not yes."""
    agg = agg.reindex(ids)
    for col in ("n_img_ok", "n_abl_ok", "n_yes_img", "n_yes_abl", "n_agree", "flips"):
        agg[col] = agg[col].fillna(0).astype(np.int64)
    for col in ("img_ok", "img_yes", "abl_ok", "abl_yes"):
        agg[col] = agg[col].eq(True)
    return agg


def frame_quadrant_table(samples: pd.DataFrame, preds: pd.DataFrame, taxonomy: TaxonomyConfig,
                         extras: list[str]) -> pd.DataFrame:
    """``metrics.quadrant_table`` by joins of variant tables."""
    scored = scored_predictions(object_strings(conflicting_rows(preds)))
    n = samples["n_variants"].to_numpy(dtype=np.int64)
    ids = samples["sample_id"]
    vt = variant_table(samples, scored, taxonomy.ablation)
    agg = per_sample(sample_aggregates(vt), ids)
    reasons = incomplete_reason(vt, taxonomy.ablation).reindex(ids).to_numpy(dtype=object)
    table = quadrant_columns(samples, agg, reasons, taxonomy)
    cols = [ablation_columns(per_sample(sample_aggregates(variant_table(samples, scored, a)), ids), n, a,
                             taxonomy.reliance)
            for a in extras]
    return pd.concat([table, *cols], axis=1) if cols else table


