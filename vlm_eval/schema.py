"""Column names and Arrow schemas of every table a run writes (see README, "Output").

Hive partition keys (``model``) live in the folder name only, never in the files:
the ``*_FILE`` schemas below are what a shard file holds.
"""
from __future__ import annotations

import hashlib

import pyarrow as pa

# The with-image condition; every condition ("image" plus ablations) is in the
# registry, vlm_eval.conditions.
IMAGE = "image"

SAMPLES = pa.schema(
    [
        ("sample_id", pa.string()),
        ("dataset", pa.string()),
        ("image_uri", pa.string()),
        ("question_id", pa.string()),
        ("question", pa.string()),
        ("prompts", pa.list_(pa.string())),
        ("label", pa.string()),
        ("patient_id", pa.string()),
        ("study_id", pa.string()),
        ("finding", pa.string()),
        ("split", pa.string()),
        ("swap_image_uri", pa.string()),
    ]
)

PREDICTIONS_FILE = pa.schema(
    [
        ("sample_id", pa.string()),
        ("variant", pa.int32()),
        ("condition", pa.string()),
        ("prompt_id", pa.string()),
        ("logprob_yes", pa.float64()),
        ("logprob_no", pa.float64()),
        ("other_mass", pa.float64()),
        ("image_sha256", pa.string()),
        ("error", pa.string()),
        # The run.json attempt that scored the row: on duplicates the reducer keeps the latest.
        ("attempt", pa.int64()),
    ]
)
PREDICTIONS = pa.schema([("model", pa.string())] + list(PREDICTIONS_FILE))

ERRORS = pa.schema(
    [
        ("sample_id", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
        ("model", pa.string()),
        ("source", pa.string()),
    ]
)

# A quadrant shard file: one row per sample; `model` is the hive key (path only).
QUADRANTS_FILE = pa.schema(
    [
        ("dataset", pa.string()),
        ("sample_id", pa.string()),
        ("patient_id", pa.string()),
        ("finding", pa.string()),
        ("label", pa.string()),
        ("n_variants", pa.int32()),
        ("prediction", pa.string()),
        ("margin", pa.float64()),
        ("entropy", pa.float64()),
        ("correct", pa.bool_()),
        ("consistent", pa.bool_()),
        ("flips", pa.int32()),
        ("flip_rate", pa.float64()),
        ("ablation", pa.string()),
        ("ablated_prediction", pa.string()),
        ("ablated_margin", pa.float64()),
        ("image_reliant", pa.bool_()),
        ("margin_shift", pa.float64()),
        ("ablation_agreement", pa.float64()),
        ("quadrant", pa.string()),
        ("complete", pa.bool_()),
        ("incomplete_reason", pa.string()),
    ]
)
QUADRANT_COLUMNS = ["model"] + QUADRANTS_FILE.names

QUADRANTS = ("Ideal", "Fragile", "Dangerous", "Worst")

SUMMARY_COLUMNS = (
    ["model", "dataset", "finding", "n", "n_incomplete", "n_errors"]
    + [f"frac_{q.lower()}{s}" for q in QUADRANTS for s in ("", "_ci_low", "_ci_high")]
    + ["flip_rate_question", "flip_rate_pair", "accuracy"]
    + [f"accuracy_{q.lower()}" for q in QUADRANTS]
    + [f"entropy_{q.lower()}" for q in QUADRANTS]
    + ["ablation_agreement"]
)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``table`` to ``schema``; missing columns become nulls."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(len(table), f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def image_partition(uri: str) -> str:
    """The partition (2 hex digits) of an image URI: samples/ are ordered by it (then URI,
    sample_id) and the prediction cache is split by it, so both sides must agree."""
    return hashlib.sha256(uri.encode("utf-8", "surrogatepass")).hexdigest()[:2]
