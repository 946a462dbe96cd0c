"""The tables of ``vlm-eval compare``: configurations side by side, paired comparisons,
quadrant migration (the HTML page is ``vlm_eval.report.compare_html``).

A *configuration* is one (run, model). Samples of two runs are the same sample only
when their content identity matches: dataset, sample_id, image_uri and question (from
each run's samples/). Two runs over different manifests that reuse a file name and
sample ids are therefore not paired; ``warnings`` says how many ids clash. Quadrants
of runs reduced with different taxonomies (ablation or reliance rule) mean different
things: such configurations are never paired or migrated, and ``warnings`` says so.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import combinations

import pandas as pd
import pyarrow as pa

from vlm_eval import storage
from vlm_eval.errors import InputError
from vlm_eval.layout import RunLayout
from vlm_eval.provenance import redact_text
from vlm_eval.reduce import files, stats, summary, tables
from vlm_eval.schema import QUADRANTS, SAMPLES

STATES = list(QUADRANTS) + ["incomplete", "absent"]
MIGRATION_COLUMNS = ["run_from", "run_to", "model", "dataset", "sample_id", "patient_id", "finding", "label",
                     "quadrant_from", "quadrant_to", "prediction_from", "prediction_to", "margin_from", "margin_to",
                     "ablated_margin_from", "ablated_margin_to"]
IDENTITY = ["dataset", "sample_id", "image_uri", "question"]
_SEP = "\x1f"


@dataclass
class RunData:
    url: str
    label: str
    info: dict
    summary: pd.DataFrame  # summary.json rows with finding null
    quad: pd.DataFrame  # quadrant rows plus ``identity``
    taxonomy: dict = field(default_factory=dict)
    by_content: bool = True  # False: the run has no samples/, identity = dataset + sample_id


def _run_label(url: str, info: dict) -> str:
    return str(info.get("run_id") or os.path.basename(url.rstrip("/")) or url)


def sample_identity(url: str) -> pd.Series | None:
    """sample_id -> content identity (IDENTITY joined) from the run's samples/; None without samples/."""
    found = files.checked_files(RunLayout(url).samples_dir, SAMPLES, ("sample_id",), "samples", key=None)
    if not found:
        return None
    cols = IDENTITY
    table = pa.concat_tables([files.read_file(f, SAMPLES, cols) for f in found]).select(cols)
    df = table.to_pandas().drop_duplicates("sample_id")
    df = df[df["sample_id"].notna()]
    ident = df[cols[0]].fillna("").astype(str)
    for c in cols[1:]:
        ident = ident + _SEP + df[c].fillna("").astype(str)
    return pd.Series(ident.to_numpy(), index=df["sample_id"].to_numpy())


def load_run(url: str) -> RunData:
    """A reduced run's top-level summary rows and quadrant table; InputError if not reduced."""
    layout = RunLayout(url)
    if not storage.exists(layout.summary_json):
        raise InputError(f"{url} has no summary ({layout.summary_json} not found): run `vlm-eval reduce {url}` first")
    doc = storage.read_json(layout.summary_json)
    rows = pd.DataFrame.from_records(doc.get("rows") or [])
    if rows.empty or "model" not in rows:
        raise InputError(f"{layout.summary_json} has no summary rows: run `vlm-eval reduce {url}` first")
    rows = rows[rows["finding"].isna()].reset_index(drop=True)
    rows["model"] = rows["model"].astype(str)
    for col in rows.columns.difference(summary.KEYS):  # summary.json writes NaN as null:
        if rows[col].dtype == object:  # a value column null in some rows comes back as object; numbers, as in summary.parquet
            rows[col] = pd.to_numeric(rows[col])
    info = tables.run_info(url)
    quad = tables.quadrants(url)
    ident = sample_identity(url)
    fallback = quad["dataset"].fillna("").astype(str) + _SEP + quad["sample_id"].fillna("").astype(str)
    mapped = quad["sample_id"].map(ident) if ident is not None else fallback
    quad = quad.assign(identity=mapped.where(mapped.notna(), fallback))
    return RunData(url, _run_label(url, info), info, rows, quad, doc.get("taxonomy") or {}, ident is not None)


