"""Built-in models: tiny random-weight VLMs of real architectures (demo and tests).

Importing this package imports no torch; building a model does.
"""
from vlm_eval.models.tiny import ARCHITECTURES, build_tiny_model, ensure_demo_model

__all__ = ["ARCHITECTURES", "build_tiny_model", "ensure_demo_model"]
