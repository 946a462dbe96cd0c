"""CLI behaviour: exit codes and messages for user errors, never a traceback."""
from __future__ import annotations

import subprocess
import sys

from vlm_eval.cli import main


def test_bad_job_exits_2_with_every_problem(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("name: x\ndataset: {adapter: manifest, limt: 1}\nmodels: [{name: m, enigne: vllm}]\n")
    assert main(["run", str(job)]) == 2
    err = capsys.readouterr().err
    assert "dataset.limt" in err and "models.0.enigne" in err and "Traceback" not in err


def test_bad_override_exits_2(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("name: x\ndataset: {manifest: m.csv}\nmodels: [{name: m}]\n")
    assert main(["run", str(job), "--set", "resources.actors=-3"]) == 2
    assert "resources.actors" in capsys.readouterr().err


def test_missing_manifest_stops_before_any_work(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(f"name: x\noutput: {tmp_path / 'runs'}\n"
                   f"dataset: {{manifest: {tmp_path / 'nope.csv'}}}\nmodels: [{{name: m, engine: scripted}}]\n")
    assert main(["run", str(job)]) == 2
    err = capsys.readouterr().err
    assert "nope.csv" in err and "Traceback" not in err
    assert not list((tmp_path / "runs").rglob("*.parquet"))


def test_unknown_engine_plugin_is_a_user_error(tmp_path):
    from vlm_eval.engines.loader import load_engine
    from vlm_eval.errors import UserError
    import pytest

    with pytest.raises(UserError, match="no_such_module"):
        load_engine({"name": "m", "engine": "no_such_module.sub:factory"})
    with pytest.raises(UserError, match="unknown engine"):
        load_engine({"name": "m", "engine": "nonsense"})


def test_entry_point_help_runs_without_heavy_imports():
    code = ("import sys, vlm_eval.cli as c; c.build_parser(); "
            "import vlm_eval.run, vlm_eval.pipeline.actors, vlm_eval.engines; "
            "bad = [m for m in ('torch', 'vllm', 'transformers') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_run_progress_uses_the_console_display_and_the_fallback_reads_events(capsys):
    from vlm_eval.cli import _plain_progress, _progress_callback

    callback, close = _progress_callback()
    try:
        from vlm_eval.progress import ProgressDisplay
    except ImportError:  # vlm_eval.progress not installed: the plain printer
        assert callback is _plain_progress
    else:
        assert isinstance(callback, ProgressDisplay)
    close()
    _plain_progress({"model": "m", "units_done": 10, "units_total": 10, "requests_scored": 5})
    assert "[m] units 10/10" in capsys.readouterr().out
