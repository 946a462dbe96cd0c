"""Prediction cache: reuse earlier runs' scores for unchanged (model, prompt, image).

A cached score is keyed by everything that determines it: the model's identity
(engine, path, revision, LoRA, engine options), the system prompt and question
text, the image's content hash (or the ablation's synthetic image id), the
condition and the answer options. Tonight's run then scores only new or changed
samples. Entries are Parquet files ``CACHE/model=<model_key>/<run_id>-<unit>.parquet``
(``cache_key, logprob_yes, logprob_no, other_mass``) written after each unit
commits; error rows are never cached.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from vlm_eval import storage
from vlm_eval.engines.base import ScoreRequest, ScoreResult

CACHE_SCHEMA = pa.schema([("cache_key", pa.string()), ("logprob_yes", pa.float64()),
                          ("logprob_no", pa.float64()), ("other_mass", pa.float64())])
# Entry fields that do not change a score (names, labels) stay out of the key.
_NOT_IN_KEY = ("name",)


def model_key(model: dict[str, Any]) -> str:
    ident = {k: v for k, v in model.items() if k not in _NOT_IN_KEY}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def request_key(mkey: str, req: ScoreRequest, condition: str) -> str:
    parts = [mkey, req.system or "", req.prompt, req.image_uuid or "", condition, "\x1f".join(req.options)]
    return hashlib.sha256("\x1e".join(parts).encode()).hexdigest()


def model_dir(cache_url: str, mkey: str) -> str:
    return storage.join(cache_url, f"model={mkey}")


def load(cache_url: str, mkey: str) -> dict[str, tuple[float, float, float | None]]:
    """All cached scores of one model (key -> (logprob_yes, logprob_no, other_mass))."""
    files = storage.list_files(model_dir(cache_url, mkey), ".parquet")
    if not files:
        return {}
    import pyarrow.parquet as pq

    tables = []
    for f in files:
        fs, path = storage.filesystem(f)
        with fs.open(path, "rb") as fh:
            tables.append(pq.read_table(fh))
    t = pa.concat_tables(tables)
    return dict(zip(t["cache_key"].to_pylist(),
                    zip(t["logprob_yes"].to_pylist(), t["logprob_no"].to_pylist(), t["other_mass"].to_pylist())))


def hit_result(entry: tuple[float, float, float | None], req: ScoreRequest) -> ScoreResult:
    yes, no = req.options[0], req.options[1]
    return ScoreResult(logprobs={yes: entry[0], no: entry[1]}, other_mass=entry[2])


def write_entries(cache_url: str, mkey: str, name: str, keys: list[str], results: list[ScoreResult],
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
