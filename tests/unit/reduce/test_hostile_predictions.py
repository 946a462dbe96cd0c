"""Prediction rows that once gave wrong tables with exit 0 (issue 11, items 1-4, 7, 8):
NaN / -inf log-probabilities, rerun duplicates, conflicting prompt_ids, a failed swap
image, stray Parquet files, and model names that look like numbers."""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reduce_builders import logprobs, preds, preds_frame, sample, samples_frame, write_run
from vlm_eval.config import TaxonomyConfig
from vlm_eval.engines.base import ScoreRequest, ScoreResult, check_results, logsumexp
from vlm_eval.reduce import deduped_predictions, quadrant_table, reduce_run
from vlm_eval.reduce.tables import quadrants
from vlm_eval.schema import PREDICTIONS_FILE, conform

TAX = TaxonomyConfig(ablation="text_only", reliance="original")


def table(samples, rows, ablations=None):
    deduped, _ = deduped_predictions(preds_frame(rows))
    return quadrant_table(samples_frame(samples), deduped, TAX, ablations).set_index("sample_id")


# ---------------------------------------------------------------- item 1: NaN / -inf


def test_nan_logsumexp_keeps_nan_and_check_results_makes_it_an_error():
    assert math.isnan(logsumexp([-1.0, float("nan")]))  # one spelling NaN is not probability 0
    assert logsumexp([-math.inf, -math.inf]) == -math.inf
    assert logsumexp([math.log(0.25), math.log(0.25)]) == pytest.approx(math.log(0.5))
    assert logsumexp([None, -2.0]) == -2.0  # a spelling that is no token is skipped
    req = [ScoreRequest(prompt="q")] * 4
    got = check_results(req, [ScoreResult({"Yes": float("nan"), "No": -1.0}),
                              ScoreResult({"Yes": -math.inf, "No": -math.inf}),
                              ScoreResult({"Yes": 0.0, "No": -math.inf}),  # certain yes: fine
                              ScoreResult({"Yes": math.inf, "No": -1.0})])
    assert "nan" in got[0].error and "-inf to every option" in got[1].error
    assert got[2].error is None and got[2].logprobs["Yes"] == 0.0
    assert "inf" in got[3].error and not got[3].logprobs


def test_nan_and_both_minus_inf_rows_make_the_sample_incomplete_never_no(tmp_path):
    rows = []
    for sid, bad in (("nan_img", "nan"), ("ninf_img", "ninf"), ("nan_txt", "txt"), ("ok", None)):
        r = preds(sid, [2, 1, 3], [-1, -1, -1], shared=False)
        if bad == "nan":
            r[1]["logprob_yes"] = float("nan")
        elif bad == "ninf":
            r[0]["logprob_yes"] = r[0]["logprob_no"] = -math.inf
        elif bad == "txt":
            r[3]["logprob_no"] = float("nan")  # the text_only row of variant 0
        rows += r
    run = write_run(tmp_path / "r", [sample(s) for s in ("nan_img", "ninf_img", "nan_txt", "ok")], {"m": rows})
    counts = reduce_run(run, n_boot=20)
    q = quadrants(run).set_index("sample_id")
    assert q["complete"].to_dict() == {"nan_img": False, "ninf_img": False, "nan_txt": False, "ok": True}
    assert q.loc["nan_img", "incomplete_reason"] == "unusable prediction: missing or NaN log-probability"
    assert q.loc["ninf_img", "incomplete_reason"] == "unusable prediction: log-probability -inf for both answers"
    assert q.loc["nan_txt", "incomplete_reason"] == "unusable prediction (text_only): missing or NaN log-probability"
    assert pd.isna(q.loc["ninf_img", "prediction"]) and pd.isna(q.loc["ninf_img", "quadrant"])  # not a 'no'
    assert counts["models"]["m"]["unusable_predictions"] == 3
    assert any("3 prediction rows without an error" in p for p in counts["problems"])


def test_one_answer_at_minus_inf_is_a_certain_answer():
    rows = preds("s", [1, 1, 1], [-1, -1, -1])
    rows[0]["logprob_yes"], rows[0]["logprob_no"] = 0.0, -math.inf
    q = table([sample("s")], rows)
    assert q.loc["s", "complete"] == True and q.loc["s", "margin"] == math.inf  # noqa: E712
    assert q.loc["s", "prediction"] == "yes" and q.loc["s", "entropy"] == 0.0 and q.loc["s", "quadrant"] == "Ideal"


# ---------------------------------------------------------------- item 2: rerun duplicates


