"""PadChest: the published 160K labels CSV, as it is.

File: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz`` (BIMCV; also
shipped in the ``torchxrayvision`` wheel). One row per image. Columns used:
``ImageID`` (file name), ``ImageDir`` (the numbered folder the image is in),
``StudyID``, ``PatientID``, ``Projection`` (PA, L, AP_horizontal, AP, COSTAL,
EXCLUDE, UNK), ``MethodLabel`` (Physician | RNN_model) and ``Labels``, a
Python-list string such as ``['pleural effusion', ' cardiomegaly']``.

Label rule: PadChest labels are *report-derived* (27% of rows by physicians,
the rest by an RNN trained on them). A finding is ``yes`` when it is in the
row's ``Labels`` list (entries are stripped and lower-cased: the file spells
the same label with and without a leading space) and ``no`` otherwise, so
``no`` means "not mentioned in the report". ``normal`` is itself a label.
Rows whose ``Labels`` is empty or not a list literal (103 rows of the 160K
file) become error rows (``InvalidLabels``); rows labelled ``exclude`` (the
annotators' mark for unusable studies) are dropped by default and counted.

Images resolve as ``{dataset.images}/{ImageDir}/{ImageID}``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from vlm_eval.config import DatasetConfig
from vlm_eval.datasets import _label_common as lc
from vlm_eval.datasets.base import SampleSet
from vlm_eval.errors import InputError

NAME = "padchest"
LABELS_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
FRONTAL = ("PA", "AP", "AP_horizontal")
DEFAULT_FINDINGS = [
    "cardiomegaly", "pleural effusion", "pneumonia", "atelectasis", "nodule", "consolidation",
    "pneumothorax", "pulmonary edema", "emphysema", "mass", "hiatal hernia", "scoliosis",
]
# A Python list literal of quoted strings (single or double quotes), possibly empty.
_ITEM = r"""(?:'[^']*'|"[^"]*")"""
_LIST_RE = rf"\[\s*(?:{_ITEM}(?:\s*,\s*{_ITEM})*\s*,?)?\s*\]"


def parse_labels(labels: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Vectorised parse of PadChest ``Labels`` strings.

    Returns (``valid`` mask per row, ``entries``: one normalised label per
    element, indexed by the row it came from; empty strings dropped). Equivalent
    to ``ast.literal_eval`` + strip + lower for every list-of-strings literal.
    """
    s = labels.astype("str")
    valid = labels.notna() & s.str.fullmatch(_LIST_RE).fillna(False).astype(bool)
    items = s[valid].str.findall(_ITEM).explode().dropna()
    entries = items.str.slice(1, -1).str.replace("  ", " ", regex=False).str.strip().str.lower()
    return valid, entries[entries != ""]


class PadChestAdapter:
    """PadChest 160K labels CSV (Labels list, Projection); yes = finding in the report-derived Labels."""

    name: ClassVar[str] = NAME
    options_doc: ClassVar[dict[str, str]] = {
        "exclude_lateral": "drop lateral images (Projection L); default false",
        "label_methods": "keep only rows labelled by these methods: [Physician] and/or [RNN_model]; default: both",
        "drop_labelled": "drop rows whose Labels contain any of these (default [exclude]); [] keeps them",
        **lc.COMMON_OPTIONS_DOC,
    }

    def load(self, cfg: DatasetConfig) -> SampleSet:
        path = lc.require(cfg.manifest, f"the PadChest labels CSV ({LABELS_FILE})", NAME)
        lc.parse_options(cfg, self.options_doc, NAME)  # fail fast, before the read
        return self.from_frame(self.read(path), cfg, path)

    @staticmethod
    def read(path: str) -> pd.DataFrame:
        """The columns of the labels CSV this adapter uses, as strings."""
        cols = ["ImageID", "ImageDir", "StudyID", "PatientID", "Projection", "Labels"]
        return lc.read_csv(path, cols, "PadChest labels CSV", optional=["MethodLabel"])

    def from_frame(self, raw: pd.DataFrame, cfg: DatasetConfig, path: str) -> SampleSet:
        """Samples from an already-read labels table (``read``'s output)."""
        opts = lc.parse_options(cfg, self.options_doc, NAME)
        stats: dict[str, Any] = {"file": path, "rows_read": int(len(raw))}
        raw = raw.reset_index(drop=True)
        img = pd.DataFrame({
            "image_id": raw["ImageID"],
            "image_uri": lc.join_uri(cfg.images, raw["ImageDir"].fillna("") + "/" + raw["ImageID"]),
            "patient_id": raw["PatientID"],
            "study_id": raw["StudyID"],
            "view": raw["Projection"],
            "split": pd.Series(None, index=raw.index, dtype=object),
            "_row": raw.index + 1,
        })
        keep = lc.select_rows(img, opts, FRONTAL, stats, NAME)
        if opts.get("exclude_lateral"):
            lateral = raw["Projection"].str.upper().eq("L").fillna(False)
            stats["rows_dropped_lateral"] = int((keep & lateral).sum())
            keep &= ~lateral
        methods = opts.get("label_methods")
        if methods:
            if "MethodLabel" not in raw.columns:
                raise InputError(f"dataset.options.label_methods: {path} has no MethodLabel column")
            in_methods = raw["MethodLabel"].str.lower().isin({str(m).lower() for m in methods})
            stats["rows_dropped_by_label_method"] = int((keep & ~in_methods).sum())
            keep &= in_methods

        img, raw = img[keep], raw[keep]
        first, dup_errors = lc.dedupe(img, NAME, path)
        img, raw = img[first], raw[first]

        valid, entries = parse_labels(raw["Labels"])
        bad = ~valid
        label_errors = lc.error_rows(
            NAME + ":" + img.loc[bad, "image_id"], "bad_labels",
            "Labels is empty or not a list of strings: " + raw.loc[bad, "Labels"].fillna("<empty>").str.slice(0, 80),
            path, img.loc[bad, "_row"],
        )
        stats["rows_invalid_labels"] = int(bad.sum())
        img = img[valid]

        drop_names = [lc.normalise_name(x) for x in opts.get("drop_labelled", ["exclude"]) or []]
        if drop_names:
            dropped = entries.index[entries.isin(drop_names).to_numpy()].unique()
            stats["rows_dropped_by_label"] = {"labels": drop_names, "rows": int(img.index.isin(dropped).sum())}
            img = img[~img.index.isin(dropped)]
        stats["rows_kept"] = int(len(img))

        catalogue = {name: name for name in [*entries.unique(), *DEFAULT_FINDINGS]}
        catalogue.update({lc.normalise_name(k): k for k in list(catalogue)})
        findings = lc.resolve_findings(cfg.findings, catalogue, DEFAULT_FINDINGS, NAME, path)
        labels = pd.DataFrame(index=img.index)
        values = entries.to_numpy()
        for finding in findings:
            rows = entries.index[values == finding].unique()
            labels[finding] = np.where(img.index.isin(rows), lc.YES, lc.NO).astype(np.int8)
        errors = lc.concat_errors(dup_errors, label_errors)
        return lc.make_sample_set(NAME, img, labels, errors, cfg, opts, stats)
