"""Paraphrase generation with the scripted engine: planted candidates and judge answers
give exactly the expected survivors and a new, derived prompt set file."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from vlm_eval.config import PromptsConfig
from vlm_eval.engines.scripted import ScriptedEngine
from vlm_eval.errors import EngineError, InputError
from vlm_eval.prompts import expand, load_prompt_set
from vlm_eval.prompts.generate import (
    generate_prompt_set,
    judge_prompt,
    lexical_reject,
    parse_candidates,
)

CARDIO = "Is there cardiomegaly?"
EFFUSION = "Is there a pleural effusion?"
GENERATED = """Sure, here are the rewrites:
1. Is the heart enlarged?
2. Is there no cardiomegaly?
3) Is there a pleural effusion?
- Is the heart enlarged?
* is there  CARDIOMEGALY ?
"Does this chest X-ray show cardiomegaly?"
Is cardiomegaly seen?
Is there cardiomegaly visible on this frontal chest radiograph in the opinion of an expert reader?
Is there evidence of cardiac enlargement?"""


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def judged(q, c, forward, backward):
    return {judge_prompt(q, c): logit(forward), judge_prompt(c, q): logit(backward)}


def scripted(**extra):
    rules = {
        "generate": {CARDIO: GENERATED.splitlines(), EFFUSION: ["Is there fluid around the lung, i.e. an effusion?"]},
        "text_only": {**judged(CARDIO, "Is the heart enlarged?", 0.9, 0.8),
                      **judged(CARDIO, "Does this chest X-ray show cardiomegaly?", 0.9, 0.3),
                      **judged(CARDIO, "Is cardiomegaly seen?", 0.7, 0.75),
                      **judged(CARDIO, "Is there evidence of cardiac enlargement?", 0.6, 0.95)},
        "default": -5.0,  # anything unplanted: P(yes) = 0.007
        **extra,
    }
    return ScriptedEngine({"name": "gen", "engine": "scripted", "options": {"rules": rules}})


def run(tmp_path, engine=None, keep=2, out=None, findings=("cardiomegaly", "effusion")):
    return generate_prompt_set("cxr-binary-v1", list(findings), {"name": "gen", "engine": "scripted"},
                               n_candidates=9, keep=keep, judge_threshold=0.5,
                               out_url=str(out or tmp_path / "sets"), engine=engine or scripted())


def test_exact_survivors_and_reasons(tmp_path):
    pset, report = run(tmp_path)
    assert pset.findings["cardiomegaly"].paraphrases == ("Is the heart enlarged?", "Is cardiomegaly seen?")
    assert pset.findings["cardiomegaly"].kinds == ("generated", "generated")
    assert pset.findings["cardiomegaly"].question == CARDIO
    assert pset.findings["pleural effusion"].paraphrases == ()  # judged unfaithful: nothing kept
    assert set(pset.findings) == {"cardiomegaly", "pleural effusion"}
    card = report["findings"]["cardiomegaly"]
    assert card["parsed"] == 9 and card["kept"] == 2
    assert card["rejected"] == {"negation": 1, "key_term": 1, "duplicate": 1, "identical": 1, "judge": 1,
                                "length": 1, "over_keep": 1}
    by_text = {c["text"]: c for c in reversed(card["candidates"])}  # first occurrence wins
    assert by_text["Is there no cardiomegaly?"]["reason"] == "negation"
    assert by_text["Is there a pleural effusion?"]["reason"] == "key_term"
    assert by_text["Does this chest X-ray show cardiomegaly?"]["reason"] == "judge"
    assert by_text["Does this chest X-ray show cardiomegaly?"]["p_backward"] == pytest.approx(0.3)
    assert by_text["Is there evidence of cardiac enlargement?"]["reason"] == "over_keep"
    assert by_text["Is the heart enlarged?"]["verdict"] == "kept"
    assert report["short_findings"] == ["pleural effusion"]
    assert report["findings"]["pleural effusion"]["rejected"] == {"judge": 1}


def test_new_set_file_is_derived_and_versioned(tmp_path):
    base = load_prompt_set("cxr-binary-v1")
    pset, report = run(tmp_path)
    assert pset.name.startswith("cxr-binary-v1-gen-") and len(pset.name) == len("cxr-binary-v1-gen-") + 8
    assert report["path"] == str(tmp_path / "sets" / f"{pset.name}.yaml")
    assert pset.sha256 != base.sha256 and report["sha256"] == pset.sha256
    assert pset.derived_from == {"name": "cxr-binary-v1", "version": base.version, "sha256": base.sha256}
    assert pset.version.startswith(base.version + "+gen.")
    doc = yaml.safe_load(open(report["path"]))
    entry = doc["findings"]["cardiomegaly"]["paraphrases"][0]
    assert entry["kind"] == "generated" and entry["judge"] == {"forward": pytest.approx(0.9),
                                                               "backward": pytest.approx(0.8)}
    assert doc["generator"]["judge_threshold"] == 0.5 and doc["generator"]["candidates"] == 9
    # Deterministic: the same answers give the same file name and hash.
    again, _ = run(tmp_path, out=tmp_path / "again.yaml")
    assert again.name == pset.name and again.sha256 == pset.sha256
    # A different outcome (keep 3) is a different set.
    other, _ = run(tmp_path, keep=3, out=tmp_path / "other")
    assert other.name != pset.name
    assert other.findings["cardiomegaly"].paraphrases[-1] == "Is there evidence of cardiac enlargement?"


def test_samples_expand_with_only_generated_paraphrases(tmp_path):
    pset, report = run(tmp_path)
    samples = pd.DataFrame({"sample_id": ["a"], "question": [None], "finding": ["cardiomegaly"]})
    out = expand(samples, PromptsConfig(set=report["path"], paraphrases=2))
    assert out["prompts"].iloc[0] == [CARDIO, "Is the heart enlarged?", "Is cardiomegaly seen?"]
    with pytest.raises(InputError, match="only 0 paraphrases"):
        expand(samples.assign(finding="effusion"), PromptsConfig(set=report["path"], paraphrases=1))


def test_lexical_checks_and_parsing():
    terms = ["cardiomegaly", "enlarged heart", "cardiac enlargement"]
    assert lexical_reject("Is the heart enlarged?", CARDIO, terms, set()) is None  # words in any order
    assert lexical_reject("Is cardiomegaly absent?", CARDIO, terms, set()) == "negation"
    assert lexical_reject("Isn't there cardiomegaly?", CARDIO, terms, set()) == "negation"
    assert lexical_reject("Is there no pleural effusion?", "Is there no pleural effusion?", ["pleural effusion"],
                          set()) == "identical"
    assert lexical_reject("Are there no pleural effusions?", "Is there no pleural effusion?", ["pleural effusion"],
                          set()) is None  # the original has the negation too; plural still keeps the term
    assert lexical_reject("Cardiomegaly?", "Does this frontal chest radiograph show cardiomegaly?", terms,
                          set()) == "length"
    assert lexical_reject("Is the lung clear?", CARDIO, terms, set()) == "key_term"
    assert lexical_reject("Is there  cardiomegaly here?", CARDIO, terms, {"is there cardiomegaly here"}) == "duplicate"
    assert parse_candidates("Here you go:\n1. A?\n2) B?\n- C?\n\"D?\"\nnot a question\n\n") == ["A?", "B?", "C?", "D?"]


def test_errors(tmp_path):
    class NoGenerate:
        def score(self, requests):
            return []

    with pytest.raises(EngineError, match="generate"):
        run(tmp_path, engine=NoGenerate())
    with pytest.raises(InputError, match="no question for finding"):
        run(tmp_path, findings=["cardiomegaly", "unicorn sign"])
    # Judge errors reject the candidate with their own reason.
    engine = scripted(fail={judge_prompt(CARDIO, "Is the heart enlarged?"): "boom"})
    _, report = run(tmp_path, engine=engine)
    by_text = {c["text"]: c for c in reversed(report["findings"]["cardiomegaly"]["candidates"])}
    assert by_text["Is the heart enlarged?"]["reason"] == "judge_error"


def test_scripted_generate_lookup():
    engine = ScriptedEngine({"name": "s", "options": {"rules": {"generate": {
        "exact prompt": ["one", "two"], "part": ["from part"], "*": "fallback"}}}})
    from vlm_eval.engines.base import ScoreRequest

    got = engine.generate([ScoreRequest(prompt="exact prompt"), ScoreRequest(prompt="a part of it"),
                           ScoreRequest(prompt="other")], max_tokens=10)
    assert got == ["one\ntwo", "from part", "fallback"]
    assert engine.generate([ScoreRequest(prompt="exact prompt")], max_tokens=1) == ["one\ntwo"]


def test_transformers_generate_is_greedy_and_batch_independent(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vlm_eval.engines.base import ScoreRequest
    from vlm_eval.engines.transformers import TransformersEngine
    from vlm_eval.models import build_tiny_model

    torch.set_num_threads(1)
    folder = build_tiny_model("llava", str(tmp_path / "llava"), seed=0)
    engine = TransformersEngine({"name": "tiny", "engine": "transformers", "path": folder,
                                 "options": {"cpu_threads": 1, "max_batch_size": 4}})
    reqs = [ScoreRequest(prompt="Rewrite: Is there cardiomegaly?", system="Be brief."),
            ScoreRequest(prompt="Short?")]
    batch = engine.generate(reqs, max_tokens=6)
    assert len(batch) == 2 and all(isinstance(t, str) and t for t in batch)
    assert [engine.generate([r], max_tokens=6)[0] for r in reqs] == batch
    assert engine.generate(reqs, max_tokens=6) == batch
    assert len(engine.tokenizer.encode(batch[0], add_special_tokens=False)) <= 8