def test_dedupe_keeps_the_usable_row_of_the_latest_attempt():
    base = preds("s", [1, 1, 1], [-1, -1, -1])
    ly, ln = logprobs(-3.0)
    old = dict(base[0], logprob_yes=ly, logprob_no=ln, attempt=1)  # attempt 1: 'no'
    new = dict(base[0], attempt=2)  # attempt 2: m = +1, the higher logprob_yes
    crashed = dict(base[0], logprob_yes=None, logprob_no=None, error="OOM", attempt=3)  # latest, but failed
    frame = preds_frame([old, new, crashed] + base[1:])
    frame["attempt"] = pd.array([1, 2, 3] + [None] * (len(base) - 1), dtype="Int64")
    for seed in (0, 1, 2):  # any row order
        kept, dropped = deduped_predictions(frame.sample(frac=1.0, random_state=seed))
        v0 = kept[(kept["condition"] == "image") & (kept["variant"] == 0)]
        assert dropped == {"m": 2} and v0["attempt"].tolist() == [2] and v0["error"].isna().all()


def test_dedupe_rerun_shards_keep_the_latest_attempt_whatever_the_file_names(tmp_path):
    first = [dict(r, attempt=1) for r in preds("s", [-3, 1, 1], [-1, -1, -1], shared=False)]
    rerun = [dict(r, attempt=2) for r in preds("s", [2, 1, 1], [-1, -1, -1], shared=False)]
    run = write_run(tmp_path / "r", [sample("s")], {"m": []})
    folder = os.path.join(run, "predictions", "model=m")
    schema = pa.schema(list(PREDICTIONS_FILE) + ([] if "attempt" in PREDICTIONS_FILE.names else
                                                 [pa.field("attempt", pa.int64())]))
    for name, rows in (("shard-z-old.parquet", first), ("shard-a-new.parquet", rerun)):
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), os.path.join(folder, name))
    counts = reduce_run(run, n_boot=10)
    q = quadrants(run).set_index("sample_id")
    # attempt 2's m = +2 wins although the old m = -3 row has the lower logprob_yes and the later file name
    assert q.loc["s", "margin"] == pytest.approx(2.0) and q.loc["s", "quadrant"] == "Ideal"
    assert counts["models"]["m"]["duplicates_dropped"] == 6


# ---------------------------------------------------------------- item 3: two prompt_ids for one cell


def test_dedupe_two_prompt_ids_for_variant_0_is_incomplete_not_a_crash():
    rows = preds("s", [1, 1, 1], [-1, -1, -1])
    rows.append(dict(rows[0], prompt_id="other-prompt"))  # variant 0 scored twice, different prompts
    for path in ("dense", "frame"):  # the frame reference used to raise InvalidIndexError
        if path == "frame":
            from frame_reference import frame_quadrant_table

            deduped, _ = deduped_predictions(preds_frame(rows))
            q = frame_quadrant_table(samples_frame([sample("s")]), deduped, TAX, []).set_index("sample_id")
        else:
            q = table([sample("s")], rows)
        assert q.loc["s", "complete"] == False, path  # noqa: E712
        assert "2 image predictions for variant 0 with different prompt_ids (other-prompt, s-v0)" in \
            q.loc["s", "incomplete_reason"], path


def test_repeated_sample_id_is_a_clear_error_not_a_silent_fallback():
    # the dense layout cannot hold a sample_id twice; reduce_run dedupes samples/ first
    rows = preds("s", [1, 1, 1], [-1, -1, -1]) + preds("t", [1, 1, 1], [-1, -1, -1])
    twice = [sample("s"), sample("t"), sample("t", finding="nodule"), sample("s")]
    with pytest.raises(ValueError, match=r"^quadrant_table: samples repeats sample_id 't' \(2 repeated in all\); "
                       r"give each sample once \(reduce_run dedupes samples/ first, keeping the first row\)$"):
        table(twice, rows)


def test_two_models_in_one_call_is_a_clear_error():
    # conflicting_rows keys on the model, so the same cell of two models stays two rows
    deduped, _ = deduped_predictions(pd.concat([preds_frame(preds("s", [1, 1, 1], [-1, -1, -1]), model=m)
                                                for m in ("m2", "m1")], ignore_index=True))
    with pytest.raises(ValueError, match=r"^quadrant_table: predictions of models \['m1', 'm2'\] in one call; "
                       r"pass one model's predictions at a time \(as reduce_run does\)$"):
        quadrant_table(samples_frame([sample("s")]), deduped, TAX)


def test_dedupe_variant_1_twice_and_variant_2_missing_is_incomplete():
    rows = preds("s", [1, 1, None], [-1, -1, -1])
    rows.append(dict(rows[1], prompt_id="s-v2"))  # the 'variant 2' prompt recorded as variant 1
    q = table([sample("s")], rows)
    assert q.loc["s", "complete"] == False  # noqa: E712 - was True (3 usable rows for 3 variants)
    assert q.loc["s", "incomplete_reason"].startswith("missing image predictions for variants [2]")
    assert "for variant 1 with different prompt_ids" in q.loc["s", "incomplete_reason"]


# ---------------------------------------------------------------- item 4: a failed swap image


