"""The condition registry: every condition a job may list, in table order.

``CONDITIONS`` maps name -> `Condition` (see ``base`` for what a condition says);
``ABLATION_NAMES`` is every name but ``image``. Plan, actors, config validation and
the reducer's column order all read this registry, so adding a condition is one
class here (plus its test).
"""
from __future__ import annotations

from vlm_eval.conditions.base import Condition, InputImage, View, ViewContext
from vlm_eval.conditions.builtin import Blank, ImageCondition, Noise, ShufflePatches, Swap, TextOnly
from vlm_eval.schema import IMAGE

CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    ImageCondition(), TextOnly(), Blank(), Noise(), Swap(), ShufflePatches(),
)}
ABLATION_NAMES: tuple[str, ...] = tuple(n for n in CONDITIONS if n != IMAGE)
IMAGE_FREE_NAMES: tuple[str, ...] = tuple(n for n, c in CONDITIONS.items() if c.image_free)


def get_condition(name: str) -> Condition:
    try:
        return CONDITIONS[name]
    except KeyError:
        raise KeyError(f"unknown condition {name!r}; known: {list(CONDITIONS)}") from None


def image_conditions(conditions) -> list[Condition]:
    """``image`` plus the image-dependent conditions among ``conditions``, in registry order."""
    wanted = set(conditions) | {IMAGE}
    return [c for n, c in CONDITIONS.items() if n in wanted and not c.image_free]


def sample_inputs(conditions) -> list[str]:
    """The per-sample input columns the given conditions need (e.g. ``swap_image_uri``)."""
    return list(dict.fromkeys(c.sample_input for c in image_conditions(conditions) if c.sample_input))


__all__ = ["ABLATION_NAMES", "CONDITIONS", "Condition", "IMAGE", "IMAGE_FREE_NAMES", "InputImage", "View",
           "ViewContext", "get_condition", "image_conditions", "sample_inputs"]
