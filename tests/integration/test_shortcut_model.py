"""A tiny model trained to take a shortcut, through the real Ray pipeline with both engines:
the taxonomy recovers it. Finding A (cardiomegaly) is in the pixels -> mostly Ideal; finding B
(pneumothorax) is answered from the question text -> Dangerous; the text-only ablation is what
separates them (A's answer changes without the image, B's never does)."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow]

from vlm_eval.config import validate_job  # noqa: E402
from vlm_eval.models.shortcut import FINDING_A, FINDING_B, MARKER, ensure_shortcut_model, write_shortcut_dataset  # noqa: E402
from vlm_eval.run import run_job  # noqa: E402

VLLM_OPTS = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True,
             "kv_cache_memory_bytes": 64 << 20, "max_num_seqs": 64}


@pytest.fixture(scope="module")
def shortcut(tmp_path_factory, vlm_cache):
    root = tmp_path_factory.mktemp("shortcut")
    # Trained once per test cache (VLM_EVAL_TEST_CACHE): test_demo.py uses the same model.
    model = ensure_shortcut_model()
    with open(os.path.join(model, MARKER)) as f:
        record = json.load(f)
    manifest = write_shortcut_dataset(str(root / "data"), n_per_finding=24)
    print(f"\nshortcut model trained in {record['train_seconds']} s, loss per epoch {record['loss_per_epoch']}")
    return {"root": root, "model": model, "manifest": manifest, "images": str(root / "data")}


def _run(shortcut, engines: list[str]):
    models = []
    for engine in engines:
        opts = VLLM_OPTS if engine == "vllm" else {"dtype": "float32", "device": "cpu", "cpu_threads": 1}
        models.append({"name": f"shortcut-{engine}", "engine": engine, "path": shortcut["model"], "options": opts})
    job = validate_job({
        "name": "shortcut", "run_id": "-".join(engines), "output": str(shortcut["root"] / "runs"),
        "dataset": {"adapter": "manifest", "manifest": shortcut["manifest"], "images": shortcut["images"]},
        "prompts": {"set": "cxr-binary-v1", "paraphrases": 5},
        "conditions": ["image", "text_only"], "models": models,
        "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 8}, "cache": {"enabled": False},
    })
    result = run_job(job)
    assert result.status == "succeeded"
    return pd.read_parquet(shortcut["root"] / "runs" / job.run_id / "quadrants")


def _check(q: pd.DataFrame, model: str) -> dict:
    q = q[q["model"] == model]
    assert len(q) == 48 and q["complete"].all()
    a, b = q[q["finding"] == FINDING_A], q[q["finding"] == FINDING_B]
    shares = {f: g["quadrant"].value_counts(normalize=True).round(3).to_dict() for f, g in ((FINDING_A, a), (FINDING_B, b))}
    print(f"\n{model}: {shares}")
    # A: the image decides. Its positives are Ideal (text-only says "no"), its negatives agree
    # with text-only (Dangerous, and correct): Ideal share ~ prevalence.
    assert (a["quadrant"] == "Ideal").mean() >= 0.6
    assert (a.loc[a["quadrant"] == "Ideal", "ablated_prediction"] == "no").all()
    assert a["correct"].mean() >= 0.9
    # B: the text decides. Same answer with and without the image, every paraphrase.
    assert (b["quadrant"] == "Dangerous").mean() >= 0.9
    assert (b["ablated_prediction"] == b["prediction"]).all()
    return shares


@pytest.fixture(scope="module")
def hf_quadrants(shortcut, ray_local):
    return _run(shortcut, ["transformers"])


def test_transformers_engine_recovers_the_shortcut(hf_quadrants):
    _check(hf_quadrants, "shortcut-transformers")


@pytest.mark.vllm
def test_vllm_engine_recovers_the_shortcut_and_agrees(shortcut, hf_quadrants):
    pytest.importorskip("vllm")
    q = _run(shortcut, ["vllm"])
    _check(q, "shortcut-vllm")
    hf = hf_quadrants.set_index("sample_id")["quadrant"].sort_index()
    vl = q.set_index("sample_id")["quadrant"].sort_index()
    assert hf.index.equals(vl.index) and (hf == vl).all()
