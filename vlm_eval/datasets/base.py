"""What a dataset adapter is, and the canonical sample table it produces.

An adapter reads a dataset's own metadata files and returns a `SampleSet`:
one row per (image, question) sample, plus one error row per input row it could
not turn into a sample (stage ``manifest``). It never touches pixels or engines.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import pandas as pd

from vlm_eval.config import DatasetConfig

# Columns an adapter fills (``prompts`` is added later by vlm_eval.prompts.expand).
SAMPLE_COLUMNS = [
    "sample_id", "dataset", "image_uri", "question_id", "question", "label",
    "patient_id", "study_id", "finding", "split",
]
# Optional: a list of paraphrases given by the data itself (manifest / PSF-Med style).
PARAPHRASES = "paraphrases"
ERROR_COLUMNS = ["sample_id", "stage", "error_type", "message", "model", "source"]


def empty_errors() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in ERROR_COLUMNS})


@dataclass
class SampleSet:
    samples: pd.DataFrame
    """SAMPLE_COLUMNS (+ optional ``paraphrases``); ``question`` may be null when
    ``finding`` is set (the prompt set then supplies the question)."""
    errors: pd.DataFrame = field(default_factory=empty_errors)
    """ERROR_COLUMNS rows, stage 'manifest', ``source`` = 'file:row' of the bad input."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Counts worth recording in run.json (rows read, rows kept, filtered out...)."""


class Adapter(Protocol):
    name: ClassVar[str]
    """Registry name (dataset.adapter)."""
    options_doc: ClassVar[dict[str, str]]
    """Adapter-specific dataset.options keys -> one-line description (for `vlm-eval datasets`)."""

    def load(self, cfg: DatasetConfig) -> SampleSet: ...
