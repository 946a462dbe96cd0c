"""A scripted engine: planted, deterministic answers behind the real protocol.

It is a real registered engine (``engine: scripted``), used by the demo-free
tests, fault-injection tests and pipeline benchmarks. Answers come from a script
keyed by what a real model sees: the image's content hash (``image_uuid``) and the
prompt text. A margin m becomes ``logprob_yes = log sigmoid(m)``,
``logprob_no = log sigmoid(-m)``.

Script (JSON or YAML file in ``options.script``, or inline ``options.rules``)::

    with_image: {<image sha256>: {<prompt text>: margin, "*": margin}}
    text_only:  {<prompt text>: margin, "*": margin}
    fail:       {<image sha256 or prompt text>: "error message"}   # per-request errors
    default: 0.5                                                   # anything unlisted
    generate:   {<prompt text or a part of it>: [text, ...]}       # generate(): lines joined by "\n"

``generate`` answers a request with the entry whose key is its prompt, else the
longest key contained in its prompt, else ``"*"``, else "" (the lines joined by
newlines, truncated to ``max_tokens`` whitespace-separated words).

Options for faults and benchmarks: ``delay_s`` (sleep per request),
``dead: true`` (every call raises, as a dead engine does),
``crash_once_file: PATH`` (hard-exit the process the first time, leaving PATH so
the restarted actor carries on: an actor killed mid-batch).
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Mapping

from vlm_eval.engines.base import ScoreRequest, ScoreResult
from vlm_eval.errors import InputError


def margin_to_logprobs(margin: float) -> tuple[float, float]:
    """(log sigmoid(m), log sigmoid(-m)), computed stably."""

    def log_sigmoid(x: float) -> float:
        return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))

    return log_sigmoid(margin), log_sigmoid(-margin)


def _load_script(options: Mapping[str, Any]) -> dict[str, Any]:
    if "rules" in options:
        return dict(options["rules"])
    path = options.get("script")
    if not path:
        return {}
    import fsspec
    import yaml

    try:
        with fsspec.open(path, "r", encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise InputError(f"scripted engine: script file not found: {path}") from None


class ScriptedEngine:
    """Engine whose answers are planted by a script (see module docstring)."""

    def __init__(self, model: Mapping[str, Any]):
        options = dict(model.get("options") or {})
        self.script = _load_script(options)
        self.default = float(self.script.get("default", options.get("default", 0.5)))
        self.delay_s = float(options.get("delay_s", 0.0))
        self.dead = bool(options.get("dead", False))
        self.crash_once_file = options.get("crash_once_file")

    def _margin(self, req: ScoreRequest) -> float:
        if req.image is None:
            table = self.script.get("text_only") or {}
        else:
            table = (self.script.get("with_image") or {}).get(req.image_uuid or "", {})
        if req.prompt in table:
            return float(table[req.prompt])
        if "*" in table:
            return float(table["*"])
        return self.default

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        if self.dead:
            raise RuntimeError("scripted engine is dead (options.dead = true)")
        if self.crash_once_file and not os.path.exists(self.crash_once_file):
            with open(self.crash_once_file, "w") as f:
                f.write(str(os.getpid()))
            os._exit(17)  # a hard kill: no cleanup, no exception to catch
        fail = self.script.get("fail") or {}
        out = []
        for req in requests:
            if self.delay_s:
                time.sleep(self.delay_s)
            msg = fail.get(req.image_uuid or "") if req.image is not None else None
            msg = msg or fail.get(req.prompt)
            if msg:
                out.append(ScoreResult(logprobs={}, error=f"ScriptedFailure: {msg}"))
                continue
            lp_yes, lp_no = margin_to_logprobs(self._margin(req))
            yes, no = req.options[0], req.options[1]
            lps = {yes: lp_yes, no: lp_no}
            for extra in req.options[2:]:
                lps[extra] = float("-inf")
            out.append(ScoreResult(logprobs=lps, text=yes if lp_yes > lp_no else no, other_mass=0.0))
        return out

    def generate(self, requests: list[ScoreRequest], max_tokens: int) -> list[str]:
        """Planted texts (see module docstring); deterministic like greedy decoding."""
        if self.dead:
            raise RuntimeError("scripted engine is dead (options.dead = true)")
        table = self.script.get("generate") or {}
        out = []
        for req in requests:
            if req.prompt in table:
                texts = table[req.prompt]
            else:
                keys = sorted((k for k in table if k != "*" and k in req.prompt), key=len, reverse=True)
                texts = table[keys[0]] if keys else table.get("*", [])
            text = "\n".join([texts] if isinstance(texts, str) else [str(t) for t in texts])
            words = text.split(" ")
            out.append(" ".join(words[: max(0, int(max_tokens))]))
        return out
