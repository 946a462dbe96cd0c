"""NIH ChestX-ray14: the published ``Data_Entry_2017_v2020.csv``, as it is.

Columns used: ``Image Index`` (file name, e.g. ``00000001_000.png``),
``Finding Labels`` (pipe-separated, e.g. ``Cardiomegaly|Effusion``, or
``No Finding``), ``Patient ID``, ``Follow-up #`` (optional) and ``View Position``
(PA / AP). Labels are text-mined from reports: a finding is ``yes`` when it is in
the row's list and ``no`` otherwise. A row whose list is empty or names a label
outside the 15 published ones is an error row.

Splits are not in this file: ``test_list`` / ``train_val_list`` name the
published ``test_list.txt`` / ``train_val_list.txt`` (one Image Index a line);
with only ``test_list`` every other image is ``train``. study_id = the image
(one image per visit: ``{patient}_{follow-up}``). image_uri =
``{dataset.images}/{Image Index}`` (set ``dataset.images`` to the folder holding
all images, e.g. the merged ``images/`` of the release).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from vlm_eval.config import DatasetConfig
from vlm_eval.datasets import _label_common as lc
from vlm_eval.datasets.base import SampleSet
from vlm_eval.errors import InputError

NAME = "nih"
FRONTAL = ("PA", "AP")
# Published label -> canonical finding name.
FINDING_OF = {
    "Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Effusion": "pleural effusion",
    "Infiltration": "infiltration", "Mass": "mass", "Nodule": "nodule", "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax", "Consolidation": "consolidation", "Edema": "edema",
    "Emphysema": "emphysema", "Fibrosis": "fibrosis", "Pleural_Thickening": "pleural thickening",
    "Hernia": "hernia", "No Finding": "no finding",
}
DEFAULT_FINDINGS = [f for f in FINDING_OF.values() if f != "no finding"]
CATALOGUE = {**{f: f for f in FINDING_OF.values()}, **{lc.normalise_name(k): v for k, v in FINDING_OF.items()},
             "infiltrates": "infiltration", "normal": "no finding"}


def _read_list(path: str, what: str) -> set[str]:
    from vlm_eval import storage

    try:
        text = storage.read_bytes(path).decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"NIH {what} not found: {path}") from None
    return {line.strip() for line in text.splitlines() if line.strip()}


class NIHAdapter:
    """NIH ChestX-ray14 Data_Entry_2017 CSV: pipe-separated Finding Labels, View Position, Patient ID."""

    name: ClassVar[str] = NAME
    options_doc: ClassVar[dict[str, str]] = {
        "test_list": "path of the published test_list.txt: those images get split 'test', the rest 'train'",
        "train_val_list": "path of train_val_list.txt: those images get split 'train'",
        **lc.COMMON_OPTIONS_DOC,
    }

    def load(self, cfg: DatasetConfig) -> SampleSet:
        path = lc.require(cfg.manifest, "the NIH ChestX-ray14 Data_Entry_2017 CSV", NAME)
        lc.parse_options(cfg, self.options_doc, NAME)
        return self.from_frame(self.read(path), cfg, path)

    @staticmethod
    def read(path: str) -> pd.DataFrame:
        return lc.read_csv(path, ["Image Index", "Finding Labels", "Patient ID", "View Position"],
                           "NIH Data_Entry CSV", optional=["Follow-up #"])

    def from_frame(self, raw: pd.DataFrame, cfg: DatasetConfig, path: str) -> SampleSet:
        opts = lc.parse_options(cfg, self.options_doc, NAME)
        findings = lc.resolve_findings(cfg.findings, CATALOGUE, DEFAULT_FINDINGS, NAME, path)
        stats: dict[str, Any] = {"file": path, "rows_read": int(len(raw))}
        raw = raw.reset_index(drop=True)
        index = raw["Image Index"]
        split = pd.Series(None, index=raw.index, dtype="str")
        if opts.get("train_val_list"):
            split = split.mask(index.isin(_read_list(opts["train_val_list"], "train_val_list")), "train")
        if opts.get("test_list"):
            in_test = index.isin(_read_list(opts["test_list"], "test_list"))
            split = split.mask(in_test, "test")
            if not opts.get("train_val_list"):
                split = split.mask(~in_test, "train")
        img = pd.DataFrame({
            "image_id": index,
            "image_uri": lc.join_uri(cfg.images, index.fillna("")),
            "patient_id": raw["Patient ID"],
            "study_id": index.str.replace(r"\.\w+$", "", regex=True),
            "view": raw["View Position"],
            "split": split,
            "_row": raw.index + 1,
        })
        keep = lc.select_rows(img, opts, FRONTAL, stats, NAME)
        img, raw = img[keep], raw[keep]
        first, dup_errors = lc.dedupe(img, NAME, path)
        img, raw = img[first], raw[first]

        entries = raw["Finding Labels"].str.split("|").explode().str.strip()
        unknown = entries.notna() & ~entries.isin(list(FINDING_OF))
        bad = raw["Finding Labels"].isna() | raw.index.isin(entries.index[unknown.to_numpy()])
        label_errors = lc.error_rows(
            NAME + ":" + img.loc[bad, "image_id"], "bad_labels",
            "Finding Labels must be '|'-separated names from " + str(sorted(FINDING_OF)) + ", got: "
            + raw.loc[bad, "Finding Labels"].fillna("<empty>"), path, img.loc[bad, "_row"])
        stats["rows_invalid_labels"] = int(bad.sum())
        img = img[~bad]
        stats["rows_kept"] = int(len(img))
        names = entries.map(FINDING_OF).to_numpy()
        labels = pd.DataFrame(index=img.index)
        for finding in findings:
            rows = entries.index[names == finding].unique()
            labels[finding] = np.where(img.index.isin(rows), lc.YES, lc.NO).astype(np.int8)
        errors = lc.concat_errors(dup_errors, label_errors)
        return lc.make_sample_set(NAME, img, labels, errors, cfg, opts, stats)
