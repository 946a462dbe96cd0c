"""The prediction cache: keys, round trip through files, sorted-array lookups."""
from __future__ import annotations

import hashlib

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


def test_partitions_are_loaded_alone_and_compacted_to_one_file_each(tmp_path):
    from vlm_eval.pipeline import cache_store

    url = str(tmp_path / "cache")
    uris = [f"s3://b/img{i}.png" for i in range(40)]
    parts = [cache_store.partition_of(u) for u in uris]
    for night in range(3):  # three nights of small per-unit files
        keys = [hashlib.sha256(f"{u}-{night}".encode()).digest() for u in uris]
        res = [ScoreResult(logprobs={"Yes": -1.0 * night, "No": -0.5}) for _ in uris]
        for i in range(0, 40, 8):
            cache.write_entries(url, "m", f"n{night}-u{i}", keys[i:i + 8], res[i:i + 8], ("Yes", "No"), parts[i:i + 8])
    # The latest write of a key wins on compaction (rewrite night 2's first key with a new score).
    k0 = hashlib.sha256(f"{uris[0]}-2".encode()).digest()
    cache.write_entries(url, "m", "zz-late", [k0], [ScoreResult(logprobs={"Yes": -9.0, "No": -0.5})],
                        ("Yes", "No"), [parts[0]])
    before = len(list((tmp_path / "cache").rglob("*.parquet")))
    got = cache.compact(url, "m")
    files = list((tmp_path / "cache").rglob("*.parquet"))
    assert len(files) == len(set(parts)) < before
    assert before - got["files_removed"] + got["partitions"] == len(files)
    part = cache.load_part(url, "m", parts[0])
    assert len(part) == 3 * parts.count(parts[0])  # only its own partition's entries
    assert part.get(k0) == (-9.0, -0.5, None)
    assert len(cache.load(url, "m")) == 120
