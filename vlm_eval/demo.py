"""`vlm-eval demo`: the whole job on synthetic CXR-like images and a tiny model with a shortcut.

The model is a tiny LLaVA trained once on CPU (about a minute; then cached) on synthetic
images so that it has learned a shortcut (vlm_eval/models/shortcut.py): cardiomegaly is
answered from the pixels, pneumothorax from the question text alone. The demo shows the
taxonomy finding that planted shortcut, not a finding about any real model.
"""
from __future__ import annotations

import os
import time

from vlm_eval import storage
from vlm_eval.config import Job, validate_job
from vlm_eval.engines.model_paths import SHORTCUT_MODEL, resolve_model_path

MODEL_NAME = "tiny-shortcut"
FINDINGS = ["cardiomegaly", "pneumothorax"]

DEMO_NOTE = (
    "NOTE: the demo model is a tiny LLaVA trained for about a minute on CPU, on synthetic images,\n"
    "      to have a PLANTED SHORTCUT: cardiomegaly is answered from the pixels, pneumothorax from\n"
    "      the question text alone (always \"Yes\"). It evaluates no real model. The quadrants should\n"
    "      show cardiomegaly positives Ideal (the answer changes without the image), cardiomegaly\n"
    "      negatives and every pneumothorax sample Dangerous (same answer with or without the image;\n"
    "      pneumothorax right only where the label is \"yes\")."
)


def demo_job(output: str, n_samples: int) -> Job:
    return validate_job(
        {
            "name": "demo",
            "output": output,
            "dataset": {
                "adapter": "synthetic",
                "images": os.path.join(storage.cache_dir(), "demo-images"),
                "findings": FINDINGS,
                "options": {"n_samples": n_samples, "seed": 0},
            },
            "prompts": {"set": "cxr-binary-v1", "paraphrases": 5},
            "conditions": ["image", "text_only"],
            "taxonomy": {"ablation": "text_only", "reliance": "original"},
            "models": [{"name": MODEL_NAME, "engine": "transformers", "path": SHORTCUT_MODEL,
                        "options": {"device": "cpu", "dtype": "float32", "cpu_threads": 1}}],
            "resources": {"actors": 1, "gpus_per_actor": 0, "cpus_per_actor": 1, "batch_size": 8},
            "failure": {"max_error_fraction": 0.0},
        },
        source="built-in demo job",
    )


def run_demo(output: str = "runs", n_samples: int = 48, progress=None):
    from vlm_eval.run import run_job

    print(DEMO_NOTE, flush=True)
    # Train (first run only) before the job starts, so the wait is explained, not silent.
    t0 = time.perf_counter()
    path = resolve_model_path(SHORTCUT_MODEL)
    if time.perf_counter() - t0 > 2:
        print(f"trained the shortcut model in {time.perf_counter() - t0:.0f} s (cached in {path})", flush=True)
    return run_job(demo_job(output, n_samples), progress=progress)
