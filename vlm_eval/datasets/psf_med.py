"""PSF-Med style question + paraphrase files.

No PSF-Med file is public without a sign-in, so this is the schema *inferred*
from the benchmark's description (questions over MIMIC-CXR / PadChest / VinDr
images, each with meaning-preserving paraphrases and a ground-truth answer).
CSV (optionally gzipped; lists JSON-encoded), JSON Lines, JSON records or Parquet:

wide (default): one row per question

| column | required | meaning |
| --- | --- | --- |
| ``image`` (or ``image_path``, ``filename``) | yes | image path under dataset.images, or a URL |
| ``question`` (or ``original_question``) | yes | the original question (variant 0) |
| ``paraphrases`` | no | list of paraphrases (JSON list in CSV) |
| ``answer`` (or ``label``, ``ground_truth``) | yes | yes / no; blank = unknown |
| ``question_id``, ``patient_id`` (or ``subject_id``), ``study_id``, | no | carried through |
| ``finding`` (or ``pathology``), ``split``, ``source``, ``is_yesno`` | no | carried through / filters |

long: one row per (question, paraphrase) with a ``paraphrase`` column; rows
are grouped by (image, question), paraphrases kept in file order.

Non-yes/no answers (PSF-Med also has open questions) and rows with
``is_yesno`` false are skipped and counted (``binary_only: false`` makes them
error rows instead). Unparseable paraphrase lists are error rows.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from vlm_eval import storage
from vlm_eval.config import DatasetConfig
from vlm_eval.datasets import _label_common as lc
from vlm_eval.datasets.base import PARAPHRASES, SAMPLE_COLUMNS, SampleSet
from vlm_eval.errors import InputError
from vlm_eval.findings import normalise_finding
from vlm_eval.provenance import url_has_credentials
from vlm_eval.values import is_missing

NAME = "psf_med"
ALIASES = {
    "image": ["image", "image_path", "filename", "image_file"],
    "question": ["question", "original_question"],
    "answer": ["answer", "label", "ground_truth", "gt_answer"],
    "question_id": ["question_id", "qid"],
    "patient_id": ["patient_id", "subject_id"],
    "study_id": ["study_id"],
    "finding": ["finding", "pathology"],
    "split": ["split"],
    "source": ["source", "dataset", "subset"],
    "is_yesno": ["is_yesno"],
}
_YES = {"yes", "y", "true", "1"}
_NO = {"no", "n", "false", "0"}


def _read_any(path: str) -> pd.DataFrame:
    low = path.lower()
    storage.check_regular(path, "PSF-Med question file")
    opts = storage.reader_options(path)
    try:
        if low.endswith(".parquet"):
            return pd.read_parquet(path, storage_options=opts)
        if low.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            return pd.read_json(path, lines=True, dtype=False, storage_options=opts)
        if low.endswith((".json", ".json.gz")):
            return pd.read_json(path, dtype=False, storage_options=opts)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], storage_options=opts)
    except FileNotFoundError:
        raise InputError(f"PSF-Med question file not found: {path}") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"cannot read PSF-Med question file {path}: {exc}") from None


def _parse_list(value: Any) -> list[str] | None:
    """A paraphrase list from a list / array / JSON string; None when unparseable."""
    if not isinstance(value, str) and is_missing(value):  # "" is no list: unparseable below
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    try:
        out = json.loads(value)
    except (TypeError, ValueError):
        return None
    return [str(v) for v in out] if isinstance(out, list) else None


class PsfMedAdapter:
    """PSF-Med style question files: image, question, paraphrases, yes/no answer (schema inferred)."""

    name: ClassVar[str] = NAME
    options_doc: ClassVar[dict[str, str]] = {
        "binary_only": "skip (true, default) or report as errors (false) rows whose answer is not yes/no",
        "sources": "keep only rows whose source column is one of these (e.g. [mimic, padchest])",
        "dataset_name": "value of the dataset column (default 'psf_med')",
        **lc.COMMON_OPTIONS_DOC,
    }

    def load(self, cfg: DatasetConfig) -> SampleSet:
        path = lc.require(cfg.manifest, "a PSF-Med style question file (CSV / JSONL / Parquet)", NAME)
        lc.parse_options(cfg, self.options_doc, NAME)
        return self.from_frame(_read_any(path), cfg, path)

    def from_frame(self, raw: pd.DataFrame, cfg: DatasetConfig, path: str) -> SampleSet:
        opts = lc.parse_options(cfg, self.options_doc, NAME)
        dataset = str(opts.get("dataset_name", NAME))
        stats: dict[str, Any] = {"file": path, "rows_read": int(len(raw))}
        raw = raw.reset_index(drop=True)
        col = {k: next((c for c in names if c in raw.columns), None) for k, names in ALIASES.items()}
        missing = [f"{k} (or {ALIASES[k][1:]})" for k in ("image", "question", "answer") if col[k] is None]
        if missing:
            raise InputError(f"PSF-Med question file {path} lacks column(s) {missing}; it has {list(raw.columns)}")
        get = {k: (raw[c].astype("str") if c else pd.Series(None, index=raw.index, dtype="str"))
               for k, c in col.items()}
        rows = pd.Series(raw.index + 1, index=raw.index)
        if "paraphrase" in raw.columns and "paraphrases" not in raw.columns:  # long format
            key = get["image"] + "\x00" + get["question"]
            first = ~key.duplicated()
            grouped = raw["paraphrase"].dropna().astype(str).groupby(key).agg(list)
            raw, get, rows = raw[first], {k: v[first] for k, v in get.items()}, rows[first]
            paras = key[first].map(grouped).map(lambda v: v if isinstance(v, list) else [])
            stats["long_format_rows"] = stats["rows_read"]
        elif "paraphrases" in raw.columns:
            paras = raw["paraphrases"].map(_parse_list)
        else:
            paras = pd.Series([[] for _ in range(len(raw))], index=raw.index)

        answer = get["answer"].str.strip().str.lower()
        label = pd.Series(np.where(answer.isin(_YES), "yes", np.where(answer.isin(_NO), "no", None)),
                          index=raw.index, dtype="str")
        non_binary = answer.notna() & label.isna()
        if col["is_yesno"]:
            non_binary |= get["is_yesno"].str.lower().isin({"false", "0", "no"})
        qid = get["question_id"].fillna(
            get["question"].map(lambda q: "q" + hashlib.sha1(str(q).encode()).hexdigest()[:12]))
        image = get["image"]
        sample_key = get["question_id"].fillna(image + "|" + get["question"].fillna(""))
        sample_id = dataset + ":" + sample_key.map(
            lambda k: k if len(k) <= 64 and "|" not in k else hashlib.sha1(k.encode()).hexdigest()[:16])

        bad_para = paras.isna()
        missing_req = image.isna() | get["question"].isna()
        dup = sample_id.duplicated() & ~bad_para & ~missing_req
        # URIs go to samples/ and errors/: one with user:password@ must not (credentials come from the env)
        cred = image.fillna("").map(url_has_credentials).astype(bool) & ~missing_req
        binary_only = opts.get("binary_only", True)
        err = [
            lc.error_rows(sample_id[bad_para], "bad_paraphrases", "paraphrases is not a (JSON) list of strings",
                          path, rows[bad_para]),
            lc.error_rows(sample_id[missing_req], "missing_field", "row lacks its image or question", path,
                          rows[missing_req]),
            lc.error_rows(sample_id[dup], "duplicate_question", "sample listed more than once", path, rows[dup]),
            lc.error_rows(sample_id[cred], "credentials_in_url", "the image URL carries credentials "
                          "(user:password@host); remove them: credentials come from the environment", path, rows[cred]),
        ]
        if not binary_only:
            err.append(lc.error_rows(sample_id[non_binary], "non_binary_answer",
                                     "answer is not yes/no: " + answer[non_binary].fillna(""), path, rows[non_binary]))
        keep = ~(bad_para | missing_req | dup | non_binary | cred)
        stats["rows_skipped_non_binary"] = int(non_binary.sum()) if binary_only else 0
        if opts.get("sources"):
            if col["source"] is None:
                raise InputError(f"dataset.options.sources: {path} has no source/dataset/subset column")
            in_src = get["source"].str.lower().isin({str(s).lower() for s in opts["sources"]})
            stats["rows_dropped_by_source"] = int((keep & ~in_src).sum())
            keep &= in_src
        finding = get["finding"].map(normalise_finding, na_action="ignore")  # the one finding-name rule
        img = pd.DataFrame({"image_id": image, "image_uri": lc.join_uri(cfg.images, image.fillna("")),
                            "patient_id": get["patient_id"], "study_id": get["study_id"], "view": None,
                            "split": get["split"], "_row": rows})
        keep &= lc.select_rows(img, opts, (), stats, NAME)
        if cfg.findings is not None:
            wanted = lc.resolve_findings(cfg.findings, {f: f for f in finding.dropna().unique()}, [], NAME, path)
            keep &= finding.isin(wanted)
        errors = lc.concat_errors(*err)
        stats["error_rows"] = int(len(errors))
        k = np.flatnonzero(keep.to_numpy())
        n, seed = opts.get("balanced_per_finding"), int(opts.get("seed", 0))
        if n or cfg.limit:
            group = finding.fillna(qid).iloc[k]
            groups = list(pd.unique(group))
            f_idx = pd.Categorical(group, categories=groups).codes.astype(np.int64)
            lab = np.where(label.iloc[k].eq("yes").fillna(False), lc.YES,
                           np.where(label.iloc[k].eq("no").fillna(False), lc.NO, lc.UNKNOWN)).astype(np.int8)
            pat = img["patient_id"].fillna(image).iloc[k]
            k = k[lc.select(f_idx, lab, lc.seeded_hash(pat, seed, "patient"),
                            lc.seeded_hash(sample_id.iloc[k], seed, "image"), groups, seed, n, cfg.limit, stats)]
            if n:  # labelled rows only are candidates of a balanced sample
                stats["error_rows_not_reported"] = int(len(errors))
                errors = errors.iloc[0:0]
        out = pd.DataFrame({
            "sample_id": sample_id, "dataset": dataset, "image_uri": img["image_uri"], "question_id": qid,
            "question": get["question"], "label": label, "patient_id": img["patient_id"],
            "study_id": img["study_id"], "finding": finding, "split": img["split"],
            PARAPHRASES: paras,
        }).iloc[k].reset_index(drop=True)[[*SAMPLE_COLUMNS, PARAPHRASES]]
        stats["samples"] = int(len(out))
        stats["labels"] = {k2: int(v) for k2, v in out["label"].fillna("unknown").value_counts().items()}
        return SampleSet(samples=out, errors=errors.reset_index(drop=True), stats=stats)
