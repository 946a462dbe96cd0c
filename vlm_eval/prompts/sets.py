"""Versioned prompt sets: one YAML file per set (question + paraphrases per finding).

A set file holds::

    name: cxr-binary-v1
    version: "1.0.0"
    system: "..."                       # the set's recommended system prompt
    generic: ["... {question} ...", ...] # faithful re-wrappings of ANY question
    findings:
      pleural effusion:
        aliases: [effusion]
        question: "Is there a pleural effusion?"
        paraphrases:
          - {kind: lexical, text: "Is there fluid in the pleural space?"}
          - "a plain string works too"
    derived_from: {name, version, sha256}  # optional: sets written by prompts/generate.py
    generator: {...}                       # optional: how they were generated (informational)

Built-in sets live next to this module in ``sets/NAME.yaml``; any other set is
named by a path or fsspec URL. ``PromptSet.sha256`` hashes the file's bytes, so a
run records exactly which wording it used.

Which paraphrases a question gets (``PromptSet.variants``):

- the question is this set's question for the sample's finding (compared after
  normalising case and whitespace) -> the finding's paraphrases (source ``set``);
- otherwise -> the generic templates wrapped around the question verbatim
  (source ``generic``): a finding's paraphrases only paraphrase *its* question.
"""
from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import yaml

from vlm_eval import safe_yaml
from vlm_eval.errors import InputError
from vlm_eval.findings import finding_slug, normalise_finding  # the one finding-name rule (re-exported)

SETS_DIR = os.path.join(os.path.dirname(__file__), "sets")
_SPACE_RE = re.compile(r"\s+")


def builtin_sets() -> list[str]:
    """Names of the prompt sets shipped with vlm_eval."""
    return sorted(f[: -len(".yaml")] for f in os.listdir(SETS_DIR) if f.endswith(".yaml"))


def normalise_question(text: str) -> str:
    """Comparison form of a question: NFKC, lower case, single spaces, no trailing spaces."""
    return _SPACE_RE.sub(" ", unicodedata.normalize("NFKC", str(text)).lower()).strip()


@dataclass(frozen=True)
class FindingPrompts:
    """The question of one finding and its paraphrases (in file order)."""

    name: str
    question: str
    paraphrases: tuple[str, ...]
    kinds: tuple[str | None, ...]
    aliases: tuple[str, ...] = ()


@dataclass
class PromptSet:
    """A loaded prompt set. ``sha256`` is the hash of the file content."""

    name: str
    version: str
    system: str | None
    findings: dict[str, FindingPrompts]
    generic: tuple[str, ...]
    sha256: str
    source: str
    derived_from: dict[str, Any] | None = None
    """Generated sets (vlm_eval.prompts.generate): {name, version, sha256} of the base set."""
    _lookup: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for key, fp in self.findings.items():
            for alias in (key, *fp.aliases):
                self._lookup.setdefault(normalise_finding(alias), key)

    # ------------------------------------------------------------ lookups

    def finding_key(self, finding: str | None) -> str | None:
        """The set's name for ``finding`` (aliases and spelling variants accepted), or None."""
        if finding is None or (isinstance(finding, float) and finding != finding):
            return None
        return self._lookup.get(normalise_finding(finding))

    def has_finding(self, finding: str | None) -> bool:
        return self.finding_key(finding) is not None

    def question_for(self, finding: str) -> str:
        """The set's question for ``finding``; InputError listing known findings if unknown."""
        key = self.finding_key(finding)
        if key is None:
            raise InputError(
                f"prompt set {self.name!r} has no question for finding {finding!r}. Known findings: "
                f"{', '.join(sorted(self.findings))}. Give the question in the data, or use a prompt "
                "set (prompts.set: path/to/set.yaml) that covers this finding."
            )
        return self.findings[key].question

    def question_id(self, question: str, finding: str | None) -> str:
        """Stable id: ``SET:finding_slug`` for this set's questions, else ``q:`` + hash."""
        key = self.finding_key(finding)
        if key is not None and normalise_question(question) == normalise_question(self.findings[key].question):
            return f"{self.name}:{finding_slug(key)}"
        digest = hashlib.sha256(normalise_question(question).encode("utf-8")).hexdigest()[:16]
        return f"q:{digest}"

    def variants_with_source(self, question: str, finding: str | None, n: int) -> tuple[list[str], str]:
        """([question] + n paraphrases, 'set' | 'generic'); InputError if fewer than n exist."""
        question = str(question).strip()
        key = self.finding_key(finding)
        if key is not None and normalise_question(question) == normalise_question(self.findings[key].question):
            pool, source = list(self.findings[key].paraphrases), "set"
            what = f"finding {key!r}"
        else:
            pool, source = [t.replace("{question}", question) for t in self.generic], "generic"
            what = "generic templates"
        if n > len(pool):
            raise InputError(
                f"prompt set {self.name!r} has only {len(pool)} paraphrases for {what}, but "
                f"prompts.paraphrases is {n}. Lower prompts.paraphrases to {len(pool)} or less, "
                "or give paraphrases in the data / a larger prompt set."
            )
        return [question] + pool[:n], source

    def variants(self, question: str, finding: str | None, n: int) -> list[str]:
        """Variant 0 is ``question`` itself; variants 1..n are paraphrases (see module doc)."""
        return self.variants_with_source(question, finding, n)[0]


