"""A whole job against a real S3 server (SeaweedFS on 127.0.0.1, credentials enforced).

The job file, manifest, images and engine script live in s3://; the run is written
to s3://. Its tables equal those of the same job run on local files; `reduce` and
`report` work on the s3 run; a wrong secret key gives a clear error; no credential
value ends up in run.json, errors/, the report or any captured log.
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import uuid

import pandas as pd
import pytest
import yaml

from planted import write_case
from vlm_eval import cli
from vlm_eval.config import validate_job
from vlm_eval.run import run_job

pytestmark = [pytest.mark.slow, pytest.mark.s3]

QUESTION = "Is there a pleural effusion?"
PARAS = ["Is pleural fluid present?", "Does the image show a pleural effusion?"]
PROMPTS = [QUESTION] + PARAS
PLANTS = {  # with-image margins per variant; text-only always says no (-2)
    "Ideal": [2, 2, 2],
    "Dangerous": [-2, -2, -2],
    "Fragile": [2, -2, 2],
    "Worst": [-2, 2, -2],
}
JOB_TIMEOUT_S = 300


def _write_case(root) -> dict[str, str]:
    return write_case(root, 2, question=QUESTION, paraphrases=PARAS, plants=PLANTS, finding="pleural effusion",
                      seed=1, size=24, bad_rows=("missing",), patient_of=lambda i: f"p{i}")


def _job_dict(base: str, output: str) -> dict:
    """The same job for a local folder or an s3:// prefix (``base`` holds the case)."""
    j = (lambda *p: posixpath.join(base, *p)) if "://" in base else (lambda *p: os.path.join(base, *p))
    return {
        "name": "s3case",
        "run_id": "s3case-1",
        "output": output,
        "dataset": {"adapter": "manifest", "manifest": j("manifest.csv"), "images": j("images")},
        "prompts": {"paraphrases": len(PARAS)},
        "models": [{"name": "scripted", "engine": "scripted", "options": {"script": j("script.json")}}],
        "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 2},
        "failure": {"max_error_fraction": 0.5},
    }


def _norm(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].astype(str)
    out = out[sorted(out.columns)]
    return out.sort_values(keys, na_position="first").reset_index(drop=True)


def _relative_files(fs, root: str) -> set[str]:
    root = root.removeprefix("s3://").rstrip("/")
    return {p[len(root) + 1:] for p in fs.find(root)}


def _s3fs():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def _layout(paths) -> list[str]:
    """Relative paths with unit ids masked, sorted with repeats (one entry per shard)."""
    return sorted(re.sub(r"(?<=[-_])u[0-9a-f]{8,}(?=\.parquet$)", "UNIT", p) for p in paths)


def test_s3_job_matches_local_and_leaks_no_credentials(tmp_path, ray_local, s3_env, s3_bucket, capsys):
    planted = _write_case(tmp_path / "case")
    fs = _s3fs()
    prefix = f"{s3_bucket}/case-{uuid.uuid4().hex[:8]}"
    fs.put(str(tmp_path / "case") + "/", prefix.removeprefix("s3://") + "/", recursive=True)
    assert fs.exists(f"{prefix}/images/img000.png")

    # Local reference run (in this process, on the session's local Ray).
    local = run_job(validate_job(_job_dict(str(tmp_path / "case"), str(tmp_path / "runs"))))
    assert local.status == "succeeded"

    # The same job from s3, through the CLI in its own process (its own local Ray,
    # which gets the AWS_* environment forwarded to its workers).
    job_url = f"{prefix}/job.yaml"
    with fs.open(job_url, "w") as f:
        yaml.safe_dump(_job_dict(prefix, f"{prefix}/runs"), f)
    ray_tmp = tempfile.mkdtemp(prefix="vlmray-")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = ray_tmp
    try:
        proc = subprocess.run([sys.executable, "-m", "vlm_eval", "run", job_url], env=env, capture_output=True,
                              text=True, timeout=JOB_TIMEOUT_S)
        assert proc.returncode == 0, f"s3 job failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        ray_logs = []
        for dirpath, _, files in os.walk(ray_tmp):
            for name in files:
                p = os.path.join(dirpath, name)
                if "logs" in p.split(os.sep) and os.path.isfile(p) and not os.path.islink(p):
                    ray_logs.append(p)
        leaked_in_ray_logs = [p for p in ray_logs
                              if any(s.encode() in open(p, "rb").read()
                                     for s in (s3_env["AWS_SECRET_ACCESS_KEY"], s3_env["AWS_ACCESS_KEY_ID"]))]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    run_url = f"{prefix}/runs/s3case-1"
    local_run = str(tmp_path / "runs" / "s3case-1")
    # Same layout as locally (run.json, samples/, predictions/model=.../shard-*, errors/, tables, report).
    # Unit ids are content-addressed (they include the image URIs), so compare names with ids masked.
    local_files = {os.path.relpath(os.path.join(d, f), local_run)
                   for d, _, fs_ in os.walk(local_run) for f in fs_}
    assert _layout(_relative_files(fs, run_url)) == _layout(local_files)

    quad_keys = ["model", "sample_id"]
    s3_quads = _norm(pd.read_parquet(f"{run_url}/quadrants"), quad_keys)
    local_quads = _norm(pd.read_parquet(f"{local_run}/quadrants"), quad_keys)
    pd.testing.assert_frame_equal(s3_quads, local_quads)
    assert dict(zip(s3_quads["sample_id"], s3_quads["quadrant"])) == planted
    sum_keys = ["model", "dataset", "finding"]
    s3_summary = _norm(pd.read_parquet(f"{run_url}/summary.parquet"), sum_keys)
    pd.testing.assert_frame_equal(s3_summary, _norm(pd.read_parquet(f"{local_run}/summary.parquet"), sum_keys))
    errors = pd.read_parquet(f"{run_url}/errors")
    assert set(errors["sample_id"]) == {"missing"}

    # reduce and report straight from s3 (in this process, no Ray needed).
    fs.rm(f"{run_url}/summary.parquet")
    fs.rm(f"{run_url}/report.html")
    assert cli.main(["reduce", run_url]) == 0
    assert cli.main(["report", run_url]) == 0
    assert fs.exists(f"{run_url}/report.html")
    pd.testing.assert_frame_equal(_norm(pd.read_parquet(f"{run_url}/summary.parquet"), sum_keys), s3_summary)
    pd.testing.assert_frame_equal(_norm(pd.read_parquet(f"{run_url}/quadrants"), quad_keys), s3_quads)
    record = json.loads(fs.cat(f"{run_url}/run.json"))
    assert record["status"] == "succeeded"
    from vlm_eval.status import main as status_main  # `vlm-eval status` straight from s3

    earlier = capsys.readouterr()
    assert status_main(run_url) == 0
    status_out = capsys.readouterr().out
    assert "s3case-1: succeeded" in status_out and "units" in status_out and "req/s" in status_out

    # No credential value anywhere we wrote or printed.
    captured = capsys.readouterr()
    captured = type(captured)(earlier.out + captured.out, earlier.err + captured.err)
    texts = {"run.json": fs.cat(f"{run_url}/run.json"), "report.html": fs.cat(f"{run_url}/report.html"),
             "stdout": proc.stdout.encode(), "stderr": proc.stderr.encode(),
             "pytest-captured": (captured.out + captured.err).encode(), "status": status_out.encode()}
    for p in fs.find(f"{run_url}/errors"):
        texts[p] = fs.cat(p)
    for secret in (s3_env["AWS_SECRET_ACCESS_KEY"], s3_env["AWS_ACCESS_KEY_ID"]):
        leaked = [name for name, data in texts.items() if secret.encode() in data]
        assert not leaked, f"a credential value appears in {leaked}"
    assert not leaked_in_ray_logs, f"a credential value appears in Ray's logs: {leaked_in_ray_logs}"


