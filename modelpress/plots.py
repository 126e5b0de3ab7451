"""Scatter plots as SVG, written by hand so the client needs no plotting library: one point per job, labelled,
with the uploaded model as a reference point."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT, MARGIN = 720, 460, 70
TICKS = 5


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    reference: bool = False


def _ticks(low: float, high: float) -> list[float]:
    return [low + (high - low) * i / (TICKS - 1) for i in range(TICKS)]


def _span(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.05 or 1.0
    return low - pad, high + pad


def scatter(points: list[Point], title: str, x_label: str, y_label: str) -> str:
    """An SVG document; x grows to the right, y upwards (higher quality is up)."""
    x_low, x_high = _span([p.x for p in points])
    y_low, y_high = _span([p.y for p in points])

    def px(x: float) -> float:
        return MARGIN + (x - x_low) / (x_high - x_low) * (WIDTH - 2 * MARGIN)

    def py(y: float) -> float:
        return HEIGHT - MARGIN - (y - y_low) / (y_high - y_low) * (HEIGHT - 2 * MARGIN)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{WIDTH / 2}" y="24" text-anchor="middle" font-size="15">{escape(title)}</text>',
             f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" y2="{HEIGHT - MARGIN}" '
             'stroke="black"/>',
             f'<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{HEIGHT - MARGIN}" stroke="black"/>',
             f'<text x="{WIDTH / 2}" y="{HEIGHT - 20}" text-anchor="middle">{escape(x_label)}</text>',
             f'<text x="18" y="{HEIGHT / 2}" text-anchor="middle" transform="rotate(-90 18 {HEIGHT / 2})">'
             f'{escape(y_label)}</text>']
    for x in _ticks(x_low, x_high):
        parts.append(f'<line x1="{px(x):.1f}" y1="{HEIGHT - MARGIN}" x2="{px(x):.1f}" y2="{HEIGHT - MARGIN + 5}" '
                     f'stroke="black"/><text x="{px(x):.1f}" y="{HEIGHT - MARGIN + 18}" text-anchor="middle">'
                     f'{_fmt(x)}</text>')
    for y in _ticks(y_low, y_high):
        parts.append(f'<line x1="{MARGIN - 5}" y1="{py(y):.1f}" x2="{MARGIN}" y2="{py(y):.1f}" stroke="black"/>'
                     f'<text x="{MARGIN - 8}" y="{py(y) + 4:.1f}" text-anchor="end">{_fmt(y)}</text>')
    for point in points:
        color = "#888888" if point.reference else "#1f77b4"
        parts.append(f'<circle cx="{px(point.x):.1f}" cy="{py(point.y):.1f}" r="5" fill="{color}">'
                     f'<title>{escape(point.label)}: {_fmt(point.x)}, {_fmt(point.y)}</title></circle>'
                     f'<text x="{px(point.x) + 8:.1f}" y="{py(point.y) - 6:.1f}" fill="{color}">'
                     f'{escape(point.label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _fmt(value: float) -> str:
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.4g}"
