"""Tests written to kill the surviving mutants of ``vlm_eval/run.py`` (mutmut, issue 16;
docs/testing.md): the resume guard's every refused change and its message, the final
status (``succeeded`` only within the error budget, boundary included), what run.json
records on success, on ``failed_errors`` and on an exception, the progress events and
progress.json, and what the driver hands the scorer (run id, attempt, cache folder).

No Ray: ``run_job`` runs end to end in this process, with the pipeline's own loader and
scoring actor (the scripted engine) standing in for ``execute.score_model``'s Ray Data
pipeline, and ``ensure_ray`` / ``ray.shutdown`` replaced by recorders. Every expected
value is worked out by hand (arithmetic in a comment), never by the function under test.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import types

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import vlm_eval.reduce
import vlm_eval.run as run_mod
from vlm_eval import storage
from vlm_eval.config import validate_job
from vlm_eval.errors import InputError, JobFailedError
from vlm_eval.layout import RunLayout
from vlm_eval.pipeline import cache, cache_store, execute, generate_actor, prekey, ray_env
from vlm_eval.provenance import package_versions
from vlm_eval.prompts import load_prompt_set
from vlm_eval.schema import ERRORS

MSG_TAIL = ("resuming would mix old and new results. Use a new run_id (or omit run_id), or restore the "
            "original job settings.")


# --------------------------------------------------------------------------- helpers

class Clock:
    """run.py's ``time``: perf_counter advances 0.1152 s per call; monotonic is set by the test."""

    def __init__(self):
        self.calls, self.mono = 0, 0.0

    def perf_counter(self):
        self.calls += 1
        return 1000.0 + 0.1152 * self.calls

    def monotonic(self):
        return self.mono


