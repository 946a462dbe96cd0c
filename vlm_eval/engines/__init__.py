"""Scoring engines. Importing this package imports no torch and no vLLM."""
from vlm_eval.engines.base import Engine, ScoreRequest, ScoreResult
from vlm_eval.engines.loader import BUILTIN_ENGINES, load_engine

__all__ = ["Engine", "ScoreRequest", "ScoreResult", "BUILTIN_ENGINES", "load_engine"]
