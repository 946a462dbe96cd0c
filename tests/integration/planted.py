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


def write_case(root, n_per_quadrant=3, *, question=QUESTION, paraphrases=PARAS, plants=PLANTS,
               finding="cardiomegaly", seed=0, size=32, bad_rows=("missing", "badlabel"),
               patient_of=lambda i: f"p{i // 2}"):
    """Images + manifest.csv + script.json under ``root``; returns {sample_id: planted quadrant}.

    ``plants`` maps a quadrant to the with-image margin of each variant; text-only
    always answers no (-2). ``bad_rows`` adds a missing image and/or a bad label.
    """
    prompts = [question] + list(paraphrases)
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows, script, planted = [], {"with_image": {}, "text_only": {"*": -2.0}}, {}
    common = {"question": question, "paraphrases": json.dumps(list(paraphrases)), "finding": finding}
    i = 0
    for quadrant, margins in plants.items():
        for _ in range(n_per_quadrant):
            name = f"img{i:03d}.png"
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), "L").save(img_dir / name)
            sha = hashlib.sha256((img_dir / name).read_bytes()).hexdigest()
            script["with_image"][sha] = dict(zip(prompts, map(float, margins)))
            sid = f"s{i:03d}"
            rows.append({"sample_id": sid, "image": name, "label": "yes" if i % 2 else "no",
                         "patient_id": patient_of(i), **common})
            planted[sid] = quadrant
            i += 1
    # Bad inputs: a missing image and a label that is not yes/no -> errors/, job goes on.
    if "missing" in bad_rows:
        rows.append({"sample_id": "missing", "image": "nope.png", "label": "yes", "patient_id": "px", **common})
    if "badlabel" in bad_rows:
        rows.append({"sample_id": "badlabel", "image": "img000.png", "label": "maybe", "patient_id": "py", **common})
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


def read_tables(run):
    """A run's quadrant and summary tables in a stable row order, for comparing two runs."""
    quads = pd.read_parquet(run / "quadrants").sort_values(["model", "sample_id"]).reset_index(drop=True)
    summary = pd.read_parquet(run / "summary.parquet").sort_values(["model", "dataset", "finding"],
                                                                   na_position="first").reset_index(drop=True)
    return quads, summary
