"""A whole job over each built-in dataset adapter, on its real published label file
(or a documented-schema fixture), with generated CXR-like images at the dataset's
own paths and the scripted engine. Needs the label files (`make label-files`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from vlm_eval.config import validate_job
from vlm_eval.datasets import load_samples
from vlm_eval.datasets.synthetic import draw_cxr
from vlm_eval.run import run_job

pytestmark = pytest.mark.slow

LABEL_DIR = Path(os.environ.get("VLM_EVAL_LABEL_FILES", Path(__file__).resolve().parents[2] / ".cache/label-files"))
REAL = {
    "padchest": ("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", "cardiomegaly"),
    "chexpert": ("chexpert_train.csv.gz", "pleural effusion"),
    "nih": ("Data_Entry_2017_v2020.csv.gz", "pneumothorax"),
    "vindr": ("vinbigdata-train.csv.gz", "aortic enlargement"),
}


def _mimic_fixture(root: Path) -> Path:
    """MIMIC-CXR-JPG files as documented by PhysioNet (no real file can be had here)."""
    subjects = [10000032, 10000764, 10000898, 10001217]
    studies = [50414267, 57375967, 50771383, 58913004]
    dicoms = [f"{i:08x}-bde0afdd-112c0b34-7bc16630-4e384014" for i in range(4)]
    labels = pd.DataFrame({"subject_id": subjects, "study_id": studies,
                           "Cardiomegaly": [1.0, 0.0, 1.0, 0.0], "Edema": [None, 1.0, -1.0, 0.0]})
    labels.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    pd.DataFrame({"dicom_id": dicoms, "subject_id": subjects, "study_id": studies,
                  "ViewPosition": ["PA", "AP", "PA", "AP"]}).to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz",
                                                                   index=False)
    pd.DataFrame({"dicom_id": dicoms, "study_id": studies, "subject_id": subjects,
                  "split": ["test"] * 4}).to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    return root


def _psf_fixture(root: Path) -> Path:
    """PSF-Med style question + paraphrase file (schema inferred; no public file here)."""
    pd.DataFrame({
        "image_path": ["a.jpg", "b.jpg", "c.jpg"],
        "question": ["Is there a pleural effusion?"] * 3,
        "paraphrases": [json.dumps(["Is pleural fluid present?", "Can a pleural effusion be seen?"])] * 3,
        "answer": ["yes", "no", "yes"],
        "finding": "pleural effusion",
        "subject_id": ["1", "2", "3"],
    }).to_csv(root / "psf.csv", index=False)
    return root / "psf.csv"


def _cases(tmp: Path):
    for adapter, (name, finding) in REAL.items():
        yield adapter, str(LABEL_DIR / name), [finding], {"balanced_per_finding": 2, "seed": 0}
    yield "mimic_cxr", str(_mimic_fixture(tmp)), ["cardiomegaly"], {}
    yield "psf_med", str(_psf_fixture(tmp)), None, {}


def _write_images(uris, seed=0):
    for i, uri in enumerate(sorted(set(uris))):
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(draw_cxr(seed, i, 64, "cardiomegaly", bool(i % 2)), "L").save(path, format="PNG")


def test_a_job_runs_over_every_adapter(tmp_path, ray_local):
    if not (LABEL_DIR / REAL["padchest"][0]).exists():
        pytest.fail(f"label files missing in {LABEL_DIR}: run `make label-files` (CI does)")
    seen = {}
    for adapter, manifest, findings, options in _cases(tmp_path):
        images = tmp_path / adapter / "images"
        data = {
            "name": adapter, "run_id": adapter, "output": str(tmp_path / "runs"),
            "dataset": {"adapter": adapter, "manifest": manifest, "images": str(images),
                        "findings": findings, "options": options},
            "prompts": {"paraphrases": 2},
            "models": [{"name": "scripted", "engine": "scripted", "options": {"rules": {"text_only": {"*": -1}}}}],
            "resources": {"actors": 1, "gpus_per_actor": 0, "batch_size": 8},
            "cache": {"enabled": False},
        }
        job = validate_job(data)
        sset = load_samples(job.dataset, job.prompts, conditions=job.conditions)
        assert len(sset.samples) >= 2, adapter
        _write_images(sset.samples["image_uri"])
        result = run_job(job)
        assert result.status == "succeeded", adapter
        quads = pd.read_parquet(tmp_path / "runs" / adapter / "quadrants")
        assert len(quads) == len(sset.samples) and quads["complete"].all(), adapter
        assert set(quads["dataset"]) == {adapter}
        assert quads["patient_id"].notna().all(), adapter
        # Default margin +0.5 with the image, -1 without: every sample is image-reliant.
        assert (quads["quadrant"] == "Ideal").all(), adapter
        seen[adapter] = len(quads)
    assert set(seen) == set(REAL) | {"mimic_cxr", "psf_med"}
