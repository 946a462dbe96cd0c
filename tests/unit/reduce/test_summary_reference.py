"""Independent expected values for every contract column of the quadrant and summary
tables (issue 16.2): hand-built run folders whose values are worked out by hand below
(arithmetic in the comments) or by plain reference code here that shares nothing with
``vlm_eval.reduce``; CIs are checked against a reference patient-clustered bootstrap.

The report/compare read-back of these numbers is in tests/unit/test_guards_report_numbers.py.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from reduce_builders import preds, sample, write_run
from vlm_eval.reduce import bootstrap_ratios, mcnemar, paired_comparison, reduce_run, wilson_interval


def h(m: float) -> float:
    """Binary entropy in bits of p = sigmoid(m), written out plainly."""
    p = 1.0 / (1.0 + math.exp(-m))
    return -sum(x * math.log2(x) for x in (p, 1.0 - p) if x > 0)


def ref_auroc(pos: list[float], neg: list[float]) -> float:
    """P(score_pos > score_neg) + ties / 2, by counting every pair."""
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


# ------------------------------------------------------------------ the hand-built run
# (with-image margins per variant, text_only margins per variant); all |margins| of
# variant 0 differ, so no entropy ties can be broken by float rounding.
PLAN = {  # sid: patient, finding, label, img, txt
    "s1": ("p1", "effusion", "yes", [2, 1, 3], [-1, -1, -1]),
    "s2": ("p1", "effusion", "no", [1.5, -1, 3], [-1, -1, -1]),
    "s3": ("p2", "effusion", "yes", [-2.5, -1, -3], [-1, -1, -1]),
    "s4": ("p3", "effusion", "no", [-0.5, 1, -3], [-1, -1, -1]),
    "s5": (None, "effusion", None, [1, 1, 1], [1, 1, 1]),
    "s6": ("p4", "effusion", "no", [1, 1, None], [-1, -1, -1]),  # variant 2 never scored
    "s7": ("p7", "effusion", "yes", [], []),  # image failed: errors/ only
    "s8": ("p5", "effusion", "yes", [0, 0, 0], [0.5, 0.5, 0.5]),  # a tie is "no"
    "s9": ("p6", "nodule", "yes", [3, 3, 3], [-2, -2, -2]),
}
# Worked out by hand from PLAN (v0 = variant 0; reliant = v0 with image != v0 text_only;
# agreement = share of variants whose with-image and text_only predictions agree):
# sid: prediction, correct, consistent, flips, flip_rate, ablated_prediction, image_reliant, agreement, quadrant
EXPECTED = {
    "s1": ("yes", True, True, 0, 0.0, "no", True, 0 / 3, "Ideal"),  # yes,yes,yes vs no,no,no
    "s2": ("yes", False, False, 1, 1 / 2, "no", True, 1 / 3, "Fragile"),  # v1 flips to no; v1 agrees
    "s3": ("no", False, True, 0, 0.0, "no", False, 3 / 3, "Dangerous"),
    "s4": ("no", True, False, 1, 1 / 2, "no", False, 2 / 3, "Worst"),  # v1 flips to yes
    "s5": ("yes", None, True, 0, 0.0, "yes", False, 3 / 3, "Dangerous"),  # no label: correct null
    "s6": ("yes", False, None, None, None, "no", None, None, None),  # incomplete
    "s8": ("no", False, True, 0, 0.0, "yes", True, 0 / 3, "Ideal"),
    "s9": ("yes", True, True, 0, 0.0, "no", True, 0 / 3, "Ideal"),
}


def write_hand_run(root, name="run", drop=(), run_id="hand-1", plan=None):
    samples, rows = [], []
    for sid, (patient, finding, label, img, txt) in (plan or PLAN).items():
        if sid in drop:
            continue
        samples.append(sample(sid, n_variants=3, label=label, patient=patient, finding=finding))
        rows += preds(sid, img, txt)
    errs = [dict(sample_id="s7", stage="image", error_type="missing", message="gone", model=None, source="u0")]
    run = write_run(root / name, samples, {"m": rows}, errs if "s7" not in drop else None)
    info = json.loads(open(os.path.join(run, "run.json")).read())
    info["run_id"] = run_id
    with open(os.path.join(run, "run.json"), "w") as f:
        json.dump(info, f)
    return run


@pytest.fixture
def hand_run(tmp_path):
    run = write_hand_run(tmp_path)
    counts = reduce_run(run, n_boot=500, seed=7)
    return run, counts


def test_every_quadrant_column_matches_hand_computed_values(hand_run):
    run, counts = hand_run
    assert counts["models"]["m"]["complete"] == 7 and counts["models"]["m"]["incomplete"] == 1
    assert counts["models"]["m"]["errors"] == 1 and counts["problems"] == []
    q = pd.read_parquet(os.path.join(run, "quadrants"))
    q["model"] = q["model"].astype(str)
    assert sorted(q["sample_id"]) == sorted(EXPECTED)  # s7 is only in errors/
    q = q.set_index("sample_id")
    for sid, (pred, correct, consistent, flips, flip_rate, abl_pred, reliant, agree, quadrant) in EXPECTED.items():
        patient, finding, label, img, txt = PLAN[sid]
        row = q.loc[sid]
        got = {c: (None if not isinstance(row[c], (list, np.ndarray)) and pd.isna(row[c]) else row[c]) for c in q.columns}
        want = {"model": "m", "dataset": "ds", "patient_id": patient, "finding": finding, "label": label,
                "n_variants": 3, "prediction": pred, "correct": correct, "consistent": consistent, "flips": flips,
                "ablation": "text_only", "ablated_prediction": abl_pred, "image_reliant": reliant,
                "quadrant": quadrant, "complete": sid != "s6"}
        assert {k: got[k] for k in want} == want, sid
        # margin = lp_yes - lp_no = the planted v0 margin; entropy = h(margin);
        # margin_shift = v0 with-image margin - v0 text_only margin.
        assert got["margin"] == pytest.approx(img[0], abs=1e-9), sid
        assert got["entropy"] == pytest.approx(h(img[0]), abs=1e-9), sid
        assert got["ablated_margin"] == pytest.approx(txt[0], abs=1e-9), sid
        assert got["margin_shift"] == pytest.approx(img[0] - txt[0], abs=1e-9), sid
        for col, value in (("flip_rate", flip_rate), ("ablation_agreement", agree)):
            assert (got[col] is None) if value is None else got[col] == pytest.approx(value), (sid, col)
    assert q.loc["s6", "incomplete_reason"] and "2" in q.loc["s6", "incomplete_reason"]


H = {sid: h(PLAN[sid][3][0]) for sid in EXPECTED}
# The summary rows, by hand. Complete rows (all): s1 s2 s3 s4 s5 s8 s9 -> n = 7;
# Ideal {s1, s8, s9}, Fragile {s2}, Dangerous {s3, s5}, Worst {s4}.
# flip rate (question) = 2 inconsistent / 7; (pair) = (1 + 1) flips / (7 x 2 pairs).
# accuracy over the 6 labelled: s1 T, s2 F, s3 F, s4 T, s8 F, s9 T = 3/6; Ideal s1 T s8 F s9 T = 2/3;
# Fragile s2 F = 0; Dangerous s3 F (s5 unlabelled) = 0/1; Worst s4 T = 1/1.
# agreement = (0 + 1/3 + 1 + 2/3 + 1 + 0 + 0) / 7 = 3/7.
# AUROC (Dangerous = positive, less confident = higher score): s3 (|m| 2.5) is less confident only
# than s9 (3): 1 of 5; s5 (|m| 1) than s1 (2), s2 (1.5), s9 (3): 3 of 5 -> 4/10 = 0.4.
TOP = {"n": 7, "n_incomplete": 1, "n_errors": 1, "frac_ideal": 3 / 7, "frac_fragile": 1 / 7,
       "frac_dangerous": 2 / 7, "frac_worst": 1 / 7, "flip_rate_question": 2 / 7, "flip_rate_pair": 2 / 14,
       "accuracy": 3 / 6, "accuracy_ideal": 2 / 3, "accuracy_fragile": 0.0, "accuracy_dangerous": 0.0,
       "accuracy_worst": 1.0, "entropy_ideal": (H["s1"] + H["s8"] + H["s9"]) / 3, "entropy_fragile": H["s2"],
       "entropy_dangerous": (H["s3"] + H["s5"]) / 2, "entropy_worst": H["s4"], "ablation_agreement": 3 / 7,
       "mean_entropy": sum(H[s] for s in EXPECTED if s != "s6") / 7,
       "auroc_entropy_dangerous": 0.4, "auroc_abs_margin_dangerous": 0.4}
# effusion: the same without s9 -> n = 6; Ideal {s1, s8}; accuracy s1 T s2 F s3 F s4 T s8 F = 2/5;
# agreement (0 + 1/3 + 1 + 2/3 + 1 + 0) / 6 = 1/2; AUROC: s3 beats none, s5 beats s1, s2 -> 2/8.
EFFUSION = {**TOP, "n": 6, "frac_ideal": 2 / 6, "frac_fragile": 1 / 6, "frac_dangerous": 2 / 6,
            "frac_worst": 1 / 6, "flip_rate_question": 2 / 6, "flip_rate_pair": 2 / 12, "accuracy": 2 / 5,
            "accuracy_ideal": 1 / 2, "entropy_ideal": (H["s1"] + H["s8"]) / 2, "ablation_agreement": 1 / 2,
            "mean_entropy": sum(H[s] for s in EXPECTED if s not in ("s6", "s9")) / 6,
            "auroc_entropy_dangerous": 0.25, "auroc_abs_margin_dangerous": 0.25}
# nodule: s9 alone, Ideal, correct; quadrants without rows have no accuracy / entropy (NaN).
NODULE = {"n": 1, "n_incomplete": 0, "n_errors": 0, "frac_ideal": 1.0, "frac_fragile": 0.0, "frac_dangerous": 0.0,
          "frac_worst": 0.0, "flip_rate_question": 0.0, "flip_rate_pair": 0.0, "accuracy": 1.0,
          "accuracy_ideal": 1.0, "accuracy_fragile": None, "accuracy_dangerous": None, "accuracy_worst": None,
          "entropy_ideal": H["s9"], "entropy_fragile": None, "entropy_dangerous": None, "entropy_worst": None,
          "ablation_agreement": 0.0, "mean_entropy": H["s9"], "auroc_entropy_dangerous": None,
          "auroc_abs_margin_dangerous": None}


def _check_row(row, want: dict, where: str):
    for col, value in want.items():
        got = row[col]
        if value is None:
            assert pd.isna(got), (where, col, got)
        else:
            assert got == pytest.approx(value, abs=1e-9), (where, col, got, value)


def test_every_summary_column_matches_hand_computed_values(hand_run):
    run, _ = hand_run
    s = pd.read_parquet(os.path.join(run, "summary.parquet"))
    assert len(s) == 3 and set(s["model"]) == {"m"} and set(s["dataset"]) == {"ds"}
    by = {(None if pd.isna(f) else f): r for f, r in zip(s["finding"], s.to_dict("records"))}
    _check_row(by[None], TOP, "all")
    _check_row(by["effusion"], EFFUSION, "effusion")
    _check_row(by["nodule"], NODULE, "nodule")
    # the reference AUROC agrees with the hand count, and flipping the detector's sign would not
    pos, neg = [H["s3"], H["s5"]], [H[s] for s in ("s1", "s2", "s4", "s8", "s9")]
    assert ref_auroc(pos, neg) == pytest.approx(0.4) and ref_auroc([-x for x in pos], [-x for x in neg]) == 0.6
    # summary.json holds the same numbers as summary.parquet (compare reads the JSON)
    doc = json.loads(open(os.path.join(run, "summary.json")).read())
    assert len(doc["rows"]) == len(s)
    for rec in doc["rows"]:
        row = by[rec["finding"]]
        for col, value in rec.items():
            if isinstance(value, float):
                assert row[col] == pytest.approx(value, rel=1e-12), col
            elif value is None:
                assert pd.isna(row[col]), col
            else:
                assert row[col] == value, col


def test_every_ci_brackets_its_estimate_and_is_a_proper_interval(hand_run):
    run, _ = hand_run
    s = pd.read_parquet(os.path.join(run, "summary.parquet"))
    top = s[s["finding"].isna()].iloc[0]
    for col in [c[: -len("_ci_low")] for c in s.columns if c.endswith("_ci_low")]:
        lo, est, hi = top[f"{col}_ci_low"], top[col], top[f"{col}_ci_high"]
        assert 0.0 <= lo <= est <= hi <= 1.0, col
        assert lo < hi, f"{col}: a 95% interval of a share strictly inside (0, 1) cannot be a point"


# ------------------------------------------------------------------ CIs vs a reference bootstrap

def ref_cluster_ci(clusters, num, den, n_boot=20000, seed=12345, level=0.95):
    """Percentile CI of sum(num)/sum(den) resampling whole clusters with replacement (plain loops
    over clusters; a different RNG stream from the reducer's, hence a tolerance in the tests)."""
    ids = sorted(set(clusters))
    nc = np.array([sum(n for c, n in zip(clusters, num) if c == k) for k in ids], dtype=float)
    dc = np.array([sum(d for c, d in zip(clusters, den) if c == k) for k in ids], dtype=float)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    ratios = nc[pick].sum(1) / dc[pick].sum(1)
    a = (1 - level) / 2
    return float(np.quantile(ratios, a)), float(np.quantile(ratios, 1 - a))


# 40 patients x 4 samples. A patient's samples share their quadrant, so the patient is the unit
# of evidence: a patient-clustered interval is about sqrt(4) = 2x as wide as a per-sample one.
KINDS = {"Dangerous": ([-2, -2, -2], [-1, -1, -1], "yes"), "Ideal": ([2, 2, 2], [-1, -1, -1], "yes"),
         "Fragile": ([2, -2, 2], [-1, -1, -1], "no")}
PATIENTS = ["Dangerous"] * 12 + ["Ideal"] * 18 + ["Fragile"] * 10


def write_clustered_run(root, with_patients: bool):
    samples, rows, design = [], [], []
    for p, kind in enumerate(PATIENTS):
        img, txt, label = KINDS[kind]
        for k in range(4):
            sid = f"p{p:02d}s{k}"
            samples.append(sample(sid, label=label, patient=f"pt{p:02d}" if with_patients else None))
            rows += preds(sid, img, txt)
            design.append((f"pt{p:02d}" if with_patients else sid, kind))
    return write_run(root, samples, {"m": rows}), design


# (column, per-sample numerator from the planted kind, denominator)
STATS = {"frac_dangerous": lambda k: (k == "Dangerous", 1), "frac_ideal": lambda k: (k == "Ideal", 1),
         "frac_fragile": lambda k: (k == "Fragile", 1), "flip_rate_question": lambda k: (k == "Fragile", 1),
         "flip_rate_pair": lambda k: (k == "Fragile", 2),  # Fragile [2, -2, 2]: 1 of 2 pairs differs
         "accuracy": lambda k: (k == "Ideal", 1)}  # Dangerous yes->no wrong, Ideal right, Fragile yes!=no wrong


@pytest.mark.parametrize("with_patients", [True, False], ids=["clustered", "no_patient_ids"])
def test_summary_cis_match_a_reference_cluster_bootstrap(tmp_path, with_patients):
    run, design = write_clustered_run(tmp_path / "run", with_patients)
    reduce_run(run, n_boot=1000, seed=0)
    s = pd.read_parquet(os.path.join(run, "summary.parquet"))
    top = s[s["finding"].isna()].iloc[0]
    clusters = [c for c, _ in design]
    per_sample = list(range(len(design)))  # every sample its own cluster
    for col, fn in STATS.items():
        vals = [fn(kind) for _, kind in design]
        num, den = [float(v[0]) for v in vals], [float(v[1]) for v in vals]
        assert top[col] == pytest.approx(sum(num) / sum(den)), col
        lo, hi = ref_cluster_ci(clusters, num, den)
        lo_flat, hi_flat = ref_cluster_ci(per_sample, num, den)
        assert top[f"{col}_ci_low"] == pytest.approx(lo, abs=0.035), (col, top[f"{col}_ci_low"], lo)
        assert top[f"{col}_ci_high"] == pytest.approx(hi, abs=0.035), (col, top[f"{col}_ci_high"], hi)
        if with_patients:  # and not the per-sample interval, which is about half as wide
            assert (hi - lo) > 1.6 * (hi_flat - lo_flat), col
            assert (top[f"{col}_ci_high"] - top[f"{col}_ci_low"]) > 1.5 * (hi_flat - lo_flat), col


def ref_bootstrap_ratios(num, den, clusters, n_boot, seed, level=0.95):
    """The algorithm stats.py documents, written out: clusters coded in order of first
    appearance; per resample, n_clusters uniform int32 draws from default_rng(seed); ratio of
    resampled sums; linear-interpolated percentiles."""
    order = list(dict.fromkeys(clusters))
    code = [order.index(c) for c in clusters]
    c = len(order)
    nc = [[0.0] * num.shape[1] for _ in range(c)]
    dc = [[0.0] * num.shape[1] for _ in range(c)]
    for i, k in enumerate(code):
        for j in range(num.shape[1]):
            nc[k][j] += num[i, j]
            dc[k][j] += den[i, j]
    draws = np.random.default_rng(seed).integers(0, c, size=(n_boot, c), dtype=np.int32)
    reps = np.empty((n_boot, num.shape[1]))
    for b in range(n_boot):
        for j in range(num.shape[1]):
            sn = sum(nc[k][j] for k in draws[b])
            sd = sum(dc[k][j] for k in draws[b])
            reps[b, j] = sn / sd if sd > 0 else np.nan
    a = (1 - level) / 2
    est = [sum(r[j] for r in nc) / sum(r[j] for r in dc) for j in range(num.shape[1])]
    return np.array(est), np.nanquantile(reps, a, axis=0), np.nanquantile(reps, 1 - a, axis=0)


def test_bootstrap_ratios_equals_the_documented_algorithm():
    rng = np.random.default_rng(3)
    n = 60
    clusters = rng.integers(0, 17, size=n)[rng.permutation(n)]
    num = np.stack([rng.random(n) < 0.3, rng.integers(0, 3, n), rng.random(n)], 1).astype(float)
    den = np.stack([np.ones(n), np.full(n, 2.0), (rng.random(n) < 0.8).astype(float)], 1)
    est, lo, hi = bootstrap_ratios(num, den, clusters, n_boot=300, seed=11)
    r_est, r_lo, r_hi = ref_bootstrap_ratios(num, den, list(clusters), 300, 11)
    np.testing.assert_allclose(est, r_est, rtol=1e-12)
    np.testing.assert_allclose(lo, r_lo, rtol=1e-9)
    np.testing.assert_allclose(hi, r_hi, rtol=1e-9)
    # level is honoured: a 50% interval lies inside the 95% one and is narrower
    _, lo50, hi50 = bootstrap_ratios(num, den, clusters, n_boot=300, seed=11, level=0.5)
    assert np.all(lo50 >= lo) and np.all(hi50 <= hi) and np.all(hi50 - lo50 < hi - lo)


def ref_mcnemar(b: int, c: int) -> tuple[float, float, float]:
    """(statistic, exact p, mid-p) from binomial coefficients: X ~ Bin(b + c, 1/2), k = min(b, c)."""
    n, k = b + c, min(b, c)
    pmf = [math.comb(n, i) / 2**n for i in range(n + 1)]
    cdf = sum(pmf[: k + 1])
    stat = (max(abs(b - c) - 1, 0) ** 2 / n) if n else float("nan")
    return stat, min(1.0, 2 * cdf), min(1.0, 2 * (cdf - pmf[k] / 2))


def test_mcnemar_equals_binomial_reference():
    # e.g. b = 3, c = 7: P(X <= 3) = (1 + 10 + 45 + 120) / 1024 -> p = 352/1024 = 0.34375,
    # mid-p = 2 (176 - 60) / 1024 = 0.2265625, statistic = (4 - 1)^2 / 10 = 0.9
    got = mcnemar(3, 7)
    assert (got["statistic"], got["p_exact"], got["p_midp"]) == pytest.approx((0.9, 0.34375, 0.2265625))
    for b in range(0, 26, 3):
        for c in (0, 1, 2, 5, 9, 17, 40):
            got, (stat, p, midp) = mcnemar(b, c), ref_mcnemar(b, c)
            assert (got["b"], got["c"]) == (b, c)
            assert got["p_exact"] == pytest.approx(p, rel=1e-9, abs=1e-15), (b, c)
            assert got["p_midp"] == pytest.approx(midp, rel=1e-9, abs=1e-15), (b, c)
            if b + c:
                assert got["statistic"] == pytest.approx(stat), (b, c)
            else:
                assert math.isnan(got["statistic"])


def test_wilson_interval_equals_the_formula():
    """Wilson: (p + z^2/2n -/+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.959964 at 95%."""
    z = 1.959963984540054
    for k, n in ((0, 1), (0, 5), (1, 1), (3, 10), (7, 7), (40, 200)):
        p = k / n
        centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        lo, hi = wilson_interval(k, n)
        assert (float(lo), float(hi)) == pytest.approx((centre - half, centre + half), abs=1e-12), (k, n)
        assert 0.0 <= lo < hi <= 1.0 if n else True
    lo90, hi90 = wilson_interval(3, 10, level=0.9)
    lo95, hi95 = wilson_interval(3, 10)
    assert lo95 < lo90 < hi90 < hi95
    assert all(math.isnan(float(x)) for x in wilson_interval(0, 0))


def test_paired_comparison_counts_only_samples_with_a_quadrant_in_both():
    """Complete single-variant rows have no quadrant (consistency not measured): not paired."""
    def quad(rows):
        return pd.DataFrame(rows, columns=["sample_id", "patient_id", "quadrant", "consistent", "complete"])
    a = quad([("s1", "p1", "Dangerous", True, True), ("s2", "p2", "Ideal", True, True),
              ("s3", "p3", None, None, True), ("s4", "p4", "Worst", False, True), ("s5", "p5", None, None, False),
              ("s6", "p6", None, None, True), ("s7", "p7", "Ideal", True, True)])
    b = quad([("s1", "p1", "Ideal", True, True), ("s2", "p2", "Dangerous", True, True),
              ("s3", "p3", None, None, True), ("s4", "p4", "Dangerous", True, True), ("s5", "p5", "Ideal", True, True),
              ("s6", "p6", "Ideal", True, True), ("s7", "p7", None, None, True)])
    got = paired_comparison(a, b, n_boot=200, seed=1)
    # paired: s1 s2 s4. Dangerous A {s1} = 1/3, B {s2, s4} = 2/3; inconsistent A {s4}, B {}.
    assert got["n"] == 3
    assert (got["frac_dangerous_a"], got["frac_dangerous_b"]) == pytest.approx((1 / 3, 2 / 3))
    assert got["diff_dangerous"] == pytest.approx(-1 / 3)
    assert (got["flips_a_only"], got["flips_b_only"]) == (1, 0)
    assert (got["dangerous_a_only"], got["dangerous_b_only"]) == (1, 2)
    assert got["mcnemar_flips_p_exact"] == pytest.approx(ref_mcnemar(1, 0)[1])
    assert got["mcnemar_dangerous_p_exact"] == pytest.approx(ref_mcnemar(1, 2)[1])
    assert got["mcnemar_flips_p_midp"] == pytest.approx(ref_mcnemar(1, 0)[2])
    assert got["mcnemar_dangerous_p_midp"] == pytest.approx(ref_mcnemar(1, 2)[2])
    # the seed is honoured: same seed, same interval; another seed, another bootstrap stream
    again, other = paired_comparison(a, b, n_boot=200, seed=1), paired_comparison(a, b, n_boot=200, seed=2)
    assert again == got
    big_a = pd.concat([a.assign(sample_id=a["sample_id"] + f"-{k}", patient_id=a["patient_id"] + f"-{k}") for k in range(8)])
    big_b = pd.concat([b.assign(sample_id=b["sample_id"] + f"-{k}", patient_id=b["patient_id"] + f"-{k}") for k in range(8)])
    one, two = paired_comparison(big_a, big_b, n_boot=200, seed=1), paired_comparison(big_a, big_b, n_boot=200, seed=2)
    assert (one["diff_dangerous_ci_low"], one["diff_dangerous_ci_high"]) != (two["diff_dangerous_ci_low"], two["diff_dangerous_ci_high"])
    assert other["n"] == got["n"]