# ---------------------------------------------------------------- loading


def _parse(data: Any, source: str, sha: str) -> PromptSet:
    problems: list[str] = []
    if not isinstance(data, dict):
        raise InputError(f"prompt set {source}: expected a YAML mapping at the top level")
    unknown = sorted(set(data) - {"name", "version", "system", "generic", "findings", "description",
                                  "derived_from", "generator"})
    if unknown:
        problems.append(f"unknown top-level key(s) {unknown}")
    version = data.get("version")
    if version is None or str(version).strip() == "":
        problems.append("'version' is required (bump it whenever a wording changes)")
    generic = data.get("generic") or []
    if not isinstance(generic, list) or not all(isinstance(t, str) and "{question}" in t for t in generic):
        problems.append("'generic' must be a list of strings that each contain {question}")
        generic = []
    findings_raw = data.get("findings")
    findings: dict[str, FindingPrompts] = {}
    if not isinstance(findings_raw, dict) or not findings_raw:
        problems.append("'findings' must be a non-empty mapping of finding -> {question, paraphrases}")
        findings_raw = {}
    for name, entry in findings_raw.items():
        where = f"findings.{name}"
        if not isinstance(entry, dict) or not isinstance(entry.get("question"), str) or not entry["question"].strip():
            problems.append(f"{where}: needs a non-empty 'question' string")
            continue
        texts, kinds = [], []
        for i, p in enumerate(entry.get("paraphrases") or []):
            text, kind = (p, None) if isinstance(p, str) else (
                (p.get("text"), p.get("kind")) if isinstance(p, dict) else (None, None))
            if not isinstance(text, str) or not text.strip():
                problems.append(f"{where}.paraphrases[{i}]: expected a string or {{text, kind}}")
                continue
            texts.append(text.strip())
            kinds.append(kind)
        aliases = entry.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            problems.append(f"{where}.aliases: expected a list of strings")
            aliases = []
        findings[normalise_finding(name)] = FindingPrompts(
            name=normalise_finding(name), question=entry["question"].strip(), paraphrases=tuple(texts),
            kinds=tuple(kinds), aliases=tuple(aliases),
        )
    if problems:
        raise InputError(f"prompt set {source} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))
    name = str(data.get("name") or os.path.basename(source).rsplit(".", 1)[0])
    system = data.get("system")
    derived = data.get("derived_from")
    return PromptSet(name=name, version=str(version), system=str(system) if system is not None else None,
                     findings=findings, generic=tuple(generic), sha256=sha, source=source,
                     derived_from=dict(derived) if isinstance(derived, dict) else None)


def _read(path: str) -> bytes:
    from vlm_eval import storage

    try:
        return storage.read_bytes(path)
    except FileNotFoundError:
        raise InputError(
            f"prompt set file not found: {path}. Built-in sets: {', '.join(builtin_sets())}"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read prompt set {path}: {exc}") from None


_CACHE: dict[str, PromptSet] = {}


def load_prompt_set(name_or_path: str) -> PromptSet:
    """Load a built-in set by name (e.g. ``cxr-binary-v1``) or a YAML set by path / URL."""
    spec = str(name_or_path).strip()
    if spec in builtin_sets():
        path = os.path.join(SETS_DIR, f"{spec}.yaml")
    elif spec.endswith((".yaml", ".yml")) or "/" in spec or os.sep in spec:
        path = spec
    else:
        raise InputError(
            f"unknown prompt set {spec!r}: use a built-in set ({', '.join(builtin_sets())}) or a path "
            "to a YAML prompt set file"
        )
    raw = _read(path)
    sha = hashlib.sha256(raw).hexdigest()
    if sha in _CACHE and _CACHE[sha].source == path:
        return _CACHE[sha]
    try:
        data = safe_yaml.load(raw.decode("utf-8"))  # size/alias/depth limits, duplicate keys (H-input's switch)
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"prompt set {path} is not valid UTF-8 YAML: {exc}") from None
    pset = _parse(data, path, sha)
    _CACHE[sha] = pset
    return pset
