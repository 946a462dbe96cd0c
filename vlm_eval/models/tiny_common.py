"""Sizes, answer spellings and tokenizer corpus shared by the tiny builders.

``tiny.py`` and ``tiny_qwen.py`` both read these; this module imports neither (one
direction only), and no torch/transformers.
"""
from __future__ import annotations

# Sizes: head_dim 32 because vLLM's CPU attention refuses 16.
HIDDEN, LAYERS, HEAD_DIM, VISION_HIDDEN = 64, 2, 32, 32
IMAGE_SIZE, PATCH = 64, 16  # 4x4 patches
INIT_RANGE = 0.1  # larger than the usual 0.02 so random models give varied answers
VOCAB_TARGET = 640

# Every spelling of the answer options (engines.base.ANSWER_OPTIONS, via option_spellings)
# must be one token; the order is the corpus's (it shapes the trained vocabulary).
ANSWER_SPELLINGS = ["Yes", "No", " yes", " no", "yes", "no", " Yes", " No"]


def corpus(seed: int) -> list[str]:
    """A small deterministic training corpus: clinical yes/no questions and answers."""
    import random

    rng = random.Random(seed)
    findings = ["pleural effusion", "cardiomegaly", "pneumothorax", "consolidation", "edema",
                "atelectasis", "nodule", "mass", "fracture", "pneumonia", "opacity", "infiltration"]
    stems = ["Is there", "Does the image show", "Is there evidence of", "Can you see",
             "Does this chest X-ray show", "Is the patient showing signs of", "Do you see"]
    lines = []
    for _ in range(400):
        q = f"{rng.choice(stems)} {rng.choice(findings)}?"
        a = rng.choice(ANSWER_SPELLINGS)
        lines.append(f"You are a medical imaging expert. For yes/no questions, respond with only Yes or No. {q}{a}")
        lines.append(f"USER: {q} ASSISTANT:{a} User: {q} Assistant:{a} model {q} answer{a}")
    # Template words and a wider vocabulary, so the BPE reaches its target size.
    words = ("user model system assistant USER ASSISTANT User Assistant System left right lung lungs "
             "heart chest lateral frontal view radiograph patient finding findings normal abnormal small "
             "large mild moderate severe bilateral lower upper lobe zone rib ribs spine diaphragm angle "
             "image question answer respond only medical imaging expert present absent signs evidence "
             "tube line catheter device pacemaker thickening scarring calcification hernia emphysema "
             "fibrosis granuloma aortic elongation kyphosis scoliosis costophrenic blunting hilar").split()
    for _ in range(300):
        lines.append(" ".join(rng.choice(words) for _ in range(12)) + f" {rng.randint(0, 999)}.")
    # Answer spellings many times over, so BPE merges each into one token.
    lines += [" ".join(ANSWER_SPELLINGS) + " Yes No yes no"] * 200
    return lines



def check_answer_tokens(tokenizer) -> None:
    """Raise unless every answer spelling is a single token (the corpus is built for it)."""
    for a in ANSWER_SPELLINGS:
        ids = tokenizer.encode(a, add_special_tokens=False)
        if len(ids) != 1:
            raise RuntimeError(f"tiny tokenizer: {a!r} is not a single token ({ids})")
