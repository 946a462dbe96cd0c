"""What every label-dataset adapter shares: options, findings, filters, sampling.

An adapter turns its dataset's own files into two aligned frames:

* an *image frame*, one row per image: ``image_id, image_uri, patient_id,
  study_id, view, split, _row`` (``_row``: 1-based data row of the source
  file, header not counted, for errors' ``source`` = 'FILE:ROW');
* a *label frame* with the same index, one int8 column per canonical finding:
  YES=1 / NO=0 / UNKNOWN=-1 (kept, label null) / EXCLUDED=-2 (dropped by a label
  policy, counted in stats).

`make_sample_set` melts them into canonical samples (one per image x finding),
applies ``balanced_per_finding`` and ``limit``, and records counts in stats.
``limit`` keeps a seeded, patient-spread subset (not the first N rows of the
file, which would be one finding); error rows are kept under a limit and left
out of a balanced sample, whose candidates are labelled rows only.

Balanced sampling and the ``limit`` order are deterministic at patient level:
rows are ranked by a seeded hash of (finding, patient_id), then of image_id, so
the choice depends only on the seed and the ids, never on file order, and
different findings draw patients independently.
"""
from __future__ import annotations

import difflib
import hashlib
from typing import Any, Iterable

import numpy as np
import pandas as pd

from vlm_eval import storage
from vlm_eval.config import DatasetConfig
from vlm_eval.datasets.base import ERROR_COLUMNS, SAMPLE_COLUMNS, SampleSet, empty_errors
from vlm_eval.errors import InputError
from vlm_eval.findings import finding_slug, normalise_finding

# Label codes in an adapter's label frame (int8).
YES, NO, UNKNOWN, EXCLUDED = 1, 0, -1, -2
IMAGE_COLUMNS = ["image_id", "image_uri", "patient_id", "study_id", "view", "split", "_row"]

COMMON_OPTIONS_DOC = {
    "views": "keep only these view positions (case-insensitive, e.g. [PA, AP]); default: all",
    "frontal_only": "keep only frontal views (the dataset's frontal view positions); default false",
    "splits": "keep only these splits (e.g. [train, test]); default: all",
    "balanced_per_finding": "N: a balanced sample of N 'yes' and N 'no' per finding (e.g. 125); default: all",
    "seed": "seed of the balanced sample and of the `limit` order (default 0); "
    "the choice depends only on seed, patient and image ids, not file order",
}


# ------------------------------------------------------------------ names


# One rule for finding names everywhere (vlm_eval.findings): prompt sets look findings up
# by the same key, so an adapter's name always finds its questions.
normalise_name = normalise_finding
slugify = finding_slug


def resolve_findings(
    requested: list[str] | None,
    catalogue: dict[str, str],
    default: list[str],
    adapter: str,
    source: str | None,
) -> list[str]:
    """Canonical finding names for ``dataset.findings`` (None -> ``default``).

    ``catalogue`` maps normalised names and aliases to canonical names. Unknown
    names raise one InputError listing every valid name.
    """
    if requested is None:
        return list(default)
    if isinstance(requested, str):
        requested = [requested]
    out, bad = [], []
    for name in requested:
        canon = catalogue.get(normalise_name(name))
        if canon is None:
            bad.append(name)
        elif canon not in out:
            out.append(canon)
    if bad:
        valid = sorted(set(catalogue.values()))
        hints = []
        for name in bad:
            close = difflib.get_close_matches(normalise_name(name), list(catalogue), n=3, cutoff=0.6)
            if close:
                hints.append(f"{name!r} -> did you mean {sorted({catalogue[c] for c in close})}?")
        where = f" (labels from {source})" if source else ""
        msg = f"dataset.findings: unknown finding(s) {bad} for the {adapter} adapter{where}. "
        if hints:
            msg += " ".join(hints) + " "
        raise InputError(msg + f"Valid findings ({len(valid)}): {valid}")
    if not out:
        raise InputError(f"dataset.findings: empty list for the {adapter} adapter; give at least one finding")
    return out


# ---------------------------------------------------------------- options


