"""Shared fixtures: one loopback-only local Ray per test session (started lazily)."""
from __future__ import annotations

import os

import pytest

# Loopback-only Ray and no telemetry for every test process.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("VLM_EVAL_OBJECT_STORE_MB", "512")


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A local Ray shared by the tests that need one; shut down at session end."""
    ray = pytest.importorskip("ray")
    from vlm_eval.pipeline.ray_env import ensure_ray

    started = ensure_ray()
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def vlm_cache(tmp_path_factory):
    """A per-session VLM_EVAL_CACHE so tests never touch the user's cache."""
    path = os.environ.get("VLM_EVAL_TEST_CACHE") or str(tmp_path_factory.mktemp("vlm_eval_cache"))
    os.environ["VLM_EVAL_CACHE"] = path
    return path
