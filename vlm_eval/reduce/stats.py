"""Statistics users can trust: cluster bootstrap CIs, Wilson, paired tests, AUROC, Pearson.

All numpy, no scipy. The bootstrap resamples *clusters* (patients when patient_id is
known, else single samples) with replacement; a resample is a vector of per-cluster
multiplicities (bincount of uniform draws), so all resamples of a chunk are one
matrix product ``W @ per_cluster_sums``, never a Python loop over resamples.
Intervals are percentile intervals of the resampled ratio estimator.
"""
from __future__ import annotations

import math
import zlib
from statistics import NormalDist

import numpy as np
import pandas as pd

_CHUNK_CELLS = 4_000_000  # resamples x clusters per chunk (memory bound, ~32 MB)


def seed_for(seed: int, *key: object) -> np.random.SeedSequence:
    """A seed sequence for (seed, key): reproducible and independent of call order."""
    return np.random.SeedSequence([int(seed), zlib.crc32(repr(key).encode())])


def cluster_codes(patient_id, sample_id) -> np.ndarray:
    """Integer cluster per row: its patient when known, else its own sample.

    An empty or blank patient_id is unknown (else every such sample would form one giant
    cluster)."""
    pid = pd.Series(np.asarray(patient_id, dtype=object))
    # The codes of factorize(sort=True) on the keys "p:<patient>" / "s:<sample>", without
    # building them: every "p:" key sorts before every "s:" key, and within a prefix the
    # order is that of the ids themselves.
    has = pid.notna().to_numpy().copy()
    if has.any():
        has[has] = pid[has].astype(str).str.strip().ne("").to_numpy()
    p_codes, p_uniques = pd.factorize(pid[has].astype(str), sort=True)
    # only the ids without a patient become Python strings
    sid = sample_id[~has] if isinstance(sample_id, pd.Series) else np.asarray(sample_id, dtype=object)[~has]
    s_codes, _ = pd.factorize(pd.Series(np.asarray(sid, dtype=object)).astype(str), sort=True)
    codes = np.empty(len(pid), dtype=np.int64)
    codes[has] = p_codes
    codes[~has] = np.where(s_codes >= 0, s_codes + len(p_uniques), -1)
    return codes


def bootstrap_weights(n_clusters: int, n_boot: int, rng: np.random.Generator, out: np.ndarray | None = None) -> np.ndarray:
    """(n_boot, n_clusters) multiplicities of clusters drawn with replacement, as float64.

    One resample at a time into ``out`` (reused across chunks): the draws are those of one
    ``rng.integers(size=(n_boot, n_clusters))`` call (the same stream, row by row), but no
    chunk-sized temporary is allocated, touched for the first time and freed per chunk
    (page faults were most of the bootstrap's time at archive scale)."""
    if out is not None and (out.shape[0] < n_boot or out.shape[1:] != (n_clusters,) or out.dtype != np.float64):
        raise ValueError(f"out must be float64 with >= {n_boot} rows of {n_clusters}, not {out.dtype} {out.shape}")
    w = np.empty((n_boot, n_clusters)) if out is None else out[:n_boot]
    dtype = np.int32 if n_clusters < 2**31 else np.int64
    for b in range(n_boot):
        w[b] = np.bincount(rng.integers(0, n_clusters, size=n_clusters, dtype=dtype), minlength=n_clusters)
    return w


