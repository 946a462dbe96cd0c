"""The transformers engine and the shared prompting helpers, on tiny real-architecture VLMs."""
from __future__ import annotations

import io
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vlm_eval.engines.base import ScoreRequest, ScoreResult, option_spellings  # noqa: E402
from vlm_eval.engines.prompting import (  # noqa: E402
    answer_token_ids,
    build_messages,
    option_logprobs,
    render_prompt,
)
from vlm_eval.engines.transformers import TransformersEngine  # noqa: E402
from vlm_eval.errors import InputError, UnsupportedModelError, UserError  # noqa: E402
from vlm_eval.models import ARCHITECTURES, build_tiny_model  # noqa: E402

SYSTEM = "You are a medical imaging expert. For yes/no questions, respond with only Yes or No."
QUESTIONS = ["Is there a pleural effusion?", "Does the chest X-ray show cardiomegaly?",
             "Is there any evidence of a pneumothorax on this frontal radiograph?"]


def _image(seed: int, size=(96, 80)) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _truncated_png() -> Image.Image:
    """Opens fine (lazy), fails when the processor reads the pixels: a corrupt file."""
    buf = io.BytesIO()
    _image(9).save(buf, "PNG")
    return Image.open(io.BytesIO(buf.getvalue()[:200]))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    torch.set_num_threads(1)  # tiny models: one thread is far faster on a busy 2-core box
    root = tmp_path_factory.mktemp("engine-models")
    return {arch: build_tiny_model(arch, str(root / arch), seed=0) for arch in ARCHITECTURES}


@pytest.fixture(scope="module")
def engines(folders):
    return {arch: TransformersEngine({"name": f"tiny-{arch}", "engine": "transformers", "path": folder,
                                      "options": {"cpu_threads": 1, "max_batch_size": 4}})
            for arch, folder in folders.items()}


def _requests():
    reqs = []
    for q in QUESTIONS:
        for img in (_image(0), _image(1, (300, 200)), None):
            reqs.append(ScoreRequest(prompt=q, system=SYSTEM, image=img))
    reqs.append(ScoreRequest(prompt=QUESTIONS[0], system=None, image=_image(2)))
    return reqs


# ---- prompting helpers (pure) ------------------------------------------------
def test_build_messages_puts_system_first_and_image_before_text():
    msgs = build_messages(ScoreRequest(prompt="Q?", system="S.", image=_image(0)))
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[1]["content"] == [{"type": "image"}, {"type": "text", "text": "Q?"}]
    assert build_messages(ScoreRequest(prompt="Q?")) == [
        {"role": "user", "content": [{"type": "text", "text": "Q?"}]}]


def test_option_logprobs_log_sum_exp_and_other_mass():
    lp = {1: math.log(0.2), 2: math.log(0.1), 3: math.log(0.3)}
    scores, other = option_logprobs(lp, {"Yes": [1, 2], "No": [3, 4]})  # 4 missing = probability 0
    assert scores["Yes"] == pytest.approx(math.log(0.3))
    assert scores["No"] == pytest.approx(math.log(0.3))
    assert other == pytest.approx(0.4)
    vec = [math.log(0.25)] * 4  # a full vector indexed by token id works too
    scores, other = option_logprobs(vec, {"Yes": [0], "No": [1, 2]})
    assert scores["No"] == pytest.approx(math.log(0.5)) and other == pytest.approx(0.25)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_answer_token_ids_are_single_token_spellings(engines, arch):
    tok = engines[arch].tokenizer
    ids = answer_token_ids(tok, ("Yes", "No"))
    for option, option_ids in ids.items():
        assert len(option_ids) == 4  # Yes, " Yes", yes, " yes" all exist in the tiny vocab
        for tid in option_ids:
            assert tok.decode([tid]) in option_spellings(option)
            assert tok.encode(tok.decode([tid]), add_special_tokens=False) == [tid]
    with pytest.raises(UnsupportedModelError, match="Pneumomediastinum"):
        answer_token_ids(tok, ("Yes", "Pneumomediastinum"))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_render_prompt_uses_the_models_template(engines, arch):
    proc = engines[arch].processor
    text = render_prompt(proc, ScoreRequest(prompt="Is it?", system="Sys.", image=_image(0)))
    assert proc.image_token in text and "Sys." in text
    assert text.index(proc.image_token) < text.index("Is it?")  # image first: shared prefix
    assert text.rstrip(" ").endswith({"gemma3": "model\n", "llava": "ASSISTANT:", "idefics3": "Assistant:"}[arch])
    assert proc.image_token not in render_prompt(proc, ScoreRequest(prompt="Is it?"))


