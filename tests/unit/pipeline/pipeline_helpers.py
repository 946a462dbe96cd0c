"""Shared helpers of the pipeline unit tests: a samples file, a recording engine."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from vlm_eval.engines.scripted import ScriptedEngine
from vlm_eval.pipeline.actors import ScoringActor
from vlm_eval.pipeline.loader import load_unit
from vlm_eval.pipeline.units import sort_image_major
from vlm_eval.schema import SAMPLES, conform


def write_samples(path, rows: list[dict], row_group: int = 4096) -> str:
    table = sort_image_major(conform(pa.Table.from_pylist(rows), SAMPLES))
    pq.write_table(table, str(path), row_group_size=row_group)
    return str(path)


class Recording:
    """The scripted engine, keeping every request it was sent."""

    def __init__(self):
        self.inner = ScriptedEngine({"name": "m", "engine": "scripted", "options": {}})
        self.calls: list[list] = []

    def score(self, requests):
        self.calls.append(list(requests))
        return self.inner.score(requests)


def score_unit(tmp_path, samples_file: str, unit_row: dict, ablations: list[str], system: str | None = "sys",
               cache_url: str | None = None, engine=None):
    """Load and score one unit as the pipeline does (no Ray); returns (loaded row, actor)."""
    model = {"name": "m", "engine": "scripted", "options": {}}
    row = load_unit(unit_row, samples_file=samples_file, model=model, system=system, ablations=ablations,
                    max_image_side=64, cache_url=cache_url)
    actor = ScoringActor(model, str(tmp_path / "run"), system, ablations, cache_url=cache_url)
    if engine is not None:
        actor.engine = engine
    actor(pa.Table.from_pylist([row]))
    return row, actor
