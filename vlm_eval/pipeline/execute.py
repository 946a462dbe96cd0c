"""Run the scoring plan of one model on Ray Data and commit its shards.

The plan (``units.plan_units``) is a small table of unit row ranges; Ray Data maps it
through the loader (``loader.load_unit``: reads each unit's rows from ``samples/``,
cache lookups, fetches) and the scoring actors. The driver only sees one count row
per unit, which feeds the progress events and ``run.json``.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from functools import partial

import pyarrow as pa

from vlm_eval import storage
from vlm_eval.config import Job, ModelConfig
from vlm_eval.layout import RunLayout
from vlm_eval.pipeline.units import Plan

log = logging.getLogger("vlm_eval.pipeline")
UNITS_PER_BLOCK = 4
LOADER_CPUS = 0.5  # a loader task fetches and decodes: mostly I/O, half a CPU each
LOADERS_PER_ACTOR = 4  # enough to hide object-store latency behind one engine


def loader_pool_size(cpus: float | None, actors: int, cpus_per_actor: float) -> int:
    """Concurrent loader tasks: up to LOADERS_PER_ACTOR per engine actor; on a local Ray
    also within the CPUs the actors leave free.

    cpus: the machine's cores on a local Ray; None on a cluster. Unbounded on a local Ray,
    Ray Data starts loader tasks for every block at once, and since a local Ray advertises
    at least 4 logical CPUs they take the cores while the engine actor's process starts and
    imports its engine (measured on 2 cores, 768 samples, tiny transformers model: the actor
    started 6-10 s into the stage, later the bigger the job; with the cap, 2 s). A cluster's
    CPUs are real and Ray queues the loaders on them; its CPUs *now* say nothing about the
    run (an autoscaling cluster whose head has ``num-cpus: 0`` has none until the GPU workers
    come up, and a cap from them would leave one loader for the whole run).
    """
    if cpus is None:
        return max(1, LOADERS_PER_ACTOR * actors)
    free = cpus - actors * cpus_per_actor
    return max(1, min(LOADERS_PER_ACTOR * actors, int(free // LOADER_CPUS)))


def usable_cpus(ray_address: str | None) -> float | None:
    """The machine's cores on a local Ray (which advertises at least 4 logical CPUs so that
    small machines can run an actor beside its loaders), capped by what Ray has; None on a
    cluster (``loader_pool_size``)."""
    import os

    from vlm_eval.pipeline.ray_env import cluster_address

    if cluster_address(ray_address):
        return None
    import ray

    return min(float(ray.cluster_resources().get("CPU", 1.0)), float(os.cpu_count() or 1))


@dataclass
class ModelRunStats:
    model: str
    units_total: int
    units_skipped: int
    units_scored: int = 0
    predictions: int = 0
    errors: int = 0
    scored: int = 0
    cached: int = 0
    images: int = 0
    images_fetched: int = 0
    images_skipped: int = 0
    stale_removed: int = 0
    seconds: float = 0.0
    engine_seconds: float = 0.0
    # steady throughput: requests scored between the first and the last unit's completion
    first_done: tuple[float, int] | None = None  # (time, requests) of the earliest unit
    last_done: float = 0.0
    cache_stats: dict = field(default_factory=dict)

    def unit_done(self, at: float, scored: int) -> None:
        if self.first_done is None or at < self.first_done[0]:
            self.first_done = (at, scored)
        self.last_done = max(self.last_done, at)

    def steady_rate(self) -> float | None:
        """Requests scored per second after the first unit finished (actor start, engine
        build and the first unit's wait left out); None with fewer than two units."""
        if self.first_done is None or self.last_done <= self.first_done[0]:
            return None
        return round((self.scored - self.first_done[1]) / (self.last_done - self.first_done[0]), 2)

    def counts(self) -> dict:
        return {"units": self.units_total, "units_skipped": self.units_skipped, "units_scored": self.units_scored,
                "stale_shards_removed": self.stale_removed, "predictions_written": self.predictions,
                "image_errors": self.errors, "requests_scored": self.scored, "requests_cached": self.cached,
                "images_in_scored_units": self.images, "images_fetched": self.images_fetched,
                "images_skipped_cached": self.images_skipped, "seconds": round(self.seconds, 2),
                "engine_seconds": round(self.engine_seconds, 2),
                "steady_requests_per_s": self.steady_rate(),
                "engine_cache_stats": aggregate_cache_stats(self.cache_stats)}


# A rate -> the (numerator, denominator) counts it is the ratio of (engines/vllm_stats.py).
RATE_COUNTS = {"prefix_cache_hit_rate": ("prefix_cache_hits", "prompt_tokens"),
               "mm_cache_hit_rate": ("mm_cache_hits", "mm_cache_queries")}


def aggregate_cache_stats(per_actor: dict[str, dict]) -> dict:
    """Counts summed over actors; a rate recomputed from its summed counts (an actor that saw
    10x the tokens weighs 10x), or, where an engine reports a rate without its counts, the
    plain mean over actors."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    out: dict[str, float] = {}
    keys = {k for s in per_actor.values() for k in s}
    for k in sorted(keys):
        vals = [float(s[k]) for s in per_actor.values() if number(s.get(k))]
        if vals:
            out[k] = round(sum(vals) / len(vals), 6) if "rate" in k else sum(vals)
    for rate, (num, den) in RATE_COUNTS.items():
        reporting = [s for s in per_actor.values() if number(s.get(rate))]
        if reporting and all(number(s.get(num)) and number(s.get(den)) for s in reporting):
            hits, total = sum(float(s[num]) for s in reporting), sum(float(s[den]) for s in reporting)
            out[rate] = round(hits / total, 6) if total else 0.0
    return out


def remove_stale_shards(layout: RunLayout, model: str, planned: set[str]) -> int:
    """Shards (and their error files) of units the plan no longer has: remove them."""
    removed = 0
    for uid in sorted(layout.committed_units(model) - planned):
        log.info("model %s: removing stale shard %s (not a unit of this plan)", model, uid)
        storage.remove(layout.unit_errors_file(model, uid))
        storage.remove(layout.shard_file(model, uid))
        removed += 1
    return removed


def score_model(job: Job, model: ModelConfig, plan: Plan, run_url: str, progress=None,
                cache_url: str | None = None, run_id: str = "run", attempt: int | None = None) -> ModelRunStats:
    """Score every uncommitted unit of ``model``. Raises if the engine dies."""
    import ray.data

    from vlm_eval.pipeline.actors import ScoringActor
    from vlm_eval.pipeline.loader import load_unit

    layout = RunLayout(run_url)
    ids = plan.ids()
    stale = remove_stale_shards(layout, model.name, set(ids))
    done = layout.committed_units(model.name)
    keep = [i for i, u in enumerate(ids) if u not in done]
    stats = ModelRunStats(model.name, len(ids), len(ids) - len(keep), stale_removed=stale)
    t0 = time.perf_counter()
    emit = progress or (lambda event: None)
    event = lambda: {"model": model.name, "units_done": stats.units_skipped + stats.units_scored,  # noqa: E731
                     "units_total": len(ids), "requests_scored": stats.scored, "requests_cached": stats.cached,
                     "errors": stats.errors, "images_fetched": stats.images_fetched,
                     "elapsed_s": round(time.perf_counter() - t0, 2)}
    if not keep:
        emit(event())
        return stats
    todo = plan.units.take(pa.array(keep))
    res = job.resources
    blocks = [todo.slice(i, UNITS_PER_BLOCK) for i in range(0, todo.num_rows, UNITS_PER_BLOCK)]
    ds = ray.data.from_arrow(blocks)
    ds = ds.map(partial(load_unit, samples_file=layout.samples_file, model=model.model_dump(),
                        system=job.prompts.system, ablations=job.ablations,
                        max_image_side=job.dataset.max_image_side, cache_url=cache_url,
                        cache_token=f"{run_id}-{attempt}-{model.name}-{time.time_ns()}"),
                compute=ray.data.TaskPoolStrategy(size=min(len(blocks), loader_pool_size(
                    usable_cpus(res.ray_address), res.actors, res.cpus_per_actor))),
                num_cpus=LOADER_CPUS)
    ds = ds.map_batches(
        ScoringActor,
        fn_constructor_kwargs={"model": model.model_dump(), "run_url": run_url, "system": job.prompts.system,
                               "ablations": job.ablations, "cache_url": cache_url, "run_id": run_id,
                               "attempt": attempt},
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=res.actors),
        num_cpus=res.cpus_per_actor,
        num_gpus=res.gpus_per_actor,
        resources=res.resources_per_actor or None,
    )
    for row in ds.iter_rows():
        stats.units_scored += 1
        stats.predictions += int(row["n_predictions"])
        stats.errors += int(row["n_errors"])
        stats.scored += int(row["n_scored"])
        stats.cached += int(row["n_cached"])
        stats.images += int(row["n_images"])
        stats.images_fetched += int(row["n_fetched"])
        stats.images_skipped += int(row["n_skipped"])
        stats.cache_stats[row["actor"]] = json.loads(row["cache_stats"] or "{}")
        stats.engine_seconds += float(row["engine_s"])
        stats.unit_done(float(row["done_at"]), int(row["n_scored"]))
        emit(event())
    stats.seconds = time.perf_counter() - t0
    return stats
