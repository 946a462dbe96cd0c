"""vlm_eval/compare.py, value by value (issue 16, mutation testing session 5).

``text_report`` is fed hand-built tables and its whole text is compared with the text
written out below (each number worked out from the inputs in a comment), so a value in the
wrong column, a lost row or a changed label fails. ``compare_runs`` runs on two small
hand-planted runs whose every written value is worked out by hand; ``_arrow`` and
``_records`` are checked on frames chosen to tell each type rule apart.
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reduce"))
from reduce_builders import preds, sample, write_run  # noqa: E402

from vlm_eval.compare import _arrow, _records, compare_runs, text_report  # noqa: E402
from vlm_eval.errors import InputError  # noqa: E402
from vlm_eval.reduce import reduce_run  # noqa: E402

Q = ("ideal", "fragile", "dangerous", "worst")


def _config(run, model, n, fracs, lows, highs, fq, fp, acc, **extra) -> dict:
    row = {"run": run, "model": model, "dataset": "ds", "n": n}
    for q, f, lo, hi in zip(Q, fracs, lows, highs):
        row.update({f"frac_{q}": f, f"frac_{q}_ci_low": lo, f"frac_{q}_ci_high": hi})
    return {**row, "flip_rate_question": fq, "flip_rate_pair": fp, "accuracy": acc, **extra}


# A:m, 8 samples: every share k/8 (exact in binary, none on a rounding half)
CONFIG_A = _config("A", "m", 8, [0.5, 0.125, 0.25, 0.125], [0.25, 0.0, 0.1, 0.0], [0.75, 0.375, 0.5, 0.3],
                   0.25, 0.125, 0.625, auroc_entropy_dangerous=0.8, auroc_abs_margin_dangerous=0.7)
# B:k, 4 samples, one variant each: flip rates and accuracy not measured (NaN)
CONFIG_B = _config("B", "k", 4, [0.25, 0.0, 0.75, 0.0], [0.0, 0.0, 0.5, 0.0], [0.5, 0.0, 1.0, 0.0],
                   np.nan, np.nan, np.nan, auroc_entropy_dangerous=np.nan, auroc_abs_margin_dangerous=0.25)
PAIRED = pd.DataFrame([dict(run_a="A", model_a="m", run_b="B", model_b="k", dataset="ds", n=4, diff_dangerous=-0.5,
                            diff_dangerous_ci_low=-0.75, diff_dangerous_ci_high=-0.25, flips_a_only=2, flips_b_only=0,
                            mcnemar_flips_p_exact=0.5)])
COUNTS = pd.DataFrame([dict(run_from="A", run_to="B", model="m", quadrant_from="Ideal", quadrant_to="Dangerous", n=2),
                       dict(run_from="A", run_to="B", model="m", quadrant_from="Ideal", quadrant_to="absent", n=1),
                       dict(run_from="A", run_to="B", model="k", quadrant_from="Worst", quadrant_to="Fragile", n=3)])
# moved rows of A->B m (2), A->B k (1) and of a pair without counts (A->C m, 4): each crosstab
# title counts only its own pair and model
MOVED = pd.DataFrame([dict(run_from=f, run_to=t, model=m) for f, t, m in
                      [("A", "B", "m")] * 2 + [("A", "B", "k")] + [("A", "C", "m")] * 4])
CORR = {"r_question": 0.123456, "r_pair": -0.5, "n": 2}

EXPECTED_TEXT = """\
WARNING: first warning
WARNING: second <one>

Configurations (quadrant shares of complete samples, 95% CI; AUROC = entropy / -|margin| as a detector of Dangerous samples, 0.5 = chance):
run model dataset n                Ideal             Fragile             Dangerous               Worst       flip q    flip pair accuracy AUROC H AUROC -|m|
  A     m      ds 8 50.0% [25.0%, 75.0%] 12.5% [0.0%, 37.5%]  25.0% [10.0%, 50.0%] 12.5% [0.0%, 30.0%]        25.0%        12.5%    62.5%   0.800      0.700
  B     k      ds 4  25.0% [0.0%, 50.0%]   0.0% [0.0%, 0.0%] 75.0% [50.0%, 100.0%]   0.0% [0.0%, 0.0%] not measured not measured        –       –      0.250

Paired comparisons (A vs B on the same complete samples; McNemar on flips):
  A   B dataset  n  Dangerous A-B [95% CI] flips A only/B only McNemar p
