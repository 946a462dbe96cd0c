"""The job file: a pydantic schema with a docstring per field, and its loader.

``load_job(path, overrides)`` reads YAML from any fsspec URL, applies ``--set``
overrides and validates. Every problem is reported at once in one ConfigError.

Hostile files are refused before pydantic sees them (``vlm_eval.safe_yaml``): over
1 MiB, alias bombs, nesting deeper than 32, a key given twice (named with its line).
A URL with credentials (``https://user:pass@host``) anywhere in the job is refused:
credentials come from the environment. An engine plug-in that does not import is
refused here, before Ray starts (``VLM_EVAL_SKIP_PLUGIN_CHECK=1`` skips the import
when the plug-in exists only on the cluster's workers).
"""
from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vlm_eval import safe_yaml
from vlm_eval.errors import ConfigError, UserError
from vlm_eval.provenance import redact_text, url_has_credentials
from vlm_eval.conditions import ABLATION_NAMES as ABLATIONS, IMAGE

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # used with fullmatch: "$" would allow a final newline
_NAME_HELP = "must be letters, digits, '.', '_' or '-', starting with a letter or digit (it names a folder)"
DEFAULT_SYSTEM = "You are a medical imaging expert. For yes/no questions, respond with only Yes or No."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)


class DatasetConfig(_Strict):
    adapter: str = "manifest"
    """Dataset adapter: manifest | synthetic | padchest | ... or 'package.module:Adapter'."""
    manifest: str | None = None
    """The manifest / label file (local path or fsspec URL such as s3://...)."""
    images: str | None = None
    """Root that relative image paths are resolved against (path or URL)."""
    findings: list[str] | None = None
    """Label datasets: the findings to ask about (None = the adapter's default)."""
    limit: int | None = Field(default=None, ge=1)
    """Use at most this many samples (after filtering), for smoke runs."""
    max_image_side: int = Field(default=2048, ge=16)
    """Images larger than this (longest side, pixels) are downscaled when loaded."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Adapter-specific options (see `vlm-eval datasets`)."""


class GenerateConfig(_Strict):
    model: str | ModelConfig
    """Generator and judge: the name of an entry in `models`, or an inline model mapping
    (same keys as a `models` entry; its engine must implement `generate`)."""
    candidates: int = Field(default=8, ge=1)
    """Candidate paraphrases asked of the model per finding question."""
    keep: int | None = Field(default=None, ge=0)
    """Paraphrases kept per finding, best judged first (None = prompts.paraphrases)."""
    judge_threshold: float = Field(default=0.5, ge=0, le=1)
    """A candidate is kept only if the judge's P(yes) that it asks exactly the same thing
    as the question is at least this, in both directions (mutual entailment)."""


class PromptsConfig(_Strict):
    set: str = "cxr-binary-v1"
    """Built-in paraphrase set name, or a path to a YAML prompt set."""
    paraphrases: int = Field(default=5, ge=0)
    """Paraphrases per question in addition to the original (variant 0)."""
    system: str | None = DEFAULT_SYSTEM
    """System prompt given with every variant (None = no system turn)."""
    generate: GenerateConfig | None = None
    """Optional: write new paraphrases of `set` with a model, keep the faithful ones and
    use them as a new versioned set (RUN/prompt_sets/), never mixed with `set`'s own."""


class TaxonomyConfig(_Strict):
    ablation: str = "text_only"
    """The ablation whose prediction decides image reliance (must be in `conditions`)."""
    reliance: Literal["original", "majority", "any"] = "original"
    """original: variant 0 flips; majority: majority vote flips; any: any variant flips."""


class ModelConfig(_Strict):
    name: str
    """Short name, used in output paths (letters, digits, '.', '_', '-')."""
    engine: str = "transformers"
    """vllm | transformers | scripted | 'package.module:factory'."""
    path: str | None = None
    """Model folder (local or object-store URL)."""
    revision: str | None = None
    """Model revision label, recorded and used in the prediction cache key."""
    lora: str | None = None
    """Optional LoRA adapter folder."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Passed through to the engine unchanged."""

    @field_validator("name")
    @classmethod
    def _name_is_path_safe(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v):
            raise ValueError(_NAME_HELP)
        return v

    @field_validator("engine")
    @classmethod
    def _engine_can_be_built(cls, v: str) -> str:
        if os.environ.get("VLM_EVAL_SKIP_PLUGIN_CHECK"):
            return v
        from vlm_eval.engines.loader import check_engine

        try:
            check_engine(v)
        except UserError as exc:
            raise ValueError(str(exc)) from None
        return v


