"""``write_report(run_url)``: one self-contained report.html (inline CSS, SVG and JS, no network).

Reads what the reducer wrote (summary.parquet, summary.json, quadrants/) plus
errors/ and run.json. Opens with the answer (per model: Dangerous share with its
CI, the four-quadrant bar, the confidence-screening verdict) and the run's final
status; then the detail tables and plots, the sample explorer (explorer.py) and
provenance last. Never shows image pixels or prompt text; every string from
models, datasets or the run goes through ``html.escape`` (the explorer's data is
escaped JSON); keys that look like credentials are dropped from the provenance
and URL user-info is masked.
"""
from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pandas as pd

from vlm_eval import storage
from vlm_eval.errors import InputError
from vlm_eval.provenance import is_secret_name, redact_text  # the one secret rule (H-input's import switch)
from vlm_eval.reduce import tables
from vlm_eval.report import svg
from vlm_eval.report.explorer import CSS as EXPLORER_CSS
from vlm_eval.report.explorer import explorer_section
from vlm_eval.report.svg import esc
from vlm_eval.schema import QUADRANTS

MAX_POINTS = 5000

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f5f5f5}
td.k,th.k{text-align:left}.note{color:#555;font-size:13px;max-width:900px}
.dangerous{background:#fdecea;font-weight:bold}.plots{display:flex;flex-wrap:wrap;gap:16px}
.legend{font-size:12px;margin:6px 0}.key{margin-right:14px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
.ci{white-space:nowrap;color:#555;font-size:12px}
.warn{background:#fff4e5;border:1px solid #f0c36d;padding:6px 10px;font-size:13px}
.status{font-size:14px;margin:4px 0 16px}.answers{display:flex;flex-wrap:wrap;gap:16px}
.answer{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:540px;flex:1}
.answer h3{margin:0 0 6px;font-size:15px}.answer .big{font-size:20px;margin:4px 0}
.answer .big b{color:#c62828}
"""


def _safe(obj: Any) -> Any:
    """Drop credential-looking keys (any depth) and mask user-info in URLs."""
    if isinstance(obj, dict):
        return {k: _safe(v) for k, v in obj.items() if not is_secret_name(k)}
    if isinstance(obj, list):
        return [_safe(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def _num(x, pct: bool = False, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)) or pd.isna(x):
        return "–"
    if pct:
        v = round(100 * float(x), 1)
        return f"{v if v != 0 else 0.0:.1f}%"  # never "-0.0%"
    return f"{int(x)}" if digits == 0 else f"{float(x):.{digits}f}"


def _ci(row: pd.Series, col: str) -> str:
    return (f"{_num(row[col], True)} <span class=\"ci\">[{_num(row.get(f'{col}_ci_low'), True)}, "
            f"{_num(row.get(f'{col}_ci_high'), True)}]</span>")


def _cls(i: int, header: str, key_cols: int) -> str:
    return "k" if i < key_cols else ("dangerous" if "Dangerous" in header else "")


def _table(headers: list[str], rows: list[list[str]], key_cols: int = 1) -> str:
    """Cells are already-escaped HTML; Dangerous columns are highlighted."""
    cls = [_cls(i, h, key_cols) for i, h in enumerate(headers)]
    head = "".join(f'<th class="{c}">{esc(h)}</th>' for c, h in zip(cls, headers))
    body = []
    for cells in rows:  # one <tr> per summary row (model x dataset), not per sample
        body.append("<tr>" + "".join(f'<td class="{c}">{v}</td>' for c, v in zip(cls, cells)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _config(row: pd.Series) -> str:
    parts = [row["model"], row["dataset"]] + ([row["finding"]] if pd.notna(row.get("finding")) else [])
    return " / ".join("–" if pd.isna(p) else str(p) for p in parts)


def provenance_section(info: dict) -> str:
    info = _safe(info)
    job = info.get("job") or {}
    pairs = [("run id", info.get("run_id")), ("job", job.get("name")), ("status", info.get("status"))]
    pairs += [(k, v) for k, v in info.items() if re.search(r"time|start|end|created|finish|duration", k) and not isinstance(v, (dict, list))]
    ds = job.get("dataset") or {}
    dataset = " ".join(str(ds[k]) for k in ("adapter", "manifest") if ds.get(k))
    pairs += [("dataset", dataset), ("conditions", job.get("conditions")),
              ("taxonomy", job.get("taxonomy")), ("prompt set", (job.get("prompts") or {}).get("set"))]
    for m in job.get("models") or []:
        pairs.append((f"model {m.get('name')}", f"engine={m.get('engine')} path={m.get('path')} revision={m.get('revision')}"))
    versions = info.get("versions") or info.get("package_versions") or {}
    if isinstance(versions, dict):
        pairs += [(f"version {k}", v) for k, v in sorted(versions.items())]
    rows = [[esc(k), esc(v)] for k, v in pairs if v not in (None, "", [], {})]
    return "<h2>Provenance</h2>" + _table(["item", "value"], rows, key_cols=2)


def quadrant_section(top: pd.DataFrame) -> str:
    groups = [(_config(r), [(q, r[f"frac_{q.lower()}"], r[f"frac_{q.lower()}_ci_low"], r[f"frac_{q.lower()}_ci_high"])
                            for q in QUADRANTS]) for _, r in top.iterrows()]
    chart = svg.bar_chart(groups, "Quadrant shares per model and dataset")
    headers = ["model / dataset", "n", "incomplete", "errors"] + [q for q in QUADRANTS] + ["flip rate (question)", "flip rate (pair)"]
    rows = [[esc(_config(r)), _num(r["n"], digits=0), _num(r["n_incomplete"], digits=0), _num(r["n_errors"], digits=0)]
            + [_ci(r, f"frac_{q.lower()}") for q in QUADRANTS]
            + [_ci(r, "flip_rate_question"), _ci(r, "flip_rate_pair")] for _, r in top.iterrows()]
    note = ('<p class="note"><b>Dangerous</b> = consistent across paraphrases but <b>not</b> relying on the image: the '
            "answer survives removing the visual evidence. Shares are over complete samples; brackets are 95% "
            "bootstrap intervals resampling patients.</p>")
    return "<h2>Quadrant shares</h2>" + note + svg.legend() + chart + _table(headers, rows)


def screening_verdict(auc) -> str:
    """AUROC of entropy for Dangerous samples, in plain words."""
    if auc is None or pd.isna(auc):
        return "cannot tell (no Dangerous samples, or only Dangerous ones)"
    if auc >= 0.7:
        return "partly: Dangerous answers tend to be less confident"
    if auc > 0.55:
        return "barely: only slightly less confident than the rest"
    if auc >= 0.45:
        return "no: Dangerous answers are as confident as the rest"
    return "no: Dangerous answers are MORE confident than the rest; a confidence screen would pass them"


def per_quadrant_section(top: pd.DataFrame) -> str:
    headers = ["model / dataset", "accuracy"] + [f"accuracy {q}" for q in QUADRANTS] + [f"entropy {q} (bits)" for q in QUADRANTS]
    rows = [[esc(_config(r)), _ci(r, "accuracy")] + [_num(r[f"accuracy_{q.lower()}"], True) for q in QUADRANTS]
            + [_num(r[f"entropy_{q.lower()}"]) for q in QUADRANTS] for _, r in top.iterrows()]
    screen = [[esc(_config(r)), _num(r.get("auroc_entropy_dangerous")), _num(r.get("auroc_abs_margin_dangerous")),
               _num(r.get("mean_entropy")), esc(screening_verdict(r.get("auroc_entropy_dangerous")))] for _, r in top.iterrows()]
    note = ('<p class="note">Can confidence screening find Dangerous samples? AUROC of entropy and of -|margin| '
            "(flag the least confident) for Dangerous vs. all other complete samples: 0.5 = chance, below 0.5 = "
            "Dangerous answers are more confident than the rest.</p>")
    return ("<h2>Accuracy and entropy per quadrant</h2>" + _table(headers, rows)
            + note + _table(["model / dataset", "AUROC entropy", "AUROC -|margin|", "mean entropy",
                           "does confidence screening find them?"], screen))


def scatter_section(quad: pd.DataFrame) -> str:
    plots = []
    complete = quad[quad["complete"].eq(True)]
    for (model, dataset), g in complete.groupby(["model", "dataset"], dropna=False, sort=True):
        if len(g) > MAX_POINTS:
            g = g.sample(n=MAX_POINTS, random_state=0)
        title = f"{model} / {dataset}: margin with image vs. {g['ablation'].iloc[0]} ({len(g)} points)"
        plots.append("<div>" + f'<p class="note">{esc(title)}</p>'
                     + svg.scatter(g["margin"], g["ablated_margin"], g["quadrant"], title, "margin with image", "ablated margin")
                     + "</div>")
    note = ('<p class="note">Points near the dashed diagonal answer the same with and without the image; '
            "points in the same half-plane on both axes keep their prediction.</p>")
    return "<h2>Margin with image vs. ablated</h2>" + note + svg.legend() + f'<div class="plots">{"".join(plots)}</div>'


def flip_section(top: pd.DataFrame, doc: dict) -> str:
    corr = doc.get("flip_vs_dangerous") or {}
    text = (f"Pearson r (question-level flip rate vs Dangerous share) = {_num(corr.get('r_question'))}, "
            f"pair level r = {_num(corr.get('r_pair'))}, n = {corr.get('n', 0)} configurations.")
    plot = svg.scatter(top["flip_rate_question"], top["frac_dangerous"], ["Dangerous"] * len(top),
                       "Flip rate vs Dangerous share", "flip rate (question level)", "Dangerous share",
                       diagonal=False, labels=[_config(r) for _, r in top.iterrows()])
    return f'<h2>Flip rate vs Dangerous share</h2><p class="note">{esc(text)}</p>{plot}'


def paired_section(doc: dict) -> str:
    paired = doc.get("paired") or []
    if not paired:
        return ""
    rows = [[esc(f"{p['model_a']} vs {p['model_b']}"), esc(p.get("dataset")), _num(p["n"], digits=0),
             f"{_num(p['diff_dangerous'], True)} [{_num(p['diff_dangerous_ci_low'], True)}, {_num(p['diff_dangerous_ci_high'], True)}]",
             f"{p['flips_a_only']} / {p['flips_b_only']}", _num(p["mcnemar_flips_p_exact"], digits=4),
             _num(p["mcnemar_flips_p_midp"], digits=4)] for p in paired]
    headers = ["models", "dataset", "n paired", "Dangerous A - B [95% CI]", "flips A only / B only", "McNemar p", "mid-p"]
    return "<h2>Paired model comparison</h2>" + _table(headers, rows, key_cols=2)


def finding_section(per: pd.DataFrame) -> str:
    if per.empty:
        return ""
    headers = ["model / dataset / finding", "n", "incomplete", "errors"] + list(QUADRANTS) + ["flip rate", "accuracy"]
    rows = [[esc(_config(r)), _num(r["n"], digits=0), _num(r["n_incomplete"], digits=0), _num(r["n_errors"], digits=0)]
            + [_ci(r, f"frac_{q.lower()}") for q in QUADRANTS] + [_num(r["flip_rate_question"], True), _num(r["accuracy"], True)]
            for _, r in per.iterrows()]
    return "<h2>Per finding</h2>" + _table(headers, rows)


def error_section(errs: pd.DataFrame, doc: dict) -> str:
    out = "<h2>Errors</h2>"
    if errs.empty:
        out += '<p class="note">No errors recorded.</p>'
    else:
        e = errs.assign(model=errs["model"].fillna("(all models)"), stage=errs["stage"].fillna("–"),
                        error_type=errs["error_type"].fillna("–"))  # a null key printed "nan"
        counts = e.groupby(["model", "stage", "error_type"], dropna=False).size().reset_index(name="n")
        rows = [[esc(r["model"]), esc(r["stage"]), esc(r["error_type"]), _num(r["n"], digits=0)] for _, r in counts.iterrows()]
        out += _table(["model", "stage", "error type", "samples"], rows, key_cols=3)
    problems = doc.get("problems") or []
    if problems:
        out += '<div class="warn">' + "<br>".join(esc(p) for p in problems) + "</div>"
    return out


def status_line(info: dict) -> str:
    """The run's final status (or that it is still in flight) under the title."""
    info = _safe(info)
    status = info.get("status") or "unknown"
    parts = [f"status: <b>{esc(status)}</b>"]
    if info.get("finished_at"):
        parts.append(f"finished {esc(info['finished_at'])}")
    if info.get("seconds") is not None:
        parts.append(f"{esc(info['seconds'])} s")
    if info.get("error_fraction") is not None:
        parts.append(f"error fraction {_num(info['error_fraction'], True)}")
    note = ""
    if status == "running":
        note = " (the run was still in flight when this report was written: tables may be partial)"
    elif status not in ("succeeded", "unknown"):
        note = f" &mdash; {esc(info.get('error') or 'see the errors section')}"
    return f'<p class="status">{" &middot; ".join(parts)}{note}</p>'


def answer_section(top: pd.DataFrame) -> str:
    """Per model / dataset: the Dangerous share with its CI, the four-quadrant bar, the screening verdict."""
    if top.empty:
        return '<h2>The answer</h2><p class="note">No complete samples: nothing to classify.</p>'
    cards = []
    for _, r in top.iterrows():
        shares = [(q, r[f"frac_{q.lower()}"]) for q in QUADRANTS]
        verdict = screening_verdict(r.get("auroc_entropy_dangerous"))
        cards.append(
            f'<div class="answer"><h3>{esc(_config(r))}</h3>'
            f'<p class="big"><b>Dangerous {_num(r["frac_dangerous"], True)}</b> <span class="ci">95% CI '
            f'[{_num(r["frac_dangerous_ci_low"], True)}, {_num(r["frac_dangerous_ci_high"], True)}] of '
            f'{_num(r["n"], digits=0)} samples ({_num(r["n_incomplete"], digits=0)} incomplete)</span></p>'
            + svg.stacked_bar(shares, f"Quadrant shares: {_config(r)}")
            + f'<p class="note">Does confidence screening find the Dangerous samples? <b>{esc(verdict)}</b> '
            f'(AUROC of entropy {_num(r.get("auroc_entropy_dangerous"))})</p></div>')
    note = ('<p class="note"><b>Dangerous</b>: consistent across paraphrases, yet the answer does not depend on '
            'the image. Browse them in the <a href="#explorer">sample explorer</a>.</p>')
    return "<h2>The answer</h2>" + note + svg.legend() + f'<div class="answers">{"".join(cards)}</div>'


def _engine_stats(c: dict) -> dict:
    stats = c.get("engine_cache_stats", c.get("cache_stats"))
    return stats if isinstance(stats, dict) else {}


def run_section(info: dict) -> str:
    """Per-model work counts from run.json: units, requests scored / cached, engine cache hit rates."""
    models = ((info.get("counts") or {}).get("models") or {}) if isinstance(info.get("counts"), dict) else {}
    models = {k: v for k, v in models.items() if isinstance(v, dict)}
    if not models:
        return ""
    extra = sorted({k for c in models.values() for k in _engine_stats(c)})
    headers = ["model", "units", "units skipped", "requests scored", "requests cached", "prediction cache hits",
               "images fetched", "seconds"] + [k.replace("_", " ") for k in extra]
    rows = []
    for name, c in sorted(models.items()):
        scored, cached = c.get("requests_scored") or 0, c.get("requests_cached") or 0
        stats = _engine_stats(c)
        rows.append([esc(name), _num(c.get("units"), digits=0), _num(c.get("units_skipped"), digits=0),
                     _num(scored, digits=0), _num(cached, digits=0),
                     _num(cached / (scored + cached), True) if scored + cached else "–",
                     _num(c.get("images_fetched"), digits=0), _num(c.get("seconds"), digits=1)]
                    + [_num(stats.get(k), "rate" in k) for k in extra])
    note = ('<p class="note">Prediction cache hits: requests answered from the run\'s prediction cache (no engine '
            "call). Engine columns (e.g. prefix / encoder cache hit rates) are the engines' own figures.</p>")
    return "<h2>Work done</h2>" + note + _table(headers, rows)


def report_html(info: dict, summary: pd.DataFrame, doc: dict, quad: pd.DataFrame, errs: pd.DataFrame) -> str:
    """The whole report as one HTML string: the answer first, provenance last."""
    top = summary[summary["finding"].isna()].reset_index(drop=True)
    per = summary[summary["finding"].notna()].reset_index(drop=True)
    run_id = _safe(info).get("run_id") or "(unknown run)"
    sections = [
        status_line(info), answer_section(top), quadrant_section(top), per_quadrant_section(top),
        scatter_section(quad), flip_section(top, doc), paired_section(doc), finding_section(per),
        error_section(errs, doc), explorer_section(quad), run_section(info), provenance_section(info),
    ]
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>vlm_eval report: {esc(run_id)}</title><style>{CSS}{EXPLORER_CSS}</style></head><body>"
            f"<h1>vlm_eval report: {esc(run_id)}</h1>" + "".join(sections) + "</body></html>\n")


def write_report(run_url: str) -> str:
    """Write RUN_URL/report.html from the reduced tables; returns its path/URL."""
    summary_url = storage.join(run_url, "summary.parquet")
    if not storage.exists(summary_url):
        raise InputError(f"{summary_url} not found: run `vlm-eval reduce {run_url}` first")
    summary = pd.read_parquet(io.BytesIO(storage.read_bytes(summary_url)))
    summary["finding"] = summary["finding"].astype(object).where(summary["finding"].notna(), None)
    doc_url = storage.join(run_url, "summary.json")
    doc = storage.read_json(doc_url) if storage.exists(doc_url) else {}
    text = report_html(tables.run_info(run_url), summary, doc, tables.quadrants(run_url), tables.errors(run_url))
    target = storage.join(run_url, "report.html")
    storage.write_bytes_atomic(target, text.encode("utf-8"))
    return target


# Public names for the comparison page (report/compare_html.py): the one place these
# cell formats and the redaction live (H-reduce's minimal edit, issue 12).
safe = _safe
num = _num
ci_cell = _ci
table_html = _table
