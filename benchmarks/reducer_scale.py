"""Reducer at scale: 1 M and 10 M synthetic prediction rows -> quadrants + summary.

    python benchmarks/reducer_scale.py            # 1 M and 10 M rows (+ groupby-apply on 200 k)
    python benchmarks/reducer_scale.py --quick    # 200 k and 1 M rows
    python benchmarks/reducer_scale.py --rows 1e7 3e7 --one-pass   # + the one-pass reduce side by side
    python benchmarks/reducer_scale.py --profile  # + cProfile of reduce_run at the smallest size
    python benchmarks/reducer_scale.py --rows 1e7 3e7 --no-naive --lock /tmp/team/bench.lock
        # the 10 M child under flock (timed), the 30 M one beside it (memory only)

``reduce_run`` reduces by buckets of samples (``vlm_eval.reduce.partition``: K from the
row count, ~1.5 M prediction rows per bucket) so its peak memory stays bounded;
``--one-pass`` also runs it with ``buckets=1`` (everything at once, as before) at each
size and prints both side by side. Targets (issue 13.7): 10 M rows <= 30 s and <= 3 GB
peak RSS; 30 M rows <= 3 GB.

Each size is written as a real run folder (samples/ + predictions/model=m/shard-*.parquet +
run.json), MIMIC-like: 14 CheXpert findings per image, 6 prompt variants, conditions image +
text_only with the text-only rows stored once per prompt_id (sample_id null), ~0.01 % error
rows. ``vlm_eval.reduce.reduce_run`` (quadrants + summary with bootstrap CIs) then runs in a
fresh subprocess that reports its own time and peak RSS (``ru_maxrss``).

The naive way: ``pd.read_parquet`` + merge of the text-only rows by prompt_id + a pandas
``groupby("sample_id").apply(python_function)`` computing the same per-sample quadrant.
It is timed on a smaller run (``--naive-rows``, default 200 k) and extrapolated linearly
per row to the larger sizes (said so in the output); both are run on that smaller run and
their quadrants are compared sample by sample.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

N_FINDINGS = 14
SHARD_SAMPLES = 4096  # samples per prediction shard (a real run: batch_size per shard)
ERROR_RATE = 1e-4


def mimic_prompts(n_variants: int):
    """(findings, prompts[f][v], prompt_ids[f][v]) from the built-in set, MIMIC's 14 labels."""
    from vlm_eval.config import DEFAULT_SYSTEM
    from vlm_eval.datasets._chexpert_labels import COLUMN_OF
    from vlm_eval.prompts import load_prompt_set, prompt_id

    pset = load_prompt_set("cxr-binary-v1")
    findings = list(COLUMN_OF)[:N_FINDINGS]
    prompts = [pset.variants(pset.question_for(f), f, n_variants - 1) for f in findings]
    ids = [[prompt_id(DEFAULT_SYSTEM, p) for p in ps] for ps in prompts]
    return findings, prompts, ids


def _attempt(n: int) -> dict:
    """The shard's ``attempt`` column (run.json attempt 1) where the schema has one."""
    import pyarrow as pa
    from vlm_eval.schema import PREDICTIONS_FILE
    return {"attempt": pa.array([1] * n, pa.int64())} if "attempt" in PREDICTIONS_FILE.names else {}


