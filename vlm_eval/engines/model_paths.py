"""Where a model's files are: ``builtin:`` names and remote folders become local folders.

Shared by every engine and by the run (which resolves ``builtin:`` paths before its
actors start). Imports no torch; building the built-in model does, lazily.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable

from vlm_eval import storage
from vlm_eval.errors import InputError
from vlm_eval.registry import resolve

DEMO_MODEL = "builtin:tiny-gemma3"
"""The built-in demo model: a tiny random-weight Gemma3 built locally on first use."""


SHORTCUT_MODEL = "builtin:tiny-shortcut"
"""A tiny LLaVA trained once (~1 min CPU) to take a shortcut (models/shortcut.py): `vlm-eval demo`'s model."""

BUILTIN_MODELS: dict[str, str] = {DEMO_MODEL: "vlm_eval.models.tiny:ensure_demo_model",
                                  SHORTCUT_MODEL: "vlm_eval.models.shortcut:ensure_shortcut_model"}
"""``builtin:`` model names -> the function that builds (once) and returns the model's folder.
Named, not imported: the engines never import ``vlm_eval.models`` (README, "Where things live")."""


def resolve_model_path(path: str | None) -> str | None:
    """Turn ``builtin:`` model names into a local folder (built on first use)."""
    if path in BUILTIN_MODELS:
        return resolve(path, "built-in model", BUILTIN_MODELS)()
    return path


def read_model_config(folder: str, name: str | None = None) -> dict[str, Any]:
    """``folder/config.json`` as a dict; an InputError naming the model (when given) and the file if
    it is missing or not JSON."""
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as exc:
        where = f"model {name!r}: {folder!r}" if name else f"model folder {folder!r}"
        raise InputError(f"{where} has no readable config.json ({exc})") from exc
    except ValueError as exc:
        raise InputError(f"{f'model {name!r}: ' if name else ''}{path} is not valid JSON ({exc})") from exc


def localize(path: str, what: str = "model") -> str:
    """A local folder for ``path``: itself if local, else a cached copy made with fsspec.

    Remote folders are copied once into ``<cache>/remote/<hash>`` (atomically:
    a temp folder renamed into place), so each actor reads local files.
    """
    if not storage.is_url(path):
        local = path[len("file://"):] if path.startswith("file://") else path
        local = os.path.expanduser(local)
        if not os.path.isdir(local):
            raise InputError(f"{what} path {path!r} does not exist or is not a folder")
        return local

    fs, root = storage.filesystem(path)
    target = os.path.join(storage.cache_dir(), "remote", hashlib.sha256(path.encode()).hexdigest()[:16])
    complete = lambda folder: os.path.isfile(os.path.join(folder, ".complete"))  # noqa: E731
    if complete(target):
        return target
    if not fs.isdir(root):
        raise InputError(f"{what} path {path!r} does not exist or is not a folder")

    def copy(tmp: str) -> None:
        base = root.rstrip("/")
        for remote in fs.find(base):
            dest = os.path.join(tmp, remote[len(base):].lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            fs.get_file(remote, dest)
        open(os.path.join(tmp, ".complete"), "w").close()

    return build_folder_once(target, copy, complete)


def build_folder_once(target: str, build: Callable[[str], Any], is_complete: Callable[[str], bool]) -> str:
    """``target``, made once: ``build(tmp)`` fills a temporary folder beside it, which is then
    renamed into place, so a crash or a concurrent builder never leaves a half-written
    folder (a concurrent builder that finished first wins; a stale partial one is replaced)."""
    if is_complete(target):
        return target
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}-", dir=parent)
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_complete(target):
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return target
