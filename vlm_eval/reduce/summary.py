"""The summary table: one row per model x dataset (finding null) and per finding.

Columns: vlm_eval.schema.SUMMARY_COLUMNS, plus extras: ``_ci_low``/``_ci_high`` for
flip_rate_question, flip_rate_pair, accuracy and ablation_agreement; n_labelled;
mean_entropy; auroc_entropy_dangerous and auroc_abs_margin_dangerous.

Every extra ablation A of the run (quadrant column ``A_reliant``, see
``metrics.ablation_columns``) adds ``frac_A_reliant`` (+ ``_ci_low``/``_ci_high``):
the share of complete rows with ``A_reliant`` set whose answer changes under A
(e.g. ``frac_swap_reliant`` = swap sensitivity); rows where it is null are left out.

Fractions are over complete rows; quadrant shares and the question-level flip rate
over the complete rows where consistency is measured (two or more variants: a
single-variant sample has no consistency, so ``paraphrases: 0`` gives NaN = "not
measured", never 0 with CI [0, 0]; ``n_single_variant`` counts those rows). Mean
entropies leave out rows without an entropy (never counted as 0 bits). CIs are 95%
percentile intervals of a bootstrap that resamples patients (samples without a
patient_id, or with an empty one, are their own cluster); rows are put in sample_id
order first, so a CI does not depend on input row order; where the bootstrap
collapses to one point (0/n, n/n, a single cluster) the Wilson score interval of the
pooled counts is given instead. The seed of each row is derived from (seed, model,
dataset, finding), so a row's CI does not depend on which other rows exist.

AUROCs treat Dangerous as the positive class and score each complete sample with a
quadrant by its *lack* of confidence (``n_auroc_excluded`` counts rows without a
score, which the AUROC cannot rank): entropy, resp. -|margin| (a confidence screen flags the
least confident answers). 0.5 = the screen does no better than chance; below 0.5
= Dangerous answers are *more* confident than the rest. For a binary softmax
entropy is a decreasing function of |margin|, so the two agree up to ties
(entropy saturates at 0 bits for very large margins).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vlm_eval.reduce import stats
from vlm_eval.schema import QUADRANTS, SUMMARY_COLUMNS

KEYS = ["model", "dataset", "finding"]
_RATE_CI = ["flip_rate_question", "flip_rate_pair", "accuracy", "ablation_agreement"]
EXTRA_COLUMNS = (
    [f"{r}{s}" for r in _RATE_CI for s in ("_ci_low", "_ci_high")]
    + ["n_labelled", "mean_entropy", "auroc_entropy_dangerous", "auroc_abs_margin_dangerous",
       "n_auroc_excluded", "n_single_variant"]
)
COUNT_COLUMNS = ("n", "n_incomplete", "n_errors", "n_labelled", "n_auroc_excluded", "n_single_variant")

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


def ratio_inputs(complete: pd.DataFrame, codes: np.ndarray, n_clusters: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, num, den) of every ratio statistic over complete quadrant rows, summed per
    cluster (``codes``: cluster of each row, 0..n_clusters-1): (n_clusters, K) each.

    Each statistic's row vector is made and summed at once (``np.bincount``), so memory
    grows with the clusters, not with rows x statistics.
    """
    quad = complete["quadrant"].to_numpy(dtype=object)
    in_q = {q: (quad == q).astype(float) for q in QUADRANTS}
    ones = np.ones(len(complete))
    measured = complete["consistent"].notna().to_numpy().astype(float)  # >= 2 variants
    labelled = complete["correct"].notna().to_numpy().astype(float)
    correct = _bool(complete["correct"]).astype(float)
    n_var = complete["n_variants"].to_numpy(dtype=float)
    raw_entropy = complete["entropy"].to_numpy(dtype=float)
    has_entropy = ~np.isnan(raw_entropy)
    entropy = np.where(has_entropy, raw_entropy, 0.0)  # left out by its denominator, not counted as 0
    flips = np.nan_to_num(complete["flips"].to_numpy(dtype=float))  # null (one variant) has no pairs
    cols: dict[str, object] = {}
    for q in QUADRANTS:
        cols[f"frac_{q.lower()}"] = lambda q=q: (in_q[q], measured)
    cols["flip_rate_question"] = lambda: (complete["consistent"].eq(False).to_numpy().astype(float), measured)
    cols["flip_rate_pair"] = lambda: (flips, np.maximum(n_var - 1, 0))
    cols["accuracy"] = lambda: (correct, labelled)
    for q in QUADRANTS:
        cols[f"accuracy_{q.lower()}"] = lambda q=q: (correct * in_q[q], labelled * in_q[q])
    for q in QUADRANTS:
        cols[f"entropy_{q.lower()}"] = lambda q=q: (entropy * in_q[q], in_q[q] * has_entropy)
    cols["ablation_agreement"] = lambda: (np.nan_to_num(complete["ablation_agreement"].to_numpy(dtype=float)), ones)
    cols["mean_entropy"] = lambda: (entropy, has_entropy.astype(float))
    for a in reliant_ablations(complete):
        rel = complete[f"{a}_reliant"]
        cols[f"frac_{a}_reliant"] = lambda rel=rel: (_bool(rel).astype(float), rel.notna().to_numpy().astype(float))
    names = list(cols)
    num = np.zeros((n_clusters, len(names)))
    den = np.zeros((n_clusters, len(names)))
    for j, c in enumerate(names):  # one statistic's row vectors at a time
        n_j, d_j = cols[c]()
        num[:, j] = np.bincount(codes, weights=n_j, minlength=n_clusters)
        den[:, j] = np.bincount(codes, weights=d_j, minlength=n_clusters)
    return names, num, den


