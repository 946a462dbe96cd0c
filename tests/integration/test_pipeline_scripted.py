"""The real Ray pipeline with a scripted plug-in engine: planted quadrants come out exactly."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vlm_eval.config import validate_job
from vlm_eval.run import run_job

pytestmark = pytest.mark.slow

QUESTION = "Is there cardiomegaly?"
PARAS = ["Is the heart enlarged?", "Does the cardiac silhouette appear enlarged?",
         "Is cardiomegaly present in this image?"]
PROMPTS = [QUESTION] + PARAS
# Planted with-image margins per variant; text-only is always "no" (margin -2).
PLANTS = {
    "Ideal": [2, 2, 2, 2],        # consistent yes, text says no -> image-reliant
    "Dangerous": [-2, -2, -2, -2],  # consistent no == text no -> not reliant
    "Fragile": [2, 2, -2, 2],     # inconsistent, v0 yes != text no -> reliant
    "Worst": [-2, 2, -2, -2],     # inconsistent, v0 no == text no -> not reliant
}


def _write_case(root, n_per_quadrant=3):
    img_dir = root / "images"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    rows, script, planted = [], {"with_image": {}, "text_only": {"*": -2.0}}, {}
    i = 0
    for quadrant, margins in PLANTS.items():
        for _ in range(n_per_quadrant):
            name = f"img{i:03d}.png"
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), "L").save(img_dir / name)
            sha = hashlib.sha256((img_dir / name).read_bytes()).hexdigest()
            script["with_image"][sha] = dict(zip(PROMPTS, map(float, margins)))
            sid = f"s{i:03d}"
            rows.append({"sample_id": sid, "image": name, "question": QUESTION, "paraphrases": json.dumps(PARAS),
                         "label": "yes" if i % 2 else "no", "patient_id": f"p{i // 2}", "finding": "cardiomegaly"})
            planted[sid] = quadrant
            i += 1
    # Bad inputs: a missing image and a label that is not yes/no -> errors/, job goes on.
    rows.append({"sample_id": "missing", "image": "nope.png", "question": QUESTION, "paraphrases": json.dumps(PARAS),
                 "label": "yes", "patient_id": "px", "finding": "cardiomegaly"})
    rows.append({"sample_id": "badlabel", "image": "img000.png", "question": QUESTION,
                 "paraphrases": json.dumps(PARAS), "label": "maybe", "patient_id": "py", "finding": "cardiomegaly"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    (root / "script.json").write_text(json.dumps(script))
    return planted


def _job(root, **over):
    data = {
        "name": "planted",
        "run_id": "planted-1",
        "output": str(root / "runs"),
        "dataset": {"adapter": "manifest", "manifest": str(root / "manifest.csv"), "images": str(root / "images")},
        "prompts": {"paraphrases": 3},
        "models": [{"name": "scripted", "engine": "vlm_eval.engines.scripted:ScriptedEngine",
                    "options": {"script": str(root / "script.json")}}],
        "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 4},
        "failure": {"max_error_fraction": 0.5},
    }
    data.update(over)
    return validate_job(data)


def test_planted_quadrants_exact(tmp_path, ray_local):
    planted = _write_case(tmp_path)
    result = run_job(_job(tmp_path))
    run = tmp_path / "runs" / "planted-1"
    quads = pd.read_parquet(run / "quadrants")
    assert "model" in quads and set(quads["model"].astype(str)) == {"scripted"}
    got = dict(zip(quads["sample_id"], quads["quadrant"]))
    assert got == planted
    assert quads["complete"].all()
    errors = pd.read_parquet(run / "errors")
    assert set(errors["sample_id"]) == {"missing", "badlabel"}
    # Accounting identity: every input row is a quadrant row or an error row.
    assert len(quads) + len(errors) == len(planted) + 2
    # Text-only prompts were scored once per distinct prompt, not once per sample.
    preds = pd.read_parquet(run / "predictions")
    text = preds[preds["condition"] == "text_only"]
    assert len(text) == len(PROMPTS) and text["sample_id"].isna().all()
    assert len(preds[preds["condition"] == "image"]) == len(planted) * len(PROMPTS)
    summary = pd.read_parquet(run / "summary.parquet")
    overall = summary[summary["finding"].isna()].iloc[0]
    assert overall["frac_dangerous"] == pytest.approx(0.25)
    assert overall["n"] == len(planted)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "succeeded"
    assert result.status == "succeeded"


def test_rerun_same_run_id_redoes_nothing(tmp_path, ray_local):
    _write_case(tmp_path, n_per_quadrant=2)
    run_job(_job(tmp_path))
    run = tmp_path / "runs" / "planted-1"
    shards = sorted(p.name for p in (run / "predictions" / "model=scripted").iterdir())
    before = pd.read_parquet(run / "quadrants").sort_values("sample_id").reset_index(drop=True)
    mtimes = {p: os.stat(run / "predictions" / "model=scripted" / p).st_mtime_ns for p in shards}
    result = run_job(_job(tmp_path))
    assert result.counts["models"]["scripted"]["units_scored"] == 0
    assert {p: os.stat(run / "predictions" / "model=scripted" / p).st_mtime_ns for p in shards} == mtimes
    after = pd.read_parquet(run / "quadrants").sort_values("sample_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)


def test_dead_engine_stops_the_job_with_its_cause(tmp_path, ray_local):
    _write_case(tmp_path, n_per_quadrant=1)
    job = _job(tmp_path, models=[{"name": "dead", "engine": "scripted", "options": {"dead": True}}])
    with pytest.raises(Exception) as info:
        run_job(job)
    assert "dead" in str(info.value)
    record = json.loads((tmp_path / "runs" / "planted-1" / "run.json").read_text())
    assert record["status"] == "failed"
