"""The engine protocol: what every scoring engine (built-in or plug-in) implements.

An engine is any object with ``score(requests) -> results`` (one result per
request, same order). Engines may also implement the optional
``generate(requests, max_tokens) -> list[str]`` (``GeneratingEngine``). Engines know nothing of Ray or of datasets: an actor in
``vlm_eval.pipeline`` holds one and feeds it requests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, runtime_checkable

from vlm_eval.errors import EngineError

if TYPE_CHECKING:  # PIL is light, but keep the protocol import-free
    from PIL.Image import Image

ANSWER_OPTIONS: tuple[str, ...] = ("Yes", "No")
"""The answer options every request asks about (positive first); the one definition."""


@dataclass
class ScoreRequest:
    """One prompt to score at the first answer position."""

    prompt: str
    """The user turn (question text). The engine adds its chat template."""
    system: str | None = None
    """Optional system prompt."""
    image: "Image | None" = None
    """The image (RGB PIL image), or None for a text-only prompt."""
    options: tuple[str, ...] = ANSWER_OPTIONS
    """Answer options whose log-probabilities are wanted (first = positive)."""
    image_uuid: str | None = None
    """Content hash of the image, so engines can share encoder/prefix caches."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form tags (sample id, variant, condition); engines may ignore them."""


@dataclass
class ScoreResult:
    """Scores of one request: log-probabilities per option, or an error."""

    logprobs: dict[str, float]
    """One entry per option: log-sum-exp over that option's spellings."""
    text: str | None = None
    """Optional generated/top token text, for inspection."""
    error: str | None = None
    """Set when this single request failed; ``logprobs`` is then empty."""
    other_mass: float | None = None
    """Probability mass outside every option spelling (off-format signal)."""


@runtime_checkable
class Engine(Protocol):
    """The plug-in protocol (contract section "Engine plug-in")."""

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]: ...


@runtime_checkable
class GeneratingEngine(Engine, Protocol):
    """Optional protocol extension: engines that can also write text.

    ``generate(requests, max_tokens)`` returns one string per request, in order: the
    greedy (temperature 0) continuation of each request's chat prompt (same template,
    system turn and image handling as ``score``), at most ``max_tokens`` new tokens,
    without the prompt and without special tokens. It may raise for a failed batch;
    no per-request errors. Used by the paraphrase generation stage
    (``vlm_eval.prompts.generate``), which needs it only on the generator model;
    scoring never calls it. Built in: transformers, scripted (vllm: planned).
    """

    def generate(self, requests: list[ScoreRequest], max_tokens: int) -> list[str]: ...


def can_generate(engine: object) -> bool:
    """True if ``engine`` implements the optional ``generate`` extension."""
    return callable(getattr(engine, "generate", None))


def option_spellings(option: str) -> list[str]:
    """Spellings of an answer option that count for it: Yes, " Yes", yes, " yes"."""
    forms = [option, option.lower(), option.capitalize()]
    out: list[str] = []
    for f in forms:
        for s in (f, " " + f):
            if s not in out:
                out.append(s)
    return out


def logsumexp(values: Iterable[float]) -> float:
    """log(sum(exp(v))) over the values that exist (None = no such token: skipped).

    A NaN makes the result NaN: a spelling whose score is NaN is not probability 0, and
    ``check_results`` turns the NaN into an error for the request.
    """
    vals = [float(v) for v in values if v is not None]
    if any(math.isnan(v) for v in vals):
        return float("nan")
    if not vals:
        return float("-inf")
    m = max(vals)
    if math.isinf(m):  # all -inf (no mass), or a +inf that check_results rejects
        return m
    return m + math.log(sum(math.exp(v - m) for v in vals))


def bad_logprobs(logprobs: dict[str, float], options) -> str | None:
    """Why the options' log-probabilities give no answer (None = they do): a NaN or +inf,
    or -inf for every option (no probability on any answer)."""
    vals = {o: logprobs[o] for o in options}
    for o, v in vals.items():
        if v is None or math.isnan(v) or v == float("inf"):
            return f"engine returned log-probability {v} for option {o!r}"
    if vals and all(v == float("-inf") for v in vals.values()):
        return f"engine gave log-probability -inf to every option {list(vals)}"
    return None


def error_text(exc: BaseException) -> str:
    """How a failed request's error reads in the predictions table: 'Type: message'."""
    return f"{type(exc).__name__}: {exc}"


def check_results(requests: list[ScoreRequest], results: list[ScoreResult]) -> list[ScoreResult]:
    """Validate an engine's answer: one result per request, one logprob per option."""
    if not isinstance(results, list) or len(results) != len(requests):
        got = len(results) if isinstance(results, list) else type(results).__name__
        raise TypeError(
            f"engine.score returned {got} results for {len(requests)} requests; "
            "it must return a list with one ScoreResult per request, in order"
        )
    checked: list[ScoreResult] = []
    for req, res in zip(requests, results):
        if not isinstance(res, ScoreResult):
            raise TypeError(f"engine.score returned {type(res).__name__}, expected ScoreResult")
        if res.error is None:
            missing = [o for o in req.options if o not in res.logprobs]
            if missing:
                res = ScoreResult(logprobs={}, error=f"engine result lacks options {missing}")
            elif (why := bad_logprobs(res.logprobs, req.options)) is not None:
                res = ScoreResult(logprobs={}, error=why, other_mass=res.other_mass)
        checked.append(res)
    return checked


def score_one_by_one(engine_score: Callable[[list[ScoreRequest]], list[ScoreResult]],
                     requests: list[ScoreRequest], cause: BaseException | None = None) -> list[ScoreResult]:
    """The one retry policy for a batch that failed as a whole: score each request alone.

    ``engine_score`` scores a list of requests (an engine's ``score``, or an engine's own
    single-request path) and is called once per request. A request whose call raises
    becomes an error result (``error_text``); an EngineError (the engine says it is dead)
    propagates at once. ``cause`` is the batch's exception: when given and every request
    fails alone too, the engine itself is broken: EngineError naming ``cause``. (Without
    ``cause``, e.g. an engine isolating bad requests inside its own batch, the error
    results are returned.) Used by the pipeline's actor and the built-in engines.
    """
    results: list[ScoreResult] = []
    for req in requests:
        try:
            results.extend(check_results([req], engine_score([req])))
        except EngineError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the rest
            results.append(ScoreResult(logprobs={}, error=error_text(exc)))
    if cause is not None and results and all(r.error for r in results):
        raise EngineError(f"engine failed on every request of the batch, each tried alone too (dead engine?): "
                          f"{error_text(cause)}") from cause
    return results