# ---- the engine ---------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_scores_with_and_without_image(engines, arch):
    a, b, none = engines[arch].score([ScoreRequest(prompt=QUESTIONS[0], system=SYSTEM, image=_image(0)),
                                      ScoreRequest(prompt=QUESTIONS[0], system=SYSTEM, image=_image(1)),
                                      ScoreRequest(prompt=QUESTIONS[0], system=SYSTEM)])
    for r in (a, b, none):
        assert r.error is None and set(r.logprobs) == {"Yes", "No"}
        assert all(lp < 0 for lp in r.logprobs.values())
        assert 0 <= r.other_mass <= 1 and isinstance(r.text, str)
    assert abs(a.logprobs["Yes"] - none.logprobs["Yes"]) > 1e-4  # the image matters...
    assert abs(a.logprobs["Yes"] - b.logprobs["Yes"]) > 1e-5  # ...and which image it is


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_matches_a_manual_forward_pass(engines, arch):
    eng = engines[arch]
    for req in (ScoreRequest(prompt=QUESTIONS[1], system=SYSTEM, image=_image(3)),
                ScoreRequest(prompt=QUESTIONS[1], system=SYSTEM)):
        text = render_prompt(eng.processor, req)
        kwargs = {"text": [text], "return_tensors": "pt",
                  "add_special_tokens": not text.startswith(eng.tokenizer.bos_token)}
        if req.image is not None:
            kwargs["images"] = [[req.image]]
        inputs = eng.processor(**kwargs)
        assert (inputs["input_ids"][0] == eng.tokenizer.bos_token_id).sum() == 1  # exactly one BOS
        with torch.inference_mode():
            logits = eng.model(**inputs).logits[0, -1]
        lp = torch.log_softmax(logits.double(), -1)
        res = eng.score([req])[0]
        probs_total = 0.0
        for option in ("Yes", "No"):
            ids = [eng.tokenizer.convert_tokens_to_ids(eng.tokenizer.tokenize(s))[0]
                   for s in option_spellings(option)]
            assert res.logprobs[option] == pytest.approx(torch.logsumexp(lp[ids], 0).item(), abs=1e-5)
            probs_total += lp[ids].exp().sum().item()
        assert res.other_mass == pytest.approx(1 - probs_total, abs=1e-5)
        assert res.text == eng.tokenizer.decode([int(lp.argmax())])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batched_equals_single(engines, arch):
    eng = engines[arch]
    reqs = _requests()
    batched = eng.score(reqs)  # batches of 4, mixed lengths: left padding exercised
    for req, got in zip(reqs, batched):
        alone = eng.score([req])[0]
        assert got.error is None
        for option in ("Yes", "No"):
            assert got.logprobs[option] == pytest.approx(alone.logprobs[option], abs=1e-5)


@pytest.mark.parametrize("arch", ["gemma3", "llava"])
def test_a_bad_request_becomes_an_error_row_and_the_rest_still_score(engines, arch):
    eng = engines[arch]
    good = [ScoreRequest(prompt=q, system=SYSTEM, image=_image(i)) for i, q in enumerate(QUESTIONS)]
    reqs = [good[0], ScoreRequest(prompt="Corrupt?", image=_truncated_png()), good[1],
            ScoreRequest(prompt="Not an image?", image="chest.png"), good[2]]
    results = eng.score(reqs)
    assert len(results) == 5 and all(isinstance(r, ScoreResult) for r in results)
    assert results[1].logprobs == {} and results[1].error.startswith("OSError: ")
    assert results[3].logprobs == {} and results[3].error.startswith("TypeError: ")
    for req, res in zip(good, [results[0], results[2], results[4]]):
        assert res.error is None
        assert res.logprobs["Yes"] == pytest.approx(eng.score([req])[0].logprobs["Yes"], abs=1e-5)


def test_options_other_than_yes_no(engines):
    res = engines["gemma3"].score([ScoreRequest(prompt="Q?", options=("No", "Yes"))])[0]
    assert list(res.logprobs) == ["No", "Yes"]
    bad = engines["gemma3"].score([ScoreRequest(prompt="Q?", options=("Yes", "Pneumomediastinum"))])[0]
    assert "Pneumomediastinum" in bad.error


def test_missing_path_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(InputError, match="no-such-model"):
        TransformersEngine({"name": "m", "engine": "transformers", "path": missing})
    with pytest.raises(UserError, match="path"):
        TransformersEngine({"name": "m", "engine": "transformers", "path": None})


def test_bad_options_are_refused(folders):
    with pytest.raises(UserError, match="unknown transformers engine option"):
        TransformersEngine({"name": "m", "path": folders["gemma3"], "options": {"tensor_parallel": 2}})
    with pytest.raises(UserError, match="dtype"):
        TransformersEngine({"name": "m", "path": folders["gemma3"], "options": {"dtype": "int3"}})


def test_model_without_chat_template_is_unsupported(folders, tmp_path):
    copy = tmp_path / "no-template"
    shutil.copytree(folders["llava"], copy)
    os.remove(copy / "chat_template.jinja")
    with pytest.raises(UnsupportedModelError, match="chat template"):
        TransformersEngine({"name": "m", "path": str(copy)})


def test_loads_from_an_fsspec_url(folders, tmp_path, monkeypatch):
    import fsspec

    monkeypatch.setenv("VLM_EVAL_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    for name in os.listdir(folders["gemma3"]):
        with open(os.path.join(folders["gemma3"], name), "rb") as src:
            fs.pipe(f"/models/tiny-gemma3/{name}", src.read())
    eng = TransformersEngine({"name": "m", "path": "memory://models/tiny-gemma3", "options": {"cpu_threads": 1}})
    assert str(tmp_path / "cache") in eng.model.name_or_path
    req = ScoreRequest(prompt=QUESTIONS[0], system=SYSTEM, image=_image(0))
    local = TransformersEngine({"name": "m", "path": folders["gemma3"]})
    assert eng.score([req])[0].logprobs == pytest.approx(local.score([req])[0].logprobs, abs=1e-6)


def test_built_in_engine_name_resolves(folders):
    from vlm_eval.engines import load_engine

    eng = load_engine({"name": "m", "engine": "transformers", "path": folders["llava"], "options": {}})
    assert isinstance(eng, TransformersEngine)
