"""`vlm-eval demo`: the whole job on the built-in data and tiny model, every contract table."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from vlm_eval.cli import main
from vlm_eval.schema import QUADRANT_COLUMNS, SUMMARY_COLUMNS

pytestmark = pytest.mark.slow


def test_demo_writes_a_complete_run_folder(tmp_path, vlm_cache, ray_local, capsys):
    pytest.importorskip("transformers")
    assert main(["demo", "--output", str(tmp_path), "--samples", "12"]) == 0
    out = capsys.readouterr().out
    assert "UNTRAINED" in out and "demo run folder" in out
    runs = [p for p in tmp_path.iterdir() if p.name.startswith("demo-")]
    assert len(runs) == 1 and (tmp_path / "_cache").is_dir()  # runs share a prediction cache
    run = runs[0]
    for rel in ("run.json", "samples", "predictions/model=tiny-gemma3", "quadrants/model=tiny-gemma3",
                "summary.parquet", "summary.json", "report.html"):
        assert (run / rel).exists(), rel
    quads = pd.read_parquet(run / "quadrants")
    assert set(QUADRANT_COLUMNS) - {"incomplete_reason"} <= set(quads.columns)
    assert len(quads) == 12 and quads["complete"].all()
    assert set(quads["quadrant"]) <= {"Ideal", "Fragile", "Dangerous", "Worst"}
    summary = pd.read_parquet(run / "summary.parquet")
    assert set(SUMMARY_COLUMNS) <= set(summary.columns)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "succeeded" and record["versions"]["transformers"]
    # The model really produced log-probabilities (not constants).
    preds = pd.read_parquet(run / "predictions")
    assert preds["error"].isna().all() and preds["logprob_yes"].nunique() > 5
    # The report states the final status and opens with the answer; `status` agrees with run.json.
    report = (run / "report.html").read_text()
    assert "status: <b>succeeded</b>" in report and report.index("The answer") < report.index("Provenance")
    from vlm_eval.status import main as status_main

    capsys.readouterr()
    assert status_main(str(run)) == 0
    status = capsys.readouterr().out
    units = record["counts"]["models"]["tiny-gemma3"]["units"]
    assert f"{run.name}: succeeded" in status and f"[tiny-gemma3] units {units}/{units} (100.0%)" in status
