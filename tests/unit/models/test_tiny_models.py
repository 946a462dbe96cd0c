"""Tiny random-weight VLMs: real architectures that save and load like hub checkpoints."""
from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from safetensors import safe_open  # noqa: E402

from vlm_eval.models import ARCHITECTURES, build_tiny_model, ensure_demo_model  # noqa: E402
from vlm_eval.models.tiny import MARKER_FILE  # noqa: E402

from vlm_eval.engines.base import ANSWER_OPTIONS, option_spellings  # noqa: E402
from vlm_eval.models.tiny_common import ANSWER_SPELLINGS  # noqa: E402

# every spelling the engines read for the answer options (the tokenizers make each one token)
ANSWERS = [s for option in ANSWER_OPTIONS for s in option_spellings(option)]
EXPECTED_CLASSES = {
    "gemma3": ("Gemma3ForConditionalGeneration", "Gemma3Processor"),
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor"),
    "idefics3": ("Idefics3ForConditionalGeneration", "Idefics3Processor"),
}


def test_tiny_tokenizers_cover_every_answer_spelling():
    assert sorted(ANSWER_SPELLINGS) == sorted(ANSWERS)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each architecture built once for the module."""
    torch.set_num_threads(1)  # tiny models: one thread is far faster on a busy 2-core box
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_model(arch, str(root / arch), seed=0) for arch in ARCHITECTURES}


def _keys(folder):
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_reloads_through_auto_classes(built, arch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = built[arch]
    model, info = AutoModelForImageTextToText.from_pretrained(folder, output_loading_info=True)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model).__name__ == EXPECTED_CLASSES[arch][0]
    assert type(processor).__name__ == EXPECTED_CLASSES[arch][1]
    # Every saved weight is used and none is re-initialized on load.
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert processor.chat_template
    # Sizes the vLLM CPU backend accepts.
    text_cfg = model.config.get_text_config()
    assert text_cfg.hidden_size == 64 and text_cfg.num_hidden_layers == 2 and text_cfg.head_dim == 32
    assert model.config.vision_config.hidden_size == 32
    marker = json.load(open(os.path.join(folder, MARKER_FILE)))
    assert marker["trained"] is False and marker["architecture"] == arch
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    assert size < 3_000_000


@pytest.mark.parametrize("arch", ["gemma3", "llava"])
def test_weights_use_the_hub_key_layout(built, arch):
    keys = list(_keys(built[arch]))
    assert any(k.startswith("language_model.model.layers.0.") for k in keys)
    vision = [k for k in keys if k.startswith("vision_tower.")]
    assert vision and all(k.startswith("vision_tower.vision_model.") for k in vision)
    assert not any(k.startswith("model.") for k in keys)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_answer_spellings_are_single_tokens(built, arch):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built[arch])
    for a in ANSWERS:
        ids = tok.encode(a, add_special_tokens=False)
        assert len(ids) == 1, (a, ids)
        assert tok.decode(ids) == a
    assert len(tok) >= 500
    # Real tokenizers prepend BOS; chat templates that already carry it must not get two.
    assert tok.encode("Yes")[0] == tok.bos_token_id


def test_gemma3_has_newline_tokens_and_image_tokens(built):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(built["gemma3"])
    vocab = processor.tokenizer.get_vocab()
    for n in ("\n", "\n\n", "\n\n\n", "\n\n\n\n"):  # vLLM's Gemma3 processor looks these up
        assert n in vocab
    cfg = json.load(open(os.path.join(built["gemma3"], "config.json")))
    assert vocab["<image_soft_token>"] == cfg["image_token_index"]
    assert vocab["<start_of_image>"] == cfg["boi_token_index"]
    assert processor.image_seq_length == cfg["mm_tokens_per_image"] == 4


def test_build_is_deterministic_per_seed(built, tmp_path):
    again = _keys(build_tiny_model("gemma3", str(tmp_path / "a"), seed=0))
    first = _keys(built["gemma3"])
    assert again.keys() == first.keys()
    assert all(torch.equal(again[k], first[k]) for k in first)
    with open(os.path.join(built["gemma3"], "tokenizer.json")) as f1, open(tmp_path / "a" / "tokenizer.json") as f2:
        assert f1.read() == f2.read()
    other = _keys(build_tiny_model("gemma3", str(tmp_path / "b"), seed=1))
    assert not torch.equal(other["language_model.model.embed_tokens.weight"],
                           first["language_model.model.embed_tokens.weight"])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_no_weight_matrix_is_all_zero(built, arch):
    # A zero projection (Gemma3's default init) would make every image look the same.
    for name, t in _keys(built[arch]).items():
        if t.ndim >= 2:
            assert t.abs().sum() > 0, name


def test_unknown_architecture_is_refused(tmp_path):
    with pytest.raises(ValueError, match="gemma3"):
        build_tiny_model("qwen9", str(tmp_path))


def test_ensure_demo_model_builds_once_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_EVAL_CACHE", str(tmp_path))
    path = ensure_demo_model()
    assert path == str(tmp_path / "models" / "tiny-gemma3-v1")
    assert json.load(open(os.path.join(path, MARKER_FILE)))["architecture"] == "gemma3"
    stamp = os.path.getmtime(os.path.join(path, "model.safetensors"))
    assert ensure_demo_model() == path
    assert os.path.getmtime(os.path.join(path, "model.safetensors")) == stamp
    assert os.listdir(tmp_path / "models") == ["tiny-gemma3-v1"]  # no temp folders left


def test_ensure_demo_model_replaces_a_half_written_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_EVAL_CACHE", str(tmp_path))
    broken = tmp_path / "models" / "tiny-gemma3-v1"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{")
    path = ensure_demo_model()
    assert os.path.exists(os.path.join(path, MARKER_FILE))
    assert json.load(open(os.path.join(path, "config.json")))["model_type"] == "gemma3"


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - absent, or a build that fails to import
        return False
    return True


@pytest.mark.skipif(not _has_torchvision(), reason="Qwen2-VL's processor needs torchvision")
def test_qwen2_vl_builds_and_reloads(tmp_path):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = build_tiny_model("qwen2_vl", str(tmp_path / "qwen2_vl"), seed=0)
    model, info = AutoModelForImageTextToText.from_pretrained(folder, output_loading_info=True)
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2VLProcessor"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    text_cfg = model.config.get_text_config()
    assert text_cfg.hidden_size == 64 and text_cfg.num_hidden_layers == 2
    assert text_cfg.hidden_size // text_cfg.num_attention_heads == 32
    assert sum(text_cfg.rope_parameters["mrope_section"]) == 32 // 2
    tok = processor.tokenizer
    assert tok.bos_token is None  # like Qwen2's tokenizer
    for a in ANSWERS:
        assert len(tok.encode(a, add_special_tokens=False)) == 1, a
    cfg = json.load(open(os.path.join(folder, "config.json")))
    assert tok.convert_tokens_to_ids("<|image_pad|>") == cfg["image_token_id"]
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text and text.endswith("<|im_start|>assistant\n")
    out = processor(text=[text], images=[Image.new("RGB", (64, 64), "white")], return_tensors="pt")
    assert (out["input_ids"] == cfg["image_token_id"]).sum() == 4  # 56x56 -> 4x4 patches -> 2x2 merged
    keys = _keys(folder)
    assert any(k.startswith("visual.") for k in keys) and any(k.startswith("model.layers.0.") for k in keys)
    assert all(t.abs().sum() > 0 for k, t in keys.items() if t.ndim >= 2 or ("norm" in k and "weight" in k))