def parse_options(cfg: DatasetConfig, options_doc: dict[str, str], adapter: str) -> dict[str, Any]:
    """Check ``dataset.options`` keys and the common options' types; returns a copy."""
    opts = dict(cfg.options or {})
    unknown = sorted(set(opts) - set(options_doc))
    if unknown:
        raise InputError(
            f"dataset.options: unknown option(s) {unknown} for the {adapter} adapter; "
            f"valid options: {sorted(options_doc)}"
        )
    problems = []
    for key in ("views", "splits"):
        v = opts.get(key)
        if isinstance(v, str):
            opts[key] = [v]
        elif v is not None and not (isinstance(v, list) and all(isinstance(x, (str, int)) for x in v)):
            problems.append(f"dataset.options.{key}: expected a list of names, got {v!r}")
    n = opts.get("balanced_per_finding")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        problems.append(f"dataset.options.balanced_per_finding: expected a positive integer, got {n!r}")
    seed = opts.setdefault("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        problems.append(f"dataset.options.seed: expected an integer, got {seed!r}")
    if not isinstance(opts.setdefault("frontal_only", False), bool):
        problems.append(f"dataset.options.frontal_only: expected true or false, got {opts['frontal_only']!r}")
    if problems:
        raise InputError(f"{adapter} adapter: " + "; ".join(problems))
    return opts


def choice(opts: dict[str, Any], key: str, allowed: Iterable[str], default: str, adapter: str) -> str:
    """A string option restricted to ``allowed`` (case-insensitive)."""
    allowed = list(allowed)
    value = str(opts.get(key, default)).lower()
    if value not in allowed:
        raise InputError(f"{adapter} adapter: dataset.options.{key} must be one of {allowed}, got {opts.get(key)!r}")
    return value


# ------------------------------------------------------------------ files


def require(path: str | None, what: str, adapter: str) -> str:
    if not path:
        raise InputError(f"{adapter} adapter: dataset.manifest is not set; give the path or URL of {what}")
    return path


def read_csv(path: str, required: list[str], what: str, optional: Iterable[str] = (), **kw: Any) -> pd.DataFrame:
    """Read the needed columns of a (possibly gzipped, possibly remote) CSV as strings.

    Missing file or missing columns raise an InputError naming the file, the
    columns it lacks and the columns it has.
    """
    wanted = set(required) | set(optional)
    usecols = None if kw.get("nrows") == 0 else (lambda c: c in wanted)  # nrows=0: the header, every column
    storage.check_regular(path, what)
    try:
        df = pd.read_csv(path, usecols=usecols, dtype=str, keep_default_na=False, na_values=[""],
                         storage_options=storage.reader_options(path), **kw)
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        try:
            header = list(pd.read_csv(path, nrows=0, storage_options=storage.reader_options(path)).columns)
        except Exception:  # noqa: BLE001 - only for the message
            header = list(df.columns)
        raise InputError(f"{what} {path} lacks column(s) {missing}; it has {header}")
    return df


def extract(values: pd.Series, pattern: str) -> pd.DataFrame:
    """``Series.str.extract`` with named groups, run natively by Arrow (RE2): one
    column per group, null where the value does not match."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(values.astype("str"), type=pa.string(), from_pandas=True)
    matched = pc.match_substring_regex(arr, pattern).fill_null(False)
    groups = pc.extract_regex(pc.if_else(matched, arr, pa.scalar(None, pa.string())), pattern)
    out = {}
    for i, field in enumerate(groups.type):
        col = pc.struct_field(groups, [i])
        col = pc.if_else(matched, col, pa.scalar(None, pa.string()))
        out[field.name] = pd.Series(col.to_pandas(), index=values.index, dtype="str")
    return pd.DataFrame(out, index=values.index)


def join_uri(images: str | None, rel: pd.Series) -> pd.Series:
    """Resolve relative image paths against ``dataset.images`` (path or URL); vectorised."""
    rel = rel.astype(str)
    if not images:
        return rel
    absolute = rel.str.contains("://", regex=False) | rel.str.startswith("/")
    return rel.where(absolute, images.rstrip("/") + "/" + rel.str.lstrip("/"))


def error_rows(sample_ids: pd.Series, error_type: str, message: pd.Series | str, path: str,
               lines: pd.Series) -> pd.DataFrame:
    """Stage-'manifest' error rows; ``source`` = 'FILE:ROW' (1-based data row)."""
    n = len(sample_ids)
    if n == 0:
        return empty_errors()
    msg = message if isinstance(message, pd.Series) else pd.Series([message] * n, index=sample_ids.index)
    return pd.DataFrame({
        "sample_id": sample_ids.astype(str).to_numpy(object),
        "stage": "manifest",
        "error_type": error_type,
        "message": msg.astype(str).to_numpy(object),
        "model": None,
        "source": (f"{path}:" + lines.astype(str)).to_numpy(object),
    })[ERROR_COLUMNS]


def concat_errors(*frames: pd.DataFrame) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True)[ERROR_COLUMNS] if frames else empty_errors()


# ---------------------------------------------------------------- filters


def select_rows(img: pd.DataFrame, opts: dict[str, Any], frontal: Iterable[str], stats: dict[str, Any],
                adapter: str) -> pd.Series:
    """Boolean mask of image rows kept by ``views`` / ``frontal_only`` / ``splits``."""
    keep = pd.Series(True, index=img.index)
    view = img["view"].astype("str").str.upper()
    if opts.get("views"):
        if img["view"].isna().all():
            raise InputError(f"dataset.options.views: the {adapter} files carry no view position")
        wanted = {str(v).upper() for v in opts["views"]}
        seen = set(view.dropna().unique())
        if not wanted & seen:
            raise InputError(
                f"dataset.options.views {opts['views']}: none of these views occurs in the {adapter} "
                f"files; views present: {sorted(seen)}"
            )
        keep &= view.isin(wanted)
    if opts.get("frontal_only") and not img["view"].isna().all():
        keep &= view.isin({f.upper() for f in frontal})
    stats["rows_dropped_by_view"] = int((~keep).sum())
    if opts.get("splits"):
        if img["split"].isna().all():
            raise InputError(f"dataset.options.splits: the {adapter} inputs carry no split (see its options)")
        wanted = {str(s).lower() for s in opts["splits"]}
        in_split = img["split"].astype("str").str.lower().isin(wanted)
        stats["rows_dropped_by_split"] = int((keep & ~in_split).sum())
        keep &= in_split
    return keep


def dedupe(img: pd.DataFrame, dataset: str, path: str) -> tuple[pd.Series, pd.DataFrame]:
    """Mask of first occurrences of image_id, and error rows for the repeats."""
    dup = img["image_id"].duplicated(keep="first")
    errs = error_rows(dataset + ":" + img.loc[dup, "image_id"], "duplicate_image",
                      "image listed more than once; only its first row is used", path, img.loc[dup, "_row"])
    return ~dup, errs


# --------------------------------------------------------------- sampling


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 -> well-mixed uint64)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def seeded_hash(values: pd.Series, seed: int, salt: str = "") -> np.ndarray:
    """Stable uint64 hash of string values, keyed by (seed, salt)."""
    key = hashlib.sha256(f"{seed}|{salt}".encode()).hexdigest()[:16]
    arr = values.astype(str).to_numpy(dtype=object)
    return pd.util.hash_array(arr, hash_key=key, categorize=True)


def select(f_idx: np.ndarray, lab: np.ndarray, pat_h: np.ndarray, img_h: np.ndarray, findings: list[str],
           seed: int, n: int | None, limit: int | None, stats: dict[str, Any]) -> np.ndarray:
    """Sorted positions of the rows kept by ``balanced_per_finding`` = n and ``limit``.

    Rows (finding index, label code, patient hash, image hash) are ranked by a
    seeded hash of (finding, patient), then of the image, with every patient's
    first image before any patient's second one: a balanced sample spreads over
    as many patients as it can and depends only on the seed and the ids.
    """
    h_find = seeded_hash(pd.Series(findings), seed, "finding")[f_idx]
    k1 = _mix(pat_h ^ h_find)
    order = np.lexsort((img_h, k1))
    k1s = k1[order]
    idx = np.arange(len(order))
    run_start = np.maximum.accumulate(np.where(np.r_[True, k1s[1:] != k1s[:-1]], idx, 0)) if len(order) else idx
    order = order[np.lexsort((img_h[order], k1s, idx - run_start))]  # by rank within patient, k1, k2
    if n:
        order = order[lab[order] >= NO]  # only yes / no rows are candidates
        grp = f_idx[order].astype(np.int64) * 2 + lab[order]
        order = order[pd.Series(grp).groupby(grp).cumcount().to_numpy() < n]
        got = np.bincount(f_idx[order].astype(np.int64) * 2 + lab[order], minlength=2 * len(findings))
        shortfall = {f"{f}:{name}": int(n - got[2 * i + code]) for i, f in enumerate(findings)
                     for code, name in ((YES, "yes"), (NO, "no")) if got[2 * i + code] < n}
        stats["balanced_per_finding"] = {"n": int(n), "seed": seed, "shortfall": shortfall}
    if limit:
        order = order[:limit]
    return np.sort(order)


def make_sample_set(dataset: str, img: pd.DataFrame, labels: pd.DataFrame, errors: pd.DataFrame,
                    cfg: DatasetConfig, opts: dict[str, Any], stats: dict[str, Any]) -> SampleSet:
    """Melt image x finding label codes into canonical samples, then balance / limit."""
    findings = list(labels.columns)
    codes = labels.to_numpy(dtype=np.int8).T  # findings x images
    stats["labels_excluded_by_policy"] = {f: int((c == EXCLUDED).sum()) for f, c in zip(findings, codes)}
    keep = codes != EXCLUDED
    f_idx, pos = np.nonzero(keep)  # finding-major, file order within a finding
    lab = codes[f_idx, pos]
    stats["error_rows"] = int(len(errors))
    stats["samples_before_sampling"] = int(len(pos))

    n = opts.get("balanced_per_finding")
    if n or cfg.limit:
        pat = img["patient_id"].where(img["patient_id"].notna(), img["image_id"])
        seed = int(opts.get("seed", 0))
        order = select(f_idx, lab, seeded_hash(pat, seed, "patient")[pos],
                       seeded_hash(img["image_id"], seed, "image")[pos], findings, seed, n, cfg.limit, stats)
        f_idx, pos, lab = f_idx[order], pos[order], lab[order]
    if n:
        # A balanced sample draws only from labelled rows: unusable rows are never
        # candidates, so they are counted in stats, not reported as errors. (A
        # `limit` keeps every error row: a bad row is never hidden by a limit.)
        stats["error_rows_not_reported"] = int(len(errors))
        errors = empty_errors()

    # Columns repeated per image or per finding are categoricals (codes + one value per
    # image / finding): at archive scale (millions of samples) a string per cell would
    # multiply the driver's memory. Only sample_id is one string per sample.
    def per_image(col: str) -> pd.Categorical:
        codes, uniques = pd.factorize(img[col].astype("str"))
        return pd.Categorical.from_codes(codes[pos], uniques)

    def per_finding(values: list[str]) -> pd.Categorical:
        codes, uniques = pd.factorize(pd.Index(values, dtype="str"))  # two findings may share a slug
        return pd.Categorical.from_codes(codes[f_idx], uniques)

    import pyarrow as pa
    import pyarrow.compute as pc

    slugs = [slugify(f) for f in findings]
    text = pa.large_string()  # what pandas' str dtype holds: to_pandas without a copy
    sample_id = pc.binary_join_element_wise(
        pa.scalar(dataset, text), pc.take(pa.array(img["image_id"].astype("str"), text, from_pandas=True), pos),
        pc.take(pa.array(slugs, text), f_idx), pa.scalar(":", text))
    out = pd.DataFrame({
        "sample_id": sample_id.to_pandas(),
        "dataset": pd.Categorical.from_codes(np.zeros(len(pos), np.int8), pd.Index([dataset], dtype="str")),
        "image_uri": per_image("image_uri"),
        "question_id": per_finding(slugs),
        "question": pd.Series(None, index=range(len(pos)), dtype=object),
        "label": pd.Categorical.from_codes(np.where(lab < 0, -1, lab), pd.Index(["no", "yes"], dtype="str")),
        "patient_id": per_image("patient_id"),
        "study_id": per_image("study_id"),
        "finding": per_finding(findings),
        "split": per_image("split"),
    })[SAMPLE_COLUMNS]
    stats["samples"] = int(len(out))
    counts = np.bincount(f_idx.astype(np.int64) * 3 + np.where(lab < 0, 2, lab), minlength=3 * len(findings))
    stats["per_finding"] = {
        f: {"yes": int(counts[3 * i + 1]), "no": int(counts[3 * i]), "unknown": int(counts[3 * i + 2])}
        for i, f in enumerate(findings)
    }
    return SampleSet(samples=out, errors=errors.reset_index(drop=True), stats=stats)
