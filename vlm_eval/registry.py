"""Lazy "name -> module:attr" lookups, so naming a component imports nothing heavy."""
from __future__ import annotations

import importlib
from typing import Any

from vlm_eval.errors import UserError


def resolve(spec: str, kind: str, builtins: dict[str, str]) -> Any:
    """Return the object named by a built-in name or a ``package.module:attr`` path.

    A plug-in that cannot be imported (missing module, an error while importing it, a
    missing attribute) is a one-line UserError; a built-in's import error propagates
    (it names a missing optional dependency, or a bug).
    """
    target = builtins.get(spec, spec)
    if ":" not in target:
        known = ", ".join(sorted(builtins))
        raise UserError(
            f"unknown {kind} {spec!r}: use one of {known}, or a plug-in as 'package.module:factory'"
        )
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UserError(f"{kind} plug-in {spec!r}: write it as 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure to import a plug-in is the user's to fix
        if spec in builtins:
            raise
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        raise UserError(
            f"{kind} plug-in {spec!r}: module {module_name!r} cannot be imported ({detail}); "
            "check the name and that its package is installed on every node"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserError(f"{kind} plug-in {spec!r}: {module_name!r} has no attribute {attr!r}") from None
    return obj
