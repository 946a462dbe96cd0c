"""Tiny inline-SVG plots (no JavaScript, no network): bars with CI whiskers, stacked bars, scatters.

Every text that reaches the markup goes through ``esc``. Numbers are formatted
with fixed precision so the output is deterministic.
"""
from __future__ import annotations

import html
import math

import numpy as np

QUADRANT_COLORS = {"Ideal": "#2e7d32", "Fragile": "#f9a825", "Dangerous": "#c62828", "Worst": "#6a1b9a"}
AXIS = "#555"


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _f(x: float) -> str:
    return f"{x:.1f}"


def _svg(width: int, height: int, body: list[str], title: str, cls: str = "plot") -> str:
    return (
        f'<svg class="{cls}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>' + "".join(body) + "</svg>"
    )


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating)) and math.isfinite(float(x))


def bar_chart(groups: list[tuple[str, list[tuple[str, float, float, float]]]], title: str) -> str:
    """Horizontal bars: one block per group label, one bar per (name, value, low, high) in [0, 1]."""
    left, width, bar_h, gap = 260, 420, 14, 10
    rows = sum(len(bars) for _, bars in groups) + len(groups)
    height = 30 + rows * (bar_h + 4) + len(groups) * gap + 30
    body = [f'<text x="{left}" y="16" font-size="12" fill="{AXIS}">share of complete samples (95% CI)</text>']
    bottom = height - 30
    for frac in (0, 0.25, 0.5, 0.75, 1.0):  # grid first, so bars are drawn over it
        x = left + width * frac
        body.append(f'<line x1="{_f(x)}" y1="24" x2="{_f(x)}" y2="{bottom}" stroke="#ddd" stroke-width="1"/>')
        body.append(f'<text x="{_f(x)}" y="{bottom + 14}" font-size="10" text-anchor="middle">{int(frac * 100)}%</text>')
    y = 30
    for label, bars in groups:
        body.append(f'<text x="4" y="{y + 11}" font-size="12" font-weight="bold">{esc(label)}</text>')
        y += bar_h + 4
        for name, value, low, high in bars:
            color = QUADRANT_COLORS.get(name, "#1565c0")
            body.append(f'<text x="{left - 6}" y="{y + 11}" font-size="11" text-anchor="end">{esc(name)}</text>')
            if _finite(value):
                body.append(
                    f'<rect x="{left}" y="{y}" width="{_f(width * float(value))}" height="{bar_h}" fill="{color}">'
                    f"<title>{esc(name)}: {float(value):.3f}</title></rect>"
                )
                label_x = left + width * float(value) + 4
                if _finite(low) and _finite(high):
                    x0, x1, ym = left + width * float(low), left + width * float(high), y + bar_h / 2
                    body.append(
                        f'<path d="M{_f(x0)} {_f(ym)}H{_f(x1)}M{_f(x0)} {_f(y + 2)}V{_f(y + bar_h - 2)}'
                        f'M{_f(x1)} {_f(y + 2)}V{_f(y + bar_h - 2)}" stroke="#000" stroke-width="1.2" fill="none"/>'
                    )
                    label_x = max(label_x, x1 + 4)
                body.append(f'<text x="{_f(label_x)}" y="{y + 11}" font-size="11">{100 * float(value):.1f}%</text>')
            else:
                body.append(f'<text x="{left}" y="{y + 11}" font-size="11" fill="{AXIS}">n/a</text>')
            y += bar_h + 4
        y += gap
    return _svg(left + width + 90, height, body, title)


def stacked_bar(shares: list[tuple[str, float]], title: str, width: int = 520, height: int = 30) -> str:
    """One horizontal bar split into the four quadrants' shares (in [0, 1]), labelled inside when wide enough."""
    body, x = [], 0.0
    total = sum(float(v) for _, v in shares if _finite(v)) or 1.0
    for name, value in shares:
        if not _finite(value) or float(value) <= 0:
            continue
        w = width * float(value) / total
        color = QUADRANT_COLORS.get(name, "#1565c0")
        body.append(f'<rect x="{_f(x)}" y="0" width="{_f(w)}" height="{height}" fill="{color}">'
                    f"<title>{esc(name)}: {100 * float(value):.1f}%</title></rect>")
        if w >= 56:
            fill = "#000" if name == "Fragile" else "#fff"
            body.append(f'<text x="{_f(x + w / 2)}" y="{height / 2 + 4:.1f}" font-size="11" text-anchor="middle" '
                        f'fill="{fill}">{esc(name)} {100 * float(value):.0f}%</text>')
        x += w
    if not body:
        body.append(f'<text x="4" y="{height / 2 + 4:.1f}" font-size="11" fill="{AXIS}">no complete samples</text>')
    return _svg(width, height, body, title, cls="stacked")


