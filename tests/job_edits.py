"""Helpers the resume-guard tests share: edit a job mapping, fingerprint a run folder."""
from __future__ import annotations

import copy
import hashlib


def with_value(data: dict, path: str, value) -> dict:
    """A deep copy of ``data`` with the dotted ``path`` set (``models.0.options`` ...)."""
    out = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def tree_digest(folder) -> dict:
    """sha256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
