"""Paraphrase generation: a model writes candidates, filters keep the faithful ones,
and the survivors become a NEW versioned prompt set (never mixed into the base set).

``generate_prompt_set(base_set, findings, engine_model, ...)``, per finding question
of ``base_set``:

1. **generate** -- one greedy ``engine.generate`` request (``generation_prompt``) asks
   for ``n_candidates`` rewrites, one per line; ``parse_candidates`` strips numbering,
   bullets and quotes and keeps lines that are questions (end with "?").
2. **lexical checks** (``lexical_reject``, first failing reason wins):
   ``identical`` (same as the question after normalising case, spaces and punctuation),
   ``duplicate`` (same as an earlier candidate), ``negation`` (a negation word the
   question lacks), ``length`` (character length ratio outside
   [MIN_LENGTH_RATIO, MAX_LENGTH_RATIO]), ``key_term`` (neither the finding's name nor
   an alias kept: a term counts as kept when all its words occur, in any order).
3. **judge** -- the same engine's ``score()`` reads P(yes) (softmax over Yes/No) for
   ``judge_prompt(question, candidate)`` and ``judge_prompt(candidate, question)``;
   mutual entailment = both >= ``judge_threshold`` (else ``judge``; an engine error
   is ``judge_error``).
4. **keep** -- the ``keep`` survivors with the highest min(P forward, P backward)
   (ties: generation order); the rest are ``over_keep``.

The new set (``name: <base>-gen-<hash8>``, ``version: <base version>+gen.<hash8>``,
``derived_from: {name, version, sha256}`` of the base, ``generator``) holds the
requested findings with their base question and aliases and only the kept
paraphrases (``kind: generated`` plus ``judge`` scores), and the base's generic
templates. ``hash8`` hashes the content, so the same output gives the same file.
The caller passes the engine object: the run uses a Ray actor's proxy
(``vlm_eval.pipeline.generate_actor.RemoteEngine``), so the driver never imports
torch/vLLM; tests pass an engine in-process. This module needs nothing above prompts
and the engine protocol.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import yaml

from vlm_eval import storage
from vlm_eval.engines.base import ANSWER_OPTIONS, ScoreRequest, ScoreResult, can_generate, check_results
from vlm_eval.errors import EngineError, InputError
from vlm_eval.prompts.sets import FindingPrompts, PromptSet, load_prompt_set, normalise_question

NEGATION = re.compile(r"\b(no|not|none|never|neither|nor|absent|absence|without|lack|lacks|lacking|free of|"
                      r"exclude|excluded|excludes|rule out|ruled out|negative for|deny|denies|denied|cannot)\b"
                      r"|n't", re.IGNORECASE)
MIN_LENGTH_RATIO, MAX_LENGTH_RATIO = 0.5, 2.5
TOKENS_PER_CANDIDATE = 40
JUDGE_SYSTEM = "You compare clinical questions. Answer with only Yes or No."
_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d+[.)]|[a-z][.)])\s+", re.IGNORECASE)
_PUNCT = re.compile(r"[^\w\s]")


def generation_prompt(question: str, finding: str, n: int) -> str:
    """The instruction asking for ``n`` faithful rewrites of ``question``."""
    return (
        f"Rewrite the following yes/no question about a chest X-ray in {n} different ways.\n"
        "Rules: each rewrite must ask exactly the same thing, so that the correct answer (yes or no) "
        f"stays the same; keep the finding ({finding}) or a synonym of it; do not add negation "
        "(no, not, without, absent, ...); vary the wording and sentence structure.\n"
        "Write one question per line, with no numbering and no other text.\n"
        f"Question: {question}"
    )


def judge_prompt(q1: str, q2: str) -> str:
    """The entailment question the judge answers Yes/No (asked in both directions)."""
    return ("Do these two questions ask exactly the same thing, so that the same image always gets the "
            f"same answer to both?\nQ1: {q1}\nQ2: {q2}")


def parse_candidates(text: str) -> list[str]:
    """One candidate per line: numbering, bullets and quotes stripped; questions only."""
    out = []
    for line in str(text or "").splitlines():
        line = _BULLET.sub("", line.strip()).strip().strip("\"'\u201c\u201d`").strip()
        if line.endswith("?") and len(line) > 1:
            out.append(line)
    return out


def _norm(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", normalise_question(text)).split())


def _words(text: str) -> set[str]:
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in _norm(text).split()}


def key_terms(fp: FindingPrompts) -> list[str]:
    """The finding's name and aliases (any one of them must survive in a paraphrase)."""
    return [fp.name, *fp.aliases]