def test_wrong_secret_key_is_a_clear_error(tmp_path, s3_env, s3_bucket, monkeypatch, capsys):
    _write_case(tmp_path / "case")
    fs = _s3fs()
    prefix = f"{s3_bucket}/case-{uuid.uuid4().hex[:8]}"
    fs.put(str(tmp_path / "case") + "/", prefix.removeprefix("s3://") + "/", recursive=True)
    job_path = tmp_path / "job.yaml"
    job_path.write_text(yaml.safe_dump(_job_dict(prefix, f"{prefix}/runs")))

    wrong = "WRONG" + s3_env["AWS_SECRET_ACCESS_KEY"][5:]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    rc = cli.main(["run", str(job_path)])
    out = capsys.readouterr()
    assert rc == 2, out
    assert "Traceback" not in out.err
    assert "refused" in out.err and f"{prefix}/runs" in out.err
    assert "AWS_SECRET_ACCESS_KEY" in out.err and "AWS_ENDPOINT_URL" in out.err
    assert cli.main(["reduce", f"{prefix}/runs/s3case-1"]) != 0
    out2 = capsys.readouterr()
    assert "refused" in out2.err
    for text in (out.out + out.err, out2.out + out2.err):
        assert wrong not in text and s3_env["AWS_ACCESS_KEY_ID"] not in text


def test_model_folder_on_s3_loads_and_scores_like_the_local_one(tmp_path, s3_env, s3_bucket, monkeypatch):
    """models[].path may be an object-store URL: the engine copies it once to its cache."""
    pytest.importorskip("transformers")
    from PIL import Image as PILImage

    from vlm_eval.engines.base import ScoreRequest
    from vlm_eval.engines.transformers import TransformersEngine
    from vlm_eval.models.tiny import build_tiny_model

    monkeypatch.setenv("VLM_EVAL_CACHE", str(tmp_path / "cache"))
    local = build_tiny_model("llava", str(tmp_path / "tiny-llava"))
    remote = f"{s3_bucket}/models-{uuid.uuid4().hex[:8]}/tiny-llava"
    _s3fs().put(local, remote.replace("s3://", ""), recursive=True)
    image = PILImage.new("RGB", (40, 40), (90, 30, 200))
    reqs = [ScoreRequest(prompt="Is there cardiomegaly?", image=image, image_uuid="x"),
            ScoreRequest(prompt="Is there cardiomegaly?")]
    opts = {"dtype": "float32", "device": "cpu", "cpu_threads": 1}
    from_s3 = TransformersEngine({"name": "m", "path": remote, "options": opts}).score(reqs)
    from_disk = TransformersEngine({"name": "m", "path": local, "options": opts}).score(reqs)
    for a, b in zip(from_s3, from_disk):
        assert a.error is None and a.logprobs == pytest.approx(b.logprobs, abs=1e-6)
    assert list((tmp_path / "cache" / "remote").iterdir()), "the remote folder was cached locally"