def test_swap_image_failure_blanks_only_the_swap_columns(tmp_path):
    rows = []
    for sid in ("a", "b"):
        rows += preds(sid, [2, 1, 3], [-1, -1, -1])
    rows += [r for r in preds("b", [None] * 3, [-2, 1, 1], ablation="swap", shared=False) if r["condition"] == "swap"]
    errs = [dict(sample_id="a", stage="image", error_type="swap_missing", message="partner gone", model=None,
                 source="u1")]
    job = {"name": "t", "taxonomy": {"ablation": "text_only"}, "conditions": ["image", "text_only", "swap"],
           "models": [{"name": "m"}]}
    run = write_run(tmp_path / "r", [sample("a"), sample("b")], {"m": rows}, errs, job=job)
    counts = reduce_run(run, n_boot=10)
    q = quadrants(run).set_index("sample_id")
    assert q.loc["a", "quadrant"] == "Ideal" and q.loc["a", "complete"] == True  # noqa: E712 - kept its main quadrant
    assert pd.isna(q.loc["a", "swap_prediction"]) and pd.isna(q.loc["a", "swap_reliant"])
    assert q.loc["b", "swap_prediction"] == "no" and q.loc["b", "quadrant"] == "Ideal"
    c = counts["models"]["m"]
    assert c["errors"] == 0 and c["condition_errors"] == 1 and c["complete"] == 2


def test_swap_image_failure_with_swap_as_the_taxonomy_ablation_says_why(tmp_path):
    rows = preds("a", [2, 1, 3], [])
    errs = [dict(sample_id="a", stage="image", error_type="swap_missing", message="partner gone", model=None,
                 source="u1")]
    job = {"name": "t", "taxonomy": {"ablation": "swap"}, "conditions": ["image", "swap"], "models": [{"name": "m"}]}
    run = write_run(tmp_path / "r", [sample("a")], {"m": rows}, errs, job=job)
    reduce_run(run, n_boot=10)
    reason = quadrants(run).set_index("sample_id").loc["a", "incomplete_reason"]
    assert reason == "missing swap prediction for variants [0, 1, 2]; swap_missing: partner gone"


# ---------------------------------------------------------------- item 7: stray Parquet files


def test_schema_stray_parquet_file_is_refused_by_name(tmp_path):
    from vlm_eval.reduce.files import TableFileError

    run = write_run(tmp_path / "r", [sample("s")], {"m": preds("s", [1, 1, 1], [1, 1, 1])})
    stray = os.path.join(run, "predictions", "model=m", "000-notes.parquet")  # sorts first
    pq.write_table(pa.table({"comment": ["hello"]}), stray)
    with pytest.raises(TableFileError, match=r"000-notes\.parquet: lacks required column") as info:
        reduce_run(run, n_boot=10)
    assert "Nothing was reduced" in str(info.value)
    os.remove(stray)
    loose = os.path.join(run, "predictions", "loose.parquet")  # no model=NAME folder
    pq.write_table(conform(pa.Table.from_pylist(preds("s", [1], [1]), schema=PREDICTIONS_FILE), PREDICTIONS_FILE), loose)
    with pytest.raises(TableFileError, match=r"loose\.parquet: not inside a model=NAME/ folder"):
        reduce_run(run, n_boot=10)


def test_schema_older_shard_without_optional_columns_is_read(tmp_path):
    rows = preds("s", [1, 1, 1], [-1, -1, -1])
    run = write_run(tmp_path / "r", [sample("s")], {"m": rows})
    folder = os.path.join(run, "predictions", "model=m")
    for name in os.listdir(folder):  # rewrite shard-0 without other_mass / image_sha256 ("sorts first")
        if name == "shard-0.parquet":
            t = pq.read_table(os.path.join(folder, name)).drop_columns(["other_mass", "image_sha256"])
            pq.write_table(t, os.path.join(folder, name))
    counts = reduce_run(run, n_boot=10)
    assert counts["models"]["m"]["complete"] == 1
    assert quadrants(run).set_index("sample_id").loc["s", "quadrant"] == "Ideal"


# ---------------------------------------------------------------- item 8: model names


@pytest.mark.parametrize("names", [["007", "7"], ["1e3", "true"]])
def test_partition_model_names_stay_strings(tmp_path, names):
    rows = preds("s", [1, 1, 1], [-1, -1, -1])
    run = write_run(tmp_path / "r", [sample("s")], {n: rows for n in names})
    counts = reduce_run(run, n_boot=10)
    assert sorted(counts["models"]) == sorted(names)
    q = quadrants(run)
    assert sorted(q["model"].tolist()) == sorted(names) and all(isinstance(m, str) for m in q["model"])
    summary = pd.read_parquet(os.path.join(run, "summary.parquet"))
    assert sorted(summary.loc[summary["finding"].isna(), "model"]) == sorted(names)
    assert np.all([isinstance(m, str) for m in summary["model"]])
