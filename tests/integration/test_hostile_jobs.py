"""A real job (scripted engine, local Ray) over hostile image rows (issue #11 items 11, 12,
15): every one becomes an error row with a clear type, the job goes on and succeeds,
and no credential reaches run.json, samples/, errors/ or the console."""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vlm_eval.cli import main

pytestmark = pytest.mark.slow
SECRET = "hunter2pass"
Q = "Is there cardiomegaly?"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)
def test_hang_and_leak_hostile_image_rows_become_error_rows_and_the_job_goes_on(tmp_path, ray_local, capfd):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8), "L").save(images / "good.png")
    os.mkfifo(images / "pipe.png")
    port = _closed_port()
    rows = [
        ("ok", "good.png"),
        ("s3", "s3://vlm-eval-no-such-bucket/scan.png"),  # no credentials on this machine
        ("unreach", f"http://127.0.0.1:{port}/scan.png"),
        ("fifo", "pipe.png"),
        ("nul", "bad\u0000name.png"),
        ("cred", f"https://alice:{SECRET}@127.0.0.1:{port}/scan.png"),
    ]
    (tmp_path / "m.jsonl").write_text("".join(
        json.dumps({"sample_id": sid, "image": img, "question": Q, "label": "yes", "paraphrases": []}) + "\n"
        for sid, img in rows))
    job = tmp_path / "job.yaml"
    job.write_text(
        f"name: hostile\nrun_id: hostile\noutput: {tmp_path / 'runs'}\n"
        f"dataset: {{manifest: {tmp_path / 'm.jsonl'}, images: {images}}}\n"
        "prompts: {paraphrases: 0}\nmodels: [{name: s, engine: scripted}]\n"
        "resources: {actors: 1, gpus_per_actor: 0, batch_size: 2}\n"
        "failure: {max_error_fraction: 1.0}\ncache: {enabled: false}\n")
    assert main(["run", str(job)]) == 0
    out, err = capfd.readouterr()
    run = tmp_path / "runs" / "hostile"
    record = (run / "run.json").read_text()
    assert json.loads(record)["status"] == "succeeded"
    errors = pd.read_parquet(run / "errors")
    by_id = errors.groupby("sample_id")["error_type"].first().to_dict()
    expected_s3 = {"no_credentials"} if not os.environ.get("AWS_ACCESS_KEY_ID") else {"unreachable", "unreadable"}
    assert by_id.get("s3") in expected_s3, by_id
    assert by_id.get("unreach") == "unreachable"
    assert by_id.get("fifo") == "not_a_file"
    assert by_id.get("nul") == "bad_path"
    assert by_id.get("cred") == "credentials_in_url"
    assert set(pd.read_parquet(run / "quadrants")["sample_id"]) == {"ok"}
    assert errors["message"].str.len().gt(20).all()  # each says what to do
    samples = b"".join(p.read_bytes() for p in (run / "samples").rglob("*.parquet"))
    for name, text in (("run.json", record), ("errors", errors.to_json()), ("samples", samples.decode("latin-1")),
                       ("stdout", out), ("stderr", err)):
        assert SECRET not in text, f"credential leaked into {name}"
