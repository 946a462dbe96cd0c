"""Prompt sets: coverage and faithfulness rules of cxr-binary-v1, loading, expand, prompt_id."""
from __future__ import annotations

import hashlib
import re

import pandas as pd
import pytest

from vlm_eval.config import PromptsConfig
from vlm_eval.errors import InputError
from vlm_eval.prompts import builtin_sets, expand, load_prompt_set, prompt_id
from vlm_eval.prompts.sets import SETS_DIR

NEGATION = re.compile(r"\b(no|not|none|never|neither|nor|absent|absence|without|lack|lacks|lacking|free of|"
                      r"exclude|excluded|rule out|ruled out)\b|n't", re.IGNORECASE)
REQUIRED = [
    # the 14 CheXpert labels
    "no finding", "enlarged cardiomediastinum", "cardiomegaly", "lung opacity", "lung lesion", "edema",
    "consolidation", "pneumonia", "atelectasis", "pneumothorax", "pleural effusion", "pleural other",
    "fracture", "support devices",
    # NIH ChestX-ray14 / common PadChest
    "nodule", "mass", "emphysema", "fibrosis", "hernia", "infiltration", "pleural thickening",
    "aortic elongation", "scoliosis", "kyphosis", "granuloma", "interstitial pattern", "alveolar pattern",
    "hilar enlargement", "costophrenic angle blunting", "tuberculosis", "pacemaker",
]
KINDS = {"lexical", "syntactic", "scope", "specificity", "register"}


@pytest.fixture(scope="module")
def pset():
    return load_prompt_set("cxr-binary-v1")


def test_builtin_set_covers_required_findings(pset):
    assert "cxr-binary-v1" in builtin_sets()
    missing = [f for f in REQUIRED if not pset.has_finding(f)]
    assert not missing
    assert pset.version and pset.system and "Yes or No" in pset.system


def test_every_finding_has_five_distinct_faithful_paraphrases(pset):
    for name, fp in pset.findings.items():
        texts = [t.strip().lower() for t in fp.paraphrases]
        assert len(set(texts)) >= 5, name
        assert len(set(texts)) == len(texts), f"{name}: repeated paraphrase"
        assert fp.question.strip().lower() not in texts, f"{name}: a paraphrase repeats the question"
        for text in (fp.question, *fp.paraphrases):
            assert not NEGATION.search(text), f"{name}: negation in {text!r}"
            assert text.endswith("?"), f"{name}: {text!r} is not a question"
        assert set(fp.kinds) <= KINDS, name
        assert len(set(fp.kinds)) >= 3, f"{name}: paraphrases should vary in kind"


def test_generic_templates_rewrap_any_question_faithfully(pset):
    assert len(pset.generic) >= 5
    q = "Is the endotracheal tube in a good position?"
    variants = pset.variants(q, None, 5)
    assert variants[0] == q and len(set(variants)) == 6
    for v in variants[1:]:
        assert q in v  # the question itself is kept verbatim
        assert not NEGATION.search(v.replace(q, "").replace("yes or no", ""))


def test_finding_lookup_accepts_spellings_and_aliases(pset):
    assert pset.question_for("Pleural_Effusion") == pset.question_for("effusion") == "Is there a pleural effusion?"
    assert pset.question_for("No Finding") == pset.question_for("normal")
    with pytest.raises(InputError) as info:
        pset.question_for("zebra sign")
    assert "cardiomegaly" in str(info.value)


def test_variants_use_set_only_for_the_sets_own_question(pset):
    own = pset.variants("is there  a Pleural Effusion?", "pleural effusion", 3)
    assert own[1:] == list(pset.findings["pleural effusion"].paraphrases[:3])
    other = pset.variants("Is the effusion large?", "pleural effusion", 3)
    assert other[1:] == [t.replace("{question}", "Is the effusion large?") for t in pset.generic[:3]]
    with pytest.raises(InputError, match="prompts.paraphrases"):
        pset.variants("Is there cardiomegaly?", "cardiomegaly", 50)


