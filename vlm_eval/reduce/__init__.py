"""The reducer: raw log-probabilities -> per-sample quadrants -> summary statistics.

Pure pandas / numpy / pyarrow: imports no engine, no Ray, no torch.
"""
from vlm_eval.reduce.metrics import entropy_bits, margin, prediction, quadrant_table
from vlm_eval.reduce.run import ReduceAccountingError, reduce_run
from vlm_eval.reduce.stats import (
    auroc,
    bootstrap_ratios,
    flip_vs_dangerous,
    mcnemar,
    paired_comparison,
    pearson_r,
    wilson_interval,
)
from vlm_eval.reduce.summary import summary_table
from vlm_eval.reduce.tables import QUADRANTS_FILE, deduped_predictions

__all__ = [
    "QUADRANTS_FILE",
    "ReduceAccountingError",
    "auroc",
    "bootstrap_ratios",
    "deduped_predictions",
    "entropy_bits",
    "flip_vs_dangerous",
    "margin",
    "mcnemar",
    "paired_comparison",
    "pearson_r",
    "prediction",
    "quadrant_table",
    "reduce_run",
    "summary_table",
    "wilson_interval",
]
