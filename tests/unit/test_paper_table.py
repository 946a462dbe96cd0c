"""The paper's table layout over several runs, and `vlm-eval compare --paper-table`.

Expectations are counted by hand from the planted quadrants; r is numpy.corrcoef of
those hand counts, and entropies are the binary entropy of the planted margins.
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reduce"))
from reduce_builders import preds, sample, write_run  # noqa: E402

from vlm_eval.cli import main  # noqa: E402
from vlm_eval.reduce import reduce_run  # noqa: E402
from vlm_eval.reduce.paper_table import (COLUMNS, flip_dangerous_correlation,  # noqa: E402
                                         paper_report_for_runs, paper_table)

# (with-image margins of 3 variants, text-only margins): variant 0's margin differs per quadrant,
# so the mean entropy per quadrant differs too.
PLANT = {"Ideal": ([2.0, 1, 3], [-1, -1, -1]), "Fragile": ([1.0, -1, 3], [-1, -1, -1]),
         "Dangerous": ([3.0, 1, 3], [1, 1, 1]), "Worst": ([0.5, -1, 3], [1, 1, 1])}
# run -> dataset, model -> [(quadrant, label)]; every variant-0 prediction is "yes".
I, F, D, W = "Ideal", "Fragile", "Dangerous", "Worst"
GRID = {
    "mimic": {"base": [(I, "yes")] * 5 + [(F, "yes"), (F, "no"), (D, "no"), (W, "yes"), (W, "yes")],
              "lora": [(I, "yes")] * 2 + [(F, "yes")] * 4 + [(D, "yes"), (D, "no"), (W, "no"), (W, "yes")]},
    "padchest": {"base": [(D, "yes")] * 9 + [(W, "no")],
                 "lora": [(I, "yes")] * 3 + [(D, "yes")] * 3 + [(D, "no")] * 2 + [(F, "yes"), (W, "yes")]},
}


def _bits(m: float) -> float:
    p = 1 / (1 + math.exp(-m))
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def _run(root, dataset: str, models: dict) -> str:
    n = len(next(iter(models.values())))
    # One sample set per run; each model's label list must agree on it, so labels come from "base".
    samples = [sample(f"s{i}", patient=f"p{i}", dataset=dataset, label=models["base"][i][1]) for i in range(n)]
    rows = {m: sum((preds(f"s{i}", *PLANT[q], shared=False) for i, (q, _) in enumerate(plan)), [])
            for m, plan in models.items()}
    run = write_run(root, samples, rows)
    reduce_run(run, n_boot=200, seed=0)
    return run


@pytest.fixture
def runs(tmp_path):
    # Labels per sample are shared by the models of one run: give "lora" the base labels.
    out = []
    for ds, models in GRID.items():
        labels = [lab for _, lab in models["base"]]
        fixed = {m: [(q, labels[i]) for i, (q, _) in enumerate(plan)] for m, plan in models.items()}
        out.append(_run(tmp_path / f"paper-{ds}", ds, fixed))
    return out


def _expected(ds: str, model: str) -> dict:
    labels = [lab for _, lab in GRID[ds]["base"]]
    quads = [q for q, _ in GRID[ds][model]]
    n = len(quads)
    exp = {"n": n, "flip_rate": sum(q in (F, W) for q in quads) / n}
    for q in (I, F, D, W):
        idx = [i for i, x in enumerate(quads) if x == q]
        exp[f"frac_{q.lower()}"] = len(idx) / n
        exp[f"accuracy_{q.lower()}"] = (sum(labels[i] == "yes" for i in idx) / len(idx)) if idx else float("nan")
        exp[f"entropy_{q.lower()}"] = _bits(PLANT[q][0][0]) if idx else float("nan")
    exp["accuracy"] = sum(lab == "yes" for lab in labels) / n
    return exp


def test_table_columns_values_and_r(runs):
    table, corr, text = paper_report_for_runs(runs)
    assert list(table.columns) == COLUMNS
    got = {(r.configuration, r.dataset) for r in table.itertuples()}
    assert got == {(m, ds) for ds in GRID for m in GRID[ds]}
    for _, row in table.iterrows():
        exp = _expected(row["dataset"], row["configuration"])
        for key, value in exp.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(row[key]), (row["configuration"], row["dataset"], key)
            else:
                assert row[key] == pytest.approx(value, abs=1e-9), (row["configuration"], row["dataset"], key)
        for q in ("ideal", "fragile", "dangerous", "worst"):
            assert row[f"frac_{q}_ci_low"] <= row[f"frac_{q}"] + 1e-12 <= row[f"frac_{q}_ci_high"] + 2e-12
            assert 0 <= row[f"frac_{q}_ci_low"] and row[f"frac_{q}_ci_high"] <= 1
    # r over the four configuration x dataset rows, from the hand counts.
    keys = [(ds, m) for ds in GRID for m in GRID[ds]]
    flips = [_expected(ds, m)["flip_rate"] for ds, m in keys]
    dangerous = [_expected(ds, m)["frac_dangerous"] for ds, m in keys]
    assert corr["n"] == 4
    assert corr["r"] == pytest.approx(float(np.corrcoef(flips, dangerous)[0, 1]), abs=1e-12)
    assert corr["r"] < 0  # the paper's direction: consistent models are the Dangerous ones
    assert corr["r_ci_low"] <= corr["r"] <= corr["r_ci_high"]
    assert f"n = 4" in text and "Dangerous % [95% CI]" in text


def test_correlation_needs_three_rows_and_variance():
    two = pd.DataFrame({"flip_rate": [0.1, 0.2], "frac_dangerous": [0.5, 0.4]})
    assert math.isnan(flip_dangerous_correlation(two)["r"]) and flip_dangerous_correlation(two)["n"] == 2
    flat = pd.DataFrame({"flip_rate": [0.1, 0.1, 0.1], "frac_dangerous": [0.5, 0.4, 0.3]})
    assert math.isnan(flip_dangerous_correlation(flat)["r"])
    ten_x = [0.015, 0.02, 0.05, 0.08, 0.1, 0.12, 0.2, 0.25, 0.3, 0.4]
    ten_y = [0.985, 0.9, 0.85, 0.7, 0.72, 0.6, 0.5, 0.55, 0.3, 0.2]
    c = flip_dangerous_correlation(pd.DataFrame({"flip_rate": ten_x, "frac_dangerous": ten_y}))
    assert c["n"] == 10 and c["r"] == pytest.approx(float(np.corrcoef(ten_x, ten_y)[0, 1]), abs=1e-12)


def test_rows_per_finding_and_empty_rows_are_left_out():
    base = {c: 0.5 for c in ("flip_rate_question", "frac_dangerous")}
    rows = pd.DataFrame([dict(base, model="a", dataset="d", finding=None, n=10),
                         dict(base, model="a", dataset="d", finding="effusion", n=5),
                         dict(base, model="b", dataset="d", finding=None, n=0)])
    t = paper_table(rows)
    assert t["configuration"].tolist() == ["a"] and t["n"].tolist() == [10]
    assert math.isnan(t["accuracy_ideal"].iloc[0])  # missing in the input: NaN, not invented


def test_cli_compare_writes_paper_table(runs, tmp_path, capsys):
    out = str(tmp_path / "paper.csv")
    assert main(["compare", *runs, "--paper-table", out]) == 0
    printed = capsys.readouterr().out
    assert "Paper table" in printed and "r(flip rate, Dangerous share)" in printed
    csv = pd.read_csv(out)
    assert list(csv.columns) == COLUMNS and len(csv) == 4
    corr = json.load(open(out + ".json"))
    assert corr["n"] == 4 and -1 <= corr["r"] <= 1
    # Without the flag, four rows (>= 3) still print the table.
    assert main(["compare", *runs]) == 0
    assert "Paper table" in capsys.readouterr().out


def test_unreduced_run_is_refused_with_the_fix(tmp_path):
    from vlm_eval.errors import InputError

    with pytest.raises(InputError, match="vlm-eval reduce"):
        paper_report_for_runs([str(tmp_path / "not-a-run")])