def _sample_order(sample_id: pd.Series) -> np.ndarray:
    """Stable order of rows by sample_id (null as ""); Arrow-backed strings are sorted by
    Arrow (byte order of UTF-8 = code point order) without a Python object per row."""
    dtype = sample_id.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        arr = pc.fill_null(pa.array(sample_id), "")
        return pc.sort_indices(arr).to_numpy().astype(np.int64)  # a stable sort
    return np.argsort(pd.Series(sample_id.to_numpy(dtype=object), dtype=object).fillna("").to_numpy(dtype=str),
                      kind="stable")


def summary_row(rows: pd.DataFrame, n_errors: int, n_boot: int, seed, pos: np.ndarray | None = None) -> dict:
    """The summary statistics of one group's quadrant rows (all columns but the keys).

    pos: the group's row positions in ``rows`` (None: all rows); only its complete rows
    are copied."""
    pos = np.arange(len(rows)) if pos is None else pos
    n_rows = len(pos)
    keep = pos[_bool(rows["complete"].take(pos))] if n_rows else np.zeros(0, np.int64)
    order = _sample_order(rows["sample_id"].take(keep)) if len(keep) else keep
    complete = rows.take(keep[order])  # in sample_id order: row order never changes a CI
    # clusters numbered by first appearance (bootstrap_ratios' order), summed per cluster first
    codes, uniques = pd.factorize(stats.cluster_codes(complete["patient_id"], complete["sample_id"]))
    names, num, den = ratio_inputs(complete, codes.astype(np.int64), len(uniques))
    est, low, high = stats.bootstrap_ratios(num, den, np.arange(len(uniques)), n_boot, seed)
    with_ci = {f"frac_{q.lower()}" for q in QUADRANTS} | set(_RATE_CI) | {f"frac_{a}_reliant" for a in reliant_ablations(rows)}
    low, high = _wilson_where_collapsed(names, with_ci, num.sum(0), den.sum(0), est, low, high)
    out: dict = {
        "n": int(len(complete)),
        "n_incomplete": int(n_rows - len(complete)),
        "n_errors": int(n_errors),
        "n_labelled": int(complete["correct"].notna().sum()) if len(complete) else 0,
    }
    for i, name in enumerate(names):
        out[name] = float(est[i])
        if name in with_ci:
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(low[i]), float(high[i])
    ranked = complete[complete["quadrant"].notna().to_numpy()] if len(complete) else complete
    dangerous = (ranked["quadrant"] == "Dangerous").to_numpy() if len(ranked) else np.zeros(0, bool)
    entropy = ranked["entropy"].to_numpy(dtype=float) if len(ranked) else np.zeros(0)
    m = ranked["margin"].to_numpy(dtype=float) if len(ranked) else np.zeros(0)
    out["auroc_entropy_dangerous"] = stats.auroc(entropy, dangerous)
    out["auroc_abs_margin_dangerous"] = stats.auroc(-np.abs(m), dangerous)
    out["n_auroc_excluded"] = int((np.isnan(entropy) | np.isnan(m)).sum())
    out["n_single_variant"] = int(complete["consistent"].isna().sum()) if len(complete) else 0
    return out


