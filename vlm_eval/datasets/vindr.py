"""VinDr-CXR: the published radiologist annotations, aggregated to image labels.

Accepted files (schema as published; the Kaggle copy ``vinbigdata-train.csv`` is
the one shipped in ``torchxrayvision``):

* long (box) format, one row per box or per "No finding" verdict:
  ``image_id, rad_id, class_name`` (+ ``class_id, x_min, ...``): Kaggle
  ``train.csv`` / PhysioNet ``annotations_train.csv`` / ``annotations_test.csv``;
* wide (image-label) format, one row per image x radiologist with a 0/1 column
  per class: PhysioNet ``image_labels_train.csv`` (``image_id, rad_ID, ...``).

Aggregation rule (documented, configurable): each image was read by several
radiologists (3 in the training set, a consensus of 1 in the test set). For a
finding, ``n_pos`` = radiologists who marked it, ``n`` = radiologists who read
the image. ``yes`` if ``n_pos >= min_readers`` (default ``majority``: more than
half of ``n``, i.e. 2 of 3); ``no`` if ``n_pos == 0``; otherwise the readers
disagree and ``ambiguous`` decides: ``exclude`` (default) | ``negative`` |
``positive`` | ``unknown``. VinDr publishes no patient id, so patient_id =
study_id = image_id. image_uri = ``{images}/{split}/{image_id}.dicom`` by
default (``image_template`` changes it, e.g. ``train_png/{image_id}.png``).
"""
from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from vlm_eval.config import DatasetConfig
from vlm_eval.datasets import _label_common as lc
from vlm_eval.datasets.base import SampleSet
from vlm_eval.errors import InputError

NAME = "vindr"
CLASSES = {
    "Aortic enlargement": "aortic enlargement", "Atelectasis": "atelectasis", "Calcification": "calcification",
    "Cardiomegaly": "cardiomegaly", "Consolidation": "consolidation", "ILD": "interstitial lung disease",
    "Infiltration": "infiltration", "Lung Opacity": "lung opacity", "Nodule/Mass": "nodule or mass",
    "Other lesion": "other lesion", "Pleural effusion": "pleural effusion",
    "Pleural thickening": "pleural thickening", "Pneumothorax": "pneumothorax",
    "Pulmonary fibrosis": "pulmonary fibrosis", "No finding": "no finding",
}
DEFAULT_FINDINGS = [f for f in CLASSES.values() if f not in ("no finding", "other lesion")]
_AMBIGUOUS = {"exclude": lc.EXCLUDED, "negative": lc.NO, "positive": lc.YES, "unknown": lc.UNKNOWN}


def _catalogue(names: list[str]) -> dict[str, str]:
    """Normalised class names and aliases -> canonical finding names."""
    cat = {lc.normalise_name(k): CLASSES.get(k, lc.normalise_name(k)) for k in names}
    cat.update({v: v for v in list(cat.values())})
    cat.update({"ild": "interstitial lung disease", "nodule/mass": "nodule or mass", "nodule mass": "nodule or mass",
                "effusion": "pleural effusion", "normal": "no finding"})
    return cat


