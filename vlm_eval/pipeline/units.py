"""Image-major, content-addressed work units, planned by streaming over ``samples/``.

The run's samples table is stored sorted by (cache partition of the image URI, image
URI, sample_id), so every sample of one image is a contiguous run of rows. A work
unit is a row range holding *whole images*: every finding x variant x image-dependent
condition of an image is scored in the same unit (fetched, decoded and encoded once;
the engine sees all its prompts in one batch behind the shared image prefix). Units
are packed greedily up to a cap in prompts (``unit_prompt_cap``: ``batch_size``
samples' worth of prompts); an image with more prompts than the cap is a unit alone.

A unit's id is a hash of what it holds (image URIs, sample ids, swap partners, prompt
texts, system prompt, image conditions), never of its position: a resume with another
``batch_size`` plans other units, and a shard whose id no longer matches a planned
unit is stale, never counted as done. (The rows are hashed per scan batch of
``SCAN_ROWS``, so a unit cut by a batch boundary hashes otherwise than the same rows
elsewhere; a run's samples file, hence its batches and ids, never changes.)

Image-free conditions (``text_only``) are scored once per distinct ``prompt_id`` in
text units (``batch_size * TEXT_PROMPTS_PER_UNIT_FACTOR`` prompts each).

Planning reads the table twice in record batches (image boundaries, then hashes), so
the driver holds one batch plus per-image and per-unit integers, never the samples.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vlm_eval import storage
from vlm_eval.conditions import IMAGE_FREE_NAMES, image_conditions
from vlm_eval.pipeline.cache_store import partition_of

TEXT_PROMPTS_PER_UNIT_FACTOR = 8  # text prompts are cheap: bigger units, fewer files
ROW_GROUP_ROWS = 4096  # a unit reads one or two row groups of the samples file
SCAN_ROWS = 65536
UNIT_COLUMNS = ["sample_id", "image_uri", "swap_image_uri", "prompts"]
PLAN_SCHEMA = pa.schema([("unit_id", pa.string()), ("kind", pa.string()), ("start", pa.int64()),
                         ("end", pa.int64()), ("n_images", pa.int64()), ("n_prompts", pa.int64()),
                         ("items", pa.string())])


def sort_image_major(table: pa.Table) -> pa.Table:
    """Samples ordered by (partition of image URI, image URI, sample_id)."""
    uris = table["image_uri"].combine_chunks()
    uniq = pc.unique(uris)
    parts = pa.array([partition_of(u or "") for u in uniq.to_pylist()], pa.string())
    part_col = pc.take(parts, pc.index_in(uris, value_set=uniq))
    keyed = table.append_column("_part", part_col)
    order = pc.sort_indices(keyed, sort_keys=[("_part", "ascending"), ("image_uri", "ascending"),
                                              ("sample_id", "ascending")])
    return table.take(order)


def unit_prompt_cap(batch_size: int, variants: int, ablations: list[str]) -> int:
    """Prompts per image unit: ``batch_size`` samples x variants x image conditions."""
    return max(1, batch_size * max(1, variants) * len(image_conditions(ablations)))


@dataclass
class Plan:
    units: pa.Table
    """One row per unit (PLAN_SCHEMA): image units are row ranges of the samples file."""
    n_samples: int
    n_images: int
    n_text_prompts: int
    n_variants: int = 0
    """Prompts of all samples (sum of their variants)."""

    def ids(self) -> list[str]:
        return self.units["unit_id"].to_pylist()


class _Strings:
    """A string column of one record batch, viewed once, hashed by row ranges."""

    def __init__(self, arr: pa.Array):
        if arr.null_count:
            arr = pc.fill_null(arr, "")
        bufs = arr.buffers()
        self.offs = np.frombuffer(bufs[1], dtype=np.int32)[arr.offset:arr.offset + len(arr) + 1]
        self.lens = np.diff(self.offs).astype(np.int64)
        self.data = memoryview(bufs[2]) if bufs[2] is not None else memoryview(b"")

    def feed(self, h, a: int, b: int) -> None:
        """Hash rows [a, b): their value lengths and bytes (position independent)."""
        h.update(self.lens[a:b].tobytes())
        h.update(self.data[self.offs[a]:self.offs[b]])


class _Lists:
    """A list<string> column of one record batch (the prompts)."""

    def __init__(self, arr: pa.Array):
        self.loffs = arr.offsets.to_numpy().astype(np.int64)
        self.lens = np.diff(self.loffs)
        self.values = _Strings(arr.values)

    def feed(self, h, a: int, b: int) -> None:
        h.update(self.lens[a:b].tobytes())
        self.values.feed(h, int(self.loffs[a]), int(self.loffs[b]))


def _open(samples_file: str):
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(samples_file)
    return pq.ParquetFile(fs.open(path, "rb"))


def _scan(samples_file: str, columns: list[str]):
    pf = _open(samples_file)
    try:
        for batch in pf.iter_batches(batch_size=SCAN_ROWS, columns=columns):
            yield batch
    finally:
        pf.close()


def _images(samples_file: str, n_conditions: int, want_prompts: bool):
    """Per image: first row, prompt count; plus the distinct prompt texts if wanted."""
    starts, prompts, distinct = [], [], []
    prev, row = None, 0
    for batch in _scan(samples_file, ["image_uri", "prompts"]):
        uris = batch.column(0)
        lens = pc.fill_null(pc.list_value_length(batch.column(1)), 0).to_numpy().astype(np.int64)
        new = np.ones(len(uris), dtype=bool)
        if len(uris) > 1:
            new[1:] = pc.not_equal(uris[1:], uris[:-1]).to_numpy(zero_copy_only=False)
        if len(uris) and prev is not None and uris[0].as_py() == prev:
            new[0] = False
        idx = np.flatnonzero(new)
        sums = np.add.reduceat(lens, idx) if len(idx) else np.array([], dtype=np.int64)
        if not len(uris):
            continue
        if not new[0]:  # rows continuing the previous batch's last image
            prompts[-1][-1] += int(lens[: idx[0]].sum() if len(idx) else lens.sum()) * n_conditions
        if len(idx):  # a batch inside one image starts none: prompts[-1] stays that image's array
            starts.append(idx + row)
            prompts.append(sums * n_conditions)
        if want_prompts:
            distinct.append(pc.unique(batch.column(1).flatten()))
            if len(distinct) > 16:
                distinct = [pc.unique(pa.concat_arrays(distinct))]
        prev = uris[-1].as_py()
        row += len(uris)
    starts_a = np.concatenate(starts) if starts else np.array([], dtype=np.int64)
    prompts_a = np.concatenate(prompts) if prompts else np.array([], dtype=np.int64)
    texts = pc.unique(pa.concat_arrays(distinct)) if distinct else pa.array([], pa.string())
    return starts_a, prompts_a, row, texts


def _pack(starts: np.ndarray, prompts: np.ndarray, n_rows: int, cap: int) -> list[tuple[int, int, int, int]]:
    """Greedy: (start row, end row, images, prompts) per unit; images never split."""
    units, u_start, u_prompts, u_images = [], 0, 0, 0
    for i in range(len(starts)):
        p = int(prompts[i])
        if u_images and u_prompts + p > cap:
            units.append((u_start, int(starts[i]), u_images, u_prompts))
            u_start, u_prompts, u_images = int(starts[i]), 0, 0
        u_prompts += p
        u_images += 1
    if u_images:
        units.append((u_start, n_rows, u_images, u_prompts))
    return units


def plan_units(samples_file: str, system: str | None, ablations: list[str], batch_size: int,
               cap: int) -> Plan:
    from vlm_eval.prompts import prompt_id

    conds = [c.name for c in image_conditions(ablations)]
    want_text = any(a in IMAGE_FREE_NAMES for a in ablations)
    starts, prompts, n_rows, texts = _images(samples_file, len(conds), want_text)
    ranges = _pack(starts, prompts, n_rows, cap)
    header = json.dumps(["image", system, conds]).encode()
    hashers = [hashlib.sha256(header) for _ in ranges]
    ui, row = 0, 0
    for batch in _scan(samples_file, UNIT_COLUMNS):
        b0, b1 = row, row + batch.num_rows
        cols = [_Strings(batch.column(n)) for n in ("sample_id", "image_uri", "swap_image_uri")]
        cols.append(_Lists(batch.column("prompts")))
        while ui < len(ranges) and ranges[ui][0] < b1:
            s, e = max(ranges[ui][0], b0) - b0, min(ranges[ui][1], b1) - b0
            for col in cols:
                col.feed(hashers[ui], s, e)
            if ranges[ui][1] > b1:
                break  # continues in the next batch
            ui += 1
        row = b1
    rows = {k: [] for k in PLAN_SCHEMA.names}
    for (s, e, ni, np_), h in zip(ranges, hashers):
        for k, v in (("unit_id", "u" + h.hexdigest()[:24]), ("kind", "image"), ("start", s), ("end", e),
                     ("n_images", ni), ("n_prompts", np_), ("items", None)):
            rows[k].append(v)
    if want_text:
        items = sorted(({"prompt": t, "prompt_id": prompt_id(system, t)} for t in texts.to_pylist() if t is not None),
                       key=lambda it: it["prompt_id"])
        size = batch_size * TEXT_PROMPTS_PER_UNIT_FACTOR
        for i in range(0, len(items), size):
            chunk = items[i:i + size]
            h = hashlib.sha256(json.dumps(["text", system, [it["prompt_id"] for it in chunk]]).encode())
            for k, v in (("unit_id", "t" + h.hexdigest()[:24]), ("kind", "text"), ("start", 0), ("end", 0),
                         ("n_images", 0), ("n_prompts", len(chunk)), ("items", json.dumps(chunk))):
                rows[k].append(v)
    n_variants = int(prompts.sum()) // max(1, len(conds))
    return Plan(pa.table(rows, schema=PLAN_SCHEMA), n_rows, len(starts), len(texts), n_variants)


_OPEN: dict = {}


def read_rows(samples_file: str, start: int, end: int, columns: list[str] | None = None) -> pa.Table:
    """Rows [start, end) of the samples file, reading only the row groups they lie in."""
    columns = columns or UNIT_COLUMNS
    if samples_file not in _OPEN:
        pf = _open(samples_file)
        md = pf.metadata
        bounds = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
        for old, _ in _OPEN.values():  # one samples file per process at a time
            old.close()
        _OPEN.clear()
        _OPEN[samples_file] = (pf, bounds)
    pf, bounds = _OPEN[samples_file]
    first = int(np.searchsorted(bounds, start, side="right")) - 1
    last = int(np.searchsorted(bounds, end, side="left"))
    groups = list(range(max(first, 0), max(last, first + 1)))
    t = pf.read_row_groups(groups, columns=columns)
    return t.slice(start - int(bounds[groups[0]]), end - start)