def test_load_by_path_hash_and_errors(tmp_path):
    builtin = load_prompt_set("cxr-binary-v1")
    raw = open(f"{SETS_DIR}/cxr-binary-v1.yaml", "rb").read()
    assert builtin.sha256 == hashlib.sha256(raw).hexdigest()
    path = tmp_path / "mine.yaml"
    path.write_text('version: "0.1"\ngeneric: ["Q: {question}"]\nfindings:\n  mass:\n    question: "Mass?"\n'
                    '    paraphrases: ["A mass?", {text: "Lung mass?", kind: lexical}]\n')
    mine = load_prompt_set(str(path))
    assert mine.name == "mine" and mine.findings["mass"].paraphrases == ("A mass?", "Lung mass?")
    assert mine.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(InputError) as info:
        load_prompt_set("cxr-binary-v9")
    assert "cxr-binary-v1" in str(info.value)
    with pytest.raises(InputError, match="not found"):
        load_prompt_set(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("findings:\n  mass: {paraphrases: [1]}\ncolour: red\n")
    with pytest.raises(InputError) as info:
        load_prompt_set(str(bad))
    msg = str(info.value)
    assert "version" in msg and "findings.mass" in msg and "colour" in msg


def _frame(rows: list[dict]) -> pd.DataFrame:
    cols = ["sample_id", "question", "finding", "paraphrases"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)


def test_expand_precedence_and_question_ids(pset):
    df = _frame([
        {"sample_id": "a", "question": None, "finding": "Cardiomegaly"},                       # set fills question
        {"sample_id": "b", "question": "Is there cardiomegaly?", "finding": "cardiomegaly",
         "paraphrases": ["Is the heart big?", "Is the heart enlarged?"]},                     # data wins
        {"sample_id": "c", "question": "Is the heart size normal?", "finding": "cardiomegaly"},  # generic
        {"sample_id": "d", "question": "Is the heart size normal?", "finding": None,
         "paraphrases": []},                                                                   # empty list: set
    ])
    out = expand(df, PromptsConfig(paraphrases=5), pset)
    assert "paraphrases" not in out.columns
    assert out.question[0] == "Is there cardiomegaly?"
    assert out.prompts[0] == ["Is there cardiomegaly?", *pset.findings["cardiomegaly"].paraphrases[:5]]
    assert out.prompts[1] == ["Is there cardiomegaly?", "Is the heart big?", "Is the heart enlarged?"]  # not topped up
    assert out.prompts[2][1] == pset.generic[0].replace("{question}", "Is the heart size normal?")
    assert out.question_id[0] == out.question_id[1] == "cxr-binary-v1:cardiomegaly"
    assert out.question_id[2] == out.question_id[3] and out.question_id[2].startswith("q:")
    assert expand(df, PromptsConfig(paraphrases=5), pset).question_id[2] == out.question_id[2]
    assert out.attrs["prompt_sources"] == {"set": 1, "data_short": 1, "generic": 2}
    given = expand(df.assign(question_id=["qa", None, None, None]), PromptsConfig(paraphrases=5), pset)
    assert given.question_id.tolist() == ["qa", *out.question_id[1:]]  # an adapter's own id is kept
    zero = expand(df, PromptsConfig(paraphrases=0), pset)
    assert [len(p) for p in zero.prompts] == [1, 1, 1, 1]


def test_expand_unknown_finding_without_question_is_an_input_error(pset):
    with pytest.raises(InputError, match="no question for finding"):
        expand(_frame([{"sample_id": "a", "question": None, "finding": "zebra"}]), PromptsConfig(), pset)


def test_prompt_id_is_stable_and_distinguishes_system():
    assert prompt_id("sys", "Is there a mass?") == prompt_id("sys", "Is there a mass?")
    assert re.fullmatch(r"[0-9a-f]{16}", prompt_id(None, "x"))
    assert prompt_id(None, "x") != prompt_id("", "x") != prompt_id("sys", "x")
    assert prompt_id("a", "bc") != prompt_id("ab", "c")
    # pinned: changing the hashing would silently invalidate every prediction cache
    assert prompt_id("sys", "Is there a mass?") == hashlib.sha256(
        '["sys","Is there a mass?"]'.encode()).hexdigest()[:16]
