"""The dashboard's charts as inline SVG, rendered on the server (no script, no library).

Every text in them is escaped; colors are fixed per status. Each chart has a ``<title>`` and a table
fallback in the page, so it reads without the picture too.
"""

from __future__ import annotations

import datetime as dt
from html import escape

from markupsafe import Markup

COLORS = {
    "Completed": "#2e7d32", "Connected": "#66bb6a", "Ringing": "#42a5f5", "Initiated": "#90caf9",
    "Escalated": "#ffa726", "NoAnswer": "#ef6c00", "CallerHungUp": "#8d6e63", "Busy": "#ab47bc",
    "Failed": "#c62828",
}
WAIT_BUCKETS = [(0, 5), (5, 10), (10, 20), (20, 30), (30, 60), (60, None)]


def _parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.rstrip("Z"))


def per_hour(logs: list[dict], start: dt.datetime, hours: int) -> tuple[list[dt.datetime], dict[str, list[int]]]:
    slots = [start + dt.timedelta(hours=i) for i in range(hours)]
    counts: dict[str, list[int]] = {}
    for log in logs:
        at = _parse(log["startedAt"] or log["createdAt"])
        index = int((at - start).total_seconds() // 3600)
        if 0 <= index < hours:
            counts.setdefault(log["status"], [0] * hours)[index] += 1
    ordered = {status: counts[status] for status in COLORS if status in counts}
    ordered.update({s: c for s, c in counts.items() if s not in ordered})
    return slots, ordered


def status_chart(slots: list[dt.datetime], counts: dict[str, list[int]]) -> Markup:
    width, height, left, bottom, top = 720, 240, 36, 28, 10
    hours = len(slots)
    totals = [sum(series[i] for series in counts.values()) for i in range(hours)]
    peak = max(totals + [1])
    step = (width - left - 4) / hours
    scale = (height - bottom - top) / peak
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="status-title" '
             f'xmlns="http://www.w3.org/2000/svg"><title id="status-title">Calls by status per hour (UTC), '
             f'at most {peak} in an hour</title>']
    for tick in sorted({0, peak // 2, peak}):
        y = height - bottom - tick * scale
        parts.append(f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{tick}</text>')
    for i in range(hours):
        x = left + i * step
        y = height - bottom
        for status, series in counts.items():
            n = series[i]
            if not n:
                continue
            h = n * scale
            y -= h
            parts.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}" '
                         f'fill="{COLORS.get(status, "#999")}"><title>{escape(status)}: {n} at '
                         f'{slots[i]:%H}:00</title></rect>')
        if i % 3 == 0:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{height - 10}" text-anchor="middle" '
                         f'font-size="11">{slots[i]:%H}h</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def wait_buckets(waits: list[float]) -> list[tuple[str, int]]:
    out = []
    for low, high in WAIT_BUCKETS:
        label = f"{low}–{high} s" if high is not None else f"{low} s +"
        out.append((label, sum(1 for w in waits if w >= low and (high is None or w < high))))
    return out


def wait_chart(buckets: list[tuple[str, int]]) -> Markup:
    width, height, left, bottom, top = 720, 220, 36, 28, 10
    peak = max([n for _, n in buckets] + [1])
    step = (width - left - 4) / len(buckets)
    scale = (height - bottom - top) / peak
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="wait-title" '
             f'xmlns="http://www.w3.org/2000/svg"><title id="wait-title">Time to answer: calls per range of '
             f'seconds</title>']
    for tick in sorted({0, peak // 2, peak}):
        y = height - bottom - tick * scale
        parts.append(f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{tick}</text>')
    for i, (label, n) in enumerate(buckets):
        x = left + i * step
        h = n * scale
        parts.append(f'<rect x="{x + 4:.1f}" y="{height - bottom - h:.1f}" width="{step - 8:.1f}" height="{h:.1f}" '
                     f'fill="#1565c0"><title>{escape(label)}: {n}</title></rect>'
                     f'<text x="{x + step / 2:.1f}" y="{height - 10}" text-anchor="middle" font-size="11">'
                     f'{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
