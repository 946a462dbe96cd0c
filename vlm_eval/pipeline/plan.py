"""Work units: what one engine call scores, and the forward passes it saves.

An *image unit* holds up to ``batch_size`` samples; each sample is scored for
every variant under ``image`` and every image-dependent ablation (blank, noise,
swap), all together so an engine can share the image's encoder/prefix cache.
A *text unit* holds distinct text-only prompts: a text-only prompt is the same
for every image that asks it, so it is scored once per ``prompt_id`` and joined
to its samples by the reducer.

Unit ids are positions in a stable order (samples as stored in ``samples/``,
text prompts sorted by ``prompt_id``), so a resumed run plans the same units.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from vlm_eval.prompts import prompt_id
from vlm_eval.conditions import IMAGE_FREE_NAMES as IMAGE_FREE_ABLATIONS

TEXT_PROMPTS_PER_UNIT_FACTOR = 8  # text prompts are cheap: bigger units, fewer files


@dataclass(frozen=True)
class WorkUnit:
    unit_id: str
    kind: str  # "image" | "text"
    items: list[dict]

    def to_row(self) -> dict:
        return {"unit_id": self.unit_id, "kind": self.kind, "items": json.dumps(self.items)}


def image_units(samples: pd.DataFrame, system: str | None, batch_size: int) -> list[WorkUnit]:
    records = samples[["sample_id", "image_uri", "swap_image_uri", "prompts"]].to_dict("records")
    units = []
    for start in range(0, len(records), batch_size):
        items = []
        for r in records[start : start + batch_size]:
            prompts = [str(p) for p in r["prompts"]]
            items.append(
                {
                    "sample_id": r["sample_id"],
                    "image_uri": r["image_uri"],
                    "swap_image_uri": r["swap_image_uri"] if isinstance(r["swap_image_uri"], str) else None,
                    "prompts": prompts,
                    "prompt_ids": [prompt_id(system, p) for p in prompts],
                }
            )
        units.append(WorkUnit(f"s{start // batch_size:05d}", "image", items))
    return units


def distinct_text_prompts(samples: pd.DataFrame, system: str | None) -> pd.DataFrame:
    """One row per distinct prompt text (with its id), sorted by prompt_id."""
    prompts = samples["prompts"].explode().dropna().astype(str).drop_duplicates()
    out = pd.DataFrame({"prompt": prompts.to_numpy()})
    out["prompt_id"] = [prompt_id(system, p) for p in out["prompt"]]
    return out.drop_duplicates("prompt_id").sort_values("prompt_id", kind="stable").reset_index(drop=True)


def text_units(samples: pd.DataFrame, system: str | None, batch_size: int) -> list[WorkUnit]:
    prompts = distinct_text_prompts(samples, system)
    size = batch_size * TEXT_PROMPTS_PER_UNIT_FACTOR
    records = prompts.to_dict("records")
    return [
        WorkUnit(f"t{start // size:05d}", "text", records[start : start + size])
        for start in range(0, len(records), size)
    ]


def plan_units(samples: pd.DataFrame, system: str | None, ablations: list[str], batch_size: int) -> list[WorkUnit]:
    units = image_units(samples, system, batch_size)
    if any(a in IMAGE_FREE_ABLATIONS for a in ablations):
        units += text_units(samples, system, batch_size)
    return units


def forward_passes(samples: pd.DataFrame, system: str | None, ablations: list[str]) -> dict[str, int]:
    """Prompts scored by this plan vs. the naive plan (every variant x condition x sample)."""
    n_variants = int(samples["prompts"].map(len).sum())
    image_dependent = [a for a in ablations if a not in IMAGE_FREE_ABLATIONS]
    ours = n_variants * (1 + len(image_dependent))
    if any(a in IMAGE_FREE_ABLATIONS for a in ablations):
        ours += len(distinct_text_prompts(samples, system))
    naive = n_variants * (1 + len(ablations))
    return {"planned": ours, "naive": naive}
