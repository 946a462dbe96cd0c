"""The two Ray Data stages: image loading (CPU tasks) and scoring (engine actors).

Stage contracts (columns read -> written):
- ``load_unit_images``: unit_id, kind, items -> + images, swap_images, image_sha256, swap_sha256, image_errors
- ``ScoringActor``:     all of the above -> unit_id, kind, n_predictions, n_errors, n_scored, n_cached
  (its real output is the committed shard; the rows are the driver's progress feed)

A bad sample becomes an error row; a dead engine raises and stops the job.
"""
from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa

from vlm_eval import storage
from vlm_eval.pipeline import cache
from vlm_eval.engines.base import ScoreRequest, ScoreResult, check_results
from vlm_eval.errors import EngineError
from vlm_eval.layout import RunLayout
from vlm_eval.schema import ERRORS, PREDICTIONS_FILE, conform



# ---------------------------------------------------------------- stage 1: images


def _encode_for_transport(loaded) -> bytes:
    """Bytes the actor decodes to exactly ``loaded.image``.

    An 8-bit grey/RGB PNG or JPEG that was not downscaled decodes to the same RGB
    pixels again, so its original bytes travel as they are (no re-encode, smaller);
    anything that was converted (16-bit, DICOM, RGBA, downscaled) travels as a
    lossless PNG of the converted image.
    """
    from PIL import Image

    if loaded.data and loaded.source_format in ("PNG", "JPEG") and loaded.original_size == loaded.image.size:
        with Image.open(io.BytesIO(loaded.data)) as im:  # header only
            if im.mode in ("L", "RGB"):
                return loaded.data
    buf = io.BytesIO()
    loaded.image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def load_unit_images(row: dict[str, Any], max_image_side: int) -> dict[str, Any]:
    """Fetch and decode every image of an image unit; failures become error entries."""
    from vlm_eval.datasets.images import ImageLoadError, load_image

    items = json.loads(row["items"])
    images: list[bytes | None] = []
    swaps: list[bytes | None] = []
    shas: list[str | None] = []
    swap_shas: list[str | None] = []
    errors: list[dict] = []
    if row["kind"] == "image":
        cache: dict[str, Any] = {}

        def fetch(uri: str):
            if uri not in cache:
                try:
                    cache[uri] = load_image(uri, max_side=max_image_side)
                except ImageLoadError as exc:
                    cache[uri] = exc
            return cache[uri]

        for item in items:
            got = fetch(item["image_uri"])
            swap = fetch(item["swap_image_uri"]) if item.get("swap_image_uri") else None
            if isinstance(got, Exception):
                images.append(None), swaps.append(None), shas.append(None), swap_shas.append(None)
                errors.append({"sample_id": item["sample_id"], "stage": "image",
                               "error_type": got.error_type, "message": str(got)})
                continue
            if isinstance(swap, Exception):
                errors.append({"sample_id": item["sample_id"], "stage": "image",
                               "error_type": f"swap_{swap.error_type}", "message": str(swap)})
                swap = None
            images.append(_encode_for_transport(got))
            swaps.append(_encode_for_transport(swap) if swap is not None else None)
            shas.append(got.sha256)
            swap_shas.append(swap.sha256 if swap is not None else None)
    return {**row, "images": images, "swap_images": swaps, "image_sha256": shas, "swap_sha256": swap_shas,
            "image_errors": json.dumps(errors)}


# ---------------------------------------------------------------- stage 2: scoring


def _decode(data: bytes):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def build_requests(row: dict[str, Any], system: str | None, ablations: list[str]) -> tuple[list[ScoreRequest], list[dict]]:
    """Requests of one unit, and the prediction-row keys they fill (same order).

    Each image-dependent condition of the registry builds its own view of the sample.
    """
    from vlm_eval.conditions import InputImage, ViewContext, image_conditions

    items = json.loads(row["items"])
    requests: list[ScoreRequest] = []
    keys: list[dict] = []
    if row["kind"] == "text":
        for it in items:
            requests.append(ScoreRequest(prompt=it["prompt"], system=system))
            keys.append({"sample_id": None, "variant": None, "condition": "text_only",
                         "prompt_id": it["prompt_id"], "image_sha256": None})
        return requests, keys
    conditions = image_conditions(ablations)
    for it, data, swap, sha, swap_sha in zip(items, row["images"], row["swap_images"], row["image_sha256"],
                                             row["swap_sha256"]):
        if data is None:
            continue  # image failed to load: already an error row
        image = _decode(data)
        partner = InputImage(swap_sha, _decode(swap)) if swap is not None else None
        ctx = ViewContext(it["sample_id"], sha, image.size, image, {"swap_image_uri": partner})
        for cond in conditions:
            view = cond.view(ctx)
            if view is None:
                continue
            for variant, (prompt, pid) in enumerate(zip(it["prompts"], it["prompt_ids"])):
                requests.append(ScoreRequest(prompt=prompt, system=system, image=view.image,
                                             image_uuid=view.image_uuid,
                                             metadata={"sample_id": it["sample_id"], "variant": variant}))
                keys.append({"sample_id": it["sample_id"], "variant": variant, "condition": cond.name,
                             "prompt_id": pid, "image_sha256": sha})
    return requests, keys


