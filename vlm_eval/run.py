"""One evaluation run: plan -> score every model on Ray -> reduce -> report.

A run lives in OUTPUT/RUN_ID/. Running a job whose run folder already exists
resumes it: the stored sample table is reused, units are planned from it again (their
ids come from their content), committed shards are skipped and only missing work is
scored. A resume must be the same job: a changed dataset, prompt set, condition list or
model entry is refused (old and new scores are never mixed). A run that failed before
it wrote its samples holds nothing, so its run_id is free to start over.

``run.json`` is written at start (status ``running``) and always ends ``succeeded``,
``failed_errors`` or ``failed`` (any exception, in any stage, including reduce and the
report); the final status is written before the report, so the report shows it.
"""
from __future__ import annotations

import gc
import inspect
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
from vlm_eval.schema import ERRORS, conform

log = logging.getLogger("vlm_eval.run")

# Changing these between a run and its resume would change what was measured.
_RESUME_MUST_MATCH = ("dataset", "prompts", "conditions")
_MODEL_FIELDS = ("engine", "path", "revision", "lora", "options")
PROGRESS_EVERY_S = 2.0


@dataclass
class RunResult:
    run_url: str
    status: str
    counts: dict
    summary: pd.DataFrame | None


def _job_record(job: Job) -> dict:
    return redact(job.model_dump(mode="json"))


def _model_changes(old: list, new: list) -> list[str]:
    old_by, new_by = {m.get("name"): m for m in old or []}, {m.get("name"): m for m in new or []}
    out = []
    for name in sorted(set(old_by) | set(new_by), key=str):
        if name not in old_by or name not in new_by:
            out.append(f"model {name!r} {'added' if name not in old_by else 'removed'}")
            continue
        fields = [f for f in sorted(set(old_by[name]) | set(new_by[name]))
                  if f != "name" and old_by[name].get(f) != new_by[name].get(f)]
        if fields:
            out.append(f"model {name!r} changed {', '.join(fields)}")
    return out


def _check_resume(existing: dict, job: Job, run_url: str) -> None:
    old = existing.get("job", {})
    new = _job_record(job)
    changed = [k for k in _RESUME_MUST_MATCH if old.get(k) != new.get(k)]
    changed += _model_changes(old.get("models", []), new.get("models", []))
    if changed:
        raise InputError(
            f"run {run_url} exists with a different {'; '.join(changed)}; resuming would mix old and new "
            "results. Use a new run_id (or omit run_id), or restore the original job settings."
        )


def prepare_samples(job: Job, layout: RunLayout) -> dict:
    """Write the run's canonical samples once (image-major order) and its manifest
    errors (an empty errors table when there are none: ``errors/`` always exists).
    On resume, reuse them. Returns input stats."""
    if storage.exists(layout.samples_file):
        return {"reused": True}
    import io

    from vlm_eval.datasets import load_samples_table
    from vlm_eval.pipeline.units import ROW_GROUP_ROWS

    # Compact samples, sorted on a narrow key and written a few row groups at a time:
    # the same table as load_samples + sort_image_major, in bounded driver memory.
    sset = load_samples_table(job.dataset, job.prompts, conditions=job.conditions)
    stats = dict(sset.stats)
    stats.update(samples=sset.num_rows, manifest_errors=len(sset.errors))
    errors = sset.errors.reset_index(drop=True)
    buf = io.BytesIO()
    sset.write_parquet(buf, ROW_GROUP_ROWS)
    del sset
    gc.collect()
    errs = conform(pa.Table.from_pandas(errors, preserve_index=False), ERRORS) if len(errors) else ERRORS.empty_table()
    storage.write_parquet_atomic(errs, layout.manifest_errors_file)
    storage.write_bytes_atomic(layout.samples_file, buf.getvalue())
    return stats


class _Progress:
    """Forwards pipeline events to the caller and to progress.json (at most every 2 s)."""

    def __init__(self, layout: RunLayout, callback: Callable | None):
        self.layout, self.callback, self.last, self.latest = layout, callback, 0.0, {}
        self.legacy = callback is not None and _positional_arity(callback) >= 3

    def __call__(self, event: dict) -> None:
        self.latest[event["model"]] = event
        if self.callback is not None:
            if self.legacy:  # an older (model, done, total) callback
                self.callback(event["model"], event["units_done"], event["units_total"])
            else:
                self.callback(event)
        if time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        try:
            storage.write_json_atomic({"updated_at": now_iso(), "models": self.latest}, self.layout.progress_json)
        except Exception:  # noqa: BLE001 - progress is advisory; never fail a run on it
            log.warning("could not write %s", self.layout.progress_json)


