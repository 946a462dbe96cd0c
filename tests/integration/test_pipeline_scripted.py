"""The real Ray pipeline with a scripted plug-in engine: planted quadrants come out exactly."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from planted import PROMPTS, make_job, write_case
from vlm_eval.run import run_job

pytestmark = pytest.mark.slow


def test_planted_quadrants_exact(tmp_path, ray_local):
    planted = write_case(tmp_path)
    result = run_job(make_job(tmp_path))
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
    write_case(tmp_path, n_per_quadrant=2)
    run_job(make_job(tmp_path))
    run = tmp_path / "runs" / "planted-1"
    shards = sorted(p.name for p in (run / "predictions" / "model=scripted").iterdir())
    before = pd.read_parquet(run / "quadrants").sort_values("sample_id").reset_index(drop=True)
    mtimes = {p: os.stat(run / "predictions" / "model=scripted" / p).st_mtime_ns for p in shards}
    result = run_job(make_job(tmp_path))
    assert result.counts["models"]["scripted"]["units_scored"] == 0
    assert {p: os.stat(run / "predictions" / "model=scripted" / p).st_mtime_ns for p in shards} == mtimes
    after = pd.read_parquet(run / "quadrants").sort_values("sample_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)


def test_dead_engine_stops_the_job_with_its_cause(tmp_path, ray_local):
    write_case(tmp_path, n_per_quadrant=1)
    job = make_job(tmp_path, models=[{"name": "dead", "engine": "scripted", "options": {"dead": True}}])
    with pytest.raises(Exception) as info:
        run_job(job)
    assert "dead" in str(info.value)
    record = json.loads((tmp_path / "runs" / "planted-1" / "run.json").read_text())
    assert record["status"] == "failed"


def test_error_budget_exceeded_exits_nonzero_but_writes_tables(tmp_path, ray_local, capsys):
    from vlm_eval.cli import main

    write_case(tmp_path, n_per_quadrant=1)  # 4 good samples + 2 bad rows = 33% errors
    job_file = tmp_path / "job.yaml"
    import yaml

    data = make_job(tmp_path).model_dump(mode="json")
    data["failure"]["max_error_fraction"] = 0.1
    job_file.write_text(yaml.safe_dump(data))
    code = main(["run", str(job_file)])
    err = capsys.readouterr().err
    assert code == 1 and "max_error_fraction" in err and "Traceback" not in err
    run = tmp_path / "runs" / "planted-1"
    assert json.loads((run / "run.json").read_text())["status"] == "failed_errors"
    assert len(pd.read_parquet(run / "quadrants")) == 4


def test_planted_secret_never_reaches_outputs(tmp_path, ray_local, monkeypatch, capfd):
    secret = "PLANTEDsecret0123456789abcdefXYZ"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    write_case(tmp_path, n_per_quadrant=1)
    job = make_job(tmp_path, models=[{"name": "scripted", "engine": "scripted",
                                      "options": {"script": str(tmp_path / "script.json"), "api_token": secret}}])
    run_job(job)
    out, err = capfd.readouterr()
    assert secret not in out + err
    run = tmp_path / "runs" / "planted-1"
    for path in run.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"secret leaked into {path}"
    record = json.loads((run / "run.json").read_text())
    assert record["job"]["models"][0]["options"]["api_token"] == "<redacted>"


def test_nightly_rerun_reuses_cached_predictions_and_scores_only_new(tmp_path, ray_local):
    from planted import PLANTS

    planted = write_case(tmp_path, n_per_quadrant=2)
    first = run_job(make_job(tmp_path, run_id="night-1"))
    n_requests = first.counts["models"]["scripted"]["requests_scored"]
    assert first.counts["models"]["scripted"]["requests_cached"] == 0
    # Tonight the manifest has 2 new samples (new images); the rest is unchanged.
    import numpy as np
    from PIL import Image
    import hashlib

    manifest = pd.read_csv(tmp_path / "manifest.csv")
    script = json.loads((tmp_path / "script.json").read_text())
    new_rows = []
    for k in range(2):
        name = f"new{k}.png"
        Image.fromarray(np.full((32, 32), 40 + k, np.uint8), "L").save(tmp_path / "images" / name)
        sha = hashlib.sha256((tmp_path / "images" / name).read_bytes()).hexdigest()
        script["with_image"][sha] = dict(zip(PROMPTS, map(float, PLANTS["Ideal"])))
        row = manifest.iloc[0].to_dict()
        row.update(sample_id=f"new{k}", image=name)
        new_rows.append(row)
    pd.concat([manifest, pd.DataFrame(new_rows)]).to_csv(tmp_path / "manifest.csv", index=False)
    (tmp_path / "script.json").write_text(json.dumps(script))
    second = run_job(make_job(tmp_path, run_id="night-2"))
    counts = second.counts["models"]["scripted"]
    # Only the new samples' image prompts are scored; text-only prompts are all cached.
    assert counts["requests_scored"] == 2 * len(PROMPTS)
    assert counts["requests_cached"] == n_requests
    quads = pd.read_parquet(tmp_path / "runs" / "night-2" / "quadrants")
    assert dict(zip(quads["sample_id"], quads["quadrant"])) == {**planted, "new0": "Ideal", "new1": "Ideal"}
