"""Prompt and answer-token helpers shared by the transformers and vLLM engines.

Pure functions: no torch import, nothing engine-specific. Both engines must build
the same prompt and read the same tokens, or their numbers would not compare.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

from vlm_eval.engines.base import ScoreRequest, ScoreResult, error_text, logsumexp, option_spellings, score_one_by_one
from vlm_eval.errors import UnsupportedModelError

__all__ = ["build_messages", "render_prompt", "answer_token_ids", "option_logprobs", "check_processor",
           "AnswerIds", "prepare_each", "all_scored", "result_from_vector", "score_chunk"]


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


class AnswerIds:
    """One engine's answer token ids per options tuple (``answer_token_ids``, cached), and the
    request check every engine makes first: the image, if any, is a PIL image."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._cache: dict[tuple[str, ...], dict[str, list[int]]] = {}

    def for_request(self, request: ScoreRequest) -> dict[str, list[int]]:
        from PIL import Image

        if request.image is not None and not isinstance(request.image, Image.Image):
            raise TypeError(f"image must be a PIL.Image.Image, not {type(request.image).__name__}")
        options = tuple(request.options)
        if options not in self._cache:
            self._cache[options] = answer_token_ids(self.tokenizer, options)
        return self._cache[options]


def result_from_vector(vec: Any, ids_by_option: Mapping[str, Sequence[int]], tokenizer: Any) -> ScoreResult:
    """A ScoreResult from a full next-token log-probability vector (indexable by token id)."""
    wanted = {t: float(vec[t]) for ids in ids_by_option.values() for t in ids}
    scores, other = option_logprobs(wanted, ids_by_option)
    return ScoreResult(logprobs=scores, text=tokenizer.decode([int(vec.argmax())]), other_mass=other)


def score_chunk(score_rows: Callable[[list[int]], list[ScoreResult]], chunk: list[int],
                requests: Sequence[ScoreRequest], results: list) -> None:
    """Fill ``results[i]`` for the request indices in ``chunk`` with one ``score_rows(chunk)``
    call (one forward pass); if it raises, the bad request(s) are isolated by the shared
    retry-alone policy (``base.score_one_by_one``), and a chunk of one gets its error."""
    try:
        scored = score_rows(chunk)
    except Exception as exc:  # noqa: BLE001 - one bad request must not fail the others
        if len(chunk) == 1:
            results[chunk[0]] = ScoreResult(logprobs={}, error=error_text(exc))
            return
        index = {id(requests[i]): i for i in chunk}
        scored = score_one_by_one(lambda reqs: score_rows([index[id(reqs[0])]]), [requests[i] for i in chunk])
    for i, res in zip(chunk, scored):
        results[i] = res


def prepare_each(prepare: Callable[[ScoreRequest], Any], requests: Sequence[ScoreRequest]
                 ) -> tuple[dict[int, Any], list[ScoreResult | None]]:
    """``prepare(request)`` for every request: ({index: prepared}, results) where results
    holds an error result for each request that could not be prepared, None elsewhere."""
    prepared: dict[int, Any] = {}
    results: list[ScoreResult | None] = [None] * len(requests)
    for i, req in enumerate(requests):
        try:
            prepared[i] = prepare(req)
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the batch
            results[i] = ScoreResult(logprobs={}, error=error_text(exc))
    return prepared, results


def all_scored(results: Sequence[ScoreResult | None]) -> list[ScoreResult]:
    """The results, with an error result for any request an engine left unscored (a bug)."""
    return [r if r is not None else ScoreResult(logprobs={}, error="EngineError: not scored") for r in results]
