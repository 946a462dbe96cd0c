"""Live progress display (vlm_eval.progress) and `vlm-eval status` (vlm_eval.status)."""
from __future__ import annotations

import datetime as dt
import io
import json

import pytest

from vlm_eval import progress, status


def _event(model="m", done=3, total=8, scored=90, cached=30, errors=2, elapsed=12.0):
    return {"model": model, "units_done": done, "units_total": total, "requests_scored": scored,
            "requests_cached": cached, "errors": errors, "images_fetched": done * 4, "elapsed_s": elapsed}


def test_progress_figures_from_an_event():
    f = progress.figures(_event())
    assert (f["done"], f["total"], f["errors"], f["cached"]) == (3, 8, 2, 30)
    assert f["requests_per_s"] == pytest.approx(120 / 12.0)
    assert f["cache_hit_rate"] == pytest.approx(0.25)
    assert f["eta_s"] == pytest.approx(12.0 / 3 * 5)
    # Pace measured from the first event seen (2 units at 10 s: start-up and earlier units excluded).
    assert progress.figures(_event(), since=(2, 10.0))["eta_s"] == pytest.approx(2.0 * 5)
    assert progress.figures(_event(), since=(3, 12.0))["eta_s"] is None  # nothing to measure yet
    assert progress.figures(_event(done=8))["eta_s"] == 0
    assert progress.figures(_event(done=0, elapsed=0))["eta_s"] is None


def test_progress_plain_lines_when_not_a_terminal_are_periodic_and_final():
    out = io.StringIO()
    display = progress.ProgressDisplay(out, interval_s=3600)
    assert display.style == "plain"
    for done in range(1, 9):
        display(_event(done=done, elapsed=done * 2.0))
    display(_event(done=8, elapsed=16.0))  # a repeated final event prints nothing more
    display.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines  # the first, then the final one (interval not reached in between)
    assert "[m] units 1/8 (12.5%)" in lines[0] and "ETA ?" in lines[0]  # no pace yet after one event
    assert "units 8/8 (100.0%)" in lines[1] and "ETA 0:00:00" in lines[1]
    assert "req/s" in lines[1] and "cache hits 30 (25.0%)" in lines[1] and "errors 2" in lines[1]


def test_progress_bars_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    display = progress.ProgressDisplay(out)
    assert display.style in ("rich", "tqdm")
    display(_event(model="a", done=1))
    display(_event(model="b", done=2))
    display(_event(model="a", done=8))
    display.close()
    text = out.getvalue()
    assert "a" in text and "b" in text and "8/8" in text and "req/s" in text


def _write_run(folder, record, prog=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(record))
    if prog is not None:
        (folder / "progress.json").write_text(json.dumps(prog))


def test_status_of_a_run_in_flight(tmp_path, capsys):
    run = tmp_path / "runs" / "nightly-1"
    now = dt.datetime.now(dt.timezone.utc)
    _write_run(run, {"run_id": "nightly-1", "status": "running", "attempt": 2, "started_at": now.isoformat()},
               {"updated_at": (now - dt.timedelta(seconds=5)).isoformat(),
                "models": {"medgemma": _event("medgemma", 120, 400, 3000, 1000, 3, 400.0),
                           "llava-rad": _event("llava-rad", 400, 400, 4000, 0, 0, 380.0)}})
    assert status.main(str(run)) == 0
    out = capsys.readouterr().out
    print(out)
    assert "nightly-1: running (attempt 2" in out
    assert "[medgemma] units 120/400 (30.0%) | 10.0 req/s | cache hits 1000 (25.0%) | errors 3" in out
    assert "ETA 0:15:33" in out  # 400 s for 120 units -> 280 left at the same pace
    assert "[llava-rad] units 400/400 (100.0%)" in out and "all models: units 520/800 (65.0%), errors 3" in out
    assert "may have stopped" not in out
    from vlm_eval.cli import main as cli_main  # the same through `vlm-eval status`

    assert cli_main(["status", str(run)]) == 0
    assert "[medgemma] units 120/400 (30.0%)" in capsys.readouterr().out


def test_status_flags_a_run_whose_progress_stopped_moving(tmp_path, capsys):
    run = tmp_path / "r"
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    _write_run(run, {"run_id": "r", "status": "running", "started_at": old.isoformat()},
               {"updated_at": old.isoformat(), "models": {"m": _event()}})
    assert status.main(str(run)) == 0
    assert "the driver may have stopped" in capsys.readouterr().out


def test_status_of_a_finished_run_without_progress_json_uses_run_json_counts(tmp_path, capsys):
    run = tmp_path / "done"
    _write_run(run, {"run_id": "done", "status": "succeeded", "started_at": "2026-01-01T00:00:00+00:00",
                     "finished_at": "2026-01-01T00:10:00+00:00", "seconds": 600, "report": str(run / "report.html"),
                     "counts": {"models": {"m": {"units": 7, "requests_scored": 500, "requests_cached": 100,
                                                 "image_errors": 1, "seconds": 60.0}}}})
    assert status.main(str(run)) == 0
    out = capsys.readouterr().out
    assert "done: succeeded" in out and "after 0:10:00" in out
    assert "[m] units 7/7 (100.0%) | 10.0 req/s | cache hits 100 (16.7%) | errors 1" in out
    assert "report.html" in out


def test_status_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert status.main(str(tmp_path / "nope")) == 2
    assert "not a vlm-eval run folder" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()


def test_progress_eta_excludes_start_up():
    """Engine start-up (60 s before the first unit) does not inflate the ETA: 2 s per unit after it."""
    out = io.StringIO()
    display = progress.ProgressDisplay(out, interval_s=0)
    for done in range(1, 5):
        display(_event(done=done, total=20, elapsed=60.0 + 2 * done))
    assert out.getvalue().splitlines()[-1].endswith("ETA 0:00:32")  # 16 units left x 2 s
