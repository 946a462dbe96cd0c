"""Typed errors. Each one says what went wrong *and* what to do about it.

User errors (bad job file, bad arguments, missing inputs) derive from `UserError`;
the CLI prints their message and exits with status 2, never a traceback.
"""
from __future__ import annotations


class VlmEvalError(Exception):
    """Base of every error raised on purpose by vlm_eval."""


class UserError(VlmEvalError):
    """Something the user can fix: the message says how. CLI exit status 2."""

    exit_code = 2


class ConfigError(UserError):
    """A job file (or --set override) is invalid. Carries *every* problem found."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"invalid job{where} ({len(self.problems)} problem(s)):"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class InputError(UserError):
    """An input (manifest, dataset file, model path) is missing or unusable."""


class MissingDependencyError(UserError):
    """An optional dependency is needed for what the job asks; says the pip command."""

    def __init__(self, what: str, install: str):
        self.install = install
        super().__init__(f"{what} is not installed. Install it with:\n    {install}")


class EngineError(VlmEvalError):
    """The engine cannot work at all (failed to load, died). Stops the job."""


class UnsupportedModelError(UserError):
    """The model's architecture is not one an engine knows how to prompt."""


class JobFailedError(VlmEvalError):
    """The job ran but did not meet its failure policy (e.g. too many errors)."""

    exit_code = 1
