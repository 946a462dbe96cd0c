"""run.json's engine cache stats: rates over all actors come from the summed counts."""
from __future__ import annotations

import pytest

from vlm_eval.pipeline.execute import aggregate_cache_stats


def _vllm_like(tokens: int, hits: int, queries: int, mm_hits: int) -> dict:
    return {"requests": 10.0, "prompt_tokens": float(tokens), "prefix_cache_hits": float(hits),
            "prefix_cache_hit_rate": hits / tokens if tokens else 0.0, "mm_cache_queries": float(queries),
            "mm_cache_hits": float(mm_hits), "mm_cache_hit_rate": mm_hits / queries if queries else 0.0}


def test_rates_are_weighted_by_each_actors_counts_not_averaged():
    # Actor a: 100 tokens, 90 cached (0.9); actor b: 900 tokens, none cached (0.0).
    merged = aggregate_cache_stats({"a": _vllm_like(100, 90, 4, 3), "b": _vllm_like(900, 0, 36, 0)})
    assert merged["prompt_tokens"] == 1000 and merged["prefix_cache_hits"] == 90
    assert merged["prefix_cache_hit_rate"] == pytest.approx(0.09)  # not (0.9 + 0.0) / 2 = 0.45
    assert merged["mm_cache_hit_rate"] == pytest.approx(3 / 40)  # not (0.75 + 0) / 2
    assert merged["requests"] == 20


def test_no_tokens_anywhere_gives_rate_zero_and_one_actor_is_unchanged():
    assert aggregate_cache_stats({"a": _vllm_like(0, 0, 0, 0), "b": _vllm_like(0, 0, 0, 0)})["prefix_cache_hit_rate"] == 0.0
    one = _vllm_like(200, 50, 8, 2)
    assert aggregate_cache_stats({"a": one}) == pytest.approx(one)


def test_a_rate_reported_without_its_counts_is_the_mean_over_actors():
    merged = aggregate_cache_stats({"a": {"encoder_cache_hit_rate": 0.2, "vision_encoder_passes": 4},
                                    "b": {"encoder_cache_hit_rate": 0.6, "vision_encoder_passes": 1}})
    assert merged == {"encoder_cache_hit_rate": pytest.approx(0.4), "vision_encoder_passes": 5.0}
    # An actor missing the counts: the counts-based rate would be wrong, so the mean is kept.
    partial = aggregate_cache_stats({"a": _vllm_like(100, 90, 4, 3), "b": {"prefix_cache_hit_rate": 0.0}})
    assert partial["prefix_cache_hit_rate"] == pytest.approx(0.45)
