"""Tests written to kill surviving mutants of the reducer (mutmut, issue 16; docs/testing.md).

Every expected value is worked out by hand in the test (arithmetic in a comment), never by
calling the function under test."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vlm_eval.reduce import prediction


def test_prediction_of_a_list_with_null_and_nan():
    # 2.0 > 0 -> yes; None and NaN -> no prediction (None, never ''); a tie 0.0 -> no; -0.5 -> no
    got = prediction([2.0, None, float("nan"), 0.0, -0.5])
    assert list(got) == ["yes", None, None, "no", "no"]
    assert got[1] is None and got[2] is None
