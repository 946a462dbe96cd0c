"""A planted case for pipeline tests: images, a manifest and a scripted-engine script
whose answers put known samples in known quadrants."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
from PIL import Image

from vlm_eval.config import validate_job

QUESTION = "Is there cardiomegaly?"
PARAS = ["Is the heart enlarged?", "Does the cardiac silhouette appear enlarged?",
         "Is cardiomegaly present in this image?"]
PROMPTS = [QUESTION] + PARAS
# Planted with-image margins per variant; text-only is always "no" (margin -2).
PLANTS = {
    "Ideal": [2, 2, 2, 2],        # consistent yes, text says no -> image-reliant
    "Dangerous": [-2, -2, -2, -2],  # consistent no == text no -> not reliant
    "Fragile": [2, 2, -2, 2],     # inconsistent, v0 yes != text no -> reliant
    "Worst": [-2, 2, -2, -2],     # inconsistent, v0 no == text no -> not reliant
}


def write_case(root, n_per_quadrant=3):
    img_dir = root / "images"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    rows, script, planted = [], {"with_image": {}, "text_only": {"*": -2.0}}, {}
    i = 0
    for quadrant, margins in PLANTS.items():
        for _ in range(n_per_quadrant):
            name = f"img{i:03d}.png"
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), "L").save(img_dir / name)
            sha = hashlib.sha256((img_dir / name).read_bytes()).hexdigest()
            script["with_image"][sha] = dict(zip(PROMPTS, map(float, margins)))
            sid = f"s{i:03d}"
            rows.append({"sample_id": sid, "image": name, "question": QUESTION, "paraphrases": json.dumps(PARAS),
                         "label": "yes" if i % 2 else "no", "patient_id": f"p{i // 2}", "finding": "cardiomegaly"})
            planted[sid] = quadrant
            i += 1
    # Bad inputs: a missing image and a label that is not yes/no -> errors/, job goes on.
    rows.append({"sample_id": "missing", "image": "nope.png", "question": QUESTION, "paraphrases": json.dumps(PARAS),
                 "label": "yes", "patient_id": "px", "finding": "cardiomegaly"})
    rows.append({"sample_id": "badlabel", "image": "img000.png", "question": QUESTION,
                 "paraphrases": json.dumps(PARAS), "label": "maybe", "patient_id": "py", "finding": "cardiomegaly"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    (root / "script.json").write_text(json.dumps(script))
    return planted


def make_job(root, **over):
    data = {
        "name": "planted",
        "run_id": "planted-1",
        "output": str(root / "runs"),
        "dataset": {"adapter": "manifest", "manifest": str(root / "manifest.csv"), "images": str(root / "images")},
        "prompts": {"paraphrases": 3},
        "models": [{"name": "scripted", "engine": "vlm_eval.engines.scripted:ScriptedEngine",
                    "options": {"script": str(root / "script.json")}}],
        "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 4},
        "failure": {"max_error_fraction": 0.5},
    }
    data.update(over)
    return validate_job(data)