GenerateConfig.model_rebuild()
PromptsConfig.model_rebuild()


class ResourcesConfig(_Strict):
    actors: int = Field(default=1, ge=1)
    """Engine actors per model (one engine each)."""
    gpus_per_actor: float = Field(default=1, ge=0)
    """GPUs per engine actor (0 on CPU-only machines)."""
    cpus_per_actor: float = Field(default=1, ge=0)
    """CPUs reserved per engine actor."""
    batch_size: int = Field(default=32, ge=1)
    """Work-unit size: a unit holds whole images, up to batch_size samples' worth of prompts."""
    resources_per_actor: dict[str, float] = Field(default_factory=dict)
    """Extra Ray custom resources per actor (e.g. {accelerator_type:A100: 0.01})."""
    ray_address: str | None = None
    """Ray cluster to join (None: RAY_ADDRESS if set, else a local loopback-only Ray)."""


class FailureConfig(_Strict):
    max_error_fraction: float = Field(default=0.01, ge=0, le=1)
    """The run fails (non-zero exit) if errored samples exceed this share of inputs."""


class CacheConfig(_Strict):
    enabled: bool = True
    """Reuse scores of earlier runs for unchanged (model, prompt, image, condition)."""
    url: str | None = None
    """Where cached scores live (default: OUTPUT/_cache, shared by the runs of OUTPUT)."""


