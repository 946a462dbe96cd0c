"""Property-based layer for the reducer (issue 16.4), with hypothesis.

Random prediction tables (1-4 variants, engine errors, missing rows, NaN and -inf
log-probabilities, margin ties, text_only rows shared by prompt_id or per sample, extra
ablation rows, exact and error/usable duplicate rows, orphan rows, errored samples):

- accounting identity: for every model each sample of samples/ is in exactly one of
  quadrants/ (complete or not) or errors/, and every summary row adds up;
- the dense path (``quadrant_table``) equals the plain per-sample reference of
  test_reduce_equivalence.py on the same deduplicated input, for every reliance rule;
- shuffling the prediction rows (and how they are split into shard files) changes no
  output value, CIs included.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from reduce_builders import preds_frame, samples_frame, sample, write_run
from frame_reference import frame_quadrant_table
from test_reduce_equivalence import assert_same, ref_quadrants
from vlm_eval.config import TaxonomyConfig
from vlm_eval.reduce import deduped_predictions, quadrant_table, reduce_run

# derandomize: the same examples on every run (CI-stable); each reduce_run example costs ~1 s.
# Under mutmut (which sets MUTANT_UNDER_TEST) each mutant reruns the test: fewer examples and
# no shrinking (a failure is all mutmut needs; shrinking it would run into mutmut's timeout).
MUTMUT = bool(os.environ.get("MUTANT_UNDER_TEST"))
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    phases=(Phase.explicit, Phase.reuse, Phase.generate) if MUTMUT else tuple(Phase),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FOLDER_SETTINGS = settings(SETTINGS, max_examples=25)
DENSE_SETTINGS = settings(SETTINGS, max_examples=15 if MUTMUT else 40)
MARGINS = [-3.0, -0.7, 0.0, 0.7, 3.0]
SPECIAL = ["nan", "yes_neginf", "no_neginf", "error", "null"]
FINDINGS = ["f1", "f2"]


def _logprobs(value):
    """(logprob_yes, logprob_no, error) for a margin or a special value."""
    if value == "nan":
        return float("nan"), -0.5, None
    if value == "yes_neginf":
        return float("-inf"), 0.0, None
    if value == "no_neginf":
        return 0.0, float("-inf"), None
    if value == "error":
        return None, None, "CUDA out of memory"
    if value == "null":
        return None, -0.3, None
    m = float(value)
    return -math.log1p(math.exp(-m)), -math.log1p(math.exp(m)), None


value_st = st.one_of(st.sampled_from(MARGINS), st.sampled_from(MARGINS), st.sampled_from(MARGINS),
                     st.sampled_from(SPECIAL))
maybe = st.one_of(st.none(), value_st, value_st, value_st)  # None = row missing


@st.composite
def runs(draw):
    """(samples, rows per model, errors) of a random small run."""
    n = draw(st.integers(1, 7))
    samples, rows = [], {"a": [], "b": []}
    for i in range(n):
        sid = f"s{i}"
        nv = draw(st.integers(1, 4))
        finding = draw(st.sampled_from(FINDINGS))
        samples.append(sample(sid, n_variants=nv, label=draw(st.sampled_from(["yes", "no", None])),
                              patient=draw(st.sampled_from([None, "p0", "p1", "p2"])), finding=finding,
                              dataset=draw(st.sampled_from(["d1", "d2"]))))
        for model in rows:
            for v in range(nv):
                for cond in ("image", "text_only", "blank"):
                    value = draw(maybe)
                    if value is None:
                        continue
                    shared = cond == "text_only" and draw(st.booleans())
                    ly, ln, err = _logprobs(value)
                    rows[model].append(dict(sample_id=None if shared else sid, variant=None if shared else v,
                                            condition=cond, prompt_id=f"{finding}-v{v}", logprob_yes=ly,
                                            logprob_no=ln, error=err))
    for model, rs in rows.items():
        extra = []
        for r in rs:
            kind = draw(st.sampled_from(["none"] * 6 + ["exact", "failed_rerun"]))
            if kind == "exact":
                extra.append(dict(r))
            elif kind == "failed_rerun":  # the same key once more, as an engine error
                extra.append({**r, "logprob_yes": None, "logprob_no": None, "error": "timeout"})
        if draw(st.booleans()):
            ly, ln, _ = _logprobs(1.0)
            extra.append(dict(sample_id="orphan", variant=0, condition="image", prompt_id="f1-v0",
                              logprob_yes=ly, logprob_no=ln, error=None))
        rs += extra
    errored = draw(st.lists(st.sampled_from([s["sample_id"] for s in samples]), max_size=2, unique=True))
    errors = [dict(sample_id=sid, stage="image", error_type="missing", message="gone",
                   model=draw(st.sampled_from([None, "a"])), source="u0") for sid in errored]
    return samples, rows, errors


def _reduce(samples, rows, errors):
    root = tempfile.mkdtemp(prefix="htests-prop-")
    try:
        run = write_run(f"{root}/run", samples, rows, errors or None)
        counts = reduce_run(run, n_boot=40, seed=5)
        quads = pd.read_parquet(f"{run}/quadrants")
        quads["model"] = quads["model"].astype(str)
        quads = quads.sort_values(["model", "sample_id"]).reset_index(drop=True)
        summary = pd.read_parquet(f"{run}/summary.parquet")
        summary = summary.sort_values(["model", "dataset", "finding"], na_position="first").reset_index(drop=True)
        return counts, quads, summary
    finally:
        shutil.rmtree(root, ignore_errors=True)


@FOLDER_SETTINGS
@given(runs())
def test_every_sample_ends_in_exactly_one_place(case):
    samples, rows, errors = case
    counts, quads, summary = _reduce(samples, rows, errors)
    ids = {s["sample_id"] for s in samples}
    for model in ("a", "b"):
        errored = {e["sample_id"] for e in errors if e["model"] in (None, model)}
        mine = quads[quads["model"] == model]
        assert not mine["sample_id"].duplicated().any()
        assert set(mine["sample_id"]) == ids - errored  # disjoint from errors, nothing missing, no orphan
        c = counts["models"][model]
        assert c["complete"] + c["incomplete"] + len(errored) == len(ids)
        assert c["complete"] == int(mine["complete"].sum())
        # a complete row with paraphrases has a quadrant (one variant: consistency not measured);
        # an incomplete one has none
        done = mine[mine["complete"]]
        assert done["image_reliant"].notna().all()
        assert done.loc[done["n_variants"] > 1, "quadrant"].notna().all()
        assert mine.loc[~mine["complete"], "quadrant"].isna().all()
        for ds in {s["dataset"] for s in samples}:
            in_ds = [s for s in samples if s["dataset"] == ds]
            row = summary[(summary["model"] == model) & (summary["dataset"] == ds) & summary["finding"].isna()]
            n_err = sum(s["sample_id"] in errored for s in in_ds)
            if len(row):
                r = row.iloc[0]
                assert r["n"] + r["n_incomplete"] + r["n_errors"] == len(in_ds)
                assert r["n_errors"] == n_err
            else:
                assert n_err == 0 and not len(mine[mine["dataset"] == ds])


@DENSE_SETTINGS
@given(runs(), st.sampled_from(["original", "majority", "any"]))
def test_dense_path_equals_the_reference(case, rule):
    samples, rows, _ = case
    samples_df = samples_frame(samples).sort_values("sample_id").reset_index(drop=True)
    tax = TaxonomyConfig(ablation="text_only", reliance=rule)
    for model, rs in rows.items():
        kept, _ = deduped_predictions(preds_frame(rs, model=model))
        got = quadrant_table(samples_df, kept, tax, ["text_only", "blank"])
        ref = ref_quadrants(samples_df, kept, "text_only", rule, ["blank"])
        assert_same(got, ref)
        # the general (join-based) path, taken where the dense layout does not fit, agrees too
        pd.testing.assert_frame_equal(got, frame_quadrant_table(samples_df, kept, tax, ["blank"]))


@FOLDER_SETTINGS
@given(runs(), st.randoms(use_true_random=False))
def test_shuffling_prediction_rows_changes_no_output(case, rnd):
    samples, rows, errors = case
    base = _reduce(samples, rows, errors)
    shuffled = {}
    for model, rs in rows.items():
        rs = [dict(r) for r in rs]
        rnd.shuffle(rs)
        shuffled[model] = rs
    again = _reduce(samples, shuffled, errors)
    assert base[0] == again[0]
    pd.testing.assert_frame_equal(base[1], again[1])
    pd.testing.assert_frame_equal(base[2], again[2])
    assert np.isfinite(base[2]["n"]).all()
