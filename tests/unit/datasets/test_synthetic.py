"""Synthetic CXR-like data: planted findings are really there, labels balanced, idempotent, fast."""
from __future__ import annotations

import csv
import os
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from vlm_eval.config import DatasetConfig, PromptsConfig
from vlm_eval.datasets import load_samples
from vlm_eval.datasets.synthetic import SUPPORTED, draw_cxr, generate_synthetic
from vlm_eval.errors import InputError

S = 128
YY, XX = (np.mgrid[0:S, 0:S] + 0.5) / S
LUNGS = (((((XX - 0.31) / 0.14) ** 2 + ((YY - 0.46) / 0.27) ** 2) <= 1)
         | ((((XX - 0.69) / 0.14) ** 2 + ((YY - 0.46) / 0.27) ** 2) <= 1)) & (np.abs(XX - 0.5) > 0.05)


def _feature(img: np.ndarray, finding: str) -> float:
    """A crude detector per finding (what a radiologist's eye would look for)."""
    a = img.astype(float) / 255
    if finding == "cardiomegaly":  # heart silhouette reaching far lateral of a normal heart
        band = (YY > 0.6) & (YY < 0.74) & (np.abs(XX - 0.53) > 0.16) & (np.abs(XX - 0.53) < 0.22)
        return float((a[band] > 0.45).mean())
    if finding in ("pleural effusion", "consolidation"):  # white opacity in the lower lungs
        return float((a[LUNGS & (YY > 0.46)] > 0.57).mean())
    if finding == "pneumothorax":  # very dark lung without markings
        return float((a[LUNGS] < 0.07).mean())
    return float((a[LUNGS] > 0.6).mean())  # nodule / mass: a bright spot


@pytest.mark.parametrize("finding", SUPPORTED)
def test_planted_findings_are_visible_and_absent_otherwise(finding):
    absent = [_feature(draw_cxr(seed, i, S, finding, False), finding) for seed in (0, 1) for i in range(15)]
    present = [_feature(draw_cxr(seed, i, S, finding, True), finding) for seed in (0, 1) for i in range(15)]
    assert min(present) > max(absent), (finding, max(absent), min(present))


def test_images_look_like_a_cxr():
    img = draw_cxr(0, 0, S, "nodule", False)
    assert img.dtype == np.uint8 and img.shape == (S, S)
    assert img[2, 2] < 40  # dark background
    assert img[LUNGS].mean() < img[np.abs(XX - 0.5) < 0.02].mean()  # lungs darker than the spine


def _manifest_rows(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_generate_is_fast_balanced_and_has_patients(tmp_path):
    t0 = time.process_time()  # CPU time: robust to a busy shared CI machine
    manifest = generate_synthetic(str(tmp_path), n_samples=200, seed=0)
    elapsed = time.process_time() - t0
    assert elapsed < 5.0, f"200 images took {elapsed:.1f}s of CPU"
    rows = _manifest_rows(manifest)
    assert len(rows) == 200 and len(list(tmp_path.glob("*.png"))) == 200
    per = Counter((r["finding"], r["label"]) for r in rows)
    for finding in ("cardiomegaly", "pleural effusion", "pneumothorax", "nodule"):
        assert per[(finding, "yes")] == per[(finding, "no")] == 25
    studies = Counter(r["patient_id"] for r in rows)
    assert set(studies.values()) <= {1, 2, 3} and len(set(studies.values())) > 1
    assert len({r["study_id"] for r in rows}) == 200
    with Image.open(tmp_path / rows[0]["image"]) as im:
        assert im.mode == "L" and im.size == (128, 128)


def test_same_seed_same_bytes_and_reruns_write_nothing(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_synthetic(str(a), n_samples=12, seed=3)
    generate_synthetic(str(b), n_samples=12, seed=3)
    for f in sorted(os.listdir(a)):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    mtimes = {f: os.stat(a / f).st_mtime_ns for f in os.listdir(a)}
    time.sleep(0.01)
    generate_synthetic(str(a), n_samples=12, seed=3)
    assert {f: os.stat(a / f).st_mtime_ns for f in os.listdir(a)} == mtimes
    c = tmp_path / "c"
    generate_synthetic(str(c), n_samples=12, seed=4)
    assert (a / "synth-00000.png").read_bytes() != (c / "synth-00000.png").read_bytes()
    # more samples keep the earlier images identical
    d = tmp_path / "d"
    generate_synthetic(str(d), n_samples=20, seed=3)
    assert (d / "synth-00011.png").read_bytes() == (a / "synth-00011.png").read_bytes()


def test_adapter_through_load_samples(tmp_path):
    cfg = DatasetConfig(adapter="synthetic", images=str(tmp_path), findings=["Cardiomegaly", "effusion"],
                        options={"n_samples": 8, "seed": 1, "size": 64})
    out = load_samples(cfg, PromptsConfig(paraphrases=5), conditions=["image", "text_only", "swap"])
    s = out.samples
    assert len(s) == 8 and len(out.errors) == 0
    assert set(s.finding) == {"cardiomegaly", "pleural effusion"} and set(s.dataset) == {"synthetic"}
    assert all(len(p) == 6 for p in s.prompts) and set(s.question_id) == {
        "cxr-binary-v1:cardiomegaly", "cxr-binary-v1:pleural_effusion"}
    assert all(os.path.exists(u) and u.startswith(str(tmp_path)) for u in s.image_uri)
    assert s.swap_image_uri.notna().all()
    assert out.stats["synthetic"]["images_written"] == 8
    again = load_samples(cfg, PromptsConfig(paraphrases=5))
    assert again.stats["synthetic"]["images_written"] == 0
    assert again.samples.sample_id.tolist() == s.sample_id.tolist()


def test_adapter_rejects_unknown_findings_and_options(tmp_path):
    with pytest.raises(InputError, match="cannot draw finding"):
        load_samples(DatasetConfig(adapter="synthetic", images=str(tmp_path), findings=["hernia"]), PromptsConfig())
    with pytest.raises(InputError, match="unknown key"):
        load_samples(DatasetConfig(adapter="synthetic", images=str(tmp_path), options={"n": 3}), PromptsConfig())


def test_default_images_dir_uses_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_EVAL_CACHE", str(tmp_path / "cache"))
    out = load_samples(DatasetConfig(adapter="synthetic", options={"n_samples": 4}), PromptsConfig())
    assert all(u.startswith(str(tmp_path / "cache")) for u in out.samples.image_uri)
