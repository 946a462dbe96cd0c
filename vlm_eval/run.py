"""One evaluation run: plan -> score every model on Ray -> reduce -> report.

A run lives in OUTPUT/RUN_ID/. Running a job whose run folder already exists
resumes it: the stored sample table is reused (so units are planned the same
way), committed shards are skipped, and only missing work is scored.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import pyarrow as pa

from vlm_eval import storage
from vlm_eval.config import Job
from vlm_eval.errors import InputError, JobFailedError
from vlm_eval.layout import RunLayout
from vlm_eval.provenance import now_iso, package_versions, redact
from vlm_eval.schema import ERRORS, SAMPLES, conform

log = logging.getLogger("vlm_eval.run")

# Changing these between a run and its resume would change what was measured.
_RESUME_MUST_MATCH = ("dataset", "prompts", "conditions")


@dataclass
class RunResult:
    run_url: str
    status: str
    counts: dict
    summary: pd.DataFrame | None


def _job_record(job: Job) -> dict:
    return redact(job.model_dump(mode="json"))


def _check_resume(existing: dict, job: Job, run_url: str) -> None:
    old = existing.get("job", {})
    new = _job_record(job)
    changed = [k for k in _RESUME_MUST_MATCH if old.get(k) != new.get(k)]
    if changed:
        raise InputError(
            f"run {run_url} exists with a different {', '.join(changed)}; resuming would mix "
            "results. Use a new run_id (or omit run_id), or restore the original job settings."
        )


def prepare_samples(job: Job, layout: RunLayout) -> tuple[pd.DataFrame, dict]:
    """Load (or, on resume, reuse) the run's canonical samples; write manifest errors."""
    if storage.exists(layout.samples_file):
        table = storage.read_parquet_dir(layout.samples_dir, SAMPLES)
        return table.to_pandas(), {"reused": True}
    from vlm_eval.datasets import load_samples

    sset = load_samples(job.dataset, job.prompts, conditions=job.conditions)
    samples = sset.samples.reset_index(drop=True)
    storage.write_parquet_atomic(
        conform(pa.Table.from_pandas(samples, preserve_index=False), SAMPLES), layout.samples_file
    )
    if len(sset.errors):
        errors = conform(pa.Table.from_pandas(sset.errors.reset_index(drop=True), preserve_index=False), ERRORS)
        storage.write_parquet_atomic(errors, layout.manifest_errors_file)
    elif storage.exists(layout.manifest_errors_file):
        storage.remove(layout.manifest_errors_file)
    stats = dict(sset.stats)
    stats.update(samples=len(samples), manifest_errors=len(sset.errors))
    return samples, stats


def run_job(job: Job, *, progress: Callable[[str, int, int], None] | None = None,
            shutdown_ray: bool = True) -> RunResult:
    """Run (or resume) ``job`` end to end. Raises JobFailedError past the error budget."""
    from vlm_eval.reduce import reduce_run
    from vlm_eval.pipeline.ray_env import check_output
    from vlm_eval.report import write_report

    check_output(job.output, job.resources.ray_address)  # relative output on a cluster: refuse
    run_id = job.resolved_run_id()
    run_url = storage.join(job.output, run_id)
    layout = RunLayout(run_url)
    existing = storage.read_json(layout.run_json) if storage.exists(layout.run_json) else None
    if existing:
        _check_resume(existing, job, run_url)
    record = _start_record(job, run_id, existing)
    storage.write_json_atomic(record, layout.run_json)
    t0 = time.perf_counter()
    ray_started = False
    try:  # any failure from here on is recorded in run.json before it propagates
        job = _with_resolved_models(job)
        if job.prompts.generate is not None:  # a new set in RUN/prompt_sets/, made once per run
            from vlm_eval.pipeline.generate_actor import prepare_generated_set

            job, generated, ray_started = prepare_generated_set(job, run_url, existing)
            record.update(prompt_set={"name": job.prompts.set, "sha256": generated.get("sha256")},
                          prompt_set_generated=generated)
            storage.write_json_atomic(record, layout.run_json)
        counts, ray_started_here = _score_all(job, layout, run_id, progress)
        ray_started = ray_started or ray_started_here
    except BaseException as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=now_iso())
        storage.write_json_atomic(record, layout.run_json)
        raise
    finally:
        if ray_started and shutdown_ray:
            import ray

            ray.shutdown()
    reduced = reduce_run(run_url, job.taxonomy)
    report_path = write_report(run_url)
    counts["reduce"] = reduced
    n_input, errored = _input_and_errored(reduced)
    frac = errored / n_input if n_input else 0.0
    status = "succeeded" if frac <= job.failure.max_error_fraction else "failed_errors"
    record.update(status=status, finished_at=now_iso(), seconds=round(time.perf_counter() - t0, 2),
                  counts=counts, error_fraction=round(frac, 6), report=report_path)
    storage.write_json_atomic(record, layout.run_json)
    summary_url = layout.path("summary.parquet")
    summary = pd.read_parquet(summary_url) if storage.exists(summary_url) else None
    if status != "succeeded":
        raise JobFailedError(
            f"{errored} of {n_input} samples errored ({frac:.1%}) > failure.max_error_fraction "
            f"= {job.failure.max_error_fraction:.1%}; see {layout.errors_dir}. Tables were still written to {run_url}"
        )
    return RunResult(run_url, status, counts, summary)


