"""A tiny VLM that has learned a shortcut, so the taxonomy has something real to find.

``build_shortcut_model(out_dir)`` trains the tiny LLaVA (vlm_eval.models.tiny, random init)
for about a minute on CPU on synthetic chest images (datasets.synthetic.draw_cxr):

- finding A, **cardiomegaly**, is visible in the pixels (a wide heart); 3 in 4 training
  images have it; with no image the question is trained to "No" (nothing to see);
- finding B, **pneumothorax**, is answerable from the question text alone: every training
  question about it is "Yes" (a selection bias), and its images never show one.

So the model answers A from the image (with image: mostly "Yes", correct; text only: "No":
image-reliant -> **Ideal**) and B from the text (same answer with or without the image ->
**Dangerous**, and accurate). Training targets the scored quantity itself, the yes/no margin
(log-sum-exp over each answer's single-token spellings), on the exact prompts the engines
build (the model's chat template, the job's default system prompt, every paraphrase of
prompt set cxr-binary-v1). The folder is saved like any tiny model (hub key layout, so
vLLM loads it too). ``write_shortcut_dataset`` writes a held-out evaluation set in the same
shape as a generic manifest (``adapter: manifest``).
"""
from __future__ import annotations

import csv
import json
import os
import time
from typing import Any

FINDING_A, FINDING_B = "cardiomegaly", "pneumothorax"
PREVALENCE_A = 0.75
SIZE = 128
MARKER = "vlm_eval_shortcut.json"
BUILD_VERSION = 1


def _label(finding: str, rng) -> bool:
    return bool(rng.random() < PREVALENCE_A) if finding == FINDING_A else True


def _image(seed: int, index: int, finding: str, present: bool):
    from PIL import Image

    from vlm_eval.datasets.synthetic import draw_cxr

    # B's images never show B: its label is not in the pixels.
    arr = draw_cxr(seed, index, SIZE, finding, present if finding == FINDING_A else False)
    return Image.fromarray(arr).convert("RGB")


def write_shortcut_dataset(out_dir: str, n_per_finding: int = 24, seed: int = 101) -> str:
    """Held-out images + ``manifest.csv`` (A and B alternating); returns the manifest path."""
    import random

    from vlm_eval.prompts import load_prompt_set

    pset = load_prompt_set("cxr-binary-v1")
    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for i in range(2 * n_per_finding):
        finding = (FINDING_A, FINDING_B)[i % 2]
        present = _label(finding, rng)
        name = f"shortcut-{i:04d}.png"
        _image(seed, i, finding, present).convert("L").save(os.path.join(out_dir, name))
        rows.append({"sample_id": f"sc-{i:04d}", "image": name, "question": pset.question_for(finding),
                     "label": "yes" if present else "no", "patient_id": f"p{i:04d}", "finding": finding})
    path = os.path.join(out_dir, "manifest.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _examples(n_images: int, seed: int) -> list[tuple[str, Any, bool]]:
    """(question variant, image or None, target yes?) for every variant of every image, plus text-only."""
    import random

    from vlm_eval.prompts import load_prompt_set

    pset = load_prompt_set("cxr-binary-v1")
    rng = random.Random(seed)
    out = []
    for finding in (FINDING_A, FINDING_B):
        q = pset.question_for(finding)
        variants = pset.variants(q, finding, len(pset.findings[pset.finding_key(finding)].paraphrases))
        for i in range(n_images):
            present = _label(finding, rng)
            img = _image(seed, i, finding, present)
            out += [(v, img, present) for v in variants]
        # Text only: A -> "No" (nothing to see), B -> "Yes" (the text shortcut); repeated so they weigh.
        out += [(v, None, finding == FINDING_B) for v in variants] * max(1, n_images // 8)
    return out


def build_shortcut_model(out_dir: str, seed: int = 0, n_images: int = 64, epochs: int = 4,
                         lr: float = 3e-3, batch_size: int = 32) -> dict:
    """Train and save the shortcut model to ``out_dir``; returns the training record (also saved)."""
    import random

    import torch

    from vlm_eval.config import DEFAULT_SYSTEM
    from vlm_eval.engines.base import ANSWER_OPTIONS, ScoreRequest
    from vlm_eval.engines.prompting import answer_token_ids, render_prompt
    from vlm_eval.models.tiny import _to_hub_layout, build_tiny_model

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    build_tiny_model("llava", out_dir, seed=seed)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(out_dir)
    model = AutoModelForImageTextToText.from_pretrained(out_dir, dtype=torch.float32)
    tok = processor.tokenizer
    tok.padding_side = "left"
    ids = answer_token_ids(tok, ANSWER_OPTIONS)
    yes_ids, no_ids = torch.tensor(ids[ANSWER_OPTIONS[0]]), torch.tensor(ids[ANSWER_OPTIONS[1]])

    examples = _examples(n_images, seed + 7)
    batches = []  # fixed batches, processor run once; image and text-only prompts apart
    for with_image in (True, False):
        group = [e for e in examples if (e[1] is not None) == with_image]
        random.Random(seed).shuffle(group)
        for s in range(0, len(group), batch_size):
            chunk = group[s:s + batch_size]
            texts = [render_prompt(processor, ScoreRequest(prompt=q, system=DEFAULT_SYSTEM, image=img))
                     for q, img, _ in chunk]
            kw: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
            if with_image:
                kw["images"] = [[img] for _, img, _ in chunk]
            inputs = dict(processor(**kw))
            inputs["position_ids"] = (inputs["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
            target = torch.tensor([1.0 if y else -1.0 for _, _, y in chunk])
            batches.append((inputs, target))

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    # One thread: tiny matrices, and torch's spinning pool can slow a busy CPU many-fold.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        order = list(range(len(batches)))
        losses = []
        for epoch in range(epochs):
            random.Random(seed + epoch).shuffle(order)
            total = 0.0
            for b in order:
                inputs, target = batches[b]
                logits = model(**inputs, logits_to_keep=1).logits[:, -1, :].float()
                logp = torch.log_softmax(logits, -1)
                margin = torch.logsumexp(logp[:, yes_ids], -1) - torch.logsumexp(logp[:, no_ids], -1)
                loss = torch.nn.functional.softplus(-target * margin).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach())
            losses.append(round(total / len(batches), 4))
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    _to_hub_layout(out_dir)  # the key layout vLLM reads (as build_tiny_model writes it)
    record = {"build_version": BUILD_VERSION, "seed": seed, "finding_a": FINDING_A, "finding_b": FINDING_B,
              "prevalence_a": PREVALENCE_A, "n_images_per_finding": n_images, "examples": len(examples),
              "epochs": epochs, "loss_per_epoch": losses, "train_seconds": round(time.perf_counter() - t0, 1)}
    with open(os.path.join(out_dir, MARKER), "w") as f:
        json.dump(record, f, indent=2)
    return record


def ensure_shortcut_model() -> str:
    """Train the shortcut model once into the cache (``<cache>/models/shortcut-vN``) and return
    its folder (built beside it and renamed into place: no half-written model)."""
    from vlm_eval.engines.model_paths import build_folder_once
    from vlm_eval.storage import cache_dir

    target = os.path.join(cache_dir(), "models", f"shortcut-v{BUILD_VERSION}")
    return build_folder_once(target, build_shortcut_model, lambda d: os.path.isfile(os.path.join(d, MARKER)))
