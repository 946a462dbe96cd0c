"""The condition registry: what each condition says, and the new shuffle_patches view."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline_helpers import Recording, score_unit, write_samples

from vlm_eval.conditions import ABLATION_NAMES, CONDITIONS, IMAGE, ViewContext, get_condition, image_conditions
from vlm_eval.config import validate_job
from vlm_eval.pipeline.units import plan_units


def test_registry_says_what_each_condition_needs():
    assert list(CONDITIONS)[0] == IMAGE and ABLATION_NAMES == tuple(list(CONDITIONS)[1:])
    assert {n for n, c in CONDITIONS.items() if c.image_free} == {"text_only"}
    assert get_condition("swap").sample_input == "swap_image_uri"
    assert [c.name for c in image_conditions(["text_only", "swap", "blank"])] == ["image", "blank", "swap"]
    ctx = ViewContext("s1", "abc", (8, 6))
    assert get_condition("swap").image_uuid(ctx) is None  # no partner: no view
    assert get_condition("blank").image_uuid(ctx) == "blank-8x6"
    with pytest.raises(KeyError, match="unknown condition 'nope'"):
        get_condition("nope")


def test_config_accepts_every_registered_condition_and_names_the_rest():
    base = {"name": "x", "output": "/tmp/x", "dataset": {"adapter": "synthetic"},
            "models": [{"name": "m", "engine": "scripted"}]}
    job = validate_job({**base, "conditions": ["image", "text_only", "shuffle_patches"]})
    assert job.ablations == ["text_only", "shuffle_patches"]
    with pytest.raises(Exception, match="shuffle_patches"):
        validate_job({**base, "conditions": ["image", "text_only", "mask_everything"]})


def _patches(px: np.ndarray, g: int) -> list[bytes]:
    ph, pw = px.shape[0] // g, px.shape[1] // g
    return [px[r * ph:(r + 1) * ph, c * pw:(c + 1) * pw].tobytes() for r in range(g) for c in range(g)]


def test_shuffle_patches_sends_a_permutation_of_the_images_patches(tmp_path):
    rng = np.random.default_rng(3)
    px = rng.integers(0, 255, (64, 48), dtype=np.uint8)
    Image.fromarray(px, "L").save(tmp_path / "a.png")
    f = write_samples(tmp_path / "s.parquet", [
        {"sample_id": sid, "image_uri": str(tmp_path / "a.png"), "swap_image_uri": None, "prompts": ["q"]}
        for sid in ("s0", "s1")])
    plan = plan_units(f, None, ["shuffle_patches"], 4, 100)
    engine = Recording()
    score_unit(tmp_path, f, plan.units.to_pylist()[0], ["shuffle_patches"], system=None, engine=engine)
    sent = [r for call in engine.calls for r in call]
    shuffled = {r.metadata["sample_id"]: r for r in sent if r.image_uuid.startswith("shuffle_patches")}
    assert set(shuffled) == {"s0", "s1"}
    original = np.asarray(Image.fromarray(px, "L").convert("RGB"))
    g = get_condition("shuffle_patches").GRID
    views = []
    for sid, req in shuffled.items():
        got = np.asarray(req.image)
        assert got.shape == original.shape
        assert not np.array_equal(got, original)  # anatomy destroyed
        assert sorted(_patches(got, g)) == sorted(_patches(original, g))  # same patches, moved
        assert np.array_equal(np.sort(got, axis=None), np.sort(original, axis=None))  # same histogram
        views.append(got)
    assert not np.array_equal(views[0], views[1])  # seeded per sample
    assert shuffled["s0"].image_uuid != shuffled["s1"].image_uuid