def _wilson_where_collapsed(names, with_ci, num_total, den_total, est, low, high):
    """(low, high) with the Wilson interval of the pooled counts wherever the bootstrap
    interval has no width (0/n, n/n, one cluster): a point is never a 95% interval."""
    low, high = low.copy(), high.copy()
    for i, name in enumerate(names):
        if name not in with_ci or np.isnan(est[i]):
            continue
        if np.isnan(low[i]) or high[i] - low[i] <= 1e-12:
            k, n = float(num_total[i]), float(den_total[i])
            w_low, w_high = stats.wilson_interval(min(k, n), n)
            low[i], high[i] = float(w_low), float(w_high)
    return low, high


def notes(quadrants: pd.DataFrame) -> list[str]:
    """Plain-language notes for summary.json: what was not measured, and why."""
    out = []
    if len(quadrants):
        complete = quadrants[_bool(quadrants["complete"])]
        single = complete[complete["consistent"].isna()]
        if len(single):
            share = len(single) / max(len(complete), 1)
            out.append(f"consistency not measured for {len(single)} complete samples ({share:.0%}) with a single "
                       "prompt variant (paraphrases: 0?): their consistent/flips/quadrant are null and they are "
                       "left out of quadrant shares and flip rates")
        ranked = complete[complete["quadrant"].notna()]
        unscored = int((ranked["entropy"].isna() | ranked["margin"].isna()).sum())
        if unscored:
            out.append(f"{unscored} complete samples have no entropy or margin: the AUROC columns leave them out "
                       "(n_auroc_excluded)")
    return out


def _group_positions(keys: pd.DataFrame, by_finding: bool):
    """(key tuple, row positions in ``keys``) per group in sorted key order (missing keys
    last, as ``groupby(sort=True, dropna=False)`` gives them), without copying any group."""
    cols = KEYS if by_finding else KEYS[:2]
    sel = np.flatnonzero(keys["finding"].notna().to_numpy()) if by_finding else np.arange(len(keys))
    if not len(sel):
        return
    g = keys.iloc[sel][cols].groupby(cols, dropna=False, sort=True)
    codes = g.ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=g.ngroups))])
    for i, key in enumerate(g.size().index):
        yield (key if isinstance(key, tuple) else (key,)), sel[order[bounds[i]:bounds[i + 1]]]


def summary_table(quadrants: pd.DataFrame, errored: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Summary rows for all models. quadrants: rows with ``model``; errored: one row per
    (model, errored sample) with model, sample_id, dataset, finding.

    Groups are read by row positions (one copy of a group's rows at a time), so memory
    stays near the size of ``quadrants`` at archive scale."""
    used = [c for c in quadrants.columns if c in _USED or c.endswith("_reliant")]
    q = quadrants[used]
    e = errored[["model", "sample_id", "dataset", "finding"]]
    keys = pd.concat([q[KEYS], e[KEYS]], ignore_index=True) if len(e) else q[KEYS].reset_index(drop=True)
    keys = keys.assign(model=keys["model"].astype(object))
    n_q = len(q)
    records = []
    for by_finding in (False, True):  # one loop step per group (model x dataset[x finding])
        for key, pos in _group_positions(keys, by_finding):
            model, dataset = key[0], key[1]
            finding = key[2] if by_finding else None
            n_err = int(e["sample_id"].take(pos[pos >= n_q] - n_q).nunique())
            row = summary_row(q, n_err, n_boot, stats.seed_for(seed, model, dataset, finding), pos=pos[pos < n_q])
            records.append({"model": model, "dataset": dataset, "finding": finding, **row})
    columns = SUMMARY_COLUMNS + [c for c in EXTRA_COLUMNS if c not in SUMMARY_COLUMNS] + ablation_summary_columns(quadrants)
    table = pd.DataFrame.from_records(records, columns=columns)
    for col in COUNT_COLUMNS:
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
        elif col in COUNT_COLUMNS:
            typ = pa.int64()
        else:
            typ = pa.float64()
        fields.append(pa.field(col, typ))
    schema = pa.schema(fields)
    arrays = [pa.array(table[f.name], type=f.type, from_pandas=True) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)
