"""`vlm-eval` command line. Wires modules together; holds no logic of its own.

Exit status: 0 success, 2 bad job file / arguments (one message, every problem),
1 anything else. User errors never print a traceback (``--debug`` shows one).
Nothing printed here (messages, log records) carries URL credentials or secret values:
everything passes ``provenance.redact_text``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from vlm_eval.errors import JobFailedError, UserError, VlmEvalError
from vlm_eval.provenance import redact_text

log = logging.getLogger("vlm_eval")


def _plain_progress(event: dict) -> None:
    """Fallback printer of pipeline progress events (when vlm_eval.progress is unavailable)."""
    done, total = int(event.get("units_done", 0)), int(event.get("units_total", 0))
    step = max(1, total // 10)
    if done == total or done % step == 0:
        print(f"  [{event.get('model', '?')}] units {done}/{total}", flush=True)


def _progress_callback():
    """(callback, close): the console display of vlm_eval.progress if present, else plain lines."""
    try:
        from vlm_eval import progress as display
    except ImportError:
        return _plain_progress, lambda: None
    factory = getattr(display, "console_progress", None) or getattr(display, "ProgressDisplay", None)
    if factory is None:
        return _plain_progress, lambda: None
    callback = factory()
    return callback, getattr(callback, "close", lambda: None)


def _require_run(run_url: str) -> None:
    """Refuse a folder that is not a run (no run.json), before anything is written there."""
    from vlm_eval import storage
    from vlm_eval.layout import RunLayout

    if not storage.exists(RunLayout(run_url).run_json):
        where = "does not exist" if not storage.exists(run_url) else "has no run.json"
        raise UserError(f"{run_url} is not a vlm-eval run folder ({where}); give the folder of a run "
                        "(OUTPUT/RUN_ID, the one holding run.json)")


def _print_summary(summary) -> None:
    if summary is None or not len(summary):
        return
    overall = summary[summary["finding"].isna()]
    cols = [c for c in ("model", "dataset", "n", "n_incomplete", "n_errors", "frac_ideal", "frac_fragile",
                        "frac_dangerous", "frac_worst", "flip_rate_question", "accuracy") if c in overall]
    print(overall[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def cmd_run(args: argparse.Namespace) -> int:
    from vlm_eval.config import load_job
    from vlm_eval.run import run_job

    job = load_job(args.job, args.set or [])
    print(f"vlm-eval: running job {job.name!r} ({len(job.models)} model(s))", flush=True)
    progress, close = _progress_callback()
    try:
        result = run_job(job, progress=progress)
    finally:
        close()
    _print_summary(result.summary)
    print(f"run folder: {result.run_url}")
    return 0


def cmd_reduce(args: argparse.Namespace) -> int:
    from vlm_eval.reduce import reduce_run

    _require_run(args.run_url)
    counts = reduce_run(args.run_url)
    print(f"reduced {args.run_url}: {counts}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vlm_eval.report import write_report

    _require_run(args.run_url)
    print(f"report: {write_report(args.run_url)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from vlm_eval.compare import compare_runs

    text = compare_runs(args.run_urls, output=args.output)
    print(text)
    from vlm_eval.reduce.paper_table import compare_paper_text  # the paper's layout (H-paper)

    paper = compare_paper_text(args.run_urls, getattr(args, "paper_table", None))
    if paper:
        print("\n" + paper)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from vlm_eval.demo import run_demo

    progress, close = _progress_callback()
    try:
        result = run_demo(output=args.output, n_samples=args.samples, progress=progress)
    finally:
        close()
    _print_summary(result.summary)
    print(f"demo run folder: {result.run_url}")
    print(f"open the report: {result.run_url.rstrip('/')}/report.html")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from vlm_eval.status import main as status_main  # H-ops's module; imported only when asked

    return int(status_main(args.run_url) or 0)


def cmd_datasets(args: argparse.Namespace) -> int:
    from vlm_eval.datasets import describe_adapters

    print(describe_adapters())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlm-eval", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show Ray's own logs, warnings and progress bars (quiet by default)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="inference, then reduce, then report; resumes an existing run_id")
    r.add_argument("job", help="job YAML (path or URL)")
    r.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a job key (repeatable)")
    r.set_defaults(func=cmd_run)

    r = sub.add_parser("reduce", help="(re)build quadrant and summary tables from prediction shards")
    r.add_argument("run_url")
    r.set_defaults(func=cmd_reduce)

    r = sub.add_parser("report", help="(re)write report.html")
    r.add_argument("run_url")
    r.set_defaults(func=cmd_report)

    r = sub.add_parser("compare", help="side-by-side summary of several runs or models")
    r.add_argument("run_urls", nargs="+")
    r.add_argument("--output", help="write the comparison tables/HTML here")
    r.add_argument("--paper-table", metavar="OUT.csv", help="write the paper's table layout (per configuration x "
                   "dataset) as CSV here, r(flip rate, Dangerous share) beside it as OUT.csv.json; the table is "
                   "printed whenever there are >= 3 configuration x dataset rows")
    r.set_defaults(func=cmd_compare)

    r = sub.add_parser("demo", help="the whole job on built-in demo data and a tiny model (no network, no GPU)")
    r.add_argument("--output", default="runs", help="where the demo run folder goes (default: ./runs)")
    r.add_argument("--samples", type=int, default=48, help="number of synthetic samples")
    r.set_defaults(func=cmd_demo)

    r = sub.add_parser("status", help="state of a run (running, finished, failed), progress per model, ETA")
    r.add_argument("run_url")
    r.set_defaults(func=cmd_status)

    r = sub.add_parser("datasets", help="list dataset adapters and their options")
    r.set_defaults(func=cmd_datasets)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:  # read by vlm_eval.pipeline.ray_env before Ray starts
        os.environ["VLM_EVAL_VERBOSE"] = "1"
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactingFilter())
    try:
        return args.func(args)
    except UserError as exc:
        print(redact_text(f"vlm-eval: error: {exc}"), file=sys.stderr)
        return 2
    except JobFailedError as exc:
        print(redact_text(f"vlm-eval: run failed: {exc}"), file=sys.stderr)
        return 1
    except (VlmEvalError, Exception) as exc:  # noqa: BLE001 - last-resort message
        if args.debug or os.environ.get("VLM_EVAL_DEBUG"):
            raise
        print(redact_text(f"vlm-eval: failed: {type(exc).__name__}: {exc}\n(run with --debug for a traceback)"),
              file=sys.stderr)
        return 1


class _RedactingFilter(logging.Filter):
    """Log records leave without URL credentials or secret values (exception text included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: let logging report it
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact_text(message), ()
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


if __name__ == "__main__":
    sys.exit(main())
