"""The resume guard and the prediction-cache key, on real runs with the scripted engine
(issue 16.3).

Resume (README, "A real job" / "Commands"): rerunning a run_id continues only the same job. Each changed
dataset, prompt set, condition list and model field (engine, path, revision, LoRA,
options) is refused with a message (InputError; ``vlm-eval run`` exits 2), and the refused
attempt leaves the run folder as it was.

Cache: a cached score is reused only when everything that determines it is the same.
Changing any model field that can change a score (engine, path, revision, LoRA, options)
rescores every request; changing only the model's ``name`` (a label, left out of the key by
``pipeline/cache.py``) reuses every score.
"""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import yaml

from job_edits import tree_digest, with_value
from planted import make_job, write_case
from vlm_eval.cli import main
from vlm_eval.config import validate_job
from vlm_eval.errors import InputError
from vlm_eval.run import run_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("resume")
    write_case(root, n_per_quadrant=1, bad_rows=())
    job = make_job(root, cache={"enabled": False})
    run_job(job)
    (root / "manifest-copy.csv").write_bytes((root / "manifest.csv").read_bytes())
    return root, job.model_dump(mode="json")


DATA_CHANGES = {
    "dataset_manifest": ("dataset.manifest", "manifest-copy.csv"),  # same rows, another file
    "dataset_limit": ("dataset.limit", 2),
    "prompts_paraphrases": ("prompts.paraphrases", 2),
    "prompts_system": ("prompts.system", "Answer yes or no."),
    "conditions": ("conditions", ["image", "text_only", "blank"]),
}
MODEL_CHANGES = {
    "model_engine": ("models.0.engine", "scripted"),  # the same class under its short name
    "model_path": ("models.0.path", "/models/other-weights"),
    "model_revision": ("models.0.revision", "r2"),
    "model_lora": ("models.0.lora", "/models/adapter"),
    "model_options": ("models.0.options.default", -0.25),
}


def _changed(root, base: dict, change: str) -> dict:
    path, value = {**DATA_CHANGES, **MODEL_CHANGES}[change]
    if path == "dataset.manifest":
        value = str(root / value)
    data = with_value(base, path, value)
    assert data != base
    return data


@pytest.mark.parametrize("change", list(DATA_CHANGES) + list(MODEL_CHANGES))
def test_resume_refuses_a_changed_job(first_run, change, capsys):
    root, base = first_run
    run = root / "runs" / "planted-1"
    before = tree_digest(run)
    data = _changed(root, base, change)
    with pytest.raises(InputError) as info:
        run_job(validate_job(data))
    assert "planted-1" in str(info.value) or str(run) in str(info.value)
    assert tree_digest(run) == before, "a refused resume changed the run folder"
    job_file = root / f"job-{change}.yaml"
    job_file.write_text(yaml.safe_dump(data))
    code = main(["run", str(job_file)])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "Traceback" not in err and "run_id" in err
    assert tree_digest(run) == before


def test_resume_accepts_the_same_job_and_a_changed_error_budget(first_run):
    root, base = first_run
    run = root / "runs" / "planted-1"
    quads = pd.read_parquet(run / "quadrants").sort_values("sample_id").reset_index(drop=True)
    for data in (base, with_value(base, "failure.max_error_fraction", 0.25)):
        result = run_job(validate_job(data))
        assert result.status == "succeeded"
        assert result.counts["models"]["scripted"]["units_scored"] == 0  # nothing rescored, nothing mixed
        again = pd.read_parquet(run / "quadrants").sort_values("sample_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(again, quads)


# ------------------------------------------------------------------ the cache key

@pytest.fixture(scope="module")
def cached_base(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("cache")
    write_case(root, n_per_quadrant=1, bad_rows=())
    job = make_job(root, run_id="c-base", cache={"enabled": True, "url": str(root / "cache")})
    first = run_job(job).counts["models"]["scripted"]
    assert first["requests_cached"] == 0 and first["requests_scored"] > 0
    return root, job.model_dump(mode="json"), first["requests_scored"]


@pytest.mark.parametrize("change", list(MODEL_CHANGES))
def test_cache_key_covers_every_model_field_that_changes_a_score(cached_base, change):
    root, base, n = cached_base
    data = with_value(_changed(root, base, change), "run_id", f"c-{change}")
    got = run_job(validate_job(data)).counts["models"]["scripted"]
    assert (got["requests_cached"], got["requests_scored"]) == (0, n), got


def test_cache_reuses_every_score_when_only_the_model_name_changes(cached_base):
    root, base, n = cached_base
    data = with_value(with_value(base, "models.0.name", "renamed"), "run_id", "c-renamed")
    got = run_job(validate_job(data)).counts["models"]["renamed"]
    assert (got["requests_cached"], got["requests_scored"]) == (n, 0), got
    # and the reused scores are the original ones, row for row
    cols = ["sample_id", "variant", "condition", "prompt_id", "logprob_yes", "logprob_no"]

    def preds(run_id, model):
        p = pd.read_parquet(root / "runs" / run_id / "predictions" / f"model={model}")[cols]
        return p.sort_values(cols[:4], na_position="first").reset_index(drop=True)

    pd.testing.assert_frame_equal(preds("c-renamed", "renamed"), preds("c-base", "scripted"))
    info = json.loads((root / "runs" / "c-renamed" / "run.json").read_text())
    assert info["job"]["models"][0]["name"] == "renamed"
    assert os.path.isdir(root / "cache")
