"""``vlm-eval compare``: several runs (or several models of a run) side by side.

A *configuration* is one (run, model). From each run's reduced tables
(summary.json rows, quadrants/) this builds:

- the side-by-side table: one row per run x model x dataset (finding null) with
  quadrant shares and 95% CIs, flip rates, accuracy and the Dangerous AUROCs;
- paired comparisons of every two configurations on the samples complete in both
  (joined on dataset and sample_id): difference in Dangerous share with a
  patient-clustered bootstrap CI, McNemar on flips (``reduce.stats.paired_comparison``);
- quadrant migration between every two runs (in the order given) for each model
  both ran: a from -> to crosstab joined on (dataset, sample_id), where a sample is
  its quadrant, ``incomplete``, or ``absent`` (not in that run), and the list of
  samples that moved (present in both runs, different state);
- flip rate (question and pair level) vs Dangerous share across all configurations
  (Pearson r and n, ``reduce.stats.flip_vs_dangerous``).

With ``output``: comparison.parquet (the side-by-side table), migration.parquet
(the moved samples), comparison.json (everything) and a self-contained
comparison.html. Pure pandas/numpy; imports no engine, no Ray.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
import pyarrow as pa

from vlm_eval import storage
from vlm_eval.errors import InputError
from vlm_eval.reduce import stats, tables
from vlm_eval.report import svg
from vlm_eval.report.html import CSS, _ci, _num, _safe, _table
from vlm_eval.report.svg import esc
from vlm_eval.schema import QUADRANTS

STATES = list(QUADRANTS) + ["incomplete", "absent"]
MAX_HTML_MOVES = 500
_INTS = {"n", "n_incomplete", "n_errors", "n_labelled", "n_paired", "n_from", "n_to"}
MIGRATION_COLUMNS = ["run_from", "run_to", "model", "dataset", "sample_id", "patient_id", "finding", "label",
                     "quadrant_from", "quadrant_to", "prediction_from", "prediction_to", "margin_from", "margin_to",
                     "ablated_margin_from", "ablated_margin_to"]


@dataclass
class RunData:
    url: str
    label: str
    info: dict
    summary: pd.DataFrame  # summary.json rows with finding null
    quad: pd.DataFrame


def _run_label(url: str, info: dict) -> str:
    return str(info.get("run_id") or os.path.basename(url.rstrip("/")) or url)


def load_run(url: str) -> RunData:
    """A reduced run's top-level summary rows and quadrant table; InputError if not reduced."""
    doc_url = storage.join(url, "summary.json")
    if not storage.exists(doc_url):
        raise InputError(f"{url} has no summary ({doc_url} not found): run `vlm-eval reduce {url}` first")
    doc = storage.read_json(doc_url)
    rows = pd.DataFrame.from_records(doc.get("rows") or [])
    if rows.empty or "model" not in rows:
        raise InputError(f"{doc_url} has no summary rows: run `vlm-eval reduce {url}` first")
    rows = rows[rows["finding"].isna()].reset_index(drop=True)
    info = tables.run_info(url)
    return RunData(url, _run_label(url, info), info, rows, tables.quadrants(url))


