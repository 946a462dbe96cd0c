"""``vlm-eval compare``: several runs (or several models of a run) side by side.

The tables are built by ``vlm_eval.reduce.compare_tables`` (configurations, paired
comparisons on samples with one content identity, quadrant migration, warnings when
runs are not comparable), the page by ``vlm_eval.report.compare_html``; this module
prints the text report and writes the outputs.

With ``output``: comparison.parquet (the side-by-side table), migration.parquet
(the moved samples), comparison.json (everything, ``warnings`` included) and a
self-contained comparison.html. Pure pandas/numpy; imports no engine, no Ray.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa

from vlm_eval import storage
from vlm_eval.errors import InputError
from vlm_eval.reduce import stats
from vlm_eval.reduce.compare_tables import (MIGRATION_COLUMNS, STATES, RunData, config_table, crosstab, load_run,
                                            migration, paired_table, unique_labels, warnings)
from vlm_eval.report.compare_html import comparison_html
from vlm_eval.report.html import num, safe
from vlm_eval.schema import QUADRANTS

__all__ = ["MIGRATION_COLUMNS", "STATES", "RunData", "compare_runs", "comparison_html", "crosstab", "load_run",
           "migration", "paired_table", "text_report"]
_INTS = {"n", "n_incomplete", "n_errors", "n_labelled", "n_paired", "n_from", "n_to", "n_auroc_excluded",
         "n_single_variant"}


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
    return f"{num(row[col], True)} [{num(row.get(f'{col}_ci_low'), True)}, {num(row.get(f'{col}_ci_high'), True)}]"


def _measured(v) -> str:
    text = num(v, True)
    return "not measured" if text == "–" else text


def text_report(configs: pd.DataFrame, paired: pd.DataFrame, counts: pd.DataFrame, moved: pd.DataFrame, corr: dict,
                warns: list[str] | None = None) -> str:
    side = pd.DataFrame({"run": configs["run"], "model": configs["model"], "dataset": configs["dataset"],
                         "n": configs["n"].map(lambda v: num(v, digits=0))})
    for q in QUADRANTS:
        side[q] = [_share(r, f"frac_{q.lower()}") for _, r in configs.iterrows()]
    side["flip q"] = configs["flip_rate_question"].map(_measured)
    side["flip pair"] = configs["flip_rate_pair"].map(_measured)
    side["accuracy"] = configs["accuracy"].map(lambda v: num(v, True))
    side["AUROC H"] = configs.get("auroc_entropy_dangerous", pd.Series(np.nan, configs.index)).map(num)
    side["AUROC -|m|"] = configs.get("auroc_abs_margin_dangerous", pd.Series(np.nan, configs.index)).map(num)
    out = [f"WARNING: {w}" for w in warns or []] + (["" ] if warns else [])
    out += ["Configurations (quadrant shares of complete samples, 95% CI; AUROC = entropy / -|margin| as a "
           "detector of Dangerous samples, 0.5 = chance):", side.to_string(index=False), ""]
    out.append("Paired comparisons (A vs B on the same complete samples; McNemar on flips):")
    if paired.empty:
        out.append("  (no two comparable configurations share complete samples)")
    else:
        p = pd.DataFrame({
            "A": paired["run_a"] + ":" + paired["model_a"], "B": paired["run_b"] + ":" + paired["model_b"],
            "dataset": paired["dataset"], "n": paired["n"],
            "Dangerous A-B [95% CI]": [f"{num(r.diff_dangerous, True)} [{num(r.diff_dangerous_ci_low, True)}, "
                                       f"{num(r.diff_dangerous_ci_high, True)}]" for r in paired.itertuples()],
            "flips A only/B only": paired["flips_a_only"].astype(str) + "/" + paired["flips_b_only"].astype(str),
            "McNemar p": paired["mcnemar_flips_p_exact"].map(lambda v: num(v, digits=4)),
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
               f"{num(corr['r_question'])} (question level), {num(corr['r_pair'])} (pair level)")
    return "\n".join(out)


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
    unique_labels(runs)
    configs = config_table(runs)
    n_configs = len(configs[["run", "model"]].drop_duplicates())
    if n_configs < 2:
        raise InputError(f"compare needs at least two configurations (run x model), got {n_configs}: "
                         "give two or more runs, or a run with several models")
    paired = paired_table(runs, n_boot, seed)
    counts, moved = migration(runs)
    corr = stats.flip_vs_dangerous(configs)
    warns = warnings(runs)
    text = text_report(configs, paired, counts, moved, corr, warns)
    if output:
        storage.write_parquet_atomic(_arrow(configs), storage.join(output, "comparison.parquet"))
        storage.write_parquet_atomic(_arrow(moved), storage.join(output, "migration.parquet"))
        doc = {"runs": [{"label": r.label, "url": safe(r.url), "run_id": r.info.get("run_id"), "taxonomy": r.taxonomy}
                        for r in runs], "warnings": warns,
               "configurations": _records(configs), "paired": _records(paired), "migration_counts": _records(counts),
               "n_moved": int(len(moved)), "flip_vs_dangerous": json.loads(pd.Series([corr]).to_json(orient="records"))[0],
               "n_boot": n_boot, "seed": seed}
        storage.write_json_atomic(doc, storage.join(output, "comparison.json"))
        page = comparison_html(runs, configs, paired, counts, moved, corr, warns)
        storage.write_bytes_atomic(storage.join(output, "comparison.html"), page.encode("utf-8"))
        text += f"\n\nwrote comparison.parquet, migration.parquet, comparison.json, comparison.html to {output}"
    return text
