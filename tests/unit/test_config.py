"""Job file validation: every problem at once, with key paths; overrides."""
from __future__ import annotations

import pytest

from vlm_eval.config import apply_overrides, load_job, validate_job
from vlm_eval.errors import ConfigError

MINIMAL = {"name": "j", "dataset": {"adapter": "manifest", "manifest": "m.csv"}, "models": [{"name": "m"}]}


def test_minimal_job_gets_contract_defaults():
    job = validate_job(MINIMAL)
    assert job.conditions == ["image", "text_only"]
    assert job.taxonomy.ablation == "text_only" and job.taxonomy.reliance == "original"
    assert job.prompts.set == "cxr-binary-v1" and job.prompts.paraphrases == 5
    assert job.resources.batch_size == 32 and job.failure.max_error_fraction == 0.01
    assert job.resolved_run_id().startswith("j-")


def test_all_problems_reported_at_once_with_paths():
    bad = {
        "name": "bad name",
        "dataset": {"adapter": "manifest", "limt": 3, "limit": "many"},
        "models": [{"name": "a", "engin": "vllm"}, {"name": "a"}],
        "conditions": ["image", "blur"],
        "resources": {"actors": 0},
        "extra": True,
    }
    with pytest.raises(ConfigError) as info:
        validate_job(bad, source="job.yaml")
    msg = str(info.value)
    for needle in ("name:", "dataset.limt: unknown key", "dataset.limit:", "models.0.engin: unknown key",
                   "conditions:", "resources.actors:", "extra: unknown key", "job.yaml"):
        assert needle in msg, needle
    assert len(info.value.problems) >= 7


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="taxonomy.ablation"):
        validate_job({**MINIMAL, "conditions": ["image", "blank"]})
    with pytest.raises(ConfigError, match="unique"):
        validate_job({**MINIMAL, "models": [{"name": "m"}, {"name": "m"}]})
    with pytest.raises(ConfigError, match="must include 'image'"):
        validate_job({**MINIMAL, "conditions": ["text_only"]})


def test_overrides_parse_yaml_values_and_list_indices(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: j\ndataset: {manifest: m.csv}\nmodels: [{name: m, engine: transformers}]\n")
    job = load_job(str(path), ["models.0.engine=vllm", "dataset.limit=5", "resources.gpus_per_actor=0",
                               "conditions=[image, text_only, blank]"])
    assert job.models[0].engine == "vllm" and job.dataset.limit == 5
    assert job.resources.gpus_per_actor == 0 and job.conditions[-1] == "blank"
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        load_job(str(path), ["nonsense"])
    with pytest.raises(ConfigError, match="settable"):
        load_job(str(path), ["models.7.engine=vllm"])


def test_override_does_not_mutate_on_bad_path():
    data = {"a": [1]}
    assert apply_overrides(data, ["a.x=1"])  # list index must be an integer
    assert data == {"a": [1]}


def test_missing_and_unparseable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_job(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_job(str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_job(str(listy))
