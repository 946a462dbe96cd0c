"""vlm-eval compare: side-by-side table, paired comparisons, quadrant migration, outputs, CLI."""
from __future__ import annotations

import json
import os
import re
import sys

import pandas as pd
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reduce"))
from reduce_builders import preds, sample, write_run  # noqa: E402

from vlm_eval.cli import main  # noqa: E402
from vlm_eval.compare import compare_runs, crosstab, load_run, migration, paired_table  # noqa: E402
from vlm_eval.errors import InputError  # noqa: E402
from vlm_eval.reduce import reduce_run  # noqa: E402
from vlm_eval.reduce.stats import pearson_r  # noqa: E402

DS = "ds<i>"  # dataset names reach the HTML: must be escaped
# (with-image margins of 3 variants, text-only margins) planting each quadrant (reliance: original)
PLANT = {"Ideal": ([2, 1, 3], [-1, -1, -1]), "Fragile": ([2, -1, 3], [-1, -1, -1]),
         "Dangerous": ([2, 1, 3], [1, 1, 1]), "Worst": ([2, -1, 3], [1, 1, 1])}
# sample -> quadrant in run A and in run B (model m): s0-s2 migrate Ideal -> Dangerous, s6 Fragile -> Ideal
RUN_A = ["Ideal"] * 6 + ["Fragile", "Fragile", "Dangerous", "Worst"]
RUN_B = ["Dangerous"] * 3 + ["Ideal"] * 3 + ["Ideal", "Fragile", "Dangerous", "Worst"]


def _rows(quadrants: list[str]) -> list[dict]:
    return sum((preds(f"s{i}", *PLANT[q], shared=False) for i, q in enumerate(quadrants)), [])


def _run(root, models: dict[str, list[str]]) -> str:
    samples = [sample(f"s{i}", patient=f"p{i}", dataset=DS) for i in range(10)]
    run = write_run(root, samples, {m: _rows(q) for m, q in models.items()})
    reduce_run(run, n_boot=200, seed=0)
    return run


@pytest.fixture
def runs(tmp_path):
    a = _run(tmp_path / "nightly-a", {"m": RUN_A})
    b = _run(tmp_path / "nightly-b", {"m": RUN_B, "k": ["Dangerous"] * 9 + ["Worst"]})
    return a, b


