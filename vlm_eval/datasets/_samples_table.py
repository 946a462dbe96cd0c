"""The run's samples table, built and written in bounded memory (issue 13, driver memory).

``load_samples`` returns a pandas frame with a Python object per cell and a prompt list
per sample; at archive scale (millions of samples) that frame, its Arrow copy and the
image-major sorted copy were the driver's peak. Here every column is held as codes
into its distinct values (an image's URI once for its 14 findings, a finding's prompt
list once), only ``sample_id`` as one Arrow string per sample. The image-major order
is computed on a narrow (image rank, sample_id) key, and the SAMPLES table is
materialised and written a chunk of row groups at a time.

The written table is identical to ``conform(load_samples(...).samples)`` sorted by
``pipeline.units.sort_image_major`` (rows, columns, values, order, row groups of
``row_group_rows``): tests/unit/datasets/test_samples_chunked.py compares the two.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vlm_eval.schema import SAMPLES, image_partition
from vlm_eval.values import is_missing

CHUNK_ROW_GROUPS = 16  # row groups materialised at once while writing


@dataclass
class _Coded:
    """A column as ``values.take(codes)``; code -1 is null."""

    codes: np.ndarray
    values: pa.Array

    def take(self, rows: np.ndarray) -> pa.Array:
        codes = self.codes[rows]
        return pc.take(self.values, pa.array(codes, mask=codes < 0))


def _clean(values: list) -> pa.Array:
    """``load_samples``' cell rule: missing (None, NaN, blank) -> null, else ``str(v)``."""
    return pa.array([None if is_missing(v) else str(v) for v in values], pa.string())


def _coded(series: pd.Series, rows: int = 1 << 16) -> _Coded:
    if isinstance(series.dtype, pd.CategoricalDtype):
        return _Coded(series.cat.codes.to_numpy().astype(np.int32), _clean(list(series.cat.categories)))
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow":
        arr = series.array.__arrow_array__()
    else:  # object or other dtypes: the Python rule, a slice at a time
        arr = pa.chunked_array([_clean(series.iloc[i:i + rows].tolist()) for i in range(0, len(series), rows)],
                               pa.string())
    enc = pc.dictionary_encode(arr.combine_chunks())
    codes = enc.indices.to_numpy(zero_copy_only=False)
    codes = np.where(pc.is_null(enc.indices).to_numpy(zero_copy_only=False), -1, codes).astype(np.int32)
    values = enc.dictionary.cast(pa.string())
    return _Coded(codes, _clean(values.to_pylist()))


def _plain(series: pd.Series) -> pa.Array:
    """A one-value-per-row string column (``sample_id``) under the same cell rule."""
    from vlm_eval.datasets import _missing_mask

    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow":
        arr = series.array.__arrow_array__().combine_chunks()  # large_string, as pandas holds it: no copy
        mask = _missing_mask(series)
        return pc.if_else(pa.array(mask), pa.scalar(None, arr.type), arr) if mask.any() else arr
    return _coded(series).take(np.arange(len(series)))


def image_major_order(uri: _Coded, sample_id: pa.Array) -> np.ndarray:
    """Row order of ``pipeline.units.sort_image_major`` ((partition of URI, URI,
    sample_id), nulls last, stable), computed on one rank per distinct URI."""
    values = pa.concat_arrays([uri.values, pa.nulls(1, pa.string())])  # the last entry stands for null
    parts = pa.array([image_partition(u or "") for u in values.to_pylist()], pa.string())
    order = pc.sort_indices(pa.table({"p": parts, "u": values}), sort_keys=[("p", "ascending"),
                                                                          ("u", "ascending")]).to_numpy()
    p_sorted, u_sorted = parts.take(order).to_pylist(), values.take(order).to_pylist()
    rank = np.empty(len(values), np.int64)
    r = -1
    for i, pos in enumerate(order):  # equal (partition, URI) entries share a rank
        if i == 0 or (p_sorted[i], u_sorted[i]) != (p_sorted[i - 1], u_sorted[i - 1]):
            r += 1
        rank[pos] = r
    codes = np.where(uri.codes < 0, len(values) - 1, uri.codes)
    keys = pa.table({"k": rank[codes], "s": sample_id})
    return pc.sort_indices(keys, sort_keys=[("k", "ascending"), ("s", "ascending")]).to_numpy()


@dataclass
class CompactSamples:
    """The samples of a run, compact; ``write_parquet`` writes the SAMPLES table."""

    num_rows: int
    sample_id: pa.Array
    columns: dict
    """Column name -> _Coded, for every SAMPLES column but sample_id."""
    errors: pd.DataFrame
    stats: dict

    @classmethod
    def build(cls, samples: pd.DataFrame, texts, errors: pd.DataFrame, stats: dict) -> "CompactSamples":
        from vlm_eval.datasets import _KEY

        n = len(samples)
        key = samples[_KEY].to_numpy().astype(np.int32)
        cols: dict[str, _Coded] = {}
        for f in SAMPLES:
            if f.name == "sample_id":
                continue
            if f.name == "prompts":
                cols[f.name] = _Coded(key, pa.array([list(map(str, p)) for p in texts.prompts], f.type))
            elif f.name in ("question", "question_id"):
                cols[f.name] = _Coded(key, _clean(texts.questions if f.name == "question" else texts.question_ids))
            elif f.name in samples:
                cols[f.name] = _coded(samples[f.name])
            else:
                cols[f.name] = _Coded(np.full(n, -1, np.int32), pa.array([], pa.string()))
        sid = _plain(samples["sample_id"]) if "sample_id" in samples else pa.nulls(n, pa.string())
        return cls(n, sid, cols, errors, stats)

    def write_parquet(self, sink, row_group_rows: int) -> None:
        """The SAMPLES table, image-major, ``row_group_rows`` rows per row group (zstd)."""
        import pyarrow.parquet as pq

        order = image_major_order(self.columns["image_uri"], self.sample_id)
        step = row_group_rows * CHUNK_ROW_GROUPS
        with pq.ParquetWriter(sink, SAMPLES, compression="zstd") as writer:
            for a in range(0, max(self.num_rows, 1), step):
                rows = order[a:a + step]
                cols = [self.sample_id.take(pa.array(rows)).cast(pa.string()) if f.name == "sample_id" else
                        self.columns[f.name].take(rows) for f in SAMPLES]
                writer.write_table(pa.Table.from_arrays(cols, schema=SAMPLES), row_group_size=row_group_rows)
