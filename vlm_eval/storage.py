"""Local paths and fsspec URLs behind one small API, with atomic writes.

Credentials come only from the environment/credential chain (AWS_* variables,
profiles, instance roles); nothing here accepts or records them: every message and
every JSON document written here has URL credentials stripped (provenance.redact_text).

Nothing blocks forever: remote filesystems get connect/read timeouts
(``VLM_EVAL_IO_TIMEOUT_S``, default 60 s), and ``open_input`` refuses local paths that
are not regular files (a FIFO, device or socket would block or never end).
"""
from __future__ import annotations

import functools
import io
import json
import os
import posixpath
import stat
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
import pyarrow as pa
import pyarrow.parquet as pq

from vlm_eval.errors import InputError, MissingDependencyError
from vlm_eval.provenance import redact_text

CONNECT_TIMEOUT_S = 10.0
S3FS_RETRIES = 3


class StorageAccessError(InputError):
    """An object store refused us (bad or missing credentials, no permission)."""


class NotRegularFileError(InputError):
    """A local input path is a FIFO, device, socket or directory, not a regular file."""


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
            raise StorageAccessError(redact_text(
                f"access to {url} was refused ({type(exc).__name__}: {exc}). Check {hint}: "
                "credentials come from the environment, never from the job file."
            )) from exc

    return wrapper


def cache_dir() -> str:
    """Local cache for built models, copied remote folders and generated images:
    ``$VLM_EVAL_CACHE`` or ``~/.cache/vlm_eval``."""
    return os.environ.get("VLM_EVAL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vlm_eval")


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def io_timeout_s() -> float:
    """Seconds a remote read may wait for data (``VLM_EVAL_IO_TIMEOUT_S``, default 60)."""
    try:
        return max(0.1, float(os.environ.get("VLM_EVAL_IO_TIMEOUT_S", "60")))
    except ValueError:
        return 60.0


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options that bound every remote wait (connect and read timeouts)."""
    proto = url.split("://", 1)[0].lower() if "://" in url else "file"
    timeout = io_timeout_s()
    connect = min(CONNECT_TIMEOUT_S, timeout)
    if proto in ("s3", "s3a"):
        return {"config_kwargs": {"connect_timeout": connect, "read_timeout": timeout,
                                  "retries": {"max_attempts": 2, "mode": "standard"}}}
    if proto in ("http", "https"):
        import aiohttp

        return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=connect,
                                                                   sock_read=timeout)}}
    return {}


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fs, path inside fs) for a local path or URL; says how to install s3fs etc."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options(url))
    except ImportError as exc:
        proto = url.split("://", 1)[0]
        pkg = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(proto, proto)
        raise MissingDependencyError(f"{proto}:// support ({pkg})", f"pip install {pkg}") from exc
    if getattr(fs, "retries", 0) > S3FS_RETRIES and type(fs).__name__ == "S3FileSystem":
        fs.retries = S3FS_RETRIES  # s3fs retries timeouts 5x on top of botocore's own attempts
    return fs, path


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(url: str, what: str = "input") -> None:
    """Refuse a local path that exists but is not a regular file (before a reader that
    cannot be given a file object, e.g. pandas, opens it and blocks on a FIFO)."""
    if "\x00" in url:
        raise NotRegularFileError(f"{what} path {redact_text(url)!r} contains a NUL byte; fix the path")
    if is_url(url):
        return
    path = url[len("file://"):] if url.startswith("file://") else url
    try:
        mode = os.stat(path).st_mode  # stat never blocks, even on a FIFO
    except OSError:
        return  # missing: the reader says "not found"
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(f"{what} {path} is {_file_kind(mode)}, not a regular file; point it at a "
                                  "file (vlm_eval refuses pipes and devices: reading one could block forever)")


def reader_options(url: str) -> dict[str, Any] | None:
    """``storage_options=`` for pandas readers: the timeouts for URLs, None for local paths."""
    return (storage_options(url) or None) if is_url(url) else None


def open_input(url: str, what: str = "input"):
    """Open ``url`` for binary reading; a local path must be a regular file.

    Local files are opened non-blocking and checked with fstat before any read, so a
    FIFO (or device, socket) is refused at once instead of blocking forever; remote
    files get the timeouts of ``storage_options``.
    """
    if "\x00" in url:
        raise NotRegularFileError(f"{what} path {redact_text(url)!r} contains a NUL byte; fix the path")
    fs, path = filesystem(url)
    if not isinstance(fs, LocalFileSystem):
        return fs.open(path, "rb")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(
                f"{what} {path} is {_file_kind(mode)}, not a regular file; point it at a file "
                "(vlm_eval refuses pipes and devices: reading one could block forever)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


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
    with open_input(url) as f:  # a FIFO posing as run.json is refused, not waited on
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
    """Write JSON atomically; string values never carry URL credentials or secret values
    (run.json's ``error`` may quote an exception that quoted a credentialed URL)."""
    text = json.dumps(_redact_strings(obj), indent=2, sort_keys=True, default=str)
    write_bytes_atomic(url, (text + "\n").encode())


def _redact_strings(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _redact_strings(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_redact_strings(v) for v in obj]
    return redact_text(obj) if isinstance(obj, str) else obj


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
