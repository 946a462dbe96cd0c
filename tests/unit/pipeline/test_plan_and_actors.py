"""Work-unit planning, image transport and request building (no Ray needed)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vlm_eval.datasets.images import load_image
from vlm_eval.engines.base import ScoreRequest, ScoreResult
from vlm_eval.engines.scripted import ScriptedEngine
from vlm_eval.errors import EngineError
from vlm_eval.pipeline.actors import (_decode, _encode_for_transport, build_requests, load_unit_images,
                                      score_isolating_failures)
from vlm_eval.pipeline.plan import forward_passes, plan_units
from vlm_eval.prompts import prompt_id

SYSTEM = "sys"


def _samples(n, prompts):
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "image_uri": [f"/img/{i}.png" for i in range(n)],
                         "swap_image_uri": None, "prompts": [list(prompts)] * n})


def test_units_are_stable_and_text_prompts_are_scored_once():
    samples = _samples(5, ["q", "p1", "p2"])
    units = plan_units(samples, SYSTEM, ["text_only"], batch_size=2)
    image_units = [u for u in units if u.kind == "image"]
    text_units = [u for u in units if u.kind == "text"]
    assert [u.unit_id for u in image_units] == ["s00000", "s00001", "s00002"]
    assert [len(u.items) for u in image_units] == [2, 2, 1]
    assert sum(len(u.items) for u in text_units) == 3  # 3 distinct prompts for 5 samples
    assert {it["prompt_id"] for u in text_units for it in u.items} == {prompt_id(SYSTEM, p) for p in ["q", "p1", "p2"]}
    assert [u.to_row() for u in plan_units(samples, SYSTEM, ["text_only"], 2)] == [u.to_row() for u in units]
    assert forward_passes(samples, SYSTEM, ["text_only"]) == {"planned": 15 + 3, "naive": 30}
    assert forward_passes(samples, SYSTEM, ["text_only", "blank"]) == {"planned": 30 + 3, "naive": 45}


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
    data = _encode_for_transport(loaded)
    assert np.array_equal(np.asarray(_decode(data)), np.asarray(loaded.image))
    # Untouched 8-bit PNG/JPEG travel as their original bytes: no re-encode.
    assert (data == path.read_bytes()) == (kind in ("png8", "jpeg"))


def test_requests_cover_every_variant_and_condition_and_failed_images_become_errors(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / "a.png")
    Image.fromarray(np.full((8, 8), 9, np.uint8), "L").save(tmp_path / "b.png")
    prompts = ["q", "p1"]
    samples = pd.DataFrame({"sample_id": ["s0", "s1"], "image_uri": [str(tmp_path / "a.png"), str(tmp_path / "nope.png")],
                            "swap_image_uri": [str(tmp_path / "b.png"), None], "prompts": [prompts, prompts]})
    unit = plan_units(samples, SYSTEM, ["text_only", "blank", "swap"], batch_size=4)[0]
    row = load_unit_images(unit.to_row(), max_image_side=64)
    errors = json.loads(row["image_errors"])
    assert [(e["sample_id"], e["error_type"]) for e in errors] == [("s1", "missing")]
    requests, keys = build_requests(row, SYSTEM, ["text_only", "blank", "swap"])
    got = sorted((k["sample_id"], k["variant"], k["condition"]) for k in keys)
    assert got == sorted(("s0", v, c) for v in (0, 1) for c in ("image", "blank", "swap"))
    swap_req = next(r for r, k in zip(requests, keys) if k["condition"] == "swap")
    assert np.asarray(swap_req.image).max() == 9  # the other patient's image
    blank_req = next(r for r, k in zip(requests, keys) if k["condition"] == "blank")
    assert np.asarray(blank_req.image).max() == 0 and blank_req.image_uuid == "blank-8x8"
    assert all(r.system == SYSTEM for r in requests)


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
