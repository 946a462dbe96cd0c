"""`vlm-eval status RUN_URL`: how far a run is, how fast, when it will end.

Reads ``run.json`` and ``progress.json`` (written by the driver at most every ~2 s)
of a run folder, local or ``s3://...``, in flight or finished, and prints the same
figures as the live display. A run that says ``running`` but whose progress has not
moved for a long time is flagged: its driver may have died (resume it by rerunning
the job with the same run_id).
"""
from __future__ import annotations

import datetime as dt
import sys
from typing import IO

from vlm_eval import storage
from vlm_eval.layout import RunLayout
from vlm_eval.progress import figures, format_duration, format_line

STALE_AFTER_S = 600


def _parse_time(value) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _events_from_counts(record: dict) -> dict[str, dict]:
    """Per-model figures of a finished run from run.json counts (when progress.json is absent)."""
    out = {}
    models = ((record.get("counts") or {}).get("models") or {}) if isinstance(record.get("counts"), dict) else {}
    for name, c in models.items():
        if not isinstance(c, dict):
            continue
        total = c.get("units", 0)
        out[name] = {"model": name, "units_done": total, "units_total": total,
                     "requests_scored": c.get("requests_scored", 0), "requests_cached": c.get("requests_cached", 0),
                     "errors": c.get("image_errors", c.get("errors", 0)), "elapsed_s": c.get("seconds", 0)}
    return out


def describe(run_url: str, now: dt.datetime | None = None) -> list[str]:
    """The status lines of the run at ``run_url``. Raises InputError if it is not a run folder."""
    from vlm_eval.errors import InputError

    layout = RunLayout(run_url)
    if not storage.exists(layout.run_json):
        raise InputError(f"{run_url} is not a vlm-eval run folder (no run.json there). Give OUTPUT/RUN_ID, "
                         "the folder `vlm-eval run` printed as 'run folder:'.")
    record = storage.read_json(layout.run_json)
    progress = storage.read_json(layout.progress_json) if storage.exists(layout.progress_json) else {}
    now = now or dt.datetime.now(dt.timezone.utc)
    status = record.get("status", "unknown")
    lines = [f"run {record.get('run_id', run_url)}: {status} (attempt {record.get('attempt', 1)}, "
             f"started {record.get('started_at', '?')})"]
    if record.get("finished_at"):
        lines.append(f"  finished {record['finished_at']}" +
                     (f" after {format_duration(record.get('seconds'))}" if record.get("seconds") else ""))
    if record.get("error"):
        lines.append(f"  error: {record['error']}")
    events = dict(progress.get("models") or {}) if isinstance(progress, dict) else {}
    for name, event in _events_from_counts(record).items():
        events.setdefault(name, event)
    updated = _parse_time(progress.get("updated_at")) if isinstance(progress, dict) else None
    if updated is not None:
        age = (now - updated).total_seconds()
        note = f"  progress updated {format_duration(max(0.0, age))} ago"
        if status == "running" and age > STALE_AFTER_S:
            note += (" -- no update for a long time: the driver may have stopped. Rerun the job with the same "
                     "run_id to resume it")
        lines.append(note)
    if not events:
        lines.append("  no progress recorded yet (planning, or loading the samples)")
    for name in sorted(events):
        event = dict(events[name])
        event.setdefault("model", name)
        if status != "running" and status != "unknown":
            event.setdefault("units_done", event.get("units_total", 0))
        lines.append("  " + format_line(event))
    total = [figures(dict(e, model=n)) for n, e in events.items()]
    if len(total) > 1:
        done, whole = sum(f["done"] for f in total), sum(f["total"] for f in total)
        lines.append(f"  all models: units {done}/{whole} ({100 * done / whole if whole else 0:.1f}%), "
                     f"errors {sum(f['errors'] for f in total)}")
    if record.get("report"):
        lines.append(f"  report: {record['report']}")
    return lines


def main(run_url: str, stream: IO[str] | None = None) -> int:
    """Print the status of ``run_url``; 0 if readable (whatever the run's state), 2 if not a run."""
    from vlm_eval.errors import UserError

    out = stream or sys.stdout
    try:
        lines = describe(run_url)
    except UserError as exc:
        print(f"vlm-eval: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines), file=out, flush=True)
    return 0
