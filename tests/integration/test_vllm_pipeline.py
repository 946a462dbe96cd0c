"""The vllm engine through the real Ray pipeline, against the transformers engine.

Same tiny random-weight LLaVA folder, same synthetic samples, two runs: the
predictions agree within TOL and the quadrants are identical. (LLaVA attends
causally everywhere, so vLLM's CPU backend and transformers compute the same thing;
see test_vllm_engine.py for Gemma3's image-attention caveat on CPU.)
"""
from __future__ import annotations


import pandas as pd
import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
pytest.importorskip("vllm")

from vlm_eval.config import validate_job  # noqa: E402
from vlm_eval.models.tiny import build_tiny_model  # noqa: E402
from vlm_eval.run import run_job  # noqa: E402

TOL = 1e-3
VLLM_OPTS = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True,
             "kv_cache_memory_bytes": 64 << 20, "max_num_seqs": 64}


def _job(tmp_path, model_path, engine, run_id):
    options = VLLM_OPTS if engine == "vllm" else {"dtype": "float32", "device": "cpu", "cpu_threads": 1}
    return validate_job({
        "name": "vllm-pipeline", "run_id": run_id, "output": str(tmp_path / "runs"),
        "dataset": {"adapter": "synthetic", "images": str(tmp_path / "images"),
                    "findings": ["cardiomegaly", "pleural effusion"], "options": {"n_samples": 6, "seed": 3}},
        "prompts": {"paraphrases": 2},
        "models": [{"name": "tiny-llava", "engine": engine, "path": model_path, "options": options}],
        "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 3},
        "cache": {"enabled": False},
    })


def test_vllm_engine_in_ray_pipeline_matches_transformers(tmp_path, ray_local):
    model = build_tiny_model("llava", str(tmp_path / "tiny-llava"), seed=0)
    vllm_run = run_job(_job(tmp_path, model, "vllm", "vllm"))
    hf_run = run_job(_job(tmp_path, model, "transformers", "hf"))
    assert vllm_run.status == hf_run.status == "succeeded"

    def preds(run_id):
        p = pd.read_parquet(tmp_path / "runs" / run_id / "predictions")
        assert p["error"].isna().all(), p["error"].dropna().head()
        p["margin"] = p["logprob_yes"] - p["logprob_no"]
        return p.set_index(["condition", "prompt_id", "sample_id", "variant"]).sort_index()

    v, h = preds("vllm"), preds("hf")
    assert len(v) == len(h) > 0 and v.index.equals(h.index)
    assert {"image", "text_only"} == set(v.index.get_level_values("condition"))
    diff = (v["margin"] - h["margin"]).abs()
    assert diff.max() < TOL, diff.max()
    assert ((v["margin"] > 0) == (h["margin"] > 0)).all()
    q_v = pd.read_parquet(tmp_path / "runs" / "vllm" / "quadrants").set_index("sample_id").sort_index()
    q_h = pd.read_parquet(tmp_path / "runs" / "hf" / "quadrants").set_index("sample_id").sort_index()
    assert q_v["complete"].all() and (q_v["quadrant"] == q_h["quadrant"]).all()
