"""Engine lookup: built-in names or ``package.module:factory`` plug-ins."""
from __future__ import annotations

from typing import Any, Mapping

from vlm_eval.engines.base import Engine
from vlm_eval.errors import EngineError, UserError
from vlm_eval.registry import resolve

BUILTIN_ENGINES: dict[str, str] = {
    "transformers": "vlm_eval.engines.transformers:TransformersEngine",
    "vllm": "vlm_eval.engines.vllm:VLLMEngine",
    "scripted": "vlm_eval.engines.scripted:ScriptedEngine",
    # LLaVA checkpoints in the original LLaVA code's layout (LLaVA-Rad): see llava_original.py
    "llava_original": "vlm_eval.engines.llava_original:LlavaOriginalEngine",
}


def check_engine(spec: str) -> None:
    """Refuse, at job validation (before Ray starts), an engine that cannot be built:
    an unknown name, or a plug-in whose module does not import or lacks the factory.
    Built-ins are not imported here (vLLM is heavy; its absence is reported by the engine)."""
    if spec in BUILTIN_ENGINES:
        return
    factory = resolve(spec, "engine", BUILTIN_ENGINES)
    if not callable(factory):
        raise UserError(f"engine plug-in {spec!r} names a {type(factory).__name__}, not a callable factory")


def load_engine(model: Mapping[str, Any]) -> Engine:
    """Build the engine for one ``models:`` entry (called once per actor)."""
    factory = resolve(str(model["engine"]), "engine", BUILTIN_ENGINES)
    engine = factory(dict(model))
    if not callable(getattr(engine, "score", None)):
        raise EngineError(
            f"engine {model['engine']!r} returned {type(engine).__name__}, which has no "
            "score(requests) method; a factory must return an object implementing the Engine protocol"
        )
    return engine
