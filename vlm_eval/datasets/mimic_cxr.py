"""MIMIC-CXR-JPG 2.0.0: the published label, metadata and split files, as they are.

Files (PhysioNet ``mimic-cxr-jpg/2.0.0/``; schema as documented there):

* labels, one row per *study*: ``mimic-cxr-2.0.0-chexpert.csv.gz`` or
  ``mimic-cxr-2.0.0-negbio.csv.gz`` with ``subject_id, study_id`` and the 14
  CheXpert labeler columns (1.0 / 0.0 / -1.0 / blank; policy in `_chexpert_labels`);
* ``mimic-cxr-2.0.0-metadata.csv.gz``, one row per *image*: ``dicom_id,
  subject_id, study_id, ViewPosition, ...``;
* ``mimic-cxr-2.0.0-split.csv.gz``: ``dicom_id, study_id, subject_id, split``
  (train / validate / test).

``dataset.manifest`` is the label file, or the folder holding all of them (then
``labeler`` picks chexpert or negbio). Each image of a labelled study becomes a
sample per finding (study labels apply to all its images); images of unlabelled
studies are counted, not errors (the labelers skip studies without a usable
report). image_uri = ``{images}/files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg``.
"""
from __future__ import annotations

import os
import posixpath
from typing import Any, ClassVar

import pandas as pd

from vlm_eval import storage
from vlm_eval.config import DatasetConfig
from vlm_eval.datasets import _chexpert_labels as cx
from vlm_eval.datasets import _label_common as lc
from vlm_eval.datasets.base import SampleSet
from vlm_eval.errors import InputError

NAME = "mimic_cxr"
LABEL_FILE = "mimic-cxr-2.0.0-{labeler}.csv.gz"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
FRONTAL = ("PA", "AP")


def _sibling(path: str, name: str) -> str:
    """The file ``name`` in the folder of ``path`` (local path or URL)."""
    parent = posixpath.dirname(path) if storage.is_url(path) else os.path.dirname(path)
    return storage.join(parent or ".", name)


def _ids(s: pd.Series) -> pd.Series:
    """Ids as canonical strings ('10000032', not '10000032.0'); strips an 's'/'p' prefix."""
    return s.str.strip().str.lstrip("ps").str.replace(r"\.0$", "", regex=True)


class MimicCxrAdapter:
    """MIMIC-CXR-JPG 2.0.0: chexpert/negbio study labels joined to metadata (ViewPosition) and split files."""

    name: ClassVar[str] = NAME
    options_doc: ClassVar[dict[str, str]] = {
        **cx.POLICY_DOC,
        "labeler": "chexpert (default) | negbio: which label file, when dataset.manifest is the folder",
        "metadata": f"path of {METADATA_FILE} (default: beside the label file)",
        "split_file": f"path of {SPLIT_FILE} (default: beside the label file; optional unless `splits` is set)",
        **lc.COMMON_OPTIONS_DOC,
    }

    def paths(self, cfg: DatasetConfig, opts: dict[str, Any]) -> tuple[str, str, str | None]:
        """(label file, metadata file, split file or None)."""
        labeler = lc.choice(opts, "labeler", ("chexpert", "negbio"), "chexpert", NAME)
        manifest = lc.require(cfg.manifest, f"{LABEL_FILE.format(labeler=labeler)} or its folder", NAME)
        fs, inner = storage.filesystem(manifest)
        if fs.isdir(inner):
            manifest = storage.join(manifest, LABEL_FILE.format(labeler=labeler))
        metadata = opts.get("metadata") or _sibling(manifest, METADATA_FILE)
        split = opts.get("split_file")
        if split is None:
            guess = _sibling(manifest, SPLIT_FILE)
            split = guess if storage.exists(guess) else None
            if split is None and opts.get("splits"):
                raise InputError(f"dataset.options.splits needs {SPLIT_FILE}: not found at {guess}; "
                                 "set dataset.options.split_file")
        return manifest, metadata, split

    def load(self, cfg: DatasetConfig) -> SampleSet:
        opts = lc.parse_options(cfg, self.options_doc, NAME)
        label_path, meta_path, split_path = self.paths(cfg, opts)
        labels, meta, split = self.read(label_path, meta_path, split_path)
        return self.from_frames(labels, meta, split, cfg, label_path)

    @staticmethod
    def read(label_path: str, meta_path: str, split_path: str | None):
        labels = lc.read_csv(label_path, ["subject_id", "study_id"], "MIMIC-CXR-JPG label file",
                             optional=cx.LABEL_COLUMNS)
        meta = lc.read_csv(meta_path, ["dicom_id", "subject_id", "study_id", "ViewPosition"],
                           "MIMIC-CXR-JPG metadata file")
        split = None
        if split_path:
            split = lc.read_csv(split_path, ["dicom_id", "split"], "MIMIC-CXR-JPG split file")
        return labels, meta, split

    def from_frames(self, labels: pd.DataFrame, meta: pd.DataFrame, split: pd.DataFrame | None,
                    cfg: DatasetConfig, path: str) -> SampleSet:
        opts = lc.parse_options(cfg, self.options_doc, NAME)
        uncertain, blank, findings = cx.label_setup(cfg, opts, labels, NAME, "MIMIC-CXR-JPG label file", path)
        stats: dict[str, Any] = {"file": path, "rows_read": int(len(labels)), "metadata_rows_read": int(len(meta))}
        labels = labels.reset_index(drop=True)
        labels["_row"] = labels.index + 1
        labels["subject_id"], labels["study_id"] = _ids(labels["subject_id"]), _ids(labels["study_id"])
        dup = labels.duplicated(["subject_id", "study_id"], keep="first")
        dup_errors = lc.error_rows(NAME + ":s" + labels.loc[dup, "study_id"], "duplicate_study",
                                   "study listed more than once; only its first row is used", path,
                                   labels.loc[dup, "_row"])
        labels = labels[~dup]
        meta = meta.assign(subject_id=_ids(meta["subject_id"]), study_id=_ids(meta["study_id"]))
        meta = meta.drop_duplicates("dicom_id")
        joined = meta.merge(labels, on=["subject_id", "study_id"], how="inner", validate="many_to_one")
        stats["images_without_labels"] = int(len(meta) - len(joined))
        stats["studies_without_images"] = int(labels.shape[0] - joined[["subject_id", "study_id"]]
                                              .drop_duplicates().shape[0])
        if split is not None:
            joined = joined.merge(split[["dicom_id", "split"]].drop_duplicates("dicom_id"), on="dicom_id", how="left")
            stats["split_rows_read"] = int(len(split))
        else:
            joined["split"] = None
        sid = joined["subject_id"]
        rel = ("files/p" + sid.str.slice(0, 2) + "/p" + sid + "/s" + joined["study_id"] + "/"
               + joined["dicom_id"] + ".jpg")
        img = pd.DataFrame({
            "image_id": joined["dicom_id"],
            "image_uri": lc.join_uri(cfg.images, rel),
            "patient_id": sid,
            "study_id": joined["study_id"],
            "view": joined["ViewPosition"],
            "split": joined["split"],
            "_row": joined["_row"],
        })
        keep = lc.select_rows(img, opts, FRONTAL, stats, NAME)
        img, joined = img[keep], joined[keep]
        img, codes, label_errors = cx.labelled_images(img, joined, findings, uncertain, blank, stats, NAME, path)
        errors = lc.concat_errors(dup_errors, label_errors)
        return lc.make_sample_set(NAME, img, codes, errors, cfg, opts, stats)
