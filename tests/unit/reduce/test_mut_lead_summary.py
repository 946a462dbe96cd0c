"""Tests written to kill surviving mutants of ``vlm_eval/reduce/summary.py`` (mutmut, issue 16;
docs/testing.md lists the survivors and why the rest are equivalent)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from vlm_eval.reduce import summary
from vlm_eval.reduce.quadrows import QuadRows


def _two_models() -> pd.DataFrame:
    # models a and b on datasets d2, d1, None (missing) with 4 samples each; d0 has model a only
    rows = []
    for ds, n in (("d2", 4), ("d1", 4), (None, 4), ("d0", 2)):
        for i in range(n):
            sid = f"{ds}-{i}"
            for model in (("a",) if ds == "d0" else ("a", "b")):
                dangerous = (i + (model == "b")) % 2 == 0
                rows.append({"model": model, "dataset": ds, "finding": "f", "sample_id": sid, "patient_id": f"p{i}",
                             "complete": True, "quadrant": "Dangerous" if dangerous else "Ideal",
                             "correct": True, "consistent": i % 3 != 0, "flips": 0.0, "n_variants": 3.0,
                             "entropy": 0.2, "margin": 1.0, "ablation_agreement": 1.0, "image_reliant": not dangerous})
    return pd.DataFrame(rows)


def test_paired_table_order_skips_and_missing_dataset():
    f = _two_models()
    got = summary.paired_table(QuadRows.from_frame(f), n_boot=50, seed=1)
    # d0 (one model) is skipped and the datasets after it still come; sorted, the missing one last
    assert [(r["dataset"], r["model_a"], r["model_b"]) for r in got] == [("d1", "a", "b"), ("d2", "a", "b"),
                                                                         (None, "a", "b")]
    assert got[2]["dataset"] is None  # None, not NaN
    # the summary's rows: model-major, then datasets sorted, the missing one last
    t = summary.summary_table(f, f.iloc[:0][["model", "sample_id", "dataset", "finding"]], n_boot=20)
    assert list(zip(t["model"], t["dataset"]))[:7] == [("a", "d0"), ("a", "d1"), ("a", "d2"), ("a", None),
                                                       ("b", "d1"), ("b", "d2"), ("b", None)]
    # samples i = 0..3: a is Dangerous on even i, b on odd i -> 2 of 4 each, never both
    assert all(r["n"] == 4 and r["frac_dangerous_a"] == 0.5 and r["frac_dangerous_b"] == 0.5 for r in got)
    assert all(r["dangerous_a_only"] == 2 and r["dangerous_b_only"] == 2 for r in got)
    # the frame path pairs the same samples and gives the same numbers (same draws, same order)
    frame = summary.paired_table(f, n_boot=50, seed=1)
    assert [(r["dataset"], r["n"], r["diff_dangerous_ci_low"], r["diff_dangerous_ci_high"]) for r in frame] == \
           [(r["dataset"], r["n"], r["diff_dangerous_ci_low"], r["diff_dangerous_ci_high"]) for r in got]


def test_paired_table_default_seed_is_0():
    rng = np.random.default_rng(0)
    # 97 samples, patients of 1-4 samples: continuous enough that two seeds give two intervals
    qa, qb, c = rng.integers(0, 2, (3, 97))
    f = pd.DataFrame([{"model": m, "dataset": "d", "finding": "f", "sample_id": f"s{i:02d}",
                       "patient_id": f"p{i // (1 + i % 4)}", "complete": True, "quadrant": q, "correct": True,
                       "consistent": bool(c[i]), "flips": 0.0, "n_variants": 3.0, "entropy": 0.2, "margin": 1.0,
                       "ablation_agreement": 1.0}
                      for i in range(97)
                      for m, q in (("a", ["Ideal", "Dangerous"][qa[i]]), ("b", ["Ideal", "Dangerous"][qb[i]]))])
    rows = QuadRows.from_frame(f)
    ci = lambda res: [(r["diff_dangerous_ci_low"], r["diff_dangerous_ci_high"]) for r in res]  # noqa: E731
    assert ci(summary.paired_table(rows)) == ci(summary.paired_table(rows, 1000, 0))
    assert ci(summary.paired_table(rows, 1000, 0)) != ci(summary.paired_table(rows, 1000, 1))  # the seed matters


def _rows(**cols) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    base = {"model": ["m"] * n, "dataset": ["d"] * n, "finding": ["f"] * n,
            "sample_id": [f"s{i:03d}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
            "complete": [True] * n, "quadrant": ["Ideal"] * n, "correct": [True] * n, "consistent": [True] * n,
            "flips": [0.0] * n, "n_variants": [3.0] * n, "entropy": [0.3] * n, "margin": [1.0] * n,
            "ablation_agreement": [1.0] * n}
    base.update(cols)
    return pd.DataFrame(base)


_NO_ERRORS = pd.DataFrame(columns=["model", "sample_id", "dataset", "finding"])


def test_notes_say_the_share_of_single_variant_samples_and_the_unscored_ones():
    # 5 complete rows, one of them single-variant (consistent null, quadrant null) -> 1 of 5 = 20 %;
    # unscored = complete, with a quadrant, and no entropy or margin: the two Fragile rows and the
    # Dangerous one (3) -- not the single-variant row (no quadrant), not the incomplete one
    f = _rows(complete=[True, True, True, True, True, False], consistent=[True, None, False, False, True, None],
              quadrant=["Ideal", None, "Fragile", "Fragile", "Dangerous", None],
              entropy=[0.3, np.nan, np.nan, np.nan, np.nan, np.nan])
    assert summary.notes(f) == [
        "consistency not measured for 1 complete samples (20%) with a single prompt variant (paraphrases: 0?): "
        "their consistent/flips/quadrant are null and they are left out of quadrant shares and flip rates",
        "3 complete samples have no entropy or margin: the AUROC columns leave them out (n_auroc_excluded)"]
    one = _rows(consistent=[None], quadrant=[None])  # the only complete sample is single-variant: 100 %
    assert "(100%)" in summary.notes(one)[0]


def test_every_collapsed_interval_gets_the_wilson_interval_not_only_the_first():
    # 30 samples, all consistent Ideal, every ablation agreeing: frac_ideal = 1 and
    # ablation_agreement = 1 with bootstrap intervals of no width -> both get Wilson(30, 30)
    table = summary.summary_table(_rows(quadrant=["Ideal"] * 30), _NO_ERRORS, n_boot=50, seed=0)
    row = table[table["finding"].isna()].iloc[0]
    lo, hi = summary.stats.wilson_interval(30, 30)
    for col in ("frac_ideal", "ablation_agreement"):
        assert row[f"{col}_ci_low"] == float(lo) < 1.0 and row[f"{col}_ci_high"] == float(hi), col


def test_each_group_draws_with_its_own_seed_and_the_default_seed_is_0():
    # two datasets with the same 60 rows: their intervals come from different seeds
    # (seed_for(seed, model, dataset, finding)), so they differ; the default seed is 0
    rng = np.random.default_rng(1)
    quads = rng.choice(["Ideal", "Dangerous", "Fragile"], 60)
    f = pd.concat([_rows(quadrant=list(quads), dataset=[d] * 60) for d in ("d1", "d2")], ignore_index=True)
    table = summary.summary_table(f, _NO_ERRORS, n_boot=200, seed=0)
    by_ds = table[table["finding"].isna()].set_index("dataset")
    assert by_ds.loc["d1", "frac_ideal"] == by_ds.loc["d2", "frac_ideal"]
    assert (by_ds.loc["d1", ["frac_ideal_ci_low", "frac_ideal_ci_high", "frac_dangerous_ci_low"]].tolist()
            != by_ds.loc["d2", ["frac_ideal_ci_low", "frac_ideal_ci_high", "frac_dangerous_ci_low"]].tolist())
    default = summary.summary_table(f, _NO_ERRORS, n_boot=200)
    assert default.equals(table)


def test_empty_quadrants_give_an_empty_summary_and_missing_findings_stay_out_of_finding_rows():
    empty = summary.summary_table(_rows(complete=[True]).iloc[:0], _NO_ERRORS, n_boot=20)
    assert len(empty) == 0 and list(empty.columns[:3]) == ["model", "dataset", "finding"]
    # row 0 has no finding, rows 1-2 finding a: the per-finding row of "a" holds rows 1 and 2
    # (both Ideal), the dataset row all 3, and no per-finding row is made for the missing finding
    f = _rows(finding=[None, "a", "a"], quadrant=["Dangerous", "Ideal", "Ideal"])
    t = summary.summary_table(f, _NO_ERRORS, n_boot=20)
    assert t["finding"].tolist() == [None, "a"] and t["n"].tolist() == [3, 2]
    assert t.loc[0, "frac_dangerous"] == 1 / 3 and t.loc[1, "frac_dangerous"] == 0.0


def test_summary_row_without_positions_reads_every_row():
    rows = QuadRows.from_frame(_rows(quadrant=["Ideal", "Dangerous", "Ideal", "Worst"]))
    got = summary.summary_row(rows, 0, 20, 0)
    assert got["n"] == 4 and got["frac_ideal"] == 0.5 and got["frac_worst"] == 0.25


def test_the_group_seed_holds_the_model_and_the_finding_too():
    # one dataset, one finding: the per-finding row holds the same 60 rows as the dataset row, and
    # models a and b hold the same rows too; seeds seed_for(0, model, dataset, finding) differ in
    # the finding (None vs "f") and in the model, so the four bootstrap intervals all differ
    rng = np.random.default_rng(2)
    quads = list(rng.choice(["Ideal", "Dangerous", "Fragile"], 60))
    f = pd.concat([_rows(quadrant=quads, model=[m] * 60) for m in ("a", "b")], ignore_index=True)
    t = summary.summary_table(f, _NO_ERRORS, n_boot=200, seed=0)
    assert t[["model", "finding"]].values.tolist() == [["a", None], ["b", None], ["a", "f"], ["b", "f"]]
    assert t["frac_ideal"].nunique() == 1  # the same rows everywhere
    cis = [tuple(r) for r in t[["frac_ideal_ci_low", "frac_ideal_ci_high", "frac_dangerous_ci_low",
                                "frac_dangerous_ci_high"]].to_numpy()]
    assert len(set(cis)) == 4, cis


def test_to_arrow_types_an_all_null_finding_column_as_string():
    # no sample has a finding: the finding column holds only None; it is still a string column
    # (a null-typed column would not fit the schema), counts int64, the rest double
    t = summary.summary_table(_rows(finding=[None, None], quadrant=["Ideal", "Dangerous"]), _NO_ERRORS, n_boot=20)
    assert t["finding"].tolist() == [None]
    assert all(t[c].dtype == np.int64 for c in summary.COUNT_COLUMNS), t.dtypes  # counts are int64 in the frame too
    got = summary.to_arrow(t)
    assert got.schema.field("finding").type == pa.string() and got.column("finding").to_pylist() == [None]
    assert got.schema.field("model").type == pa.string() and got.schema.field("n").type == pa.int64()
    assert got.schema.field("frac_ideal").type == pa.float64() and got.column("frac_ideal").to_pylist() == [0.5]