class VinDrAdapter:
    """VinDr-CXR radiologist annotations, aggregated per image by a reader-agreement rule."""

    name: ClassVar[str] = NAME
    options_doc: ClassVar[dict[str, str]] = {
        "min_readers": "radiologists needed for 'yes': an integer or 'majority' (default: more than half)",
        "ambiguous": "some but too few readers marked it: exclude (default) | negative | positive | unknown",
        "split": "split of this file: train | test (default: 'test' if the file name says so, else 'train')",
        "image_template": "image path under dataset.images (default '{split}/{image_id}.dicom')",
        **lc.COMMON_OPTIONS_DOC,
    }

    def load(self, cfg: DatasetConfig) -> SampleSet:
        path = lc.require(cfg.manifest, "the VinDr-CXR annotations CSV (train.csv / annotations_train.csv)", NAME)
        lc.parse_options(cfg, self.options_doc, NAME)
        return self.from_frame(self.read(path), cfg, path)

    @staticmethod
    def read(path: str) -> pd.DataFrame:
        """Long format ``image_id, rad_id, class_name`` (wide files are melted to it)."""
        cols = list(lc.read_csv(path, ["image_id"], "VinDr-CXR annotations CSV", nrows=0).columns)
        if "class_name" in cols:
            return lc.read_csv(path, ["image_id", "rad_id", "class_name"], "VinDr-CXR annotations CSV")
        rad = next((c for c in cols if c.lower() == "rad_id"), None)
        classes = [c for c in cols if c in CLASSES]
        if rad is None or not classes:
            raise InputError(f"VinDr-CXR annotations CSV {path}: expected columns image_id, rad_id, class_name "
                             f"(box annotations) or image_id, rad_ID and 0/1 class columns; it has {cols}")
        wide = lc.read_csv(path, ["image_id", rad, *classes], "VinDr-CXR image-labels CSV")
        long = wide.melt(id_vars=["image_id", rad], value_vars=classes, var_name="class_name", value_name="v")
        marked = pd.to_numeric(long["v"], errors="coerce").fillna(0) > 0
        # keep one row per (image, reader) even when the reader marked nothing
        read_by = wide[["image_id", rad]].assign(class_name=None)
        out = pd.concat([long.loc[marked, ["image_id", rad, "class_name"]], read_by], ignore_index=True)
        return out.rename(columns={rad: "rad_id"})

    def from_frame(self, raw: pd.DataFrame, cfg: DatasetConfig, path: str) -> SampleSet:
        opts = lc.parse_options(cfg, self.options_doc, NAME)
        ambiguous = _AMBIGUOUS[lc.choice(opts, "ambiguous", _AMBIGUOUS, "exclude", NAME)]
        min_readers = opts.get("min_readers", "majority")
        if min_readers != "majority" and (isinstance(min_readers, bool) or not isinstance(min_readers, int)
                                          or min_readers < 1):
            raise InputError("dataset.options.min_readers: expected 'majority' or a positive integer, "
                             f"got {min_readers!r}")
        split_name = opts.get("split") or ("test" if "test" in os.path.basename(path).lower() else "train")
        stats: dict[str, Any] = {"file": path, "rows_read": int(len(raw)), "split": split_name}
        raw = raw.reset_index(drop=True)
        bad = raw["image_id"].isna() | raw["rad_id"].isna()
        first_row = pd.Series(raw.index + 1, index=raw.index)
        errors = lc.error_rows(NAME + ":row" + first_row[bad].astype(str), "bad_annotation",
                               "annotation row without image_id or rad_id", path, first_row[bad])
        raw = raw[~bad]
        unknown_class = raw["class_name"].notna() & ~raw["class_name"].isin(list(CLASSES))
        stats["rows_unknown_class"] = int(unknown_class.sum())
        findings = lc.resolve_findings(cfg.findings, _catalogue([*CLASSES, *raw["class_name"].dropna().unique()]),
                                       DEFAULT_FINDINGS, NAME, path)

        by_image = raw.groupby("image_id", sort=False)
        readers = by_image["rad_id"].nunique()
        row_of = pd.Series(raw.index + 1, index=raw["image_id"]).groupby(level=0, sort=False).first()
        template = opts.get("image_template", "{split}/{image_id}.dicom")
        ids = readers.index.to_series()
        rel = template.replace("{split}", split_name).split("{image_id}")
        if len(rel) != 2:
            raise InputError(f"dataset.options.image_template must contain '{{image_id}}' once, got {template!r}")
        img = pd.DataFrame({
            "image_id": ids, "image_uri": lc.join_uri(cfg.images, rel[0] + ids + rel[1]),
            "patient_id": ids, "study_id": ids, "view": None, "split": split_name,
            "_row": row_of.reindex(ids).to_numpy(),
        }).reset_index(drop=True)
        keep = lc.select_rows(img, opts, (), stats, NAME)
        img = img[keep]
        stats["images"] = int(len(img))
        stats["readers_per_image"] = {str(k): int(v) for k, v in readers.value_counts().sort_index().items()}

        marks = raw.dropna(subset=["class_name"]).drop_duplicates(["image_id", "rad_id", "class_name"])
        names = {c: CLASSES.get(c, lc.normalise_name(c)) for c in marks["class_name"].unique()}
        marks = marks.assign(finding=marks["class_name"].map(names))
        n_pos = marks.groupby(["image_id", "finding"]).size().unstack(fill_value=0)
        n_read = readers.reindex(img["image_id"]).to_numpy()
        need = np.floor(n_read / 2) + 1 if min_readers == "majority" else np.full(len(img), min_readers)
        stats["aggregation"] = {"min_readers": min_readers, "ambiguous": opts.get("ambiguous", "exclude")}
        labels = pd.DataFrame(index=img.index)
        for finding in findings:
            pos = n_pos[finding].reindex(img["image_id"]).fillna(0).to_numpy() if finding in n_pos else \
                np.zeros(len(img))
            labels[finding] = np.select([pos >= need, pos == 0], [lc.YES, lc.NO], default=ambiguous).astype(np.int8)
        stats["rows_kept"] = int(len(img))
        return lc.make_sample_set(NAME, img, labels, errors, cfg, opts, stats)
