"""`vlm-eval demo`: the whole job on the built-in data and the tiny shortcut-trained model,
every contract table, and quadrants that recover the model's planted shortcut."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from vlm_eval.cli import main
from vlm_eval.schema import QUADRANT_COLUMNS, SUMMARY_COLUMNS

pytestmark = pytest.mark.slow

MODEL = "tiny-shortcut"


def test_demo_writes_a_complete_run_folder_and_finds_the_shortcut(tmp_path, vlm_cache, ray_local, capsys):
    pytest.importorskip("transformers")
    # The model trains once per test cache (VLM_EVAL_TEST_CACHE), shared with test_shortcut_model.py.
    assert main(["demo", "--output", str(tmp_path), "--samples", "24"]) == 0
    out = capsys.readouterr().out
    assert "PLANTED SHORTCUT" in out and "demo run folder" in out
    runs = [p for p in tmp_path.iterdir() if p.name.startswith("demo-")]
    assert len(runs) == 1 and (tmp_path / "_cache").is_dir()  # runs share a prediction cache
    run = runs[0]
    for rel in ("run.json", "samples", f"predictions/model={MODEL}", f"quadrants/model={MODEL}",
                "summary.parquet", "summary.json", "report.html"):
        assert (run / rel).exists(), rel
    quads = pd.read_parquet(run / "quadrants")
    assert set(QUADRANT_COLUMNS) - {"incomplete_reason"} <= set(quads.columns)
    assert len(quads) == 24 and quads["complete"].all()
    assert set(quads["quadrant"]) <= {"Ideal", "Fragile", "Dangerous", "Worst"}
    assert set(quads["finding"]) == {"cardiomegaly", "pneumothorax"}

    # The shortcut, recovered (measured on 48 samples: every cardiomegaly positive Ideal, every
    # negative and every pneumothorax sample Dangerous; thresholds leave room for a retrained model).
    a, b = quads[quads["finding"] == "cardiomegaly"], quads[quads["finding"] == "pneumothorax"]
    a_pos, a_neg = a[a["label"] == "yes"], a[a["label"] == "no"]
    assert len(a_pos) >= 3 and len(a_neg) >= 3
    # A from the pixels: positives say "yes" with the image and "no" without it -> Ideal.
    assert (a_pos["quadrant"] == "Ideal").mean() >= 0.8
    assert (a_pos.loc[a_pos["quadrant"] == "Ideal", "ablated_prediction"] == "no").all()
    assert (a_neg["quadrant"] == "Dangerous").mean() >= 0.8 and a["correct"].mean() >= 0.8
    # B from the text: the same answer with and without the image -> Dangerous, whatever the label.
    assert (b["quadrant"] == "Dangerous").mean() >= 0.9
    assert (b["ablated_prediction"] == b["prediction"]).mean() >= 0.9
    assert (b["prediction"] == "yes").mean() >= 0.9  # the text shortcut's answer

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
    units = record["counts"]["models"][MODEL]["units"]
    assert f"{run.name}: succeeded" in status and f"[{MODEL}] units {units}/{units} (100.0%)" in status
