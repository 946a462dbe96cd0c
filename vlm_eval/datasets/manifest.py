"""The generic manifest adapter (``dataset.adapter: manifest``), see README "A real job".

Formats (by file name, or ``dataset.options.format``): CSV (``.csv``, ``.csv.gz``,
``.tsv``), Parquet (``.parquet``, ``.pq``), JSON Lines (``.jsonl``, ``.ndjson``,
also gzipped). Any fsspec path: the same code reads local files and ``s3://``.
Column names are matched after stripping spaces and lower-casing.

Whole-file problems stop before any work (InputError): the manifest is missing,
unreadable or not a regular file (a FIFO or device is refused, never read), has no data rows, or lacks a required column (one message names the
missing columns, the file and the columns found). Row problems become error rows
(stage ``manifest``, ``source`` = ``FILE:N``: N is the 1-based line in CSV/JSONL
files, header = line 1, and the 0-based row index in Parquet):

- ``malformed_row``   wrong number of CSV fields, a JSONL line that is not a JSON object
- ``bad_encoding``    text that is not valid in the manifest's encoding (UTF-8 unless
                      ``options.encoding``). Never decoded with replacement characters:
                      that would silently change the question the model sees.
- ``missing_image`` / ``empty_question``   the required value is empty
- ``bad_paraphrases`` not a JSON list of non-empty strings (a list in Parquet/JSONL)
- ``bad_label``       anything but yes/no/true/false/y/n/1/0 (any case) or empty
- ``path_escape``     a path that leaves the images root (``..``, or an absolute path
                      outside it)
- ``bad_path``        an image path with a NUL byte
- ``credentials_in_url`` an image URL with user-info (``https://user:pass@host/...``):
                      refused, because the URI is stored in samples/ and quoted in errors/;
                      credentials come from the environment (AWS_*, ~/.netrc)

Labels: ``yes``/``y``/``true``/``1`` -> ``yes``; ``no``/``n``/``false``/``0`` -> ``no``;
empty -> unknown (null). Booleans and 1/0 numbers from Parquet/JSONL map the same way.

Image paths: absolute URLs (``s3://...``, ``https://...``) are kept; other paths are
joined to ``dataset.images`` (default: the manifest's folder) and must stay inside it
(``file://`` URLs under a local root too). The check is lexical: symlinks inside the
root are trusted. Under a URL root, ``..`` that leaves the root is rejected as well.

``sample_id`` defaults to a stable 16-hex hash of (image as written, question), so
a rerun of the same manifest gives the same ids.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from collections import Counter
from typing import Any

import pandas as pd

from vlm_eval import storage
from vlm_eval.config import DatasetConfig
from vlm_eval.datasets._manifest_io import REQUIRED, RowError, detect_format, read_csv, read_jsonl, read_parquet
from vlm_eval.datasets.base import PARAPHRASES, SAMPLE_COLUMNS, SampleSet, empty_errors
from vlm_eval.errors import InputError
from vlm_eval.findings import normalise_finding
from vlm_eval.provenance import url_has_credentials
from vlm_eval.values import is_missing

OPTIONAL = ("paraphrases", "label", "sample_id", "patient_id", "study_id", "split", "finding")
SOURCE = "_source"  # extra column: FILE:N of the row (error messages downstream); dropped by load_samples
YES = {"yes", "y", "true", "1", "1.0"}
NO = {"no", "n", "false", "0", "0.0"}
_SURROGATE = re.compile("[\udc80-\udcff]")


# ---------------------------------------------------------------- helpers other adapters reuse


def default_sample_id(image: str, question: str | None, finding: str | None = None) -> str:
    """Stable id of a sample from what identifies it in the input (16 hex chars)."""
    key = [str(image), question or ""] + ([str(finding)] if finding else [])
    return hashlib.sha256(json.dumps(key, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def normalise_label(value: Any) -> str | None:
    """'yes' / 'no' / None (unknown); RowError('bad_label') for anything else."""
    if is_missing(value):
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if value in (0, 1):
            return "yes" if value == 1 else "no"
        text = str(value)
    else:
        text = str(value).strip()
    low = text.lower()
    if low == "":
        return None
    if low in YES:
        return "yes"
    if low in NO:
        return "no"
    hint = " (uncertain labels such as -1 need mapping to yes/no/empty first)" if low in ("-1", "-1.0") else ""
    shown = text if len(text) <= 20 else text[:20] + "..."
    raise RowError("bad_label", f"label {shown!r} is not yes/no/true/false/1/0 or empty{hint}")


def resolve_image_uri(image: str, root: str | None) -> str:
    """Absolute URL kept; else joined to ``root``; RowError('path_escape') if it leaves the root.

    Refused: a NUL byte (``bad_path``) and a URL with user-info (``credentials_in_url``):
    the URI is stored in samples/ and quoted in errors/, so it must hold no secret; object
    stores and HTTP take credentials from the environment (AWS_*, ~/.netrc), never the manifest.
    """
    image = image.strip()
    if "\x00" in image:
        raise RowError("bad_path", "the image path contains a NUL byte; fix the path in the manifest")
    if url_has_credentials(image):
        raise RowError("credentials_in_url", "the image URL carries credentials (user:password@host); remove "
                                             "them: credentials come from the environment (AWS_* variables, "
                                             "~/.netrc), never from the manifest")
    if image.startswith("file://") and root is not None and not storage.is_url(root):
        image = image[len("file://"):]  # a local file URL is a local path: the root check applies
    elif "://" in image:
        return image
    if root is None:
        return os.path.abspath(os.path.expanduser(image))
    if storage.is_url(root):
        proto, rest = root.split("://", 1)
        base = posixpath.normpath("/" + rest.strip("/"))
        cand = posixpath.normpath(posixpath.join(base, image))
        if cand != base and not cand.startswith(base.rstrip("/") + "/"):
            raise RowError("path_escape", f"image path {image!r} leaves the images root {root}; use paths "
                                          "relative to dataset.images without '..'")
        return f"{proto}://{cand.lstrip('/')}"
    base = os.path.abspath(os.path.expanduser(root[len("file://"):] if root.startswith("file://") else root))
    cand = os.path.normpath(os.path.join(base, image))
    if os.path.commonpath([base, cand]) != base:
        raise RowError("path_escape", f"image path {image!r} leaves the images root {base}; use paths "
                                      "relative to dataset.images without '..' (absolute paths must lie inside it)")
    return cand


def _text(value: Any, column: str) -> str | None:
    """A cell as stripped text (None when empty); RowError on undecodable bytes."""
    if is_missing(value):
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise RowError("bad_encoding", f"column {column!r} is not valid UTF-8") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if _SURROGATE.search(text):
        raise RowError("bad_encoding", f"column {column!r} has bytes that are not valid in the manifest's "
                                       "encoding; re-save it as UTF-8 or set dataset.options.encoding")
    return text or None


def _paraphrases(value: Any) -> list[str] | None:
    if is_missing(value):
        return None
    if isinstance(value, (str, bytes)):
        text = _text(value, "paraphrases")
        if text is None:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RowError("bad_paraphrases", f"paraphrases is not a JSON list of strings ({exc.msg} at "
                                              f"character {exc.pos})") from None
    if not isinstance(value, (list, tuple)) and not hasattr(value, "tolist"):
        raise RowError("bad_paraphrases", f"paraphrases must be a list of strings, got {type(value).__name__}")
    items = list(value.tolist() if hasattr(value, "tolist") else value)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise RowError("bad_paraphrases", f"paraphrases[{i}] is not a non-empty string")
        out.append(_text(item, f"paraphrases[{i}]"))
    return out


# ---------------------------------------------------------------- the adapter


def _dirname(path: str) -> str:
    if storage.is_url(path):
        proto, rest = path.split("://", 1)
        return f"{proto}://{posixpath.dirname(rest)}"
    return os.path.dirname(os.path.abspath(path))


def _dataset_name(path: str) -> str:
    base = posixpath.basename(path.rstrip("/")) if "://" in path else os.path.basename(path)
    for suffix in (".gz", ".bz2", ".zst", ".xz", ".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
    return base or "manifest"


def _to_sample(row: dict, root: str, dataset: str) -> dict:
    image = _text(row.get("image"), "image")
    if image is None:
        raise RowError("missing_image", "the image column is empty")
    question = _text(row.get("question"), "question")
    if question is None:
        raise RowError("empty_question", "the question column is empty")
    return {
        "sample_id": _text(row.get("sample_id"), "sample_id") or default_sample_id(image, question),
        "dataset": dataset,
        "image_uri": resolve_image_uri(image, root),
        "question_id": None,
        "question": question,
        "label": normalise_label(row.get("label")),
        "patient_id": _text(row.get("patient_id"), "patient_id"),
        "study_id": _text(row.get("study_id"), "study_id"),
        "finding": _text(row.get("finding"), "finding"),
        "split": _text(row.get("split"), "split"),
        PARAPHRASES: _paraphrases(row.get("paraphrases")),
    }


def read_manifest(path: str, images: str | None, *, dataset: str | None = None, fmt: str | None = None,
                  encoding: str = "utf-8") -> SampleSet:
    """Read one manifest file into a SampleSet (see the module doc for every rule)."""
    fmt = detect_format(path, fmt)
    if fmt == "parquet":
        header, rows = read_parquet(path)
    elif fmt == "jsonl":
        header, rows = read_jsonl(path, encoding)
    else:
        header, rows = read_csv(path, encoding, "\t" if fmt == "tsv" else ",")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(
            f"manifest {path} lacks required column(s) {missing}. Found columns: {header}. Required: "
            f"{list(REQUIRED)}; optional: {list(OPTIONAL)}."
        )
    root = images if images else _dirname(path)
    name = dataset or _dataset_name(path)
    samples, errors = [], []
    counts: Counter[str] = Counter()
    n_rows = blank = 0
    for n, row in rows:
        if row is None:
            blank += 1
            continue
        n_rows += 1
        source = f"{path}:{n}"
        try:
            if isinstance(row, RowError):
                raise row
            sample = _to_sample(row, root, name)
        except RowError as exc:
            counts[exc.error_type] += 1
            sid = row.get("sample_id") if isinstance(row, dict) else None
            sid = str(sid).strip() if isinstance(sid, (str, int)) and not _SURROGATE.search(str(sid)) else None
            errors.append({"sample_id": sid or f"{name}:{n}", "stage": "manifest", "error_type": exc.error_type,
                           "message": f"{source}: {exc}", "model": None, "source": source})
            continue
        sample[SOURCE] = source
        samples.append(sample)
    if n_rows == 0:
        raise InputError(f"manifest {path} has a header but no data rows")
    df = pd.DataFrame(samples, columns=SAMPLE_COLUMNS + [PARAPHRASES, SOURCE])
    err = pd.DataFrame(errors, columns=list(empty_errors().columns)) if errors else empty_errors()
    stats = {"format": fmt, "rows_read": n_rows, "rows_ok": len(df), "row_errors": dict(counts), "blank_lines": blank,
             "ignored_columns": [c for c in header if c not in REQUIRED + OPTIONAL]}
    return SampleSet(samples=df, errors=err, stats=stats)


class ManifestAdapter:
    """The generic manifest: one row per (image, question) sample."""

    name = "manifest"
    options_doc = {
        "format": "csv | tsv | parquet | jsonl (default: from the file name)",
        "encoding": "text encoding of CSV/JSONL manifests (default utf-8)",
        "name": "dataset name in the output tables (default: the manifest's file name)",
    }

    def load(self, cfg: DatasetConfig) -> SampleSet:
        if not cfg.manifest:
            raise InputError("dataset.manifest is required for adapter 'manifest' (a CSV/Parquet/JSONL path or URL)")
        unknown = sorted(set(cfg.options) - set(self.options_doc))
        if unknown:
            raise InputError(f"dataset.options: unknown key(s) {unknown} for adapter 'manifest'; "
                             f"known: {sorted(self.options_doc)}")
        if not storage.exists(cfg.manifest):  # a refused object store says which credentials, exit 2
            raise InputError(f"manifest not found: {cfg.manifest}. Check dataset.manifest (a local path or URL).")
        sset = read_manifest(cfg.manifest, cfg.images, dataset=cfg.options.get("name"),
                             fmt=cfg.options.get("format"), encoding=cfg.options.get("encoding", "utf-8"))
        return filter_findings(sset, cfg.findings)


def filter_findings(sset: SampleSet, findings: list[str] | None) -> SampleSet:
    """Keep samples whose finding is in ``findings`` (spelling-insensitive); count the rest in stats."""
    if not findings:
        return sset
    wanted = {normalise_finding(f) for f in findings}
    keep = sset.samples["finding"].map(lambda f: f is not None and normalise_finding(f) in wanted)
    sset.stats["filtered_out_by_finding"] = int((~keep).sum())
    sset.samples = sset.samples[keep].reset_index(drop=True)
    return sset
