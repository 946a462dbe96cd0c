"""The summary table: one row per model x dataset (finding null) and per finding.

Columns: vlm_eval.schema.SUMMARY_COLUMNS, plus extras: ``_ci_low``/``_ci_high`` for
flip_rate_question, flip_rate_pair, accuracy and ablation_agreement; n_labelled;
mean_entropy; auroc_entropy_dangerous and auroc_abs_margin_dangerous.

Every extra ablation A of the run (quadrant column ``A_reliant``, see
``metrics.ablation_columns``) adds ``frac_A_reliant`` (+ ``_ci_low``/``_ci_high``):
the share of complete rows with ``A_reliant`` set whose answer changes under A
(e.g. ``frac_swap_reliant`` = swap sensitivity); rows where it is null are left out.

Fractions are over complete rows. CIs are 95% percentile intervals of a bootstrap
that resamples patients (samples without patient_id are their own cluster); the
seed of each row is derived from (seed, model, dataset, finding), so a row's CI
does not depend on which other rows exist.

AUROCs treat Dangerous as the positive class and score each complete sample by
its *lack* of confidence: entropy, resp. -|margin| (a confidence screen flags the
least confident answers). 0.5 = the screen does no better than chance; below 0.5
= Dangerous answers are *more* confident than the rest. For a binary softmax
entropy is a decreasing function of |margin|, so the two agree up to ties
(entropy saturates at 0 bits for very large margins).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from vlm_eval.reduce import stats
from vlm_eval.schema import QUADRANTS, SUMMARY_COLUMNS

KEYS = ["model", "dataset", "finding"]
_RATE_CI = ["flip_rate_question", "flip_rate_pair", "accuracy", "ablation_agreement"]
EXTRA_COLUMNS = (
    [f"{r}{s}" for r in _RATE_CI for s in ("_ci_low", "_ci_high")]
    + ["n_labelled", "mean_entropy", "auroc_entropy_dangerous", "auroc_abs_margin_dangerous"]
)

# quadrant columns summary_row reads (plus every ``*_reliant``)
_USED = set(KEYS) | {"sample_id", "patient_id", "complete", "quadrant", "correct", "consistent", "flips",
                     "n_variants", "entropy", "margin", "ablation_agreement"}


def _bool(series: pd.Series) -> np.ndarray:
    return series.eq(True).to_numpy()


def reliant_ablations(quadrants: pd.DataFrame) -> list[str]:
    """Extra ablations A with an ``A_reliant`` column in ``quadrants`` (column order)."""
    return [c[: -len("_reliant")] for c in quadrants.columns if c.endswith("_reliant") and c != "image_reliant"]


def ablation_summary_columns(quadrants: pd.DataFrame) -> list[str]:
    """``frac_A_reliant`` and its CI columns for every extra ablation A."""
    return [f"frac_{a}_reliant{s}" for a in reliant_ablations(quadrants) for s in ("", "_ci_low", "_ci_high")]


def ratio_inputs(complete: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, num, den) of every ratio statistic over complete quadrant rows."""
    quad = complete["quadrant"].to_numpy(dtype=object)
    in_q = {q: (quad == q).astype(float) for q in QUADRANTS}
    ones = np.ones(len(complete))
    labelled = complete["correct"].notna().to_numpy().astype(float)
    correct = _bool(complete["correct"]).astype(float)
    n_var = complete["n_variants"].to_numpy(dtype=float)
    entropy = np.nan_to_num(complete["entropy"].to_numpy(dtype=float))
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for q in QUADRANTS:
        cols[f"frac_{q.lower()}"] = (in_q[q], ones)
    cols["flip_rate_question"] = ((~_bool(complete["consistent"])).astype(float), ones)
    cols["flip_rate_pair"] = (complete["flips"].to_numpy(dtype=float), np.maximum(n_var - 1, 0))
    cols["accuracy"] = (correct, labelled)
    for q in QUADRANTS:
        cols[f"accuracy_{q.lower()}"] = (correct * in_q[q], labelled * in_q[q])
    for q in QUADRANTS:
        cols[f"entropy_{q.lower()}"] = (entropy * in_q[q], in_q[q])
    cols["ablation_agreement"] = (complete["ablation_agreement"].to_numpy(dtype=float), ones)
    cols["mean_entropy"] = (entropy, ones)
    for a in reliant_ablations(complete):
        rel = complete[f"{a}_reliant"]
        cols[f"frac_{a}_reliant"] = (_bool(rel).astype(float), rel.notna().to_numpy().astype(float))
    names = list(cols)
    # column-major (n, K): each statistic's column is contiguous for the per-column bincounts
    num = np.empty((len(complete), len(names)), order="F")
    den = np.empty((len(complete), len(names)), order="F")
    for j, c in enumerate(names):
        num[:, j], den[:, j] = cols[c]
    return names, num, den


