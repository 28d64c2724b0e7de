"""Charts drawn on the server as inline SVG: no script, no library, nothing from another host
(the dashboard's CSP allows neither inline style nor foreign scripts; SVG presentation
attributes are markup, not style).

Each chart is an image to assistive technology (role="img", named by its <title> and
described by its <desc>, which gives the total and the busiest day), scales to its container
through its viewBox (the stylesheet sets width 100%), and is drawn in colours with at least
3:1 contrast against white for the bars and 4.5:1 for the text. The page puts the same figures
in a table beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

from markupsafe import Markup, escape

WIDTH, HEIGHT = 400, 190  # the viewBox; at 390 px wide a 14-unit label reads at about 12 px
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 12, 30  # room for the axis labels
FONT = 14
INK = "#1f2933"  # 14.7:1 on white
GRID = "#d9dee4"
AXIS = "#52606d"  # 6.5:1
COLOURS = {"brand": "#1d3557", "accent": "#b5461f"}  # 12.5:1 and 5.4:1 on white


def _short(day: date) -> str:
    return day.strftime("%d-%m")


def long_date(day: date) -> str:
    return day.strftime("%d-%m-%Y")


def _step(top: int) -> int:
    """A round step (1, 2, 5, 10, 20, 50, ...) that divides 0..top into at most four parts."""
    if top <= 4:
        return 1
    raw = top / 4
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return int(factor * power)
    return int(10 * power)


def _number(value: int) -> str:
    return f"{value:,}".replace(",", ".")


def bar_chart(key: str, title: str, unit: str, days: Sequence[date], values: Sequence[int],
              colour: str = "brand") -> Markup:
    """One bar per day. `key` makes the ids unique on the page; `unit` names what a bar counts
    ("aanmeldingen"), for the description and each bar's tooltip."""
    fill = COLOURS[colour]
    count = len(days)
    highest = max(values, default=0)
    step = _step(highest)
    top = max(step * math.ceil(highest / step), step)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(count, 1)
    bar = max(slot * 0.72, 0.8) if count else 0
    total = sum(values)
    if highest:
        busiest = days[list(values).index(highest)]
        desc = (f"{title} per dag van {long_date(days[0])} tot en met {long_date(days[-1])}: "
                f"{_number(total)} {unit} in totaal, het meest op {long_date(busiest)} ({_number(highest)}).")
    elif count:
        desc = f"{title} per dag van {long_date(days[0])} tot en met {long_date(days[-1])}: geen {unit}."
    else:
        desc = f"{title}: geen dagen gekozen."
    parts = [
        (f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{key}-t {key}-d" '
         f'focusable="false" font-family="system-ui, Arial, sans-serif" font-size="{FONT}">'),
        f'<title id="{key}-t">{escape(title)}</title>',
        f'<desc id="{key}-d">{escape(desc)}</desc>',
    ]
    for tick in range(0, top + 1, step):  # the value axis: gridlines and labels
        y = TOP + plot_h - plot_h * tick / top
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}" '
                     'stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + FONT * 0.35:.1f}" text-anchor="end" fill="{INK}">'
                     f'{_number(tick)}</text>')
    for index, (day, value) in enumerate(zip(days, values, strict=True)):
        if not value:
            continue
        height = plot_h * value / top
        x = LEFT + index * slot + (slot - bar) / 2
        parts.append(f'<rect x="{x:.2f}" y="{TOP + plot_h - height:.2f}" width="{bar:.2f}" height="{height:.2f}" '
                     f'fill="{fill}"><title>{long_date(day)}: {_number(value)} {escape(unit)}</title></rect>')
    baseline = TOP + plot_h
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{baseline}" y2="{baseline}" stroke="{AXIS}" '
                 'stroke-width="1.5"/>')
    for index in _labelled(count):  # the day axis: a few dates, never crowded
        x = LEFT + index * slot + slot / 2
        anchor = "start" if index == 0 and count > 1 else "end" if index == count - 1 and count > 1 else "middle"
        if anchor == "start":
            x = LEFT + index * slot
        elif anchor == "end":
            x = LEFT + (index + 1) * slot
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{baseline}" y2="{baseline + 5}" stroke="{AXIS}"/>')
        parts.append(f'<text x="{x:.1f}" y="{baseline + 5 + FONT}" text-anchor="{anchor}" fill="{INK}">'
                     f'{_short(days[index])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _labelled(count: int) -> list[int]:
    """The days that get a label: the first, the last, and evenly between (at most five)."""
    if count <= 0:
        return []
    if count <= 5:
        return list(range(count))
    gaps = 4
    return sorted({round(i * (count - 1) / gaps) for i in range(gaps + 1)})


def funnel_bar(fraction: float | None) -> Markup:
    """A horizontal bar for a funnel step, its length the share of the signups (decorative:
    the number beside it says the same)."""
    share = 0.0 if fraction is None else max(0.0, min(fraction, 1.0))
    return Markup(f'<svg viewBox="0 0 100 6" preserveAspectRatio="none" aria-hidden="true" focusable="false" '
                  f'class="funnel-bar"><rect width="100" height="6" fill="{GRID}"/>'
                  f'<rect width="{share * 100:.2f}" height="6" fill="{COLOURS["brand"]}"/></svg>')
