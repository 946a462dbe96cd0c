"""Forward passes per sample: our plan vs the naive plan, on realistic shapes.

    python benchmarks/forward_passes.py           # 20 000 images (280 000 samples) per shape
    python benchmarks/forward_passes.py --quick   # 1 000 images

Counts come from ``vlm_eval.pipeline.plan`` itself: ``forward_passes`` (prompts scored) and
the work units of ``plan_units`` (what the actors really receive). The naive plan scores
every variant under every condition for every sample; ours scores image-dependent
conditions per sample (all variants of a sample, and the samples of an image, in one
unit) and a text-only prompt once per distinct prompt (joined back by prompt_id).

Also counted, from the units: *image encodings* when the engine caches the vision
encoder output by ``image_uuid`` within a unit (the vLLM engine passes it as
``multi_modal_uuids``), vs one encoding per image prompt in the naive plan.

Shapes (MIMIC-CXR-JPG-like): every image asks all 14 CheXpert findings (samples of an
image are adjacent, as the adapters emit them), 6 variants each (question + 5
paraphrases from the built-in set cxr-binary-v1).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

MIMIC_IMAGES = 377_110  # MIMIC-CXR-JPG v2.0.0 images
N_FINDINGS = 14


def mimic_like_samples(n_images: int, n_variants: int = 6):
    import pandas as pd

    from vlm_eval.datasets._chexpert_labels import COLUMN_OF
    from vlm_eval.prompts import load_prompt_set

    pset = load_prompt_set("cxr-binary-v1")
    findings = list(COLUMN_OF)[:N_FINDINGS]
    prompts = {f: pset.variants(pset.question_for(f), f, n_variants - 1) for f in findings}
    rows = []
    for j in range(n_images):
        uri = f"s3://bucket/mimic-cxr-jpg/files/img{j:07d}.jpg"
        for f in findings:
            rows.append({"sample_id": f"{j:07d}-{f}", "image_uri": uri, "swap_image_uri": None,
                         "prompts": prompts[f], "finding": f})
    return pd.DataFrame(rows)


def unit_counts(plan, samples_file: str, ablations) -> dict:
    """Prompts and distinct image encodings actually sent, from the planned units."""
    import json

    from vlm_eval.conditions import image_conditions
    from vlm_eval.pipeline.units import read_rows

    image_dep = [c.name for c in image_conditions(ablations) if c.name != "image"]
    prompts = encodings = 0
    for u in plan.units.to_pylist():
        if u["kind"] == "text":
            prompts += len(json.loads(u["items"]))
            continue
        uuids = set()
        for it in read_rows(samples_file, u["start"], u["end"]).to_pylist():
            n = len(it["prompts"])
            prompts += n * (1 + len(image_dep))
            uuids.add(it["image_uri"])
            for a in image_dep:
                # blank: one uuid per image size (all the same size here); noise: per sample; swap: per swap image
                uuids.add("blank" if a == "blank" else f"{a}:{it['sample_id']}")
        encodings += len(uuids)
    return {"prompts": prompts, "encodings": encodings}


def write_samples(samples: pd.DataFrame, path: str) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlm_eval.pipeline.units import ROW_GROUP_ROWS, sort_image_major
    from vlm_eval.schema import SAMPLES, conform

    table = sort_image_major(conform(pa.Table.from_pandas(samples, preserve_index=False), SAMPLES))
    pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--images", type=int, default=None, help="images per shape (default 20000, quick 1000)")
    ap.add_argument("--batch-size", type=int, default=32, help="samples per image unit (resources.batch_size)")
    args = ap.parse_args()
    m = C.machine()
    C.print_machine(m)

    from vlm_eval.config import DEFAULT_SYSTEM
    import tempfile

    from vlm_eval.conditions import IMAGE_FREE_NAMES as IMAGE_FREE_ABLATIONS
    from vlm_eval.pipeline.plan import forward_passes, plan_units, unit_prompt_cap

    n_images = args.images or (1000 if args.quick else 20000)
    shapes = [
        ("MIMIC-like: image + text_only (default)", ["text_only"]),
        ("MIMIC-like: image + text_only + blank", ["text_only", "blank"]),
        ("MIMIC-like: image + text_only + blank + noise", ["text_only", "blank", "noise"]),
    ]
    t0 = time.perf_counter()
    samples = mimic_like_samples(n_images)
    print(f"built {len(samples):,} samples ({n_images:,} images x {N_FINDINGS} findings x 6 variants) "
          f"in {time.perf_counter() - t0:.1f} s")
    samples_file = write_samples(samples, os.path.join(tempfile.mkdtemp(prefix="fp-bench-"), "samples.parquet"))
    n_distinct = len({p for ps in samples["prompts"] for p in ps})
    rows = []
    for name, ablations in shapes:
        t0 = time.perf_counter()
        plan = plan_units(samples_file, DEFAULT_SYSTEM, ablations, args.batch_size,
                          unit_prompt_cap(args.batch_size, 6, ablations))
        fp = forward_passes(plan, ablations)
        units = plan.ids()
        plan_s = time.perf_counter() - t0
        uc = unit_counts(plan, samples_file, ablations)
        assert uc["prompts"] == fp["planned"], (uc, fp)  # the units send exactly what forward_passes says
        n_var = int(samples["prompts"].map(len).sum())
        image_conditions = 1 + len([a for a in ablations if a not in IMAGE_FREE_ABLATIONS])
        naive_enc = n_var * image_conditions
        # Full MIMIC-CXR-JPG, closed form (distinct text prompts do not grow with images).
        full_var = MIMIC_IMAGES * N_FINDINGS * 6
        full_naive = full_var * (1 + len(ablations))
        full_ours = full_var * image_conditions + (n_distinct if any(a in IMAGE_FREE_ABLATIONS for a in ablations) else 0)
        rows.append({
            "shape": name,
            "samples": len(samples),
            "naive_prompts": fp["naive"],
            "our_prompts": fp["planned"],
            "naive_per_sample": fp["naive"] / len(samples),
            "ours_per_sample": fp["planned"] / len(samples),
            "fewer_prompts_x": fp["naive"] / fp["planned"],
            "naive_image_encodings": naive_enc,
            "our_image_encodings": uc["encodings"],
            "fewer_encodings_x": naive_enc / uc["encodings"],
            "units": len(units),
            "plan_s": plan_s,
            "full_mimic_naive_prompts": full_naive,
            "full_mimic_our_prompts": full_ours,
            "full_mimic_fewer_x": full_naive / full_ours,
        })
    print()
    print(C.table(rows, ["shape", "samples", "naive_prompts", "our_prompts", "naive_per_sample", "ours_per_sample",
                         "fewer_prompts_x", "naive_image_encodings", "our_image_encodings", "fewer_encodings_x"]))
    print()
    print(C.table(rows, ["shape", "units", "plan_s", "full_mimic_naive_prompts", "full_mimic_our_prompts",
                         "full_mimic_fewer_x"]))
    print(f"\ndistinct text-only prompts: {n_distinct} (14 findings x 6 variants), whatever the number of images")
    notes = [
        "prompts = forward passes of an engine that scores one prompt per pass; counts from "
        "vlm_eval.pipeline.plan.forward_passes, cross-checked against the units of plan_units.",
        "image encodings assume the engine reuses the vision encoder output for equal image_uuid within a "
        "unit (vLLM engine: multi_modal_uuids + prefix cache); the transformers engine re-encodes per prompt.",
        "the plan counts image-dependent ablations (blank, noise, swap) per sample, so with blank its prompt "
        "ratio is 3/2 = 1.5x; the 1.9x target is for the default conditions (image + text_only).",
        "blank: the plan's count is an upper bound. A blank view depends only on the image size, so the "
        "scoring actor sends each distinct (prompt, blank size) once per run and reuses it for every image of "
        "that size, and the cache's size partition serves it in later runs (pipeline/actors.py, "
        "pipeline/cache_store.py): with one image size, image + text_only + blank costs the engine about "
        "6 prompts per sample + 84 per actor, about 3x fewer than naive (the blank column's encodings count "
        "one per size).",
    ]
    default = rows[0]
    targets = [C.target("fewer forward passes, image + text_only", default["fewer_prompts_x"], 1.9)]
    C.print_targets(targets)
    for n in notes:
        print("note:", n)
    C.write_results("forward_passes", {"machine": m, "args": vars(args), "rows": rows, "targets": targets,
                                       "distinct_text_prompts": n_distinct, "notes": notes})


if __name__ == "__main__":
    main()
