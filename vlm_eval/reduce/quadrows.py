"""Compact per-sample quadrant rows for the summary (issue 13.7): ``QuadRows`` holds what
``summary.summary_table``, ``summary.notes`` and ``summary.paired_table`` read of each
quadrant row as numpy arrays (codes, flags, floats) -- no string per sample -- and
``QuadRowsBuilder`` appends them a bucket and model at a time in ``reduce_run``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vlm_eval.reduce import stats
from vlm_eval.schema import QUADRANTS


def _is(series: pd.Series, value: bool) -> np.ndarray:
    """Where the value equals ``value`` (null: False; nullable dtypes too)."""
    return series.eq(value).fillna(False).to_numpy(dtype=bool)


def _bool(series: pd.Series) -> np.ndarray:
    return _is(series, True)


def _tri(series: pd.Series) -> np.ndarray:
    """int8 code of a nullable flag: -1 null, 1 == True, 0 == False, 2 any other value."""
    out = np.full(len(series), 2, dtype=np.int8)
    out[_is(series, False)] = 0
    out[_is(series, True)] = 1
    out[series.isna().to_numpy()] = -1
    return out


QUADRANT_CODE = {q: i for i, q in enumerate(QUADRANTS)}
DANGEROUS = QUADRANT_CODE["Dangerous"]


def _quadrant_codes(series: pd.Series) -> np.ndarray:
    """int8 code of a quadrant: its index in QUADRANTS, -1 null, -2 any other value."""
    missing = series.isna().to_numpy()
    values = series.astype(object).where(~missing, None).to_numpy()  # pd.NA would not compare
    out = np.where(missing, -1, -2).astype(np.int8)
    for q, i in QUADRANT_CODE.items():
        out[values == q] = i
    return out


def missing_key(value) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _factorize(values) -> tuple[np.ndarray, list]:
    """(int32 codes, values) with one ``None`` entry for every missing value."""
    codes, uniques = pd.factorize(values)
    vals = list(uniques)
    if (codes < 0).any():
        codes = np.where(codes < 0, len(vals), codes)
        vals.append(None)
    return codes.astype(np.int32), vals


def encode_values(values, vals: list) -> np.ndarray:
    """Codes of ``values`` in ``vals`` (extended in place by unseen values; missing -> None's code)."""
    index = {v: i for i, v in enumerate(vals) if not missing_key(v)}
    out = np.empty(len(values), dtype=np.int64)
    for j, v in enumerate(values):
        if missing_key(v):
            if None not in index:
                index[None] = len(vals)
                vals.append(None)
            out[j] = index[None]
        else:
            if v not in index:
                index[v] = len(vals)
                vals.append(v)
            out[j] = index[v]
    return out


def rank_of_codes(vals: list) -> np.ndarray:
    """Rank of each code in sorted order of its value, missing last (groupby(sort=True) order)."""
    present = sorted((i for i, v in enumerate(vals) if not missing_key(v)), key=lambda i: vals[i])
    rank = np.full(len(vals), len(present), dtype=np.int64)
    rank[present] = np.arange(len(present))
    return rank


def key_value(vals: list, code: int):
    v = vals[code]
    return float("nan") if missing_key(v) else v  # groupby's key for a missing value


class QuadRows:
    """Per-sample quadrant rows reduced to what the summary, its notes and the paired
    comparisons read, as numpy arrays: no string per sample.

    model/dataset/finding: codes into ``models``/``datasets``/``findings`` (None = missing);
    order: a sample's rank in sample_id order (stable); cluster: its bootstrap cluster
    (equal for two rows iff ``stats.cluster_codes`` gives them one cluster); complete (bool);
    quadrant (``_quadrant_codes``); correct, consistent and every ``reliant[A]`` (``_tri``);
    flips, n_variants, entropy, margin, agreement (float, NaN = null).
    """

    FIELDS = ("model", "dataset", "finding", "order", "cluster", "complete", "quadrant", "correct",
              "consistent", "flips", "n_variants", "entropy", "margin", "agreement")

    def __init__(self, models: list, datasets: list, findings: list, cols: dict[str, np.ndarray],
                 reliant: dict[str, np.ndarray]):
        self.models, self.datasets, self.findings = list(models), list(datasets), list(findings)
        for f in self.FIELDS:
            setattr(self, f, cols[f])
        self.reliant = reliant  # ablation -> codes, in column order

    def __len__(self) -> int:
        return len(self.complete)

    @staticmethod
    def measures(quad: pd.DataFrame, small: bool = False) -> dict[str, np.ndarray]:
        """The per-row measures of a quadrant frame (flips and n_variants as float32 where
        ``small``: small integers, exact)."""
        f = np.float32 if small else np.float64
        return {
            "complete": _bool(quad["complete"]),
            "quadrant": _quadrant_codes(quad["quadrant"]),
            "correct": _tri(quad["correct"]),
            "consistent": _tri(quad["consistent"]),
            "flips": quad["flips"].to_numpy(dtype=float).astype(f, copy=False),
            "n_variants": quad["n_variants"].to_numpy(dtype=float).astype(f, copy=False),
            "entropy": quad["entropy"].to_numpy(dtype=float),
            "margin": quad["margin"].to_numpy(dtype=float),
            "agreement": quad["ablation_agreement"].to_numpy(dtype=float),
        }

    @classmethod
    def from_frame(cls, quadrants: pd.DataFrame) -> "QuadRows":
        """A quadrant frame with ``model`` (any row order) as QuadRows."""
        model, models = _factorize(quadrants["model"].astype(object))
        dataset, datasets = _factorize(quadrants["dataset"])
        finding, findings = _factorize(quadrants["finding"])
        order = _sample_ranks(quadrants["sample_id"])  # a model's row and another's of one sample: one rank
        cols = {"model": model, "dataset": dataset, "finding": finding, "order": order,
                "cluster": stats.cluster_codes(quadrants["patient_id"], quadrants["sample_id"]),
                **cls.measures(quadrants)}
        reliant = {a: _tri(quadrants[f"{a}_reliant"]) for a in reliant_ablations(quadrants)}
        return cls(models, datasets, findings, cols, reliant)


# An empty builder's rows: the dtypes ``QuadRowsBuilder.add`` stores (order / cluster as given;
# int64 here, the widest ``tables.sample_keys`` gives).
_BUILT_DTYPE = {"model": np.int16, "dataset": np.int32, "finding": np.int32, "order": np.int64, "cluster": np.int64,
                "complete": np.bool_, "quadrant": np.int8, "correct": np.int8, "consistent": np.int8,
                "flips": np.float32, "n_variants": np.float32, "entropy": np.float64, "margin": np.float64,
                "agreement": np.float64}


class QuadRowsBuilder:
    """QuadRows appended a quadrant frame at a time (one per bucket and model), as compact
    arrays; ``rows()`` joins them once. Ablations missing from a frame are null there."""

    def __init__(self, models: list, datasets: list, findings: list):
        self.models, self.datasets, self.findings = models, datasets, findings
        self._parts: dict[str, list] = {f: [] for f in QuadRows.FIELDS}
        self._reliant: dict[str, list] = {}
        self._n = 0

    def add(self, model: int, quad: pd.DataFrame, *, dataset, finding, order, cluster) -> None:
        """quad: one model's quadrant rows; dataset/finding/order/cluster: their codes (per row)."""
        n = len(quad)
        cols = {"model": np.full(n, model, dtype=np.int16), "dataset": np.asarray(dataset),
                "finding": np.asarray(finding), "order": np.asarray(order), "cluster": np.asarray(cluster),
                **QuadRows.measures(quad, small=True)}
        for f, v in cols.items():
            assert len(v) == n, f
            self._parts[f].append(v)
        for a in reliant_ablations(quad):
            self._reliant.setdefault(a, []).append((self._n, _tri(quad[f"{a}_reliant"])))
        self._n += n

    def rows(self) -> QuadRows:
        cols = {}
        for f in QuadRows.FIELDS:  # one field joined at a time, its parts freed
            parts = self._parts.pop(f)
            cols[f] = np.concatenate(parts) if parts else np.zeros(0, dtype=_BUILT_DTYPE[f])
            del parts
        reliant = {}
        for a, parts in self._reliant.items():
            codes = np.full(self._n, -1, dtype=np.int8)
            for start, v in parts:
                codes[start:start + len(v)] = v
            reliant[a] = codes
        self._reliant = {}
        return QuadRows(self.models, self.datasets, self.findings, cols, reliant)


def reliant_ablations(quadrants) -> list[str]:
    """Extra ablations A with an ``A_reliant`` column in ``quadrants`` (column order)."""
    if isinstance(quadrants, QuadRows):
        return list(quadrants.reliant)
    return [c[: -len("_reliant")] for c in quadrants.columns if c.endswith("_reliant") and c != "image_reliant"]


def _sample_ids(sample_id: pd.Series) -> pa.Array:
    """sample_id as Arrow strings, null as "" (Arrow-backed strings without a Python object
    per row; object columns converted, NaN / None as null)."""
    return pc.fill_null(pa.array(sample_id, type=pa.string(), from_pandas=True), "")


def _sample_ranks(sample_id: pd.Series) -> np.ndarray:
    """Dense rank of each row's sample_id in sample_id order (null as ""): rows of one
    sample (e.g. of two models) share a rank, as ``tables.sample_keys`` gives them."""
    arr = _sample_ids(sample_id)
    idx = pc.sort_indices(arr).to_numpy().astype(np.int64)  # byte order of UTF-8 = code point order
    ids = arr.take(pa.array(idx))
    new = np.ones(len(ids), dtype=bool)
    if len(ids) > 1:
        new[1:] = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[idx] = np.cumsum(new) - 1
    return ranks

