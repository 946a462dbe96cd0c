"""Work units (image-major, content-addressed), image transport and scoring (no Ray)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from pipeline_helpers import Recording, score_unit, write_samples
from vlm_eval.datasets.images import load_image
from vlm_eval.engines.base import ScoreRequest, ScoreResult
from vlm_eval.engines.scripted import ScriptedEngine
from vlm_eval.errors import EngineError
from vlm_eval.pipeline.actors import score_isolating_failures
from vlm_eval.pipeline.loader import decode, encode_for_transport, load_unit
from vlm_eval.pipeline.plan import forward_passes
from vlm_eval.pipeline.units import plan_units, read_rows, unit_prompt_cap
from vlm_eval.prompts import prompt_id

SYSTEM = "sys"
FINDINGS = 14


def _finding_major(n_images: int, prompts=("q", "p1", "p2")) -> list[dict]:
    """Like the label adapters: every image's samples far apart (finding-major order)."""
    return [{"sample_id": f"f{f}-i{i}", "image_uri": f"/img/{i}.png", "swap_image_uri": None,
             "prompts": [f"{p} finding {f}" for p in prompts]}
            for f in range(FINDINGS) for i in range(n_images)]


def _units(plan, samples_file):
    out = []
    for u in plan.units.to_pylist():
        if u["kind"] == "image":
            rows = read_rows(samples_file, u["start"], u["end"]).to_pandas()
            out.append((u, rows))
    return out


def test_units_hold_whole_images_and_are_bounded(tmp_path):
    f = write_samples(tmp_path / "s.parquet", _finding_major(40), row_group=50)  # units span row groups
    cap = unit_prompt_cap(8, 3, ["text_only", "blank"])  # 8 samples x 3 variants x 2 image conditions = 48
    plan = plan_units(f, SYSTEM, ["text_only", "blank"], 8, cap)
    units = _units(plan, f)
    per_image = 3 * FINDINGS * 2
    owner: dict[str, str] = {}
    for u, rows in units:
        for uri in rows["image_uri"]:
            assert owner.setdefault(uri, u["unit_id"]) == u["unit_id"], f"{uri} split across units"
        n = rows["prompts"].map(len).sum() * 2
        assert n == u["n_prompts"] and (n <= cap or rows["image_uri"].nunique() == 1)
    assert len(owner) == 40 and sum(len(r) for _, r in units) == 40 * FINDINGS
    assert all(r["image_uri"].nunique() == 1 for _, r in units)  # one image (84 prompts) > cap: alone
    # A bigger cap packs several whole images, never more prompts than the cap.
    plan = plan_units(f, SYSTEM, ["text_only", "blank"], 8, 4 * per_image + 10)
    sizes = [r["image_uri"].nunique() for _, r in _units(plan, f)]
    assert sizes == [4] * 10
    text = [u for u in plan.units.to_pylist() if u["kind"] == "text"]
    assert sum(len(json.loads(u["items"])) for u in text) == 3 * FINDINGS == plan.n_text_prompts


def test_unit_ids_come_from_content_not_position(tmp_path):
    rows = _finding_major(6)
    f1 = write_samples(tmp_path / "a.parquet", rows, row_group=7)
    f2 = write_samples(tmp_path / "b.parquet", rows[::-1], row_group=1000)  # other input order, other groups
    per_image = 3 * FINDINGS
    a = plan_units(f1, SYSTEM, [], 8, 2 * per_image)
    b = plan_units(f2, SYSTEM, [], 8, 2 * per_image)
    assert a.ids() == b.ids() and len(set(a.ids())) == 3
    # Another batch size plans other units, under other ids: none can be mistaken for another.
    c = plan_units(f1, SYSTEM, [], 8, 3 * per_image)
    assert not set(c.ids()) & set(a.ids())
    # Same images, other content (a prompt changed): other ids.
    changed = [dict(r, prompts=["other"] + r["prompts"][1:]) if r["sample_id"] == "f0-i0" else r for r in rows]
    d = plan_units(write_samples(tmp_path / "c.parquet", changed), SYSTEM, [], 8, 2 * per_image)
    assert len(set(d.ids()) & set(a.ids())) == 2  # only the unit holding i0 changed
    e = plan_units(f1, SYSTEM, ["text_only", "blank"], 8, 2 * per_image)
    assert forward_passes(e, ["text_only", "blank"]) == {"planned": 6 * FINDINGS * 3 * 2 + 3 * FINDINGS,
                                                           "naive": 6 * FINDINGS * 3 * 3}