def unique_labels(runs: list[RunData]) -> None:
    """run_id when distinct, else the folder name, else folder name + position."""
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):
        labels = [os.path.basename(r.url.rstrip("/")) or r.url for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{lab}#{i + 1}" for i, lab in enumerate(labels)]
    for run, lab in zip(runs, labels):
        run.label = lab


def _taxonomy_text(t: dict) -> str:
    return f"ablation={t.get('ablation')}, reliance={t.get('reliance')}"


def comparable(a: RunData, b: RunData) -> bool:
    """Same taxonomy: their quadrants mean the same thing."""
    return a is b or a.taxonomy == b.taxonomy


def warnings(runs: list[RunData]) -> list[str]:
    """What makes parts of this comparison not comparable, in plain words."""
    out = []
    taxes = {r.label: _taxonomy_text(r.taxonomy) for r in runs}
    if len(set(taxes.values())) > 1:
        listed = "; ".join(f"{k}: {v}" for k, v in taxes.items())
        out.append(f"runs were reduced with different taxonomies ({listed}): their quadrants mean different "
                   "things, so they are not paired or migrated (reduce them with one taxonomy to compare)")
    for r in runs:
        if not r.by_content:
            out.append(f"{r.label} has no samples/: its samples are matched by dataset and sample_id only")
    for a, b in combinations(runs, 2):
        ka = a.quad.drop_duplicates("sample_id").set_index(["dataset", "sample_id"])["identity"]
        kb = b.quad.drop_duplicates("sample_id").set_index(["dataset", "sample_id"])["identity"]
        common = ka.index.intersection(kb.index)
        clash = int((ka.loc[common] != kb.loc[common]).sum()) if len(common) else 0
        if clash:
            out.append(f"{clash} samples of {a.label} and {b.label} share dataset and sample_id but not image_uri or "
                       "question: they are different samples and are not paired")
    return out


def config_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per run x model x dataset: run, run_url, taxonomy, then the summary columns."""
    frames = [r.summary.assign(run=r.label, run_url=redact_text(r.url), taxonomy=_taxonomy_text(r.taxonomy))
              for r in runs]
    table = pd.concat(frames, ignore_index=True)
    first = ["run", "run_url", "model", "dataset"]
    return table[first + [c for c in table.columns if c not in first]]


def by_config(runs: list[RunData]) -> list[tuple[RunData, str, pd.DataFrame]]:
    """(run, model, that model's quadrant rows) for every configuration."""
    out = []
    for r in runs:  # one step per run, then per model of its summary
        for model in sorted(r.summary["model"].dropna().unique()):
            out.append((r, model, r.quad[r.quad["model"] == model]))
    return out


def paired_table(runs: list[RunData], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every two comparable configurations on each dataset they share, on the samples with
    one content identity (pairs with no common complete sample are left out)."""
    records = []
    for (ra, ma, qa), (rb, mb, qb) in combinations(by_config(runs), 2):
        if not comparable(ra, rb):
            continue
        for dataset in sorted(set(qa["dataset"].dropna()) & set(qb["dataset"].dropna())):
            a = qa[qa["dataset"] == dataset].assign(sample_id=lambda f: f["identity"])
            b = qb[qb["dataset"] == dataset].assign(sample_id=lambda f: f["identity"])
            res = stats.paired_comparison(a, b, n_boot, stats.seed_for(seed, ra.label, ma, rb.label, mb, dataset))
            if res["n"]:
                records.append({"run_a": ra.label, "model_a": ma, "run_b": rb.label, "model_b": mb,
                                "dataset": dataset, **res})
    cols = ["run_a", "model_a", "run_b", "model_b", "dataset", "n"]
    return pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=cols)


def _states(q: pd.DataFrame) -> pd.DataFrame:
    keep = ["identity", "dataset", "sample_id", "patient_id", "finding", "label", "quadrant", "prediction", "margin",
            "ablated_margin"]
    out = q[keep].copy()
    out["state"] = out["quadrant"].where(q["complete"].eq(True), "incomplete")
    out["state"] = out["state"].where(out["state"].notna(), "incomplete")  # complete, consistency not measured
    return out.drop(columns="quadrant")


def migration(runs: list[RunData]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(counts, moved) between every two comparable runs i < j for each model both ran.

    counts: run_from, run_to, model, quadrant_from, quadrant_to, n (every sample of
    either run, so the counts add up); moved: MIGRATION_COLUMNS, one row per sample
    present in both runs (same content identity) whose state changed.
    """
    counts, moved = [], []
    for a, b in combinations(runs, 2):
        if not comparable(a, b):
            continue
        for model in sorted(set(a.summary["model"].dropna()) & set(b.summary["model"].dropna())):
            sa, sb = _states(a.quad[a.quad["model"] == model]), _states(b.quad[b.quad["model"] == model])
            j = sa.merge(sb, on="identity", how="outer", suffixes=("_from", "_to"))
            j["quadrant_from"] = j.pop("state_from").fillna("absent")
            j["quadrant_to"] = j.pop("state_to").fillna("absent")
            for col in ("dataset", "sample_id", "patient_id", "finding", "label"):
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
