"""The prediction cache's keys, lookups and files, checked against hand-made values
(issue #16: "the cache key could ignore engine options, path or revision").

Written for the mutation run of ``vlm_eval/pipeline/cache.py`` (session 5): each test
kills survivors named in docs/testing.md. Expected keys are sha256 digests of byte
strings written out here, not computed with the code under test.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from vlm_eval.config import ModelConfig
from vlm_eval.engines.base import ScoreRequest, ScoreResult
from vlm_eval.pipeline import cache, cache_store

_OPTS = ("Yes", "No")


# --- model_key ---------------------------------------------------------------------------

def test_model_key_is_the_sha256_of_the_sorted_json_of_every_field_but_name():
    model = {"name": "m", "path": "/m", "engine": "vllm", "revision": None, "lora": None,
             "options": {"max_model_len": 4096, "dtype": "bfloat16"}}
    # json.dumps(sort_keys=True), default separators ", " and ": ", nested keys sorted too,
    # "name" left out; the first 16 hex digits (the folder name model=<key> on disk: a
    # change of this format would orphan every cache written before).
    text = (b'{"engine": "vllm", "lora": null, "options": {"dtype": "bfloat16", "max_model_len": 4096}, '
            b'"path": "/m", "revision": null}')
    want = hashlib.sha256(text).hexdigest()[:16]
    assert cache.model_key(model) == want
    assert len(want) == 16
    # The order the fields (and engine options) were written in does not matter.
    reordered = {"options": {"dtype": "bfloat16", "max_model_len": 4096}, "lora": None, "revision": None,
                 "engine": "vllm", "path": "/m", "name": "other"}
    assert cache.model_key(reordered) == want


def test_model_key_takes_non_json_values_as_their_string():
    # default=str: a pathlib.Path is keyed as its text, the same model as the plain string.
    as_str = {"name": "m", "engine": "vllm", "path": "/models/m", "options": {}}
    as_path = {"name": "m", "engine": "vllm", "path": pathlib.PurePosixPath("/models/m"), "options": {}}
    want = hashlib.sha256(b'{"engine": "vllm", "options": {}, "path": "/models/m"}').hexdigest()[:16]
    assert cache.model_key(as_path) == cache.model_key(as_str) == want


def test_every_model_field_that_changes_a_score_changes_the_key():
    base = ModelConfig.model_construct(name="m", engine="vllm", path="s3://b/models/m", revision="r1", lora=None,
                                       options={"max_model_len": 4096})
    # The fields of a model entry: a new one must be classified here (in the key or not).
    assert set(ModelConfig.model_fields) == {"name", "engine", "path", "revision", "lora", "options"}
    changes = {"engine": "transformers", "path": "s3://b/models/m2", "revision": "r2", "lora": "/adapters/l1",
               "options": {"max_model_len": 8192}}
    key = cache.model_key(base.model_dump())
    keys = {key}
    for field, value in changes.items():
        other = cache.model_key(base.model_copy(update={field: value}).model_dump())
        assert other != key, field
        keys.add(other)
    assert len(keys) == 1 + len(changes)
    # An engine option added (even one with a default value) is a different model too.
    assert cache.model_key(base.model_copy(update={"options": {"max_model_len": 4096, "seed": 0}}).model_dump()) != key
    # The name is a label only: renaming keeps every cached score.
    assert cache.model_key(base.model_copy(update={"name": "renamed"}).model_dump()) == key


# --- request_key -------------------------------------------------------------------------

def test_request_key_is_the_sha256_of_the_fields_joined_by_record_separators():
    req = ScoreRequest(prompt="Is there a nodule?", system="You are a radiologist.", image_uuid="ab12")
    # model key, system, prompt, image id, condition, options joined by \x1f; fields by \x1e.
    text = b"0123456789abcdef\x1eYou are a radiologist.\x1eIs there a nodule?\x1eab12\x1eimage\x1eYes\x1fNo"
    assert cache.request_key("0123456789abcdef", req, "image") == hashlib.sha256(text).digest()
    # No system prompt and no image (text-only): empty fields, not a placeholder.
    bare = ScoreRequest(prompt="q", system=None, image_uuid=None, options=("A", "B", "C"))
    assert cache.request_key("mk", bare, "text_only") == hashlib.sha256(b"mk\x1e\x1eq\x1e\x1etext_only\x1eA\x1fB\x1fC").digest()
    # None and "" are the same (absent) system prompt / image id.
    assert cache.request_key("mk", ScoreRequest(prompt="q", system="", image_uuid=""), "text_only") == \
        hashlib.sha256(b"mk\x1e\x1eq\x1e\x1etext_only\x1eYes\x1fNo").digest()


# --- CacheIndex.get / index_of -----------------------------------------------------------

def _table(keys, yes, no=None, other=None):
    n = len(keys)
    return pa.table({"cache_key": pa.array(keys, pa.binary(32)), "logprob_yes": yes,
                     "logprob_no": no if no is not None else [-0.5] * n,
                     "other_mass": other if other is not None else [None] * n}, schema=cache.CACHE_SCHEMA)


def test_get_of_a_key_beyond_the_last_or_in_an_empty_index_is_none():
    assert cache.EMPTY.get(b"\x01" * 32) is None
    index = cache.index_of(_table([b"\x10" * 32, b"\x20" * 32], [-1.0, -2.0]))
    assert index.get(b"\xff" * 32) is None  # searchsorted gives len(keys) = 2
    assert index.get(b"\x00" * 32) is None  # before the first
    assert index.get(b"\x20" * 32) == (-2.0, -0.5, None)


def test_index_of_a_repeated_key_answers_with_its_first_entry_in_read_order():
    # A partition read before compaction can hold a key twice (two passes scored it).
    # 60 keys, 7 distinct, each entry's logprob_yes = -(its row number): the stable sort
    # keeps the rows of one key in read order, so the lookup finds the first one
    # (key i % 7 first occurs at row i, for i = 0..6). numpy's default argsort of 60
    # strings is not stable and answers with a later row for most keys.
    keys = [bytes([i % 7 + 1]) * 32 for i in range(60)]
    index = cache.index_of(_table(keys, [-float(i) for i in range(60)]))
    assert [index.get(bytes([j + 1]) * 32)[0] for j in range(7)] == [-0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0]


# --- hit_result / entries_table ----------------------------------------------------------

def test_hit_result_names_the_scores_after_the_request_options():
    req = ScoreRequest(prompt="q", options=("Oui", "Non"))
    assert cache.hit_result((-0.25, -1.75, 0.125), req) == ScoreResult(logprobs={"Oui": -0.25, "Non": -1.75},
                                                                       other_mass=0.125)
    assert cache.hit_result((-0.25, -1.75, None)) == ScoreResult(logprobs={"Yes": -0.25, "No": -1.75}, other_mass=None)


def test_entries_table_has_the_cache_schema_even_without_other_mass():
    keys = [b"\x01" * 32, b"\x02" * 32, b"\x03" * 32]
    results = [ScoreResult(logprobs={"Yes": -0.1, "No": -2.0}), ScoreResult(logprobs={}, error="boom"),
               ScoreResult(logprobs={"Yes": -3.0, "No": -0.05})]
    t = cache.entries_table(keys, results, _OPTS)
    assert t.schema == cache.CACHE_SCHEMA  # binary(32) keys, float64 other_mass (all null here)
    assert t.to_pydict() == {"cache_key": [b"\x01" * 32, b"\x03" * 32], "logprob_yes": [-0.1, -3.0],
                             "logprob_no": [-2.0, -0.05], "other_mass": [None, None]}


# --- files: schema, pass tokens, object-store URLs ---------------------------------------

def test_partition_files_are_read_and_compacted_through_the_cache_schema(tmp_path):
    # One file written by the pipeline, one by another writer (a tool merging caches)
    # with its columns in another order and an all-null other_mass stored as null type.
    url = str(tmp_path / "cache")
    a, b = b"\x0a" * 32, b"\x0b" * 32
    cache.write_entries(url, "m", "run-a", [a], [ScoreResult(logprobs={"Yes": -0.5, "No": -1.5}, other_mass=0.25)],
                        _OPTS, ["3f"])
    foreign = pa.table({"other_mass": pa.nulls(1), "logprob_no": [-4.0], "logprob_yes": [-0.125],
                        "cache_key": pa.array([b], pa.binary(32))})
    folder = tmp_path / "cache" / "model=m" / "part=3f"
    pq.write_table(foreign, str(folder / "tool.parquet"))
    for index in (cache.load(url, "m"), cache.load_part(url, "m", "3f", token=uuid.uuid4().hex)):
        assert len(index) == 2
        assert index.get(a) == (-0.5, -1.5, 0.25)
        assert index.get(b) == (-0.125, -4.0, None)
    assert cache.compact(url, "m") == {"partitions": 1, "files_removed": 2}
    (merged,) = folder.glob("*.parquet")
    assert pq.read_schema(str(merged)) == cache.CACHE_SCHEMA
    assert cache.load(url, "m").get(b) == (-0.125, -4.0, None)


def test_load_part_memoises_per_pass_token(tmp_path):
    url = str(tmp_path / "cache")
    a, b = b"\x0a" * 32, b"\x0b" * 32
    res = [ScoreResult(logprobs={"Yes": -1.0, "No": -2.0})]
    cache.write_entries(url, "m", "n1", [a], res, _OPTS, ["01"])
    first = cache.load_part(url, "m", "01", "pass-1")
    assert len(first) == 1
    # The default token is the "" pass (load_unit's default): one memo for both spellings.
    assert cache.load_part(url, "m", "01") is cache.load_part(url, "m", "01", "")
    cache.write_entries(url, "m", "n2", [b], res, _OPTS, ["01"])
    # A new pass (token) reads the partition again and sees what the last pass wrote ...
    later = cache.load_part(url, "m", "01", "pass-2")
    assert len(later) == 2 and later.get(b) == (-1.0, -2.0, None)
    # ... while within a pass the partition is read once (memoised).
    assert cache.load_part(url, "m", "01", "pass-1") is first


def test_a_cache_on_an_object_store_url_lists_its_partitions():
    # fsspec's MemoryFileSystem lists with detail=True unless told otherwise.
    import fsspec

    url = f"memory://vlm-eval-test-{uuid.uuid4().hex}/cache"
    try:
        cache.write_entries(url, "m", "n1", [b"\x01" * 32, b"\x02" * 32],
                            [ScoreResult(logprobs={"Yes": -1.0, "No": -2.0}),
                             ScoreResult(logprobs={"Yes": -3.0, "No": -4.0})], _OPTS, ["aa", cache_store.TEXT_PART])
        assert cache._parts(cache.model_dir(url, "m")) == ["aa", "tx"]
        index = cache.load(url, "m")
        assert (len(index), index.get(b"\x02" * 32)) == (2, (-3.0, -4.0, None))
    finally:
        fs = fsspec.filesystem("memory")
        root = url.split("://", 1)[1].split("/", 1)[0]
        if fs.exists(f"/{root}"):
            fs.rm(f"/{root}", recursive=True)


def test_empty_table_gives_the_empty_index():
    assert cache.index_of(None) is cache.EMPTY
    assert cache.index_of(_table([], [])) is cache.EMPTY


# --- a score input outside the model entry: dataset.max_image_side --------------------------

class _AnswersBySize:
    """An engine whose score depends on the pixels it receives: logprob_yes = -width / 1000."""

    def score(self, requests):
        return [ScoreResult(logprobs={"Yes": -r.image.width / 1000, "No": -1.0}) for r in requests]


# Found by H-pipe (session 5): the key held the file's sha256 only; fixed in cache.request_key
# (image requests key on max_image_side too).
def test_a_changed_max_image_side_rescores_the_image(tmp_path):
    import numpy as np
    import pandas as pd
    from PIL import Image

    from pipeline_helpers import write_samples
    from vlm_eval.pipeline.actors import ScoringActor
    from vlm_eval.pipeline.loader import load_unit
    from vlm_eval.pipeline.units import plan_units

    Image.fromarray(np.zeros((64, 64), np.uint8), "L").save(tmp_path / "a.png")
    f = write_samples(tmp_path / "s.parquet", [{"sample_id": "s0", "image_uri": str(tmp_path / "a.png"),
                                                "swap_image_uri": None, "prompts": ["q"]}])
    unit = plan_units(f, "sys", [], 4, 100).units.to_pylist()[0]
    model = {"name": "m", "engine": "scripted", "options": {}}
    url = str(tmp_path / "cache")
    got = {}
    for run, side in (("r1", 64), ("r2", 16)):
        row = load_unit(unit, samples_file=f, model=model, system="sys", ablations=[], max_image_side=side,
                        cache_url=url, cache_token=run)
        actor = ScoringActor(model, str(tmp_path / run), "sys", [], cache_url=url, run_id=run)
        actor.engine = _AnswersBySize()
        actor(pa.Table.from_pylist([row]))
        got[side] = pd.read_parquet(actor.layout.shard_file("m", unit["unit_id"]))["logprob_yes"].tolist()
    # 64 px wide: -64 / 1000; downscaled to 16 px: -16 / 1000 (before the fix: -0.064 again, from the cache).
    assert got == {64: [-0.064], 16: [-0.016]}
    # the same side again is a cache hit for both sides (nothing rescored, the image not fetched)
    for side, want in ((64, -0.064), (16, -0.016)):
        row = load_unit(unit, samples_file=f, model=model, system="sys", ablations=[], max_image_side=side,
                        cache_url=url, cache_token="r3")
        specs = json.loads(row["specs"])
        assert row["n_fetched"] == 0 and [s["hit"][0] for s in specs] == [want]