def summary_row(rows: pd.DataFrame, n_errors: int, n_boot: int, seed) -> dict:
    """The summary statistics of one group's quadrant rows (all columns but the keys)."""
    complete = rows[_bool(rows["complete"])] if len(rows) else rows
    names, num, den = ratio_inputs(complete)
    clusters = stats.cluster_codes(complete["patient_id"], complete["sample_id"])
    est, low, high = stats.bootstrap_ratios(num, den, clusters, n_boot, seed)
    out: dict = {
        "n": int(len(complete)),
        "n_incomplete": int(len(rows) - len(complete)),
        "n_errors": int(n_errors),
        "n_labelled": int(complete["correct"].notna().sum()) if len(complete) else 0,
    }
    with_ci = {f"frac_{q.lower()}" for q in QUADRANTS} | set(_RATE_CI) | {f"frac_{a}_reliant" for a in reliant_ablations(rows)}
    for i, name in enumerate(names):
        out[name] = float(est[i])
        if name in with_ci:
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(low[i]), float(high[i])
    dangerous = (complete["quadrant"] == "Dangerous").to_numpy() if len(complete) else np.zeros(0, bool)
    out["auroc_entropy_dangerous"] = stats.auroc(complete["entropy"].to_numpy(dtype=float), dangerous)
    out["auroc_abs_margin_dangerous"] = stats.auroc(-np.abs(complete["margin"].to_numpy(dtype=float)), dangerous)
    return out


def _groups(frame: pd.DataFrame, by_finding: bool) -> pd.core.groupby.DataFrameGroupBy:
    if by_finding:
        return frame[frame["finding"].notna()].groupby(KEYS, dropna=False, sort=True)
    return frame.groupby(KEYS[:2], dropna=False, sort=True)


def summary_table(quadrants: pd.DataFrame, errored: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Summary rows for all models. quadrants: rows with ``model``; errored: one row per
    (model, errored sample) with model, sample_id, dataset, finding."""
    used = [c for c in quadrants.columns if c in _USED or c.endswith("_reliant")]  # the group frames copy only these
    q = quadrants[used].assign(_kind="q")
    e = errored[["model", "sample_id", "dataset", "finding"]].assign(_kind="e")
    both = pd.concat([q, e], ignore_index=True) if len(e) else q
    both["model"] = both["model"].astype(object)
    records = []
    for by_finding in (False, True):  # one loop step per group (model x dataset[x finding])
        for key, group in _groups(both, by_finding):
            key = key if isinstance(key, tuple) else (key,)
            model, dataset = key[0], key[1]
            finding = key[2] if by_finding else None
            rows = group[group["_kind"] == "q"]
            n_err = int(group.loc[group["_kind"] == "e", "sample_id"].nunique())
            row = summary_row(rows, n_err, n_boot, stats.seed_for(seed, model, dataset, finding))
            records.append({"model": model, "dataset": dataset, "finding": finding, **row})
    columns = SUMMARY_COLUMNS + [c for c in EXTRA_COLUMNS if c not in SUMMARY_COLUMNS] + ablation_summary_columns(quadrants)
    table = pd.DataFrame.from_records(records, columns=columns)
    for col in ("n", "n_incomplete", "n_errors", "n_labelled"):
        table[col] = table[col].astype("int64")
    for col in KEYS:
        table[col] = table[col].astype(object).where(table[col].notna(), None)
    return table.reset_index(drop=True)


def paired_table(quadrants: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Paired comparisons of every two models on each dataset (same samples)."""
    out = []
    for dataset, per_ds in quadrants.groupby("dataset", dropna=False, sort=True):
        models = sorted(per_ds["model"].unique())
        for i, a in enumerate(models):
            for b in models[i + 1 :]:
                res = stats.paired_comparison(
                    per_ds[per_ds["model"] == a], per_ds[per_ds["model"] == b], n_boot, stats.seed_for(seed, a, b, dataset)
                )
                out.append({"dataset": None if pd.isna(dataset) else dataset, "model_a": a, "model_b": b, **res})
    return out


def to_arrow(table: pd.DataFrame):
    """The summary frame as an Arrow table with stable types (keys string, counts int64)."""
    import pyarrow as pa

    fields = []
    for col in table.columns:
        if col in KEYS:
            typ = pa.string()
        elif col in ("n", "n_incomplete", "n_errors", "n_labelled"):
            typ = pa.int64()
        else:
            typ = pa.float64()
        fields.append(pa.field(col, typ))
    schema = pa.schema(fields)
    arrays = [pa.array(table[f.name], type=f.type, from_pandas=True) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)
