"""Live per-model progress of a run: done/total, requests/s, cache hits, errors, ETA.

Fed by the pipeline's progress events (``run_job(job, progress=ProgressDisplay())``;
keys ``model, units_done, units_total, requests_scored, requests_cached, errors,
images_fetched, elapsed_s``). On a terminal it draws one bar per model (rich if
installed, else tqdm); otherwise (CI logs, `kubectl logs`) it prints a plain line
per model at most every ``interval_s`` and when a model finishes. `vlm-eval status`
prints the same figures from progress.json (``format_line``).
"""
from __future__ import annotations

import sys
import time
from typing import IO

PLAIN_EVERY_S = 10.0


def _num(event: dict, key: str) -> float:
    try:
        return float(event.get(key) or 0)
    except (TypeError, ValueError):
        return 0.0


def figures(event: dict, since: tuple[float, float] | None = None) -> dict:
    """The numbers shown for one model's latest event.

    ``since``: (units done, elapsed s) of the first event this process saw, so the ETA
    uses the pace measured from there on (excluding engine start-up and the units a
    resumed run had committed before). Without it: the whole run's average pace.
    """
    done, total = _num(event, "units_done"), _num(event, "units_total")
    scored, cached = _num(event, "requests_scored"), _num(event, "requests_cached")
    elapsed = _num(event, "elapsed_s")
    requests = scored + cached
    d0, e0 = since if since is not None else (0.0, 0.0)
    pace_units, pace_time = done - d0, elapsed - e0
    eta = None
    if total and done >= total:
        eta = 0.0
    elif pace_units > 0 and pace_time > 0:
        eta = pace_time / pace_units * (total - done)
    return {
        "model": str(event.get("model", "?")), "done": int(done), "total": int(total),
        "percent": 100.0 * done / total if total else 0.0,
        "requests_per_s": requests / elapsed if elapsed > 0 else 0.0,
        "scored": int(scored), "cached": int(cached),
        "cache_hit_rate": cached / requests if requests else 0.0,
        "errors": int(_num(event, "errors")), "images_fetched": int(_num(event, "images_fetched")),
        "elapsed_s": elapsed, "eta_s": eta,
    }


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def format_line(event: dict, since: tuple[float, float] | None = None) -> str:
    """One plain line: ``[model] units 3/7 (42.9%) | 12.5 req/s | cache hits 30 (20.0%) | errors 0 | ETA 0:00:12``."""
    f = figures(event, since)
    return (f"[{f['model']}] units {f['done']}/{f['total']} ({f['percent']:.1f}%) | "
            f"{f['requests_per_s']:.1f} req/s | cache hits {f['cached']} ({100 * f['cache_hit_rate']:.1f}%) | "
            f"errors {f['errors']} | elapsed {format_duration(f['elapsed_s'])} | ETA {format_duration(f['eta_s'])}")


class ProgressDisplay:
    """A progress callback: bars on a terminal, periodic plain lines elsewhere. Call ``close()`` at the end."""

    def __init__(self, stream: IO[str] | None = None, *, interval_s: float = PLAIN_EVERY_S,
                 style: str | None = None):
        self.stream = stream or sys.stdout
        self.interval_s = interval_s
        self.style = style or self._pick_style()
        self.since: dict[str, tuple[float, float]] = {}
        self.last_print: dict[str, float] = {}
        self.finished: set[str] = set()
        self._rich = self._tqdm = None
        self._tasks: dict[str, object] = {}

    def _pick_style(self) -> str:
        if not getattr(self.stream, "isatty", lambda: False)():
            return "plain"
        for name in ("rich", "tqdm"):
            try:
                __import__(name)
                return name
            except ImportError:
                continue
        return "plain"

    def __call__(self, event: dict) -> None:
        model = str(event.get("model", "?"))
        if model not in self.since:  # the pace is measured from the first event on (start-up excluded)
            self.since[model] = (_num(event, "units_done"), _num(event, "elapsed_s"))
        if self.style == "rich":
            self._rich_update(model, event)
        elif self.style == "tqdm":
            self._tqdm_update(model, event)
        else:
            self._plain_update(model, event)

    def _plain_update(self, model: str, event: dict) -> None:
        now = time.monotonic()
        complete = _num(event, "units_done") >= _num(event, "units_total")
        if complete and model in self.finished:
            return
        if complete or now - self.last_print.get(model, -1e9) >= self.interval_s:
            self.last_print[model] = now
            if complete:
                self.finished.add(model)
            print("  " + format_line(event, self.since[model]), file=self.stream, flush=True)

    def _postfix(self, model: str, event: dict) -> str:
        f = figures(event, self.since[model])
        return (f"{f['requests_per_s']:.1f} req/s, cache {100 * f['cache_hit_rate']:.0f}%, "
                f"errors {f['errors']}, ETA {format_duration(f['eta_s'])}")

    def _rich_update(self, model: str, event: dict) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        if self._rich is None:
            from rich.console import Console

            self._rich = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), console=Console(file=self.stream))
            self._rich.start()
        if model not in self._tasks:
            self._tasks[model] = self._rich.add_task(model, total=_num(event, "units_total"), info="")
        self._rich.update(self._tasks[model], completed=_num(event, "units_done"),
                          total=_num(event, "units_total"), info=self._postfix(model, event))

    def _tqdm_update(self, model: str, event: dict) -> None:
        from tqdm import tqdm

        bar = self._tasks.get(model)
        if bar is None:
            bar = self._tasks[model] = tqdm(total=int(_num(event, "units_total")), desc=model, unit="unit",
                                            file=self.stream, position=len(self._tasks), leave=True)
        bar.n = int(_num(event, "units_done"))
        bar.set_postfix_str(self._postfix(model, event), refresh=True)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        if self.style == "tqdm":
            for bar in self._tasks.values():
                bar.close()
        self._tasks = {}
