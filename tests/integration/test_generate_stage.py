"""A whole job with ``prompts.generate``: the scripted engine writes and judges
paraphrases in a Ray actor, the run saves a new set in RUN/prompt_sets/, samples use
only its paraphrases, run.json records it, and a resumed run reuses it."""
from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vlm_eval.config import validate_job
from vlm_eval.prompts import load_prompt_set
from vlm_eval.prompts.generate import judge_prompt
from vlm_eval.run import run_job

pytestmark = pytest.mark.slow

CARDIO = "Is there cardiomegaly?"
KEPT = ["Is the heart enlarged?", "Is cardiomegaly seen on this radiograph?"]
CANDIDATES = ["1. Is the heart enlarged?", "2. Is there no cardiomegaly?", "3. Is there a pleural effusion?",
              "4. Is cardiomegaly seen on this radiograph?", "5. Does the chest X-ray show cardiomegaly?"]


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def write_case(root):
    (root / "images").mkdir()
    rng = np.random.default_rng(3)
    script = {"with_image": {}, "generate": {CARDIO: CANDIDATES},
              "text_only": {"*": -2.0,  # text-only ablation: no; and any unplanted judge question: no
                            judge_prompt(CARDIO, KEPT[0]): logit(0.9), judge_prompt(KEPT[0], CARDIO): logit(0.8),
                            judge_prompt(CARDIO, KEPT[1]): logit(0.7), judge_prompt(KEPT[1], CARDIO): logit(0.9),
                            # faithful one way only: rejected by the mutual-entailment judge
                            judge_prompt(CARDIO, "Does the chest X-ray show cardiomegaly?"): logit(0.9)}}
    rows = []
    for i in range(4):
        name = f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8), "L").save(root / "images" / name)
        sha = hashlib.sha256((root / "images" / name).read_bytes()).hexdigest()
        script["with_image"][sha] = {"*": 2.0}
        # The set's question for the finding and no paraphrases: the prompt set supplies them.
        rows.append({"sample_id": f"s{i}", "image": name, "question": CARDIO, "label": "yes",
                     "patient_id": f"p{i}", "finding": "cardiomegaly"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    (root / "script.json").write_text(json.dumps(script))


def job(root):
    return validate_job({
        "name": "gen", "run_id": "gen-1", "output": str(root / "runs"),
        "dataset": {"adapter": "manifest", "manifest": str(root / "manifest.csv"), "images": str(root / "images"),
                    "findings": ["cardiomegaly"]},
        "prompts": {"set": "cxr-binary-v1", "paraphrases": 2,
                    "generate": {"model": "scripted", "candidates": 5, "judge_threshold": 0.5}},
        "models": [{"name": "scripted", "engine": "scripted", "options": {"script": str(root / "script.json")}}],
        "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 2},
        "cache": {"enabled": False},
    })


def test_job_generates_and_uses_a_new_prompt_set(tmp_path, ray_local):
    write_case(tmp_path)
    base = load_prompt_set("cxr-binary-v1")
    run_job(job(tmp_path))
    run = tmp_path / "runs" / "gen-1"
    files = sorted((run / "prompt_sets").iterdir())
    assert len(files) == 1 and files[0].name.startswith("cxr-binary-v1-gen-") and files[0].suffix == ".yaml"
    pset = load_prompt_set(str(files[0]))
    assert pset.findings["cardiomegaly"].paraphrases == tuple(KEPT)
    assert set(pset.findings) == {"cardiomegaly"}
    assert pset.derived_from == {"name": base.name, "version": base.version, "sha256": base.sha256}
    samples = pd.read_parquet(run / "samples")
    assert all(list(p) == [CARDIO, *KEPT] for p in samples["prompts"])
    assert set(samples["question_id"]) == {f"{pset.name}:cardiomegaly"}
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "succeeded"
    assert record["prompt_set"] == {"name": str(files[0]), "sha256": pset.sha256}
    gen = record["prompt_set_generated"]
    assert gen["name"] == pset.name and gen["path"] == str(files[0]) and gen["sha256"] == pset.sha256
    assert gen["derived_from"]["sha256"] == base.sha256
    assert gen["findings"]["cardiomegaly"]["kept"] == 2
    assert gen["findings"]["cardiomegaly"]["rejected"] == {"negation": 1, "key_term": 1, "judge": 1}
    assert record["job"]["prompts"]["set"] == "cxr-binary-v1"  # the job as given; prompt_set says what ran
    assert record["counts"]["input"]["prompt_set"]["sha256"] == pset.sha256
    quads = pd.read_parquet(run / "quadrants")
    assert quads["complete"].all() and set(quads["quadrant"]) == {"Ideal"} and (quads["n_variants"] == 3).all()

    # Resume: the written set is reused, not generated again.
    mtime = os.stat(files[0]).st_mtime_ns
    result = run_job(job(tmp_path))
    assert result.counts["models"]["scripted"]["units_scored"] == 0
    record = json.loads((run / "run.json").read_text())
    assert record["prompt_set_generated"]["reused"] is True
    assert record["prompt_set"]["sha256"] == pset.sha256
    assert sorted((run / "prompt_sets").iterdir()) == files and os.stat(files[0]).st_mtime_ns == mtime