@pytest.mark.parametrize("kind", ["png8", "jpeg", "png16", "rgba", "big"])
def test_transport_bytes_decode_to_the_loaded_image(tmp_path, kind):
    rng = np.random.default_rng(0)
    path = tmp_path / f"x.{'jpg' if kind == 'jpeg' else 'png'}"
    if kind == "png16":
        Image.fromarray((rng.integers(0, 4096, (20, 30)) * 16).astype(np.uint16)).save(path)
    elif kind == "rgba":
        Image.fromarray(rng.integers(0, 255, (20, 30, 4), dtype=np.uint8), "RGBA").save(path)
    elif kind == "big":
        Image.fromarray(rng.integers(0, 255, (200, 300), dtype=np.uint8), "L").save(path)
    else:
        Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8), "L").save(path)
    loaded = load_image(str(path), max_side=100)
    data = encode_for_transport(loaded)
    assert np.array_equal(np.asarray(decode(data)), np.asarray(loaded.image))
    # Untouched 8-bit PNG/JPEG travel as their original bytes: no re-encode.
    assert (data == path.read_bytes()) == (kind in ("png8", "jpeg"))


def test_every_variant_and_condition_is_scored_and_failed_images_become_errors(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / "a.png")
    Image.fromarray(np.full((8, 8), 9, np.uint8), "L").save(tmp_path / "b.png")
    prompts = ["q", "p1"]
    f = write_samples(tmp_path / "s.parquet", [
        {"sample_id": "s0", "image_uri": str(tmp_path / "a.png"), "swap_image_uri": str(tmp_path / "b.png"),
         "prompts": prompts},
        {"sample_id": "s1", "image_uri": str(tmp_path / "nope.png"), "swap_image_uri": None, "prompts": prompts}])
    abl = ["text_only", "blank", "swap"]
    plan = plan_units(f, SYSTEM, abl, 4, 10_000)
    unit = next(u for u in plan.units.to_pylist() if u["kind"] == "image")
    engine = Recording()
    row, actor = score_unit(tmp_path, f, unit, abl, engine=engine)
    assert [(e["sample_id"], e["error_type"]) for e in json.loads(row["errors"])] == [("s1", "missing")]
    shard = pd.read_parquet(actor.layout.shard_file("m", unit["unit_id"]))
    got = sorted(zip(shard["sample_id"], shard["variant"], shard["condition"]))
    assert got == sorted(("s0", v, c) for v in (0, 1) for c in ("image", "blank", "swap"))
    assert set(shard["prompt_id"]) == {prompt_id(SYSTEM, p) for p in prompts}
    sent = [r for call in engine.calls for r in call]
    swap_req = next(r for r in sent if r.image is not None and np.asarray(r.image).max() == 9)
    assert swap_req.image_uuid == json.loads(row["specs"])[-1]["image_uuid"]  # the other patient's image
    blank = [r for r in sent if r.image_uuid == "blank-8x8"]
    assert len(blank) == 2 and all(np.asarray(r.image).max() == 0 for r in blank)
    assert all(r.system == SYSTEM for r in sent) and len(engine.calls) == 1  # the whole image in one batch


