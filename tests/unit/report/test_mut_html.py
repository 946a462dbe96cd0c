"""vlm_eval/report/html.py and report/compare_html.py, markup by markup (issue 16, session 5).

Each section function gets a hand-built summary row (or two) whose every value is chosen
so that its printed form is distinct and worked out below; the section's HTML is compared
with the whole expected string. Plots come from ``report.svg`` (not under test here): the
expected string calls it with the arguments the section must pass, written out by hand.
``ref_table`` is a plain re-statement of the documented table markup (first ``key_cols``
cells class "k", a column whose header names Dangerous class "dangerous"), checked itself
against a literal string in ``test_table_markup_and_classes``.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from vlm_eval import storage
from vlm_eval.errors import InputError
from vlm_eval.report import compare_html, html, svg
from vlm_eval.report.explorer import CSS as EXPLORER_CSS
from vlm_eval.report.explorer import explorer_section
from vlm_eval.reduce.compare_tables import RunData

QS = ("Ideal", "Fragile", "Dangerous", "Worst")
NAME = "m&lt;1&gt; / ds&amp;"  # the escaped configuration name of ROW ("m<1>" / "ds&")


def ref_table(headers, rows, key_cols=1):
    cls = ["k" if i < key_cols else ("dangerous" if "Dangerous" in h else "") for i, h in enumerate(headers)]
    head = "".join(f'<th class="{c}">{svg.esc(h)}</th>' for c, h in zip(cls, headers))
    body = "".join("<tr>" + "".join(f'<td class="{c}">{v}</td>' for c, v in zip(cls, r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def ci(est, low, high):
    return f'{est} <span class="ci">[{low}, {high}]</span>'


# One top-level summary row; every printed value differs from the others.
ROW = {"model": "m<1>", "dataset": "ds&", "finding": None, "n": 10, "n_incomplete": 2, "n_errors": 1,
       "frac_ideal": 0.4, "frac_ideal_ci_low": 0.2, "frac_ideal_ci_high": 0.6,
       "frac_fragile": 0.1, "frac_fragile_ci_low": 0.0, "frac_fragile_ci_high": 0.3,
       "frac_dangerous": 0.3, "frac_dangerous_ci_low": 0.12, "frac_dangerous_ci_high": 0.55,
       "frac_worst": 0.2, "frac_worst_ci_low": 0.05, "frac_worst_ci_high": 0.45,
       "flip_rate_question": 0.35, "flip_rate_question_ci_low": 0.15, "flip_rate_question_ci_high": 0.65,
       "flip_rate_pair": 0.175, "flip_rate_pair_ci_low": 0.075, "flip_rate_pair_ci_high": 0.275,
       "accuracy": 0.7, "accuracy_ci_low": 0.42, "accuracy_ci_high": 0.91,
       "accuracy_ideal": 0.75, "accuracy_fragile": 1.0, "accuracy_dangerous": 2 / 3, "accuracy_worst": 0.0,
       "entropy_ideal": 0.1234, "entropy_fragile": 0.5678, "entropy_dangerous": 0.2468, "entropy_worst": 0.9,
       "auroc_entropy_dangerous": 0.25, "auroc_abs_margin_dangerous": 0.375, "mean_entropy": 0.4321}
# the same with a finding (for the per-finding table) and without a quadrant measured
FROW = dict(ROW, finding="nodule", n=3, n_incomplete=0, n_errors=0, flip_rate_question=np.nan, accuracy=1 / 3)
# printed: shares "40.0%" [20.0%, 60.0%], "10.0%" [0.0%, 30.0%], "30.0%" [12.0%, 55.0%], "20.0%" [5.0%, 45.0%]
SHARES = [ci("40.0%", "20.0%", "60.0%"), ci("10.0%", "0.0%", "30.0%"), ci("30.0%", "12.0%", "55.0%"),
          ci("20.0%", "5.0%", "45.0%")]
GROUPS = [("m<1> / ds&", [("Ideal", 0.4, 0.2, 0.6), ("Fragile", 0.1, 0.0, 0.3), ("Dangerous", 0.3, 0.12, 0.55),
                          ("Worst", 0.2, 0.05, 0.45)])]


def top(*rows):
    return pd.DataFrame(list(rows) or [ROW])


# ------------------------------------------------------------------ cell helpers
def test_num_formats_and_dashes():
    assert [html._num(v) for v in (None, np.nan, float("inf"), -float("inf"), pd.NA, pd.NaT)] == ["–"] * 6
    assert html._num(0.12345) == "0.123" and html._num(2) == "2.000" and html._num(np.float32(0.5)) == "0.500"
    assert html._num(0.12345, digits=1) == "0.1" and html._num(7.9, digits=0) == "7"
    assert html._num(0.1234, True) == "12.3%" and html._num(1, True) == "100.0%" and html._num(0.0, True) == "0.0%"
    assert html._num(-0.0004, True) == "0.0%"  # rounds to -0.0: never printed with a sign
    assert html._num(-0.0006, True) == "-0.1%"
    assert html._num(0.5, pct=True, digits=0) == "50.0%"  # percent wins over digits
    assert html._num(np.int64(12), digits=0) == "12"
    # the public names used by the comparison page are the same functions
    assert html.num is html._num and html.ci_cell is html._ci and html.table_html is html._table and html.safe is html._safe


def test_ci_cell_reads_the_two_bounds_of_its_column():
    row = pd.Series({"x": 0.5, "x_ci_low": 0.25, "x_ci_high": 0.75})
    assert html._ci(row, "x") == '50.0% <span class="ci">[25.0%, 75.0%]</span>'
    assert html._ci(pd.Series({"x": 0.5}), "x") == '50.0% <span class="ci">[–, –]</span>'


def test_table_markup_and_classes():
    got = html._table(["key <1>", "other", "Dangerous share"], [["a", "<b>1</b>", "2"], ["c", "3", "4"]])
    assert got == ('<table><thead><tr><th class="k">key &lt;1&gt;</th><th class="">other</th>'
                   '<th class="dangerous">Dangerous share</th></tr></thead><tbody>'
                   '<tr><td class="k">a</td><td class=""><b>1</b></td><td class="dangerous">2</td></tr>'
                   '<tr><td class="k">c</td><td class="">3</td><td class="dangerous">4</td></tr></tbody></table>')
    assert got == ref_table(["key <1>", "other", "Dangerous share"], [["a", "<b>1</b>", "2"], ["c", "3", "4"]])
    two = html._table(["a", "Dangerous", "c"], [["1", "2", "3"]], key_cols=2)  # a key column stays "k"
    assert two == ('<table><thead><tr><th class="k">a</th><th class="k">Dangerous</th><th class="">c</th></tr>'
                   '</thead><tbody><tr><td class="k">1</td><td class="k">2</td><td class="">3</td></tr></tbody></table>')
    assert html._table(["a"], []) == '<table><thead><tr><th class="k">a</th></tr></thead><tbody></tbody></table>'
    assert [html._cls(i, h, 1) for i, h in enumerate(["x", "y", "Dangerous"])] == ["k", "", "dangerous"]
    assert html._cls(0, "dangerous", 0) == ""  # case matters: only the quadrant's name


def test_config_names_model_dataset_and_finding():
    assert html._config(pd.Series({"model": "m", "dataset": "d", "finding": "f"})) == "m / d / f"
    assert html._config(pd.Series({"model": "m", "dataset": "d", "finding": None})) == "m / d"
    assert html._config(pd.Series({"model": "m", "dataset": None})) == "m / –"  # no finding column at all
    assert html._config(pd.Series({"model": 7, "dataset": np.nan, "finding": np.nan}, dtype=object)) == "7 / –"


def test_safe_drops_secret_keys_at_any_depth_and_masks_url_credentials():
    got = html._safe({"token": "t", "a": [{"password": "p", "u": "s3://user:pw@b/k"}, 3], "n": None,
                      "nested": {"api_key": "k", "ok": "v"}})
    # token / password / api_key dropped wherever they are; the URL's user-info masked; other values kept
    assert got == {"a": [{"u": "s3://<redacted>@b/k"}, 3], "n": None, "nested": {"ok": "v"}}
    assert html._safe(["x", 1.5]) == ["x", 1.5] and html._safe(7) == 7


# ------------------------------------------------------------------ status, verdict
def test_status_line_for_each_status():
    info = {"status": "failed", "finished_at": "2025-01-02T03:04:05Z", "seconds": 12.5, "error_fraction": 0.125,
            "error": "boom <x> at s3://u:secretpw@b/k"}
    got = html.status_line(info)
    assert got.startswith('<p class="status">status: <b>failed</b> &middot; finished 2025-01-02T03:04:05Z &middot; '
                          '12.5 s &middot; error fraction 12.5% &mdash; boom &lt;x&gt; at s3://')
    assert got.endswith("@b/k</p>") and "secretpw" not in got
    assert html.status_line({"status": "failed"}) == ('<p class="status">status: <b>failed</b> &mdash; see the errors '
                                                      'section</p>')
    assert html.status_line({"status": "running", "seconds": 0, "error_fraction": 0}) == (
        '<p class="status">status: <b>running</b> &middot; 0 s &middot; error fraction 0.0% (the run was still in '
        'flight when this report was written: tables may be partial)</p>')
    assert html.status_line({"status": "succeeded", "finished_at": ""}) == '<p class="status">status: <b>succeeded</b></p>'
    assert html.status_line({}) == '<p class="status">status: <b>unknown</b></p>'
    assert html.status_line({"status": "<i>"}) == ('<p class="status">status: <b>&lt;i&gt;</b> &mdash; see the errors '
                                                   'section</p>')


def test_screening_verdict_thresholds():
    cannot = "cannot tell (no Dangerous samples, or only Dangerous ones)"
    partly = "partly: Dangerous answers tend to be less confident"
    barely = "barely: only slightly less confident than the rest"
    same = "no: Dangerous answers are as confident as the rest"
    more = "no: Dangerous answers are MORE confident than the rest; a confidence screen would pass them"
    cases = {None: cannot, np.nan: cannot, 1.0: partly, 0.7: partly, 0.6999: barely, 0.5501: barely, 0.55: same,
             0.5: same, 0.45: same, 0.4499: more, 0.0: more}
    assert {k: html.screening_verdict(k) for k in cases} == cases
    assert html.screening_verdict(pd.NA) == cannot


# ------------------------------------------------------------------ summary sections
QUADRANT_NOTE = ('<p class="note"><b>Dangerous</b> = consistent across paraphrases but <b>not</b> relying on the image: '
                 "the answer survives removing the visual evidence. Shares are over complete samples; brackets are 95% "
                 "bootstrap intervals resampling patients.</p>")


def test_quadrant_section_every_cell():
    # n 10, incomplete 2, errors 1; the four shares; flip rates 35.0% [15.0%, 65.0%], 17.5% [7.5%, 27.5%]
    want = ("<h2>Quadrant shares</h2>" + QUADRANT_NOTE + svg.legend()
            + svg.bar_chart(GROUPS, "Quadrant shares per model and dataset")
            + ref_table(["model / dataset", "n", "incomplete", "errors", *QS, "flip rate (question)", "flip rate (pair)"],
                        [[NAME, "10", "2", "1", *SHARES, ci("35.0%", "15.0%", "65.0%"), ci("17.5%", "7.5%", "27.5%")]]))
    assert html.quadrant_section(top()) == want


SCREEN_NOTE = ('<p class="note">Can confidence screening find Dangerous samples? AUROC of entropy and of -|margin| '
               "(flag the least confident) for Dangerous vs. all other complete samples: 0.5 = chance, below 0.5 = "
               "Dangerous answers are more confident than the rest.</p>")


def test_per_quadrant_section_every_cell():
    # accuracy 70.0% [42.0%, 91.0%]; per quadrant 75.0%, 100.0%, 66.7% (2/3), 0.0%;
    # entropies 0.123, 0.568, 0.247, 0.900; AUROC 0.250 / 0.375; mean entropy 0.432; 0.25 < 0.45: "MORE confident"
    row2 = dict(ROW, model="k", dataset="d", accuracy_worst=None, entropy_worst=np.nan, auroc_entropy_dangerous=0.8,
                auroc_abs_margin_dangerous=np.nan, mean_entropy=None)
    want = ("<h2>Accuracy and entropy per quadrant</h2>"
            + ref_table(["model / dataset", "accuracy", *[f"accuracy {q}" for q in QS], *[f"entropy {q} (bits)" for q in QS]],
                        [[NAME, ci("70.0%", "42.0%", "91.0%"), "75.0%", "100.0%", "66.7%", "0.0%", "0.123", "0.568",
                          "0.247", "0.900"],
                         ["k / d", ci("70.0%", "42.0%", "91.0%"), "75.0%", "100.0%", "66.7%", "–", "0.123", "0.568",
                          "0.247", "–"]])
            + SCREEN_NOTE
            + ref_table(["model / dataset", "AUROC entropy", "AUROC -|margin|", "mean entropy",
                         "does confidence screening find them?"],
                        [[NAME, "0.250", "0.375", "0.432", "no: Dangerous answers are MORE confident than the rest; a "
                          "confidence screen would pass them"],
                         ["k / d", "0.800", "–", "–", "partly: Dangerous answers tend to be less confident"]]))
    assert html.per_quadrant_section(top(ROW, row2)) == want
    # summaries without the AUROC columns: dashes and "cannot tell"
    bare = top(ROW).drop(columns=["auroc_entropy_dangerous", "auroc_abs_margin_dangerous", "mean_entropy"])
    assert ('<td class="">–</td><td class="">–</td><td class="">–</td><td class="">cannot tell (no Dangerous samples, '
            "or only Dangerous ones)</td>") in html.per_quadrant_section(bare)


def test_finding_section_every_cell():
    # FROW: n 3, incomplete 0, errors 0; flip rate NaN -> "–"; accuracy 1/3 -> 33.3%
    want = ("<h2>Per finding</h2>"
            + ref_table(["model / dataset / finding", "n", "incomplete", "errors", *QS, "flip rate", "accuracy"],
                        [["m&lt;1&gt; / ds&amp; / nodule", "3", "0", "0", *SHARES, "–", "33.3%"],
                         ["m&lt;1&gt; / ds&amp; / x", "3", "0", "0", *SHARES, "35.0%", "33.3%"]]))
    assert html.finding_section(top(FROW, dict(FROW, finding="x", flip_rate_question=0.35))) == want
    assert html.finding_section(top(FROW).iloc[:0]) == ""


ANSWER_NOTE = ('<p class="note"><b>Dangerous</b>: consistent across paraphrases, yet the answer does not depend on the '
               'image. Browse them in the <a href="#explorer">sample explorer</a>.</p>')


def test_answer_section_cards():
    # Dangerous 30.0% [12.0%, 55.0%] of 10 samples (2 incomplete); AUROC 0.25 -> "MORE confident"
    card = ('<div class="answer"><h3>' + NAME + '</h3><p class="big"><b>Dangerous 30.0%</b> <span class="ci">95% CI '
            "[12.0%, 55.0%] of 10 samples (2 incomplete)</span></p>"
            + svg.stacked_bar([("Ideal", 0.4), ("Fragile", 0.1), ("Dangerous", 0.3), ("Worst", 0.2)],
                              "Quadrant shares: m<1> / ds&")
            + '<p class="note">Does confidence screening find the Dangerous samples? <b>no: Dangerous answers are MORE '
              "confident than the rest; a confidence screen would pass them</b> (AUROC of entropy 0.250)</p></div>")
    row2 = dict(ROW, model="k", dataset="d", frac_dangerous=0.0, frac_dangerous_ci_low=0.0, frac_dangerous_ci_high=0.1,
                n=4, n_incomplete=0, auroc_entropy_dangerous=np.nan)
    card2 = ('<div class="answer"><h3>k / d</h3><p class="big"><b>Dangerous 0.0%</b> <span class="ci">95% CI '
             "[0.0%, 10.0%] of 4 samples (0 incomplete)</span></p>"
             + svg.stacked_bar([("Ideal", 0.4), ("Fragile", 0.1), ("Dangerous", 0.0), ("Worst", 0.2)],
                               "Quadrant shares: k / d")
             + '<p class="note">Does confidence screening find the Dangerous samples? <b>cannot tell (no Dangerous '
               "samples, or only Dangerous ones)</b> (AUROC of entropy –)</p></div>")
    want = "<h2>The answer</h2>" + ANSWER_NOTE + svg.legend() + f'<div class="answers">{card}{card2}</div>'
    assert html.answer_section(top(ROW, row2)) == want
    assert html.answer_section(top().iloc[:0]) == ('<h2>The answer</h2><p class="note">No complete samples: nothing to '
                                                   "classify.</p>")


def test_flip_section_sentence_and_plot():
    row2 = dict(ROW, model="k", dataset="d", flip_rate_question=0.1, frac_dangerous=0.05)
    doc = {"flip_vs_dangerous": {"r_question": -0.12345, "r_pair": 0.75, "n": 2}}
    plot = svg.scatter([0.35, 0.1], [0.3, 0.05], ["Dangerous", "Dangerous"], "Flip rate vs Dangerous share",
                       "flip rate (question level)", "Dangerous share", diagonal=False, labels=["m<1> / ds&", "k / d"])
    assert html.flip_section(top(ROW, row2), doc) == (
        '<h2>Flip rate vs Dangerous share</h2><p class="note">Pearson r (question-level flip rate vs Dangerous share) '
        "= -0.123, pair level r = 0.750, n = 2 configurations.</p>" + plot)
    assert "= –, pair level r = –, n = 0 configurations." in html.flip_section(top(), {})
    assert "= –, pair level r = –, n = 1 configurations." in html.flip_section(top(), {"flip_vs_dangerous": {
        "r_question": None, "r_pair": np.nan, "n": 1}})


def test_paired_section_rows():
    doc = {"paired": [{"model_a": "a<", "model_b": "b", "dataset": "d&", "n": 6, "diff_dangerous": -1 / 6,
                       "diff_dangerous_ci_low": -0.5, "diff_dangerous_ci_high": 0.125, "flips_a_only": 1,
                       "flips_b_only": 3, "mcnemar_flips_p_exact": 0.625, "mcnemar_flips_p_midp": 0.3125},
                      {"model_a": "x", "model_b": "y", "n": 2, "diff_dangerous": 0.0, "diff_dangerous_ci_low": None,
                       "diff_dangerous_ci_high": None, "flips_a_only": 0, "flips_b_only": 0,
                       "mcnemar_flips_p_exact": 1.0, "mcnemar_flips_p_midp": 1.0}]}
    want = ("<h2>Paired model comparison</h2>"
            + ref_table(["models", "dataset", "n paired", "Dangerous A - B [95% CI]", "flips A only / B only", "McNemar p",
                         "mid-p"],
                        [["a&lt; vs b", "d&amp;", "6", "-16.7% [-50.0%, 12.5%]", "1 / 3", "0.6250", "0.3125"],
                         ["x vs y", "", "2", "0.0% [–, –]", "0 / 0", "1.0000", "1.0000"]], key_cols=2))
    assert html.paired_section(doc) == want
    assert html.paired_section({}) == "" and html.paired_section({"paired": []}) == ""


def test_error_section_counts_per_model_stage_and_type():
    errs = pd.DataFrame([dict(model=None, stage="load", error_type="OSError"), dict(model=None, stage="load",
                                                                                     error_type="OSError"),
                         dict(model="m<", stage="score", error_type="Timeout"),
                         dict(model="m<", stage="score", error_type="Value<")])
    # (all models) load OSError 2; m< score Timeout 1, Value< 1 (rows sorted by model, stage, type)
    want = ("<h2>Errors</h2>"
            + ref_table(["model", "stage", "error type", "samples"],
                        [["(all models)", "load", "OSError", "2"], ["m&lt;", "score", "Timeout", "1"],
                         ["m&lt;", "score", "Value&lt;", "1"]], key_cols=3)
            + '<div class="warn">p&lt;1&gt;<br>p2</div>')
    assert html.error_section(errs, {"problems": ["p<1>", "p2"]}) == want
    assert html.error_section(errs.iloc[:0], {}) == '<h2>Errors</h2><p class="note">No errors recorded.</p>'
    assert html.error_section(errs.iloc[:0], {"problems": ["x"]}) == ('<h2>Errors</h2><p class="note">No errors '
                                                                     'recorded.</p><div class="warn">x</div>')


def test_error_section_null_keys_print_a_dash():
    # a null stage or error_type is counted on its own row and shown as "–" (it printed "nan")
    errs = pd.DataFrame([dict(model="m", stage=None, error_type="E"), dict(model="m", stage="s", error_type=None),
                         dict(model="m", stage="s", error_type=None)])
    assert html.error_section(errs, {}) == "<h2>Errors</h2>" + ref_table(
        ["model", "stage", "error type", "samples"], [["m", "s", "–", "2"], ["m", "–", "E", "1"]], key_cols=3)


def test_scatter_section_one_plot_per_model_and_dataset_of_complete_rows(monkeypatch):
    quad = pd.DataFrame([
        dict(model="m", dataset="d2", margin=1.0, ablated_margin=-1.0, quadrant="Ideal", complete=True, ablation="noise"),
        dict(model="m", dataset="d1", margin=2.0, ablated_margin=0.5, quadrant="Dangerous", complete=True,
             ablation="text_only"),
        dict(model="m", dataset="d1", margin=-1.5, ablated_margin=-2.0, quadrant="Worst", complete=True,
             ablation="text_only"),
        dict(model="m", dataset="d1", margin=9.0, ablated_margin=9.0, quadrant=None, complete=False, ablation="text_only"),
        dict(model="a<", dataset=None, margin=0.5, ablated_margin=0.25, quadrant="Fragile", complete=True,
             ablation="blank"),
    ])

    def plot(model, dataset, abl, x, y, q):
        title = f"{model} / {dataset}: margin with image vs. {abl} ({len(x)} points)"
        return ("<div>" + f'<p class="note">{svg.esc(title)}</p>'
                + svg.scatter(x, y, q, title, "margin with image", "ablated margin") + "</div>")

    note = ('<p class="note">Points near the dashed diagonal answer the same with and without the image; points in the '
            "same half-plane on both axes keep their prediction.</p>")
    # groups sorted by (model, dataset), a null dataset kept ("nan"); the incomplete row left out
    want = ("<h2>Margin with image vs. ablated</h2>" + note + svg.legend() + '<div class="plots">'
            + plot("a<", "nan", "blank", [0.5], [0.25], ["Fragile"])
            + plot("m", "d1", "text_only", [2.0, -1.5], [0.5, -2.0], ["Dangerous", "Worst"])
            + plot("m", "d2", "noise", [1.0], [-1.0], ["Ideal"]) + "</div>")
    assert html.scatter_section(quad) == want
    # more than MAX_POINTS complete rows: a seeded sample of MAX_POINTS
    big = pd.DataFrame({"model": "m", "dataset": "d", "margin": np.arange(6.0), "ablated_margin": -np.arange(6.0),
                        "quadrant": "Ideal", "complete": True, "ablation": "text_only"})
    monkeypatch.setattr(html, "MAX_POINTS", 3)
    s = big.sample(n=3, random_state=0)
    assert html.scatter_section(big).count("<circle") == 3
    assert plot("m", "d", "text_only", s["margin"], s["ablated_margin"], s["quadrant"]) in html.scatter_section(big)
    monkeypatch.setattr(html, "MAX_POINTS", 6)  # exactly MAX_POINTS: all of them, in order
    assert plot("m", "d", "text_only", big["margin"], big["ablated_margin"], big["quadrant"]) in html.scatter_section(big)


# ------------------------------------------------------------------ run.json sections
def test_run_section_work_and_cache_columns():
    info = {"counts": {"models": {
        "z<": {"units": 4, "units_skipped": 1, "requests_scored": 30, "requests_cached": 10, "images_fetched": 12,
               "seconds": 2.25, "engine_cache_stats": {"prefix_cache_hit_rate": 0.5, "vision_passes": 40}},
        "a": {"units": 2, "requests_scored": 0, "requests_cached": 0, "seconds": None,
              "cache_stats": {"encoder_hit_rate": 0.25}},
        "bad": "not a dict"}}}
    # z<: hits 10 / (30 + 10) = 25.0%; a: no requests -> "–"; extra columns sorted: encoder hit rate, prefix
    # cache hit rate, vision passes ("rate" in the name -> percent)
    want = ("<h2>Work done</h2>"
            + '<p class="note">Prediction cache hits: requests answered from the run\'s prediction cache (no engine call). '
              "Engine columns (e.g. prefix / encoder cache hit rates) are the engines' own figures.</p>"
            + ref_table(["model", "units", "units skipped", "requests scored", "requests cached", "prediction cache hits",
                         "images fetched", "seconds", "encoder hit rate", "prefix cache hit rate", "vision passes"],
                        [["a", "2", "–", "0", "0", "–", "–", "–", "25.0%", "–", "–"],
                         ["z&lt;", "4", "1", "30", "10", "25.0%", "12", "2.2", "–", "50.0%", "40.000"]]))
    assert html.run_section(info) == want
    assert html.run_section({}) == "" and html.run_section({"counts": "x"}) == ""
    assert html.run_section({"counts": {"models": {"m": 3}}}) == ""
    assert html.run_section({"counts": {"models": None}}) == ""
    # engine_cache_stats wins over cache_stats; a stats value that is not a dict is ignored
    assert html._engine_stats({"engine_cache_stats": {"a": 1}, "cache_stats": {"b": 2}}) == {"a": 1}
    assert html._engine_stats({"cache_stats": {"b": 2}}) == {"b": 2}
    assert html._engine_stats({"engine_cache_stats": [1]}) == {} and html._engine_stats({}) == {}
    # requests missing count as 0
    got = html.run_section({"counts": {"models": {"m": {"requests_cached": 5}}}})
    assert '<td class="">0</td><td class="">5</td><td class="">100.0%</td>' in got
    # as many cached as scored: 5 / (5 + 5) = 50.0%
    got = html.run_section({"counts": {"models": {"m": {"requests_scored": 5, "requests_cached": 5}}}})
    assert '<td class="">5</td><td class="">5</td><td class="">50.0%</td>' in got


def test_provenance_section_rows_in_order():
    info = {"run_id": "r<1>", "status": "succeeded", "started_at": "t0", "finish_time": "t1", "duration_s": 3,
            "end": {"nested": 1}, "other": "skipped", "api_token": "SECRET", "created": "",
            "versions": {"zlib": "1", "vlm_eval": "0.1"},
            "job": {"name": "job&", "dataset": {"adapter": "csv", "manifest": "s3://u:pw@b/m.csv", "other": "x"},
                    "conditions": ["image", "text_only"], "taxonomy": {"ablation": "text_only"},
                    "prompts": {"set": "default"},
                    "models": [{"name": "m1", "engine": "hf", "path": "/p", "revision": "main"}, {"name": "m2"}]}}
    got = html.provenance_section(info)
    rows = [["run id", "r&lt;1&gt;"], ["job", "job&amp;"], ["status", "succeeded"], ["started_at", "t0"],
            ["finish_time", "t1"], ["duration_s", "3"],
            ["dataset", "csv s3://&lt;redacted&gt;@b/m.csv"],
            ["conditions", "[&#x27;image&#x27;, &#x27;text_only&#x27;]"],
            ["taxonomy", "{&#x27;ablation&#x27;: &#x27;text_only&#x27;}"], ["prompt set", "default"],
            ["model m1", "engine=hf path=/p revision=main"], ["model m2", "engine=None path=None revision=None"],
            ["version vlm_eval", "0.1"], ["version zlib", "1"]]
    assert got == "<h2>Provenance</h2>" + ref_table(["item", "value"], rows, key_cols=2)
    assert "SECRET" not in got and "pw@" not in got
    # package_versions when versions is missing; a non-dict versions is ignored; nothing but the run id
    assert "version x" in html.provenance_section({"package_versions": {"x": "2"}})
    assert html.provenance_section({"versions": ["x"]}) == "<h2>Provenance</h2>" + ref_table(["item", "value"], [],
                                                                                             key_cols=2)
    only = html.provenance_section({"job": {"dataset": {"manifest": "m.csv"}}})
    assert only == "<h2>Provenance</h2>" + ref_table(["item", "value"], [["dataset", "m.csv"]], key_cols=2)


# ------------------------------------------------------------------ the whole page, write_report
def _quad_rows():
    return pd.DataFrame([dict(model="m<1>", dataset="ds&", sample_id="s1", margin=1.0, ablated_margin=-1.0,
                              quadrant="Ideal", complete=True, ablation="text_only", finding="effusion")])


def test_report_html_sections_in_order():
    info = {"run_id": "r<1>", "status": "succeeded", "token": "x"}
    summary = top(ROW, FROW)
    doc = {"flip_vs_dangerous": {"r_question": 0.5, "r_pair": 0.25, "n": 1}, "paired": [], "problems": ["p"]}
    quad, errs = _quad_rows(), pd.DataFrame(columns=["model", "stage", "error_type"])
    t, per = summary.iloc[:1].reset_index(drop=True), summary.iloc[1:].reset_index(drop=True)
    body = (html.status_line(info) + html.answer_section(t) + html.quadrant_section(t) + html.per_quadrant_section(t)
            + html.scatter_section(quad) + html.flip_section(t, doc) + html.paired_section(doc)
            + html.finding_section(per) + html.error_section(errs, doc) + explorer_section(quad) + html.run_section(info)
            + html.provenance_section(info))
    want = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>vlm_eval report: r&lt;1&gt;</title>'
            f"<style>{html.CSS}{EXPLORER_CSS}</style></head><body><h1>vlm_eval report: r&lt;1&gt;</h1>{body}</body></html>\n")
    got = html.report_html(info, summary, doc, quad, errs)
    assert got == want
    # the finding rows are not in the top-level tables, and the top row not in the per-finding one
    assert "m&lt;1&gt; / ds&amp; / nodule" in got and got.count("<h3>") == 1
    assert "<title>vlm_eval report: (unknown run)</title>" in html.report_html({}, summary, doc, quad, errs)


def test_write_report_reads_the_reduced_tables(tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    with pytest.raises(InputError) as e:
        html.write_report(run)
    assert str(e.value) == f"{run}/summary.parquet not found: run `vlm-eval reduce {run}` first"
    os.makedirs(run)
    summary = top(ROW, FROW)
    summary["finding"] = summary["finding"].astype(object)
    summary.to_parquet(os.path.join(run, "summary.parquet"))
    storage.write_json_atomic({"paired": [], "flip_vs_dangerous": {"r_question": 0.5, "r_pair": 0.25, "n": 1}},
                              os.path.join(run, "summary.json"))
    seen = {}
    from vlm_eval.reduce import tables

    monkeypatch.setattr(tables, "run_info", lambda url: seen.setdefault("info", url) and {"run_id": "rid"})
    monkeypatch.setattr(tables, "quadrants", lambda url: seen.setdefault("quad", url) and _quad_rows())
    monkeypatch.setattr(tables, "errors", lambda url: seen.setdefault("errs", url) and pd.DataFrame(
        columns=["model", "stage", "error_type"]))
    path = html.write_report(run)
    assert path == os.path.join(run, "report.html") and seen == {"info": run, "quad": run, "errs": run}
    text = open(path, encoding="utf-8").read()
    assert text == html.report_html({"run_id": "rid"}, pd.read_parquet(os.path.join(run, "summary.parquet")).assign(
        finding=[None, "nodule"]), {"paired": [], "flip_vs_dangerous": {"r_question": 0.5, "r_pair": 0.25, "n": 1}},
        _quad_rows(), pd.DataFrame(columns=["model", "stage", "error_type"]))
    assert "= 0.500, pair level r = 0.250, n = 1 configurations." in text
    # no summary.json: an empty doc (n = 0 configurations)
    os.remove(os.path.join(run, "summary.json"))
    assert "n = 0 configurations." in open(html.write_report(run), encoding="utf-8").read()


# ================================================================== the comparison page (compare_html.py)
def _cfg(run, model, n, fr, lo, hi, fq, fp, acc, ae, am):
    row = {"run": run, "model": model, "dataset": "ds", "n": n, "flip_rate_question": fq, "flip_rate_pair": fp,
           "accuracy": acc, "auroc_entropy_dangerous": ae, "auroc_abs_margin_dangerous": am}
    for q, f, l, h in zip(("ideal", "fragile", "dangerous", "worst"), fr, lo, hi):
        row.update({f"frac_{q}": f, f"frac_{q}_ci_low": l, f"frac_{q}_ci_high": h})
    return row


CONFIGS = pd.DataFrame([
    _cfg("A<", "m", 8, [0.5, 0.125, 0.25, 0.125], [0.25, 0.0, 0.1, 0.0], [0.75, 0.375, 0.5, 0.3], 0.25, 0.125, 0.625,
         0.8, 0.7),
    _cfg("B", "k", 4, [0.25, 0.0, 0.75, 0.0], [0.0, 0.0, 0.5, 0.0], [0.5, 0.0, 1.0, 0.0], np.nan, np.nan, np.nan,
         np.nan, 0.25)])
CONFIG_ROWS = [  # A< / m / ds and B / k / ds, every printed cell
    ["A&lt; / m / ds", "8", ci("50.0%", "25.0%", "75.0%"), ci("12.5%", "0.0%", "37.5%"), ci("25.0%", "10.0%", "50.0%"),
     ci("12.5%", "0.0%", "30.0%"), "25.0%", "12.5%", "62.5%", "0.800", "0.700"],
    ["B / k / ds", "4", ci("25.0%", "0.0%", "50.0%"), ci("0.0%", "0.0%", "0.0%"), ci("75.0%", "50.0%", "100.0%"),
     ci("0.0%", "0.0%", "0.0%"), "not measured", "not measured", "–", "–", "0.250"]]
CONFIG_HEADERS = ["run / model / dataset", "n", *QS, "flip rate (question)", "flip rate (pair)", "accuracy",
                  "AUROC entropy", "AUROC -|margin|"]
AUROC_NOTE = ('<p class="note">AUROC: how well flagging the least confident answers (highest entropy, smallest '
              "|margin|) finds Dangerous samples. 0.5 = no better than chance; below 0.5 = Dangerous answers are "
              "<i>more</i> confident than the rest, so a confidence screen would pass them.</p>")
PAIRED = pd.DataFrame([dict(run_a="A<", model_a="m", run_b="B", model_b="k", dataset="d&", n=4, diff_dangerous=-0.5,
                            diff_dangerous_ci_low=-0.75, diff_dangerous_ci_high=-0.25, flips_a_only=2.0, flips_b_only=0,
                            mcnemar_flips_p_exact=0.5)])
PAIRED_TABLE = ref_table(["A", "B", "dataset", "n paired", "Dangerous A - B [95% CI]", "flips A only / B only",
                          "McNemar p (flips)"],
                         [["A&lt;:m", "B:k", "d&amp;", "4", "-50.0% [-75.0%, -25.0%]", "2 / 0", "0.5000"]], key_cols=3)


def _counts(*rows):
    return pd.DataFrame(list(rows), columns=["run_from", "run_to", "model", "quadrant_from", "quadrant_to", "n"])


def test_crosstab_html_bolds_counts_that_became_dangerous():
    ct = pd.DataFrame([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 5, 0, 0], [0, 3, 0, 0, 0], [0, 0, 4, 0, 1]],
                      index=["Ideal", "Fragile", "Dangerous", "Worst", "absent<"],
                      columns=["Ideal", "Fragile", "Dangerous", "Worst", "absent<"])
    # bold: into Dangerous from another state with a count > 0 (Ideal 1, absent< 4), not Dangerous -> Dangerous 5,
    # not a zero (Fragile -> Dangerous 0), not another column (Worst -> Fragile 3)
    want = ref_table(["from \\ to", "Ideal", "Fragile", "Dangerous", "Worst", "absent<"],
                     [["Ideal", "1", "0", "<b>1</b>", "0", "0"], ["Fragile", "0", "0", "0", "0", "0"],
                      ["Dangerous", "0", "0", "5", "0", "0"], ["Worst", "0", "3", "0", "0", "0"],
                      ["absent&lt;", "0", "0", "<b>4</b>", "0", "1"]])
    assert compare_html._crosstab_html(ct) == want


def test_compare_measured_is_a_percentage_or_not_measured():
    assert compare_html._measured(0.125) == "12.5%" and compare_html._measured(np.nan) == "not measured"
    assert compare_html._measured(None) == "not measured" and compare_html._measured(0.125, pct=False) == "0.125"
    assert compare_html._measured(0.0) == "0.0%"


def test_config_section_every_cell():
    names = ["A< / m / ds", "B / k / ds"]
    groups = [("A< / m / ds", [("Ideal", 0.5, 0.25, 0.75), ("Fragile", 0.125, 0.0, 0.375), ("Dangerous", 0.25, 0.1, 0.5),
                               ("Worst", 0.125, 0.0, 0.3)]),
              ("B / k / ds", [("Ideal", 0.25, 0.0, 0.5), ("Fragile", 0.0, 0.0, 0.0), ("Dangerous", 0.75, 0.5, 1.0),
                              ("Worst", 0.0, 0.0, 0.0)])]
    assert compare_html._config_section(CONFIGS, names) == [
        "<h2>Quadrant shares</h2>", svg.legend(), svg.bar_chart(groups, "Quadrant shares per configuration"),
        ref_table(CONFIG_HEADERS, CONFIG_ROWS), AUROC_NOTE]
    # without the AUROC columns: dashes
    bare = CONFIGS.drop(columns=["auroc_entropy_dangerous", "auroc_abs_margin_dangerous"])
    table = compare_html._config_section(bare, names)[3]
    assert table == ref_table(CONFIG_HEADERS, [r[:-2] + ["–", "–"] for r in CONFIG_ROWS])


def test_paired_section_rows_or_a_note():
    assert compare_html._paired_section(PAIRED) == ["<h2>Paired comparisons</h2>", PAIRED_TABLE]
    assert compare_html._paired_section(PAIRED.iloc[:0]) == [
        "<h2>Paired comparisons</h2>", '<p class="note">No two comparable configurations share complete samples.</p>']


def _moved(n, run_from="A", run_to="B", model="m"):
    return pd.DataFrame([dict(run_from=run_from, run_to=run_to, model=model, dataset="d<", sample_id=f"s{i}",
                              quadrant_from="Ideal", quadrant_to="Dangerous", margin_from=1.234 + i, margin_to=-0.5)
                         for i in range(n)])


def test_migration_section_crosstabs_and_moved_rows(monkeypatch):
    counts = _counts(["A", "B", "m<", "Ideal", "Dangerous", 2], ["A", "B", "m<", "Ideal", "Ideal", 1],
                     ["A", "C", "m<", "Worst", "absent", 3])
    from vlm_eval.reduce.compare_tables import crosstab

    moved = _moved(2)
    # margins to two decimals: 1.234 -> 1.23, 2.234 -> 2.23, -0.5 -> -0.50
    mrows = [["A", "B", "m", "d&lt;", f"s{i}", "Ideal", "Dangerous", m, "-0.50"] for i, m in ((0, "1.23"), (1, "2.23"))]
    mheaders = ["from run", "to run", "model", "dataset", "sample", "from", "to", "margin from", "margin to"]
    want = ["<h2>Quadrant migration</h2>",
            '<p class="note"><b>m&lt;</b>: A (rows) &rarr; B (columns); bold = samples that became Dangerous.</p>'
            + compare_html._crosstab_html(crosstab(counts, "A", "B", "m<")),
            '<p class="note"><b>m&lt;</b>: A (rows) &rarr; C (columns); bold = samples that became Dangerous.</p>'
            + compare_html._crosstab_html(crosstab(counts, "A", "C", "m<")),
            '<p class="note">Samples that moved:</p>' + ref_table(mheaders, mrows, key_cols=5)]
    assert compare_html._migration_section(counts, moved) == want
    assert "<b>2</b>" in want[1] and "absent" in want[2] and "absent" not in want[1]
    # more than MAX_HTML_MOVES: the first ones and a note with the total
    monkeypatch.setattr(compare_html, "MAX_HTML_MOVES", 1)
    got = compare_html._migration_section(counts, moved)
    assert got[-1] == ('<p class="note">Samples that moved (first 1 of 2; all in migration.parquet):</p>'
                       + ref_table(mheaders, mrows[:1], key_cols=5))
    monkeypatch.setattr(compare_html, "MAX_HTML_MOVES", 2)  # exactly the limit: all, no note
    assert compare_html._migration_section(counts, moved)[-1] == want[-1]
    # nothing to migrate
    assert compare_html._migration_section(_counts(), _moved(0)) == [
        "<h2>Quadrant migration</h2>", '<p class="note">No model was evaluated in two comparable runs.</p>']


def test_comparison_html_whole_page():
    runs = [RunData("s3://user:pw@bucket/a<", "A<", {"status": "succeeded", "started_at": "t0", "start_time": "x"},
                    pd.DataFrame(), pd.DataFrame()),
            RunData("/runs/b", "B", {"status": "failed", "start_time": "t1"}, pd.DataFrame(), pd.DataFrame())]
    counts = _counts(["A<", "B", "m", "Ideal", "Dangerous", 2])
    moved = _moved(1, run_from="A<")
    corr = {"r_question": 0.5, "r_pair": -0.25, "n": 2}
    page = compare_html.comparison_html(runs, CONFIGS, PAIRED, counts, moved, corr, ["w <1>", "w2"])
    names = ["A< / m / ds", "B / k / ds"]
    runs_table = ref_table(["run", "location", "status", "started"],
                           [["A&lt;", "s3://&lt;redacted&gt;@bucket/a&lt;", "succeeded", "t0"],
                            ["B", "/runs/b", "failed", "t1"]], key_cols=2)
    plot = svg.scatter(CONFIGS["flip_rate_question"], CONFIGS["frac_dangerous"], ["Dangerous", "Dangerous"],
                       "Flip rate vs Dangerous share", "flip rate (question level)", "Dangerous share", diagonal=False,
                       labels=names)
    body = ('<p class="warn"><b>Warning:</b> w &lt;1&gt;</p><p class="warn"><b>Warning:</b> w2</p>'
            + "<h2>Runs</h2>" + runs_table + "".join(compare_html._config_section(CONFIGS, names))
            + "".join(compare_html._paired_section(PAIRED)) + "".join(compare_html._migration_section(counts, moved))
            + '<h2>Flip rate vs Dangerous share</h2><p class="note">Pearson r (question-level flip rate vs Dangerous '
              "share) = 0.500, pair level r = -0.250, n = 2 configurations.</p>" + plot)
    title = "vlm_eval comparison: A&lt;, B"
    assert page == ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
                    f"<title>{title}</title><style>{html.CSS}</style></head><body><h1>{title}</h1>{body}</body></html>\n")
    assert "pw@" not in page
    assert compare_html.comparison_html(runs, CONFIGS, PAIRED, counts, moved, corr).count('class="warn"') == 0