A:m B:k      ds  4 -50.0% [-75.0%, -25.0%]                 2/0    0.5000

Quadrant migration A -> B, model m (2 samples moved):
to         Ideal  Fragile  Dangerous  Worst  absent
from                                               
Ideal          0        0          2      0       1
Fragile        0        0          0      0       0
Dangerous      0        0          0      0       0
Worst          0        0          0      0       0
absent         0        0          0      0       0

Quadrant migration A -> B, model k (1 samples moved):
to         Ideal  Fragile  Dangerous  Worst
from                                       
Ideal          0        0          0      0
Fragile        0        0          0      0
Dangerous      0        0          0      0
Worst          0        3          0      0

Flip rate vs Dangerous share over 2 configurations: Pearson r = 0.123 (question level), -0.500 (pair level)"""


def test_text_report_prints_every_value_under_its_own_header():
    # Shares: 100 * value, one decimal ("50.0%", CI "[25.0%, 75.0%]"); n without decimals; flip
    # rates and accuracy as shares, NaN -> "not measured" (flip) or "–" (accuracy); AUROC three
    # decimals; the paired row: A - B = -50.0% [-75.0%, -25.0%], flips "2/0", McNemar p four
    # decimals; one crosstab per (run pair, model) in order of first appearance, with the
    # absent column only where an absent count exists; r = 0.123456 -> "0.123", -0.5 -> "-0.500".
    text = text_report(pd.DataFrame([CONFIG_A, CONFIG_B]), PAIRED, COUNTS, MOVED, CORR,
                       ["first warning", "second <one>"])
    assert text == EXPECTED_TEXT


def test_text_report_without_warnings_pairs_or_auroc_columns():
    configs = pd.DataFrame([CONFIG_A, CONFIG_B]).drop(columns=["auroc_entropy_dangerous", "auroc_abs_margin_dangerous"])
    empty = pd.DataFrame(columns=["run_from", "run_to", "model", "quadrant_from", "quadrant_to", "n"])
    text = text_report(configs, pd.DataFrame(columns=["run_a"]), empty, MOVED.iloc[:0], {"r_question": np.nan,
                                                                                       "r_pair": np.nan, "n": 1})
    # no warning lines, no blank line before the first table; both AUROC columns missing: "–"
    assert text.split("\n") == [
        EXPECTED_TEXT.split("\n")[3], EXPECTED_TEXT.split("\n")[4],
        EXPECTED_TEXT.split("\n")[5].replace("0.800      0.700", "    –          –"),
        EXPECTED_TEXT.split("\n")[6].replace("      0.250", "          –"),
        "", "Paired comparisons (A vs B on the same complete samples; McNemar on flips):",
        "  (no two comparable configurations share complete samples)", "",
        "Flip rate vs Dangerous share over 1 configurations: Pearson r = – (question level), – (pair level)"]
    assert "Quadrant migration" not in text


def test_arrow_types_counts_numbers_flags_and_text():
    df = pd.DataFrame({
        "n": [3.0, 4.0],  # a count, even when it arrives as float: int64
        "flips_a_only": [1.0, 2.0],  # "*_only" counts: int64
        "n_paired": np.array([5, 6], dtype="int64"),
        "flag": [True, False],  # bool stays bool
        "frac": [0.25, np.nan],  # numbers: float64, NaN -> null
        "model": pd.Series([7, None], dtype=object),  # text: str(7), None stays null
        "label": pd.Series(["yes", np.nan], dtype=object),  # NaN in text -> null, not "nan"
    })
    t = _arrow(df)
    assert t.schema == pa.schema([("n", pa.int64()), ("flips_a_only", pa.int64()), ("n_paired", pa.int64()),
                                  ("flag", pa.bool_()), ("frac", pa.float64()), ("model", pa.string()),
                                  ("label", pa.string())])
    assert t.to_pylist() == [
        {"n": 3, "flips_a_only": 1, "n_paired": 5, "flag": True, "frac": 0.25, "model": "7", "label": "yes"},
        {"n": 4, "flips_a_only": 2, "n_paired": 6, "flag": False, "frac": None, "model": None, "label": None}]


def test_records_keep_15_significant_digits():
    # to_json's default is 10 digits: 1/3 would come back as 0.3333333333
    assert _records(pd.DataFrame({"x": [1 / 3], "s": ["a"]})) == [{"x": 0.333333333333333, "s": "a"}]


# ------------------------------------------------------------------ compare_runs end to end
# (with-image margins of 3 variants, text-only margins) planting each quadrant (reliance: original)
PLANT = {"Ideal": ([2, 1, 3], [-1, -1, -1]), "Fragile": ([2, -1, 3], [-1, -1, -1]),
         "Dangerous": ([2, 1, 3], [1, 1, 1]), "Worst": ([2, -1, 3], [1, 1, 1])}
RUN_A = ["Ideal", "Ideal", "Fragile", "Dangerous", "Ideal"]
RUN_B = ["Ideal", "Worst", "Dangerous", "Dangerous", "Dangerous"]  # s4 of B shows another image


def _hand_run(root, quadrants, other_image=()):
    samples = [dict(sample(f"s{i}", patient=f"p{i}"), **({"image_uri": "mem://other.png"} if i in other_image else {}))
               for i in range(len(quadrants))]
    rows = sum((preds(f"s{i}", *PLANT[q], shared=False) for i, q in enumerate(quadrants)), [])
    run = write_run(root, samples, {"m": rows})
    reduce_run(run, n_boot=20, seed=0)
    return run


def _h(m):
    p = 1 / (1 + math.exp(-m))
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


@pytest.fixture
def two_runs(tmp_path):
    return _hand_run(tmp_path / "a", RUN_A), _hand_run(tmp_path / "b", RUN_B, other_image=(4,))


def test_compare_runs_writes_every_output_with_hand_computed_values(two_runs, tmp_path):
    a, b = two_runs
    out = str(tmp_path / "cmp")
    text = compare_runs([a, b], out)  # default n_boot and seed
    # both run_ids are "t-1": the folder names a and b label the runs.
    # s4 has the same dataset and sample_id in both runs but another image in b: one clash.
    warning = ("1 samples of a and b share dataset and sample_id but not image_uri or question: they are "
               "different samples and are not paired")
    assert text.startswith(f"WARNING: {warning}\n\nConfigurations")
    assert text.endswith(f"\n\nwrote comparison.parquet, migration.parquet, comparison.json, comparison.html to {out}")
    assert "Quadrant migration a -> b, model m (2 samples moved):" in text
    assert sorted(os.listdir(out)) == ["comparison.html", "comparison.json", "comparison.parquet", "migration.parquet"]

    doc = json.loads(open(os.path.join(out, "comparison.json")).read())
    tax = {"ablation": "text_only", "reliance": "original"}
    assert doc["runs"] == [{"label": "a", "url": a, "run_id": "t-1", "taxonomy": tax},
                           {"label": "b", "url": b, "run_id": "t-1", "taxonomy": tax}]
    assert doc["warnings"] == [warning]
    assert (doc["n_boot"], doc["seed"], doc["n_moved"]) == (1000, 0, 2)
    # two configurations: Pearson r needs 3, so r is NaN (null) over n = 2
    assert doc["flip_vs_dangerous"] == {"r_question": None, "r_pair": None, "n": 2}
    # configurations by hand: a = I I F D I -> 3/5, 1/5, 1/5, 0/5; b = I W D D D -> 1/5, 0, 3/5, 1/5;
    # one inconsistent sample each (F in a, W in b) -> flip rate (question) 1/5; every
    # variant-0 margin is +2 and every label "yes": accuracy 1; entropy of a +2 margin h(2).
    cfg = {c["run"]: c for c in doc["configurations"]}
    assert sorted(cfg) == ["a", "b"]
    for run, fracs in (("a", [0.6, 0.2, 0.2, 0.0]), ("b", [0.2, 0.0, 0.6, 0.2])):
        c = cfg[run]
        assert (c["model"], c["dataset"], c["n"], c["taxonomy"]) == ("m", "ds", 5, "ablation=text_only, reliance=original")
        assert [c[f"frac_{q}"] for q in Q] == pytest.approx(fracs)
        assert c["flip_rate_question"] == pytest.approx(0.2) and c["accuracy"] == 1.0
        assert c["entropy_ideal"] == pytest.approx(_h(2), rel=1e-13)  # 15 digits kept (default: 10)
    assert cfg["a"]["accuracy_worst"] is None and cfg["b"]["accuracy_worst"] == 1.0
    # paired on s0-s3 (s4 differs): Dangerous a {s3} 1/4, b {s2, s3} 2/4 -> -0.25;
    # inconsistent a {s2}, b {s1}: one flip each side, exact McNemar p = 1
    (p,) = doc["paired"]
    assert (p["run_a"], p["model_a"], p["run_b"], p["model_b"], p["dataset"], p["n"]) == ("a", "m", "b", "m", "ds", 4)
    assert p["diff_dangerous"] == pytest.approx(-0.25) and (p["flips_a_only"], p["flips_b_only"]) == (1, 1)
    assert p["mcnemar_flips_p_exact"] == pytest.approx(1.0)
    # migration a -> b: s0 I->I, s1 I->W, s2 F->D, s3 D->D, s4 of a I->absent, s4 of b absent->D
    got = {(c["quadrant_from"], c["quadrant_to"]): c["n"] for c in doc["migration_counts"]}
    assert got == {("Ideal", "Ideal"): 1, ("Ideal", "Worst"): 1, ("Fragile", "Dangerous"): 1,
                   ("Dangerous", "Dangerous"): 1, ("Ideal", "absent"): 1, ("absent", "Dangerous"): 1}
    assert {(c["run_from"], c["run_to"], c["model"]) for c in doc["migration_counts"]} == {("a", "b", "m")}

    cmp = pq.read_table(os.path.join(out, "comparison.parquet"))
    types = dict(zip(cmp.schema.names, cmp.schema.types))
    assert types["n"] == types["n_incomplete"] == types["n_labelled"] == pa.int64()
    assert types["run"] == types["model"] == types["taxonomy"] == pa.string()
    # a quadrant a run has no sample in is NaN there: still a number column (as in summary.parquet)
    for col in ("frac_dangerous", "accuracy", "accuracy_worst", "entropy_worst", "accuracy_fragile"):
        assert types[col] == pa.float64(), col
    df = cmp.to_pandas().set_index("run")
    assert df.loc["b", "accuracy_worst"] == 1.0 and np.isnan(df.loc["a", "accuracy_worst"])
    assert df.loc["b", "entropy_worst"] == pytest.approx(_h(2))
    moved = pq.read_table(os.path.join(out, "migration.parquet"))
    assert moved.column("sample_id").to_pylist() == ["s1", "s2"]
    assert moved.column("quadrant_to").to_pylist() == ["Worst", "Dangerous"]
    assert moved.schema.field("margin_from").type == pa.float64()
    assert moved.column("margin_to").to_pylist() == pytest.approx([2.0, 2.0])

    page = open(os.path.join(out, "comparison.html"), encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</body></html>\n")
    assert f'<p class="warn"><b>Warning:</b> {warning}</p>' in page
    assert "<title>vlm_eval comparison: a, b</title>" in page


def test_compare_runs_input_errors_name_the_problem(two_runs):
    a, b = two_runs
    with pytest.raises(InputError) as e:
        compare_runs([a, b, a, b])
    assert str(e.value) == f"run given more than once: {a}, {b}"
    with pytest.raises(InputError) as e:
        compare_runs([a])
    assert str(e.value) == ("compare needs at least two configurations (run x model), got 1: give two or more runs, "
                            "or a run with several models")


def test_compare_runs_passes_n_boot_and_seed_to_the_paired_bootstrap(two_runs, tmp_path):
    from vlm_eval.compare import load_run, paired_table
    from vlm_eval.reduce.compare_tables import unique_labels

    a, b = two_runs
    out = str(tmp_path / "cmp")
    compare_runs([a, b], out, n_boot=20, seed=2)
    doc = json.loads(open(os.path.join(out, "comparison.json")).read())
    assert (doc["n_boot"], doc["seed"]) == (20, 2)
    runs = [load_run(a), load_run(b)]
    unique_labels(runs)

    def ci(n_boot, seed):
        p = paired_table(runs, n_boot, seed).iloc[0]
        return [p["diff_dangerous_ci_low"], p["diff_dangerous_ci_high"]]

    got = [doc["paired"][0]["diff_dangerous_ci_low"], doc["paired"][0]["diff_dangerous_ci_high"]]
    assert got == pytest.approx(ci(20, 2), abs=1e-12)
    # with 4 paired samples most seeds give the same percentiles; seed 2 / 20 resamples do not:
    # the default seed (0) or the default n_boot (1000) in their place would show
    assert ci(20, 0) != ci(20, 2) and ci(1000, 2) != ci(20, 2)
