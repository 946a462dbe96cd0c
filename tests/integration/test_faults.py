"""Faults: an engine actor killed mid-batch, the driver killed and the run resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from vlm_eval.run import run_job

from planted import make_job, read_tables, write_case

pytestmark = pytest.mark.slow


def test_actor_killed_mid_batch_is_restarted_and_work_done_exactly_once(tmp_path, ray_local):
    planted = write_case(tmp_path, n_per_quadrant=3)
    marker = tmp_path / "crashed-once"
    job = make_job(tmp_path, models=[{"name": "scripted", "engine": "scripted",
                                  "options": {"script": str(tmp_path / "script.json"),
                                              "crash_once_file": str(marker)}}])
    run_job(job)
    assert marker.exists(), "the fault was not injected"
    run = tmp_path / "runs" / "planted-1"
    preds = pd.read_parquet(run / "predictions")
    keys = ["sample_id", "variant", "condition", "prompt_id"]
    assert not preds.duplicated(keys).any()
    quads = pd.read_parquet(run / "quadrants")
    assert dict(zip(quads["sample_id"], quads["quadrant"])) == planted


def _cli(args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "vlm_eval", *args], env=env, **kw)


def test_driver_killed_then_resumed_gives_identical_tables(tmp_path):
    planted = write_case(tmp_path, n_per_quadrant=4)
    base = make_job(tmp_path).model_dump(mode="json")
    # Slow the engine so the driver is killed with part of the units committed.
    base["models"][0]["options"]["delay_s"] = 0.05
    base["resources"]["batch_size"] = 2
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(base))
    env = {**os.environ, "VLM_EVAL_OBJECT_STORE_MB": "256"}
    proc = _cli(["run", str(job_file)], env=env, start_new_session=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    shard_dir = tmp_path / "runs" / "planted-1" / "predictions" / "model=scripted"
    deadline = time.time() + 240
    while time.time() < deadline:
        if shard_dir.exists() and len(list(shard_dir.glob("shard-*.parquet"))) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stdout.read().decode()[-2000:]}")
        time.sleep(0.2)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("no shard was committed in time")
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray, no cleanup
    proc.wait(timeout=60)
    n_before = len(list(shard_dir.glob("shard-*.parquet")))
    record = json.loads((tmp_path / "runs" / "planted-1" / "run.json").read_text())
    assert record["status"] == "running"  # killed: never got to write an end state

    resumed = subprocess.run([sys.executable, "-m", "vlm_eval", "run", str(job_file)], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    run = tmp_path / "runs" / "planted-1"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "succeeded" and record["attempt"] == 2
    done = record["counts"]["models"]["scripted"]
    # A unit in flight when the driver died may still have committed (the actor ends a
    # moment later): the resume skips at least what was committed, redoes the rest.
    assert done["units_skipped"] >= n_before and done["units_scored"] >= 1
    assert done["units_skipped"] + done["units_scored"] == done["units"]
    q_resumed, s_resumed = read_tables(run)
    assert dict(zip(q_resumed["sample_id"], q_resumed["quadrant"])) == planted
    preds = pd.read_parquet(run / "predictions")
    assert not preds.duplicated(["sample_id", "variant", "condition", "prompt_id"]).any()

    # The same job, uninterrupted, into a fresh run folder: identical tables.
    fresh = subprocess.run([sys.executable, "-m", "vlm_eval", "run", str(job_file), "--set", "run_id=fresh",
                            "--set", "cache.enabled=false"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    q_fresh, s_fresh = read_tables(tmp_path / "runs" / "fresh")
    pd.testing.assert_frame_equal(q_resumed, q_fresh)
    pd.testing.assert_frame_equal(s_resumed, s_fresh)
