"""run.json says how much of the scoring stage the engine was busy (issue 13: where time goes)."""
from __future__ import annotations

import json

import pytest

from planted import make_job, write_case
from vlm_eval.run import run_job

pytestmark = pytest.mark.slow


def test_engine_seconds_count_the_time_inside_the_engine(tmp_path, ray_local):
    write_case(tmp_path, n_per_quadrant=1, bad_rows=())
    delay = 0.02  # the scripted engine sleeps this long per request it scores
    model = {"name": "scripted", "engine": "vlm_eval.engines.scripted:ScriptedEngine",
             "options": {"script": str(tmp_path / "script.json"), "delay_s": delay}}
    res = run_job(make_job(tmp_path, models=[model], cache={"enabled": False},
                           resources={"actors": 1, "gpus_per_actor": 0, "batch_size": 1}))
    counts = res.counts["models"]["scripted"]
    slept = counts["requests_scored"] * delay
    # every scored request slept inside engine.score; the stage also started the actor
    assert slept <= counts["engine_seconds"] <= counts["seconds"]
    assert counts["engine_seconds"] < slept + 0.02 * counts["units_scored"] + 1.0
    # one actor, each request sleeping `delay`: at most 1/delay requests per second once started
    assert counts["units_scored"] >= 3
    assert 0 < counts["steady_requests_per_s"] <= 1 / delay
    record = json.loads((tmp_path / "runs" / "planted-1" / "run.json").read_text())
    assert record["counts"]["models"]["scripted"]["engine_seconds"] == counts["engine_seconds"]
