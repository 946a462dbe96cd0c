"""report.html: a self-contained page (inline CSS and SVG) built from the reduced tables.

Imports no engine, no Ray, no torch.
"""
from vlm_eval.report.html import report_html, write_report

__all__ = ["report_html", "write_report"]
