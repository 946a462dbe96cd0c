"""Archive scale (issue 13): fetches per image, nightly skips, driver memory, throughput, cache.

One command: ``.venv/bin/python benchmarks/archive_scale.py`` (``--quick`` for a smoke run).
Prints, side by side, with met / missed against the issue's targets:

1. **fetches per image, night 1 and night 2**: N images x 14 findings as a PadChest-format
   labels file, images served by ``python -m http.server`` on 127.0.0.1 (its request log
   counts the GETs); night 2 adds 5 % new images (different pixels) to the labels file.
2. **driver peak memory and planning time** at two sizes (default 1.4 M and 5 M samples):
   a fresh process runs the driver's part of a run (``prepare_samples`` = adapter +
   prompts + the samples table written once, then ``plan_for_job``) over a generated
   PadChest labels file (images need not exist); its own peak RSS (``VmHWM``).
3. **pipeline vs direct loop** for the scripted engine at 10 ms/request and the tiny
   transformers model (``pipeline_overhead``'s paths, same requests; the direct loop also
   as a fresh script, whose imports and engine build count as the pipeline actor's do).
4. **cache at scale**: 30 M entries in 256 partitions; load time and memory of one
   partition (what a loader reads per unit) and of the per-process LRU (8 partitions).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _common as C  # noqa: E402

FINDINGS = ["cardiomegaly", "pleural effusion", "pneumonia", "atelectasis", "nodule", "consolidation",
            "pneumothorax", "pulmonary edema", "emphysema", "mass", "hiatal hernia", "scoliosis",
            "fracture", "normal"]
_GET = re.compile(r'"GET /([^ ]+) HTTP')


def write_labels(path: str, n_images: int, start: int = 0, seed: int = 0) -> None:
    """A PadChest-format labels CSV (gzip) of images ``start .. start+n-1`` in folder 0."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    ids = np.arange(start, start + n_images)
    picks = rng.integers(0, len(FINDINGS), size=(n_images, 2))
    labels = [f"['{FINDINGS[a]}', ' {FINDINGS[b]}']" for a, b in picks]
    df = pd.DataFrame({"ImageID": [f"img{i:07d}.png" for i in ids], "ImageDir": 0,
                       "StudyID": [f"st{i}" for i in ids], "PatientID": [f"p{i // 2}" for i in ids],
                       "Projection": "PA", "MethodLabel": "Physician", "Labels": labels})
    mode = "ab" if start else "wb"
    with gzip.open(path, mode) as f:
        df.to_csv(f, index=False, header=not start)


def write_images(folder: str, start: int, n: int, size: int = 64) -> None:
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for i in range(start, start + n):
        px = np.random.default_rng(10_000 + i).integers(0, 255, (size, size), dtype=np.uint8)
        Image.fromarray(px, "L").save(os.path.join(folder, f"img{i:07d}.png"))


def job_for(labels: str, images_url: str, out: str, run_id: str, delay_s: float = 0.0, batch_size: int = 32):
    from vlm_eval.config import validate_job

    return validate_job({
        "name": "archive", "run_id": run_id, "output": out,
        "dataset": {"adapter": "padchest", "manifest": labels, "images": images_url, "findings": FINDINGS},
        "prompts": {"paraphrases": 5}, "conditions": ["image", "text_only"],
        "models": [{"name": "scripted", "engine": "scripted", "options": {"delay_s": delay_s}}],
        "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": batch_size},
        "failure": {"max_error_fraction": 1.0},
    })


# ---------------------------------------------------------------- 1. fetches


def fetches(work: str, n_images: int, new_frac: float) -> dict:
    from vlm_eval.run import run_job

    root = os.path.join(work, "http")
    write_images(os.path.join(root, "0"), 0, n_images)
    labels = os.path.join(work, "labels.csv.gz")
    write_labels(labels, n_images)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = os.path.join(work, "http.log")
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", root], stderr=open(log, "w"), stdout=subprocess.DEVNULL)
    gets = lambda: Counter(_GET.findall(open(log).read()))  # noqa: E731
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        url, out = f"http://127.0.0.1:{port}/", os.path.join(work, "runs")
        t0 = time.perf_counter()
        n1 = run_job(job_for(labels, url, out, "night-1"), shutdown_ray=False)
        wall1 = time.perf_counter() - t0
        g1 = gets()
        n_new = max(1, int(round(n_images * new_frac)))
        write_images(os.path.join(root, "0"), n_images, n_new)
        write_labels(labels, n_new, start=n_images, seed=1)
        t0 = time.perf_counter()
        n2 = run_job(job_for(labels, url, out, "night-2"), shutdown_ray=False)
        wall2 = time.perf_counter() - t0
        g2 = gets() - g1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    c1, c2 = n1.counts["models"]["scripted"], n2.counts["models"]["scripted"]
    new_names = {f"0/img{i:07d}.png" for i in range(n_images, n_images + n_new)}
    return {"images_night1": n_images, "gets_night1": sum(g1.values()), "fetches_per_image_night1":
            sum(g1.values()) / n_images, "wall_s_night1": wall1,
            "new_images_night2": n_new, "gets_night2": sum(g2.values()),
            "gets_night2_of_old_images": sum(v for k, v in g2.items() if k not in new_names),
            "fetches_per_new_image_night2": sum(g2.values()) / n_new, "wall_s_night2": wall2,
            "requests_scored_night2": c2["requests_scored"], "requests_cached_night2": c2["requests_cached"],
            "samples_night1": n1.counts["plan"]["samples"], "units_night1": c1["units"]}