def _case(root, labels=("no", "yes", "no", "maybe")):
    """Images + manifest.csv: sample s<i> with label labels[i] (not yes/no = a manifest error)."""
    img = root / "img"
    img.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, label in enumerate(labels):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(img / f"i{i}.png")
        rows.append({"sample_id": f"s{i}", "image": f"i{i}.png", "question": "Is there X?", "label": label,
                     "patient_id": f"p{i}"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)


def _data(root, **over) -> dict:
    data = {"name": "g", "run_id": "g-1", "output": str(root / "runs"),
            "dataset": {"adapter": "manifest", "manifest": str(root / "manifest.csv"), "images": str(root / "img")},
            "prompts": {"paraphrases": 1}, "conditions": ["image", "text_only"],
            "models": [{"name": "m", "engine": "scripted", "options": {"default": 0.5}}],
            "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 4},
            "failure": {"max_error_fraction": 0.5}, "cache": {"enabled": False}}
    data.update(over)
    return data


class Driver:
    """Stand-ins for the Ray parts of a run, recording what run.py hands them."""

    def __init__(self, started=True, fail=None):
        self.started, self.fail = started, fail
        self.score_calls, self.ensure_calls, self.shutdowns, self.run_json_at_scoring = [], [], 0, []

    def ensure_ray(self, address=None, num_cpus=None):
        self.ensure_calls.append(address)
        return self.started

    def shutdown(self):
        self.shutdowns += 1

    def score_model(self, job, model, plan, run_url, progress=None, cache_url=None, run_id="run", attempt=None):
        """execute.score_model without Ray: every uncommitted unit through load_unit + ScoringActor."""
        from vlm_eval.pipeline.actors import ScoringActor
        from vlm_eval.pipeline.loader import load_unit

        layout = RunLayout(run_url)
        self.score_calls.append(dict(job=job, model=model.name, run_url=run_url, progress=progress,
                                     cache_url=cache_url, run_id=run_id, attempt=attempt))
        self.run_json_at_scoring.append(json.loads(open(layout.run_json).read()))
        if self.fail:
            raise RuntimeError(self.fail)
        ids = plan.ids()
        done = layout.committed_units(model.name)
        stats = execute.ModelRunStats(model.name, len(ids), sum(u in done for u in ids))
        actor = ScoringActor(model.model_dump(), run_url, job.prompts.system, job.ablations, cache_url=cache_url,
                             run_id=run_id, attempt=attempt)
        for i, uid in enumerate(ids):
            if uid in done:
                continue
            row = load_unit(plan.units.slice(i, 1).to_pylist()[0], samples_file=layout.samples_file,
                            model=model.model_dump(), system=job.prompts.system, ablations=job.ablations,
                            max_image_side=job.dataset.max_image_side, cache_url=cache_url)
            out = actor(pa.Table.from_pylist([row]))
            stats.units_scored += 1
            stats.scored += int(out["n_scored"][0])
            if progress is not None:
                progress({"model": model.name, "units_done": stats.units_skipped + stats.units_scored,
                          "units_total": len(ids), "requests_scored": stats.scored})
        return stats


@pytest.fixture
def driver(monkeypatch):
    import ray

    d = Driver()
    monkeypatch.setattr(execute, "score_model", d.score_model)
    monkeypatch.setattr(ray_env, "ensure_ray", d.ensure_ray)
    monkeypatch.setattr(ray, "shutdown", d.shutdown)
    clock = Clock()
    monkeypatch.setattr(run_mod, "time", types.SimpleNamespace(perf_counter=clock.perf_counter,
                                                               monotonic=clock.monotonic))
    stamps = iter(f"2026-01-01T00:00:{i:02d}Z" for i in range(60))
    monkeypatch.setattr(run_mod, "now_iso", lambda: next(stamps))
    return d


def _run_json(root, run_id="g-1"):
    return json.loads((root / "runs" / run_id / "run.json").read_text())


# --------------------------------------------------------------------------- the resume guard

def _job(tmp_path, **over):
    return validate_job(_data(tmp_path, **over))


def test_check_resume_names_every_change_in_one_message(tmp_path):
    old = run_mod._job_record(_job(tmp_path))
    new = _job(tmp_path, dataset={"adapter": "manifest", "manifest": "/other.csv", "images": "/img"},
               prompts={"paraphrases": 2},
               models=[{"name": "m", "engine": "vlm_eval.engines.scripted:ScriptedEngine", "path": "/w",
                        "options": {"default": 0.5}}])
    with pytest.raises(InputError) as info:
        run_mod._check_resume({"job": old}, new, "RUN")
    assert str(info.value) == (
        "run RUN exists with a different dataset; prompts; model 'm' changed engine, path; " + MSG_TAIL)
    run_mod._check_resume({"job": old}, _job(tmp_path), "RUN")  # the same job: accepted


def test_check_resume_without_a_recorded_job_refuses_everything(tmp_path):
    # an existing run.json without "job": every field differs from nothing, the model is new
    with pytest.raises(InputError) as info:
        run_mod._check_resume({}, _job(tmp_path), "RUN")
    assert str(info.value) == (
        "run RUN exists with a different dataset; prompts; conditions; model 'm' added; " + MSG_TAIL)


def test_model_changes_added_removed_and_changed_fields():
    old = [{"name": "a", "engine": "x"}, {"name": "b", "engine": "y", "path": "/p"}, {"name": "d", "engine": "z"}]
    new = [{"name": "b", "engine": "y2", "path": "/q"}, {"name": "c", "engine": "x"},
           {"name": "d", "engine": "z", "lora": "/l"}]  # lora: a field only the new entry has
    assert run_mod._model_changes(old, new) == [
        "model 'a' removed", "model 'b' changed engine, path", "model 'c' added", "model 'd' changed lora"]
    # an entry without a name (None) sorts with the others by str(): 'None' < 'a'
    assert run_mod._model_changes([{"engine": "x"}], [{"name": "a"}]) == ["model None removed", "model 'a' added"]
    assert run_mod._model_changes(None, []) == []


def test_job_record_is_json_values():
    # options as YAML gives them (a date) or as Python code may (a tuple): recorded as JSON values, so a
    # resume compares them equal with what run.json holds
    job = validate_job({"name": "g", "dataset": {"adapter": "manifest", "manifest": "/m.csv"},
                        "models": [{"name": "m", "engine": "scripted",
                                    "options": {"since": datetime.date(2024, 1, 2), "sizes": (1, 2)}}]})
    rec = run_mod._job_record(job)
    assert rec["models"][0]["options"] == {"since": "2024-01-02", "sizes": [1, 2]}
    assert rec == json.loads(json.dumps(rec))


# --------------------------------------------------------------------------- status arithmetic

def _fake_reduce(monkeypatch, reduced):
    calls = []

    def fake(run_url, taxonomy=None):
        calls.append((run_url, taxonomy))
        return reduced

    monkeypatch.setattr(vlm_eval.reduce, "reduce_run", fake)
    return calls


def test_reduce_status_uses_the_jobs_taxonomy_and_the_budget(tmp_path, monkeypatch):
    reduced = {"models": {"m": {"n_samples": 3, "manifest_errors": 1, "errors": 1, "incomplete": 0}}}
    calls = _fake_reduce(monkeypatch, reduced)
    job = _job(tmp_path, taxonomy={"ablation": "text_only", "reliance": "majority"},
               failure={"max_error_fraction": 0.25})
    counts = {"models": {}}
    # inputs 3 + 1 = 4, errored 1 + 0 = 1: 1/4 = 0.25 <= 0.25
    assert run_mod._reduce(job, "RUN", counts) == ("succeeded", 0.25, 4, 1)
    assert calls == [("RUN", job.taxonomy)] and counts == {"models": {}, "reduce": reduced}
    job = _job(tmp_path, failure={"max_error_fraction": 0.2})
    assert run_mod._reduce(job, "RUN", {}) == ("failed_errors", 0.25, 4, 1)  # 0.25 > 0.2


def test_reduce_status_without_inputs_is_succeeded_at_fraction_0(tmp_path, monkeypatch):
    _fake_reduce(monkeypatch, {"models": {}})
    job = _job(tmp_path, failure={"max_error_fraction": 0.0})
    assert run_mod._reduce(job, "RUN", {}) == ("succeeded", 0.0, 0, 0)  # 0/0 counts as 0.0 <= 0.0


def test_input_and_errored_takes_the_worst_model():
    reduced = {"models": {
        "a": {"n_samples": 10, "manifest_errors": 2, "errors": 3, "incomplete": 1},  # 12 inputs, 4 errored
        "b": {"n_samples": 10, "manifest_errors": 2, "errors": 2, "incomplete": 4},  # 12 inputs, 6 errored
    }}
    assert run_mod._input_and_errored(reduced) == (12, 6)
    # missing counts are 0: inputs 5 + 0, errored 0 + 0 / 0 + 2
    assert run_mod._input_and_errored({"models": {"a": {"n_samples": 5}}}) == (5, 0)
    assert run_mod._input_and_errored({"models": {"a": {"incomplete": 2}}}) == (0, 2)
    assert run_mod._input_and_errored({"models": {"a": {"manifest_errors": 3, "errors": 3}}}) == (3, 3)
    assert run_mod._input_and_errored({"models": {}}) == (0, 0)
    assert run_mod._input_and_errored(None) == (0, 0)


# --------------------------------------------------------------------------- records and models

def test_start_record_of_a_first_run_and_of_a_resume(tmp_path, monkeypatch):
    stamps = iter(["T1", "T2", "T3", "T4"])
    monkeypatch.setattr(run_mod, "now_iso", lambda: next(stamps))
    job = _job(tmp_path)
    base = {"run_id": "r-1", "job": run_mod._job_record(job), "versions": package_versions(),
            "prompt_set": {"name": "cxr-binary-v1", "sha256": load_prompt_set("cxr-binary-v1").sha256},
            "status": "running"}
    # first run: started (T1) and first started (T2) now, attempt 0 + 1
    assert run_mod._start_record(job, "r-1", None) == {**base, "started_at": "T1", "first_started_at": "T2",
                                                      "attempt": 1}
    # resume of attempt 3 first started at T0: T0 kept, attempt 4
    assert run_mod._start_record(job, "r-1", {"first_started_at": "T0", "attempt": 3}) == {
        **base, "started_at": "T3", "first_started_at": "T0", "attempt": 4}


def test_builtin_model_paths_are_resolved_for_the_run_only(tmp_path, monkeypatch):
    from vlm_eval.engines import model_paths

    monkeypatch.setattr(model_paths, "resolve_model_path", lambda p: f"/resolved/{p}")
    job = _job(tmp_path, models=[{"name": "m", "engine": "scripted", "path": "builtin:x"},
                                 {"name": "n", "engine": "scripted", "path": "/w"}])
    out = run_mod._with_resolved_models(job)
    assert [m.path for m in out.models] == ["/resolved/builtin:x", "/resolved//w"]
    assert [m.name for m in out.models] == ["m", "n"] and out.name == "g"
    assert [m.path for m in job.models] == ["builtin:x", "/w"]  # the job itself (and its record) keep the names
    assert "XXpathXX" not in out.models[0].__dict__ and "PATH" not in out.models[0].__dict__


# --------------------------------------------------------------------------- samples

def test_prepare_samples_writes_samples_errors_and_swap_partners_once(tmp_path):
    _case(tmp_path, labels=("no", "yes", "no", "yes", "maybe"))
    job = _job(tmp_path, conditions=["image", "text_only", "swap"])
    layout = RunLayout(str(tmp_path / "run"))
    stats = run_mod.prepare_samples(job, layout)
    assert stats["samples"] == 4 and stats["manifest_errors"] == 1 and "swap" in stats
    samples = pq.read_table(layout.samples_file).to_pandas()
    assert sorted(samples["sample_id"]) == ["s0", "s1", "s2", "s3"]
    # swap: each sample's partner is another patient's image
    assert samples["swap_image_uri"].notna().all() and (samples["swap_image_uri"] != samples["image_uri"]).all()
    errs = pq.read_table(layout.manifest_errors_file)
    assert errs.schema == ERRORS and errs.column("sample_id").to_pylist() == ["s4"]
    assert run_mod.prepare_samples(job, layout) == {"reused": True}


def test_prepare_samples_without_errors_writes_an_empty_errors_table(tmp_path):
    _case(tmp_path, labels=("no", "yes"))
    layout = RunLayout(str(tmp_path / "run"))
    stats = run_mod.prepare_samples(_job(tmp_path), layout)
    assert stats["samples"] == 2 and stats["manifest_errors"] == 0 and "swap" not in stats
    errs = pq.read_table(layout.manifest_errors_file)
    assert errs.schema == ERRORS and errs.num_rows == 0


# --------------------------------------------------------------------------- progress

def test_progress_writes_at_most_every_2_s_the_latest_event_per_model(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(run_mod, "time", types.SimpleNamespace(perf_counter=clock.perf_counter,
                                                               monotonic=clock.monotonic))
    monkeypatch.setattr(run_mod, "now_iso", lambda: "NOW")
    layout = RunLayout(str(tmp_path / "run"))
    got = []
    p = run_mod._Progress(layout, got.append)
    read = lambda: json.loads(open(layout.progress_json).read())  # noqa: E731
    e1, e2, e3 = ({"model": m, "units_done": k, "units_total": 9} for m, k in (("a", 1), ("b", 1), ("a", 2)))
    clock.mono = 1.9
    p(e1)  # 1.9 - 0 < 2: nothing written
    assert not os.path.exists(layout.progress_json)
    clock.mono = 2.5
    p(e1)  # 2.5 - 0 >= 2: written
    assert read() == {"updated_at": "NOW", "models": {"a": e1}}
    clock.mono = 3.0
    p(e2)  # 3.0 - 2.5 < 2: not written
    assert read() == {"updated_at": "NOW", "models": {"a": e1}}
    clock.mono = 4.5
    p(e3)  # 4.5 - 2.5 = 2.0 >= 2: written, the latest event of each model
    assert read() == {"updated_at": "NOW", "models": {"a": e3, "b": e2}}
    assert got == [e1, e1, e2, e3] and all(g is e for g, e in zip(got, [e1, e1, e2, e3]))


def test_progress_calls_an_older_three_argument_callback_with_model_done_total(tmp_path):
    got = []

    def legacy(model, done, total):
        got.append((model, done, total))

    p = run_mod._Progress(RunLayout(str(tmp_path / "run")), legacy)
    p({"model": "a", "units_done": 3, "units_total": 10, "requests_scored": 7})
    assert got == [("a", 3, 10)]
    one = []
    p = run_mod._Progress(RunLayout(str(tmp_path / "run")), lambda event, *more, **kw: one.append(event))
    p({"model": "a", "units_done": 3, "units_total": 10})
    assert one == [{"model": "a", "units_done": 3, "units_total": 10}]
    p = run_mod._Progress(RunLayout(str(tmp_path / "run")), None)
    p({"model": "a", "units_done": 1, "units_total": 2})  # no callback: only progress.json
    assert p.latest == {"a": {"model": "a", "units_done": 1, "units_total": 2}}


def test_progress_that_cannot_be_written_is_a_warning(tmp_path, caplog):
    (tmp_path / "file").write_text("not a folder")
    layout = RunLayout(str(tmp_path / "file" / "run"))
    p = run_mod._Progress(layout, None)
    with caplog.at_level(logging.WARNING, logger="vlm_eval.run"):
        p.flush()
    assert [r.getMessage() for r in caplog.records if r.name == "vlm_eval.run"] == [
        f"could not write {layout.progress_json}"]


def test_positional_arity():
    def f(a, /, b, *args, c=1, **kw):
        return a

    assert run_mod._positional_arity(lambda x, y, z: 0) == 3
    assert run_mod._positional_arity(f) == 2  # a (positional-only) and b; *args, c and **kw are not counted
    assert run_mod._positional_arity(min) == 1  # no signature: taken as a one-argument callback


# --------------------------------------------------------------------------- run_job end to end

def test_a_run_within_the_budget_succeeds_and_records_everything(tmp_path, driver):
    _case(tmp_path)  # s0..s2 good, s3 label "maybe": a manifest error
    data = _data(tmp_path, cache={"enabled": True}, failure={"max_error_fraction": 0.25},
                 resources={"actors": 1, "gpus_per_actor": 0, "batch_size": 4, "ray_address": "ray://127.0.0.1:10001"})
    job = validate_job(data)
    # Seed a cache partition and a prekey partition with two files each: compaction merges them.
    cache_url = storage.join(str(tmp_path / "runs"), "_cache")
    mkey = cache.model_key(job.models[0].model_dump())
    for k in range(2):
        cache_store.write_part(cache.model_dir(cache_url, mkey), "zz", f"seed{k}", pa.table(
            {"cache_key": [bytes([k]) * 32], "logprob_yes": [-0.1], "logprob_no": [-2.0], "other_mass": [0.0]},
            schema=cache.CACHE_SCHEMA))
        cache_store.write_part(prekey.root(cache_url), "zz", f"seed{k}", pa.table(
            {"prekey": [bytes([k]) * 32], "sha256": ["ab"], "width": [8], "height": [8]}, schema=prekey.PREKEY_SCHEMA))
    events = []
    result = run_mod.run_job(job, progress=events.append)
    run = tmp_path / "runs" / "g-1"
    layout = RunLayout(str(run))
    rec = _run_json(tmp_path)

    # 3 samples + 1 manifest error = 4 inputs, 1 errored, every sample complete (margin 0.5 everywhere):
    # 1/4 = 0.25 <= max_error_fraction 0.25 (exactly at the budget) -> succeeded
    assert result.status == "succeeded" and rec["status"] == "succeeded"
    assert result.run_url == storage.join(str(tmp_path / "runs"), "g-1")
    assert rec["error_fraction"] == 0.25 and rec["attempt"] == 1 and rec["run_id"] == "g-1"
    assert rec["report"] == layout.report_html and os.path.exists(layout.report_html)
    # perf_counter: run t0 (call 1), plan t0 (2), plan end (3), run end (4), 0.1152 s apart:
    # run seconds = 3 * 0.1152 = 0.3456 -> 0.35; plan seconds = 0.1152 -> 0.12
    assert rec["seconds"] == 0.35 and result.counts["plan"]["seconds"] == 0.12
    assert rec["finished_at"].startswith("2026-01-01T00:00:") and rec["finished_at"] > rec["started_at"]
    assert set(rec) == {"run_id", "job", "versions", "prompt_set", "started_at", "first_started_at", "status",
                        "attempt", "finished_at", "seconds", "counts", "error_fraction", "report"}
    assert rec["counts"] == json.loads(json.dumps(result.counts))
    counts = result.counts
    assert set(counts) == {"input", "forward_passes", "plan", "models", "prekey_compaction", "reduce"}
    assert counts["input"]["samples"] == 3 and counts["input"]["manifest_errors"] == 1
    # 3 samples x (question + 1 paraphrase) = 6 image prompts; text_only: 2 distinct prompt texts.
    # planned = 6 x 1 image condition + 2 text prompts = 8; naive = 6 x (1 + 1 ablation) = 12
    assert counts["forward_passes"] == {"planned": 8, "naive": 12}
    assert {k: v for k, v in counts["plan"].items() if k not in ("units", "seconds")} == {
        "samples": 3, "distinct_images": 3, "distinct_text_prompts": 2}
    assert counts["plan"]["units"] >= 2  # image units + a text unit
    m = counts["models"]["m"]
    assert m["distinct_images"] == 3 and m["units_scored"] == counts["plan"]["units"]
    # the seeded 2-file partition was merged (1 partition, its 2 files removed), maybe more of the run's own
    assert m["cache_compaction"]["partitions"] >= 1 and m["cache_compaction"]["files_removed"] >= 2
    assert len(os.listdir(os.path.join(cache.model_dir(cache_url, mkey), "part=zz"))) == 1
    assert counts["prekey_compaction"]["partitions"] >= 1 and counts["prekey_compaction"]["files_removed"] >= 2
    assert len(os.listdir(os.path.join(prekey.root(cache_url), "part=zz"))) == 1
    assert counts["reduce"]["models"]["m"] == {
        "n_samples": 3, "complete": 3, "incomplete": 0, "errors": 1, "manifest_errors": 1, "condition_errors": 0,
        "duplicates_dropped": 0, "orphan_predictions": 0, "unusable_predictions": 0}
    pd.testing.assert_frame_equal(result.summary, pd.read_parquet(layout.summary_parquet))

    # what the scorer was handed
    (call,) = driver.score_calls
    assert call["job"].name == "g" and call["model"] == "m" and call["run_url"] == str(run)
    assert (call["cache_url"], call["run_id"], call["attempt"]) == (cache_url, "g-1", 1)
    assert driver.ensure_calls == ["ray://127.0.0.1:10001"] and driver.shutdowns == 1
    # progress: one event per unit reached the caller and progress.json (written at the end)
    assert [e["units_done"] for e in events] == list(range(1, counts["plan"]["units"] + 1))
    assert all(e["model"] == "m" for e in events)
    prog = json.loads(open(layout.progress_json).read())
    assert set(prog) == {"updated_at", "models"} and prog["models"] == {"m": events[-1]}
    # the status at scoring time was "running"
    assert driver.run_json_at_scoring[0]["status"] == "running"


def test_past_the_error_budget_the_run_fails_with_its_message(tmp_path, driver):
    _case(tmp_path)
    # 1 errored of 4 inputs with a budget of 0.1: 0.25 > 0.1 -> failed_errors
    data = _data(tmp_path, run_id="g-2", failure={"max_error_fraction": 0.1})
    with pytest.raises(JobFailedError) as info:
        run_mod.run_job(validate_job(data))
    run_url = storage.join(str(tmp_path / "runs"), "g-2")
    assert str(info.value) == (
        f"1 of 4 samples errored or incomplete (25.0%) > failure.max_error_fraction = 10.0%; see "
        f"{RunLayout(run_url).errors_dir} and the quadrant tables' incomplete_reason. Tables were still written "
        f"to {run_url}")
    rec = _run_json(tmp_path, "g-2")
    assert rec["status"] == "failed_errors" and rec["error_fraction"] == 0.25 and "error" not in rec
    assert rec["counts"]["reduce"]["models"]["m"]["errors"] == 1


def test_error_fraction_is_rounded_to_6_digits_and_a_disabled_cache_is_not_used(tmp_path, driver):
    _case(tmp_path, labels=("no", "yes", "maybe"))  # 2 samples + 1 manifest error: 1/3
    res = run_mod.run_job(validate_job(_data(tmp_path, cache={"enabled": False, "url": str(tmp_path / "unused")})))
    assert _run_json(tmp_path)["error_fraction"] == 0.333333  # round(1/3, 6)
    assert driver.score_calls[0]["cache_url"] is None  # disabled: its url is ignored
    assert "prekey_compaction" not in res.counts and "cache_compaction" not in res.counts["models"]["m"]


def test_resume_keeps_first_start_counts_attempts_and_reuses_samples(tmp_path, driver):
    _case(tmp_path)
    job = validate_job(_data(tmp_path))
    run_mod.run_job(job)
    first = _run_json(tmp_path)
    res = run_mod.run_job(job)
    rec = _run_json(tmp_path)
    assert rec["attempt"] == 2 and rec["first_started_at"] == first["first_started_at"]
    assert rec["started_at"] != first["started_at"]
    assert res.counts["input"] == {"reused": True}
    assert [c["attempt"] for c in driver.score_calls] == [1, 2]
    assert res.counts["models"]["m"]["units_scored"] == 0  # every unit committed by attempt 1


def test_a_run_whose_run_json_is_gone_starts_again_on_its_samples(tmp_path, driver):
    _case(tmp_path)
    job = validate_job(_data(tmp_path))
    run_mod.run_job(job)
    os.remove(tmp_path / "runs" / "g-1" / "run.json")  # samples/ stay; nothing recorded to compare with
    res = run_mod.run_job(job)
    assert res.status == "succeeded" and _run_json(tmp_path)["attempt"] == 1
    assert res.counts["input"] == {"reused": True}


def test_a_run_that_failed_before_its_samples_is_free_to_start_over(tmp_path, driver):
    _case(tmp_path)
    run = tmp_path / "runs" / "g-1"
    run.mkdir(parents=True)
    # another job was recorded, but no samples/ were written: no refusal, start times and attempts go on
    (run / "run.json").write_text(json.dumps({"run_id": "g-1", "job": {"dataset": {"adapter": "other"}},
                                              "first_started_at": "2020-01-01T00:00:00Z", "attempt": 2,
                                              "status": "failed", "error": "OSError: disk"}))
    res = run_mod.run_job(validate_job(_data(tmp_path)))
    rec = _run_json(tmp_path)
    assert res.status == "succeeded" and rec["attempt"] == 3 and rec["first_started_at"] == "2020-01-01T00:00:00Z"
    assert "error" not in rec and driver.score_calls[0]["attempt"] == 3


def test_an_exception_is_recorded_as_failed_with_its_message_cut_at_2000(tmp_path, monkeypatch, driver):
    _case(tmp_path)
    driver.fail = "boom " + "x" * 3000
    with pytest.raises(RuntimeError, match="boom"):
        run_mod.run_job(validate_job(_data(tmp_path)))
    rec = _run_json(tmp_path)
    assert rec["status"] == "failed"
    assert rec["error"] == ("RuntimeError: boom " + "x" * 3000)[:2000] and len(rec["error"]) == 2000
    assert rec["finished_at"].startswith("2026-01-01T00:00:")


def test_a_ray_started_for_scoring_is_shut_down_when_scoring_fails(tmp_path, driver):
    """Was a bug (session 5): _score_all returned `started` only on success, so a local Ray it had started
    was left running when scoring raised."""
    _case(tmp_path)
    driver.fail = "engine died"
    with pytest.raises(RuntimeError, match="engine died"):
        run_mod.run_job(validate_job(_data(tmp_path)))
    assert driver.ensure_calls == [None]  # this run started a local Ray ...
    assert driver.shutdowns == 1  # ... and, failing, must shut it down as a successful run does


def test_a_run_without_work_units_never_starts_ray(tmp_path, driver):
    _case(tmp_path, labels=("maybe", "perhaps"))  # every row a manifest error: no sample, no unit
    with pytest.raises(JobFailedError):
        run_mod.run_job(validate_job(_data(tmp_path)))
    assert driver.ensure_calls == [] and driver.shutdowns == 0
    rec = _run_json(tmp_path)
    assert rec["status"] == "failed_errors" and rec["error_fraction"] == 1.0  # 2 of 2 inputs
    assert rec["counts"]["plan"]["units"] == 0


def test_ray_is_shut_down_only_when_this_run_started_it_and_was_asked_to(tmp_path, driver):
    _case(tmp_path)
    driver.started = False  # Ray was already up (a cluster, a notebook): leave it running
    run_mod.run_job(validate_job(_data(tmp_path)))
    assert len(driver.ensure_calls) == 1 and driver.shutdowns == 0
    driver.started = True
    run_mod.run_job(validate_job(_data(tmp_path, run_id="g-2")), shutdown_ray=False)
    assert driver.shutdowns == 0  # started here, but the caller keeps it (the default shuts it down: first test)


def test_an_explicit_cache_url_is_the_cache_folder(tmp_path, driver):
    # (the default OUTPUT/_cache: the first test; a disabled cache: the rounding test)
    _case(tmp_path)
    res = run_mod.run_job(validate_job(_data(tmp_path, cache={"enabled": True, "url": str(tmp_path / "shared")})))
    assert [c["cache_url"] for c in driver.score_calls] == [str(tmp_path / "shared")]
    assert os.path.isdir(tmp_path / "shared") and not os.path.exists(tmp_path / "runs" / "_cache")
    assert set(res.counts["models"]["m"]["cache_compaction"]) == {"partitions", "files_removed"}


def test_a_relative_output_on_a_cluster_is_refused_before_anything_is_written(tmp_path, monkeypatch, driver):
    _case(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    data = _data(tmp_path, output="rel-runs", resources={"actors": 1, "gpus_per_actor": 0, "batch_size": 4,
                                                         "ray_address": "ray://10.0.0.1:10001"})
    with pytest.raises(InputError, match="relative path"):
        run_mod.run_job(validate_job(data))
    assert not (tmp_path / "rel-runs").exists() and driver.ensure_calls == []


def test_a_generated_prompt_set_is_recorded_before_scoring_and_its_ray_shut_down(tmp_path, monkeypatch, driver):
    _case(tmp_path)
    seen = []

    def fake_generate(job, run_url, existing):
        seen.append((job.name, run_url, None if existing is None else existing.get("attempt")))
        return job, {"name": "gen", "sha256": "abc123", "path": "/sets/gen.yaml"}, True

    monkeypatch.setattr(generate_actor, "prepare_generated_set", fake_generate)
    driver.started = False  # only the generation stage started Ray
    job = validate_job(_data(tmp_path, prompts={"paraphrases": 1, "generate": {"model": "m"}}))
    run_mod.run_job(job)
    run_mod.run_job(job)  # the resume hands generation the previous run.json
    run_url = storage.join(str(tmp_path / "runs"), "g-1")
    assert seen == [("g", run_url, None), ("g", run_url, 1)]
    assert driver.shutdowns == 2
    rec = _run_json(tmp_path)
    assert rec["prompt_set"] == {"name": "cxr-binary-v1", "sha256": "abc123"}
    assert rec["prompt_set_generated"] == {"name": "gen", "sha256": "abc123", "path": "/sets/gen.yaml"}
    at_scoring = driver.run_json_at_scoring[0]  # written before scoring started
    assert at_scoring["prompt_set"] == {"name": "cxr-binary-v1", "sha256": "abc123"}
    assert at_scoring["prompt_set_generated"]["path"] == "/sets/gen.yaml"