def _distinct_columns(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct columns of ``m``, byte for byte, contiguous; for each column of ``m``
    its index among them): ``m == distinct[:, back]``."""
    seen: dict[bytes, int] = {}  # column bytes -> index among the distinct ones
    first: list[int] = []  # the first column of each distinct one
    back = np.empty(m.shape[1], dtype=np.int64)
    for j in range(m.shape[1]):
        key = m[:, j].tobytes()
        if key not in seen:
            seen[key] = len(first)
            first.append(j)
        back[j] = seen[key]
    return np.ascontiguousarray(m[:, first]), back


def bootstrap_ratios(num, den, clusters, n_boot: int = 1000, seed=0, level: float = 0.95):
    """Point estimates and percentile CIs of K ratio statistics sum(num)/sum(den).

    num, den: (n, K) per-row numerators/denominators (a share: num = indicator,
    den = 1 or "row counts"); clusters: (n,) integer codes. Returns
    (estimate, low, high), each shape (K,); NaN where the denominator is 0.
    """
    num = np.atleast_2d(np.asarray(num, dtype=float).T).T
    den = np.atleast_2d(np.asarray(den, dtype=float).T).T
    k = num.shape[1]
    nan = np.full(k, np.nan)
    if num.shape[0] == 0:
        return nan, nan.copy(), nan.copy()
    codes, _ = pd.factorize(np.asarray(clusters))
    n_clusters = int(codes.max()) + 1
    num_c = np.stack([np.bincount(codes, weights=num[:, j], minlength=n_clusters) for j in range(k)], 1)
    den_c = np.stack([np.bincount(codes, weights=den[:, j], minlength=n_clusters) for j in range(k)], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.where(den_c.sum(0) > 0, num_c.sum(0) / den_c.sum(0), np.nan)
    if n_boot <= 0:
        return est, nan, nan.copy()
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _CHUNK_CELLS // n_clusters))
    # one product per chunk over the distinct per-cluster columns (denominators repeat:
    # every quadrant share has the same one), mapped back to (num, den) columns after
    both, back = _distinct_columns(np.concatenate([num_c, den_c], 1))
    buf = np.empty((chunk, n_clusters))
    reps = np.empty((n_boot, k))
    for start in range(0, n_boot, chunk):  # chunks of resamples, bounded memory
        w = bootstrap_weights(n_clusters, min(chunk, n_boot - start), rng, buf)
        sums = (w @ both)[:, back]
        rn, rd = sums[:, :k], sums[:, k:]
        with np.errstate(invalid="ignore", divide="ignore"):
            reps[start:start + len(w)] = np.where(rd > 0, rn / np.where(rd > 0, rd, 1.0), np.nan)
    alpha = (1.0 - level) / 2.0
    low, high = np.full(k, np.nan), np.full(k, np.nan)
    ok = ~np.isnan(est) & (np.isfinite(reps).sum(0) > 0)
    if ok.any():
        sub = reps[:, ok]
        quantile = np.nanquantile if np.isnan(sub).any() else np.quantile
        low[ok], high[ok] = quantile(sub, [alpha, 1.0 - alpha], axis=0)
    return est, low, high


def wilson_interval(k, n, level: float = 0.95):
    """Wilson score interval for k successes of n (vectorised); NaN where n == 0."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.where(n > 0, centre - half, np.nan), np.where(n > 0, centre + half, np.nan)


def _binom_half_pmf(n: int) -> np.ndarray:
    """P(X = i), i = 0..n, X ~ Binomial(n, 1/2), computed in log space."""
    i = np.arange(n + 1)
    lg = np.vectorize(math.lgamma)
    return np.exp(lg(n + 1) - lg(i + 1) - lg(n - i + 1) - n * math.log(2.0))


def mcnemar(b: int, c: int) -> dict:
    """McNemar test on discordant counts b (yes/no) and c (no/yes).

    p_exact = two-sided exact binomial p (min(1, 2 P(X <= min(b, c))));
    p_midp = 2 [P(X <= k) - P(X = k) / 2], the mid-p variant; statistic =
    (|b - c| - 1)^2 / (b + c) with continuity correction (NaN when b + c = 0).
    """
    b, c = int(b), int(c)
    n, k = b + c, min(b, c)
    if n == 0:
        return {"b": b, "c": c, "statistic": float("nan"), "p_exact": 1.0, "p_midp": 1.0}
    pmf = _binom_half_pmf(n)
    cdf = float(pmf[: k + 1].sum())
    return {
        "b": b,
        "c": c,
        "statistic": max(abs(b - c) - 1, 0) ** 2 / n,
        "p_exact": min(1.0, 2.0 * cdf),
        "p_midp": min(1.0, 2.0 * (cdf - 0.5 * float(pmf[k]))),
    }


