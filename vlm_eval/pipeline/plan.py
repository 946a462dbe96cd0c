"""The plan of a run: image-major units over ``samples/`` and the forward passes they save.

See ``units`` for how units are cut and named. ``forward_passes`` compares the
prompts this plan scores with the naive plan (every variant x condition x sample).
"""
from __future__ import annotations

from vlm_eval.conditions import IMAGE_FREE_NAMES, image_conditions
from vlm_eval.pipeline.units import Plan, plan_units, unit_prompt_cap

__all__ = ["Plan", "distinct_text_prompts", "forward_passes", "plan_for_job", "plan_units", "unit_prompt_cap"]


def distinct_text_prompts(samples, system: str | None):
    """One row per distinct prompt text of a samples DataFrame (with its id), sorted by
    prompt_id: what the text units score (for benchmarks and tools)."""
    import pandas as pd

    from vlm_eval.prompts import prompt_id

    texts = sorted({str(p) for ps in samples["prompts"] for p in ps})
    out = pd.DataFrame({"prompt": texts, "prompt_id": [prompt_id(system, p) for p in texts]})
    return out.drop_duplicates("prompt_id").sort_values("prompt_id", kind="stable").reset_index(drop=True)


def plan_for_job(samples_file: str, job) -> Plan:
    cap = unit_prompt_cap(job.resources.batch_size, 1 + job.prompts.paraphrases, job.ablations)
    return plan_units(samples_file, job.prompts.system, job.ablations, job.resources.batch_size, cap)


def forward_passes(plan: Plan, ablations: list[str]) -> dict[str, int]:
    """Prompts scored by this plan vs. the naive plan (before cache hits and dedupe)."""
    ours = plan.n_variants * len(image_conditions(ablations))
    if any(a in IMAGE_FREE_NAMES for a in ablations):
        ours += plan.n_text_prompts
    return {"planned": ours, "naive": plan.n_variants * (1 + len(ablations))}