class Job(_Strict):
    name: str
    """Job name; run_id defaults to NAME-YYYYmmdd-HHMMSS."""
    run_id: str | None = None
    """Give one to resume a run or to write idempotently."""
    output: str = "runs"
    """Where runs go: any fsspec URL or local path; a run writes OUTPUT/RUN_ID/."""
    dataset: DatasetConfig
    """The samples to evaluate."""
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    """Question variants."""
    conditions: list[str] = Field(default_factory=lambda: [IMAGE, "text_only"])
    """'image' plus ablations: text_only, blank, noise, swap."""
    taxonomy: TaxonomyConfig = Field(default_factory=TaxonomyConfig)
    """How quadrants are decided."""
    models: list[ModelConfig] = Field(min_length=1)
    """Models to evaluate (each gets its own engine actors)."""
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    """Ray resources."""
    failure: FailureConfig = Field(default_factory=FailureConfig)
    """Failure policy."""
    cache: CacheConfig = Field(default_factory=CacheConfig)
    """Prediction cache for incremental (e.g. nightly) runs."""

    @field_validator("name", "run_id")
    @classmethod
    def _path_safe(cls, v: str | None) -> str | None:
        if v is not None and not _NAME_RE.fullmatch(v):
            raise ValueError(_NAME_HELP)
        return v

    @field_validator("conditions")
    @classmethod
    def _known_conditions(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c != IMAGE and c not in ABLATIONS]
        if bad:
            raise ValueError(f"unknown condition(s) {bad}; use 'image' and any of {list(ABLATIONS)}")
        if IMAGE not in v:
            raise ValueError("must include 'image'")
        if len(set(v)) != len(v):
            raise ValueError("lists a condition twice")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "Job":
        problems = []
        if self.taxonomy.ablation not in self.conditions or self.taxonomy.ablation == IMAGE:
            problems.append(
                f"taxonomy.ablation: {self.taxonomy.ablation!r} must be one of the ablations in "
                f"conditions {self.conditions}"
            )
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"models: names must be unique, repeated: {dupes}")
        gen = self.prompts.generate
        if gen is not None:
            if isinstance(gen.model, str) and gen.model not in names:
                problems.append(f"prompts.generate.model: {gen.model!r} is not the name of an entry in "
                                f"models {names} (or give an inline model mapping)")
            keep = self.prompts.paraphrases if gen.keep is None else gen.keep
            if keep < self.prompts.paraphrases:
                problems.append(f"prompts.generate.keep: {keep} < prompts.paraphrases "
                                f"{self.prompts.paraphrases}: samples would lack paraphrases")
            if gen.candidates < keep:
                problems.append(f"prompts.generate.candidates: {gen.candidates} < keep {keep}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def resolved_run_id(self, now: datetime | None = None) -> str:
        if self.run_id:
            return self.run_id
        now = now or datetime.now(timezone.utc)
        return f"{self.name}-{now.strftime('%Y%m%d-%H%M%S')}"

    @property
    def ablations(self) -> list[str]:
        return [c for c in self.conditions if c != IMAGE]


# ---------------------------------------------------------------- loading


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> list[str]:
    """Apply ``a.b.c=value`` overrides in place (value parsed as YAML). Returns problems."""
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append(f"--set {item!r}: expected KEY.PATH=VALUE")
            continue
        try:
            value = safe_yaml.load(raw) if raw != "" else ""
        except safe_yaml.YamlLimitError as exc:
            problems.append(f"--set {key}: {exc}")
            continue
        except yaml.YAMLError:
            value = raw
        node: Any = data
        parts = key.split(".")
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                if isinstance(node, list):
                    idx = int(part)
                    if last:
                        node[idx] = value
                    else:
                        node = node[idx]
                else:
                    if last:
                        node[part] = value
                    else:
                        if node.get(part) is None:
                            node[part] = {}
                        node = node[part]
        except (ValueError, IndexError, TypeError, AttributeError):
            problems.append(f"--set {item!r}: {key!r} does not name a settable place in the job")
    return problems


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _credential_urls(data: Any, loc: str = "") -> list[str]:
    """Places in the job holding a URL with user-info (never echo the value)."""
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _credential_urls(v, f"{loc}.{k}" if loc else str(k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _credential_urls(v, f"{loc}.{i}")]
    if isinstance(data, str) and url_has_credentials(data):
        return [f"{loc or '(top level)'}: the URL carries credentials (user:password@host); remove them. "
                "Credentials come from the environment (AWS_* variables, ~/.netrc), never the job file"]
    return []


def validate_job(data: Any, source: str | None = None) -> Job:
    if not isinstance(data, dict):
        raise ConfigError([f"the job must be a YAML mapping, got {type(data).__name__}"], source)
    try:
        safe_yaml.check_structure(data)  # pydantic-core must never see a bomb or deep nesting
    except safe_yaml.YamlLimitError as exc:
        raise ConfigError([str(exc)], source) from None
    leaks = _credential_urls(data)
    try:
        job = Job.model_validate(data)
    except ValidationError as exc:
        problems = list(leaks)
        for err in exc.errors():
            loc = _format_loc(tuple(p for p in err["loc"]))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see README, \"A real job\" and \"Job-file keys\")"
            elif err["type"] == "missing":
                msg = "required key is missing"
            elif "input" in err and not isinstance(err["input"], (dict, list)):
                msg = f"{msg} (got {redact_text(repr(err['input']))})"
            problems.append(f"{loc}: {msg}")
        raise ConfigError(problems, source) from None
    if leaks:
        raise ConfigError(leaks, source)
    return job


def read_yaml(path: str) -> Any:
    """One YAML document from a regular file or URL, within ``safe_yaml``'s limits."""
    from vlm_eval import storage

    try:
        with storage.open_input(path, "job file") as f:
            raw = f.read(safe_yaml.MAX_BYTES + 1)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([f"job file not found: {path}"]) from None
    except UserError as exc:  # not a regular file, missing s3fs, refused access
        raise ConfigError([str(exc)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read job file {path}: {exc}"]) from None
    except Exception as exc:  # noqa: BLE001 - e.g. botocore's NoCredentialsError: a user problem
        raise ConfigError([f"cannot read job file {path}: {type(exc).__name__}: {exc}"]) from None
    try:
        return safe_yaml.load(text)
    except safe_yaml.YamlLimitError as exc:
        raise ConfigError([f"refused: {exc}"], path) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], path) from None


def load_job(path: str, overrides: list[str] | None = None) -> Job:
    """Read, override and validate a job file. Raises ConfigError with every problem."""
    data = read_yaml(path)
    if data is None:
        data = {}
    problems = apply_overrides(data, overrides or []) if isinstance(data, dict) else []
    if problems:
        raise ConfigError(problems, path)
    return validate_job(data, path)
