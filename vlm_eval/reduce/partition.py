"""Predictions split into buckets of samples, so the reducer's memory stays bounded.

A sample's bucket is a hash of its sample_id modulo K (``bucket_of``): every row of a
sample -- all models, variants and conditions -- lands in the same bucket, so each
bucket reduces on its own to exactly the rows today's one-pass reduce would give its
samples. Rows stored once per prompt_id (sample_id null, e.g. ``text_only``) belong to
every bucket: they are kept apart (few) and deduplicated once.

One pass reads each checked shard (``files``) and appends its rows to one Arrow IPC
file per bucket in a local temp folder; then buckets are read back one at a time.
With K = 1 nothing is spilled: the tables stay in memory as before.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vlm_eval.reduce import files

ROWS_PER_BUCKET = 1_500_000  # prediction rows per bucket (~1 GB peak while one is reduced)
# what a shard becomes once read (files.read_file + files.with_keys): every bucket has this schema
READ_SCHEMA = pa.schema([pa.field("model", pa.string()), *files.PREDICTION_READ])


def n_buckets(total_rows: int, rows_per_bucket: int = ROWS_PER_BUCKET) -> int:
    """How many buckets for ``total_rows`` prediction rows (1 for small runs)."""
    return max(1, math.ceil(total_rows / max(rows_per_bucket, 1)))


def bucket_of(sample_ids, k: int) -> np.ndarray:
    """Bucket (0..k-1) of each sample_id, -1 for null; the same id always gets the same bucket.

    Only the distinct ids are hashed (``pandas.util.hash_array``, a keyed SipHash that
    does not vary between processes).
    """
    arr = sample_ids if isinstance(sample_ids, (pa.Array, pa.ChunkedArray)) else pa.array(
        np.asarray(sample_ids, dtype=object), pa.string(), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if k <= 1:
        return np.where(arr.is_null().to_numpy(zero_copy_only=False), -1, 0).astype(np.int64) if n else np.zeros(0, np.int64)
    enc = pc.dictionary_encode(arr)
    uniques = enc.dictionary.to_numpy(zero_copy_only=False).astype(object, copy=False)
    # already distinct: categorize=False skips hash_array's own factorize (the same hashes)
    hashed = (pd.util.hash_array(uniques, categorize=False) % np.uint64(k)).astype(np.int64) if len(uniques) else np.zeros(0, np.int64)
    idx = enc.indices.to_numpy(zero_copy_only=False)
    valid = ~enc.indices.is_null().to_numpy(zero_copy_only=False)
    out = np.full(n, -1, dtype=np.int64)
    out[valid] = hashed[idx[valid].astype(np.int64)]
    return out


class Buckets:
    """The prediction rows of checked shards, split into ``k`` buckets (context manager).

    ``own(j)``: the rows with a sample_id in bucket j; ``shared()``: the rows with a null
    sample_id (every bucket needs them). Both are Arrow tables as ``tables.raw_predictions``
    builds them (``model`` from the folder).
    """

    def __init__(self, found: list[files.TableFile], k: int, tmp_root: str | None = None):
        self.k = k
        self._shared: list[pa.Table] = []
        self._mem: list[list[pa.Table]] = [[] for _ in range(k)]
        self._dir = tempfile.mkdtemp(prefix="vlm-eval-reduce-", dir=tmp_root) if k > 1 else None
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        try:
            for f in found:  # one shard in memory at a time
                self._add(files.with_keys(files.read_file(f, files.PREDICTION_READ), f))
        except BaseException:  # a shard that cannot be read: no temp folder left behind
            self._close_writers()
            self.__exit__()
            raise
        self._close_writers()

    def _close_writers(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers = {}

    def _add(self, table: pa.Table) -> None:
        b = bucket_of(table.column("sample_id"), self.k)
        if (b < 0).any():
            self._shared.append(table.filter(pa.array(b < 0)))
        if self.k == 1:
            self._mem[0].append(table.filter(pa.array(b >= 0)) if (b < 0).any() else table)
            return
        order = np.argsort(b, kind="stable")
        sorted_b = b[order]
        table = table.take(pa.array(order))
        bounds = np.searchsorted(sorted_b, np.arange(self.k + 1))
        for j in range(self.k):
            lo, hi = int(bounds[j]), int(bounds[j + 1])
            if hi > lo:
                self._writer(j, table.schema).write_table(table.slice(lo, hi - lo))

    def _writer(self, j: int, schema: pa.Schema) -> pa.ipc.RecordBatchStreamWriter:
        if j not in self._writers:
            self._writers[j] = pa.ipc.new_stream(os.path.join(self._dir, f"bucket-{j:05d}.arrows"), schema)
        return self._writers[j]

    def own(self, j: int) -> pa.Table:
        if self.k == 1:
            return pa.concat_tables(self._mem[0]) if self._mem[0] else READ_SCHEMA.empty_table()
        path = os.path.join(self._dir, f"bucket-{j:05d}.arrows")
        if not os.path.exists(path):
            return READ_SCHEMA.empty_table()
        with pa.memory_map(path) as src:
            return pa.ipc.open_stream(src).read_all()

    def shared(self) -> pa.Table:
        return pa.concat_tables(self._shared) if self._shared else READ_SCHEMA.empty_table()

    def __enter__(self) -> "Buckets":
        return self

    def __exit__(self, *exc) -> None:
        self._mem = [[] for _ in range(self.k)]
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


def sample_buckets(samples: pa.Table, k: int, chunk: int = 1_000_000) -> np.ndarray:
    """Bucket of each row of an Arrow samples table (int16, -1 for a null sample_id),
    hashed a chunk at a time so only ``chunk`` ids are Python objects at once."""
    col = samples.column("sample_id")
    out = np.empty(len(col), dtype=np.int16)
    for lo in range(0, len(col), chunk):
        out[lo:lo + chunk] = bucket_of(col.slice(lo, chunk), k)
    return out

