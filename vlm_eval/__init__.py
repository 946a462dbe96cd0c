"""vlm_eval: find medical VLM samples that are consistent but ignore the image.

Public API (light imports only; engines import torch/vLLM lazily):
"""
from vlm_eval.config import Job, load_job
from vlm_eval.engines.base import ScoreRequest, ScoreResult
from vlm_eval.errors import ConfigError, InputError, UserError, VlmEvalError

__version__ = "0.1.0"
__all__ = ["Job", "load_job", "ScoreRequest", "ScoreResult", "ConfigError", "InputError", "UserError",
           "VlmEvalError", "__version__"]
