"""benchmarks/scale_model.py runs against the code as built (it once modelled a cache
layout that no longer existed and crashed on the partitioned cache's binary keys)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_scale_model_quick_runs_on_the_real_cache_and_orders_its_scenarios(tmp_path):
    env = {**os.environ, "VLM_EVAL_BENCH_RESULTS": str(tmp_path)}  # not benchmarks/results
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "scale_model.py"), "--quick",
                          "--gpus", "1", "8"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((tmp_path / "scale_model.json").read_text())
    cm = doc["cache"]
    assert cm["entries"] == 50_000
    assert 32 <= cm["bytes_per_entry"] < 1000  # a 32-byte key + 3 floats, held as arrays (cache.CacheIndex)
    # no other results in this folder: the inputs say they are assumed, not read from elsewhere
    assert doc["inputs"]["images per unit"].startswith("ASSUMED")
    for g in (1, 8):
        rows = {r["scenario"]: r["hours"] for r in doc["rows"] if r["gpus"] == g}
        assert len(rows) == 4
        built = next(h for name, h in rows.items() if "as built" in name)
        again = next(h for name, h in rows.items() if "fetched again" in name)
        # the nightly that fetches only new images < the one that fetches every image
        # <= a full run (every image scored) <= the naive plan
        assert built < again <= rows["our plan, full run"] <= rows["naive plan, no cache"]
    full = {r["gpus"]: r["hours"] for r in doc["rows"] if r["scenario"] == "our plan, full run"}
    assert full[8] < full[1]
