"""Prompt and answer-token helpers shared by the transformers and vLLM engines.

Pure functions: no torch import, nothing engine-specific. Both engines must build
the same prompt and read the same tokens, or their numbers would not compare.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from vlm_eval.engines.base import ScoreRequest, logsumexp, option_spellings
from vlm_eval.errors import UnsupportedModelError

__all__ = ["build_messages", "render_prompt", "answer_token_ids", "option_logprobs", "check_processor"]


def build_messages(request: ScoreRequest) -> list[dict[str, Any]]:
    """Chat messages for one request, in the structured ("content parts") format.

    The image comes before the question text so that every paraphrase of one
    image shares the longest possible prefix (prefix/encoder cache reuse).
    Contents are always lists of parts: some templates (LLaVA's) require it.
    """
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
    parts: list[dict[str, Any]] = []
    if request.image is not None:
        parts.append({"type": "image"})
    parts.append({"type": "text", "text": request.prompt})
    messages.append({"role": "user", "content": parts})
    return messages


def _template_owner(processor: Any) -> Any:
    """The object whose chat template to use: the processor, else its tokenizer."""
    if getattr(processor, "chat_template", None):
        return processor
    tok = getattr(processor, "tokenizer", None)
    if tok is not None and getattr(tok, "chat_template", None):
        return tok
    return None


def _model_label(processor: Any) -> str:
    name = getattr(getattr(processor, "tokenizer", processor), "name_or_path", "") or ""
    return f"{type(processor).__name__}" + (f" ({name})" if name else "")


def check_processor(processor: Any) -> None:
    """Raise UnsupportedModelError unless the processor can prompt with an image.

    Called once when an engine loads a model, so a model we cannot prompt fails
    the job at start instead of turning every row into an error.
    """
    if _template_owner(processor) is None:
        raise UnsupportedModelError(
            f"{_model_label(processor)} has no chat template, so vlm_eval cannot build its prompts; "
            "use a chat/instruction-tuned checkpoint, or add a chat_template.jinja to the model folder"
        )
    if not getattr(processor, "image_token", None):
        raise UnsupportedModelError(
            f"{_model_label(processor)} defines no image placeholder token (processor.image_token); "
            "vlm_eval needs an image-text-to-text model whose processor inserts image tokens"
        )
    render_prompt(processor, ScoreRequest(prompt="Is this a test?", system="System.", image=_Placeholder()))


class _Placeholder:
    """Stands in for an image when only the rendered text is wanted."""


def render_prompt(processor: Any, request: ScoreRequest) -> str:
    """The model's own chat template applied to ``build_messages(request)``.

    ``add_generation_prompt=True``: the text ends where the answer's first token
    goes. A template that refuses a system turn gets the system text prepended to
    the user turn instead. Raises UnsupportedModelError if there is no template,
    or if an image was given but the template placed no image placeholder.
    """
    owner = _template_owner(processor)
    if owner is None:
        raise UnsupportedModelError(
            f"{_model_label(processor)} has no chat template, so vlm_eval cannot build its prompts"
        )
    messages = build_messages(request)
    try:
        text = owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # jinja2 TemplateError from raise_exception(), typically
        if not request.system or "system" not in str(exc).lower():
            raise
        # Template has no system role (e.g. some Mistral/Gemma2 templates): fold it in.
        merged = ScoreRequest(prompt=f"{request.system}\n\n{request.prompt}", system=None,
                              image=request.image, options=request.options)
        text = owner.apply_chat_template(build_messages(merged), add_generation_prompt=True, tokenize=False)
    if isinstance(text, list):  # some versions return one string per conversation
        text = text[0]
    image_token = getattr(processor, "image_token", None)
    if request.image is not None and image_token and image_token not in text:
        raise UnsupportedModelError(
            f"the chat template of {_model_label(processor)} placed no image placeholder "
            f"({image_token!r}) for an image message; vlm_eval cannot prompt this model with images"
        )
    return text


def answer_token_ids(tokenizer: Any, options: Sequence[str]) -> dict[str, list[int]]:
    """For each option, the token ids of its spellings that are exactly one token.

    Spellings come from ``option_spellings`` ("Yes", " Yes", "yes", " yes").
    Raises UnsupportedModelError naming the option if no spelling is one token
    (scoring reads a single next-token distribution).
    """
    out: dict[str, list[int]] = {}
    for option in options:
        ids: list[int] = []
        for spelling in option_spellings(option):
            enc = tokenizer.encode(spelling, add_special_tokens=False)
            if len(enc) == 1 and int(enc[0]) not in ids:
                ids.append(int(enc[0]))
        if not ids:
            raise UnsupportedModelError(
                f"answer option {option!r}: none of its spellings {option_spellings(option)} is a single "
                f"token for tokenizer {type(tokenizer).__name__}; choose options that are single tokens"
            )
        out[option] = ids
    return out


def option_logprobs(
    logprobs_by_token_id: Mapping[int, float] | Sequence[float],
    ids_by_option: Mapping[str, Sequence[int]],
) -> tuple[dict[str, float], float]:
    """Per-option log-sum-exp of its spellings' log-probabilities, and the mass outside them.

    ``logprobs_by_token_id`` maps token id -> log-probability (a dict as vLLM
    returns, possibly partial; missing ids count as probability 0), or is a full
    vector indexable by id. ``other_mass`` = 1 - total probability of all
    spellings of all options (each token counted once), clamped to [0, 1].
    """
    def lookup(tid: int) -> float:
        if isinstance(logprobs_by_token_id, Mapping):
            v = logprobs_by_token_id.get(tid)
            if v is None:
                return float("-inf")
            v = getattr(v, "logprob", v)  # vLLM Logprob objects
        else:
            v = logprobs_by_token_id[tid]
        return float(v)

    scores: dict[str, float] = {}
    seen: dict[int, float] = {}
    for option, ids in ids_by_option.items():
        vals = []
        for tid in ids:
            lp = lookup(int(tid))
            vals.append(lp)
            seen[int(tid)] = lp
        scores[option] = logsumexp(vals)
    total = sum(math.exp(v) for v in seen.values() if v > float("-inf"))
    return scores, min(1.0, max(0.0, 1.0 - total))
