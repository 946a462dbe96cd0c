"""Engine llava_original on tiny checkpoints written in the original LLaVA layout (LLaVA-Rad's).

The reference forward below is written from the layout alone (safetensors / torch.load of the
files, timm's forward_intermediates, torch.nn.functional, transformers' LlamaForCausalLM); it
shares no code with the engine.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("peft")

from vlm_eval.engines.base import ScoreRequest  # noqa: E402
from vlm_eval.errors import InputError, UnsupportedModelError  # noqa: E402

Q = "Is there a pleural effusion?"
SYSTEM = "You are a medical imaging expert."


def _image(seed: int, size=(120, 100)):
    from PIL import Image

    return Image.fromarray((np.random.RandomState(seed).rand(size[1], size[0], 3) * 255).astype("uint8"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from vlm_eval.models.tiny_llava_original import build_tiny_llava_original, build_tiny_lora

    root = tmp_path_factory.mktemp("llava_original")
    model = build_tiny_llava_original(str(root / "llava-tiny"))
    lora = build_tiny_lora(model, str(root / "lora-l1"), layers=[1])
    return {"root": root, "model": model, "lora": lora}


def _engine(path, lora=None, **options):
    from vlm_eval.engines.llava_original import LlavaOriginalEngine

    return LlavaOriginalEngine({"name": "t", "path": path, "lora": lora, "options": {"cpu_threads": 1, **options}})


@pytest.fixture(scope="module")
def base(tiny):
    from vlm_eval.engines.llava_original import LlavaOriginalEngine
    from vlm_eval.engines.loader import load_engine

    # Through the registry, as a job's `engine: llava_original` entry is built.
    eng = load_engine({"name": "t", "engine": "llava_original", "path": tiny["model"], "options": {"cpu_threads": 1}})
    assert isinstance(eng, LlavaOriginalEngine)
    return eng


def test_layout_is_the_original_llava_one(tiny):
    from safetensors import safe_open

    files = set(os.listdir(tiny["model"]))
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    cfg = json.load(open(os.path.join(tiny["model"], "config.json")))
    assert cfg["architectures"] == ["LlavaLlamaForCausalLM"] and cfg["model_type"] == "llava_llama"
    for key in ("mm_vision_tower", "mm_vision_tower_config", "mm_vision_tower_checkpoint", "mm_projector_type",
                "mm_hidden_size", "mm_vision_select_layer", "mm_use_im_start_end"):
        assert key in cfg
    # Training-time config path (as LLaVA-Rad ships it); the file itself sits beside config.json.
    assert not os.path.exists(os.path.join(tiny["model"], cfg["mm_vision_tower_config"]))
    assert os.path.basename(cfg["mm_vision_tower_config"]) in files and cfg["mm_vision_tower_checkpoint"] in files
    with safe_open(os.path.join(tiny["model"], "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"model.mm_projector.0.weight", "model.mm_projector.2.weight", "lm_head.weight",
            "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"} <= keys


def test_scores_with_and_without_image(base):
    reqs = [ScoreRequest(prompt=Q, system=SYSTEM, image=_image(0)), ScoreRequest(prompt=Q, system=SYSTEM, image=_image(1)),
            ScoreRequest(prompt=Q, system=SYSTEM, image=None)]
    batched = base.score(reqs)
    assert all(r.error is None and set(r.logprobs) == {"Yes", "No"} for r in batched)
    assert all(math.isfinite(v) and v < 0 for r in batched for v in r.logprobs.values())
    margins = [r.logprobs["Yes"] - r.logprobs["No"] for r in batched]
    assert len({round(m, 6) for m in margins}) == 3  # the image matters, and which image
    bad = base.score([reqs[0], ScoreRequest(prompt=Q, system=SYSTEM, image="not an image"), reqs[2]])
    assert bad[1].error and "PIL" in bad[1].error and bad[0].error is None and bad[2].error is None
    for req, r in zip(reqs, batched):  # left-padded batch == each request alone
        alone = base.score([req])[0]
        for k in ("Yes", "No"):
            assert alone.logprobs[k] == pytest.approx(r.logprobs[k], abs=1e-5)


def test_targeted_lora_changes_scores_on_its_layers_only(tiny, base):
    cfg = json.load(open(os.path.join(tiny["lora"], "adapter_config.json")))
    assert cfg["layers_to_transform"] == [1] and cfg["r"] == 16 and cfg["lora_alpha"] == 32
    eng = _engine(tiny["model"], lora=tiny["lora"])
    with_lora = {n for n, _ in eng.lm.named_modules() if n.endswith("lora_A.default")}
    assert with_lora and all(".layers.1." in n for n in with_lora)
    reqs = [ScoreRequest(prompt=Q, system=SYSTEM, image=_image(0)), ScoreRequest(prompt=Q, system=SYSTEM, image=None)]
    for a, b in zip(base.score(reqs), eng.score(reqs)):
        assert abs((a.logprobs["Yes"] - a.logprobs["No"]) - (b.logprobs["Yes"] - b.logprobs["No"])) > 1e-3


def _reference_logprobs(folder: str, question: str, system: str, image, lora: str | None = None) -> dict:
    """Plain forward from the files: trunk -> select layer -> projector -> splice -> Llama -> log-softmax."""
    import timm
    import torch.nn.functional as F
    from safetensors.torch import load_file
    from torchvision import transforms
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    cfg = json.load(open(os.path.join(folder, "config.json")))
    oc = json.load(open(os.path.join(folder, os.path.basename(cfg["mm_vision_tower_config"]))))
    ckpt = torch.load(os.path.join(folder, cfg["mm_vision_tower_checkpoint"]), weights_only=True)["state_dict"]
    trunk = timm.create_model(oc["vision_cfg"]["timm_model_name"], num_classes=0)
    prefix = "module.visual.trunk."
    trunk.load_state_dict({k[len(prefix):]: v for k, v in ckpt.items() if k.startswith(prefix)}, strict=False)
    trunk.eval()
    size = oc["vision_cfg"]["image_size"]
    pre = transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                              transforms.CenterCrop(size), transforms.ToTensor(),
                              transforms.Normalize((0.48145466, 0.4578275, 0.40821073),
                                                   (0.26862954, 0.26130258, 0.27577711))])
    weights = load_file(os.path.join(folder, "model.safetensors"))
    llama_keys = {k: v for k, v in cfg.items() if not k.startswith(("mm_", "tune_", "freeze_", "use_mm", "image_",
                                                                      "tokenizer_"))}
    llama_keys.pop("architectures"), llama_keys.pop("model_type")
    lm = LlamaForCausalLM(LlamaConfig(**llama_keys))
    lm.load_state_dict({k: v for k, v in weights.items() if "mm_projector" not in k})
    if lora:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, lora)
    lm.eval()
    tok = AutoTokenizer.from_pretrained(folder)
    embed = lm.get_input_embeddings().weight
    with torch.no_grad():
        if image is not None:
            n_blocks = len(trunk.blocks)
            layer = cfg["mm_vision_select_layer"] % (n_blocks + 1)  # index into [embeddings, block 1..n]
            _, inter = trunk.forward_intermediates(pre(image.convert("RGB"))[None], indices=[layer - 1], norm=False,
                                                   output_fmt="NLC", return_prefix_tokens=True)
            patches = inter[0][0][0]  # (tokens, width), prefix (CLS) tokens dropped
            h = F.gelu(F.linear(patches, weights["model.mm_projector.0.weight"], weights["model.mm_projector.0.bias"]))
            img = F.linear(h, weights["model.mm_projector.2.weight"], weights["model.mm_projector.2.bias"])
            before, after = f"{system} USER: ", f"\n{question} ASSISTANT:"
            ids0 = tok(before).input_ids
            ids1 = tok(after).input_ids[1:]  # no second BOS
            seq = torch.cat([embed[ids0], img, embed[ids1]])
        else:
            seq = embed[tok(f"{system} USER: {question} ASSISTANT:").input_ids]
        logp = torch.log_softmax(lm(inputs_embeds=seq[None]).logits[0, -1].float(), -1)
    out = {}
    for option in ("Yes", "No"):
        ids = {tok.encode(s, add_special_tokens=False)[0] for s in (option, " " + option, option.lower(),
                                                                    " " + option.lower())
               if len(tok.encode(s, add_special_tokens=False)) == 1}
        out[option] = float(torch.logsumexp(logp[sorted(ids)], 0))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("with_lora", [False, True])
def test_equals_a_plain_pytorch_forward(tiny, base, with_lora):
    eng = _engine(tiny["model"], lora=tiny["lora"]) if with_lora else base
    reqs = [ScoreRequest(prompt=Q, system=SYSTEM, image=_image(3)), ScoreRequest(prompt=Q, system=SYSTEM, image=None)]
    got = eng.score(reqs)
    for req, res in zip(reqs, got):
        ref = _reference_logprobs(tiny["model"], Q, SYSTEM, req.image, tiny["lora"] if with_lora else None)
        for k in ("Yes", "No"):
            assert res.logprobs[k] == pytest.approx(ref[k], abs=1e-5), (req.image is not None, k)


@pytest.mark.slow
def test_llava_rad_release_form_equals_merged_form(tiny):
    """LLaVA-Rad ships adapter + non_lora_trainables.bin over a Vicuna base (options.model_base)."""
    from vlm_eval.models.tiny_llava_original import build_tiny_llava_original

    release = build_tiny_llava_original(str(tiny["root"] / "release"), form="lora")
    assert {"adapter_config.json", "non_lora_trainables.bin"} <= set(os.listdir(release))
    assert not any(f.startswith("model") and f.endswith(".safetensors") for f in os.listdir(release))
    with pytest.raises(InputError, match="model_base"):
        _engine(release)
    a = _engine(release, model_base=release + "-base")
    b = _engine(tiny["model"], lora=release)  # same seed: same base, the release's adapter unmerged
    reqs = [ScoreRequest(prompt=Q, system=SYSTEM, image=_image(4)), ScoreRequest(prompt=Q, system=None, image=None)]
    for x, y in zip(a.score(reqs), b.score(reqs)):
        for k in ("Yes", "No"):
            assert x.logprobs[k] == pytest.approx(y.logprobs[k], abs=1e-5)


def test_refusals_name_the_fix(tiny, tmp_path):
    from vlm_eval.engines.vllm_models import check_architecture
    from vlm_eval.models.tiny import build_tiny_model

    with pytest.raises(UnsupportedModelError, match="llava_original"):
        check_architecture(tiny["model"], "llava-rad")  # vLLM cannot load this layout: say which engine can
    hf = build_tiny_model("llava", str(tmp_path / "hf-llava"))
    with pytest.raises(UnsupportedModelError, match="'transformers' or 'vllm'"):
        _engine(hf)
    with pytest.raises(InputError, match="vision_tower_checkpoint"):
        _engine(tiny["model"], vision_tower_checkpoint=str(tmp_path / "nope.pt"))