def _scale(values: np.ndarray, lo: float, hi: float, a: float, b: float) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    return a + (values - lo) / span * (b - a)


def scatter(x, y, groups, title: str, x_label: str, y_label: str, diagonal: bool = True, labels=None) -> str:
    """Scatter of (x, y) coloured by ``groups`` (quadrant names); optional y = x line and point labels."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    groups = np.asarray(groups, dtype=object)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, groups = x[keep], y[keep], groups[keep]
    left, top, side = 56, 10, 360  # plot area: [left, left + side] x [top, top + side]
    right, bottom = left + side, top + side
    width, height = right + 16, bottom + 48
    body = []
    if len(x) == 0:
        body.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="{AXIS}">no data</text>')
        return _svg(width, height, body, title)
    lo = float(min(x.min(), y.min(), 0.0)) if diagonal else float(x.min())
    hi = float(max(x.max(), y.max(), 0.0)) if diagonal else float(x.max())
    ylo, yhi = (lo, hi) if diagonal else (float(y.min()), float(y.max()))
    ticks_x, ticks_y = (lo, hi), (ylo, yhi)  # labelled at the data's ends; the axes have 5% room
    span, yspan = (hi - lo) or 1.0, (yhi - ylo) or 1.0
    lo, hi, ylo, yhi = lo - 0.05 * span, hi + 0.05 * span, ylo - 0.05 * yspan, yhi + 0.05 * yspan
    px = _scale(x, lo, hi, left, right)
    py = _scale(y, ylo, yhi, bottom, top)
    body.append(f'<rect x="{left}" y="{top}" width="{side}" height="{side}" fill="none" stroke="{AXIS}"/>')
    if diagonal:
        zx, zy = _scale(np.array([0.0]), lo, hi, left, right)[0], _scale(np.array([0.0]), ylo, yhi, bottom, top)[0]
        body.append(f'<line x1="{_f(zx)}" y1="{top}" x2="{_f(zx)}" y2="{bottom}" stroke="#bbb"/>')
        body.append(f'<line x1="{left}" y1="{_f(zy)}" x2="{right}" y2="{_f(zy)}" stroke="#bbb"/>')
        body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{top}" stroke="#999" stroke-dasharray="4 3"/>')
    radius = 4 if labels is not None else 2.2
    body.extend(
        f'<circle cx="{_f(a)}" cy="{_f(b)}" r="{radius}" fill="{QUADRANT_COLORS.get(g, "#1565c0")}" fill-opacity="0.6"/>'
        for a, b, g in zip(px, py, groups)
    )
    if labels is not None:  # labels point inwards so they stay inside the plot
        labels = np.asarray(labels, dtype=object)[keep]
        mid = (left + right) / 2
        body.extend(
            f'<text x="{_f(a + 6 if a < mid else a - 6)}" y="{_f(b - 6 if b > top + 16 else b + 14)}" font-size="10" '
            f'text-anchor="{"start" if a < mid else "end"}">{esc(t)}</text>'
            for a, b, t in zip(px, py, labels)
        )
    for value in ticks_x:  # tick marks and values at the ends of the data
        tx = _scale(np.array([value]), lo, hi, left, right)[0]
        body.append(f'<line x1="{_f(tx)}" y1="{bottom}" x2="{_f(tx)}" y2="{bottom + 4}" stroke="{AXIS}"/>'
                    f'<text x="{_f(tx)}" y="{bottom + 15}" font-size="10" text-anchor="middle" fill="{AXIS}">{value:.2g}</text>')
    for value in ticks_y:
        ty = _scale(np.array([value]), ylo, yhi, bottom, top)[0]
        body.append(f'<line x1="{left - 4}" y1="{_f(ty)}" x2="{left}" y2="{_f(ty)}" stroke="{AXIS}"/>'
                    f'<text x="{left - 6}" y="{_f(ty + 3)}" font-size="10" text-anchor="end" fill="{AXIS}">{value:.2g}</text>')
    body.append(f'<text x="{(left + right) / 2}" y="{bottom + 34}" font-size="12" text-anchor="middle">{esc(x_label)}</text>')
    cy = (top + bottom) / 2
    body.append(f'<text x="14" y="{cy}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {cy})">{esc(y_label)}</text>')
    return _svg(width, height, body, title)


def legend() -> str:
    items = "".join(
        f'<span class="key"><span class="swatch" style="background:{c}"></span>{esc(q)}</span>'
        for q, c in QUADRANT_COLORS.items()
    )
    return f'<div class="legend">{items}</div>'
