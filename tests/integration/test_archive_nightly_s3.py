"""Archive scale on a real S3 server (SeaweedFS on 127.0.0.1): a nightly run knows an
object by its ETag, skips the fetch of every image it has scored, and fetches and
rescores an object that was replaced (new ETag) — through the CLI, each night in its
own process with its own local Ray, as a cron job runs it, with the prediction cache
(scores and pre-keys, compacted at the end of each night) on S3 as well."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pandas as pd
import pytest
import yaml

from test_archive_nightly import FINDINGS, _image, _images_and_script  # the local nightly's
from vlm_eval.pipeline import prekey

pytestmark = [pytest.mark.slow, pytest.mark.s3]
JOB_TIMEOUT_S = 300


def _s3fs():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def _night(tmp_path, prefix: str, names: list[str], run_id: str) -> dict:
    rows = [{"sample_id": f"{f}-{n}", "image": n, "question": q, "finding": f, "label": "yes" if i % 2 else "no",
             "patient_id": f"p{i}"} for f, q in FINDINGS.items() for i, n in enumerate(names)]
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    job = {"name": "nightly-s3", "run_id": run_id, "output": str(tmp_path / "runs"),
           "dataset": {"adapter": "manifest", "manifest": str(tmp_path / "manifest.csv"), "images": f"{prefix}/images"},
           "prompts": {"paraphrases": 1}, "conditions": ["image", "text_only"],
           "models": [{"name": "scripted", "engine": "scripted", "options": {"script": str(tmp_path / "script.json")}}],
           "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 2},
           "failure": {"max_error_fraction": 0.0},
           "cache": {"enabled": True, "url": f"{prefix}/cache"}}  # scores and pre-keys on S3 too
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    ray_tmp = tempfile.mkdtemp(prefix="vlmray-")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = ray_tmp
    try:
        proc = subprocess.run([sys.executable, "-m", "vlm_eval", "run", str(tmp_path / "job.yaml")], env=env,
                              capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, f"{run_id} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    run = json.loads((tmp_path / "runs" / run_id / "run.json").read_text())
    assert run["status"] == "succeeded"
    return run["counts"]["models"]["scripted"]


def test_nightly_on_s3_skips_known_objects_by_etag_and_rescores_a_replaced_one(tmp_path, s3_env, s3_bucket):
    fs = _s3fs()
    prefix = f"{s3_bucket}/nightly-{uuid.uuid4().hex[:8]}"
    local = tmp_path / "images"
    names, script = _images_and_script(local, 4)
    for n in names:
        fs.put(str(local / n), f"{prefix}/images/{n}".removeprefix("s3://"))
    (tmp_path / "script.json").write_text(json.dumps(script))
    etag0 = prekey.object_version(fs.info(f"{prefix}/images/img0.png"))
    assert etag0 and etag0.startswith("ETag=")  # the store's own version, no size/mtime guess

    first = _night(tmp_path, prefix, names, "night-1")
    assert first["images_fetched"] == 4 and first["images_skipped_cached"] == 0

    # Night 2: one new object, and img0 replaced by different pixels (S3 gives it a new ETag).
    new_sha = _image(local / "img4.png", 44)
    script["with_image"][new_sha] = {"*": 1.5}
    fs.put(str(local / "img4.png"), f"{prefix}/images/img4.png".removeprefix("s3://"))
    replaced_sha = _image(local / "img0.png", 999, size=40)
    script["with_image"][replaced_sha] = {"*": -1.0}
    fs.put(str(local / "img0.png"), f"{prefix}/images/img0.png".removeprefix("s3://"))
    fs.invalidate_cache()
    assert prekey.object_version(fs.info(f"{prefix}/images/img0.png")) != etag0
    (tmp_path / "script.json").write_text(json.dumps(script))

    second = _night(tmp_path, prefix, names + ["img4.png"], "night-2")
    assert second["images_fetched"] == 2 and second["images_skipped_cached"] == 3  # img0 (replaced) + img4 (new)
    assert second["distinct_images"] == 5
    preds = pd.read_parquet(tmp_path / "runs" / "night-2" / "predictions")
    image_rows = preds[preds["condition"] == "image"]
    assert set(image_rows.loc[image_rows["sample_id"].str.endswith("img0.png"), "image_sha256"]) == {replaced_sha}
    quads = pd.read_parquet(tmp_path / "runs" / "night-2" / "quadrants").set_index("sample_id")
    assert len(quads) == len(FINDINGS) * 5 and quads["complete"].all()
    assert (quads.loc[[f"{f}-img0.png" for f in FINDINGS], "margin"] == -1.0).all()  # rescored
    assert (quads.loc[[f"{f}-img1.png" for f in FINDINGS], "margin"] == 1.5).all()  # from the cache
    # compacted: one file per touched partition of the scores and of the pre-keys
    for root in (f"{prefix}/cache/prekeys", next(p for p in fs.ls(f"{prefix}/cache") if "model=" in p)):
        parts = [p for p in fs.ls(root) if "part=" in p]
        assert parts and all(len(fs.ls(p)) == 1 for p in parts), root
