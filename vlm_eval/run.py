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
from vlm_eval.pipeline.layout import RunLayout
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
    from vlm_eval.pipeline.execute import score_model
    from vlm_eval.pipeline.plan import forward_passes, plan_units
    from vlm_eval.pipeline.ray_env import ensure_ray
    from vlm_eval.prompts import load_prompt_set
    from vlm_eval.reduce import reduce_run
    from vlm_eval.report import write_report

    run_id = job.resolved_run_id()
    run_url = storage.join(job.output, run_id)
    layout = RunLayout(run_url)
    existing = storage.read_json(layout.run_json) if storage.exists(layout.run_json) else None
    if existing:
        _check_resume(existing, job, run_url)
    prompt_set = load_prompt_set(job.prompts.set)
    record = {
        "run_id": run_id,
        "job": _job_record(job),
        "versions": package_versions(),
        "prompt_set": {"name": job.prompts.set, "sha256": prompt_set.sha256},
        "started_at": now_iso(),
        "first_started_at": (existing or {}).get("first_started_at") or now_iso(),
        "status": "running",
        "attempt": int((existing or {}).get("attempt", 0)) + 1,
    }
    storage.write_json_atomic(record, layout.run_json)
    t0 = time.perf_counter()
    job = _with_resolved_models(job)
    gen_started = False
    if job.prompts.generate is not None:  # a new set in RUN/prompt_sets/, made once per run
        from vlm_eval.pipeline.generate_actor import prepare_generated_set

        job, generated, gen_started = prepare_generated_set(job, run_url, existing)
        record.update(prompt_set={"name": job.prompts.set, "sha256": generated.get("sha256")},
                      prompt_set_generated=generated)
        storage.write_json_atomic(record, layout.run_json)
    samples, sample_stats = prepare_samples(job, layout)
    units = plan_units(samples, job.prompts.system, job.ablations, job.resources.batch_size)
    counts: dict = {"input": sample_stats, "forward_passes": forward_passes(samples, job.prompts.system, job.ablations)}
    started = (ensure_ray(job.resources.ray_address) if units else False) or gen_started
    try:
        counts["models"] = {}
        cache_url = (job.cache.url or storage.join(job.output, "_cache")) if job.cache.enabled else None
        for model in job.models:
            st = score_model(job, model, units, run_url, progress=progress, cache_url=cache_url, run_id=run_id)
            counts["models"][model.name] = {
                "units": st.units_total, "units_skipped": st.units_skipped,
                "units_scored": st.units_scored, "predictions_written": st.predictions,
                "image_errors": st.errors, "requests_scored": st.scored, "requests_cached": st.cached,
                "seconds": round(st.seconds, 2),
            }
    except BaseException as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=now_iso())
        storage.write_json_atomic(record, layout.run_json)
        raise
    finally:
        if started and shutdown_ray:
            import ray

            ray.shutdown()
    reduced = reduce_run(run_url, job.taxonomy)
    report_path = write_report(run_url)
    counts["reduce"] = reduced
    n_input = int(sample_stats.get("rows_total", len(samples) + sample_stats.get("manifest_errors", 0)))
    errored = _errored_samples(reduced)
    frac = errored / n_input if n_input else 0.0
    status = "succeeded" if frac <= job.failure.max_error_fraction else "failed_errors"
    record.update(status=status, finished_at=now_iso(), seconds=round(time.perf_counter() - t0, 2),
                  counts=counts, error_fraction=round(frac, 6), report=report_path)
    storage.write_json_atomic(record, layout.run_json)
    summary = pd.read_parquet(layout.path("summary.parquet")) if storage.exists(layout.path("summary.parquet")) else None
    result = RunResult(run_url, status, counts, summary)
    if status != "succeeded":
        raise JobFailedError(
            f"{errored} of {n_input} samples errored ({frac:.1%}) > failure.max_error_fraction "
            f"= {job.failure.max_error_fraction:.1%}; see {layout.errors_dir}. Tables were still written to {run_url}"
        )
    return result


def _with_resolved_models(job: Job) -> Job:
    """Resolve ``builtin:`` model paths to local folders (the recorded job keeps the name)."""
    from vlm_eval.demo import resolve_model_path

    models = [m.model_copy(update={"path": resolve_model_path(m.path)}) for m in job.models]
    return job.model_copy(update={"models": models})


def _errored_samples(reduced: dict) -> int:
    """Worst model's count of errored samples (each model must meet the budget)."""
    per_model = reduced.get("models", {}) if isinstance(reduced, dict) else {}
    return max((int(m.get("errors", 0)) for m in per_model.values()), default=0)