# ---------------------------------------------------------------- 2. driver memory


def _plan_child(labels: str, out: str) -> None:
    """In a fresh process: the driver's part of a run; prints JSON (this process's own peak
    RSS, VmHWM, and times)."""
    from vlm_eval.layout import RunLayout
    from vlm_eval.pipeline.plan import plan_for_job
    from vlm_eval.run import prepare_samples

    rss0 = C.own_peak_rss_mib()
    job = job_for(labels, "/nonexistent/images", out, "plan")
    layout = RunLayout(os.path.join(out, "plan"))
    t0 = time.perf_counter()
    stats = prepare_samples(job, layout)
    t1 = time.perf_counter()
    rss_samples = C.own_peak_rss_mib()
    plan = plan_for_job(layout.samples_file, job)
    t2 = time.perf_counter()
    print(json.dumps({"samples": stats["samples"], "units": plan.units.num_rows, "images": plan.n_images,
                      "load_and_write_s": t1 - t0, "plan_s": t2 - t1,
                      "rss_after_imports_mb": rss0, "peak_rss_samples_mb": rss_samples,
                      "peak_rss_mb": C.own_peak_rss_mib(),
                      "samples_file_mb": os.path.getsize(layout.samples_file) / 2**20}))


def planning(work: str, n_samples: int) -> dict:
    labels = os.path.join(work, f"plan-{n_samples}.csv.gz")
    write_labels(labels, n_samples // len(FINDINGS))
    out = os.path.join(work, f"plan-{n_samples}")
    res = subprocess.run([sys.executable, __file__, "--plan-child", labels, out], capture_output=True, text=True)
    shutil.rmtree(out, ignore_errors=True)
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- 3. throughput


def throughput(work: str, n_samples: int, delay_s: float) -> list[dict]:
    """Pipeline vs direct loop for the 10 ms scripted engine and the tiny transformers model:
    the same requests; the direct loop both in this (warm) process and as a fresh script."""
    import pipeline_overhead as po

    from vlm_eval.datasets.synthetic import generate_synthetic

    data = os.path.join(work, "synthetic")
    manifest = generate_synthetic(data, n_samples=n_samples, seed=0, size=256)
    out = os.path.join(work, "tp-runs")
    po.run_pipeline(po.make_job(data, manifest, out, po.model_entry("scripted", "cpu", 0), 16, 16, "warm", "cpu"))
    rows = []
    for eng in ("scripted-delay", "transformers"):
        entry = po.model_entry(eng, "cpu", delay_s)
        po.run_direct(po.make_job(data, manifest, out, entry, 4, 16, f"w-{eng}", "cpu"), os.path.join(work, "w.parquet"))
        job = po.make_job(data, manifest, out, entry, n_samples, 16, f"tp-{eng}", "cpu")
        p = po.run_pipeline(job)
        d = po.run_direct(job, os.path.join(work, f"direct-{eng}.parquet"))
        kw = {"data_dir": data, "manifest": manifest, "out": out, "model": entry, "n": n_samples, "batch_size": 16,
              "run_id": f"tp-{eng}-cold", "device": "cpu"}
        cold = po.run_direct_cold(json.dumps(kw), os.path.join(work, f"direct-cold-{eng}.parquet"))
        rows.append({"engine": eng, "requests": p["requests"], "pipeline_s": p["wall_s"], "direct_s": d["wall_s"],
                     "direct_fresh_process_s": cold["wall_s"], "ratio_end_to_end": d["wall_s"] / p["wall_s"],
                     "ratio_vs_fresh_direct": cold["wall_s"] / p["wall_s"],
                     "ratio_scoring_stage": d["scoring_s"] / p["scoring_s"],
                     "engine_busy": (p["engine_s"] or float("nan")) / p["scoring_s"]})
    return rows


# ---------------------------------------------------------------- 4. cache


def cache_scale(work: str, n_entries: int) -> dict:
    import numpy as np
    import pyarrow as pa

    from vlm_eval.pipeline import cache, cache_store

    url = os.path.join(work, "cache")
    root = cache.model_dir(url, "m")
    per = n_entries // cache_store.N_PARTS
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for p in range(cache_store.N_PARTS):
        keys = rng.integers(0, 256, size=(per, 32), dtype=np.uint8)
        col = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), per, [None, pa.py_buffer(keys.tobytes())])
        t = pa.table({"cache_key": col,
                      "logprob_yes": rng.normal(size=per), "logprob_no": rng.normal(size=per),
                      "other_mass": rng.uniform(size=per)}, schema=cache.CACHE_SCHEMA)
        cache_store.write_part(root, f"{p:02x}", "compact-0", t)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx = cache.load_part(url, "m", "00")
    one = time.perf_counter() - t0
    for p in range(1, 8):
        cache.load_part(url, "m", f"{p:02x}")
    eight = time.perf_counter() - t0
    per_entry = (idx.keys.nbytes + idx.logprob_yes.nbytes * 3) / max(1, len(idx))
    n_files = sum(len(f) for _, _, f in os.walk(root))
    return {"entries": per * cache_store.N_PARTS, "files": n_files, "build_s": build,
            "entries_per_partition": per, "load_one_partition_s": one, "load_lru_8_s": eight,
            "memory_per_actor_mb": 8 * per * per_entry / 2**20,
            "memory_whole_cache_mb": per * cache_store.N_PARTS * per_entry / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--images", type=int, default=300, help="images of the fetch benchmark (x 14 findings)")
    ap.add_argument("--new-frac", type=float, default=0.05)
    ap.add_argument("--plan-sizes", default="1400000,5000000", help="samples, comma separated")
    ap.add_argument("--throughput-samples", type=int, default=768)
    ap.add_argument("--cache-entries", type=int, default=30_000_000)
    ap.add_argument("--only", default="fetches,planning,throughput,cache")
    ap.add_argument("--plan-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plan_child:
        return _plan_child(*args.plan_child)
    if args.quick:
        args.images, args.plan_sizes, args.throughput_samples, args.cache_entries = 40, "14000,56000", 48, 256_000
    C.quiet_logs()
    m = C.machine()
    C.print_machine(m)
    only = set(args.only.split(","))
    work = tempfile.mkdtemp(prefix="vlm-eval-archive-")
    rows, targets, result = [], [], {}
    try:
        if only & {"fetches", "throughput"}:
            from vlm_eval.pipeline.ray_env import ensure_ray

            ensure_ray()
        if "fetches" in only:
            f = result["fetches"] = fetches(work, args.images, args.new_frac)
            print(C.table([f]))
            targets.append(C.target("fetches per image, night 1 (now 14.0)", f["fetches_per_image_night1"], 1.0,
                                    higher_is_better=False, unit="GET/image"))
            targets.append(C.target("night 2: GETs of images already known (none wanted)",
                                    f["gets_night2_of_old_images"], 0, higher_is_better=False, unit="GETs"))
        if "planning" in only:
            for n in [int(x) for x in args.plan_sizes.split(",")]:
                r = planning(work, n)
                rows.append(r)
                print(C.table([r]))
                goal = 1536 if n <= 1_400_000 else 2048
                targets.append(C.target(f"driver peak memory, {n:,} samples (now 3.9 GB at 1.4 M)", r["peak_rss_mb"],
                                        goal, higher_is_better=False, unit="MB"))
            result["planning"] = rows
        if "throughput" in only:
            tp = result["throughput"] = throughput(work, args.throughput_samples, 0.01)
            print(C.table(tp))
            for t in tp:
                if t["engine"] == "scripted-delay":
                    targets.append(C.target("pipeline / direct loop, 10 ms scripted engine (end to end)",
                                            t["ratio_end_to_end"], 0.85))
                else:
                    targets.append(C.target("pipeline / direct loop as a fresh script, tiny transformers (end to end)",
                                            t["ratio_vs_fresh_direct"], 0.7))
                    targets.append({**C.target("pipeline / warm in-process direct loop, tiny transformers "
                                               "(end to end; informational)", t["ratio_end_to_end"], 0.7),
                                    "informational": True})
        if "cache" in only:
            c = result["cache"] = cache_scale(work, args.cache_entries)
            print(C.table([c]))
            targets.append(C.target(f"cache memory per actor at {c['entries']:,} entries", c["memory_per_actor_mb"],
                                    512, higher_is_better=False, unit="MB"))
    finally:
        C.stop_ray_and_remove(work)
    print()
    print(C.table(targets, ["target", "goal", "measured", "unit", "met"]))
    C.write_results("archive_scale", {"machine": m, "args": vars(args), "rows": [result], "targets": targets,
                                      "notes": ["see the module docstring for what each figure measures"]})


if __name__ == "__main__":
    main()