def _positional_arity(fn: Callable) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def run_job(job: Job, *, progress: Callable[[dict], None] | None = None, shutdown_ray: bool = True) -> RunResult:
    """Run (or resume) ``job`` end to end. Raises JobFailedError past the error budget.

    progress: called with an event dict per committed unit (keys ``model, units_done,
    units_total, requests_scored, requests_cached, errors, images_fetched, elapsed_s``).
    """
    from vlm_eval.pipeline.ray_env import check_output

    check_output(job.output, job.resources.ray_address)  # a relative output on a cluster: refuse
    run_id = job.resolved_run_id()
    run_url = storage.join(job.output, run_id)
    layout = RunLayout(run_url)
    existing = storage.read_json(layout.run_json) if storage.exists(layout.run_json) else None
    if existing and storage.exists(layout.samples_file):
        _check_resume(existing, job, run_url)
    elif existing:  # failed before it wrote samples: nothing to resume, nothing to mix
        existing = {k: existing[k] for k in ("first_started_at", "attempt") if k in existing}
    record = _start_record(job, run_id, existing)
    storage.write_json_atomic(record, layout.run_json)
    t0 = time.perf_counter()
    events = _Progress(layout, progress)
    ray_state = {"started": False}  # set as soon as this run starts Ray: shut down even if a stage fails
    try:  # any failure from here on is recorded in run.json before it propagates
        try:
            job = _with_resolved_models(job)
            if job.prompts.generate is not None:  # a new set in RUN/prompt_sets/, made once per run
                from vlm_eval.pipeline.generate_actor import prepare_generated_set

                job, generated, ray_state["started"] = prepare_generated_set(job, run_url, existing)
                record.update(prompt_set={"name": job.prompts.set, "sha256": generated.get("sha256")},
                              prompt_set_generated=generated)
                storage.write_json_atomic(record, layout.run_json)
            counts = _score_all(job, layout, run_id, events, record["attempt"], ray_state)
        finally:
            events.flush()
            if ray_state["started"] and shutdown_ray:
                import ray

                ray.shutdown()
        status, frac, n_input, errored = _reduce(job, run_url, counts)
        record.update(status=status, finished_at=now_iso(), seconds=round(time.perf_counter() - t0, 2),
                      counts=counts, error_fraction=round(frac, 6), report=layout.report_html)
        storage.write_json_atomic(record, layout.run_json)  # before the report: it shows this status
        from vlm_eval.report import write_report

        write_report(run_url)
    except BaseException as exc:
        record.update(status="failed", error=redact(f"{type(exc).__name__}: {exc}")[:2000], finished_at=now_iso())
        storage.write_json_atomic(record, layout.run_json)
        raise
    summary = pd.read_parquet(layout.summary_parquet) if storage.exists(layout.summary_parquet) else None
    if status != "succeeded":
        raise JobFailedError(
            f"{errored} of {n_input} samples errored or incomplete ({frac:.1%}) > failure.max_error_fraction "
            f"= {job.failure.max_error_fraction:.1%}; see {layout.errors_dir} and the quadrant tables' "
            f"incomplete_reason. Tables were still written to {run_url}"
        )
    return RunResult(run_url, status, counts, summary)


def _reduce(job: Job, run_url: str, counts: dict) -> tuple[str, float, int, int]:
    from vlm_eval.reduce import reduce_run

    reduced = reduce_run(run_url, job.taxonomy)
    counts["reduce"] = reduced
    n_input, errored = _input_and_errored(reduced)
    frac = errored / n_input if n_input else 0.0
    status = "succeeded" if frac <= job.failure.max_error_fraction else "failed_errors"
    return status, frac, n_input, errored


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


def _score_all(job: Job, layout: RunLayout, run_id: str, events: _Progress, attempt: int, ray_state: dict) -> dict:
    """Plan the units and score every model; returns counts. Sets ``ray_state["started"]`` as soon as
    it starts Ray, so the caller shuts Ray down also when scoring then fails."""
    from vlm_eval.pipeline import cache, prekey
    from vlm_eval.pipeline.execute import score_model
    from vlm_eval.pipeline.plan import forward_passes, plan_for_job
    from vlm_eval.pipeline.ray_env import ensure_ray

    sample_stats = prepare_samples(job, layout)
    t0 = time.perf_counter()
    plan = plan_for_job(layout.samples_file, job)
    counts: dict = {"input": sample_stats, "forward_passes": forward_passes(plan, job.ablations),
                    "plan": {"units": plan.units.num_rows, "samples": plan.n_samples, "distinct_images": plan.n_images,
                             "distinct_text_prompts": plan.n_text_prompts,
                             "seconds": round(time.perf_counter() - t0, 2)},
                    "models": {}}
    if plan.units.num_rows and ensure_ray(job.resources.ray_address):
        ray_state["started"] = True
    cache_url = (job.cache.url or storage.join(job.output, "_cache")) if job.cache.enabled else None
    for model in job.models:
        st = score_model(job, model, plan, layout.root, progress=events, cache_url=cache_url, run_id=run_id,
                         attempt=attempt)
        counts["models"][model.name] = {**st.counts(), "distinct_images": plan.n_images}
        if cache_url:
            counts["models"][model.name]["cache_compaction"] = cache.compact(cache_url,
                                                                             cache.model_key(model.model_dump()))
    if cache_url:
        counts["prekey_compaction"] = prekey.compact(cache_url)
    return counts


def _with_resolved_models(job: Job) -> Job:
    """Resolve ``builtin:`` model paths to local folders (the recorded job keeps the name)."""
    from vlm_eval.engines.model_paths import resolve_model_path

    models = [m.model_copy(update={"path": resolve_model_path(m.path)}) for m in job.models]
    return job.model_copy(update={"models": models})


def _input_and_errored(reduced: dict) -> tuple[int, int]:
    """(input rows, errored + incomplete rows of the worst model): each model must meet
    the budget. An incomplete quadrant row (e.g. a swap job with one patient) is a
    sample the run could not measure, so it counts against the budget like an error.

    Input rows = samples + manifest rows that never became samples; read from the
    reducer's counts so a resumed run computes the same fraction.
    """
    per_model = reduced.get("models", {}) if isinstance(reduced, dict) else {}
    if not per_model:
        return 0, 0
    n_input = max(int(m.get("n_samples", 0)) + int(m.get("manifest_errors", 0)) for m in per_model.values())
    errored = max(int(m.get("errors", 0)) + int(m.get("incomplete", 0)) for m in per_model.values())
    return n_input, errored
