"""Every number in report.html and in the comparison page, read back from the HTML and
compared with summary.parquet of its run, or with values worked out by hand (issue 16.2).

The run is the hand-built one of tests/unit/reduce/test_summary_reference.py; a table
column is matched by its header text, so reordering columns or rows is caught.
"""
from __future__ import annotations

import math
import os
import re
import sys
from html.parser import HTMLParser

import pandas as pd
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reduce"))
from test_summary_reference import PLAN, write_hand_run  # noqa: E402

from vlm_eval.compare import compare_runs  # noqa: E402
from vlm_eval.reduce import reduce_run  # noqa: E402
from vlm_eval.report import write_report  # noqa: E402

QUADS = ("Ideal", "Fragile", "Dangerous", "Worst")
# header text -> summary column (a cell may hold "estimate [low, high]")
HEADER_COLUMN = {"n": "n", "incomplete": "n_incomplete", "errors": "n_errors",
                 "flip rate (question)": "flip_rate_question", "flip rate": "flip_rate_question",
                 "flip rate (pair)": "flip_rate_pair", "accuracy": "accuracy", "AUROC entropy": "auroc_entropy_dangerous",
                 "AUROC -|margin|": "auroc_abs_margin_dangerous", "mean entropy": "mean_entropy",
                 **{q: f"frac_{q.lower()}" for q in QUADS},
                 **{f"accuracy {q}": f"accuracy_{q.lower()}" for q in QUADS},
                 **{f"entropy {q} (bits)": f"entropy_{q.lower()}" for q in QUADS}}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?%?")


class Tables(HTMLParser):
    """Every <table> as (headers, rows of cell texts)."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell, self._row, self._in_svg = [], None, None, 0

    def handle_starttag(self, tag, attrs):
        if tag == "svg":
            self._in_svg += 1
        elif tag == "table":
            self.tables.append(([], []))
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "svg":
            self._in_svg -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self._row.append(("".join(self._cell).strip(), tag))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            headers, rows = self.tables[-1]
            if all(kind == "th" for _, kind in self._row):
                headers.extend(text for text, _ in self._row)
            else:
                rows.append([text for text, _ in self._row])
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_tables(path) -> list[tuple[list[str], list[list[str]]]]:
    parser = Tables()
    parser.feed(open(path, encoding="utf-8").read())
    return parser.tables


def parse_number(text: str) -> float:
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def assert_shown(text: str, value, where) -> None:
    """``text`` shows ``value`` to the precision it prints (a dash for a missing value)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        assert text in ("–", "-", "n/a", "not measured", ""), (where, text, value)
        return
    digits = len(text.rstrip("%").split(".")[1]) if "." in text else 0
    half_unit = 0.5 * 10 ** -digits / (100 if text.endswith("%") else 1)
    assert abs(parse_number(text) - float(value)) <= half_unit + 1e-12, (where, text, value)


def check_summary_table(headers, rows, summary_by_key: dict, key_header: str) -> int:
    """Checks every cell of a table whose rows are summary rows; returns the cells checked."""
    checked = 0
    for cells in rows:
        row = summary_by_key[cells[headers.index(key_header)]]
        for header, cell in zip(headers, cells):
            if header == key_header:
                continue
            numbers = NUMBER.findall(cell)
            if header not in HEADER_COLUMN:
                assert not numbers, f"a number under an unknown header {header!r}: {cell!r}; map it here"
                continue
            col = HEADER_COLUMN[header]
            if not numbers:
                assert_shown(cell, row[col], (key_header, header))
            else:
                assert len(numbers) in (1, 3), (header, cell)
                assert_shown(numbers[0], row[col], (cells[0], header))
                if len(numbers) == 3:
                    assert_shown(numbers[1], row[f"{col}_ci_low"], (cells[0], header, "low"))
                    assert_shown(numbers[2], row[f"{col}_ci_high"], (cells[0], header, "high"))
            checked += 1
    return checked


def _summary(run):
    s = pd.read_parquet(os.path.join(run, "summary.parquet"))
    return s


def test_every_number_in_the_report_matches_summary_parquet(tmp_path):
    run = write_hand_run(tmp_path)
    reduce_run(run, n_boot=300, seed=1)
    write_report(run)
    s = _summary(run)
    by_key = {" / ".join(["m", "ds"] + ([f] if isinstance(f, str) else [])): r for f, r in zip(s["finding"], s.to_dict("records"))}
    tables = html_tables(os.path.join(run, "report.html"))
    summary_tables = [(h, r) for h, r in tables if h and h[0].startswith("model / dataset")]
    # quadrant shares, accuracy/entropy per quadrant, AUROC screen, per finding
    assert len(summary_tables) >= 4, [h for h, _ in tables]
    seen_headers, checked = set(), 0
    for headers, rows in summary_tables:
        checked += check_summary_table(headers, rows, by_key, headers[0])
        seen_headers |= set(headers)
    needed = set(HEADER_COLUMN) - {"flip rate"}
    assert needed <= seen_headers, f"report no longer shows {sorted(needed - seen_headers)}"
    # every summary row shows up: 1 top row in 3 tables + 2 finding rows
    assert checked >= 3 * 4 + 2 * 6
    # the text-only sentence states the flip/Dangerous correlation over 1 configuration
    html = open(os.path.join(run, "report.html"), encoding="utf-8").read()
    assert "n = 1 configurations" in html


