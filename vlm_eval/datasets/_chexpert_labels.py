"""The CheXpert labeler's 14 labels and the uncertain / blank label policy.

Shared by CheXpert (``train.csv``) and MIMIC-CXR-JPG (``mimic-cxr-2.0.0-chexpert``
and ``-negbio`` CSVs), which use the same 14 column names and the same values:

* ``1.0``  positive: the report mentions the finding as present;
* ``0.0``  negative: the report explicitly rules it out;
* ``-1.0`` uncertain: the report mentions it with hedging ("may represent ...");
* blank    not mentioned in the report at all.

Policy (``dataset.options``):

* ``uncertain``: ``exclude`` (default) | ``positive`` | ``negative`` | ``unknown``.
  Default exclude: a hedged mention is neither a reliable yes nor a reliable no,
  and a yes/no evaluation scored against a guessed label measures the guess.
* ``blank``: ``exclude`` (default) | ``negative`` | ``unknown``. Default exclude:
  "not mentioned" is not "absent" (reports mention what the radiologist was asked
  about or saw), so only explicit 0.0 counts as ``no``; choose ``negative`` for
  the common "blank = absent" convention (more, noisier negatives).

``unknown`` keeps the sample with a null label (it is scored, never counted as
correct or wrong). A value other than 1, 0, -1 or blank makes its row an error.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from vlm_eval.datasets import _label_common as lc
from vlm_eval.errors import InputError

LABEL_COLUMNS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
]
# Canonical finding name (lower-case natural name) -> CSV column.
COLUMN_OF = {c.lower(): c for c in LABEL_COLUMNS}
# 'no finding' is a valid finding but not asked by default.
DEFAULT_FINDINGS = [f for f in COLUMN_OF if f != "no finding"]
CATALOGUE = {**{f: f for f in COLUMN_OF}, "effusion": "pleural effusion", "enlarged heart": "cardiomegaly",
             "opacity": "lung opacity", "support device": "support devices", "normal": "no finding"}

UNCERTAIN = ("exclude", "positive", "negative", "unknown")
BLANK = ("exclude", "negative", "unknown")
POLICY_DOC = {
    "uncertain": "label -1.0 (uncertain mention): exclude (default) | positive | negative | unknown (null label)",
    "blank": "blank (not mentioned): exclude (default; not mentioned is not absent) | negative | unknown",
}
_CODE = {"exclude": lc.EXCLUDED, "positive": lc.YES, "negative": lc.NO, "unknown": lc.UNKNOWN}


def policy(opts: dict[str, Any], adapter: str) -> tuple[str, str]:
    """The (uncertain, blank) policy named in the options, validated."""
    return (lc.choice(opts, "uncertain", UNCERTAIN, "exclude", adapter),
            lc.choice(opts, "blank", BLANK, "exclude", adapter))


def to_codes(raw: pd.DataFrame, findings: list[str], uncertain: str, blank: str,
             stats: dict[str, Any]) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Label codes for ``findings`` from the raw (string) label columns.

    Returns (codes frame indexed like ``raw``, ``bad`` row mask, message per bad
    row). Counts of each raw value per finding go to ``stats['raw_values']``.
    """
    codes = pd.DataFrame(index=raw.index)
    bad = pd.Series(False, index=raw.index)
    why = pd.Series("", index=raw.index, dtype="str")
    raw_counts = {}
    for finding in findings:
        col = COLUMN_OF[finding]
        text = raw[col]
        num = pd.to_numeric(text, errors="coerce")
        blank_mask = text.isna() | text.str.strip().eq("").fillna(False)
        pos, neg, unc = num.eq(1.0).to_numpy(), num.eq(0.0).to_numpy(), num.eq(-1.0).to_numpy()
        invalid = ~(pos | neg | unc | blank_mask.to_numpy())
        if invalid.any():
            bad |= invalid
            why = why.where(~invalid, why + (col + "=" + text.fillna("") + "; "))
        code = np.select(
            [pos, neg, unc, blank_mask.to_numpy()],
            [lc.YES, lc.NO, _CODE[uncertain], _CODE[blank]],
            default=lc.EXCLUDED,
        )
        codes[finding] = code.astype(np.int8)
        raw_counts[finding] = {"1.0": int(pos.sum()), "0.0": int(neg.sum()), "-1.0": int(unc.sum()),
                               "blank": int(blank_mask.sum()), "invalid": int(invalid.sum())}
    stats["raw_values"] = raw_counts
    stats["label_policy"] = {"uncertain": uncertain, "blank": blank}
    message = "label value(s) not 1.0 / 0.0 / -1.0 / blank: " + why.str.rstrip("; ")
    return codes, bad, message


def label_setup(cfg, opts: dict[str, Any], raw: pd.DataFrame, dataset: str, what: str,
                path: str) -> tuple[str, str, list[str]]:
    """(uncertain policy, blank policy, findings) for a CheXpert-style label file,
    checking that ``raw`` has a label column for every finding asked for."""
    uncertain, blank = policy(opts, dataset)
    findings = lc.resolve_findings(cfg.findings, CATALOGUE, DEFAULT_FINDINGS, dataset, path)
    missing = [COLUMN_OF[f] for f in findings if COLUMN_OF[f] not in raw.columns]
    if missing:
        raise InputError(f"{what} {path} lacks label column(s) {missing} for dataset.findings")
    return uncertain, blank, findings


def labelled_images(img: pd.DataFrame, raw: pd.DataFrame, findings: list[str], uncertain: str, blank: str,
                    stats: dict[str, Any], dataset: str, path: str) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """(images with valid labels, their label codes, error rows for the invalid ones).

    ``img`` carries ``image_id`` and ``_row``; ``raw`` holds the label columns, aligned.
    """
    codes, bad, message = to_codes(raw, findings, uncertain, blank, stats)
    errors = lc.error_rows(dataset + ":" + img.loc[bad, "image_id"], "bad_label", message[bad], path,
                           img.loc[bad, "_row"])
    img, codes = img[~bad], codes[~bad]
    stats["rows_kept"] = int(len(img))
    return img, codes, errors
