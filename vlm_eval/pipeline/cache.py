"""Prediction cache: reuse earlier runs' scores for unchanged (model, prompt, image).

A cached score is keyed by everything that determines it: the model's identity
(engine, path, revision, LoRA, engine options), the system prompt and question
text, the image's content hash (or the ablation's synthetic image id), the
condition and the answer options. Tonight's run then scores only new or changed
samples. Entries are Parquet files ``CACHE/model=<model_key>/<run_id>-<unit>.parquet``
(``cache_key`` = the 32-byte sha256 digest, ``logprob_yes, logprob_no, other_mass``)
written after each unit commits; error rows are never cached.

In memory an actor holds one model's entries as sorted numpy arrays (56 bytes an
entry, looked up with ``searchsorted``), not a dict of Python objects (~700 bytes).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from vlm_eval import storage
from vlm_eval.engines.base import ScoreRequest, ScoreResult

CACHE_SCHEMA = pa.schema([("cache_key", pa.binary(32)), ("logprob_yes", pa.float64()),
                          ("logprob_no", pa.float64()), ("other_mass", pa.float64())])
# Entry fields that do not change a score (names, labels) stay out of the key.
_NOT_IN_KEY = ("name",)


def model_key(model: dict[str, Any]) -> str:
    ident = {k: v for k, v in model.items() if k not in _NOT_IN_KEY}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def request_key(mkey: str, req: ScoreRequest, condition: str) -> bytes:
    parts = [mkey, req.system or "", req.prompt, req.image_uuid or "", condition, "\x1f".join(req.options)]
    return hashlib.sha256("\x1e".join(parts).encode()).digest()


def model_dir(cache_url: str, mkey: str) -> str:
    return storage.join(cache_url, f"model={mkey}")


@dataclass(frozen=True)
class CacheIndex:
    """One model's cached scores: keys sorted (numpy ``S32``) with aligned value arrays."""

    keys: np.ndarray
    logprob_yes: np.ndarray
    logprob_no: np.ndarray
    other_mass: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, key: bytes) -> tuple[float, float, float | None] | None:
        probe = np.array([key], dtype="S32")  # compare as arrays: numpy scalars drop trailing NULs
        i = int(np.searchsorted(self.keys, probe[0]))
        if i >= len(self.keys) or not (self.keys[i:i + 1] == probe)[0]:
            return None
        other = self.other_mass[i]
        return float(self.logprob_yes[i]), float(self.logprob_no[i]), None if np.isnan(other) else float(other)


EMPTY = CacheIndex(np.array([], dtype="S32"), np.array([]), np.array([]), np.array([]))


def load(cache_url: str, mkey: str) -> CacheIndex:
    """All cached scores of one model, as a sorted index."""
    files = storage.list_files(model_dir(cache_url, mkey), ".parquet")
    if not files:
        return EMPTY
    import pyarrow.parquet as pq

    tables = []
    for f in files:
        fs, path = storage.filesystem(f)
        with fs.open(path, "rb") as fh:
            tables.append(pq.read_table(fh, schema=CACHE_SCHEMA))
    t = pa.concat_tables(tables).combine_chunks()
    col0 = t["cache_key"].chunks[0] if t.num_rows else None
    # Zero-copy view of the fixed-size binary column as 32-byte numpy strings.
    keys = (np.frombuffer(col0.buffers()[1], dtype="S32")[col0.offset:col0.offset + len(col0)]
            if col0 is not None else EMPTY.keys)
    order = np.argsort(keys, kind="stable")

    def col(name: str) -> np.ndarray:
        return t[name].to_numpy(zero_copy_only=False).astype(np.float64)[order]

    return CacheIndex(keys[order], col("logprob_yes"), col("logprob_no"), col("other_mass"))


def hit_result(entry: tuple[float, float, float | None], req: ScoreRequest) -> ScoreResult:
    yes, no = req.options[0], req.options[1]
    return ScoreResult(logprobs={yes: entry[0], no: entry[1]}, other_mass=entry[2])


def write_entries(cache_url: str, mkey: str, name: str, keys: list[bytes], results: list[ScoreResult],
                  options: tuple[str, str]) -> None:
    """Cache freshly scored results (pass only misses; errors are skipped)."""
    rows = [(k, r) for k, r in zip(keys, results) if r.error is None]
    if not rows:
        return
    yes, no = options
    table = pa.table({
        "cache_key": [k for k, _ in rows],
        "logprob_yes": [r.logprobs[yes] for _, r in rows],
        "logprob_no": [r.logprobs[no] for _, r in rows],
        "other_mass": [r.other_mass for _, r in rows],
    }, schema=CACHE_SCHEMA)
    # Not fsynced: a cache entry lost to a machine crash only means a recompute.
    storage.write_parquet_atomic(table, storage.join(model_dir(cache_url, mkey), f"{name}.parquet"), durable=False)
