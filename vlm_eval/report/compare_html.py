"""comparison.html: the tables of ``vlm_eval.reduce.compare_tables`` as one self-contained
page (inline CSS and SVG, no script, every string escaped). Shares only the public cell
helpers of ``report.html``."""
from __future__ import annotations

import pandas as pd

from vlm_eval.reduce.compare_tables import crosstab
from vlm_eval.report import svg
from vlm_eval.report.html import CSS, ci_cell, num, safe, table_html
from vlm_eval.report.svg import esc
from vlm_eval.schema import QUADRANTS

MAX_HTML_MOVES = 500


def _crosstab_html(ct: pd.DataFrame) -> str:
    headers = ["from \\ to"] + list(ct.columns)
    rows = []
    for state, row in ct.iterrows():  # at most 6 rows
        cells = [esc(state)]
        for to, v in row.items():
            hot = to == "Dangerous" and state != "Dangerous" and v > 0
            cells.append(f"<b>{int(v)}</b>" if hot else str(int(v)))
        rows.append(cells)
    return table_html(headers, rows)


def _measured(v, pct: bool = True) -> str:
    """A rate, or 'not measured' where it is NaN (e.g. flip rate with one variant)."""
    text = num(v, pct)
    return "not measured" if text == "–" else text


def _config_section(configs: pd.DataFrame, names: list[str]) -> list[str]:
    groups = [(name, [(q, r[f"frac_{q.lower()}"], r[f"frac_{q.lower()}_ci_low"], r[f"frac_{q.lower()}_ci_high"])
                      for q in QUADRANTS]) for name, (_, r) in zip(names, configs.iterrows())]
    rows = [[esc(name), num(r["n"], digits=0)] + [ci_cell(r, f"frac_{q.lower()}") for q in QUADRANTS]
            + [_measured(r["flip_rate_question"]), _measured(r["flip_rate_pair"]), num(r["accuracy"], True),
               num(r.get("auroc_entropy_dangerous")), num(r.get("auroc_abs_margin_dangerous"))]
            for name, (_, r) in zip(names, configs.iterrows())]
    return ["<h2>Quadrant shares</h2>", svg.legend(), svg.bar_chart(groups, "Quadrant shares per configuration"),
            table_html(["run / model / dataset", "n"] + list(QUADRANTS) + ["flip rate (question)", "flip rate (pair)",
                       "accuracy", "AUROC entropy", "AUROC -|margin|"], rows),
            '<p class="note">AUROC: how well flagging the least confident answers (highest entropy, smallest '
            "|margin|) finds Dangerous samples. 0.5 = no better than chance; below 0.5 = Dangerous answers are "
            "<i>more</i> confident than the rest, so a confidence screen would pass them.</p>"]


def _paired_section(paired: pd.DataFrame) -> list[str]:
    parts = ["<h2>Paired comparisons</h2>"]
    if paired.empty:
        return parts + ['<p class="note">No two comparable configurations share complete samples.</p>']
    prow = [[esc(f"{p.run_a}:{p.model_a}"), esc(f"{p.run_b}:{p.model_b}"), esc(p.dataset), num(p.n, digits=0),
             f"{num(p.diff_dangerous, True)} [{num(p.diff_dangerous_ci_low, True)}, {num(p.diff_dangerous_ci_high, True)}]",
             f"{int(p.flips_a_only)} / {int(p.flips_b_only)}", num(p.mcnemar_flips_p_exact, digits=4)]
            for p in paired.itertuples()]
    return parts + [table_html(["A", "B", "dataset", "n paired", "Dangerous A - B [95% CI]", "flips A only / B only",
                                "McNemar p (flips)"], prow, key_cols=3)]


def _migration_section(counts: pd.DataFrame, moved: pd.DataFrame) -> list[str]:
    parts = ["<h2>Quadrant migration</h2>"]
    keys = list(counts[["run_from", "run_to", "model"]].drop_duplicates().itertuples(index=False))
    if not keys:
        parts.append('<p class="note">No model was evaluated in two comparable runs.</p>')
    for run_from, run_to, model in keys:  # one crosstab per run pair and model
        parts.append(f'<p class="note"><b>{esc(model)}</b>: {esc(run_from)} (rows) &rarr; {esc(run_to)} (columns); '
                     "bold = samples that became Dangerous.</p>" + _crosstab_html(crosstab(counts, run_from, run_to, model)))
    if len(moved):
        shown = moved.head(MAX_HTML_MOVES)
        mrows = [[esc(m.run_from), esc(m.run_to), esc(m.model), esc(m.dataset), esc(m.sample_id), esc(m.quadrant_from),
                  esc(m.quadrant_to), num(m.margin_from, digits=2), num(m.margin_to, digits=2)] for m in shown.itertuples()]
        more = f" (first {MAX_HTML_MOVES} of {len(moved)}; all in migration.parquet)" if len(moved) > MAX_HTML_MOVES else ""
        parts.append(f'<p class="note">Samples that moved{esc(more)}:</p>'
                     + table_html(["from run", "to run", "model", "dataset", "sample", "from", "to", "margin from",
                                   "margin to"], mrows, key_cols=5))
    return parts


def comparison_html(runs, configs: pd.DataFrame, paired: pd.DataFrame, counts: pd.DataFrame, moved: pd.DataFrame,
                    corr: dict, warnings: list[str] | None = None) -> str:
    """The comparison as one self-contained HTML page (inline CSS and SVG; every string escaped)."""
    names = [f"{r.run} / {r.model} / {r.dataset}" for r in configs.itertuples()]
    parts = [f'<p class="warn"><b>Warning:</b> {esc(w)}</p>' for w in warnings or []]
    parts += ["<h2>Runs</h2>", table_html(["run", "location", "status", "started"], [
        [esc(r.label), esc(safe(r.url)), esc(r.info.get("status")), esc(r.info.get("started_at") or r.info.get("start_time"))]
        for r in runs], key_cols=2)]
    parts += _config_section(configs, names) + _paired_section(paired) + _migration_section(counts, moved)
    text = (f"Pearson r (question-level flip rate vs Dangerous share) = {num(corr['r_question'])}, pair level r = "
            f"{num(corr['r_pair'])}, n = {corr['n']} configurations.")
    plot = svg.scatter(configs["flip_rate_question"], configs["frac_dangerous"], ["Dangerous"] * len(configs),
                       "Flip rate vs Dangerous share", "flip rate (question level)", "Dangerous share",
                       diagonal=False, labels=names)
    parts += ["<h2>Flip rate vs Dangerous share</h2>", f'<p class="note">{esc(text)}</p>', plot]
    title = "vlm_eval comparison: " + ", ".join(r.label for r in runs)
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><h1>{esc(title)}</h1>"
            + "".join(parts) + "</body></html>\n")
