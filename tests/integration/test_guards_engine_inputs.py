"""What reaches the engine, seen by a real plug-in engine (issue 16.3).

``PixelEngine`` (this module, named in the job as ``test_guards_engine_inputs:PixelEngine``)
hashes the pixels of every request it receives, records what it saw, and answers with a
logprob_yes that encodes that hash, so each row of ``predictions/`` says which pixels were
scored for it. The test then checks each condition's pixels against the image files:
image = the file's own pixels, blank = one uniform colour, noise = not the original (and
the same for every variant of a sample), swap = the partner image named in samples/,
shuffle_patches = the same pixel multiset rearranged, text_only = no image.

Also here: a dead engine's error names the real cause (not merely the model's name).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import yaml
from planted import make_job, write_case
from vlm_eval.engines import ScoreResult
from vlm_eval.run import run_job

pytestmark = pytest.mark.slow
CONDITIONS = ["image", "text_only", "blank", "noise", "swap", "shuffle_patches"]
HERE = os.path.dirname(os.path.abspath(__file__))


def run_cli(tmp_path, job) -> subprocess.CompletedProcess:
    """``vlm-eval run`` in a fresh process with this folder on PYTHONPATH, as a user installs a
    plug-in engine (its own local Ray: every Ray worker can import the plug-in)."""
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job.model_dump(mode="json")))
    path = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "vlm_eval", "run", str(job_file)], capture_output=True, text=True,
                          timeout=540, env={**os.environ, "PYTHONPATH": path})


def pixel_facts(image) -> dict:
    px = np.asarray(image.convert("RGB"))
    return {"sha": hashlib.sha256(px.tobytes()).hexdigest(), "size": [image.width, image.height],
            "uniform": bool((px == px.reshape(-1, 3)[0]).all()),
            "multiset": hashlib.sha256(np.sort(px, axis=None).tobytes()).hexdigest()}


def code_of(sha: str | None) -> float:
    """A log-probability in (-2, -1] unique to the pixel hash (-1 = no image)."""
    return -1.0 if sha is None else -(1.0 + int(sha[:12], 16) / 16**12)


class PixelEngine:
    """Records the pixels of every request; answers with a code of their hash."""

    def __init__(self, model):
        self.record = model["options"]["record"]

    def score(self, requests):
        out, lines = [], []
        for req in requests:
            facts = pixel_facts(req.image) if req.image is not None else {"sha": None}
            lines.append(json.dumps({"code": code_of(facts["sha"]), "prompt": req.prompt, **facts}))
            yes, no = req.options[0], req.options[1]
            out.append(ScoreResult(logprobs={yes: code_of(facts["sha"]), no: -1.5}))
        with open(self.record, "a") as f:
            f.write("\n".join(lines) + "\n")
        return out


class BrokenEngine:
    """Fails to start, with a cause a user can act on."""

    def __init__(self, model):
        raise FileNotFoundError("weights folder /models/xyz-42 has no config.json")


def _file_facts(root, uri: str) -> dict:
    name = uri.replace("\\", "/").rsplit("/", 1)[-1]
    with Image.open(root / "images" / name) as im:
        return pixel_facts(im)


def test_each_condition_sends_its_own_pixels_to_the_engine(tmp_path):
    write_case(tmp_path, n_per_quadrant=2, bad_rows=())  # 8 samples, patients p0..p3 (two each)
    record = tmp_path / "seen.jsonl"
    job = make_job(tmp_path, conditions=CONDITIONS, cache={"enabled": False},
                   models=[{"name": "pix", "engine": "test_guards_engine_inputs:PixelEngine",
                            "options": {"record": str(record)}}])
    proc = run_cli(tmp_path, job)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = {}
    for line in record.read_text().splitlines():
        rec = json.loads(line)
        seen[rec["code"]] = rec
    run = tmp_path / "runs" / "planted-1"
    preds = pd.read_parquet(run / "predictions")
    assert preds["error"].isna().all(), preds["error"].dropna().unique()
    assert set(preds["condition"]) == set(CONDITIONS)
    samples = pd.read_parquet(run / "samples").set_index("sample_id")
    own = {sid: _file_facts(tmp_path, uri) for sid, uri in samples["image_uri"].items()}
    text = preds[preds["condition"] == "text_only"]
    assert len(text) and all(seen[c]["sha"] is None for c in text["logprob_yes"])  # no image at all
    img_rows = preds[preds["condition"] != "text_only"]
    facts = {(r.sample_id, r.condition, r.variant): seen[r.logprob_yes] for r in img_rows.itertuples()}
    noise_by_sample = {}
    for sid, mine in own.items():
        n_var = len(samples.loc[sid, "prompts"])
        partner_uri = samples.loc[sid, "swap_image_uri"]
        assert isinstance(partner_uri, str) and partner_uri != samples.loc[sid, "image_uri"]
        partner = _file_facts(tmp_path, partner_uri)
        partner_sid = samples.index[samples["image_uri"] == partner_uri][0]
        assert samples.loc[partner_sid, "patient_id"] != samples.loc[sid, "patient_id"], "swap with the same patient"
        for v in range(n_var):
            image, blank, noise = facts[(sid, "image", v)], facts[(sid, "blank", v)], facts[(sid, "noise", v)]
            swap, shuffled = facts[(sid, "swap", v)], facts[(sid, "shuffle_patches", v)]
            assert image["sha"] == mine["sha"], (sid, v, "image is not the file's pixels")
            assert blank["uniform"] and blank["size"] == mine["size"], (sid, v, "blank")
            assert noise["sha"] != mine["sha"] and not noise["uniform"] and noise["size"] == mine["size"], (sid, v)
            assert noise["sha"] != partner["sha"]
            assert noise["sha"] == facts[(sid, "noise", 0)]["sha"], "noise differs between variants of one sample"
            assert swap["sha"] == partner["sha"] != mine["sha"], (sid, v, "swap is not the partner's image")
            assert shuffled["multiset"] == mine["multiset"] and shuffled["sha"] != mine["sha"], (sid, v, "shuffle")
            assert shuffled["size"] == mine["size"]
        noise_by_sample[sid] = facts[(sid, "noise", 0)]["sha"]
    assert len(set(noise_by_sample.values())) == len(own), "two samples got the same noise image"
    # the scored logprob_yes of every row is the code of what the engine saw for it (no stale value)
    assert set(preds["logprob_yes"]) <= set(seen)


def test_dead_engine_error_names_the_real_cause(tmp_path, ray_local):
    write_case(tmp_path, n_per_quadrant=1, bad_rows=())
    job = make_job(tmp_path, models=[{"name": "m1", "engine": "scripted",
                                      "options": {"script": str(tmp_path / "script.json"), "dead": True}}])
    with pytest.raises(Exception) as info:
        run_job(job)
    message = str(info.value)
    # the engine's own words, not just any exception that happens to mention a model name
    assert "options.dead = true" in message, message
    record = json.loads((tmp_path / "runs" / "planted-1" / "run.json").read_text())
    assert record["status"] == "failed" and "options.dead = true" in record["error"]
    assert not list((tmp_path / "runs" / "planted-1").glob("predictions/model=m1/*.parquet"))


def test_engine_that_cannot_start_names_the_model_and_its_cause(tmp_path):
    write_case(tmp_path, n_per_quadrant=1, bad_rows=())
    job = make_job(tmp_path, models=[{"name": "m2", "engine": "test_guards_engine_inputs:BrokenEngine"}])
    proc = run_cli(tmp_path, job)
    assert proc.returncode not in (0, 2), proc.returncode  # not success, and not a job-file error
    message = proc.stderr
    assert "m2" in message, message[-3000:]
    assert "weights folder /models/xyz-42 has no config.json" in message, message[-3000:]
    record = json.loads((tmp_path / "runs" / "planted-1" / "run.json").read_text())
    assert record["status"] == "failed" and "xyz-42" in record["error"]
    assert os.path.exists(tmp_path / "runs" / "planted-1" / "run.json")
