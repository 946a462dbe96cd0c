"""engine llava_original through the real Ray pipeline (a job like jobs/paper/*-llava-rad.yaml,
on a tiny LLaVA-layout checkpoint in LLaVA-Rad's release form), then the paper table over it."""
from __future__ import annotations

import json

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow]
pytest.importorskip("open_clip")
pytest.importorskip("peft")

from vlm_eval.cli import main  # noqa: E402
from vlm_eval.config import validate_job  # noqa: E402
from vlm_eval.run import run_job  # noqa: E402


def test_llava_rad_style_job_base_and_targeted_lora(tmp_path, ray_local, capsys):
    from vlm_eval.models.tiny_llava_original import build_tiny_llava_original, build_tiny_lora

    release = build_tiny_llava_original(str(tmp_path / "llava-rad"), form="lora")  # + llava-rad-base
    lora = build_tiny_lora(release, str(tmp_path / "lora-layers1"), layers=[1], seed=5)
    opts = {"device": "cpu", "dtype": "float32", "cpu_threads": 1, "model_base": release + "-base"}
    job = validate_job({
        "name": "llava-rad-tiny", "run_id": "llava-rad-tiny", "output": str(tmp_path / "runs"),
        "dataset": {"adapter": "synthetic", "images": str(tmp_path / "images"),
                    "findings": ["cardiomegaly", "pleural effusion"], "options": {"n_samples": 6, "seed": 2}},
        "prompts": {"set": "cxr-binary-v1", "paraphrases": 2},
        "conditions": ["image", "text_only"],
        "models": [{"name": "llava-rad", "engine": "llava_original", "path": release, "options": opts},
                   {"name": "llava-rad-lora-targeted", "engine": "llava_original", "path": release, "lora": lora,
                    "options": opts}],
        "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 4}, "cache": {"enabled": False},
    })
    assert run_job(job).status == "succeeded"
    run = tmp_path / "runs" / "llava-rad-tiny"
    p = pd.read_parquet(run / "predictions")
    assert p["error"].isna().all() and set(p["condition"]) == {"image", "text_only"}
    p["margin"] = p["logprob_yes"] - p["logprob_no"]
    m = p.set_index(["model", "condition", "prompt_id", "sample_id", "variant"])["margin"].sort_index()
    base, tuned = m.loc["llava-rad"], m.loc["llava-rad-lora-targeted"]
    assert base.index.equals(tuned.index) and (base - tuned).abs().max() > 1e-3  # the LoRA is applied
    q = pd.read_parquet(run / "quadrants")
    assert len(q) == 12 and q["complete"].all()

    out = tmp_path / "paper.csv"
    assert main(["compare", str(run), "--paper-table", str(out)]) == 0
    table = pd.read_csv(out)
    assert sorted(table["configuration"]) == ["llava-rad", "llava-rad-lora-targeted"]
    assert (table["n"] == 6).all()
    assert json.loads((tmp_path / "paper.csv.json").read_text())["n"] == 2
