"""Which model folders the vllm engine can drive, and LoRA adapter facts.

Pure file inspection (config.json, adapter_config.json): no vLLM import.
"""
from __future__ import annotations

import json
import os
import zlib

from vlm_eval.engines.model_paths import read_model_config
from vlm_eval.errors import UnsupportedModelError

# architectures (config.json "architectures") whose chat template and image placeholder
# vlm_eval knows how to drive through vLLM, and the model_type each one has.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "Gemma3ForConditionalGeneration": "gemma3",  # MedGemma
    # LLaVA-1.5 style (llava-hf) and other HF-format LLaVAs. Not LLaVA-Rad: it exists only in the
    # original LLaVA layout (LlavaLlamaForCausalLM, open_clip tower): engine llava_original.
    "LlavaForConditionalGeneration": "llava",
    "Qwen2VLForConditionalGeneration": "qwen2_vl",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Idefics3ForConditionalGeneration": "idefics3",
}


def model_architecture(folder: str) -> str:
    """The architecture named in ``folder/config.json`` (first of ``architectures``)."""
    config = read_model_config(folder)
    archs = config.get("architectures") or []
    return str(archs[0]) if archs else f"<model_type {config.get('model_type')!r}, no architectures>"


def check_architecture(folder: str, name: str = "model") -> str:
    arch = model_architecture(folder)
    if arch == "LlavaLlamaForCausalLM":  # the original LLaVA code's layout (LLaVA-Rad)
        raise UnsupportedModelError(f"model {name!r}: {arch} is the original LLaVA code's layout, which vLLM "
                                    "cannot load; use engine 'llava_original'")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"model {name!r}: architecture {arch} is not supported by the vllm engine; supported: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} (Gemma3/MedGemma, LLaVA, Qwen2-VL, Qwen2.5-VL, Idefics3). "
            "Use engine 'transformers', or a plug-in engine ('package.module:factory')"
        )
    return arch


def lora_rank(adapter: str) -> int | None:
    try:
        with open(os.path.join(adapter, "adapter_config.json")) as f:
            return int(json.load(f).get("r"))
    except (OSError, ValueError, TypeError):
        return None


def vllm_lora_rank(adapter: str) -> int | None:
    """The ``max_lora_rank`` for an adapter: its rank rounded up to one vLLM accepts
    (its MaxLoRARanks); None when the adapter states no rank (vLLM's default, 16)."""
    rank = lora_rank(adapter)
    if not rank:
        return None
    allowed = [r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank]
    return allowed[0] if allowed else rank


# Module-path parts that are not the language model (vision towers, projectors / connectors).
_NON_LM_PARTS = ("vision_tower", "vision_model", "visual", "multi_modal_projector", "mm_projector",
                 "vision_encoder", "image_newline", "connector")


def lora_modules_outside_language_model(adapter: str) -> list[str]:
    """Modules of a PEFT adapter's weights that sit outside the language model (e.g. a
    vision tower's q_proj adapted because ``target_modules`` named bare ``q_proj`` and
    ``layers_to_transform`` matched the tower's ``layers.N`` too). vLLM applies LoRA to
    the language model only (unless ``enable_tower_connector_lora``) and silently drops
    these: image scores would differ from transformers + PEFT (seen: 0.26 in margin).
    Reads the safetensors header only; [] for a ``.bin`` adapter (not inspected)."""
    import struct

    path = os.path.join(adapter, "adapter_model.safetensors")
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            keys = [k for k in json.loads(f.read(size)) if k != "__metadata__"]
    except (OSError, ValueError, struct.error):
        return []
    mods = {k.rsplit(".lora_", 1)[0] for k in keys}
    return sorted(m for m in mods if any(part in m.split(".") for part in _NON_LM_PARTS))


def check_lora_targets(adapter: str, what: str) -> None:
    """UnsupportedModelError if the adapter adapts modules vLLM would silently skip."""
    outside = lora_modules_outside_language_model(adapter)
    if outside:
        raise UnsupportedModelError(
            f"{what} adapts {len(outside)} module(s) outside the language model (e.g. {outside[0]}), which vLLM "
            "would silently skip, scoring a different model than transformers + PEFT. Retrain with PEFT "
            "exclude_modules for the vision tower (or target the language model's modules by full name), "
            "or use engine 'transformers'")


def lora_id(name: str, path: str) -> int:
    """A stable, positive LoRA id per (entry name, adapter path)."""
    return (zlib.crc32(f"{name}\0{path}".encode()) & 0x7FFFFFFF) or 1
