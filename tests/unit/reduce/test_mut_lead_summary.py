"""Tests written to kill surviving mutants of ``vlm_eval/reduce/summary.py`` (mutmut, issue 16;
docs/testing.md lists the survivors and why the rest are equivalent)."""
from __future__ import annotations

import numpy as np
import pandas as pd

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
