"""Shared pieces of the label-adapter tests: the real label files and canonical checks."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from vlm_eval.config import DatasetConfig
from vlm_eval.datasets.base import ERROR_COLUMNS, SAMPLE_COLUMNS

REPO = Path(__file__).resolve().parents[3]
LABEL_DIR = Path(os.environ.get("VLM_EVAL_LABEL_FILES", REPO / ".cache" / "label-files"))
PADCHEST = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"


def real_file(name: str) -> str:
    path = LABEL_DIR / name
    if not path.exists():
        pytest.skip(f"{path} missing: run `scripts/fetch-label-files.sh {LABEL_DIR}` (or set VLM_EVAL_LABEL_FILES)")
    return str(path)


def cfg(adapter: str, manifest: str, **kw) -> DatasetConfig:
    return DatasetConfig(adapter=adapter, manifest=manifest, images=kw.pop("images", "/data/img"), **kw)


def check_canonical(ss, dataset: str) -> None:
    s = ss.samples
    assert list(s.columns[: len(SAMPLE_COLUMNS)]) == SAMPLE_COLUMNS
    assert list(ss.errors.columns) == ERROR_COLUMNS
    assert s["sample_id"].is_unique
    assert (s["dataset"] == dataset).all() and s["question"].isna().all()
    assert set(s["label"].dropna()) <= {"yes", "no"}
    assert (s["question_id"] == s["finding"].str.replace(r"[^a-z0-9]+", "_", regex=True)).all()


# ------------------------------------------------------------------ PadChest

