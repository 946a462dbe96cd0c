"""vlm_eval: find medical VLM samples that are consistent but ignore the image.

Public API, loaded on first use (PEP 562): ``import vlm_eval`` or any subpackage
(``vlm_eval.reduce``) imports no engine, config, Ray, torch or vLLM module by itself.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Job", "load_job", "ScoreRequest", "ScoreResult", "ConfigError", "InputError", "UserError",
           "VlmEvalError", "__version__"]

if TYPE_CHECKING:
    from vlm_eval.config import Job, load_job
    from vlm_eval.engines.base import ScoreRequest, ScoreResult
    from vlm_eval.errors import ConfigError, InputError, UserError, VlmEvalError


def __getattr__(name: str) -> Any:
    if name in ("Job", "load_job"):
        from vlm_eval import config as module
    elif name in ("ScoreRequest", "ScoreResult"):
        from vlm_eval.engines import base as module
    elif name in ("ConfigError", "InputError", "UserError", "VlmEvalError"):
        from vlm_eval import errors as module
    else:
        raise AttributeError(f"module 'vlm_eval' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value
