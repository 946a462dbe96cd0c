"""Local paths and fsspec URLs behind one small API, with atomic writes.

Credentials come only from the environment/credential chain (AWS_* variables,
profiles, instance roles); nothing here accepts or records them.
"""
from __future__ import annotations

import functools
import io
import json
import os
import posixpath
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
import pyarrow as pa
import pyarrow.parquet as pq

from vlm_eval.errors import InputError, MissingDependencyError


class StorageAccessError(InputError):
    """An object store refused us (bad or missing credentials, no permission)."""


_CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError")


def _explain_access_errors(fn):
    """Turn an object store's bare ``PermissionError('Forbidden')`` into a message
    that names the URL and where credentials come from (never their values)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            url = next((a for a in args if isinstance(a, str)), None)
            denied = isinstance(exc, PermissionError) or type(exc).__name__ in _CREDENTIAL_ERRORS
            if not denied or url is None or not is_url(url):
                raise
            proto = url.split("://", 1)[0]
            hint = ("the AWS credential chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                    "or the instance/pod role) and AWS_ENDPOINT_URL" if proto in ("s3", "s3a")
                    else f"the {proto} credentials in the environment")
            raise StorageAccessError(
                f"access to {url} was refused ({type(exc).__name__}: {exc}). Check {hint}: "
                "credentials come from the environment, never from the job file."
            ) from exc

    return wrapper


def cache_dir() -> str:
    """Local cache for built models, copied remote folders and generated images:
    ``$VLM_EVAL_CACHE`` or ``~/.cache/vlm_eval``."""
    return os.environ.get("VLM_EVAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vlm_eval")


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fs, path inside fs) for a local path or URL; says how to install s3fs etc."""
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        proto = url.split("://", 1)[0]
        pkg = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(proto, proto)
        raise MissingDependencyError(f"{proto}:// support ({pkg})", f"pip install {pkg}") from exc
    return fs, path


def join(base: str, *parts: str) -> str:
    if is_url(base):
        proto, rest = base.split("://", 1)
        return f"{proto}://" + posixpath.join(rest.rstrip("/"), *parts)
    return os.path.join(base, *parts)


@_explain_access_errors
def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


@_explain_access_errors
def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return f.read()


@_explain_access_errors
def write_bytes_atomic(url: str, data: bytes, durable: bool = True) -> None:
    """Write so that readers see the whole object or nothing.

    Local: write a temp file beside it, fsync, rename. Object stores: one PUT is
    already atomic, so write the object directly.
    """
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:  # survive a machine crash, not just a process crash
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        with fs.open(path, "wb") as f:
            f.write(data)


@_explain_access_errors
def write_parquet_atomic(table: pa.Table, url: str, durable: bool = True) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(url, buf.getvalue(), durable=durable)


def write_json_atomic(obj: Any, url: str) -> None:
    write_bytes_atomic(url, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url).decode("utf-8"))


@_explain_access_errors
def list_files(url: str, suffix: str = "") -> list[str]:
    """Files under ``url`` (recursive), as URLs/paths of the same kind, sorted."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        return []
    found = sorted(p for p in fs.find(path) if p.endswith(suffix) and ".tmp-" not in p)
    if is_url(url):
        proto = url.split("://", 1)[0]
        return [f"{proto}://{p}" for p in found]
    return found


@_explain_access_errors
def read_parquet_dir(url: str, schema: pa.Schema | None = None) -> pa.Table | None:
    """Read every ``*.parquet`` below ``url`` (hive keys become columns); None if none."""
    import pyarrow.dataset as ds

    files = list_files(url, ".parquet")
    if not files:
        return None
    fs, path = filesystem(url)
    inner = [filesystem(f)[1] for f in files]
    dataset = ds.dataset(inner, filesystem=fs, format="parquet", partitioning="hive", partition_base_dir=path)
    table = dataset.to_table()
    if schema is not None:
        from vlm_eval.schema import conform

        table = conform(table, schema)
    return table


@_explain_access_errors
def remove(url: str, recursive: bool = False) -> None:
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)
