"""Compare the quadrant and summary tables of two run folders (e.g. the demo before and
after a refactor). Usage: compare-run-tables.py RUN_A RUN_B [--atol 1e-5]

Floats are compared within ``--atol`` (batch composition moves margins by ~1e-7 on CPU);
everything else exactly. Prints each differing column and exits 1 if any differ.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd


def _table(run: str, name: str) -> pd.DataFrame:
    if name == "quadrants":
        df = pd.read_parquet(f"{run}/quadrants")
        df["model"] = df["model"].astype(str)
        return df.sort_values(["model", "sample_id"]).reset_index(drop=True)
    df = pd.read_parquet(f"{run}/summary.parquet")
    return df.sort_values(["model", "dataset", "finding"], na_position="first").reset_index(drop=True)


def differing_columns(a: pd.DataFrame, b: pd.DataFrame, atol: float) -> list[str]:
    if len(a) != len(b):
        return [f"<rows: {len(a)} vs {len(b)}>"]
    out = []
    for col in sorted(set(a.columns) | set(b.columns)):
        if col not in a or col not in b:
            out.append(f"{col} (only in {'B' if col not in a else 'A'})")
            continue
        x, y = a[col], b[col]
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            same = np.allclose(x.astype(float), y.astype(float), atol=atol, rtol=0, equal_nan=True)
        else:
            same = x.astype(object).where(x.notna(), None).tolist() == y.astype(object).where(y.notna(), None).tolist()
        if not same:
            out.append(col)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--atol", type=float, default=1e-5)
    args = ap.parse_args(argv)
    bad = 0
    for name in ("quadrants", "summary"):
        diff = differing_columns(_table(args.run_a, name), _table(args.run_b, name), args.atol)
        print(f"{name}: {'identical' if not diff else 'differ in ' + ', '.join(diff)}")
        bad += bool(diff)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
