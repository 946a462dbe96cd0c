"""Where every file of a run lives (the one source of truth for run-folder paths). Deterministic names make reruns idempotent.

A prediction shard ``predictions/model=NAME/shard-<unit>.parquet`` is committed
atomically (temp file + rename locally, one PUT on object stores) and *is* the
completion marker of its work unit: a rerun skips units whose shard exists.
Its error rows are committed first (``errors/model-NAME-<unit>.parquet``), so a
crash between the two only makes the rerun redo and overwrite both.
"""
from __future__ import annotations

import posixpath

from vlm_eval import storage


class RunLayout:
    def __init__(self, run_url: str):
        self.root = run_url.rstrip("/")

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    @property
    def run_json(self) -> str:
        return self.path("run.json")

    @property
    def samples_dir(self) -> str:
        return self.path("samples")

    @property
    def samples_file(self) -> str:
        return self.path("samples", "part-00000.parquet")

    @property
    def predictions_dir(self) -> str:
        return self.path("predictions")

    def model_predictions_dir(self, model: str) -> str:
        return self.path("predictions", f"model={model}")

    def shard_file(self, model: str, unit_id: str) -> str:
        return self.path("predictions", f"model={model}", f"shard-{unit_id}.parquet")

    @property
    def errors_dir(self) -> str:
        return self.path("errors")

    def unit_errors_file(self, model: str, unit_id: str) -> str:
        return self.path("errors", f"model-{model}-{unit_id}.parquet")

    @property
    def manifest_errors_file(self) -> str:
        return self.path("errors", "manifest.parquet")

    @property
    def summary_json(self) -> str:
        return self.path("summary.json")

    @property
    def summary_parquet(self) -> str:
        return self.path("summary.parquet")

    @property
    def quadrants_dir(self) -> str:
        return self.path("quadrants")

    def model_quadrants_dir(self, model: str) -> str:
        return self.path("quadrants", f"model={model}")

    @property
    def progress_json(self) -> str:
        """Live progress of an in-flight run (written by the driver, read by ``vlm-eval status``)."""
        return self.path("progress.json")

    @property
    def report_html(self) -> str:
        return self.path("report.html")

    def committed_units(self, model: str) -> set[str]:
        """Units whose prediction shard is committed for ``model``."""
        done = set()
        for f in storage.list_files(self.model_predictions_dir(model), ".parquet"):
            name = posixpath.basename(f)
            if name.startswith("shard-"):
                done.add(name[len("shard-") : -len(".parquet")])
        return done
