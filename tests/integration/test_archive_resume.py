"""Resume safety and run status (issue 11 items 5, 6, 12, 17; issue 13.1).

All on the real Ray pipeline with the scripted engine over the planted case.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from planted import make_job, read_tables, write_case
from vlm_eval.errors import InputError, JobFailedError
from vlm_eval.run import run_job

pytestmark = pytest.mark.slow


def test_resume_with_another_batch_size_after_a_lost_shard_scores_every_sample(tmp_path, ray_local):
    planted = write_case(tmp_path, n_per_quadrant=3)
    nocache = {"enabled": False}
    res = lambda b: {"actors": 1, "gpus_per_actor": 0, "batch_size": b}  # noqa: E731
    run_job(make_job(tmp_path, run_id="whole", cache=nocache, resources=res(2)))
    run_job(make_job(tmp_path, run_id="cut", cache=nocache, resources=res(2)))
    shards = sorted((tmp_path / "runs" / "cut" / "predictions" / "model=scripted").glob("shard-u*.parquet"))
    assert len(shards) > 2
    shards[1].unlink()  # a lost shard
    events = []
    resumed = run_job(make_job(tmp_path, run_id="cut", cache=nocache, resources=res(3)), progress=events.append)
    counts = resumed.counts["models"]["scripted"]
    # Positions would have taken old shards for other units; content ids cannot.
    assert counts["stale_shards_removed"] >= 1 and counts["units_scored"] >= 1
    q_cut, s_cut = read_tables(tmp_path / "runs" / "cut")
    q_whole, s_whole = read_tables(tmp_path / "runs" / "whole")
    assert q_cut["complete"].all() and dict(zip(q_cut["sample_id"], q_cut["quadrant"])) == planted
    pd.testing.assert_frame_equal(q_cut, q_whole)
    pd.testing.assert_frame_equal(s_cut, s_whole)
    assert events and events[-1]["units_done"] == events[-1]["units_total"] == counts["units"]
    assert set(events[-1]) >= {"model", "units_done", "units_total", "requests_scored", "requests_cached",
                               "errors", "images_fetched", "elapsed_s"}
    progress = json.loads((tmp_path / "runs" / "cut" / "progress.json").read_text())
    assert progress["models"]["scripted"]["units_done"] == counts["units"]


def test_resume_with_changed_model_options_is_refused(tmp_path, ray_local):
    write_case(tmp_path, n_per_quadrant=1)
    job = make_job(tmp_path)
    run_job(job)
    changed = make_job(tmp_path, models=[{**job.models[0].model_dump(mode="json"),
                                          "options": {"script": str(tmp_path / "script.json"), "delay_s": 0.001}}])
    with pytest.raises(InputError, match="model 'scripted' changed options"):
        run_job(changed)
    renamed = make_job(tmp_path, models=[{**job.models[0].model_dump(mode="json"), "revision": "v2"}])
    with pytest.raises(InputError, match="changed revision"):
        run_job(renamed)


def test_status_failed_when_reduce_fails_and_the_report_shows_the_final_status(tmp_path, ray_local):
    write_case(tmp_path, n_per_quadrant=1)
    run_job(make_job(tmp_path))
    run = tmp_path / "runs" / "planted-1"
    report = (run / "report.html").read_text()
    assert "running" not in report.lower().split("status", 1)[-1][:200]
    shard = next((run / "predictions" / "model=scripted").glob("shard-u*.parquet"))
    shard.write_bytes(shard.read_bytes()[:40])  # truncated: the reducer cannot read it
    with pytest.raises(Exception):
        run_job(make_job(tmp_path))
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and record["error"] and record["finished_at"]


def test_errors_folder_exists_in_a_clean_run(tmp_path, ray_local):
    write_case(tmp_path, n_per_quadrant=1, bad_rows=())
    run_job(make_job(tmp_path))
    errors = pd.read_parquet(tmp_path / "runs" / "planted-1" / "errors")
    assert len(errors) == 0 and {"sample_id", "stage", "error_type", "message"} <= set(errors.columns)


def test_status_a_failed_start_does_not_block_its_run_id(tmp_path, ray_local):
    write_case(tmp_path, n_per_quadrant=1)
    bad = make_job(tmp_path, dataset={"adapter": "manifest", "manifest": str(tmp_path / "typo.csv"),
                                      "images": str(tmp_path / "images")})
    with pytest.raises(Exception):
        run_job(bad)
    assert json.loads((tmp_path / "runs" / "planted-1" / "run.json").read_text())["status"] == "failed"
    result = run_job(make_job(tmp_path))  # same run_id, the fixed manifest path
    assert result.status == "succeeded"


def test_status_incomplete_rows_count_against_the_error_budget(tmp_path, ray_local):
    # One patient: no swap partner exists, so every sample is incomplete under swap.
    write_case(tmp_path, n_per_quadrant=1, bad_rows=(), patient_of=lambda i: "p0")
    job = make_job(tmp_path, conditions=["image", "swap"], taxonomy={"ablation": "swap"},
                   failure={"max_error_fraction": 0.1})
    with pytest.raises(JobFailedError, match="incomplete"):
        run_job(job)
    record = json.loads((tmp_path / "runs" / "planted-1" / "run.json").read_text())
    assert record["status"] == "failed_errors"
