"""Scoring engines. Importing this package imports no torch, no vLLM and no engine module:
names are loaded on first use (PEP 562), so ``from vlm_eval.engines import ScoreRequest``
costs only ``engines.base``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Engine", "ScoreRequest", "ScoreResult", "ANSWER_OPTIONS", "score_one_by_one",
           "BUILTIN_ENGINES", "load_engine"]

if TYPE_CHECKING:
    from vlm_eval.engines.base import ANSWER_OPTIONS, Engine, ScoreRequest, ScoreResult, score_one_by_one
    from vlm_eval.engines.loader import BUILTIN_ENGINES, load_engine


def __getattr__(name: str) -> Any:
    if name in ("BUILTIN_ENGINES", "load_engine"):
        from vlm_eval.engines import loader as module
    elif name in __all__:
        from vlm_eval.engines import base as module
    else:
        raise AttributeError(f"module 'vlm_eval.engines' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value
