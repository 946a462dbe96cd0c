"""The paper's table layout over several runs (Sadanandan & Behzadan, arXiv 2603.20985).

One row per configuration (model entry) x dataset, from the runs' summary rows with
``finding`` null: flip rate, the four quadrant shares with their 95% CIs, accuracy,
then accuracy and mean entropy per quadrant; and, across the rows, Pearson
r(flip rate, Dangerous share) with n (the paper's headline: r = -0.89 over n = 10).

Used by ``vlm-eval compare --paper-table OUT.csv`` (and printed by compare whenever
it sees three or more configuration x dataset rows). Pure pandas/numpy.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from vlm_eval.schema import QUADRANTS

# Column order of the table (and of the CSV), after run / configuration / dataset / n.
SHARE_COLUMNS = [f"frac_{q.lower()}{s}" for q in QUADRANTS for s in ("", "_ci_low", "_ci_high")]
PER_QUADRANT = [f"accuracy_{q.lower()}" for q in QUADRANTS] + [f"entropy_{q.lower()}" for q in QUADRANTS]
COLUMNS = (["run", "configuration", "dataset", "n", "flip_rate", "flip_rate_ci_low", "flip_rate_ci_high"]
           + SHARE_COLUMNS + ["accuracy"] + PER_QUADRANT)


def paper_table(configs: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout from summary rows (``compare.config_table`` output or several runs'
    summary rows with a ``run`` column); rows with a per-finding value or n = 0 are left out.

    ``configuration`` is the model entry's name, so one model scored on two datasets in two
    runs is one configuration on two rows. Rows keep the order given.
    """
    rows = configs
    if "finding" in rows:
        rows = rows[rows["finding"].isna()]
    rows = rows[pd.to_numeric(rows["n"], errors="coerce").fillna(0) > 0].reset_index(drop=True)
    out = pd.DataFrame({
        "run": rows["run"] if "run" in rows else pd.Series([None] * len(rows), dtype=object),
        "configuration": rows["model"].astype(str),
        "dataset": rows["dataset"].astype(str),
        "n": rows["n"].astype("int64"),
        "flip_rate": rows["flip_rate_question"],
    })
    for col in COLUMNS:
        if col in out:
            continue
        src = {"flip_rate_ci_low": "flip_rate_question_ci_low", "flip_rate_ci_high": "flip_rate_question_ci_high"}
        name = src.get(col, col)
        out[col] = pd.to_numeric(rows[name], errors="coerce") if name in rows else np.nan
    return out[COLUMNS]


