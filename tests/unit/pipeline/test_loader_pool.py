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