def lexical_reject(candidate: str, question: str, terms: list[str], seen: set[str]) -> str | None:
    """The reason ``candidate`` fails the lexical checks (module doc), or None if it passes."""
    norm = _norm(candidate)
    if norm == _norm(question):
        return "identical"
    if norm in seen:
        return "duplicate"
    if NEGATION.search(candidate) and not NEGATION.search(question):
        return "negation"
    ratio = len(candidate) / max(1, len(question))
    if not MIN_LENGTH_RATIO <= ratio <= MAX_LENGTH_RATIO:
        return "length"
    words = _words(candidate)
    if not any(_words(t) and _words(t) <= words for t in terms):
        return "key_term"
    return None


def p_yes(result: ScoreResult) -> float:
    """P(Yes) normalised over Yes/No; 0.0 for an error result."""
    if result.error:
        return 0.0
    yes, no = ANSWER_OPTIONS
    m = result.logprobs[yes] - result.logprobs[no]
    return 1.0 / (1.0 + math.exp(-m)) if m > -700 else 0.0


def _finding_prompts(base: PromptSet, findings: list[str] | None) -> list[FindingPrompts]:
    if not findings:
        return list(base.findings.values())
    unknown = [f for f in findings if base.finding_key(f) is None]
    if unknown:
        raise InputError(f"paraphrase generation: prompt set {base.name!r} has no question for finding(s) "
                         f"{unknown}; known: {', '.join(sorted(base.findings))}")
    keys = list(dict.fromkeys(base.finding_key(f) for f in findings))
    return [base.findings[k] for k in keys]


def _judge(engine, pairs: list[tuple[str, str]]) -> list[tuple[float, float, str | None]]:
    """(P forward, P backward, error) per (question, candidate) pair, one score() call."""
    if not pairs:
        return []
    requests = [ScoreRequest(prompt=judge_prompt(a, b), system=JUDGE_SYSTEM)
                for q, c in pairs for a, b in ((q, c), (c, q))]
    results = check_results(requests, engine.score(requests))
    out = []
    for k in range(len(pairs)):
        fwd, bwd = results[2 * k], results[2 * k + 1]
        out.append((p_yes(fwd), p_yes(bwd), fwd.error or bwd.error))
    return out


def _decide(engine, fps: list[FindingPrompts], texts: list[str], n_candidates: int, keep: int,
            threshold: float) -> dict[str, list[dict]]:
    """Per finding: one decision dict per parsed candidate (text, verdict, reason, scores)."""
    decisions: dict[str, list[dict]] = {}
    pending: list[tuple[dict, str]] = []
    for fp, text in zip(fps, texts):
        seen: set[str] = set()
        rows = []
        for cand in parse_candidates(text)[:n_candidates]:
            reason = lexical_reject(cand, fp.question, key_terms(fp), seen)
            seen.add(_norm(cand))
            row = {"text": cand, "verdict": "rejected" if reason else "judged", "reason": reason,
                   "p_forward": None, "p_backward": None}
            rows.append(row)
            if reason is None:
                pending.append((row, fp.question))
        decisions[fp.name] = rows
    scores = _judge(engine, [(q, row["text"]) for row, q in pending])
    for (row, _), (pf, pb, err) in zip(pending, scores):
        row.update(p_forward=round(pf, 6), p_backward=round(pb, 6))
        if err or min(pf, pb) < threshold:
            row.update(verdict="rejected", reason="judge_error" if err else "judge")
    for rows in decisions.values():
        passed = sorted((r for r in rows if r["verdict"] == "judged"),
                        key=lambda r: -min(r["p_forward"], r["p_backward"]))
        for row in passed[:keep]:
            row["verdict"] = "kept"
        for row in passed[keep:]:
            row.update(verdict="rejected", reason="over_keep")
    return decisions


