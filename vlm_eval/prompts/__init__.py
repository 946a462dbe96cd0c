"""Question variants: versioned prompt sets, and the expansion of samples into prompts.

``expand(samples, cfg)`` gives each sample its ``question`` (from the set when the
data names only a finding), a stable ``question_id`` (an id the adapter already set,
e.g. PSF-Med's own, is kept; else ``SET:finding`` for the set's questions, else
``q:`` + hash of the normalised question) and ``prompts`` =
[question] + paraphrases, where the paraphrases come from exactly one place:

1. the data's own ``paraphrases`` (manifest / PSF-Med style), when the row has a
   non-empty list: the first ``cfg.paraphrases`` are used (fewer if the row has
   fewer; the set never tops them up, so sources are never mixed in one sample);
2. else the prompt set (``PromptSet.variants``: the finding's paraphrases when the
   question is the set's question for that finding, else the generic templates).

``prompt_id(system, prompt)`` is the stable 16-hex key of a rendered prompt (the
dedupe key of text-only prompts and part of the prediction cache key).
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import pandas as pd

from vlm_eval.config import PromptsConfig
from vlm_eval.prompts.sets import (
    FindingPrompts,
    PromptSet,
    builtin_sets,
    load_prompt_set,
    normalise_finding,
    normalise_question,
)
from vlm_eval.values import is_missing

__all__ = [
    "FindingPrompts", "PromptSet", "builtin_sets", "expand", "load_prompt_set",
    "normalise_finding", "normalise_question", "prompt_id",
]


def prompt_id(system: str | None, prompt: str) -> str:
    """Stable 16-hex id of (system prompt, user prompt); ``None`` and ``""`` differ."""
    payload = json.dumps([system, prompt], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


_is_missing = is_missing  # the one missing-value rule (vlm_eval.values; H-input's import switch)


def _given_paraphrases(value: Any) -> list[str] | None:
    """The row's own paraphrases as a list of str, or None when it gives none."""
    if value is None or isinstance(value, (str, float, int)):
        return None  # adapters hand over lists; a scalar here means "not given"
    items = [str(v).strip() for v in list(value) if not _is_missing(v)]
    return items or None


def expand(samples: pd.DataFrame, cfg: PromptsConfig, prompt_set: PromptSet | None = None) -> pd.DataFrame:
    """Return a copy of ``samples`` with ``question``, ``question_id`` and ``prompts`` filled.

    Rows must have a question or a finding (``vlm_eval.datasets.load_samples`` turns
    rows with neither into error rows first). A finding the set does not know, on a
    row without a question, raises InputError (a configuration problem, not a row
    problem). ``out.attrs['prompt_sources']`` counts samples per paraphrase source
    (``data``, ``set``, ``generic``, ``data_short`` = fewer than asked).
    """
    pset = prompt_set or load_prompt_set(cfg.set)
    n = int(cfg.paraphrases)
    out = samples.copy()
    if len(out) == 0:
        out["question_id"] = pd.Series(dtype="object")
        out["prompts"] = pd.Series(dtype="object")
        out.attrs["prompt_sources"] = {}
        return out.drop(columns=["paraphrases"], errors="ignore")
    findings = out["finding"] if "finding" in out else pd.Series([None] * len(out), index=out.index)
    given = out["paraphrases"] if "paraphrases" in out else pd.Series([None] * len(out), index=out.index)
    own_qids = out["question_id"] if "question_id" in out else pd.Series([None] * len(out), index=out.index)
    questions, qids, prompts = [], [], []
    sources: Counter[str] = Counter()
    cache: dict[tuple[str, str | None], tuple[str, list[str], str]] = {}
    for question, finding, paras, own_qid in zip(out["question"].tolist(), findings.tolist(), given.tolist(),
                                                 own_qids.tolist()):
        finding = None if _is_missing(finding) else str(finding)
        if _is_missing(question):
            if finding is None:
                raise ValueError("expand: a row has neither question nor finding (filter such rows first)")
            question = pset.question_for(finding)
        question = str(question).strip()
        own = _given_paraphrases(paras)
        if own is not None:
            variants = [question] + own[:n]
            sources["data" if len(own) >= n else "data_short"] += 1
            qid = pset.question_id(question, finding)
        else:
            key = (question, finding)
            if key not in cache:
                variants, source = pset.variants_with_source(question, finding, n)
                cache[key] = (pset.question_id(question, finding), variants, source)
            qid, variants, source = cache[key]
            variants = list(variants)
            sources[source] += 1
        questions.append(question)
        qids.append(qid if _is_missing(own_qid) else str(own_qid))
        prompts.append(variants)
    out["question"] = questions
    out["question_id"] = qids
    out["prompts"] = prompts
    out = out.drop(columns=["paraphrases"], errors="ignore")
    out.attrs["prompt_sources"] = dict(sources)
    return out
