"""Every shipped job file in jobs/ loads, validates and names known components."""
from __future__ import annotations

from pathlib import Path

import pytest

from vlm_eval.config import load_job
from vlm_eval.engines.loader import BUILTIN_ENGINES

JOBS = sorted((Path(__file__).resolve().parents[2] / "jobs").glob("*.yaml"))


def test_there_are_shipped_jobs():
    assert len(JOBS) >= 3


@pytest.mark.parametrize("path", JOBS, ids=[p.name for p in JOBS])
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