# run B: s1 now flips a paraphrase (Ideal -> Fragile), s4 stops flipping (Worst -> Dangerous),
# s9 is not in run B at all.
PLAN_B = {**PLAN, "s1": (*PLAN["s1"][:3], [2, -1, 3], PLAN["s1"][4]),
          "s4": (*PLAN["s4"][:3], [-0.5, -1, -3], PLAN["s4"][4])}


def ref_mcnemar_exact(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def test_every_number_in_the_comparison_page_matches_the_runs(tmp_path):
    run_a = write_hand_run(tmp_path, "a", run_id="run-a")
    run_b = write_hand_run(tmp_path, "b", drop=("s9",), run_id="run-b", plan=PLAN_B)
    for run in (run_a, run_b):
        reduce_run(run, n_boot=300, seed=1)
    out = tmp_path / "cmp"
    compare_runs([run_a, run_b], str(out), n_boot=300, seed=1)
    tables = html_tables(out / "comparison.html")
    by_key = {}
    for label, run in (("run-a", run_a), ("run-b", run_b)):
        s = _summary(run)
        by_key[f"{label} / m / ds"] = s[s["finding"].isna()].iloc[0].to_dict()
    (headers, rows), = [(h, r) for h, r in tables if h and h[0] == "run / model / dataset"]
    assert sorted(r[0] for r in rows) == sorted(by_key)
    assert check_summary_table(headers, rows, by_key, headers[0]) == 2 * (len(headers) - 1)
    assert {"n", *QUADS, "accuracy", "AUROC entropy", "AUROC -|margin|"} <= set(headers)

    # paired, by hand: complete in both = s1 s2 s3 s4 s5 s8 (6). Dangerous A {s3, s5} = 2/6,
    # B {s3, s4, s5} = 3/6 -> A - B = -1/6. Inconsistent A {s2, s4}, B {s1, s2}: A only 1 (s4), B only 1 (s1).
    (ph, prow), = [(h, r) for h, r in tables if h and h[:2] == ["A", "B"]]
    assert len(prow) == 1
    cell = dict(zip(ph, prow[0]))
    assert cell["n paired"] == "6"
    diff = NUMBER.findall(cell["Dangerous A - B [95% CI]"])
    assert_shown(diff[0], -1 / 6, "diff")
    assert parse_number(diff[1]) <= -1 / 6 <= parse_number(diff[2])
    assert [int(x) for x in NUMBER.findall(cell["flips A only / B only"])] == [1, 1]
    assert_shown(cell["McNemar p (flips)"], ref_mcnemar_exact(1, 1), "mcnemar")

    # migration A -> B by hand: s1 Ideal->Fragile, s2 Fragile->Fragile, s3 s5 Dangerous->Dangerous,
    # s4 Worst->Dangerous, s6 incomplete->incomplete, s8 Ideal->Ideal, s9 Ideal->absent.
    want = {("Ideal", "Fragile"): 1, ("Fragile", "Fragile"): 1, ("Dangerous", "Dangerous"): 2,
            ("Worst", "Dangerous"): 1, ("incomplete", "incomplete"): 1, ("Ideal", "Ideal"): 1, ("Ideal", "absent"): 1}
    (ch, crow), = [(h, r) for h, r in tables if h and h[0] == "from \\ to"]
    got = {(r[0], to): int(v) for r in crow for to, v in zip(ch[1:], r[1:]) if int(v)}
    assert got == want
    # the moved samples listed: present in both runs with another state (not s9)
    (mh, mrow), = [(h, r) for h, r in tables if h and h[0] == "from run"]
    moved = {r[mh.index("sample")]: (r[mh.index("from")], r[mh.index("to")]) for r in mrow}
    assert moved == {"s1": ("Ideal", "Fragile"), "s4": ("Worst", "Dangerous")}
    for r in mrow:
        sid = r[mh.index("sample")]
        assert_shown(r[mh.index("margin from")], PLAN[sid][3][0], (sid, "margin from"))
        assert_shown(r[mh.index("margin to")], PLAN_B[sid][3][0], (sid, "margin to"))


@pytest.mark.parametrize("bad", ["swap_columns", "swap_values"])
def test_the_checker_catches_a_misplaced_number(tmp_path, bad):
    """The read-back can fail: a report whose Ideal and Dangerous cells are swapped is refused."""
    run = write_hand_run(tmp_path)
    reduce_run(run, n_boot=100, seed=1)
    write_report(run)
    s = _summary(run)
    by_key = {"m / ds": s[s["finding"].isna()].iloc[0].to_dict()}
    headers, rows = next((h, r) for h, r in html_tables(os.path.join(run, "report.html")) if "Ideal" in h)
    i, j = headers.index("Ideal"), headers.index("Dangerous")
    if bad == "swap_columns":
        headers = list(headers)
        headers[i], headers[j] = headers[j], headers[i]
    else:
        rows = [list(r) for r in rows]
        rows[0][i], rows[0][j] = rows[0][j], rows[0][i]
    with pytest.raises(AssertionError):
        check_summary_table(headers, rows[:1], by_key, headers[0])
