"""Stage 2 of a model's pipeline: the scoring actor (one engine for the actor's life).

Reads the loader's rows (``loader.load_unit``: request specs, cache hits, fetched
images, error rows) and per unit:

1. renders each missing request's view with its condition (``vlm_eval.conditions``);
2. scores the misses, each distinct request once (a ``blank`` of one size and prompt
   is the same request for every image of that size: scored once per actor and run,
   then reused; across runs the cache's size partition serves it);
3. commits error rows, then the prediction shard (the unit's completion marker),
   then the new cache entries and pre-keys.

A unit with a retryable image error (storage unreachable) commits its shard as
``<unit>.retry``: its rows count in this run's tables, but it is not a planned unit's
shard, so a resume removes it and tries the unit again. A bad sample becomes an error
row; a dead engine raises and stops the job.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import pyarrow as pa

from vlm_eval import storage
from vlm_eval.engines.base import ANSWER_OPTIONS, ScoreRequest, ScoreResult, check_results, score_one_by_one
from vlm_eval.errors import EngineError
from vlm_eval.layout import RunLayout
from vlm_eval.pipeline import cache, prekey
from vlm_eval.pipeline.loader import decode, spec_request, view_images
from vlm_eval.schema import ERRORS, PREDICTIONS_FILE, conform

OUT_COLUMNS = ("unit_id", "kind", "n_predictions", "n_errors", "n_scored", "n_cached", "n_images",
               "n_fetched", "n_skipped", "actor", "cache_stats", "engine_s", "done_at")


def retryable_types() -> frozenset:
    from vlm_eval.datasets import images

    return frozenset(getattr(images, "RETRYABLE_ERROR_TYPES", {"unreachable"}))


def score_isolating_failures(engine, requests: list[ScoreRequest]) -> list[ScoreResult]:
    """Score a batch; if the batch call raises, retry one by one (the shared policy)."""
    if not requests:
        return []
    try:
        return check_results(requests, engine.score(requests))
    except EngineError:
        raise
    except Exception as batch_exc:  # noqa: BLE001 - isolate, then decide
        return score_one_by_one(engine.score, requests, cause=batch_exc)


def prediction_table(specs: list[dict], results: list[ScoreResult], options=ANSWER_OPTIONS,
                     attempt: int | None = None) -> pa.Table:
    yes, no = options[0], options[1]
    if not specs:
        return PREDICTIONS_FILE.empty_table()
    cols: dict[str, list] = {k: [s[k] for s in specs] for k in
                             ("sample_id", "variant", "condition", "prompt_id", "image_sha256")}
    cols["logprob_yes"] = [None if r.error else r.logprobs.get(yes) for r in results]
    cols["logprob_no"] = [None if r.error else r.logprobs.get(no) for r in results]
    cols["other_mass"] = [r.other_mass for r in results]
    cols["error"] = [r.error for r in results]
    cols["attempt"] = [attempt] * len(specs)
    return conform(pa.table(cols), PREDICTIONS_FILE)


class ScoringActor:
    """Holds one engine for the actor's life; scores and commits one unit per call."""

    def __init__(self, model: dict, run_url: str, system: str | None, ablations: list[str],
                 cache_url: str | None = None, run_id: str = "run", attempt: int | None = None):
        from vlm_eval.engines.loader import load_engine

        self.model = model
        self.layout = RunLayout(run_url)
        self.system = system
        self.ablations = ablations
        self.run_id = run_id
        self.attempt = attempt
        self.cache_url = cache_url
        self.model_key = cache.model_key(model)
        self.actor = f"{os.getpid()}-{id(self):x}"
        # (prompt, image id, condition) -> scores of size-only views (blank) scored by this
        # actor: a blank of one size and prompt is scored once per actor, not per image.
        self.size_only_scores: dict[tuple, list] = {}
        try:
            self.engine = load_engine(model)
        except Exception as exc:
            # Construction failures are fatal for the job: say which model and why.
            raise EngineError(f"engine for model {model['name']!r} failed to start: "
                              f"{type(exc).__name__}: {exc}") from exc

    def __call__(self, batch: pa.Table) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in OUT_COLUMNS}
        for row in batch.to_pylist():
            counts = self._score_unit(row)
            for k in OUT_COLUMNS:
                out[k].append(counts[k])
        return out

    def _cache_stats(self) -> str:
        stats = getattr(self.engine, "cache_stats", None)
        try:
            return json.dumps(stats() if callable(stats) else {})
        except Exception:  # noqa: BLE001 - optional diagnostics never fail a unit
            return "{}"

    def _score_misses(self, specs: list[dict], images: dict[str, Any]) -> tuple[list[ScoreResult], list[int], float]:
        """(result per spec, positions scored now, seconds inside the engine)."""
        from vlm_eval.conditions import CONDITIONS

        for s in specs:  # size-only views (blank) this actor scored for an earlier unit
            if s["hit"] is None and CONDITIONS[s["condition"]].size_only:
                s["hit"] = self.size_only_scores.get((s["prompt"], s["image_uuid"], s["condition"]))
                s["reused"] = s["hit"] is not None  # scored in this run: not a cache hit
        views = view_images(specs, images, CONDITIONS)
        miss = [i for i, s in enumerate(specs) if s["hit"] is None]
        # One engine call per distinct request (same prompt and image id = same score).
        distinct: dict[tuple, int] = {}
        requests: list[ScoreRequest] = []
        slot = []
        for i in miss:
            s = specs[i]
            k = (s["prompt"], s["image_uuid"], s["condition"])
            if k not in distinct:
                distinct[k] = len(requests)
                requests.append(spec_request(s, self.system, views.get((s["sample_id"], s["condition"]))))
            slot.append(distinct[k])
        t0 = time.perf_counter()
        fresh = score_isolating_failures(self.engine, requests)
        engine_s = time.perf_counter() - t0  # this unit's time inside the engine (run.json)
        results: list[ScoreResult | None] = [None] * len(specs)
        for i, j in zip(miss, slot):
            results[i] = fresh[j]
            s = specs[i]
            if fresh[j].error is None and CONDITIONS[s["condition"]].size_only:
                yes, no = ANSWER_OPTIONS[0], ANSWER_OPTIONS[1]
                self.size_only_scores[(s["prompt"], s["image_uuid"], s["condition"])] = [
                    fresh[j].logprobs.get(yes), fresh[j].logprobs.get(no), fresh[j].other_mass]
        for i, s in enumerate(specs):
            if s["hit"] is not None:
                results[i] = cache.hit_result(s["hit"])
        return results, miss, engine_s

    def _score_unit(self, row: dict) -> dict[str, Any]:
        name, unit = self.model["name"], row["unit_id"]
        errors = json.loads(row.get("errors") or "[]")
        specs = json.loads(row["specs"])
        try:
            images = {u: decode(b) for u, b in zip(row["image_uris"] or [], row["images"] or [])}
            results, miss, engine_s = self._score_misses(specs, images)
        except EngineError:
            raise
        except Exception as exc:
            # Images were validated when loaded, so this is a bug, not bad input: stop
            # the job, naming the unit (the cause is chained).
            raise RuntimeError(f"unit {unit}: cannot build requests: {exc}") from exc
        table = prediction_table(specs, results, attempt=self.attempt)
        retry = any(e["error_type"] in retryable_types() for e in errors)
        shard_id = f"{unit}.retry" if retry else unit
        if errors:
            err = pa.table({k: [e.get(k) for e in errors] for k in ("sample_id", "stage", "error_type", "message")})
            err = err.append_column("model", pa.array([name] * len(errors), pa.string()))
            err = err.append_column("source", pa.array([unit] * len(errors), pa.string()))
            storage.write_parquet_atomic(conform(err, ERRORS), self.layout.unit_errors_file(name, shard_id))
        storage.write_parquet_atomic(table, self.layout.shard_file(name, shard_id))
        if self.cache_url:
            if miss:
                cache.write_entries(self.cache_url, self.model_key, f"{self.run_id}-{name}-{unit}",
                                    [bytes.fromhex(specs[i]["cache_key"]) for i in miss], [results[i] for i in miss],
                                    ANSWER_OPTIONS, [specs[i]["part"] for i in miss])
            new_keys = json.loads(row.get("new_prekeys") or "[]")
            if new_keys:
                prekey.write(self.cache_url, f"{self.run_id}-{unit}",
                             [(u, bytes.fromhex(k), sha, w, h) for u, k, sha, w, h in new_keys])
        n_cached = sum(1 for s in specs if s["hit"] is not None and not s.get("reused"))
        return {"unit_id": unit, "kind": row["kind"], "n_predictions": table.num_rows, "n_errors": len(errors),
                "n_scored": len(specs) - n_cached, "n_cached": n_cached, "n_images": int(row.get("n_images") or 0),
                "n_fetched": int(row.get("n_fetched") or 0), "n_skipped": int(row.get("n_skipped") or 0),
                "actor": self.actor, "cache_stats": self._cache_stats(), "engine_s": engine_s,
                "done_at": time.time()}