def _set_document(base: PromptSet, fps: list[FindingPrompts], decisions: dict[str, list[dict]],
                  generator: dict) -> dict:
    findings: dict[str, Any] = {}
    for fp in fps:
        kept = sorted((r for r in decisions[fp.name] if r["verdict"] == "kept"),
                      key=lambda r: -min(r["p_forward"], r["p_backward"]))
        entry: dict[str, Any] = {"aliases": list(fp.aliases)} if fp.aliases else {}
        entry["question"] = fp.question
        entry["paraphrases"] = [{"kind": "generated", "text": r["text"],
                                 "judge": {"forward": r["p_forward"], "backward": r["p_backward"]}} for r in kept]
        findings[fp.name] = entry
    body = {"system": base.system, "generic": list(base.generic), "findings": findings,
            "derived_from": {"name": base.name, "version": base.version, "sha256": base.sha256},
            "generator": generator}
    hash8 = hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()[:8]
    return {"name": f"{base.name}-gen-{hash8}", "version": f"{base.version}+gen.{hash8}",
            "description": f"Paraphrases generated from {base.name} {base.version} and kept by lexical checks "
                           "and a mutual-entailment judge (vlm_eval.prompts.generate).", **body}


def generate_prompt_set(base_set: PromptSet | str, findings: list[str] | None, engine_model: dict,
                        n_candidates: int = 8, keep: int = 5, judge_threshold: float = 0.5,
                        out_url: str | None = None, *, engine, max_tokens: int | None = None
                        ) -> tuple[PromptSet, dict]:
    """Write a new prompt set of generated, filtered paraphrases (module doc).

    base_set: a PromptSet or a set name/path; findings: the base set's findings to cover
    (None = all); engine_model: the generator's ``models`` entry (mapping; recorded in the
    set as ``generator``); out_url: the YAML file to write (``.yaml``/``.yml``) or a folder
    (then ``<name>.yaml`` inside it); engine: the engine object that generates and judges
    (``generate`` + ``score``), e.g. ``pipeline.generate_actor.RemoteEngine``; the caller
    owns and closes it.
    Returns (the new set loaded from its file, report dict for run.json).
    """
    if out_url is None:
        raise InputError("generate_prompt_set: out_url is required (a generated set is always saved)")
    base = base_set if isinstance(base_set, PromptSet) else load_prompt_set(base_set)
    fps = _finding_prompts(base, findings)
    tokens = int(max_tokens or TOKENS_PER_CANDIDATE * n_candidates + 32)
    if not can_generate(engine):
        raise EngineError(f"engine {type(engine).__name__} has no generate(requests, max_tokens)")
    requests = [ScoreRequest(prompt=generation_prompt(fp.question, fp.name, n_candidates)) for fp in fps]
    texts = engine.generate(requests, tokens)
    if not isinstance(texts, list) or len(texts) != len(requests):
        raise EngineError(f"engine.generate returned {type(texts).__name__} of the wrong length for "
                          f"{len(requests)} requests")
    decisions = _decide(engine, fps, [str(t) for t in texts], n_candidates, keep, judge_threshold)
    generator = {"model": engine_model.get("name"), "engine": engine_model.get("engine"),
                 "candidates": int(n_candidates), "keep": int(keep), "judge_threshold": float(judge_threshold),
                 "max_tokens": tokens}
    doc = _set_document(base, fps, decisions, generator)
    path = out_url if out_url.endswith((".yaml", ".yml")) else storage.join(out_url, f"{doc['name']}.yaml")
    header = f"# {doc['name']}: generated by vlm_eval.prompts.generate from {base.name} (do not edit; regenerate)\n"
    storage.write_bytes_atomic(path, (header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True,
                                                              width=120)).encode("utf-8"))
    pset = load_prompt_set(path)
    per_finding = {}
    for fp in fps:
        rows = decisions[fp.name]
        rejected: dict[str, int] = {}
        for r in rows:
            if r["verdict"] == "rejected":
                rejected[r["reason"]] = rejected.get(r["reason"], 0) + 1
        n_kept = sum(r["verdict"] == "kept" for r in rows)
        per_finding[fp.name] = {"question": fp.question, "parsed": len(rows), "kept": n_kept,
                                "short": n_kept < keep, "rejected": rejected, "candidates": rows}
    report = {"name": pset.name, "version": pset.version, "path": path, "sha256": pset.sha256,
              "derived_from": doc["derived_from"], "generator": generator,
              "short_findings": [f for f, v in per_finding.items() if v["short"]], "findings": per_finding}
    return pset, report
