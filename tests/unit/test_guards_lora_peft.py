"""A LoRA adapter without peft is a clear MissingDependencyError naming the fix (issue 16.3).

CI installs peft, so a plain test would always skip there. The check runs in a
subprocess whose import system cannot see peft instead: every
meta-path finder is wrapped to answer "not found" for ``peft``, so ``import peft`` fails
and ``importlib.util.find_spec("peft")`` is None there, exactly as on a machine without it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

HIDE_PEFT = textwrap.dedent("""
    import importlib.util, sys

    class HidePeft:
        def __init__(self, inner):
            self.inner = inner

        def find_spec(self, name, path=None, target=None):
            if name == "peft" or name.startswith("peft."):
                return None
            find = getattr(self.inner, "find_spec", None)
            return find(name, path, target) if find else None

        def __getattr__(self, attr):
            return getattr(self.inner, attr)

    sys.modules.pop("peft", None)
    sys.meta_path[:] = [HidePeft(f) for f in sys.meta_path]
    assert importlib.util.find_spec("peft") is None
""")

PROBE = HIDE_PEFT + textwrap.dedent("""
    import json, sys
    import torch
    torch.set_num_threads(1)
    from vlm_eval.engines.transformers import TransformersEngine
    from vlm_eval.errors import MissingDependencyError
    from vlm_eval.models import ARCHITECTURES, build_tiny_model

    root, adapter, lora = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    arch = ARCHITECTURES[0]
    folder = build_tiny_model(arch, root + "/" + arch, seed=0)
    model = {"name": "m", "engine": "transformers", "path": folder, "options": {"cpu_threads": 1}}
    if lora:
        model["lora"] = adapter
    try:
        TransformersEngine(model)
    except MissingDependencyError as exc:
        print(json.dumps({"raised": "MissingDependencyError", "message": str(exc)}))
    except Exception as exc:
        print(json.dumps({"raised": type(exc).__name__, "message": str(exc)}))
    else:
        print(json.dumps({"raised": None, "peft_loaded": "peft" in sys.modules}))
""")


def _probe(tmp_path, lora: bool) -> dict:
    adapter = tmp_path / "adapter"
    adapter.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "models"), str(adapter), "1" if lora else "0"],
                          capture_output=True, text=True, timeout=540, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_lora_without_peft_is_a_missing_dependency_error(tmp_path):
    got = _probe(tmp_path, lora=True)
    assert got["raised"] == "MissingDependencyError", got
    assert "peft" in got["message"] and "pip install peft" in got["message"], got
    # the control: the same engine without a LoRA starts fine with peft hidden, so the error
    # above comes from the LoRA request and not from hiding peft
    control = _probe(tmp_path, lora=False)
    assert control == {"raised": None, "peft_loaded": False}, control


def test_the_hiding_hook_hides_only_peft():
    code = HIDE_PEFT + textwrap.dedent("""
        try:
            import peft  # noqa: F401
        except ModuleNotFoundError as exc:
            print("hidden", exc.name)
        import json, yaml  # everything else still imports
        print("others ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["hidden", "peft", "others", "ok"]
