"""Lazy "name -> module:attr" lookups, so naming a component imports nothing heavy."""
from __future__ import annotations

import importlib
from typing import Any

from vlm_eval.errors import UserError


def resolve(spec: str, kind: str, builtins: dict[str, str]) -> Any:
    """Return the object named by a built-in name or a ``package.module:attr`` path."""
    target = builtins.get(spec, spec)
    if ":" not in target:
        known = ", ".join(sorted(builtins))
        raise UserError(
            f"unknown {kind} {spec!r}: use one of {known}, or a plug-in as 'package.module:factory'"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name) and spec not in builtins:
            raise UserError(
                f"{kind} plug-in {spec!r}: module {module_name!r} cannot be imported; "
                "check the name and that its package is installed on every node"
            ) from exc
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserError(f"{kind} plug-in {spec!r}: {module_name!r} has no attribute {attr!r}") from None
    return obj