def write_run(root: str, n_rows: int, n_variants: int = 6, seed: int = 0) -> dict:
    """A run folder with ~n_rows prediction rows; returns its shape."""
    import hashlib
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from vlm_eval.schema import PREDICTIONS_FILE, SAMPLES
    findings, prompts, pids = mimic_prompts(n_variants)
    n_text = N_FINDINGS * n_variants
    n_samples = max(N_FINDINGS, (n_rows - n_text) // n_variants)
    n_images = -(-n_samples // N_FINDINGS)
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "samples"))
    pred_dir = os.path.join(root, "predictions", "model=m")
    os.makedirs(pred_dir)

    sample_ids = pa.array([f"mimic-{i:09d}" for i in range(n_samples)], pa.string())
    img_idx = np.arange(n_samples) // N_FINDINGS
    fin_idx = np.arange(n_samples) % N_FINDINGS
    shas = pa.array([hashlib.sha256(f"img{j}".encode()).hexdigest() for j in range(n_images)], pa.string())
    flat_prompts = pa.array([p for ps in prompts for p in ps], pa.string())
    flat_pids = pa.array([p for ps in pids for p in ps], pa.string())
    findings_arr = pa.array(findings, pa.string())
    labels = np.where(rng.random(n_samples) < 0.3, "yes", "no")
    offsets = pa.array(np.arange(0, n_samples * n_variants + 1, n_variants, dtype=np.int32))
    prompt_take = (fin_idx[:, None] * n_variants + np.arange(n_variants)[None, :]).ravel()
    samples = pa.table({
        "sample_id": sample_ids,
        "dataset": pa.array(["mimic_cxr"] * n_samples, pa.string()),
        "image_uri": pa.array([f"s3://b/mimic/files/{j:07d}.jpg" for j in range(n_images)]).take(pa.array(img_idx)),
        "question_id": pa.array([f"cxr-binary-v1:{f}" for f in findings]).take(pa.array(fin_idx)),
        "question": pa.array([ps[0] for ps in prompts]).take(pa.array(fin_idx)),
        "prompts": pa.ListArray.from_arrays(offsets, flat_prompts.take(pa.array(prompt_take))),
        "label": pa.array(labels, pa.string()),
        "patient_id": pa.array([f"p{j // 3:08d}" for j in range(n_images)]).take(pa.array(img_idx)),
        "study_id": pa.array([f"st{j:08d}" for j in range(n_images)]).take(pa.array(img_idx)),
        "finding": findings_arr.take(pa.array(fin_idx)),
        "split": pa.array(["test"] * n_samples, pa.string()),
        "swap_image_uri": pa.nulls(n_samples, pa.string()),
    }, schema=SAMPLES)
    pq.write_table(samples, os.path.join(root, "samples", "part-00000.parquet"))

    # Margins: a per-sample base (image evidence) + per-variant noise; text-only per prompt.
    base = rng.normal(0.0, 2.0, n_samples)
    text_margin = rng.normal(-0.5, 2.0, n_text)
    shard = 0
    n_pred = 0
    for start in range(0, n_samples, SHARD_SAMPLES):
        stop = min(n_samples, start + SHARD_SAMPLES)
        k = stop - start
        s_rep = np.repeat(np.arange(start, stop), n_variants)
        var = np.tile(np.arange(n_variants, dtype=np.int32), k)
        m = base[s_rep] + rng.normal(0.0, 1.0, k * n_variants)
        lp_yes = -np.logaddexp(0.0, -m)
        lp_no = -np.logaddexp(0.0, m)
        err = rng.random(k * n_variants) < ERROR_RATE
        table = pa.table({
            "sample_id": sample_ids.take(pa.array(s_rep)),
            "variant": pa.array(var, pa.int32()),
            "condition": pa.array(["image"] * (k * n_variants), pa.string()),
            "prompt_id": flat_pids.take(pa.array(fin_idx[s_rep] * n_variants + var)),
            "logprob_yes": pa.array(np.where(err, np.nan, lp_yes), pa.float64(), from_pandas=True),
            "logprob_no": pa.array(np.where(err, np.nan, lp_no), pa.float64(), from_pandas=True),
            "other_mass": pa.array(rng.uniform(0, 0.05, k * n_variants)),
            "image_sha256": shas.take(pa.array(img_idx[s_rep])),
            "error": pa.array(np.where(err, "RuntimeError: planted", None), pa.string()),
            **_attempt(k * n_variants),
        }, schema=PREDICTIONS_FILE)
        pq.write_table(table, os.path.join(pred_dir, f"shard-s{shard:06d}.parquet"))
        shard += 1
        n_pred += table.num_rows
    text = pa.table({
        "sample_id": pa.nulls(n_text, pa.string()),
        "variant": pa.nulls(n_text, pa.int32()),
        "condition": pa.array(["text_only"] * n_text, pa.string()),
        "prompt_id": flat_pids,
        "logprob_yes": pa.array(-np.logaddexp(0.0, -text_margin)),
        "logprob_no": pa.array(-np.logaddexp(0.0, text_margin)),
        "other_mass": pa.array(np.zeros(n_text)),
        "image_sha256": pa.nulls(n_text, pa.string()),
        "error": pa.nulls(n_text, pa.string()),
        **_attempt(n_text),
    }, schema=PREDICTIONS_FILE)
    pq.write_table(text, os.path.join(pred_dir, "shard-t00000.parquet"))
    n_pred += n_text
    with open(os.path.join(root, "run.json"), "w") as f:
        json.dump({"run_id": "bench", "status": "succeeded",
                   "job": {"models": [{"name": "m"}], "taxonomy": {"ablation": "text_only", "reliance": "original"},
                           "conditions": ["image", "text_only"]}}, f)
    return {"rows": n_pred, "samples": n_samples, "images": n_images, "shards": shard + 1,
            "bytes_on_disk": sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(root) for fn in fns)}


