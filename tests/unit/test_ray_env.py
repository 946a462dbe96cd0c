"""ray_env: what a driver hands Ray on a cluster / inside `ray job submit`, and what it refuses."""
from __future__ import annotations

import json

import pytest

from vlm_eval.errors import InputError
from vlm_eval.pipeline import ray_env

JOB_ENV = {"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip",
                           "env_vars": {"VLLM_USAGE_STATS_ENABLED": "0", "AWS_DEFAULT_REGION": "eu-west-1"}}}


@pytest.fixture
def in_ray_job(monkeypatch):
    """The environment Ray's job supervisor gives a `ray job submit` driver (job env_vars included)."""
    monkeypatch.setenv(ray_env.JOB_CONFIG_ENV, json.dumps(JOB_ENV))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    monkeypatch.setenv("VLLM_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("VLM_EVAL_CACHE", "/shared/cache")


def test_ray_job_driver_never_resets_what_the_jobs_runtime_env_sets(in_ray_job):
    env = ray_env.driver_runtime_env(ray_env.cluster_address(None))["env_vars"]
    assert env.get("VLM_EVAL_CACHE") == "/shared/cache"  # still forwarded
    assert not set(env) & set(JOB_ENV["runtime_env"]["env_vars"]), env  # Ray refuses to merge the same key


def test_ray_job_relative_output_is_refused_with_the_fix(in_ray_job):
    with pytest.raises(InputError) as err:
        ray_env.check_output("runs", None)
    msg = str(err.value)
    assert "relative path" in msg and "absolute path" in msg and "s3://" in msg
    ray_env.check_output("/mnt/shared/runs", None)
    ray_env.check_output("s3://bucket/runs", None)


def test_ray_job_relative_output_is_fine_for_a_local_run(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(ray_env.JOB_CONFIG_ENV, raising=False)
    ray_env.check_output("runs", None)
    ray_env.check_output("runs", "local")
    with pytest.raises(InputError):
        ray_env.check_output("runs", "10.0.0.5:6379")


def test_quiet_by_default_verbose_on_request(monkeypatch):
    import logging

    monkeypatch.delenv("VLM_EVAL_VERBOSE", raising=False)
    logger = logging.getLogger("vlm_eval")
    old = logger.level
    try:
        logger.setLevel(logging.WARNING)
        assert not ray_env.verbose()
        monkeypatch.setenv("VLM_EVAL_VERBOSE", "1")
        assert ray_env.verbose()
        monkeypatch.delenv("VLM_EVAL_VERBOSE")
        logger.setLevel(logging.DEBUG)  # --debug / -v
        assert ray_env.verbose()
    finally:
        logger.setLevel(old)
