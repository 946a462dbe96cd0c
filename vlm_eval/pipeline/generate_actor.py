"""The paraphrase-generation engine in a Ray actor, and the run-side step that uses it.

``RemoteEngine(model)`` starts one ``GenerationActor`` holding ``load_engine(model)``
and exposes its ``generate`` / ``score`` to the driver, so the driver never imports
torch or vLLM. ``prepare_generated_set(job, run_url, existing)`` is the run step:
it writes (or, on resume, reuses) ``RUN/prompt_sets/<name>.yaml`` and returns the
job with ``prompts.set`` pointing at it.
"""
from __future__ import annotations

import logging
from typing import Any

import ray

from vlm_eval.engines.base import ScoreRequest, ScoreResult, can_generate
from vlm_eval.errors import EngineError

log = logging.getLogger("vlm_eval.pipeline")


@ray.remote(max_restarts=0)
class GenerationActor:
    """Holds one engine for paraphrase generation and judging."""

    def __init__(self, model: dict):
        from vlm_eval.engines.loader import load_engine

        self.engine = load_engine(model)

    def can_generate(self) -> bool:
        return can_generate(self.engine)

    def generate(self, requests: list[ScoreRequest], max_tokens: int) -> list[str]:
        return list(self.engine.generate(requests, max_tokens))

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return self.engine.score(requests)


class RemoteEngine:
    """Driver-side proxy of a GenerationActor (same generate/score signatures)."""

    def __init__(self, model: dict, num_gpus: float = 0, num_cpus: float = 1,
                 resources: dict[str, float] | None = None):
        self.name = model.get("name")
        self.actor = GenerationActor.options(num_gpus=num_gpus, num_cpus=num_cpus,
                                             resources=resources or None).remote(dict(model))
        try:
            ok = ray.get(self.actor.can_generate.remote())
        except Exception as exc:  # noqa: BLE001 - the actor's constructor failed
            self.close()
            raise EngineError(f"paraphrase generator {self.name!r} failed to start: {exc}") from exc
        if not ok:
            self.close()
            raise EngineError(f"engine {model.get('engine')!r} of model {self.name!r} has no "
                              "generate(requests, max_tokens): it cannot write paraphrases "
                              "(built in: transformers, scripted)")

    def generate(self, requests: list[ScoreRequest], max_tokens: int) -> list[str]:
        return ray.get(self.actor.generate.remote(requests, max_tokens))

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return ray.get(self.actor.score.remote(requests))

    def close(self) -> None:
        ray.kill(self.actor)


def _generator_model(job) -> dict[str, Any]:
    """The generator's model entry (a ``models`` name or an inline mapping), path resolved."""
    from vlm_eval.engines.model_paths import resolve_model_path

    gen = job.prompts.generate
    if isinstance(gen.model, str):
        model = next(m for m in job.models if m.name == gen.model)
    else:
        model = gen.model
    return model.model_copy(update={"path": resolve_model_path(model.path)}).model_dump()


def prepare_generated_set(job, run_url: str, existing: dict | None) -> tuple[Any, dict, bool]:
    """(job with prompts.set = the generated file, report for run.json, Ray started here).

    A run that already has a generated set (recorded in run.json, or the one file in
    RUN/prompt_sets/) or already has samples reuses it: generation runs once per run.
    """
    from vlm_eval import storage
    from vlm_eval.layout import RunLayout
    from vlm_eval.pipeline.ray_env import ensure_ray
    from vlm_eval.prompts import load_prompt_set
    from vlm_eval.prompts.generate import generate_prompt_set

    gen = job.prompts.generate
    layout = RunLayout(run_url)
    folder = layout.path("prompt_sets")
    prev = dict((existing or {}).get("prompt_set_generated") or {})
    path = prev.get("path") if prev.get("path") and storage.exists(prev["path"]) else None
    found = storage.list_files(folder, ".yaml")
    path = path or (found[0] if len(found) == 1 else None)
    if path is None and storage.exists(layout.samples_file):
        # samples exist (and are reused): never generate a second, different set for them
        return job, {**prev, "reused": True, "set_file_missing": True}, False
    if path is not None:
        pset = load_prompt_set(path)
        report = prev if prev.get("path") == path else {
            "name": pset.name, "version": pset.version, "path": path, "sha256": pset.sha256,
            "derived_from": pset.derived_from}
        report = {**report, "reused": True}
        log.info("reusing generated prompt set %s", path)
    else:
        model = _generator_model(job)
        started = ensure_ray(job.resources.ray_address)
        res = job.resources
        keep = job.prompts.paraphrases if gen.keep is None else gen.keep
        engine = RemoteEngine(model, num_gpus=res.gpus_per_actor, num_cpus=res.cpus_per_actor,
                              resources=res.resources_per_actor or None)
        try:
            pset, report = generate_prompt_set(job.prompts.set, job.dataset.findings, model, gen.candidates,
                                               keep, gen.judge_threshold, folder, engine=engine)
        finally:
            engine.close()
        for name in report["short_findings"]:
            log.warning("generated prompt set: finding %r kept %d of %d paraphrases", name,
                        report["findings"][name]["kept"], keep)
        prompts = job.prompts.model_copy(update={"set": report["path"]})
        return job.model_copy(update={"prompts": prompts}), report, started
    prompts = job.prompts.model_copy(update={"set": path})
    return job.model_copy(update={"prompts": prompts}), report, False
