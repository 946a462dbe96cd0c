"""Fixtures of the reducer tests."""
from __future__ import annotations

import pytest

from reduce_builders import preds, sample, write_run


@pytest.fixture
def tiny_run(tmp_path):
    """Two models, one sample per quadrant (model a), an incomplete one, and errors."""
    samples = [sample("s1", patient="p1"), sample("s2", patient="p1"), sample("s3", patient="p2"),
               sample("s4", patient=None, finding="nodule"), sample("s5", label=None), sample("s6")]
    a = (preds("s1", [2, 1, 3], [-1, -1, -1]) + preds("s2", [2, -1, 3], [-1, -1, -1])
         + preds("s3", [2, 1, 3], [1, 1, 1]) + preds("s4", [-2, 1, -3], [-1, -1, -1])
         + preds("s5", [1, 1, None], [1, 1, 1]))
    b = sum((preds(s, [1, 1, 1], [1, 1, 1]) for s in ("s1", "s2", "s3", "s4", "s5")), [])
    errs = [dict(sample_id="s6", stage="load_image", error_type="FileNotFoundError", message="gone", model=None, source="x")]
    return write_run(tmp_path / "run", samples, {"a": a, "b": b}, errs)