def flip_dangerous_correlation(table: pd.DataFrame) -> dict:
    """Pearson r of flip rate vs Dangerous share over the table's rows, with n and a
    Fisher-z 95% CI (NaN when n < 4 or r = +-1); r is NaN when n < 3 or either has no variance."""
    x = pd.to_numeric(table["flip_rate"], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(table["frac_dangerous"], errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(keep.sum())
    r = low = high = float("nan")
    if n >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:  # a constant column has no correlation
        dx, dy = x - x.mean(), y - y.mean()
        den = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
        if den > 0:
            r = float((dx * dy).sum()) / den
            r = max(-1.0, min(1.0, r))
    if n >= 4 and math.isfinite(r) and abs(r) < 1:
        z, se = math.atanh(r), 1.0 / math.sqrt(n - 3)
        low, high = math.tanh(z - 1.959963984540054 * se), math.tanh(z + 1.959963984540054 * se)
    return {"r": r, "n": n, "r_ci_low": low, "r_ci_high": high}


def _pct(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{100 * float(v):.1f}"


def _num(v, digits: int = 2) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{float(v):.{digits}f}"


def paper_text(table: pd.DataFrame, corr: dict) -> str:
    """The table as text: shares and rates in %, CIs in brackets, entropy in bits."""
    show = pd.DataFrame({"configuration": table["configuration"], "dataset": table["dataset"], "n": table["n"],
                         "flip %": table["flip_rate"].map(_pct)})
    for q in QUADRANTS:
        c = f"frac_{q.lower()}"
        show[f"{q} % [95% CI]"] = [f"{_pct(r[c])} [{_pct(r[c + '_ci_low'])}, {_pct(r[c + '_ci_high'])}]"
                                   for _, r in table.iterrows()]
    show["acc %"] = table["accuracy"].map(_pct)
    for q in QUADRANTS:
        show[f"acc {q[0]}"] = table[f"accuracy_{q.lower()}"].map(_pct)
    for q in QUADRANTS:
        show[f"H {q[0]}"] = table[f"entropy_{q.lower()}"].map(_num)
    r_ci = ""
    if np.isfinite(corr.get("r_ci_low", float("nan"))):
        r_ci = f" (95% CI {_num(corr['r_ci_low'])} to {_num(corr['r_ci_high'])})"
    head = ("Paper table (per configuration x dataset; shares of complete samples; acc Q / H Q = accuracy / "
            "mean entropy in bits within quadrant Q):")
    tail = f"r(flip rate, Dangerous share) = {_num(corr['r'])}{r_ci}, n = {corr['n']} configuration x dataset rows"
    return "\n".join([head, show.to_string(index=False), tail])


def paper_report(configs: pd.DataFrame, csv_path: str | None = None) -> tuple[pd.DataFrame, dict, str]:
    """(table, correlation, text); with ``csv_path`` (local path or URL) also writes the table
    as CSV there and the correlation as JSON at ``<csv_path>.json`` (a CSV has no place for it)."""
    table = paper_table(configs)
    corr = flip_dangerous_correlation(table)
    text = paper_text(table, corr)
    if csv_path:
        from vlm_eval import storage

        storage.write_bytes_atomic(csv_path, table.to_csv(index=False).encode("utf-8"))
        storage.write_json_atomic({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                   for k, v in corr.items()}, csv_path + ".json")
        text += f"\nwrote {csv_path} and {csv_path}.json"
    return table, corr, text


def summary_rows(run_urls: list[str]) -> pd.DataFrame:
    """The runs' summary rows with finding null, each with a ``run`` label (run_id, else the
    folder name; ``#k`` appended where labels repeat). InputError for a run not yet reduced."""
    import os

    from vlm_eval import storage
    from vlm_eval.errors import InputError
    from vlm_eval.layout import RunLayout
    from vlm_eval.reduce.tables import run_info

    frames = []
    for url in run_urls:
        doc_url = RunLayout(url).summary_json
        if not storage.exists(doc_url):
            raise InputError(f"{url} has no summary ({doc_url} not found): run `vlm-eval reduce {url}` first")
        doc = storage.read_json(doc_url)
        rows = pd.DataFrame.from_records(doc.get("rows") or [])
        if rows.empty or "model" not in rows:
            raise InputError(f"{doc_url} has no summary rows: run `vlm-eval reduce {url}` first")
        label = str(run_info(url).get("run_id") or os.path.basename(url.rstrip("/")) or url)
        frames.append(rows[rows["finding"].isna()].assign(run=label))
    labels = [f["run"].iloc[0] if len(f) else "" for f in frames]
    for k, f in enumerate(frames):
        if labels.count(labels[k]) > 1:
            f["run"] = f"{labels[k]}#{k + 1}"
    return pd.concat(frames, ignore_index=True)


def paper_report_for_runs(run_urls: list[str], csv_path: str | None = None) -> tuple[pd.DataFrame, dict, str]:
    """``paper_report`` over reduced runs (their summary.json)."""
    return paper_report(summary_rows(run_urls), csv_path)


def compare_paper_text(run_urls: list[str], csv_path: str | None = None, min_rows: int = 3) -> str | None:
    """For ``vlm-eval compare``: the paper table's text when ``csv_path`` is given (also written
    there) or when the runs hold at least ``min_rows`` configuration x dataset rows; else None."""
    table, _, text = paper_report_for_runs(run_urls, csv_path)
    return text if csv_path or len(table) >= min_rows else None