def naive_quadrants(run_dir: str):
    """The straightforward pandas way: merge, then groupby-apply a Python function per sample."""
    import numpy as np
    import pandas as pd

    samples = pd.read_parquet(os.path.join(run_dir, "samples"))
    preds = pd.read_parquet(os.path.join(run_dir, "predictions"))
    img = preds[preds["condition"] == "image"]
    txt = preds[preds["condition"] == "text_only"][["prompt_id", "logprob_yes", "logprob_no", "error"]]
    df = img.merge(txt, on="prompt_id", how="left", suffixes=("", "_txt"))
    n_var = samples.set_index("sample_id")["prompts"].map(len).rename("n_variants")
    df = df.join(n_var, on="sample_id")

    def per_sample(g: pd.DataFrame) -> pd.Series:
        g = g.sort_values("variant")
        n = g["n_variants"].iloc[0]
        ok = g["error"].isna() & g["logprob_yes"].notna() & g["error_txt"].isna() & g["logprob_yes_txt"].notna()
        complete = len(g) == n and bool(ok.all())
        yes = (g["logprob_yes"] - g["logprob_no"]) > 0
        txt_yes = (g["logprob_yes_txt"] - g["logprob_no_txt"]) > 0
        if not complete:
            return pd.Series({"complete": False, "quadrant": None})
        consistent = yes.nunique() == 1
        reliant = bool(yes.iloc[0] != txt_yes.iloc[0])
        quadrant = ("Ideal" if reliant else "Dangerous") if consistent else ("Fragile" if reliant else "Worst")
        return pd.Series({"complete": True, "quadrant": quadrant})

    quad = df.groupby("sample_id").apply(per_sample)
    quad = quad.reindex(samples["sample_id"])  # samples with no rows at all -> incomplete
    quad["complete"] = quad["complete"].fillna(False).astype(bool)
    quad = quad.join(samples.set_index("sample_id")[["finding"]])
    shares = quad[quad["complete"]].groupby("finding")["quadrant"].value_counts(normalize=True)
    del shares, np
    return quad


def _child(kind: str, run_dir: str, profile_out: str | None, buckets: int | None = None) -> None:
    C.quiet_logs()
    t_import = time.perf_counter()
    import pandas  # noqa: F401

    from vlm_eval.reduce import reduce_run

    t_import = time.perf_counter() - t_import
    rss0 = C.peak_rss_mib()
    load = os.getloadavg()[0]  # when this child starts (after any wait for --lock)
    prof = None
    if profile_out:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    k = None
    if kind == "reduce":  # the bucket count reduce_run will choose (outside the timed part)
        from vlm_eval.reduce import files, partition

        found = files.prediction_files(os.path.join(run_dir, "predictions"))
        k = buckets or partition.n_buckets(sum(max(f.rows, 0) for f in found))
    t0 = time.perf_counter()
    if kind == "reduce":
        res = reduce_run(run_dir, buckets=buckets)
        extra = {"complete": sum(m["complete"] for m in res["models"].values()), "buckets": k}
    else:
        quad = naive_quadrants(run_dir)
        quad.reset_index()[["sample_id", "complete", "quadrant"]].to_parquet(os.path.join(run_dir, "naive.parquet"))
        extra = {"complete": int(quad["complete"].sum())}
    seconds = time.perf_counter() - t0
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile_out)
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": seconds, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mib": C.own_peak_rss_mib(),
                      "rss_after_import_mib": rss0, "load_avg_1m": load,
                      "import_s": t_import, **extra}))


