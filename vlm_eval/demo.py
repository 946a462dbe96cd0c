"""`vlm-eval demo`: the whole job on synthetic CXR-like images and a tiny model.

The model is a tiny *random-weight* Gemma3 (MedGemma's architecture) built
locally once and loaded through the same code path as a real model. Its answers
are noise: the demo shows the machinery, not a finding about any real model.
"""
from __future__ import annotations

import os

from vlm_eval import storage
from vlm_eval.config import Job, validate_job
from vlm_eval.engines.model_paths import DEMO_MODEL

UNTRAINED_NOTE = (
    "NOTE: the demo model is a tiny, UNTRAINED random-weight Gemma3 built locally; its answers\n"
    "      are noise. The demo exercises the pipeline end to end, it evaluates no real model."
)


def demo_job(output: str, n_samples: int) -> Job:
    return validate_job(
        {
            "name": "demo",
            "output": output,
            "dataset": {
                "adapter": "synthetic",
                "images": os.path.join(storage.cache_dir(), "demo-images"),
                "findings": ["cardiomegaly", "pleural effusion", "pneumothorax"],
                "options": {"n_samples": n_samples, "seed": 0},
            },
            "prompts": {"set": "cxr-binary-v1", "paraphrases": 5},
            "conditions": ["image", "text_only"],
            "models": [{"name": "tiny-gemma3", "engine": "transformers", "path": DEMO_MODEL,
                        "options": {"device": "cpu", "dtype": "float32", "cpu_threads": 1}}],
            "resources": {"actors": 1, "gpus_per_actor": 0, "cpus_per_actor": 1, "batch_size": 8},
            "failure": {"max_error_fraction": 0.0},
        },
        source="built-in demo job",
    )


def run_demo(output: str = "runs", n_samples: int = 48, progress=None):
    from vlm_eval.run import run_job

    print(UNTRAINED_NOTE, flush=True)
    return run_job(demo_job(output, n_samples), progress=progress)