def test_migration_crosstab_and_moved_samples(runs):
    a, b = map(load_run, runs)
    a.label, b.label = "A", "B"
    counts, moved = migration([a, b])
    ct = crosstab(counts, "A", "B", "m")
    assert list(ct.index) == list(ct.columns) == ["Ideal", "Fragile", "Dangerous", "Worst"]
    expected = pd.DataFrame([[3, 0, 3, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                            index=ct.index, columns=ct.columns, dtype="int64")
    pd.testing.assert_frame_equal(ct, expected)
    assert set(counts["model"]) == {"m"}  # k ran only in B: no migration
    assert moved["sample_id"].tolist() == ["s0", "s1", "s2", "s6"]
    assert moved["quadrant_from"].tolist() == ["Ideal"] * 3 + ["Fragile"]
    assert moved["quadrant_to"].tolist() == ["Dangerous"] * 3 + ["Ideal"]
    assert set(moved["dataset"]) == {DS} and moved["patient_id"].tolist() == ["p0", "p1", "p2", "p6"]


def test_paired_difference_and_mcnemar_counts(runs):
    a, b = map(load_run, runs)
    a.label, b.label = "A", "B"
    paired = paired_table([a, b], n_boot=500, seed=1)
    assert len(paired) == 3  # A:m vs B:k, A:m vs B:m, B:k vs B:m (every pair of configurations)
    p = paired.set_index(["run_a", "model_a", "run_b", "model_b"]).loc[("A", "m", "B", "m")]
    assert p["n"] == 10 and p["dataset"] == DS
    assert p["frac_dangerous_a"] == pytest.approx(0.1) and p["frac_dangerous_b"] == pytest.approx(0.4)
    assert p["diff_dangerous"] == pytest.approx(-0.3)
    assert p["diff_dangerous_ci_low"] <= -0.3 <= p["diff_dangerous_ci_high"] <= 0  # 0.7^10 > 2.5%: upper end is 0
    assert (p["flips_a_only"], p["flips_b_only"]) == (1, 0)  # s6 stopped flipping
    assert p["mcnemar_flips_p_exact"] == pytest.approx(1.0)
    assert (p["dangerous_a_only"], p["dangerous_b_only"]) == (0, 3)
    assert p["mcnemar_dangerous_p_exact"] == pytest.approx(0.25)  # 2 * (1/2)^3


def test_compare_runs_writes_outputs(runs, tmp_path):
    out = str(tmp_path / "cmp")
    text = compare_runs(list(runs), output=out, n_boot=200)
    assert "nightly-a" in text and "nightly-b" in text  # both run_ids are "t-1": folder names label them
    assert re.search(r"Ideal\s+3\s+0\s+3\s+0", text)  # the crosstab row of Ideal
    cmp = pd.read_parquet(os.path.join(out, "comparison.parquet"))
    assert len(cmp) == 3 and set(cmp["model"]) == {"m", "k"}
    row = cmp.set_index(["run", "model"]).loc[("nightly-b", "m")]
    assert row["frac_dangerous"] == pytest.approx(0.4) and row["frac_dangerous_ci_low"] <= 0.4
    moved = pd.read_parquet(os.path.join(out, "migration.parquet"))
    assert len(moved) == 4 and moved["run_from"].unique().tolist() == ["nightly-a"]
    doc = json.loads(open(os.path.join(out, "comparison.json")).read())
    fq = cmp["flip_rate_question"].to_numpy()
    r, n = pearson_r(fq, cmp["frac_dangerous"])
    assert doc["flip_vs_dangerous"]["n"] == n == 3
    assert doc["flip_vs_dangerous"]["r_question"] == pytest.approx(r)
    assert sorted(fq.round(6)) == [0.1, 0.2, 0.3]
    assert len(doc["paired"]) == 3 and doc["n_moved"] == 4
    page = open(os.path.join(out, "comparison.html"), encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 2
    assert "ds&lt;i&gt;" in page and "ds<i>" not in page and "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)


def test_two_models_of_one_run_are_two_configurations(runs):
    text = compare_runs([runs[1]], n_boot=50)
    assert "t-1:k" in text and "t-1:m" in text and "migration" not in text.lower().split("flip rate vs")[0]


def test_input_errors(runs, tmp_path):
    with pytest.raises(InputError, match="at least two configurations"):
        compare_runs([runs[0]])
    unreduced = write_run(tmp_path / "raw", [sample("s0")], {"m": preds("s0", [1, 1, 1], [1, 1, 1])})
    with pytest.raises(InputError, match=r"vlm-eval reduce .*raw"):
        compare_runs([runs[0], unreduced])
    with pytest.raises(InputError, match="more than once"):
        compare_runs([runs[0], runs[0]])


def test_cli_compare(runs, tmp_path, capsys):
    out = str(tmp_path / "cli-out")
    assert main(["compare", runs[0], runs[1], "--output", out]) == 0
    assert "Quadrant migration nightly-a -> nightly-b, model m (4 samples moved)" in capsys.readouterr().out
    for name in ("comparison.parquet", "migration.parquet", "comparison.json", "comparison.html"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert main(["compare", runs[0]]) == 2
    err = capsys.readouterr().err
    assert "two configurations" in err and "Traceback" not in err
    assert main(["compare", runs[0], str(tmp_path / "nope")]) == 2
    assert "vlm-eval reduce" in capsys.readouterr().err


def _run_with(root, image_prefix: str, taxonomy=None) -> str:
    samples = [dict(sample(f"s{i}", patient=f"p{i}", dataset=DS), image_uri=f"{image_prefix}/s{i}.png") for i in range(10)]
    run = write_run(root, samples, {"m": _rows(RUN_A)})
    reduce_run(run, taxonomy=taxonomy, n_boot=50, seed=0)
    return run


def test_compare_pairs_samples_by_content_not_by_sample_id(tmp_path):
    # two manifests with the same dataset name and sample ids, but other images: not the same samples
    a = _run_with(tmp_path / "site-a", "/data/site-a")
    b = _run_with(tmp_path / "site-b", "/data/site-b")
    same = _run_with(tmp_path / "site-a-again", "/data/site-a")
    ra, rb, rs = map(load_run, (a, b, same))
    for r, lab in zip((ra, rb, rs), "ABS"):
        r.label = lab
    assert paired_table([ra, rb], n_boot=20).empty
    counts, moved = migration([ra, rb])
    assert moved.empty and set(counts["quadrant_from"]) | set(counts["quadrant_to"]) >= {"absent"}
    assert int(counts.loc[counts["quadrant_from"] == "absent", "n"].sum()) == 10
    assert paired_table([ra, rs], n_boot=20)["n"].tolist() == [10]  # same content: paired
    text = compare_runs([a, b], n_boot=20)
    assert "WARNING: 10 samples of site-a and site-b share dataset and sample_id but not image_uri" in text


def test_compare_runs_with_different_taxonomies_say_so_and_are_not_paired(tmp_path):
    from vlm_eval.config import TaxonomyConfig

    a = _run_with(tmp_path / "orig", "/data/x")
    b = _run_with(tmp_path / "any", "/data/x", taxonomy=TaxonomyConfig(reliance="any"))
    out = str(tmp_path / "cmp")
    text = compare_runs([a, b], output=out, n_boot=20)
    assert "WARNING: runs were reduced with different taxonomies (orig: ablation=text_only, reliance=original; " \
           "any: ablation=text_only, reliance=any)" in text
    assert "Quadrant migration" not in text and "(no two comparable configurations share complete samples)" in text
    doc = json.loads(open(os.path.join(out, "comparison.json")).read())
    assert doc["paired"] == [] and doc["migration_counts"] == [] and "different taxonomies" in doc["warnings"][0]
    page = open(os.path.join(out, "comparison.html"), encoding="utf-8").read()
    assert '<p class="warn"><b>Warning:</b> runs were reduced with different taxonomies' in page


def test_compare_model_named_007_stays_a_string(tmp_path):
    a = _run(tmp_path / "a", {"007": RUN_A, "7": RUN_B})
    text = compare_runs([a], n_boot=20)
    assert "t-1:007" in text and "t-1:7" in text
