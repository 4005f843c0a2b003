"""Server-side SVG charts: plain markup, no script, readable by screen readers.

Each chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` that states the figures in
words; the page shows the same numbers in a table under the chart (and as CSV), so the picture is
never the only way to get them. Sizes are in a viewBox, so a chart shrinks to a phone's width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 640
FONT = 13
SERIES_CLASSES = ("s1", "s2", "s3")


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str  # the value as shown next to the bar (e.g. "412 (63%)")


def _fmt(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


@dataclass(frozen=True)
class Words:
    """The words and number format of the page's language (the charts draw no other text)."""

    no_data: str = "No data"
    number: Callable[[float], str] = _fmt


ENGLISH = Words()


def _open(chart_id: str, title: str, desc: str, height: int) -> list[str]:
    return [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
        f'aria-labelledby="{escape(chart_id)}-t {escape(chart_id)}-d" xmlns="http://www.w3.org/2000/svg" '
        f'preserveAspectRatio="xMinYMin meet">',
        f'<title id="{escape(chart_id)}-t">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-d">{escape(desc)}</desc>',
    ]


def nice_max(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2, 2.5, 5 × 10^n)."""
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def hbar(chart_id: str, title: str, bars: Sequence[Bar], *, max_value: float | None = None,
         label_width: int | None = None, words: Words = ENGLISH) -> Markup:
    """Horizontal bars, one per row: label on the left, value text at the end of the bar.

    The label column is as wide as the longest label needs (labels differ in length by language),
    between 150 and 330 of the 640 units.
    """
    if label_width is None:
        longest = max((len(b.label) for b in bars), default=0)
        label_width = int(min(330, max(150, longest * FONT * 0.62 + 16)))
    row_h, top = 30, 8
    height = top * 2 + row_h * max(1, len(bars))
    scale_max = max_value if max_value is not None else max([b.value for b in bars] + [0]) or 1
    plot_w = WIDTH - label_width - 110
    desc = "; ".join(f"{b.label}: {b.text}" for b in bars) or words.no_data
    out = _open(chart_id, title, desc, height)
    for i, b in enumerate(bars):
        y = top + i * row_h
        w = 0 if scale_max <= 0 else max(0.0, min(1.0, b.value / scale_max)) * plot_w
        out.append(f'<text class="lbl" x="{label_width - 8}" y="{y + 19}" text-anchor="end" '
                   f'font-size="{FONT}">{escape(b.label)}</text>')
        out.append(f'<rect class="track" x="{label_width}" y="{y + 5}" width="{plot_w}" height="{row_h - 10}"/>')
        out.append(f'<rect class="bar s1" x="{label_width}" y="{y + 5}" width="{w:.1f}" height="{row_h - 10}"/>')
        out.append(f'<text class="val" x="{label_width + w + 6:.1f}" y="{y + 19}" font-size="{FONT}">'
                   f'{escape(b.text)}</text>')
    if not bars:
        out.append(f'<text x="{WIDTH / 2}" y="{top + 19}" text-anchor="middle" font-size="{FONT}">'
                   f'{escape(words.no_data)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def columns(chart_id: str, title: str, categories: Sequence[str],
            series: Sequence[tuple[str, Sequence[float | None]]], *, unit: str = "",
            max_value: float | None = None, min_max: float = 0.0, words: Words = ENGLISH) -> Markup:
    """Vertical grouped columns: one group per category (e.g. a week), one column per series.

    A missing value (None) draws no column and is said as "no data" in the description.
    """
    height, left, right, top, bottom = 300, 48, 12, 34, 44
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    values = [v for _, vs in series for v in vs if v is not None]
    top_value = max_value if max_value is not None else nice_max(max([*values, min_max]))
    said = []
    for ci, cat in enumerate(categories):
        parts = [f"{name} {words.number(round(vs[ci], 1)) + unit if vs[ci] is not None else words.no_data}"
                 for name, vs in series]
        said.append(f"{cat}: " + ", ".join(parts))
    out = _open(chart_id, title, "; ".join(said) or words.no_data, height)
    x = left
    for si, (name, _) in enumerate(series):  # legend, in words as well as colour
        out.append(f'<rect class="bar {SERIES_CLASSES[si % 3]}" x="{x}" y="8" width="12" height="12"/>')
        out.append(f'<text x="{x + 16}" y="19" font-size="{FONT}">{escape(name)}</text>')
        x += 24 + 8 * len(name)
    for i in range(5):  # gridlines and axis labels
        v = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line class="grid" x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
                   f'{escape(words.number(round(v, 1)))}{escape(unit)}</text>')
    n = max(1, len(categories))
    group_w = plot_w / n
    col_w = max(2.0, min(28.0, (group_w - 6) / max(1, len(series))))
    label_every = max(1, math.ceil(n / 12))
    for ci, cat in enumerate(categories):
        gx = left + ci * group_w + (group_w - col_w * len(series)) / 2
        for si, (name, vs) in enumerate(series):
            v = vs[ci]
            if v is None:
                continue
            h = max(0.0, min(1.0, v / top_value if top_value else 0)) * plot_h
            out.append(f'<rect class="bar {SERIES_CLASSES[si % 3]}" x="{gx + si * col_w:.1f}" '
                       f'y="{top + plot_h - h:.1f}" width="{col_w - 1:.1f}" height="{h:.1f}">'
                       f'<title>{escape(cat)} {escape(name)}: {escape(words.number(round(v, 1)))}{escape(unit)}</title>'
                       f'</rect>')
        if ci % label_every == 0:
            cx = left + ci * group_w + group_w / 2
            out.append(f'<text class="axis" x="{cx:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
                       f'font-size="11">{escape(cat)}</text>')
    if not categories:
        out.append(f'<text x="{WIDTH / 2}" y="{top + plot_h / 2}" text-anchor="middle" font-size="{FONT}">'
                   f'{escape(words.no_data)}</text>')
    out.append("</svg>")
    return Markup("".join(out))
