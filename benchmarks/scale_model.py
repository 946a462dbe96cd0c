"""Scale model: projected time of a nightly MIMIC-CXR-JPG run on N H100s, with and without the cache.

    python benchmarks/scale_model.py                 # measures the CPU-side costs here (~30 s)
    python benchmarks/scale_model.py --prefill-tok-s 60000 --vision-img-s 150   # measured GPU figures

Inputs, each labelled in the output as MEASURED (here, now), FROM RESULTS (another
benchmark's JSON in benchmarks/results/) or ASSUMED (pass a flag to replace it):

- GPU side (ASSUMED unless given): MedGemma-4B on one H100 SXM: prefill tokens/s and
  vision-encoder images/s derived from FLOPs (2 x params per token; SigLIP ~0.4 B params
  over 4096 patches of an 896 px image) at an assumed 40 % of the 989 TFLOP/s bf16 peak.
- Prompt shape (ASSUMED): 256 image tokens + ~30 system/template tokens per image prefix,
  ~40 question tokens per variant; 14 findings x 6 variants per image.
- CPU side (MEASURED here): per image, ``load_image`` of a MIMIC-sized JPEG (2544 x 3056)
  downscaled to max_image_side 2048, plus the loader's transport encode (a downscaled image
  travels as PNG) and the actor's decode; a cache partition's load time and memory per
  entry (``cache.load_part``: what a loader reads for a unit); cache-key hashing.
- Nightly (as built, issue 13): a loader asks the store for each image's version (one
  metadata request per image: ASSUMED ``--metadata-ms`` round trip, up to
  ``prekey.METADATA_REQUESTS_IN_FLIGHT`` per unit, ``loader_pool_size`` loaders per GPU) and
  fetches only new or changed images; unchanged ones are served from the cache.
- FROM RESULTS: image encodings per image of our plan (forward_passes.json; image-major
  units: 1.0), images per unit (archive_scale.json's plan), reducer throughput
  (reducer_scale.json, the largest run).

Model: the GPU stage and the CPU/IO stage stream concurrently, so a run takes
max(GPU, CPU/IO) + fixed costs (Ray start, engine start, cache load) + the reduce (one
machine, over every prediction row of the run, whatever N is).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

MIMIC_IMAGES = 377_110
MIMIC_BYTES = 570e9  # MIMIC-CXR-JPG v2.0.0 is ~570 GB


def measure_image_path(n: int = 6) -> dict:
    """CPU seconds per image: load_image (JPEG, draft-mode downscale) + PNG transport + decode."""
    import numpy as np
    from PIL import Image

    from vlm_eval.datasets.images import load_image
    from vlm_eval.pipeline.loader import decode as _decode, encode_for_transport as _encode_for_transport

    rng = np.random.default_rng(0)
    d = tempfile.mkdtemp(prefix="vlm-eval-scale-")
    h, w = 3056, 2544
    base = rng.normal(128, 40, (h // 16, w // 16)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
    arr = (np.asarray(img, np.int16) + rng.integers(-6, 7, (h, w))).clip(0, 255).astype(np.uint8)
    path = os.path.join(d, "cxr.jpg")
    Image.fromarray(arr, "L").save(path, quality=95)
    size = os.path.getsize(path)
    t = {"load": [], "encode": [], "decode": []}
    for _ in range(n):
        c0 = time.process_time()
        li = load_image(path, max_side=2048)
        c1 = time.process_time()
        data = _encode_for_transport(li)
        c2 = time.process_time()
        _decode(data)
        c3 = time.process_time()
        t["load"].append(c1 - c0), t["encode"].append(c2 - c1), t["decode"].append(c3 - c2)
    os.remove(path)
    os.rmdir(d)
    med = {k: sorted(v)[len(v) // 2] for k, v in t.items()}
    return {"jpeg_bytes": size, "load_s": med["load"], "png_encode_s": med["encode"], "png_decode_s": med["decode"],
            "png_bytes": len(data), "total_s": sum(med.values())}


def measure_cache(n: int = 200_000) -> dict:
    """One cache partition of ``n`` entries (the real layout and reader, ``cache.load_part``):
    load seconds and resident bytes per entry, and the cost of one request key."""
    import gc
    import hashlib
    import shutil

    import numpy as np
    import pyarrow as pa

    from vlm_eval.engines.base import ScoreRequest
    from vlm_eval.pipeline import cache, cache_store

    d = tempfile.mkdtemp(prefix="vlm-eval-cache-")
    rng = np.random.default_rng(0)
    keys = [hashlib.sha256(str(i).encode()).digest() for i in range(n)]
    t = pa.table({"cache_key": pa.array(keys, pa.binary(32)), "logprob_yes": rng.normal(size=n),
                  "logprob_no": rng.normal(size=n), "other_mass": rng.uniform(size=n)}, schema=cache.CACHE_SCHEMA)
    cache_store.write_part(cache.model_dir(d, "k"), "00", "bench", t)
    del keys, t
    gc.collect()
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    loaded = cache.load_part(d, "k", "00")
    secs = time.perf_counter() - t0
    grown = _rss_bytes() - rss0
    assert len(loaded) == n, len(loaded)
    req = ScoreRequest(prompt="Is there cardiomegaly?", system="sys", image_uuid="ab" * 32)
    t0 = time.perf_counter()
    for _ in range(20000):
        cache.request_key("0123456789abcdef", req, "image")
    key_s = (time.perf_counter() - t0) / 20000
    del loaded
    shutil.rmtree(d, ignore_errors=True)
    return {"entries": n, "load_s_per_entry": secs / n, "bytes_per_entry": max(grown, 0) / n, "key_s": key_s}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller microbenchmarks")
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--images", type=int, default=MIMIC_IMAGES)
    ap.add_argument("--findings", type=int, default=14)
    ap.add_argument("--variants", type=int, default=6)
    ap.add_argument("--new-fraction", type=float, default=0.01, help="share of new images per night")
    ap.add_argument("--image-tokens", type=int, default=256)
    ap.add_argument("--prefix-tokens", type=int, default=30, help="system + template tokens per prompt")
    ap.add_argument("--text-tokens", type=int, default=40, help="question tokens per variant")
    ap.add_argument("--lm-params", type=float, default=3.9e9)
    ap.add_argument("--vision-params", type=float, default=0.4e9)
    ap.add_argument("--vision-patches", type=int, default=4096)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="H100 SXM bf16 dense")
    ap.add_argument("--mfu", type=float, default=0.40)
    ap.add_argument("--prefill-tok-s", type=float, default=None, help="MEASURED prefill tokens/s per GPU")
    ap.add_argument("--vision-img-s", type=float, default=None, help="MEASURED vision encodes/s per GPU")
    ap.add_argument("--cpu-per-gpu", type=int, default=16, help="CPU cores per GPU for loading/decoding")
    ap.add_argument("--read-gbps-per-gpu", type=float, default=0.5, help="object-store read GB/s per GPU")
    ap.add_argument("--engine-start-s", type=float, default=120.0, help="vLLM start on GPU (load + graphs)")
    ap.add_argument("--ray-start-s", type=float, default=30.0)
    ap.add_argument("--metadata-ms", type=float, default=20.0,
                    help="one metadata request (HEAD / info) to the object store, round trip")
    args = ap.parse_args()
    m = C.machine()
    C.print_machine(m)
    src: dict[str, str] = {}

    # ---- GPU side
    tok_s = args.prefill_tok_s or args.peak_tflops * 1e12 * args.mfu / (2 * args.lm_params)
    src["prefill tokens/s per GPU"] = "MEASURED (flag)" if args.prefill_tok_s else \
        f"ASSUMED: {args.mfu:.0%} of {args.peak_tflops:g} TFLOP/s / (2 x {args.lm_params:.2g} params)"
    vis_s = args.vision_img_s or args.peak_tflops * 1e12 * args.mfu / (2 * args.vision_params * args.vision_patches)
    src["vision encodes/s per GPU"] = "MEASURED (flag)" if args.vision_img_s else \
        f"ASSUMED: {args.mfu:.0%} of peak / (2 x {args.vision_params:.2g} params x {args.vision_patches} patches)"
    fp = C.read_results("forward_passes")
    enc_per_image = 1.0
    if fp and fp.get("rows"):
        r0 = fp["rows"][0]
        enc_per_image = r0["our_image_encodings"] / (r0["samples"] / args.findings)
        src["image encodings per image (ours)"] = f"FROM RESULTS forward_passes.json ({enc_per_image:.3f}: units " \
                                                  "hold whole images)"
    else:
        src["image encodings per image (ours)"] = "ASSUMED 1.0 (run forward_passes.py)"
    prompts_per_image = args.findings * args.variants
    prefix = args.prefix_tokens + args.image_tokens
    # ours: the image prefix prefilled once per encoding (prefix cache), then each variant's question
    ours_tokens = enc_per_image * prefix + prompts_per_image * args.text_tokens
    # naive: every prompt prefilled in full, with the image, and again text-only
    naive_tokens = prompts_per_image * (prefix + args.text_tokens) + prompts_per_image * (args.prefix_tokens + args.text_tokens)
    gpu_s_ours = ours_tokens / tok_s + enc_per_image / vis_s
    gpu_s_naive = naive_tokens / tok_s + prompts_per_image / vis_s

    # ---- CPU / IO side (measured here)
    print("measuring the image path (MIMIC-sized JPEG) ...", flush=True)
    img = measure_image_path(3 if args.quick else 6)
    print("measuring the prediction cache ...", flush=True)
    cm = measure_cache(50_000 if args.quick else 200_000)
    cpu_s_image = img["total_s"] + prompts_per_image * 2 * cm["key_s"]
    src["CPU s per image"] = (f"MEASURED here: load {img['load_s'] * 1e3:.0f} ms + PNG transport encode "
                              f"{img['png_encode_s'] * 1e3:.0f} ms + decode {img['png_decode_s'] * 1e3:.0f} ms")
    bytes_image = MIMIC_BYTES / MIMIC_IMAGES
    io_s_image = bytes_image / (args.read_gbps_per_gpu * 1e9)
    src["object-store read"] = f"ASSUMED {args.read_gbps_per_gpu} GB/s per GPU, {bytes_image / 1e6:.1f} MB per image"
    src["CPU cores per GPU"] = f"ASSUMED {args.cpu_per_gpu} (they bound the loaders, below)"
    src["engine / Ray start"] = f"ASSUMED {args.engine_start_s:.0f} s / {args.ray_start_s:.0f} s"

    rows_total = args.images * prompts_per_image + prompts_per_image
    rs = C.read_results("reducer_scale")
    reduce_rate = None
    if rs and rs.get("rows"):
        big = max(rs["rows"], key=lambda r: r["rows"])
        reduce_rate = big["rows"] / big["reduce_run_s"]
        src["reduce rows/s"] = f"FROM RESULTS reducer_scale.json ({reduce_rate:,.0f} rows/s at {big['rows']:,} rows, " \
                               "the largest run; linear from there)"
    else:
        reduce_rate = 25_000.0
        src["reduce rows/s"] = "ASSUMED 25,000 rows/s (run reducer_scale.py)"
    reduce_s = rows_total / reduce_rate
    # The cache is hash-partitioned by image (cache_store.N_PARTS); units are ordered by
    # partition and a loader reads only its units' partitions (keeping the last _LRU_PARTS),
    # so over a run every partition is read about once per loader that needs it: the run's
    # load work is ~ every entry once, spread over the loaders, not every entry per actor.
    from vlm_eval.pipeline import cache_store, prekey
    from vlm_eval.pipeline.execute import loader_pool_size

    loaders = loader_pool_size(args.cpu_per_gpu, 1, 1)  # per GPU: one actor of 1 CPU + its loaders
    src["loaders per GPU"] = (f"{loaders} (pipeline.execute.loader_pool_size with {args.cpu_per_gpu} CPUs and one "
                              "1-CPU engine actor per GPU): the CPU work per image is spread over them + the actor")

    cache_entries = rows_total
    per_part = cache_entries / cache_store.N_PARTS
    cache_load_s = cache_entries * cm["load_s_per_entry"]  # all loaders together, once per run
    cache_mb = cache_store._LRU_PARTS * per_part * cm["bytes_per_entry"] / 2**20
    src["cache"] = (f"MEASURED here: {cm['load_s_per_entry'] * 1e6:.2f} us and {cm['bytes_per_entry']:.0f} B per entry "
                    f"(one partition, cache.load_part) -> {cache_entries:,} entries in {cache_store.N_PARTS} partitions: "
                    f"{per_part * cm['load_s_per_entry']:.2f} s per partition, {cache_load_s:.0f} s of loading per run "
                    f"over all loaders (CPU/IO stage), at most {cache_mb:.0f} MB per loader ({cache_store._LRU_PARTS} "
                    "partitions kept)")
    asr = C.read_results("archive_scale")
    plans = [r for r in ((asr or {}).get("rows") or [{}])[0].get("planning", []) if r.get("units")]
    images_per_unit = (plans[-1]["images"] / plans[-1]["units"]) if plans else 2.0
    src["images per unit"] = (f"FROM RESULTS archive_scale.json ({images_per_unit:.2f} at {plans[-1]['samples']:,} samples)"
                              if plans else "ASSUMED 2.0 (run archive_scale.py)")
    in_flight = loaders * max(1.0, min(prekey.METADATA_REQUESTS_IN_FLIGHT, images_per_unit))
    meta_s_image = args.metadata_ms / 1e3 / in_flight
    src["metadata request per image (nightly)"] = (
        f"ASSUMED {args.metadata_ms:g} ms round trip; {in_flight:.0f} in flight per GPU ({loaders} loaders "
        f"x {in_flight / loaders:.1f} per unit) -> {meta_s_image * 1e3:.2f} ms per image per GPU")

    def run_time(n_gpu: int, gpu_images: float, gpu_s_per_image: float, cpu_images: float, cache: bool,
                 asked_images: float = 0.0) -> dict:
        """gpu_images scored, cpu_images fetched + decoded, asked_images: metadata requests."""
        gpu = gpu_images * gpu_s_per_image / n_gpu
        cpu = (cpu_images * (cpu_s_image / (loaders + 1) + io_s_image) + asked_images * meta_s_image
               + (cache_load_s / loaders if cache else 0.0)) / n_gpu
        fixed = args.ray_start_s + args.engine_start_s
        total = max(gpu, cpu) + fixed + reduce_s
        return {"total_s": total, "gpu_s": gpu, "cpu_io_s": cpu, "fixed_s": fixed, "reduce_s": reduce_s,
                "bound": "GPU" if gpu >= cpu else "CPU/IO", "gpu_hours": n_gpu * total / 3600}

    new = args.images * args.new_fraction
    rows = []
    for n in args.gpus:
        scen = {
            "naive plan, no cache": run_time(n, args.images, gpu_s_naive, args.images, False),
            "our plan, full run": run_time(n, args.images, gpu_s_ours, args.images, False),
            f"nightly {args.new_fraction:.0%} new (as built: pre-keys, fetch only new)":
                run_time(n, new, gpu_s_ours, new, True, asked_images=args.images),
            f"nightly {args.new_fraction:.0%} new, if every image were fetched again":
                run_time(n, new, gpu_s_ours, args.images, True),
        }
        for name, r in scen.items():
            rows.append({"gpus": n, "scenario": name, "hours": r["total_s"] / 3600, "minutes": r["total_s"] / 60,
                         "gpu_stage_min": r["gpu_s"] / 60, "cpu_io_stage_min": r["cpu_io_s"] / 60,
                         "fixed_min": r["fixed_s"] / 60, "reduce_min": r["reduce_s"] / 60, "bound": r["bound"],
                         "gpu_hours": r["gpu_hours"]})
    print()
    print("inputs:")
    for k, v in src.items():
        print(f"  {k}: {v}")
    print(f"  prefill tokens/s per GPU = {tok_s:,.0f}; vision encodes/s per GPU = {vis_s:,.0f}")
    print(f"  prefill tokens per image: ours {ours_tokens:,.0f}, naive {naive_tokens:,.0f} "
          f"({naive_tokens / ours_tokens:.1f}x); GPU s per image: ours {gpu_s_ours * 1e3:.1f} ms, "
          f"naive {gpu_s_naive * 1e3:.1f} ms")
    print(f"  CPU s per image {cpu_s_image * 1e3:.0f} ms ({img['jpeg_bytes'] / 1e6:.1f} MB JPEG -> "
          f"{img['png_bytes'] / 1e6:.1f} MB PNG in transit); prediction rows per run {rows_total:,}")
    print()
    print(C.table(rows, ["gpus", "scenario", "hours", "minutes", "gpu_stage_min", "cpu_io_stage_min", "fixed_min",
                         "reduce_min", "bound", "gpu_hours"]))
    notes = [
        "GPU figures are ASSUMED from FLOPs unless --prefill-tok-s/--vision-img-s give measured ones (e.g. from "
        "benchmarks/engine_throughput.py on an H100 with MedGemma-4B); CPU figures are measured on this machine "
        "(a loaded 2-core box: pessimistic per core).",
        "'as built': a loader sends one metadata request per image (its pre-key: URI + ETag / size + mtime) and "
        "skips the fetch of an image whose every request is cached; only new or changed images are fetched, "
        "decoded and scored. Cache partitions are read by the loaders that need them (CPU/IO stage).",
        "'if every image were fetched again': the nightly before issue 13 (the cache key held the image hash, so "
        "every image was fetched and decoded to look it up).",
        "the reduce runs on one machine over every prediction row of the run, whatever N is (a nightly's "
        "predictions/ holds every sample, cached or not); at the reducer's measured throughput it and the fixed "
        "start-up costs dominate the incremental nightly.",
    ]
    for n in notes:
        print("note:", n)
    C.write_results("scale_model", {"machine": m, "args": vars(args), "inputs": src, "image_path": img, "cache": cm,
                                    "prefill_tok_s": tok_s, "vision_img_s": vis_s, "tokens_per_image_ours": ours_tokens,
                                    "tokens_per_image_naive": naive_tokens, "gpu_s_per_image_ours": gpu_s_ours,
                                    "gpu_s_per_image_naive": gpu_s_naive, "cpu_s_per_image": cpu_s_image,
                                    "prediction_rows": rows_total, "reduce_s": reduce_s, "cache_load_s": cache_load_s,
                                    "cache_mb_per_loader": cache_mb, "metadata_s_per_image": meta_s_image,
                                    "rows": rows, "targets": [], "notes": notes})


if __name__ == "__main__":
    main()