def run_child(kind: str, run_dir: str, profile_out: str | None = None, timeout: float = 3600,
              buckets: int | None = None, lock: str | None = None) -> dict:
    cmd = (["flock", lock] if lock else []) + [sys.executable, os.path.abspath(__file__), "--_child", kind, run_dir]
    if buckets:
        cmd += ["--_buckets", str(buckets)]
    if profile_out:
        cmd += ["--_profile", profile_out]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed ({out.returncode}):\n{out.stderr[-4000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_wall_s"] = wall
    return res


def compare(run_dir: str) -> dict:
    import pandas as pd

    ours = pd.read_parquet(os.path.join(run_dir, "quadrants"))[["sample_id", "complete", "quadrant"]]
    naive = pd.read_parquet(os.path.join(run_dir, "naive.parquet"))
    j = ours.merge(naive, on="sample_id", suffixes=("_ours", "_naive"), how="outer", indicator=True)
    both = j["_merge"] == "both"
    same_complete = (j["complete_ours"] == j["complete_naive"]) & both
    q_ours = j["quadrant_ours"].astype(object).where(j["quadrant_ours"].notna(), None)
    q_naive = j["quadrant_naive"].astype(object).where(j["quadrant_naive"].notna(), None)
    same_q = same_complete & ((q_ours == q_naive) | (q_ours.isna() & q_naive.isna()))
    return {"samples_compared": int(len(j)), "only_in_one": int((~both).sum()),
            "complete_mismatch": int((~same_complete & both).sum()), "quadrant_mismatch": int((~same_q).sum()),
            "identical": bool(same_q.all())}


def profile_summary(path: str, top: int = 18) -> list[dict]:
    import pstats

    st = pstats.Stats(path)
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _) in st.stats.items():
        rows.append({"function": f"{os.path.basename(file)}:{line}({func})", "tottime_s": tt, "cumtime_s": ct,
                     "calls": nc})
    by_tot = sorted(rows, key=lambda r: -r["tottime_s"])[:top]
    mine = [r for r in rows if "vlm_eval" in r["function"] or any(
        s in r["function"] for s in ("metrics.py", "tables.py", "summary.py", "stats.py", "run.py", "storage.py"))]
    by_cum = sorted(mine, key=lambda r: -r["cumtime_s"])[:top]
    return {"by_tottime": by_tot, "by_cumtime_vlm_eval": by_cum}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 k and 1 M rows")
    ap.add_argument("--rows", type=float, nargs="+", help="prediction-row counts (default 1e6 1e7)")
    ap.add_argument("--naive-rows", type=float, default=None, help="rows of the groupby-apply run (default 2e5, quick 5e4)")
    ap.add_argument("--variants", type=int, default=6)
    ap.add_argument("--profile", action="store_true", help="cProfile reduce_run at the smallest size")
    ap.add_argument("--workdir", default=None, help="where run folders go (default: a temp dir, removed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--one-pass", action="store_true", help="also reduce each size with buckets=1 (side by side)")
    ap.add_argument("--no-naive", action="store_true", help="skip the groupby-apply comparison run")
    ap.add_argument("--lock", default=None, help="run each timed reduce child under `flock LOCK` (a shared box)")
    ap.add_argument("--lock-rows", type=float, default=15e6, help="only sizes up to this under --lock (default 15 M)")
    ap.add_argument("--keep-tables", default=None, help="keep each size's quadrants/ and summary under DIR/rows-N")
    ap.add_argument("--_profile", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_buckets", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        _child(args._child[0], args._child[1], args._profile, args._buckets)
        return

    m = C.machine()
    C.print_machine(m)
    sizes = [int(x) for x in (args.rows or ([2e5, 1e6] if args.quick else [1e6, 1e7]))]
    naive_rows = int(args.naive_rows or (5e4 if args.quick else 2e5))
    work = args.workdir or tempfile.mkdtemp(prefix="vlm-eval-reducer-bench-")
    os.makedirs(work, exist_ok=True)
    rows_out: list[dict] = []
    notes: list[str] = []
    profile = None
    agree, naive_per_row = None, None
    try:
        if not args.no_naive:  # 1) groupby-apply vs reduce_run on a small run; check they agree.
            small = os.path.join(work, f"run-{naive_rows}")
            shutil.rmtree(small, ignore_errors=True)
            shape = write_run(small, naive_rows, args.variants, args.seed)
            print(f"\n[{naive_rows:,} rows] written: {shape}")
            ours_s = run_child("reduce", small)
            naive_s = run_child("naive", small)
            agree = compare(small)
            print(f"[{naive_rows:,} rows] reduce_run {ours_s['seconds']:.2f} s, groupby-apply {naive_s['seconds']:.2f} s; "
                  f"quadrants identical: {agree['identical']} ({agree})")
            naive_per_row = naive_s["seconds"] / shape["rows"]
            shutil.rmtree(small, ignore_errors=True)
        for i, n in enumerate(sizes):  # 2) the large sizes: partitioned (and one-pass) reduce_run measured
            d = os.path.join(work, f"run-{n}")
            shutil.rmtree(d, ignore_errors=True)
            t0 = time.perf_counter()
            shape = write_run(d, n, args.variants, args.seed)
            print(f"\n[{n:,} rows] written in {time.perf_counter() - t0:.1f} s: {shape}")
            locked = bool(args.lock) and shape["rows"] <= args.lock_rows
            load = os.getloadavg()[0]
            res = run_child("reduce", d, lock=args.lock if locked else None)
            one = run_child("reduce", d, buckets=1) if args.one_pass else None
            naive_est = naive_per_row * shape["rows"] if naive_per_row else None
            print(f"[{n:,} rows] reduce_run ({res['buckets']} buckets) {res['seconds']:.1f} s, peak RSS "
                  f"{res['peak_rss_mib']:.0f} MiB" + (f"; one pass {one['seconds']:.1f} s, peak RSS "
                                                      f"{one['peak_rss_mib']:.0f} MiB" if one else ""))
            rows_out.append({"rows": shape["rows"], "samples": shape["samples"], "buckets": res["buckets"],
                             "locked": locked, "load_avg_1m_at_start": res.get("load_avg_1m", load),
                             "reduce_run_s": res["seconds"], "reduce_cpu_s": res.get("cpu_s"),
                             "reduce_peak_rss_mib": res["peak_rss_mib"],
                             "one_pass_s": one["seconds"] if one else None,
                             "one_pass_peak_rss_mib": one["peak_rss_mib"] if one else None,
                             "memory_ratio_one_pass_vs_buckets": (one["peak_rss_mib"] / res["peak_rss_mib"]) if one else None,
                             "groupby_apply_s_extrapolated": naive_est,
                             "speedup_vs_groupby_apply": naive_est / res["seconds"] if naive_est else None,
                             "rows_per_s": shape["rows"] / res["seconds"]})
            if args.profile and i == 0:
                pf = os.path.join(work, "reduce.prof")
                run_child("reduce", d, profile_out=pf)
                profile = profile_summary(pf)
            if args.keep_tables:  # quadrants/ + summary of each size, e.g. to compare two commits' tables
                os.makedirs(os.path.join(args.keep_tables, f"rows-{n}"), exist_ok=True)
                for name in ("quadrants", "summary.parquet", "summary.json"):
                    shutil.move(os.path.join(d, name), os.path.join(args.keep_tables, f"rows-{n}", name))
            shutil.rmtree(d, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(C.table(rows_out, ["rows", "samples", "buckets", "locked", "reduce_run_s", "reduce_cpu_s", "reduce_peak_rss_mib", "one_pass_s",
                             "one_pass_peak_rss_mib", "memory_ratio_one_pass_vs_buckets", "speedup_vs_groupby_apply",
                             "rows_per_s"]))
    if agree is not None:
        notes.append(f"groupby-apply measured on {naive_rows:,} rows and extrapolated linearly per row to the "
                     f"larger sizes; quadrants of reduce_run vs groupby-apply there: {agree}")
    notes.append("reduce_run includes reading, dedup, quadrants, summary with 1000 bootstrap resamples and "
                 "writing quadrants/ + summary; timed inside a fresh process (imports excluded); peak RSS is "
                 "that process's own VmHWM (ru_maxrss would count the parent's RSS at fork/exec); reduce_cpu_s is its user+system CPU time including imports "
                 "(on a shared machine wall time also counts waiting for a core).")
    if args.lock:
        notes.append(f"children of <= {args.lock_rows:,.0f} rows ran under `flock {args.lock}` (their seconds are "
                     "comparable); larger ones beside it: their memory is measured, their seconds are not")
    targets = []
    ten = next((r for r in rows_out if 9_000_000 <= r["rows"] < 20_000_000), None)
    thirty = next((r for r in rows_out if r["rows"] >= 29_000_000), None)
    targets.append(C.target("reduce 10 M rows in <= 30 s", ten["reduce_run_s"] if ten else None, 30.0,
                            higher_is_better=False, unit=" s", note="" if ten else "needs --rows 1e7"))
    targets.append(C.target("reduce 10 M rows in <= 3 GB peak RSS", ten["reduce_peak_rss_mib"] / 1024 if ten else None,
                            3.0, higher_is_better=False, unit=" GB", note="" if ten else "needs --rows 1e7"))
    targets.append(C.target("reduce 30 M rows in <= 3 GB peak RSS",
                            thirty["reduce_peak_rss_mib"] / 1024 if thirty else None, 3.0, higher_is_better=False,
                            unit=" GB", note="" if thirty else "needs --rows 3e7"))
    print()
    C.print_targets(targets)
    if profile:
        print("\nprofile of reduce_run (smallest size), vlm_eval functions by cumulative time:")
        print(C.table(profile["by_cumtime_vlm_eval"][:12], ["function", "cumtime_s", "tottime_s", "calls"]))
        print("\nby own time:")
        print(C.table(profile["by_tottime"][:12], ["function", "tottime_s", "cumtime_s", "calls"]))
    for n in notes:
        print("note:", n)
    C.write_results("reducer_scale", {"machine": m, "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
                                      "rows": rows_out, "agreement": agree, "targets": targets,
                                      "profile": profile, "notes": notes})


if __name__ == "__main__":
    main()