def average_ranks(x) -> np.ndarray:
    """1-based ranks with ties sharing their average rank."""
    x = np.asarray(x, dtype=float)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def auroc(scores, positive) -> float:
    """P(score of a positive > score of a negative) + ties/2 (Mann-Whitney); NaN if a class is empty."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(positive, dtype=bool)
    keep = ~np.isnan(s)
    s, y = s[keep], y[keep]
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = average_ranks(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def pearson_r(x, y) -> tuple[float, int]:
    """(Pearson r, n) over pairs where both are finite; r NaN if n < 3 or no variance."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(keep.sum())
    if n < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan"), n
    return float(np.corrcoef(x, y)[0, 1]), n


def flip_vs_dangerous(summary: pd.DataFrame) -> dict:
    """Pearson r of flip rate (question and pair level) vs Dangerous share across the
    model x dataset configurations (rows with finding null) of one or more summaries."""
    rows = summary[summary["finding"].isna() & (summary["n"] > 0)]
    r_q, n = pearson_r(rows["flip_rate_question"], rows["frac_dangerous"])
    r_p, _ = pearson_r(rows["flip_rate_pair"], rows["frac_dangerous"])
    return {"r_question": r_q, "r_pair": r_p, "n": n}


def paired_comparison(a: pd.DataFrame, b: pd.DataFrame, n_boot: int = 1000, seed=0) -> dict:
    """Model A vs B on the samples complete, with a quadrant, in both (quadrant tables, joined on sample_id).

    diff_dangerous = share Dangerous under A - under B, with a patient-clustered
    bootstrap 95% CI; McNemar on flips: b = samples inconsistent under A only,
    c = inconsistent under B only. Also McNemar on Dangerous membership.
    """
    cols = ["sample_id", "patient_id", "quadrant", "consistent"]
    # complete with a quadrant (consistency measured: a single-variant sample is not "inconsistent")
    ca = a.loc[a["complete"].eq(True) & a["quadrant"].notna(), cols]
    cb = b.loc[b["complete"].eq(True) & b["quadrant"].notna(), ["sample_id", "quadrant", "consistent"]]
    j = ca.merge(cb, on="sample_id", suffixes=("_a", "_b")).sort_values("sample_id", kind="mergesort")  # order-free CI
    da = (j["quadrant_a"] == "Dangerous").to_numpy()
    db = (j["quadrant_b"] == "Dangerous").to_numpy()
    fa = ~j["consistent_a"].eq(True).to_numpy()
    fb = ~j["consistent_b"].eq(True).to_numpy()
    clusters = cluster_codes(j["patient_id"], j["sample_id"])
    num = np.stack([da.astype(float) - db, da, db], 1)
    est, low, high = bootstrap_ratios(num, np.ones_like(num), clusters, n_boot, seed)
    flips = mcnemar(int((fa & ~fb).sum()), int((~fa & fb).sum()))
    dang = mcnemar(int((da & ~db).sum()), int((~da & db).sum()))
    return {
        "n": int(len(j)),
        "frac_dangerous_a": float(est[1]),
        "frac_dangerous_b": float(est[2]),
        "diff_dangerous": float(est[0]),
        "diff_dangerous_ci_low": float(low[0]),
        "diff_dangerous_ci_high": float(high[0]),
        "flips_a_only": flips["b"],
        "flips_b_only": flips["c"],
        "mcnemar_flips_p_exact": flips["p_exact"],
        "mcnemar_flips_p_midp": flips["p_midp"],
        "dangerous_a_only": dang["b"],
        "dangerous_b_only": dang["c"],
        "mcnemar_dangerous_p_exact": dang["p_exact"],
        "mcnemar_dangerous_p_midp": dang["p_midp"],
    }
