"""Per-row arithmetic of the method: margin, prediction, entropy, and which rows are usable.

The bottom of the reducer: ``dense`` and ``metrics`` both import it, it imports neither
(no import circle).

A prediction row is *usable* when it has no error and its margin is a number:
both log-probabilities present, neither NaN nor +inf, and not both -inf (no mass on
either answer: the margin would be -inf - -inf = NaN). One answer at -inf is a
legitimate certainty (margin +-inf, entropy 0). A row marked by ``conflicting_rows``
is not usable either. Every unusable row has a reason (``row_problem``) that reaches
``incomplete_reason``: nothing becomes a silent 'no'.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

_LN2 = np.log(2.0)
PROBLEM = "_problem"  # optional column: why a row was set aside (see conflicting_rows)


def margin(logprob_yes, logprob_no) -> np.ndarray:
    """m = logprob_yes - logprob_no (NaN where both are -inf)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(logprob_yes, dtype=float) - np.asarray(logprob_no, dtype=float)


def prediction(m) -> np.ndarray:
    """'yes' where m > 0 else 'no' (a tie is 'no'); None where m is NaN."""
    m = np.asarray(m, dtype=float)
    out = np.where(m > 0, "yes", "no").astype(object)
    out[np.isnan(m)] = None
    return out


def entropy_bits(m) -> np.ndarray:
    """Binary entropy (bits) of softmax([lp_yes, lp_no]) = sigmoid(m); stable for any m."""
    m = np.asarray(m, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        log_p = -np.logaddexp(0.0, -m)
        log_q = -np.logaddexp(0.0, m)
        p, q = np.exp(log_p), np.exp(log_q)
        h = -(np.where(p > 0, p * log_p, 0.0) + np.where(q > 0, q * log_q, 0.0)) / _LN2
    return np.where(np.isnan(m), np.nan, np.clip(h, 0.0, 1.0))


def _logprobs(preds: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return (preds["logprob_yes"].to_numpy(dtype=float, na_value=np.nan),
            preds["logprob_no"].to_numpy(dtype=float, na_value=np.nan))


def finite_margin(ly: np.ndarray, ln: np.ndarray) -> np.ndarray:
    """True where lp_yes - lp_no is a number: no NaN/null, no +inf, not both -inf."""
    with np.errstate(invalid="ignore"):
        return ~np.isnan(ly - ln) & (ly < np.inf) & (ln < np.inf)


def usable(preds: pd.DataFrame) -> pd.Series:
    """True where a prediction row has no error, no ``_problem`` and a numeric margin."""
    ly, ln = _logprobs(preds)
    ok = preds["error"].isna().to_numpy() & finite_margin(ly, ln)
    if PROBLEM in preds:
        ok &= preds[PROBLEM].isna().to_numpy()
    return pd.Series(ok, index=preds.index)


def _missing(v) -> bool:
    """Null or NaN (not ``values.is_missing``: an empty error string is still an error)."""
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))


def row_problem(error, ly, ln, problem=None) -> tuple[str, str]:
    """(kind, text) of why one row is not usable: ('engine error', message) or
    ('unusable prediction', what is wrong with its log-probabilities)."""
    if not _missing(problem):
        return "unusable prediction", str(problem)
    if not _missing(error):
        return "engine error", str(error)
    ly = np.nan if _missing(ly) else float(ly)
    ln = np.nan if _missing(ln) else float(ln)
    if np.isnan(ly) or np.isnan(ln):  # null and NaN read alike
        return "unusable prediction", "missing or NaN log-probability"
    if ly == ln == -np.inf:
        return "unusable prediction", "log-probability -inf for both answers"
    return "unusable prediction", "a +inf log-probability"


def row_problems(preds: pd.DataFrame, rows) -> list[tuple[str, str]]:
    """``row_problem`` of each row position in ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    err = preds["error"].take(rows).astype(object).tolist()
    ly = preds["logprob_yes"].take(rows).astype(object).tolist()
    ln = preds["logprob_no"].take(rows).astype(object).tolist()
    prob = preds[PROBLEM].take(rows).astype(object).tolist() if PROBLEM in preds else [None] * len(rows)
    return [row_problem(*t) for t in zip(err, ly, ln, prob)]


def conflicting_rows(preds: pd.DataFrame) -> pd.DataFrame:
    """``preds`` where two or more sample-specific rows share (model, sample_id, variant,
    condition) -- after dedup they differ in prompt_id, so which prompt the variant was is
    ambiguous -- collapsed to their first row (prompt_id order), marked unusable with a
    ``_problem`` naming the prompt_ids. Unchanged (no copy) when there is none."""
    own = preds["sample_id"].notna().to_numpy() & preds["variant"].notna().to_numpy()
    if own.sum() < 2:
        return preds
    cols = [c for c in ("model", "sample_id", "condition") if c in preds]
    keys = [pd.factorize(preds[c])[0].astype(np.int64) for c in cols]
    keys.append(preds["variant"].astype("Int64").to_numpy(dtype=np.int64, na_value=-1))
    rows = np.flatnonzero(own)
    combined = np.zeros(len(rows), dtype=np.int64)
    for k in keys:  # a mixed-radix code of the key columns
        col = k[rows]
        combined = combined * (int(col.max()) + 2) + col + 1
    uniq, inverse, counts = np.unique(combined, return_inverse=True, return_counts=True)
    if not (counts > 1).any():
        return preds
    dup = rows[counts[inverse] > 1]
    groups: dict[int, list[int]] = {}
    for r, g in zip(dup.tolist(), inverse[counts[inverse] > 1].tolist()):
        groups.setdefault(g, []).append(r)
    out = preds.copy()
    if PROBLEM not in out:
        out[PROBLEM] = pd.Series([None] * len(out), index=out.index, dtype=object)
    drop = []
    for members in groups.values():  # only the conflicting cells (few)
        pids = out["prompt_id"].take(members).astype(object)
        order = sorted(range(len(members)), key=lambda i: (_missing(pids.iloc[i]), str(pids.iloc[i])))
        keep = members[order[0]]
        names = ", ".join(sorted({"null" if _missing(p) else str(p) for p in pids}))
        variant = out["variant"].iloc[keep]
        out.iloc[keep, out.columns.get_loc(PROBLEM)] = (
            f"{len(members)} {out['condition'].iloc[keep]} predictions for variant {variant} "
            f"with different prompt_ids ({names}): ambiguous")
        drop += [members[i] for i in order[1:]]
    return out.drop(index=out.index[drop]).reset_index(drop=True)