def _unique_labels(runs: list[RunData]) -> None:
    """run_id when distinct, else the folder name, else folder name + position."""
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):
        labels = [os.path.basename(r.url.rstrip("/")) or r.url for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{lab}#{i + 1}" for i, lab in enumerate(labels)]
    for run, lab in zip(runs, labels):
        run.label = lab


def config_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per run x model x dataset: run, run_url, then the summary columns."""
    frames = [r.summary.assign(run=r.label, run_url=_safe(r.url)) for r in runs]
    table = pd.concat(frames, ignore_index=True)
    first = ["run", "run_url", "model", "dataset"]
    return table[first + [c for c in table.columns if c not in first]]


def _by_config(runs: list[RunData]) -> list[tuple[str, str, pd.DataFrame]]:
    """(run label, model, that model's quadrant rows) for every configuration."""
    out = []
    for r in runs:  # one step per run, then per model of its summary
        for model in sorted(r.summary["model"].dropna().unique()):
            out.append((r.label, model, r.quad[r.quad["model"] == model]))
    return out


def paired_table(runs: list[RunData], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every two configurations on each dataset they share (pairs with no common complete sample are left out)."""
    records = []
    for (ra, ma, qa), (rb, mb, qb) in combinations(_by_config(runs), 2):
        for dataset in sorted(set(qa["dataset"].dropna()) & set(qb["dataset"].dropna())):
            res = stats.paired_comparison(qa[qa["dataset"] == dataset], qb[qb["dataset"] == dataset],
                                          n_boot, stats.seed_for(seed, ra, ma, rb, mb, dataset))
            if res["n"]:
                records.append({"run_a": ra, "model_a": ma, "run_b": rb, "model_b": mb, "dataset": dataset, **res})
    cols = ["run_a", "model_a", "run_b", "model_b", "dataset", "n"]
    return pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=cols)


def _states(q: pd.DataFrame) -> pd.DataFrame:
    keep = ["dataset", "sample_id", "patient_id", "finding", "label", "quadrant", "prediction", "margin", "ablated_margin"]
    out = q[keep].copy()
    out["state"] = out["quadrant"].where(q["complete"].eq(True), "incomplete")
    return out.drop(columns="quadrant")


def migration(runs: list[RunData]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(counts, moved) between every two runs i < j for each model both ran.

    counts: run_from, run_to, model, quadrant_from, quadrant_to, n (every sample of
    either run, so the counts add up); moved: MIGRATION_COLUMNS, one row per sample
    present in both runs whose state changed.
    """
    counts, moved = [], []
    for a, b in combinations(runs, 2):
        for model in sorted(set(a.summary["model"].dropna()) & set(b.summary["model"].dropna())):
            sa, sb = _states(a.quad[a.quad["model"] == model]), _states(b.quad[b.quad["model"] == model])
            j = sa.merge(sb, on=["dataset", "sample_id"], how="outer", suffixes=("_from", "_to"))
            j["quadrant_from"] = j.pop("state_from").fillna("absent")
            j["quadrant_to"] = j.pop("state_to").fillna("absent")
            for col in ("patient_id", "finding", "label"):
                j[col] = j[f"{col}_from"].where(j[f"{col}_from"].notna(), j[f"{col}_to"])
            j = j.assign(run_from=a.label, run_to=b.label, model=model)
            c = j.groupby(["quadrant_from", "quadrant_to"]).size().reset_index(name="n")
            counts.append(c.assign(run_from=a.label, run_to=b.label, model=model))
            both = (j["quadrant_from"] != "absent") & (j["quadrant_to"] != "absent")
            moved.append(j.loc[both & (j["quadrant_from"] != j["quadrant_to"]), MIGRATION_COLUMNS])
    count_cols = ["run_from", "run_to", "model", "quadrant_from", "quadrant_to", "n"]
    counts_df = pd.concat(counts, ignore_index=True)[count_cols] if counts else pd.DataFrame(columns=count_cols)
    moved_df = pd.concat(moved, ignore_index=True) if moved else pd.DataFrame(columns=MIGRATION_COLUMNS)
    moved_df = moved_df.sort_values(["run_from", "run_to", "model", "dataset", "sample_id"], kind="mergesort")
    return counts_df, moved_df.reset_index(drop=True)


def crosstab(counts: pd.DataFrame, run_from: str, run_to: str, model: str) -> pd.DataFrame:
    """from (rows) x to (columns) sample counts; the four quadrants always, incomplete/absent when seen."""
    c = counts[(counts["run_from"] == run_from) & (counts["run_to"] == run_to) & (counts["model"] == model)]
    seen = set(c["quadrant_from"]) | set(c["quadrant_to"])
    states = [s for s in STATES if s in QUADRANTS or s in seen]
    table = c.pivot_table(index="quadrant_from", columns="quadrant_to", values="n", aggfunc="sum", fill_value=0)
    table = table.reindex(index=states, columns=states, fill_value=0).astype("int64")
    table.index.name, table.columns.name = "from", "to"
    return table


# ---------------------------------------------------------------- outputs


def _arrow(df: pd.DataFrame) -> pa.Table:
    """Stable types: counts int64, numbers float64, everything else string."""
    arrays, fields = [], []
    for col in df.columns:
        s = df[col]
        if col in _INTS or col.endswith(("_only",)):
            typ = pa.int64()
        elif pd.api.types.is_bool_dtype(s):
            typ = pa.bool_()
        elif pd.api.types.is_numeric_dtype(s):
            typ = pa.float64()
        else:
            typ, s = pa.string(), s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v))
        arrays.append(pa.array(s, type=typ, from_pandas=True))
        fields.append(pa.field(col, typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _records(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records", double_precision=15))


def _share(row: pd.Series, col: str) -> str:
    return f"{_num(row[col], True)} [{_num(row.get(f'{col}_ci_low'), True)}, {_num(row.get(f'{col}_ci_high'), True)}]"


def text_report(configs: pd.DataFrame, paired: pd.DataFrame, counts: pd.DataFrame, moved: pd.DataFrame, corr: dict) -> str:
    side = pd.DataFrame({"run": configs["run"], "model": configs["model"], "dataset": configs["dataset"],
                         "n": configs["n"].map(lambda v: _num(v, digits=0))})
    for q in QUADRANTS:
        side[q] = [_share(r, f"frac_{q.lower()}") for _, r in configs.iterrows()]
    side["flip q"] = configs["flip_rate_question"].map(lambda v: _num(v, True))
    side["flip pair"] = configs["flip_rate_pair"].map(lambda v: _num(v, True))
    side["accuracy"] = configs["accuracy"].map(lambda v: _num(v, True))
    side["AUROC H"] = configs.get("auroc_entropy_dangerous", pd.Series(np.nan, configs.index)).map(_num)
    side["AUROC -|m|"] = configs.get("auroc_abs_margin_dangerous", pd.Series(np.nan, configs.index)).map(_num)
    out = ["Configurations (quadrant shares of complete samples, 95% CI; AUROC = entropy / -|margin| as a "
           "detector of Dangerous samples, 0.5 = chance):", side.to_string(index=False), ""]
    out.append("Paired comparisons (A vs B on the same complete samples; McNemar on flips):")
    if paired.empty:
        out.append("  (no two configurations share complete samples)")
    else:
        p = pd.DataFrame({
            "A": paired["run_a"] + ":" + paired["model_a"], "B": paired["run_b"] + ":" + paired["model_b"],
            "dataset": paired["dataset"], "n": paired["n"],
            "Dangerous A-B [95% CI]": [f"{_num(r.diff_dangerous, True)} [{_num(r.diff_dangerous_ci_low, True)}, "
                                       f"{_num(r.diff_dangerous_ci_high, True)}]" for r in paired.itertuples()],
            "flips A only/B only": paired["flips_a_only"].astype(str) + "/" + paired["flips_b_only"].astype(str),
            "McNemar p": paired["mcnemar_flips_p_exact"].map(lambda v: _num(v, digits=4)),
        })
        out.append(p.to_string(index=False))
    out.append("")
    keys = counts[["run_from", "run_to", "model"]].drop_duplicates().itertuples(index=False)
    for run_from, run_to, model in keys:  # one crosstab per run pair and model
        n_moved = int(((moved["run_from"] == run_from) & (moved["run_to"] == run_to) & (moved["model"] == model)).sum())
        out.append(f"Quadrant migration {run_from} -> {run_to}, model {model} ({n_moved} samples moved):")
        out.append(crosstab(counts, run_from, run_to, model).to_string())
        out.append("")
    out.append(f"Flip rate vs Dangerous share over {corr['n']} configurations: Pearson r = "
               f"{_num(corr['r_question'])} (question level), {_num(corr['r_pair'])} (pair level)")
    return "\n".join(out)


def _crosstab_html(ct: pd.DataFrame) -> str:
    headers = ["from \\ to"] + list(ct.columns)
    rows = []
    for state, row in ct.iterrows():  # at most 6 rows
        cells = [esc(state)]
        for to, v in row.items():
            hot = to == "Dangerous" and state != "Dangerous" and v > 0
            cells.append(f"<b>{int(v)}</b>" if hot else str(int(v)))
        rows.append(cells)
    return _table(headers, rows)


def comparison_html(runs: list[RunData], configs: pd.DataFrame, paired: pd.DataFrame, counts: pd.DataFrame,
                    moved: pd.DataFrame, corr: dict) -> str:
    """The comparison as one self-contained HTML page (inline CSS and SVG; every string escaped)."""
    names = [f"{r.run} / {r.model} / {r.dataset}" for r in configs.itertuples()]
    parts = ["<h2>Runs</h2>", _table(["run", "location", "status", "started"], [
        [esc(r.label), esc(_safe(r.url)), esc(r.info.get("status")), esc(r.info.get("started_at") or r.info.get("start_time"))]
        for r in runs], key_cols=2)]
    groups = [(name, [(q, r[f"frac_{q.lower()}"], r[f"frac_{q.lower()}_ci_low"], r[f"frac_{q.lower()}_ci_high"])
                      for q in QUADRANTS]) for name, (_, r) in zip(names, configs.iterrows())]
    rows = [[esc(name), _num(r["n"], digits=0)] + [_ci(r, f"frac_{q.lower()}") for q in QUADRANTS]
            + [_num(r["flip_rate_question"], True), _num(r["flip_rate_pair"], True), _num(r["accuracy"], True),
               _num(r.get("auroc_entropy_dangerous")), _num(r.get("auroc_abs_margin_dangerous"))]
            for name, (_, r) in zip(names, configs.iterrows())]
    parts += ["<h2>Quadrant shares</h2>", svg.legend(), svg.bar_chart(groups, "Quadrant shares per configuration"),
              _table(["run / model / dataset", "n"] + list(QUADRANTS) + ["flip rate (question)", "flip rate (pair)",
                     "accuracy", "AUROC entropy", "AUROC -|margin|"], rows),
              '<p class="note">AUROC: how well flagging the least confident answers (highest entropy, smallest '
              "|margin|) finds Dangerous samples. 0.5 = no better than chance; below 0.5 = Dangerous answers are "
              "<i>more</i> confident than the rest, so a confidence screen would pass them.</p>"]
    parts.append("<h2>Paired comparisons</h2>")
    if paired.empty:
        parts.append('<p class="note">No two configurations share complete samples.</p>')
    else:
        prow = [[esc(f"{p.run_a}:{p.model_a}"), esc(f"{p.run_b}:{p.model_b}"), esc(p.dataset), _num(p.n, digits=0),
                 f"{_num(p.diff_dangerous, True)} [{_num(p.diff_dangerous_ci_low, True)}, {_num(p.diff_dangerous_ci_high, True)}]",
                 f"{int(p.flips_a_only)} / {int(p.flips_b_only)}", _num(p.mcnemar_flips_p_exact, digits=4)]
                for p in paired.itertuples()]
        parts.append(_table(["A", "B", "dataset", "n paired", "Dangerous A - B [95% CI]", "flips A only / B only",
                             "McNemar p (flips)"], prow, key_cols=3))
    parts.append("<h2>Quadrant migration</h2>")
    keys = list(counts[["run_from", "run_to", "model"]].drop_duplicates().itertuples(index=False))
    if not keys:
        parts.append('<p class="note">No model was evaluated in two of these runs.</p>')
    for run_from, run_to, model in keys:  # one crosstab per run pair and model
        parts.append(f'<p class="note"><b>{esc(model)}</b>: {esc(run_from)} (rows) &rarr; {esc(run_to)} (columns); '
                     "bold = samples that became Dangerous.</p>" + _crosstab_html(crosstab(counts, run_from, run_to, model)))
    if len(moved):
        shown = moved.head(MAX_HTML_MOVES)
        mrows = [[esc(m.run_from), esc(m.run_to), esc(m.model), esc(m.dataset), esc(m.sample_id), esc(m.quadrant_from),
                  esc(m.quadrant_to), _num(m.margin_from, digits=2), _num(m.margin_to, digits=2)] for m in shown.itertuples()]
        more = f" (first {MAX_HTML_MOVES} of {len(moved)}; all in migration.parquet)" if len(moved) > MAX_HTML_MOVES else ""
        parts.append(f'<p class="note">Samples that moved{esc(more)}:</p>'
                     + _table(["from run", "to run", "model", "dataset", "sample", "from", "to", "margin from", "margin to"],
                              mrows, key_cols=5))
    text = (f"Pearson r (question-level flip rate vs Dangerous share) = {_num(corr['r_question'])}, pair level r = "
            f"{_num(corr['r_pair'])}, n = {corr['n']} configurations.")
    plot = svg.scatter(configs["flip_rate_question"], configs["frac_dangerous"], ["Dangerous"] * len(configs),
                       "Flip rate vs Dangerous share", "flip rate (question level)", "Dangerous share",
                       diagonal=False, labels=names)
    parts += ["<h2>Flip rate vs Dangerous share</h2>", f'<p class="note">{esc(text)}</p>', plot]
    title = "vlm_eval comparison: " + ", ".join(r.label for r in runs)
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><h1>{esc(title)}</h1>"
            + "".join(parts) + "</body></html>\n")


def compare_runs(run_urls: list[str], output: str | None = None, *, n_boot: int = 1000, seed: int = 0) -> str:
    """Compare two or more configurations (run x model) of one or more reduced runs; returns a text report.

    With ``output`` (local path or URL) also writes comparison.parquet, migration.parquet,
    comparison.json and comparison.html there.
    """
    urls = [u for u in run_urls]
    repeated = sorted({u for u in urls if urls.count(u) > 1})
    if repeated:
        raise InputError(f"run given more than once: {', '.join(repeated)}")
    runs = [load_run(u) for u in urls]
    _unique_labels(runs)
    configs = config_table(runs)
    n_configs = len(configs[["run", "model"]].drop_duplicates())
    if n_configs < 2:
        raise InputError(f"compare needs at least two configurations (run x model), got {n_configs}: "
                         "give two or more runs, or a run with several models")
    paired = paired_table(runs, n_boot, seed)
    counts, moved = migration(runs)
    corr = stats.flip_vs_dangerous(configs)
    text = text_report(configs, paired, counts, moved, corr)
    if output:
        storage.write_parquet_atomic(_arrow(configs), storage.join(output, "comparison.parquet"))
        storage.write_parquet_atomic(_arrow(moved), storage.join(output, "migration.parquet"))
        doc = {"runs": [{"label": r.label, "url": _safe(r.url), "run_id": r.info.get("run_id")} for r in runs],
               "configurations": _records(configs), "paired": _records(paired), "migration_counts": _records(counts),
               "n_moved": int(len(moved)), "flip_vs_dangerous": json.loads(pd.Series([corr]).to_json(orient="records"))[0],
               "n_boot": n_boot, "seed": seed}
        storage.write_json_atomic(doc, storage.join(output, "comparison.json"))
        page = comparison_html(runs, configs, paired, counts, moved, corr)
        storage.write_bytes_atomic(storage.join(output, "comparison.html"), page.encode("utf-8"))
        text += f"\n\nwrote comparison.parquet, migration.parquet, comparison.json, comparison.html to {output}"
    return text
