"""Tiny random checkpoints in the original LLaVA code's layout (LLaVA-Rad's), for tests.

``build_tiny_llava_original(out_dir)`` writes exactly what a LLaVA-Rad-style folder holds:
``config.json`` (``architectures: ["LlavaLlamaForCausalLM"]``, ``model_type: llava_llama``,
the Llama fields, ``mm_vision_tower``, ``mm_vision_tower_config`` / ``_checkpoint`` as
training-time paths whose files ship beside config.json, ``mm_projector_type``,
``mm_hidden_size``, ``mm_vision_select_layer``, ``mm_vision_select_feature``,
``mm_use_im_start_end``...), the tokenizer, and the weights: ``model.safetensors`` with
the Llama model under ``model.*`` / ``lm_head.*`` and the projector under
``model.mm_projector.*`` (``form="merged"``), or LLaVA-Rad's release form
(``form="lora"``: ``adapter_config.json`` + ``adapter_model.safetensors`` +
``non_lora_trainables.bin``, with the base Llama written to ``<out_dir>-base``). The vision
tower is an open_clip model (config JSON + ``.pt`` checkpoint) whose trunk is timm's tiny
``test_vit`` (64 wide, 6 blocks, 16 px patches at 160 px), in place of BiomedCLIP-CXR's
``vit_base_patch14_dinov2`` at 518 px.

``build_tiny_lora(model_dir, out_dir, layers)`` writes a PEFT LoRA (r = 16, alpha = 32) on the
language model, targeted with ``layers_to_transform`` or on every layer.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

from vlm_eval.models.tiny import _text_dims, build_tokenizer
from vlm_eval.models.tiny_common import HIDDEN, INIT_RANGE

TOWER_NAME = "tiny_biomedclip_cxr_160"
TOWER_CONFIG = f"{TOWER_NAME}.json"
TOWER_CHECKPOINT = f"{TOWER_NAME}_checkpoint.pt"
OPEN_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "",
                   "timm_proj": "linear", "image_size": 160},
    # A tiny built-in text tower (LLaVA-Rad's is BiomedBERT); the engine never builds it.
    "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}
TRUNK_WIDTH = 64  # test_vit's embed_dim


def _tower(out_dir: str, seed: int) -> None:
    import open_clip  # noqa: F401 (registers timm's test_vit through timm)
    import torch
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    clip = CLIP(**OPEN_CLIP_CONFIG)
    with torch.no_grad():  # timm's init is tiny (std 0.02): widen it so images give distinct features
        for name, p in clip.visual.trunk.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    with open(os.path.join(out_dir, TOWER_CONFIG), "w") as f:
        json.dump(OPEN_CLIP_CONFIG, f, indent=2)
    # open_clip training checkpoints: {"epoch", "name", "state_dict" with "module." prefixes}
    sd = {f"module.{k}": v for k, v in clip.state_dict().items()}
    torch.save({"epoch": 1, "name": TOWER_NAME, "state_dict": sd}, os.path.join(out_dir, TOWER_CHECKPOINT))


def llava_config(tokenizer, projector: str = "mlp2x_gelu", select_layer: int = -2) -> dict[str, Any]:
    text = _text_dims(tokenizer)
    return {
        "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama",
        **text, "hidden_act": "silu", "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "float32",
        "rope_theta": 10000.0, "attention_bias": False, "use_cache": True,
        # Training-time paths, as LLaVA-Rad's config.json keeps them (the files ship beside it).
        "mm_vision_tower": TOWER_NAME,
        "mm_vision_tower_config": f"llava/model/multimodal_encoder/open_clip_encoder/model_configs/{TOWER_CONFIG}",
        "mm_vision_tower_checkpoint": TOWER_CHECKPOINT,
        "mm_projector_type": projector, "mm_hidden_size": TRUNK_WIDTH, "mm_vision_select_layer": select_layer,
        "mm_vision_select_feature": "patch", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "mm_patch_merge_type": "flat", "image_aspect_ratio": "square", "use_mm_proj": True,
        "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False, "tokenizer_padding_side": "right",
    }


def build_tiny_llava_original(out_dir: str, seed: int = 0, projector: str = "mlp2x_gelu",
                              form: str = "merged") -> str:
    """Write a tiny random LLaVA-layout checkpoint to ``out_dir``; returns it. See the module docstring."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlm_eval.engines.llava_original_parts import build_projector, llama_config

    if form not in ("merged", "lora"):
        raise ValueError(f"form must be 'merged' or 'lora', not {form!r}")
    os.makedirs(out_dir, exist_ok=True)
    tokenizer = build_tokenizer("llava", seed)
    cfg = llava_config(tokenizer, projector)
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(llama_config(cfg)).eval()
    proj = build_projector(projector, TRUNK_WIDTH, HIDDEN)
    with torch.no_grad():
        for p in proj.parameters():
            p.normal_(0, INIT_RANGE * 3)
    weights = {k: v.contiguous() for k, v in lm.state_dict().items()}
    proj_sd = {f"model.mm_projector.{k}": v.contiguous() for k, v in proj.state_dict().items()}
    _tower(out_dir, seed)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if form == "merged":
        tokenizer.save_pretrained(out_dir)
        save_file({**weights, **proj_sd}, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        return out_dir
    # LLaVA-Rad's release: a LoRA fine-tune of the base LM + the projector as non-LoRA trainables.
    base = out_dir.rstrip("/") + "-base"
    os.makedirs(base, exist_ok=True)
    tokenizer.save_pretrained(base)
    LlamaForCausalLM(LlamaConfig(**llama_config(cfg).to_dict())).save_pretrained(base)  # config only, replaced below
    save_file(weights, os.path.join(base, "model.safetensors"), metadata={"format": "pt"})
    torch.save({f"base_model.model.{k}": v for k, v in proj_sd.items()},
               os.path.join(out_dir, "non_lora_trainables.bin"))
    build_tiny_lora(out_dir, out_dir, layers=None, seed=seed + 1, base=base)
    return out_dir


def build_tiny_lora(model_dir: str, out_dir: str, layers: Sequence[int] | None, seed: int = 1,
                    base: str | None = None, r: int = 16, alpha: int = 32) -> str:
    """A PEFT LoRA on the language model of ``model_dir`` (q/k/v/o projections), on ``layers``
    only (``layers_to_transform``) or on all layers; random B so it changes scores."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from vlm_eval.engines.llava_original_parts import llama_config, read_config

    cfg = read_config(model_dir, "tiny")
    lm = LlamaForCausalLM(llama_config(cfg))
    lcfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      layers_to_transform=list(layers) if layers is not None else None,
                      layers_pattern="layers" if layers is not None else None)
    peft_model = get_peft_model(lm, lcfg)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    if base:
        peft_model.peft_config["default"].base_model_name_or_path = base
    peft_model.save_pretrained(out_dir)
    return out_dir
