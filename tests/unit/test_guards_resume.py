"""The resume guard without Ray (issue 16.3): a real run whose every manifest row is
rejected (so it plans no work unit and starts no Ray) records its job in run.json; a
rerun of its run_id with any changed dataset / prompts / conditions / model field is
refused with a message naming what changed (InputError; ``vlm-eval run`` exits 2) and
leaves the run folder untouched, while the unchanged job is accepted.

The same guard on a run with real scores: tests/integration/test_guards_resume_cache.py.
"""
from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import yaml

from job_edits import tree_digest, with_value
from vlm_eval.cli import main
from vlm_eval.config import validate_job
from vlm_eval.errors import InputError, JobFailedError
from vlm_eval.run import run_job

# change -> (dotted path in the job, new value, a word the refusal must name)
CHANGES = {
    "dataset_manifest": ("dataset.manifest", "COPY", "dataset"),
    "dataset_limit": ("dataset.limit", 1, "dataset"),
    "prompts_paraphrases": ("prompts.paraphrases", 1, "prompts"),
    "prompts_system": ("prompts.system", "Answer yes or no.", "prompts"),
    "conditions": ("conditions", ["image", "text_only", "blank"], "conditions"),
    "model_engine": ("models.0.engine", "vlm_eval.engines.scripted:ScriptedEngine", "engine"),
    "model_path": ("models.0.path", "/models/other-weights", "path"),
    "model_revision": ("models.0.revision", "r2", "revision"),
    "model_lora": ("models.0.lora", "/models/adapter", "lora"),
    "model_options": ("models.0.options", {"default": -0.25}, "options"),
}


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    """A finished run (every row has a bad label: 100% errors, no unit, no Ray) and its job."""
    root = tmp_path_factory.mktemp("resume-unit")
    rows = [{"sample_id": s, "image": f"{s}.png", "question": "Is there X?", "label": bad}
            for s, bad in (("a", "maybe"), ("b", "perhaps"))]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    (root / "manifest-copy.csv").write_bytes((root / "manifest.csv").read_bytes())
    data = {"name": "g", "run_id": "g-1", "output": str(root / "runs"),
            "dataset": {"adapter": "manifest", "manifest": str(root / "manifest.csv"), "images": str(root)},
            "prompts": {"paraphrases": 2}, "conditions": ["image", "text_only"],
            "models": [{"name": "m", "engine": "scripted", "options": {"default": 0.5}}],
            "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 4}}
    with pytest.raises(JobFailedError):
        run_job(validate_job(data))
    run = root / "runs" / "g-1"
    assert json.loads((run / "run.json").read_text())["status"] == "failed_errors"
    return root, data


def _changed(root, data, change):
    path, value, _ = CHANGES[change]
    return with_value(data, path, str(root / "manifest-copy.csv") if value == "COPY" else value)


@pytest.mark.parametrize("change", list(CHANGES))
def test_resume_refuses_each_change_and_names_it(failed_run, change, capsys):
    root, data = failed_run
    run = root / "runs" / "g-1"
    before = tree_digest(run)
    new = _changed(root, data, change)
    with pytest.raises(InputError) as info:
        run_job(validate_job(new))
    message = str(info.value)
    assert CHANGES[change][2] in message and "g-1" in message, message
    assert tree_digest(run) == before, "a refused resume wrote into the run folder"
    job_file = root / f"job-{change}.yaml"
    job_file.write_text(yaml.safe_dump(new))
    assert main(["run", str(job_file)]) == 2
    err = capsys.readouterr().err
    assert CHANGES[change][2] in err and "Traceback" not in err, err[-2000:]
    assert tree_digest(run) == before


def test_each_model_change_is_refused_alone(failed_run):
    """The other fields of the entry are unchanged: the refusal is about the one field."""
    root, data = failed_run
    for change in [c for c in CHANGES if c.startswith("model_")]:
        field = CHANGES[change][2]
        with pytest.raises(InputError) as info:
            run_job(validate_job(_changed(root, data, change)))
        others = [f for f in ("engine", "path", "revision", "lora", "options") if f != field]
        named = [f for f in others if f"changed {f}" in str(info.value) or f", {f}" in str(info.value)]
        assert named == [], (change, str(info.value))


def test_resume_accepts_the_unchanged_job(failed_run):
    root, data = failed_run
    run = root / "runs" / "g-1"
    with pytest.raises(JobFailedError):  # the same 100% errors again, not a refusal
        run_job(validate_job(copy.deepcopy(data)))
    info = json.loads((run / "run.json").read_text())
    assert info["attempt"] >= 2 and info["status"] == "failed_errors"
