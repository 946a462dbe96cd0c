"""Every ablation on the real Ray pipeline with the scripted engine: blank, noise and
swap add planted, exactly known columns next to the text_only quadrant.

The scripted engine keys with-image answers by ``image_uuid``: the image's sha256
under ``image``, the *swap image's* sha256 under ``swap``, ``blank-WxH`` under
``blank`` and ``noise-<crc32(sample_id)>-WxH`` under ``noise``
(each condition's ``image_uuid`` in vlm_eval/conditions/builtin.py).

Plants (every variant alike, so all samples are consistent):
- cardiomegaly: "yes" images answer yes (+2), "no" images answer no (-2). A swap takes
  another patient's image with the opposite label, so every cardiomegaly sample is
  swap-sensitive whichever image the seeded choice picks.
- effusion: every image answers yes (+2): no sample is swap-sensitive.
- blank answers no (-3) for every image; noise answers the default yes (+0.5), except
  sample e_y1's noise image, planted no (-1); text-only answers no (-2).
"""
from __future__ import annotations

import hashlib
import json
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vlm_eval.config import validate_job
from vlm_eval.run import run_job

pytestmark = pytest.mark.slow

SIZE = 32
QUESTIONS = {"cardiomegaly": ("Is there cardiomegaly?", ["Is the heart enlarged?", "Is the cardiac silhouette enlarged?"]),
             "effusion": ("Is there a pleural effusion?", ["Is there fluid in the pleural space?",
                                                          "Does this image show a pleural effusion?"])}
# sample_id: (finding, label, with-image margin)
SAMPLES = {"c_y1": ("cardiomegaly", "yes", 2.0), "c_y2": ("cardiomegaly", "yes", 2.0),
           "c_n1": ("cardiomegaly", "no", -2.0), "c_n2": ("cardiomegaly", "no", -2.0),
           "e_y1": ("effusion", "yes", 2.0), "e_y2": ("effusion", "yes", 2.0), "e_n1": ("effusion", "no", 2.0)}
BLANK, NOISE_DEFAULT, NOISE_E_Y1, TEXT = -3.0, 0.5, -1.0, -2.0


def write_case(root):
    img_dir = root / "images"
    img_dir.mkdir()
    rng = np.random.default_rng(1)
    script = {"with_image": {f"blank-{SIZE}x{SIZE}": {"*": BLANK},
                             f"noise-{zlib.crc32(b'e_y1')}-{SIZE}x{SIZE}": {"*": NOISE_E_Y1}},
              "text_only": {"*": TEXT}, "default": NOISE_DEFAULT}
    rows = []
    for i, (sid, (finding, label, m)) in enumerate(SAMPLES.items()):
        name = f"{sid}.png"
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE), dtype=np.uint8), "L").save(img_dir / name)
        sha = hashlib.sha256((img_dir / name).read_bytes()).hexdigest()
        script["with_image"][sha] = {"*": m}
        question, paras = QUESTIONS[finding]
        rows.append({"sample_id": sid, "image": name, "question": question, "paraphrases": json.dumps(paras),
                     "label": label, "patient_id": f"p{i}", "finding": finding})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    (root / "script.json").write_text(json.dumps(script))


def expected_columns(swap_of: dict[str, str]) -> pd.DataFrame:
    img = {sid: m for sid, (_, _, m) in SAMPLES.items()}
    by_image = {f"{sid}.png": m for sid, m in img.items()}
    rows = {}
    for sid, m in img.items():
        noise = NOISE_E_Y1 if sid == "e_y1" else NOISE_DEFAULT
        swap = by_image[swap_of[sid].rsplit("/", 1)[-1]]
        rows[sid] = {
            "blank_margin": BLANK, "blank_margin_shift": m - BLANK, "blank_reliant": (m > 0) != (BLANK > 0),
            "noise_margin": noise, "noise_margin_shift": m - noise, "noise_reliant": (m > 0) != (noise > 0),
            "swap_margin": swap, "swap_margin_shift": m - swap, "swap_reliant": (m > 0) != (swap > 0),
            "swap_prediction": "yes" if swap > 0 else "no",
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def test_every_ablation_adds_planted_columns(tmp_path, ray_local):
    write_case(tmp_path)
    job = validate_job({
        "name": "abl", "run_id": "abl-1", "output": str(tmp_path / "runs"),
        "dataset": {"adapter": "manifest", "manifest": str(tmp_path / "manifest.csv"),
                    "images": str(tmp_path / "images")},
        "prompts": {"paraphrases": 2},
        "conditions": ["image", "text_only", "blank", "noise", "swap"],
        "models": [{"name": "scripted", "engine": "scripted", "options": {"script": str(tmp_path / "script.json")}}],
        "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 3},
        "cache": {"enabled": False},
    })
    run_job(job)
    run = tmp_path / "runs" / "abl-1"
    samples = pd.read_parquet(run / "samples").set_index("sample_id")
    # Swap images come from another patient (and here, the opposite label of the same finding).
    patient_of_image = dict(zip(samples["image_uri"], samples["patient_id"]))
    label_of_image = dict(zip(samples["image_uri"], samples["label"]))
    for sid, row in samples.iterrows():
        swap = row["swap_image_uri"]
        assert isinstance(swap, str) and swap != row["image_uri"]
        assert patient_of_image[swap] != row["patient_id"]
        assert label_of_image[swap] != row["label"]
        assert swap.rsplit("/", 1)[-1].split("_")[0] == sid.split("_")[0]  # same finding
    quads = pd.read_parquet(run / "quadrants").set_index("sample_id").sort_index()
    expected = expected_columns(samples["swap_image_uri"].to_dict()).sort_index()
    assert list(quads.index) == list(expected.index)
    for col in expected.columns:
        got, want = quads[col].tolist(), expected[col].tolist()
        if col.endswith(("margin", "shift")):
            assert got == pytest.approx(want), col
        else:
            assert got == want, col
    assert quads["swap_reliant"].to_dict() == {"c_n1": True, "c_n2": True, "c_y1": True, "c_y2": True,
                                               "e_n1": False, "e_y1": False, "e_y2": False}
    assert set(quads["blank_prediction"]) == {"no"} and set(quads["noise_prediction"]) == {"yes", "no"}
    # The quadrant still uses text_only only.
    assert (quads["ablation"] == "text_only").all() and quads["complete"].all()
    assert quads["quadrant"].to_dict() == {"c_n1": "Dangerous", "c_n2": "Dangerous", "c_y1": "Ideal",
                                           "c_y2": "Ideal", "e_n1": "Ideal", "e_y1": "Ideal", "e_y2": "Ideal"}
    preds = pd.read_parquet(run / "predictions")
    n_variants = 3
    for cond in ("image", "blank", "noise", "swap"):
        assert len(preds[preds["condition"] == cond]) == len(SAMPLES) * n_variants, cond
    summary = pd.read_parquet(run / "summary.parquet")
    overall = summary[summary["finding"].isna()].iloc[0]
    assert overall["frac_swap_reliant"] == pytest.approx(4 / 7)
    assert overall["frac_blank_reliant"] == pytest.approx(5 / 7)
    assert overall["frac_noise_reliant"] == pytest.approx(3 / 7)
    by_finding = summary[summary["finding"].notna()].set_index("finding")
    assert by_finding.loc["cardiomegaly", "frac_swap_reliant"] == pytest.approx(1.0)
    assert by_finding.loc["effusion", "frac_swap_reliant"] == pytest.approx(0.0)
    assert overall["frac_swap_reliant_ci_low"] <= 4 / 7 <= overall["frac_swap_reliant_ci_high"]
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "succeeded"
