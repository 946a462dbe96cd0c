"""How many loader tasks run beside the engine actors (pipeline/execute.py)."""
from __future__ import annotations

import pytest

from vlm_eval.pipeline.execute import LOADER_CPUS, LOADERS_PER_ACTOR, loader_pool_size


@pytest.mark.parametrize("cpus, actors, cpus_per_actor, expected", [
    (2, 1, 1, 2),      # 2-core machine: 1 CPU left = 2 loaders of 0.5 CPU; the actor keeps its core
    (4, 1, 1, 4),      # 3 CPUs left would fit 6 loaders: capped at 4 per actor
    (64, 8, 4, 32),    # GPU node: 32 CPUs left = 64 slots, 8 actors x 4 loaders = 32
    (4, 4, 1, 1),      # nothing left: still one loader (never zero: the job must move)
    (1, 1, 1, 1),
    (8, 1, 0, 4),      # GPU-only actor reserving no CPU
])
def test_loader_pool_leaves_the_actors_their_cpus(cpus, actors, cpus_per_actor, expected):
    size = loader_pool_size(cpus, actors, cpus_per_actor)
    assert size == expected
    if size > 1:  # the loaders fit beside the actors
        assert size * LOADER_CPUS + actors * cpus_per_actor <= cpus
    assert size <= max(1, LOADERS_PER_ACTOR * actors)


@pytest.mark.parametrize("actors", [1, 8])
def test_on_a_cluster_the_loaders_do_not_depend_on_the_cpus_up_now(actors):
    # an autoscaling cluster whose head has num-cpus 0 reports no CPU before its GPU workers
    # come up: a cap from that would leave one loader for the whole run
    assert loader_pool_size(None, actors, 1) == LOADERS_PER_ACTOR * actors
    assert loader_pool_size(0, actors, 1) == 1  # what the old rule gave there (a local Ray never has 0)


def test_usable_cpus_is_none_on_a_cluster_address_without_asking_ray(monkeypatch):
    import sys

    from vlm_eval.pipeline.execute import usable_cpus

    monkeypatch.setitem(sys.modules, "ray", None)  # would raise ImportError if it were asked
    assert usable_cpus("ray://head:10001") is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert usable_cpus(None) is None