def score_isolating_failures(engine, requests: list[ScoreRequest]) -> list[ScoreResult]:
    """Score a batch; if the batch call raises, retry one by one to find the bad requests.

    If every request fails on its own too, the engine itself is broken: EngineError.
    """
    if not requests:
        return []
    try:
        return check_results(requests, engine.score(requests))
    except Exception as batch_exc:  # noqa: BLE001 - isolate, then decide
        batch_error = f"{type(batch_exc).__name__}: {batch_exc}"
    results = []
    for req in requests:
        try:
            results.extend(check_results([req], engine.score([req])))
        except Exception as exc:  # noqa: BLE001
            results.append(ScoreResult(logprobs={}, error=f"{type(exc).__name__}: {exc}"))
    if all(r.error for r in results):
        raise EngineError(f"engine failed on every request of the batch (dead engine?): {batch_error}")
    return results


def prediction_table(keys: list[dict], results: list[ScoreResult], options: tuple[str, str]) -> pa.Table:
    yes, no = options
    cols: dict[str, list] = {k: [key[k] for key in keys] for k in
                             ("sample_id", "variant", "condition", "prompt_id", "image_sha256")}
    cols["logprob_yes"] = [None if r.error else r.logprobs.get(yes) for r in results]
    cols["logprob_no"] = [None if r.error else r.logprobs.get(no) for r in results]
    cols["other_mass"] = [r.other_mass for r in results]
    cols["error"] = [r.error for r in results]
    return conform(pa.table(cols) if keys else PREDICTIONS_FILE.empty_table(), PREDICTIONS_FILE)


class ScoringActor:
    """Holds one engine for the actor's life; scores and commits one unit per call."""

    def __init__(self, model: dict, run_url: str, system: str | None, ablations: list[str],
                 cache_url: str | None = None, run_id: str = "run"):
        from vlm_eval.engines.loader import load_engine

        self.model = model
        self.layout = RunLayout(run_url)
        self.system = system
        self.ablations = ablations
        self.run_id = run_id
        self.cache_url = cache_url
        self.model_key = cache.model_key(model)
        self.cached = cache.load(cache_url, self.model_key) if cache_url else cache.EMPTY
        try:
            self.engine = load_engine(model)
        except Exception as exc:
            # Construction failures are fatal for the job: say which model and why.
            raise EngineError(f"engine for model {model['name']!r} failed to start: "
                              f"{type(exc).__name__}: {exc}") from exc

    def __call__(self, batch: pa.Table) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in ("unit_id", "kind", "n_predictions", "n_errors",
                                                 "n_scored", "n_cached")}
        for row in batch.to_pylist():
            counts = self._score_unit(row)
            out["unit_id"].append(row["unit_id"])
            out["kind"].append(row["kind"])
            for k, v in counts.items():
                out[k].append(v)
        return out

    def _score_with_cache(self, requests: list[ScoreRequest], keys: list[dict]):
        """(results, n_cached, keys of the misses, their fresh results).

        Cached results where the cache has them; the engine scores the rest.
        """
        if not self.cache_url:
            fresh = score_isolating_failures(self.engine, requests)
            return fresh, 0, [], fresh
        ckeys = [cache.request_key(self.model_key, r, k["condition"]) for r, k in zip(requests, keys)]
        hits = [self.cached.get(c) for c in ckeys]
        results: list[ScoreResult | None] = [
            cache.hit_result(h, r) if h is not None else None for r, h in zip(requests, hits)
        ]
        miss = [i for i, r in enumerate(results) if r is None]
        fresh = score_isolating_failures(self.engine, [requests[i] for i in miss])
        for i, res in zip(miss, fresh):
            results[i] = res
        return results, len(requests) - len(miss), [ckeys[i] for i in miss], fresh

    def _score_unit(self, row: dict) -> dict[str, int]:
        name = self.model["name"]
        errors = json.loads(row.get("image_errors") or "[]")
        try:
            requests, keys = build_requests(row, self.system, self.ablations)
        except Exception as exc:
            # Images were validated when loaded, so this is a bug, not bad input: stop
            # the job, naming the unit (the cause is chained).
            raise RuntimeError(f"unit {row['unit_id']}: cannot build requests: {exc}") from exc
        results, n_cached, miss_keys, fresh = self._score_with_cache(requests, keys)
        table = prediction_table(keys, results, ("Yes", "No"))
        if errors:
            err = pa.table({k: [e.get(k) for e in errors] for k in ("sample_id", "stage", "error_type", "message")})
            err = err.append_column("model", pa.array([name] * len(errors), pa.string()))
            err = err.append_column("source", pa.array([row["unit_id"]] * len(errors), pa.string()))
            storage.write_parquet_atomic(conform(err, ERRORS), self.layout.unit_errors_file(name, row["unit_id"]))
        storage.write_parquet_atomic(table, self.layout.shard_file(name, row["unit_id"]))
        if self.cache_url and miss_keys:
            cache.write_entries(self.cache_url, self.model_key, f"{self.run_id}-{name}-{row['unit_id']}",
                                miss_keys, fresh, ("Yes", "No"))
        return {"n_predictions": table.num_rows, "n_errors": len(errors),
                "n_scored": len(requests) - n_cached, "n_cached": n_cached}
