"""Run the scoring plan of one model on Ray Data and commit its shards."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial

from vlm_eval.config import Job, ModelConfig
from vlm_eval.pipeline.actors import ScoringActor, load_unit_images
from vlm_eval.layout import RunLayout
from vlm_eval.pipeline.plan import WorkUnit

log = logging.getLogger("vlm_eval.pipeline")


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
    seconds: float = 0.0
    by_kind: dict = field(default_factory=dict)


def score_model(job: Job, model: ModelConfig, units: list[WorkUnit], run_url: str,
                progress=None, cache_url: str | None = None, run_id: str = "run") -> ModelRunStats:
    """Score every uncommitted unit of ``model``. Raises if the engine dies."""
    import ray.data

    layout = RunLayout(run_url)
    done = layout.committed_units(model.name)
    todo = [u for u in units if u.unit_id not in done]
    stats = ModelRunStats(model.name, len(units), len(units) - len(todo))
    if not todo:
        return stats
    t0 = time.perf_counter()
    res = job.resources
    # One row per unit; each row is one block so units spread over loaders/actors.
    ds = ray.data.from_items([u.to_row() for u in todo], override_num_blocks=len(todo))
    ds = ds.map(partial(load_unit_images, max_image_side=job.dataset.max_image_side), num_cpus=0.5)
    ds = ds.map_batches(
        ScoringActor,
        fn_constructor_kwargs={
            "model": model.model_dump(),
            "run_url": run_url,
            "system": job.prompts.system,
            "ablations": job.ablations,
            "cache_url": cache_url,
            "run_id": run_id,
        },
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
        if progress:
            progress(model.name, stats.units_skipped + stats.units_scored, len(units))
    stats.seconds = time.perf_counter() - t0
    return stats
