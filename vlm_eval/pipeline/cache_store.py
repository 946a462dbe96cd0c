"""A prediction cache that scales: hash-partitioned, compacted, loaded by partition.

Layout (``CACHE`` = ``job.cache.url`` or ``OUTPUT/_cache``)::

    CACHE/model=<model_key>/part=<PP>/<name>.parquet   cached scores (cache.CACHE_SCHEMA)
    CACHE/prekeys/part=<PP>/<name>.parquet             pre-keys (prekey.PREKEY_SCHEMA)

``PP`` is the partition of the *image URI* a request belongs to (two hex digits of
its sha256: 256 partitions; text-only prompts use ``tx``, size-only views such as
``blank`` use ``sz``, so a blank score of one size serves every image of that size). Every request of one image
(every finding, variant and image condition) lands in that image's partition, and
the plan orders images by partition, so a loader reads one or two partitions per
unit, never the whole history. Each unit adds a small file; ``compact`` (run at the
end of a run) merges each touched partition into one file, so a model's cache stays
at <= 258 files however many nights it has seen. A partition is held in memory as
sorted numpy arrays (``cache.CacheIndex``: 56 bytes an entry); a process keeps the
few it used last (``_LRU_PARTS``).
"""
from __future__ import annotations

import hashlib
import posixpath
from collections import OrderedDict

import numpy as np
import pyarrow as pa

from vlm_eval import storage
from vlm_eval.schema import image_partition

N_PARTS = 256
TEXT_PART = "tx"
SIZE_PART = "sz"  # views that depend only on the image size (blank): shared by every image
_LRU_PARTS = 8
_lru: OrderedDict = OrderedDict()


partition_of = image_partition  # one rule for samples/ order and cache partitions (schema.py)


def part_dir(root: str, part: str) -> str:
    return storage.join(root, f"part={part}")


def read_part(root: str, part: str, schema: pa.Schema, key: str) -> pa.Table | None:
    """Every entry of one partition (files concatenated), keyed by column ``key``, or None."""
    import pyarrow.parquet as pq

    files = storage.list_files(part_dir(root, part), ".parquet")
    if not files:
        return None
    tables = []
    for f in files:
        fs, path = storage.filesystem(f)
        try:
            with fs.open(path, "rb") as fh:
                tables.append(pq.read_table(fh, schema=schema))
        except FileNotFoundError:  # compacted away meanwhile: its entries are in the new file
            continue
    return pa.concat_tables(tables).combine_chunks() if tables else None


def load_cached(root: str, part: str, loader, token: str = ""):
    """``loader(root, part)`` memoised per process for the last few partitions used.

    ``token`` names the pass (one per model per run attempt): worker processes outlive
    a run, and a partition memoised by an earlier run misses what that run wrote. Within
    a pass, writes of other units are not seen; that only costs a recompute, never a
    wrong score (entries are content-keyed).
    """
    k = (root, part, token)
    if k in _lru:
        _lru.move_to_end(k)
        return _lru[k]
    value = loader(root, part)
    _lru[k] = value
    while len(_lru) > _LRU_PARTS:
        _lru.popitem(last=False)
    return value


def forget(root: str) -> None:
    for k in [k for k in _lru if k[0] == root]:
        del _lru[k]


def write_part(root: str, part: str, name: str, table: pa.Table) -> None:
    if table.num_rows:
        # Not fsynced: an entry lost to a machine crash only means a recompute.
        storage.write_parquet_atomic(table, storage.join(part_dir(root, part), f"{name}.parquet"), durable=False)


def compact(root: str, schema: pa.Schema, key: str, parts: set[str] | None = None) -> dict[str, int]:
    """Merge each partition's files into one (latest entry per key wins).

    The merged file is written before the small ones are removed, so a reader at any
    moment sees every entry (perhaps twice: harmless). Returns counts.
    """
    fs, path = storage.filesystem(root)
    if not fs.exists(path):
        return {"partitions": 0, "files_removed": 0}
    if parts is None:
        parts = {posixpath.basename(p.rstrip("/"))[len("part="):] for p in fs.ls(path, detail=False)
                 if posixpath.basename(p.rstrip("/")).startswith("part=")}
    merged = removed = 0
    for part in sorted(parts):
        files = storage.list_files(part_dir(root, part), ".parquet")
        if len(files) <= 1:
            continue
        table = read_part(root, part, schema, key)
        if table is None:
            continue
        # Keep the last occurrence of each key (files are read in name order).
        keys = table[key].to_numpy(zero_copy_only=False)
        _, first_from_end = np.unique(keys[::-1], return_index=True)
        keep = np.sort(len(keys) - 1 - first_from_end)
        table = table.take(pa.array(keep))
        digest = hashlib.sha256(b"".join(sorted(f.encode() for f in files))).hexdigest()[:16]
        write_part(root, part, f"compact-{digest}", table)
        for f in files:
            if posixpath.basename(f) != f"compact-{digest}.parquet":
                storage.remove(f)
                removed += 1
        merged += 1
    return {"partitions": merged, "files_removed": removed}
