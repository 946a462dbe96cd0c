"""Cache counters of the vllm engine (``VLLMEngine.cache_stats()``): pure bookkeeping, no vLLM import.

What vLLM 0.32 tells us, and where it is read:

- **Prefix cache**: every ``RequestOutput`` carries ``num_cached_tokens`` (prompt tokens
  served from the prefix cache) and ``prompt_token_ids``; summing them per engine is
  exact and needs neither ``disable_log_stats=False`` nor Prometheus (whose registry is
  process-global, so two ``LLM`` objects in one process would share counters).
- **Multimodal processor cache** (images preprocessed once per ``multi_modal_uuids``):
  ``LLMEngine.renderer.stat_mm_cache()`` returns the queries/hits since its last call
  (it resets), the same numbers as the ``vllm:mm_cache_queries`` / ``vllm:mm_cache_hits``
  metrics. Counted per ``LLM`` (entries sharing one ``LLM`` share these counters).
- **Encoder cache**: vLLM 0.32 keeps no hit counter for it (neither the scheduler's
  ``EncoderCacheManager`` nor the metrics expose one), so there is no
  ``encoder_cache_hit_rate``. The test suite counts vision-encoder passes directly by
  wrapping the model's ``embed_multimodal`` (tests/integration/test_vllm_engine.py):
  one pass per image when all prompts of an image go in one batch with one uuid.

Counts are cumulative over the engine's life and can be summed across actors; the
rates are derived from them (0.0 when nothing was asked yet).
"""
from __future__ import annotations

from typing import Any


class MultimodalCacheCounter:
    """vLLM's multimodal processor cache queries/hits of one ``LLM`` (shared by its entries)."""

    def __init__(self) -> None:
        self.queries = 0
        self.hits = 0

    def collect(self, llm: Any) -> None:
        """Add what the renderer counted since the last call (``stat_mm_cache`` resets it)."""
        try:
            stats = llm.llm_engine.renderer.stat_mm_cache()
        except Exception:  # noqa: BLE001 - another vLLM version: no such counter
            return
        if stats is not None:
            self.queries += int(getattr(stats, "queries", 0) or 0)
            self.hits += int(getattr(stats, "hits", 0) or 0)


class CacheCounters:
    """Prefix-cache counts of one engine entry, plus its LLM's multimodal cache counter."""

    def __init__(self, mm: MultimodalCacheCounter) -> None:
        self.mm = mm
        self.prompt_tokens = 0
        self.prefix_cache_hits = 0
        self.requests = 0
        self.image_requests = 0

    def add_output(self, out: Any, has_image: bool) -> None:
        """Count one finished scoring request (a vLLM ``RequestOutput``)."""
        self.requests += 1
        self.image_requests += int(has_image)
        self.prompt_tokens += len(getattr(out, "prompt_token_ids", None) or ())
        self.prefix_cache_hits += int(getattr(out, "num_cached_tokens", 0) or 0)

    def as_dict(self, llm: Any) -> dict[str, float]:
        self.mm.collect(llm)
        return {
            "requests": float(self.requests),
            "image_requests": float(self.image_requests),
            "prompt_tokens": float(self.prompt_tokens),
            "prefix_cache_hits": float(self.prefix_cache_hits),
            "prefix_cache_hit_rate": self.prefix_cache_hits / self.prompt_tokens if self.prompt_tokens else 0.0,
            "mm_cache_queries": float(self.mm.queries),
            "mm_cache_hits": float(self.mm.hits),
            "mm_cache_hit_rate": self.mm.hits / self.mm.queries if self.mm.queries else 0.0,
        }