def _start_record(job: Job, run_id: str, existing: dict | None) -> dict:
    from vlm_eval.prompts import load_prompt_set

    return {
        "run_id": run_id,
        "job": _job_record(job),
        "versions": package_versions(),
        "prompt_set": {"name": job.prompts.set, "sha256": load_prompt_set(job.prompts.set).sha256},
        "started_at": now_iso(),
        "first_started_at": (existing or {}).get("first_started_at") or now_iso(),
        "status": "running",
        "attempt": int((existing or {}).get("attempt", 0)) + 1,
    }


def _score_all(job: Job, layout: RunLayout, run_id: str, progress) -> tuple[dict, bool]:
    """Plan the units and score every model; returns (counts, whether Ray was started)."""
    from vlm_eval.pipeline.execute import score_model
    from vlm_eval.pipeline.plan import forward_passes, plan_units
    from vlm_eval.pipeline.ray_env import ensure_ray

    samples, sample_stats = prepare_samples(job, layout)
    units = plan_units(samples, job.prompts.system, job.ablations, job.resources.batch_size)
    counts: dict = {"input": sample_stats, "forward_passes": forward_passes(samples, job.prompts.system, job.ablations),
                    "models": {}}
    started = ensure_ray(job.resources.ray_address) if units else False
    cache_url = (job.cache.url or storage.join(job.output, "_cache")) if job.cache.enabled else None
    for model in job.models:
        st = score_model(job, model, units, layout.root, progress=progress, cache_url=cache_url, run_id=run_id)
        counts["models"][model.name] = {
            "units": st.units_total, "units_skipped": st.units_skipped,
            "units_scored": st.units_scored, "predictions_written": st.predictions,
            "image_errors": st.errors, "requests_scored": st.scored, "requests_cached": st.cached,
            "seconds": round(st.seconds, 2),
        }
    return counts, started


def _with_resolved_models(job: Job) -> Job:
    """Resolve ``builtin:`` model paths to local folders (the recorded job keeps the name)."""
    from vlm_eval.engines.model_paths import resolve_model_path

    models = [m.model_copy(update={"path": resolve_model_path(m.path)}) for m in job.models]
    return job.model_copy(update={"models": models})


def _input_and_errored(reduced: dict) -> tuple[int, int]:
    """(input rows, errored rows of the worst model): each model must meet the budget.

    Input rows = samples + manifest rows that never became samples; read from the
    reducer's counts so a resumed run computes the same fraction.
    """
    per_model = reduced.get("models", {}) if isinstance(reduced, dict) else {}
    if not per_model:
        return 0, 0
    n_input = max(int(m.get("n_samples", 0)) + int(m.get("manifest_errors", 0)) for m in per_model.values())
    errored = max(int(m.get("errors", 0)) for m in per_model.values())
    return n_input, errored