def test_blank_is_scored_once_per_prompt_and_size_within_a_unit(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(tmp_path / f"{i}.png")
        rows += [{"sample_id": f"s{i}-{k}", "image_uri": str(tmp_path / f"{i}.png"), "swap_image_uri": None,
                  "prompts": [f"q{k}", f"p{k}"]} for k in range(2)]
    f = write_samples(tmp_path / "s.parquet", rows)
    plan = plan_units(f, SYSTEM, ["blank"], 4, 10_000)
    engine = Recording()
    _, actor = score_unit(tmp_path, f, plan.units.to_pylist()[0], ["blank"], engine=engine)
    sent = [r for call in engine.calls for r in call]
    assert len([r for r in sent if r.image_uuid == "blank-8x8"]) == 4  # 4 prompts x 1 size, not x 3 images
    shard = pd.read_parquet(actor.layout.shard_file("m", plan.ids()[0]))
    blank = shard[shard["condition"] == "blank"]
    assert len(blank) == 12 and blank["logprob_yes"].notna().all()  # every sample still has its rows


class _OneBadRequest:
    def score(self, requests):
        if any(r.prompt == "bad" for r in requests):
            raise ValueError("cannot score 'bad'")
        return [ScoreResult(logprobs={"Yes": -0.1, "No": -2.0}) for _ in requests]


def test_a_bad_request_is_isolated_and_a_dead_engine_is_fatal():
    reqs = [ScoreRequest(prompt=p) for p in ("ok", "bad", "ok2")]
    res = score_isolating_failures(_OneBadRequest(), reqs)
    assert [r.error is None for r in res] == [True, False, True] and "cannot score" in res[1].error
    with pytest.raises(EngineError, match="dead engine"):
        score_isolating_failures(ScriptedEngine({"options": {"dead": True}}), reqs)


def test_blank_is_scored_once_per_prompt_and_size_across_units_of_an_actor(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(tmp_path / f"{i}.png")
        rows.append({"sample_id": f"s{i}", "image_uri": str(tmp_path / f"{i}.png"), "swap_image_uri": None,
                     "prompts": ["q", "p"]})
    f = write_samples(tmp_path / "s.parquet", rows)
    plan = plan_units(f, SYSTEM, ["blank"], 1, 4)  # one image per unit
    units = plan.units.to_pylist()
    assert len(units) == 4
    engine = Recording()
    _, actor = score_unit(tmp_path, f, units[0], ["blank"], engine=engine)
    for u in units[1:]:
        row = load_unit(u, samples_file=f, model=actor.model, system=SYSTEM, ablations=["blank"],
                        max_image_side=64, cache_url=None)
        actor(pa.Table.from_pylist([row]))
    sent = [r for call in engine.calls for r in call]
    assert len([r for r in sent if r.image_uuid == "blank-8x8"]) == 2  # 2 prompts x 1 size, for 4 images
    preds = pd.concat(pd.read_parquet(actor.layout.shard_file("m", u["unit_id"])) for u in units)
    blank = preds[preds["condition"] == "blank"]
    assert len(blank) == 8 and blank["logprob_yes"].notna().all()


def test_resume_retries_a_unit_whose_image_was_unreachable(tmp_path):
    from vlm_eval.pipeline.execute import remove_stale_shards

    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / "a.png")
    f = write_samples(tmp_path / "s.parquet", [
        {"sample_id": "ok", "image_uri": str(tmp_path / "a.png"), "swap_image_uri": None, "prompts": ["q"]},
        {"sample_id": "down", "image_uri": "http://127.0.0.1:9/x.png", "swap_image_uri": None, "prompts": ["q"]}])
    plan = plan_units(f, SYSTEM, [], 4, 100)
    row, actor = score_unit(tmp_path, f, plan.units.to_pylist()[0], [])
    assert [e["error_type"] for e in json.loads(row["errors"])] == ["unreachable"]
    # This run's tables have the unit's rows, but the unit is not done: a resume retries it.
    assert actor.layout.committed_units("m") == {plan.ids()[0] + ".retry"}
    assert remove_stale_shards(actor.layout, "m", set(plan.ids())) == 1
    assert actor.layout.committed_units("m") == set()


class _WithCacheStats(Recording):
    def cache_stats(self):
        return {"prefix_cache_hit_rate": 0.5, "vision_encoder_passes": len(self.calls)}


def test_engine_cache_stats_are_collected_per_actor_and_aggregated(tmp_path):
    from vlm_eval.pipeline.execute import aggregate_cache_stats

    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / "a.png")
    f = write_samples(tmp_path / "s.parquet", [
        {"sample_id": "s0", "image_uri": str(tmp_path / "a.png"), "swap_image_uri": None, "prompts": ["q"]}])
    plan = plan_units(f, SYSTEM, [], 4, 100)
    row = load_unit(plan.units.to_pylist()[0], samples_file=f, model={"name": "m", "engine": "scripted"},
                    system=SYSTEM, ablations=[], max_image_side=64, cache_url=None)
    _, actor = score_unit(tmp_path, f, plan.units.to_pylist()[0], [], engine=_WithCacheStats())
    out = actor(pa.Table.from_pylist([row]))
    stats = json.loads(out["cache_stats"][0])
    assert stats == {"prefix_cache_hit_rate": 0.5, "vision_encoder_passes": 2}
    merged = aggregate_cache_stats({"a": stats, "b": {"prefix_cache_hit_rate": 0.7, "vision_encoder_passes": 3}})
    assert merged == {"prefix_cache_hit_rate": 0.6, "vision_encoder_passes": 5.0}
