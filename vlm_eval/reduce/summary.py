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

from collections.abc import Callable

import numpy as np
import pandas as pd

from vlm_eval.reduce import stats
from vlm_eval.reduce.quadrows import (
    DANGEROUS,
    QUADRANT_CODE,
    QuadRows,
    encode_values,
    key_value,
    missing_key,
    rank_of_codes,
    reliant_ablations,
)
from vlm_eval.schema import QUADRANTS, SUMMARY_COLUMNS

KEYS = ["model", "dataset", "finding"]
_RATE_CI = ["flip_rate_question", "flip_rate_pair", "accuracy", "ablation_agreement"]
EXTRA_COLUMNS = (
    [f"{r}{s}" for r in _RATE_CI for s in ("_ci_low", "_ci_high")]
    + ["n_labelled", "mean_entropy", "auroc_entropy_dangerous", "auroc_abs_margin_dangerous",
       "n_auroc_excluded", "n_single_variant"]
)
COUNT_COLUMNS = ("n", "n_incomplete", "n_errors", "n_labelled", "n_auroc_excluded", "n_single_variant")


def ablation_summary_columns(quadrants) -> list[str]:
    """``frac_A_reliant`` and its CI columns for every extra ablation A."""
    return [f"frac_{a}_reliant{s}" for a in reliant_ablations(quadrants) for s in ("", "_ci_low", "_ci_high")]


def ratio_inputs(rows: QuadRows, idx: np.ndarray, codes: np.ndarray, n_clusters: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, num, den) of every ratio statistic over the complete rows ``idx`` of ``rows``,
    summed per cluster (``codes``: cluster of each row, 0..n_clusters-1): (n_clusters, K) each.

    Each statistic's row vectors are made and summed at once (``np.bincount``), so memory
    grows with the clusters, not with rows x statistics.
    """
    quad = rows.quadrant[idx]
    consistent = rows.consistent[idx]
    correct_code = rows.correct[idx]
    labelled = (correct_code != -1).astype(float)
    correct = (correct_code == 1).astype(float)
    del correct_code
    raw_entropy = rows.entropy[idx]
    has_entropy = ~np.isnan(raw_entropy)
    entropy = np.where(has_entropy, raw_entropy, 0.0)  # left out by its denominator, not counted as 0
    del raw_entropy

    def in_q(q: str) -> np.ndarray:
        return (quad == QUADRANT_CODE[q]).astype(float)

    def measured() -> np.ndarray:  # consistency measured: >= 2 variants
        return (consistent != -1).astype(float)

    # each statistic's (num, den) is made only when it is summed (one at a time, below)
    cols: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {}
    for q in QUADRANTS:
        cols[f"frac_{q.lower()}"] = lambda q=q: (in_q(q), measured())
    cols["flip_rate_question"] = lambda: ((consistent == 0).astype(float), measured())
    cols["flip_rate_pair"] = lambda: (np.nan_to_num(rows.flips[idx].astype(float)),  # null (one variant): no pairs
                                      np.maximum(rows.n_variants[idx].astype(float) - 1, 0))
    cols["accuracy"] = lambda: (correct, labelled)
    for q in QUADRANTS:
        cols[f"accuracy_{q.lower()}"] = lambda q=q: _within(correct, labelled, in_q(q))
    for q in QUADRANTS:
        cols[f"entropy_{q.lower()}"] = lambda q=q: _within(entropy, has_entropy, in_q(q))
    cols["ablation_agreement"] = lambda: (np.nan_to_num(rows.agreement[idx]), np.ones(len(idx)))
    cols["mean_entropy"] = lambda: (entropy, has_entropy.astype(float))
    for a in reliant_ablations(rows):
        cols[f"frac_{a}_reliant"] = lambda a=a: _flag_share(rows.reliant[a][idx])
    names = list(cols)
    num = np.zeros((n_clusters, len(names)))
    den = np.zeros((n_clusters, len(names)))
    for j, c in enumerate(names):  # one statistic's row vectors at a time
        n_j, d_j = cols[c]()
        num[:, j] = np.bincount(codes, weights=n_j, minlength=n_clusters)
        den[:, j] = np.bincount(codes, weights=d_j, minlength=n_clusters)
    return names, num, den


def _within(num: np.ndarray, den: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A ratio restricted to the rows of ``mask`` (e.g. accuracy among Dangerous rows)."""
    return num * mask, mask * den


