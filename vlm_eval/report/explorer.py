"""The report's sample explorer: a sortable, filterable table of every sample.

Self-contained: the rows are embedded as JSON in a ``<script type="application/json">``
block (``<``, ``>``, ``&`` and line separators escaped, so no text from a model or a
dataset can close the block), and a small inline script builds the table with
``textContent`` only (never ``innerHTML`` from data). No pixels, no prompt or
question text, no patient ids, no image URIs: per sample only model, dataset,
sample id, quadrant, finding, label, prediction, margins with and without the
image, flips and entropy.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from vlm_eval.report.svg import QUADRANT_COLORS, esc
from vlm_eval.schema import QUADRANTS

MAX_ROWS = 20_000  # embedded rows per report; Dangerous rows are kept first
SHOWN_ROWS = 1_000  # rows drawn at once (the count says how many match)
COLUMNS = [  # (key, header, numeric)
    ("model", "model", False), ("dataset", "dataset", False), ("sample_id", "sample", False),
    ("quadrant", "quadrant", False), ("finding", "finding", False), ("label", "label", False),
    ("prediction", "prediction", False), ("margin", "margin with image", True),
    ("ablated_margin", "margin without image", True), ("flips", "flips", True), ("entropy", "entropy (bits)", True),
]
INCOMPLETE = "incomplete"

CSS = """
.explorer .controls{display:flex;gap:12px;align-items:center;flex-wrap:wrap;font-size:13px;margin:8px 0}
.explorer table{width:100%}.explorer th{cursor:pointer;user-select:none;white-space:nowrap}
.explorer th[data-dir=asc]::after{content:" \\25B2"}.explorer th[data-dir=desc]::after{content:" \\25BC"}
.explorer td.q{font-weight:bold;color:#fff;text-align:left}.explorer .wrap{max-height:640px;overflow:auto}
"""

SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById('samples-data').textContent);
  const cols = data.columns, rows = data.rows, colors = data.colors, limit = data.shown;
  const qSel = document.getElementById('f-quadrant'), mSel = document.getElementById('f-model');
  const text = document.getElementById('f-text'), body = document.querySelector('#samples tbody');
  const count = document.getElementById('f-count');
  let sortKey = null, sortDir = 1;
  const idx = Object.fromEntries(cols.map((c, i) => [c.key, i]));
  function cmp(a, b) {
    const x = a[idx[sortKey]], y = b[idx[sortKey]];
    if (x === null || x === undefined) return (y === null || y === undefined) ? 0 : 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : x > y ? 1 : 0) * sortDir;
  }
  function render() {
    const q = qSel.value, m = mSel.value, t = text.value.trim().toLowerCase();
    let out = rows.filter(r => (!q || r[idx.quadrant] === q) && (!m || r[idx.model] === m) &&
      (!t || String(r[idx.finding] || '').toLowerCase().includes(t) ||
       String(r[idx.sample_id] || '').toLowerCase().includes(t)));
    if (sortKey) out = out.slice().sort(cmp);
    const frag = document.createDocumentFragment();
    for (const r of out.slice(0, limit)) {
      const tr = document.createElement('tr');
      tr.dataset.model = r[idx.model]; tr.dataset.sample = r[idx.sample_id]; tr.dataset.quadrant = r[idx.quadrant];
      cols.forEach((c, i) => {
        const td = document.createElement('td'), v = r[i];
        td.textContent = v === null || v === undefined ? '\\u2013' : (c.numeric && typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(3) : String(v));
        if (!c.numeric) td.className = 'k';
        if (c.key === 'quadrant' && colors[v]) { td.className = 'q'; td.style.background = colors[v]; }
        tr.appendChild(td);
      });
      frag.appendChild(tr);
    }
    body.replaceChildren(frag);
    count.textContent = out.length + ' of ' + rows.length + ' samples' +
      (out.length > limit ? ' (first ' + limit + ' shown: narrow the filter)' : '');
  }
  document.querySelectorAll('#samples th').forEach(th => th.addEventListener('click', () => {
    const key = th.dataset.key;
    sortDir = sortKey === key ? -sortDir : 1; sortKey = key;
    document.querySelectorAll('#samples th').forEach(h => h.removeAttribute('data-dir'));
    th.dataset.dir = sortDir > 0 ? 'asc' : 'desc';
    render();
  }));
  [qSel, mSel].forEach(el => el.addEventListener('change', render));
  text.addEventListener('input', render);
  render();
})();
"""


def _value(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(v, "item"):
        v = v.item()
    return round(v, 4) if isinstance(v, float) else v


def _rows(quad: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows to embed (every sample up to MAX_ROWS, Dangerous first) and the total count."""
    df = quad.copy()
    complete = df["complete"].eq(True) if "complete" in df else pd.Series(True, index=df.index)
    df["quadrant"] = df["quadrant"].where(complete & df["quadrant"].notna(), INCOMPLETE)
    total = len(df)
    if total > MAX_ROWS:
        order = df["quadrant"].ne("Dangerous").astype(int)
        df = df.assign(_o=order).sort_values(["_o", "model", "sample_id"], kind="stable").head(MAX_ROWS)
    return df.sort_values(["model", "dataset", "sample_id"], kind="stable"), total


def data_json(quad: pd.DataFrame) -> tuple[str, int, int]:
    """(escaped JSON for the data block, rows embedded, rows in total)."""
    df, total = _rows(quad)
    keys = [k for k, _, _ in COLUMNS]
    for k in keys:
        if k not in df:
            df[k] = None
    rows = [[_value(v) for v in rec] for rec in df[keys].itertuples(index=False, name=None)]
    doc = {"columns": [{"key": k, "header": h, "numeric": n} for k, h, n in COLUMNS], "rows": rows,
           "colors": QUADRANT_COLORS, "shown": SHOWN_ROWS}
    text = json.dumps(doc, allow_nan=False, ensure_ascii=True, separators=(",", ":"))
    # Nothing inside may end the <script> block or open markup.
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text, len(rows), total


def explorer_section(quad: pd.DataFrame) -> str:
    if quad is None or quad.empty:
        return '<h2 id="explorer">Sample explorer</h2><p class="note">No samples in the quadrant tables.</p>'
    text, shown, total = data_json(quad)
    models = sorted({str(m) for m in quad["model"].dropna()})
    quadrant_opts = "".join(f'<option value="{esc(q)}">{esc(q)}</option>' for q in (*QUADRANTS, INCOMPLETE))
    model_opts = "".join(f'<option value="{esc(m)}">{esc(m)}</option>' for m in models)
    head = "".join(f'<th class="{"" if n else "k"}" data-key="{esc(k)}">{esc(h)}</th>' for k, h, n in COLUMNS)
    note = ("Every sample of every model: click a column to sort, filter by quadrant, model, or a finding / "
            "sample id. Margins are log P(yes) - log P(no) of the first prompt, with the image and under the "
            "ablation; flips = paraphrases answering differently from the first. No images or prompt text.")
    if shown < total:
        note += (f" This report embeds {shown} of {total} rows (all Dangerous rows first); the full table is "
                 "in quadrants/.")
    return (
        f'<h2 id="explorer">Sample explorer</h2><div class="explorer"><p class="note">{esc(note)}</p>'
        '<div class="controls"><label>quadrant <select id="f-quadrant"><option value="">all</option>'
        f'{quadrant_opts}</select></label><label>model <select id="f-model"><option value="">all</option>'
        f'{model_opts}</select></label><label>finding / sample <input id="f-text" type="search"></label>'
        '<span id="f-count"></span></div>'
        f'<div class="wrap"><table id="samples"><thead><tr>{head}</tr></thead><tbody></tbody></table></div></div>'
        f'<script type="application/json" id="samples-data">{text}</script><script>{SCRIPT}</script>'
    )
