"""The prediction cache: keys, round trip through files, sorted-array lookups."""
from __future__ import annotations

import numpy as np

from vlm_eval.engines.base import ScoreRequest, ScoreResult
from vlm_eval.pipeline import cache


def test_keys_change_with_everything_that_changes_a_score():
    mkey = cache.model_key({"name": "a", "engine": "vllm", "path": "/m", "lora": None, "options": {}})
    assert mkey == cache.model_key({"name": "renamed", "engine": "vllm", "path": "/m", "lora": None, "options": {}})
    assert mkey != cache.model_key({"name": "a", "engine": "vllm", "path": "/m", "lora": "/l", "options": {}})
    base = ScoreRequest(prompt="q", system="s", image_uuid="h1")
    k = cache.request_key(mkey, base, "image")
    assert len(k) == 32
    for other in (ScoreRequest(prompt="q2", system="s", image_uuid="h1"), ScoreRequest(prompt="q", system="t", image_uuid="h1"),
                  ScoreRequest(prompt="q", system="s", image_uuid="h2"),
                  ScoreRequest(prompt="q", system="s", image_uuid="h1", options=("No", "Yes"))):
        assert cache.request_key(mkey, other, "image") != k
    assert cache.request_key(mkey, base, "blank") != k


def test_round_trip_and_lookup_including_keys_ending_in_nul(tmp_path):
    url = str(tmp_path / "cache")
    keys = [bytes([i]) * 31 + b"\x00" for i in range(1, 40)] + [bytes([200 + i]) * 32 for i in range(5)]
    results = [ScoreResult(logprobs={"Yes": -float(i), "No": -0.5}, other_mass=None if i % 2 else 0.1)
               for i in range(len(keys))]
    cache.write_entries(url, "m", "run-a", keys[:20], results[:20], ("Yes", "No"))
    cache.write_entries(url, "m", "run-b", keys[20:], results[20:], ("Yes", "No"))
    cache.write_entries(url, "m", "run-c", [b"\x07" * 32], [ScoreResult(logprobs={}, error="boom")], ("Yes", "No"))
    index = cache.load(url, "m")
    assert len(index) == len(keys)  # the error row was not cached
    assert np.all(index.keys[:-1] <= index.keys[1:])
    for i, k in enumerate(keys):
        assert index.get(k) == (-float(i), -0.5, None if i % 2 else 0.1)
    assert index.get(b"\x07" * 32) is None and index.get(bytes([1]) * 32) is None
    assert cache.load(url, "other-model") is cache.EMPTY
