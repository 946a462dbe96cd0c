"""CheXpert: the published ``train.csv`` / ``valid.csv``, as they are.

Columns used: ``Path`` (e.g. ``CheXpert-v1.0-small/train/patient00001/study1/
view1_frontal.jpg``), ``Frontal/Lateral``, ``AP/PA`` and the 14 labeler columns
(1.0 / 0.0 / -1.0 / blank; policy in `_chexpert_labels`). One row per image.

* patient_id = ``patient00001``, study_id = ``patient00001/study1``, split =
  the path's ``train`` / ``valid`` / ``test`` folder;
* view = the ``AP/PA`` value for frontal images (AP, PA, LL, RL), ``LATERAL``
  for lateral ones; ``frontal_only`` keeps ``Frontal/Lateral == Frontal``;
* image_uri = ``{dataset.images}/{Path}`` (``strip_path_prefix`` removes a
  leading folder such as ``CheXpert-v1.0-small/`` first).

A ``Path`` that does not follow this layout makes its row an error row.
"""
from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd

from vlm_eval.config import DatasetConfig
from vlm_eval.datasets import _chexpert_labels as cx
from vlm_eval.datasets import _label_common as lc
from vlm_eval.datasets.base import SampleSet

NAME = "chexpert"
FRONTAL = ("AP", "PA", "LL", "RL", "FRONTAL")
_PATH_RE = r"(?:^|/)(?P<split>[^/]+)/(?P<patient>patient\d+)/(?P<study>study\d+)/(?P<image>[^/]+?)(?:\.\w+)?$"


class CheXpertAdapter:
    """CheXpert train/valid CSV: 14 labeler columns (1 / 0 / -1 / blank) under a stated uncertain policy."""

    name: ClassVar[str] = NAME
    options_doc: ClassVar[dict[str, str]] = {
        **cx.POLICY_DOC,
        "strip_path_prefix": "remove this leading folder from Path before joining dataset.images "
        "(e.g. 'CheXpert-v1.0-small/'); default: none",
        **lc.COMMON_OPTIONS_DOC,
    }

    def load(self, cfg: DatasetConfig) -> SampleSet:
        path = lc.require(cfg.manifest, "the CheXpert labels CSV (train.csv / valid.csv)", NAME)
        lc.parse_options(cfg, self.options_doc, NAME)
        return self.from_frame(self.read(path), cfg, path)

    @staticmethod
    def read(path: str) -> pd.DataFrame:
        return lc.read_csv(path, ["Path", "Frontal/Lateral"], "CheXpert labels CSV",
                           optional=["AP/PA", *cx.LABEL_COLUMNS])

    def from_frame(self, raw: pd.DataFrame, cfg: DatasetConfig, path: str) -> SampleSet:
        opts = lc.parse_options(cfg, self.options_doc, NAME)
        uncertain, blank, findings = cx.label_setup(cfg, opts, raw, NAME, "CheXpert labels CSV", path)
        stats: dict[str, Any] = {"file": path, "rows_read": int(len(raw))}
        raw = raw.reset_index(drop=True)
        parts = lc.extract(raw["Path"], _PATH_RE)
        rel = raw["Path"]
        prefix = opts.get("strip_path_prefix")
        if prefix:
            rel = rel.where(~rel.str.startswith(prefix).fillna(False), rel.str.slice(len(prefix)))
        lateral = raw["Frontal/Lateral"].str.lower().eq("lateral").fillna(False)
        ap_pa = raw["AP/PA"] if "AP/PA" in raw.columns else pd.Series(None, index=raw.index, dtype="str")
        img = pd.DataFrame({
            "image_id": parts["patient"] + "/" + parts["study"] + "/" + parts["image"],
            "image_uri": lc.join_uri(cfg.images, rel.fillna("")),
            "patient_id": parts["patient"],
            "study_id": parts["patient"] + "/" + parts["study"],
            "view": ap_pa.fillna("FRONTAL").where(~lateral, "LATERAL"),
            "split": parts["split"].str.lower(),
            "_row": raw.index + 1,
        })
        bad_path = parts["patient"].isna()
        path_errors = lc.error_rows(
            NAME + ":row" + img.loc[bad_path, "_row"].astype(str), "bad_path",
            "Path does not look like .../<split>/patientNNNNN/studyN/<view>.jpg: "
            + raw.loc[bad_path, "Path"].fillna("<empty>"), path, img.loc[bad_path, "_row"])
        stats["rows_invalid_path"] = int(bad_path.sum())
        keep = lc.select_rows(img, opts, FRONTAL, stats, NAME) & ~bad_path
        img, raw = img[keep], raw[keep]
        first, dup_errors = lc.dedupe(img, NAME, path)
        img, raw = img[first], raw[first]

        img, codes, label_errors = cx.labelled_images(img, raw, findings, uncertain, blank, stats, NAME, path)
        errors = lc.concat_errors(path_errors, dup_errors, label_errors)
        return lc.make_sample_set(NAME, img, codes, errors, cfg, opts, stats)
