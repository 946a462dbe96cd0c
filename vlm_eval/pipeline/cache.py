"""Prediction cache: reuse earlier runs' scores for unchanged (model, prompt, image).

A cached score is keyed by everything that determines it: the model's identity
(engine, path, revision, LoRA, engine options), the system prompt and question
text, the image's content hash (or the ablation's synthetic image id) and the
``max_image_side`` it was decoded at, the condition and the answer options. Tonight's run then scores only new or changed
samples. Entries (``cache_key`` = the 32-byte sha256 digest, ``logprob_yes,
logprob_no, other_mass``) are written after each unit commits, partitioned by image
and compacted at the end of the run (``cache_store``); error rows are never cached.

In memory a partition is sorted numpy arrays (56 bytes an entry, looked up with
``searchsorted``), not a dict of Python objects (~700 bytes).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from vlm_eval import storage
from vlm_eval.engines.base import ANSWER_OPTIONS, ScoreRequest, ScoreResult
from vlm_eval.pipeline import cache_store

CACHE_SCHEMA = pa.schema([("cache_key", pa.binary(32)), ("logprob_yes", pa.float64()),
                          ("logprob_no", pa.float64()), ("other_mass", pa.float64())])
# Entry fields that do not change a score (names, labels) stay out of the key.
_NOT_IN_KEY = ("name",)


def model_key(model: dict[str, Any]) -> str:
    ident = {k: v for k, v in model.items() if k not in _NOT_IN_KEY}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def request_key(mkey: str, req: ScoreRequest, condition: str, image_side: int | None = None) -> bytes:
    """The cache key of one request: model, system, prompt, image id, condition, options, and for a
    request with an image the ``max_image_side`` it was decoded at (image ids hash the file, and a
    smaller side shows the engine other pixels)."""
    parts = [mkey, req.system or "", req.prompt, req.image_uuid or "", condition, "\x1f".join(req.options)]
    if req.image_uuid and image_side is not None:
        parts.append(f"max_image_side={image_side}")
    return hashlib.sha256("\x1e".join(parts).encode()).digest()


def model_dir(cache_url: str, mkey: str) -> str:
    return storage.join(cache_url, f"model={mkey}")


@dataclass(frozen=True)
class CacheIndex:
    """Cached scores: keys sorted (numpy ``S32``) with aligned value arrays."""

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


def index_of(t: pa.Table | None) -> CacheIndex:
    if t is None or not t.num_rows:
        return EMPTY
    col0 = t["cache_key"].chunks[0]
    # Zero-copy view of the fixed-size binary column as 32-byte numpy strings.
    keys = np.frombuffer(col0.buffers()[1], dtype="S32")[col0.offset:col0.offset + len(col0)]
    order = np.argsort(keys, kind="stable")

    def col(name: str) -> np.ndarray:
        return t[name].to_numpy(zero_copy_only=False).astype(np.float64)[order]

    return CacheIndex(keys[order], col("logprob_yes"), col("logprob_no"), col("other_mass"))


def _load_part(root: str, part: str) -> CacheIndex:
    return index_of(cache_store.read_part(root, part, CACHE_SCHEMA, "cache_key"))


def load_part(cache_url: str, mkey: str, part: str, token: str = "") -> CacheIndex:
    """One partition of one model's cached scores (memoised per process and ``token``)."""
    return cache_store.load_cached(model_dir(cache_url, mkey), part, _load_part, token)


def load(cache_url: str, mkey: str) -> CacheIndex:
    """Every cached score of one model (tests and tools; the pipeline loads by partition)."""
    root = model_dir(cache_url, mkey)
    tables = [cache_store.read_part(root, p, CACHE_SCHEMA, "cache_key") for p in _parts(root)]
    tables = [t for t in tables if t is not None]
    return index_of(pa.concat_tables(tables).combine_chunks() if tables else None)


def _parts(root: str) -> list[str]:
    fs, path = storage.filesystem(root)
    if not fs.exists(path):
        return []
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    return sorted(n[len("part="):] for n in names if n.startswith("part="))


def hit_result(entry: tuple[float, float, float | None], req: ScoreRequest | None = None) -> ScoreResult:
    yes, no = (req.options[0], req.options[1]) if req is not None else ANSWER_OPTIONS
    return ScoreResult(logprobs={yes: entry[0], no: entry[1]}, other_mass=entry[2])


def entries_table(keys: list[bytes], results: list[ScoreResult], options: tuple[str, str]) -> pa.Table:
    rows = [(k, r) for k, r in zip(keys, results) if r.error is None]
    yes, no = options
    return pa.table({
        "cache_key": [k for k, _ in rows],
        "logprob_yes": [r.logprobs[yes] for _, r in rows],
        "logprob_no": [r.logprobs[no] for _, r in rows],
        "other_mass": [r.other_mass for _, r in rows],
    }, schema=CACHE_SCHEMA)


def write_entries(cache_url: str, mkey: str, name: str, keys: list[bytes], results: list[ScoreResult],
                  options: tuple[str, str], parts: list[str] | None = None) -> None:
    """Cache freshly scored results (pass only misses; errors are skipped), one small
    file per partition touched (``parts[i]`` = partition of ``keys[i]``)."""
    parts = parts or [cache_store.TEXT_PART] * len(keys)
    by_part: dict[str, list[int]] = {}
    for i, p in enumerate(parts):
        by_part.setdefault(p, []).append(i)
    root = model_dir(cache_url, mkey)
    for p, idx in by_part.items():
        table = entries_table([keys[i] for i in idx], [results[i] for i in idx], options)
        cache_store.write_part(root, p, name, table)


def compact(cache_url: str, mkey: str) -> dict[str, int]:
    """Merge each partition of one model into one file (end of a run)."""
    return cache_store.compact(model_dir(cache_url, mkey), CACHE_SCHEMA, "cache_key")