def _flag_share(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of rows whose flag is set, among rows where it is not null (``quadrows._tri`` codes)."""
    return (codes == 1).astype(float), (codes != -1).astype(float)


def summary_row(rows: QuadRows, n_errors: int, n_boot: int, seed, pos: np.ndarray | None = None) -> dict:
    """The summary statistics of one group's quadrant rows (all columns but the keys).

    pos: the group's row positions in ``rows`` (None: all rows); nothing but the arrays
    each statistic reads is gathered."""
    pos = np.arange(len(rows)) if pos is None else pos
    n_rows = len(pos)
    keep = pos[rows.complete[pos]]
    idx = keep[np.argsort(rows.order[keep], kind="stable")]  # in sample_id order: row order never changes a CI
    del keep
    # clusters numbered by first appearance (bootstrap_ratios' order), summed per cluster first
    codes, uniques = pd.factorize(rows.cluster[idx])
    names, num, den = ratio_inputs(rows, idx, codes.astype(np.int64, copy=False), len(uniques))
    del codes
    est, low, high = stats.bootstrap_ratios(num, den, np.arange(len(uniques)), n_boot, seed)
    with_ci = {f"frac_{q.lower()}" for q in QUADRANTS} | set(_RATE_CI) | {f"frac_{a}_reliant" for a in reliant_ablations(rows)}
    low, high = _wilson_where_collapsed(names, with_ci, num.sum(0), den.sum(0), est, low, high)
    quad = rows.quadrant[idx]
    out: dict = {
        "n": int(len(idx)),
        "n_incomplete": int(n_rows - len(idx)),
        "n_errors": int(n_errors),
        "n_labelled": int((rows.correct[idx] != -1).sum()),
    }
    for i, name in enumerate(names):
        out[name] = float(est[i])
        if name in with_ci:
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(low[i]), float(high[i])
    ranked = idx[quad != -1]
    dangerous = quad[quad != -1] == DANGEROUS
    entropy = rows.entropy[ranked]
    m = rows.margin[ranked]
    out["auroc_entropy_dangerous"] = stats.auroc(entropy, dangerous)
    out["auroc_abs_margin_dangerous"] = stats.auroc(-np.abs(m), dangerous)
    out["n_auroc_excluded"] = int((np.isnan(entropy) | np.isnan(m)).sum())
    out["n_single_variant"] = int((rows.consistent[idx] == -1).sum())
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


def _rows(quadrants) -> QuadRows:
    return quadrants if isinstance(quadrants, QuadRows) else QuadRows.from_frame(quadrants)


def notes(quadrants) -> list[str]:
    """Plain-language notes for summary.json: what was not measured, and why.
    quadrants: a quadrant frame with ``model`` or QuadRows."""
    out = []
    rows = _rows(quadrants)
    if len(rows):
        complete = rows.complete
        n_complete = int(complete.sum())
        n_single = int((complete & (rows.consistent == -1)).sum())
        if n_single:
            share = n_single / max(n_complete, 1)
            out.append(f"consistency not measured for {n_single} complete samples ({share:.0%}) with a single "
                       "prompt variant (paraphrases: 0?): their consistent/flips/quadrant are null and they are "
                       "left out of quadrant shares and flip rates")
        ranked = complete & (rows.quadrant != -1)
        unscored = int((ranked & (np.isnan(rows.entropy) | np.isnan(rows.margin))).sum())
        if unscored:
            out.append(f"{unscored} complete samples have no entropy or margin: the AUROC columns leave them out "
                       "(n_auroc_excluded)")
    return out


def _group_positions(model: np.ndarray, dataset: np.ndarray, finding: np.ndarray, ranks, missing_finding: int | None,
                     by_finding: bool):
    """(codes of the group's first row, row positions) per group in sorted key order (missing
    keys last, as ``groupby(sort=True, dropna=False)`` gives them), without copying any group."""
    m_rank, d_rank, f_rank = ranks
    sel = np.flatnonzero(finding != missing_finding) if by_finding else None
    if sel is not None and not len(sel):
        return
    key = m_rank[model if sel is None else model[sel]] * len(d_rank) + d_rank[dataset if sel is None else dataset[sel]]
    if by_finding:
        key = key * len(f_rank) + f_rank[finding[sel]]
    order = np.argsort(key, kind="stable")  # by group, rows in their order within one
    key = key[order]
    bounds = np.concatenate([[0], np.flatnonzero(key[1:] != key[:-1]) + 1, [len(key)]]) if len(key) else [0]
    del key
    for i in range(len(bounds) - 1):
        chunk = order[bounds[i]:bounds[i + 1]]
        yield chunk if sel is None else sel[chunk]


def summary_table(quadrants, errored: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Summary rows for all models. quadrants: a quadrant frame with ``model`` (or QuadRows);
    errored: one row per (model, errored sample) with model, sample_id, dataset, finding.

    Groups are read by row positions, and a group's statistics from the compact rows, so
    memory stays near the size of QuadRows at archive scale."""
    rows = _rows(quadrants)
    e = errored[["model", "sample_id", "dataset", "finding"]]
    models, datasets, findings = list(rows.models), list(rows.datasets), list(rows.findings)
    model = np.concatenate([rows.model.astype(np.int64), encode_values(e["model"].astype(object).to_numpy(), models)])
    dataset = np.concatenate([rows.dataset.astype(np.int64), encode_values(e["dataset"].to_numpy(dtype=object), datasets)])
    finding = np.concatenate([rows.finding.astype(np.int64), encode_values(e["finding"].to_numpy(dtype=object), findings)])
    ranks = (rank_of_codes(models), rank_of_codes(datasets), rank_of_codes(findings))
    missing_finding = next((i for i, v in enumerate(findings) if missing_key(v)), -1)
    n_q = len(rows)
    records = []
    for by_finding in (False, True):  # one loop step per group (model x dataset[x finding])
        for pos in _group_positions(model, dataset, finding, ranks, missing_finding, by_finding):
            first = pos[0]
            key_model, key_dataset = key_value(models, model[first]), key_value(datasets, dataset[first])
            key_finding = key_value(findings, finding[first]) if by_finding else None
            n_err = int(e["sample_id"].take(pos[pos >= n_q] - n_q).nunique())
            row = summary_row(rows, n_err, n_boot, stats.seed_for(seed, key_model, key_dataset, key_finding),
                              pos=pos[pos < n_q])
            records.append({"model": key_model, "dataset": key_dataset, "finding": key_finding, **row})
    columns = SUMMARY_COLUMNS + [c for c in EXTRA_COLUMNS if c not in SUMMARY_COLUMNS] + ablation_summary_columns(rows)
    table = pd.DataFrame.from_records(records, columns=columns)
    for col in COUNT_COLUMNS:
        table[col] = table[col].astype("int64")
    for col in KEYS:
        table[col] = table[col].astype(object).where(table[col].notna(), None)
    return table.reset_index(drop=True)


def _paired_frame(rows: QuadRows, sel: np.ndarray) -> pd.DataFrame:
    """The columns ``stats.paired_comparison`` reads, for rows ``sel``: sample_id = its rank
    in sample_id order (same sample, same rank), patient_id = its cluster."""
    quad = rows.quadrant[sel]
    names = np.array(list(QUADRANTS) + ["?", None], dtype=object)  # -2 other, -1 null
    cons = np.array([False, True, "?", None], dtype=object)[np.where(rows.consistent[sel] < 0, 3, rows.consistent[sel])]
    return pd.DataFrame({"sample_id": rows.order[sel].astype(np.int64), "patient_id": rows.cluster[sel].astype(str),
                         "complete": rows.complete[sel], "quadrant": names[quad], "consistent": cons})


def paired_table(quadrants, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Paired comparisons of every two models on each dataset (same samples).
    quadrants: a quadrant frame with ``model``, or QuadRows."""
    out = []
    if isinstance(quadrants, QuadRows):
        rows = quadrants
        d_rank = rank_of_codes(rows.datasets)
        for d in sorted(np.unique(rows.dataset).tolist(), key=lambda c: d_rank[c]):
            in_ds = rows.dataset == d
            codes = np.unique(rows.model[in_ds]).tolist()
            if len(codes) < 2:
                continue
            dataset = key_value(rows.datasets, d)
            models = sorted((rows.models[c], c) for c in codes)
            for i, (a, ca) in enumerate(models):
                for b, cb in models[i + 1:]:
                    fa = _paired_frame(rows, np.flatnonzero(in_ds & (rows.model == ca)))
                    fb = _paired_frame(rows, np.flatnonzero(in_ds & (rows.model == cb)))
                    res = stats.paired_comparison(fa, fb, n_boot, stats.seed_for(seed, a, b, dataset))
                    out.append({"dataset": None if missing_key(dataset) else dataset, "model_a": a, "model_b": b, **res})
        return out
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
