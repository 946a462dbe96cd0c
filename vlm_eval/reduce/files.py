"""Reading a run's partitioned tables file by file, against the declared schema.

Why not one ``pyarrow.dataset`` over the folder: it takes the schema of whichever file
it meets first (a stray or older Parquet file then becomes the schema and the real
predictions are discarded) and infers hive keys by value (``model=007`` becomes the
integer 7). Here every file is checked against the declared schema, the hive key is
the folder name as a string, and a file that does not fit is named in a
``TableFileError`` -- never skipped.

Rerun order comes from the rows' ``attempt`` column (the run.json attempt that wrote
them), never from file names or modification times: copying a run folder must not
change its tables.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import replace
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from vlm_eval import storage
from vlm_eval.errors import InputError
from vlm_eval.schema import PREDICTIONS_FILE

# Columns a prediction shard must hold; the others of PREDICTIONS_FILE may be absent
# (older shards) and read as nulls. ``attempt`` (int, optional) orders reruns.
PREDICTION_REQUIRED = ("sample_id", "variant", "condition", "prompt_id", "logprob_yes", "logprob_no", "error")
ATTEMPT = "attempt"


class TableFileError(InputError):
    """A file under a run's table folder does not fit the table's schema or layout."""


@dataclass(frozen=True)
class TableFile:
    path: str
    """URL or local path of the file."""
    key: str | None
    """The hive key value of its folder (``model=KEY``), as written; None = not in one."""
    mtime: float
    """Modification time (seconds) from the store's listing; 0 when it has none."""
    rows: int = -1
    """Row count from the footer (-1 = not read yet)."""


def _mtime(info: dict) -> float:
    for k in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        v = info.get(k)
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, _dt.datetime):
            return v.timestamp()
        if isinstance(v, str):
            try:
                return _dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def list_table_files(folder: str, key: str = "model") -> list[TableFile]:
    """Every ``*.parquet`` under ``folder`` (recursive), in commit order (mtime, then path);
    ``key`` is read from a ``KEY=VALUE`` folder directly under ``folder``."""
    fs, root = storage.filesystem(folder)
    if not fs.exists(root):
        return []
    found = fs.find(root, detail=True)
    out = []
    root = root.rstrip("/")
    for inner, info in found.items():
        if not inner.endswith(".parquet") or ".tmp-" in inner:
            continue
        rel = inner[len(root):].lstrip("/").replace("\\", "/").split("/")
        value = rel[0][len(key) + 1:] if len(rel) == 2 and rel[0].startswith(key + "=") else None
        url = f"{folder.split('://', 1)[0]}://{inner}" if storage.is_url(folder) else inner
        out.append(TableFile(url, value, _mtime(info)))
    return sorted(out, key=lambda f: (f.mtime, f.path))


def footer(f: TableFile) -> tuple[pa.Schema, int]:
    """(Arrow schema, row count) from ``f``'s footer."""
    fs, path = storage.filesystem(f.path)
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        return pf.schema_arrow, pf.metadata.num_rows


def read_parquet(f: TableFile, columns: list[str] | None = None) -> pa.Table:
    """``f`` as stored (only ``columns`` when given)."""
    fs, path = storage.filesystem(f.path)
    with fs.open(path, "rb") as fh:
        return pq.ParquetFile(fh).read(columns=columns)


def check_file(f: TableFile, schema: pa.Schema, required, key: str | None = "model") -> tuple[str | None, int]:
    """(why ``f`` cannot be read as ``schema`` -- None = it can --, its row count): not in a
    ``key=`` folder, unreadable, a required column missing, or a column of an uncastable type."""
    if key and f.key is None:
        return f"not inside a {key}=NAME/ folder", -1
    if key and not f.key:
        return f"empty {key} name in its folder", -1
    try:
        have, rows = footer(f)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported by name
        return f"unreadable as Parquet ({type(exc).__name__}: {exc})", -1
    return _schema_problem(have, schema, required), rows


def _schema_problem(have: pa.Schema, schema: pa.Schema, required) -> str | None:
    missing = [c for c in required if c not in have.names]
    if missing:
        return f"lacks required column(s) {missing} (has {have.names})"
    for field in schema:
        if field.name in have.names:
            typ = have.field(field.name).type
            if typ != field.type and not _castable(typ, field.type):
                return f"column {field.name!r} is {typ}, expected {field.type}"
    return None


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    if pa.types.is_null(src):
        return True
    if pa.types.is_string(dst) or pa.types.is_large_string(dst):
        return pa.types.is_string(src) or pa.types.is_large_string(src) or pa.types.is_dictionary(src)
    if pa.types.is_integer(dst):
        return pa.types.is_integer(src)
    if pa.types.is_floating(dst):
        return pa.types.is_floating(src) or pa.types.is_integer(src)
    if pa.types.is_boolean(dst):
        return pa.types.is_boolean(src)
    return False


def checked_files(folder: str, schema: pa.Schema, required, what: str, key: str | None = "model") -> list[TableFile]:
    """``list_table_files`` after ``check_file`` on each; TableFileError naming every bad file."""
    files, bad = [], []
    for f in list_table_files(folder, key or "model"):
        why, rows = check_file(f, schema, required, key)
        files.append(replace(f, rows=rows))
        if why:
            bad.append((f, why))
    if bad:
        lines = "\n".join(f"  {f.path}: {why}" for f, why in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise TableFileError(
            f"{len(bad)} file(s) under {folder} are not {what} files:\n{lines}{more}\n"
            "Nothing was reduced (reading around them could drop or mix results). Move stray files out of "
            "the run folder; a damaged shard is rebuilt by rerunning the job with the same run_id after "
            "deleting it.")
    return files


def read_file(f: TableFile, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """One checked file as ``schema`` (absent optional columns become nulls), only ``columns``."""
    from vlm_eval.schema import conform

    fields = [fl for fl in schema if columns is None or fl.name in columns]
    want = pa.schema(fields)
    fs, path = storage.filesystem(f.path)
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        have = [n for n in want.names if n in pf.schema_arrow.names]
        return conform(pf.read(columns=have), want)


def iter_column(f: TableFile, column: str, batch_size: int = 65536):
    """Record batches of one column of ``f`` (a column the file has), in file order."""
    fs, path = storage.filesystem(f.path)
    with fs.open(path, "rb") as fh:
        yield from pq.ParquetFile(fh).iter_batches(batch_size=batch_size, columns=[column])


# what a shard is read as: PREDICTIONS_FILE (which may already hold ``attempt``) + ``attempt``
PREDICTION_READ = PREDICTIONS_FILE if ATTEMPT in PREDICTIONS_FILE.names else pa.schema(
    list(PREDICTIONS_FILE) + [pa.field(ATTEMPT, pa.int64())])


def prediction_files(predictions_dir: str) -> list[TableFile]:
    """The checked prediction shards of a run (TableFileError if one does not fit)."""
    return checked_files(predictions_dir, PREDICTION_READ, PREDICTION_REQUIRED, "prediction")


def with_keys(table: pa.Table, f: TableFile) -> pa.Table:
    """``table`` plus ``model`` (a string, from the folder name) as its first column."""
    n = table.num_rows
    return table.add_column(0, "model", pa.array([f.key] * n, pa.string()) if n else pa.array([], pa.string()))


def basename(path: str) -> str:
    return posixpath.basename(path.replace("\\", "/"))
