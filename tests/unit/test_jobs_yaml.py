"""Every shipped job file under jobs/ (recursively) loads, validates and names known components;
jobs/paper/ is the paper's grid: five configurations x {MIMIC-CXR-JPG, PadChest}."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vlm_eval.config import load_job
from vlm_eval.engines.loader import BUILTIN_ENGINES

ROOT = Path(__file__).resolve().parents[2] / "jobs"
# YAML under jobs/ that is not a job file (Ray runtime_env for `ray job submit`).
NOT_JOBS = {ROOT / "runtime" / "runtime_env.yaml"}
ALL_YAML = sorted(list(ROOT.rglob("*.yaml")) + list(ROOT.rglob("*.yml")))
JOBS = [p for p in ALL_YAML if p not in NOT_JOBS]
PAPER = sorted((ROOT / "paper").glob("*.yaml"))


def _id(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_there_are_shipped_jobs():
    assert len(JOBS) >= 3
    assert len(PAPER) >= 2
    assert all(p in JOBS for p in PAPER)  # the recursive walk sees jobs/paper/


@pytest.mark.parametrize("path", sorted(NOT_JOBS), ids=_id)
def test_non_job_yaml_is_still_yaml(path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)


@pytest.mark.parametrize("path", JOBS, ids=_id)
def test_shipped_job_is_valid(path):
    from vlm_eval.datasets import ADAPTERS, get_adapter

    job = load_job(str(path))
    assert job.dataset.adapter in ADAPTERS, f"{path.name}: unknown adapter {job.dataset.adapter}"
    unknown = set(job.dataset.options) - set(get_adapter(job.dataset.adapter).options_doc)
    assert not unknown, f"{path.name}: options unknown to {job.dataset.adapter}: {unknown}"
    for model in job.models:
        assert model.engine in BUILTIN_ENGINES or ":" in model.engine
    # Credentials never live in job files.
    text = path.read_text().lower()
    for word in ("aws_secret", "aws_access_key_id", "password", "token:"):
        assert word not in text


def test_llava_rad_never_runs_on_an_hf_format_engine():
    """LLaVA-Rad exists only in the original LLaVA layout: no shipped job may send it to vllm/transformers."""
    for path in JOBS:
        for model in load_job(str(path)).models:
            if "llava-rad" in (model.path or "").lower() or "llava-rad" in model.name.lower():
                assert model.engine == "llava_original", f"{_id(path)}: {model.name} on {model.engine}"


# The five configurations of the paper (arXiv 2603.20985): name -> (engine, LoRA layers or None).
PAPER_CONFIGS = {
    "medgemma-4b": ("vllm", None),
    "medgemma-4b-lora-targeted": ("vllm", "layers15-19"),
    "medgemma-4b-lora-full": ("vllm", "layers0-33"),
    "llava-rad": ("llava_original", None),
    "llava-rad-lora-targeted": ("llava_original", "layers14-18"),
}


def test_paper_grid_is_five_configurations_on_two_datasets():
    jobs = [load_job(str(p)) for p in PAPER]
    pairs = [(m.name, j.dataset.adapter) for j in jobs for m in j.models]
    assert len(pairs) == len(set(pairs)) == 10
    assert set(pairs) == {(name, ds) for name in PAPER_CONFIGS for ds in ("mimic_cxr", "padchest")}
    for job in jobs:
        # One GPU actor; every job asks the same questions the same way, so the runs compare.
        assert (job.resources.actors, job.resources.gpus_per_actor) == (1, 1)
        assert job.conditions == jobs[0].conditions and job.taxonomy == jobs[0].taxonomy
        assert job.prompts == jobs[0].prompts
        assert job.dataset.options.get("balanced_per_finding"), job.name
        for m in job.models:
            engine, layers = PAPER_CONFIGS[m.name]
            assert m.engine == engine, (job.name, m.name)
            if layers is None:
                assert m.lora is None
            else:
                assert m.lora and m.lora.endswith(layers), (job.name, m.name, m.lora)
            if engine == "vllm":  # r = 16 adapters: vLLM must accept rank 16
                assert m.options.get("max_lora_rank") == 16
            else:  # every option is one the engine knows
                from vlm_eval.engines.llava_original import KNOWN_OPTIONS

                assert set(m.options) <= set(KNOWN_OPTIONS), (job.name, m.name)
    # The same adapters on both datasets.
    lora = {}
    for job in jobs:
        for m in job.models:
            assert lora.setdefault(m.name, (m.path, m.lora)) == (m.path, m.lora)
