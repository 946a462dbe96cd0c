"""Manifest file readers: CSV/TSV, JSON Lines, Parquet -> (header, rows of (N, dict | RowError)).

Split from ``manifest.py`` (the rules for one row live there). Reads go through
``storage.open_input``: a local manifest must be a regular file (a FIFO is refused at
once, never read), and remote reads have timeouts.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterator

from vlm_eval import storage
from vlm_eval.errors import InputError

REQUIRED = ("image", "question")


class RowError(Exception):
    """One input row cannot become a sample: ``error_type`` and a message without row text."""

    def __init__(self, error_type: str, message: str):
        self.error_type = error_type
        super().__init__(message)


# ---------------------------------------------------------------- readers: yield (N, row dict | RowError)


def detect_format(path: str, option: str | None) -> str:
    if option:
        fmt = option.lower()
        if fmt not in ("csv", "tsv", "parquet", "jsonl"):
            raise InputError(f"dataset.options.format {option!r}: use csv, tsv, parquet or jsonl")
        return fmt
    name = path.lower()
    for suffix in (".gz", ".bz2", ".zst", ".xz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    for ext, fmt in ((".csv", "csv"), (".tsv", "tsv"), (".parquet", "parquet"), (".pq", "parquet"),
                     (".jsonl", "jsonl"), (".ndjson", "jsonl")):
        if name.endswith(ext):
            return fmt
    raise InputError(f"cannot tell the format of manifest {path} from its name; name it .csv, .csv.gz, "
                     ".parquet or .jsonl, or set dataset.options.format")


def _read_raw(path: str) -> bytes:
    from fsspec.compression import compr
    from fsspec.utils import infer_compression

    try:
        with storage.open_input(path, "manifest") as raw:
            codec = infer_compression(path)
            if codec is None:
                return raw.read()
            with compr[codec](raw, mode="rb") as f:
                return f.read()
    except storage.NotRegularFileError as exc:
        raise InputError(f"dataset.manifest: {exc}") from None
    except FileNotFoundError:
        raise InputError(f"manifest not found: {path}. Check dataset.manifest (a local path or URL).") from None
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"cannot read manifest {path}: {exc.__class__.__name__}: {exc}") from None


def _norm_header(names: list[str], path: str) -> list[str]:
    cols = [str(n).strip().lower() for n in names]
    dupes = sorted({c for c in cols if cols.count(c) > 1 and c})
    if dupes:
        raise InputError(f"manifest {path} repeats column(s) {dupes} (names compare case-insensitively)")
    return cols


def read_csv(path: str, encoding: str, delimiter: str) -> tuple[list[str], Iterator]:
    text = _read_raw(path).decode(encoding, errors="surrogateescape")
    text = text.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    for fields in reader:
        if fields:
            header = _norm_header(fields, path)
            break
    if header is None:
        raise InputError(f"manifest {path} is empty (no header row). Expected columns: {', '.join(REQUIRED)}")

    def rows() -> Iterator:
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield reader.line_num, RowError("malformed_row", f"CSV cannot be parsed here ({exc})")
                continue
            if all(not f.strip() for f in fields):
                yield reader.line_num, None  # blank line: not an input row
                continue
            if len(fields) != len(header):
                yield reader.line_num, RowError(
                    "malformed_row", f"row has {len(fields)} fields but the header has {len(header)} "
                                     "(check quoting and delimiters)")
                continue
            yield reader.line_num, dict(zip(header, fields))

    return header, rows()


def read_jsonl(path: str, encoding: str) -> tuple[list[str], Iterator]:
    raw = _read_raw(path)
    parsed: list[tuple[int, Any]] = []
    keys: dict[str, None] = {}
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode(encoding).lstrip("\ufeff"))
        except UnicodeDecodeError:
            parsed.append((n, RowError("bad_encoding", f"line is not valid {encoding}; re-save the manifest as "
                                                       "UTF-8 or set dataset.options.encoding")))
            continue
        except json.JSONDecodeError as exc:
            parsed.append((n, RowError("malformed_row", f"not valid JSON ({exc.msg})")))
            continue
        if not isinstance(obj, dict):
            parsed.append((n, RowError("malformed_row", f"expected a JSON object, got {type(obj).__name__}")))
            continue
        row = {str(k).strip().lower(): v for k, v in obj.items()}
        keys.update(dict.fromkeys(row))
        parsed.append((n, row))
    if parsed and not keys:
        first = parsed[0]
        raise InputError(f"manifest {path}: no line is a valid JSON object (line {first[0]}: {first[1]})")
    return list(keys), iter(parsed)


def read_parquet(path: str) -> tuple[list[str], Iterator]:
    import pyarrow.parquet as pq

    try:
        with storage.open_input(path, "manifest") as f:
            table = pq.read_table(f)
    except storage.NotRegularFileError as exc:
        raise InputError(f"dataset.manifest: {exc}") from None
    except FileNotFoundError:
        raise InputError(f"manifest not found: {path}. Check dataset.manifest (a local path or URL).") from None
    except Exception as exc:  # noqa: BLE001 - arrow raises several kinds for bad files
        raise InputError(f"cannot read Parquet manifest {path}: {exc.__class__.__name__}: {exc}") from None
    header = _norm_header(table.column_names, path)
    table = table.rename_columns(header)
    return header, ((i, row) for i, row in enumerate(table.to_pylist()))
