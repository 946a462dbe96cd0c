"""The one rule for "no value here", shared by adapters, prompt expansion and sample loading."""
from __future__ import annotations

import math
from typing import Any


def is_missing(value: Any) -> bool:
    """None, NaN (float, numpy float, pandas NA/NaT) or a blank string."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float):  # numpy.float64 is a float too
        return math.isnan(value)
    kind = type(value).__name__
    if kind in ("NAType", "NaTType"):
        return True
    if kind.startswith("float"):  # numpy.float16/32
        return bool(value != value)
    return False
