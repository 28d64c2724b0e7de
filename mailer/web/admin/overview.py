"""/beheer/: the overview. For one lead magnet (or all) and a period (the last 7, 30 or 90
days, or chosen dates; UTC days, inclusive): the funnel with its rates against the signups,
a chart per figure with its table, the outbox's state and the bounce warnings.

Each figure counts events on the day they happened (a UTC day, as `mailer stats` counts; the
page says so): signups by leads.created_at; confirmations by leads.confirmed_at; downloads by
downloads.at (each download); marketing consent by the day of a consent event of kind confirm
or import with marketing consent; unsubscribes by the day of the unsubscribe consent event;
bounces (hard plus soft) and complaints by bounce_reports.received_at, through the matched
lead's magnet when a magnet is chosen. Rates are against the period's signups. Finished days
are counted once and kept (operator/figures.py, "Stored days"), so the page costs the same on a
long list as on a short one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta, timezone

from flask import render_template, request

from mailer.operator import figures
from mailer.web.admin import bp, charts, common, forms

PERIODS = {"7": 7, "30": 30, "90": 90}
DEFAULT_PERIOD = "30"
CUSTOM = "eigen"

# metric, label (funnel line and chart title), unit in a chart's description, colour
SHOWN = (
    ("signups", "Aanmeldingen", "aanmeldingen", "brand"),
    ("confirmed", "Bevestigingen", "bevestigingen", "brand"),
    ("downloads", "Downloads", "downloads", "brand"),
    ("marketing", "Toestemming voor marketing", "toestemmingen", "brand"),
    ("unsubscribed", "Afmeldingen", "afmeldingen", "accent"),
    ("bounces", "Bounces (hard en zacht)", "bounces", "accent"),
    ("complaints", "Klachten (spam)", "klachten", "accent"),
)


@dataclass
class Choice:
    magnet: str = ""
    period: str = DEFAULT_PERIOD
    since: date | None = None
    until: date | None = None
    problems: list[str] = field(default_factory=list)


def _date(text: str) -> date | None:
    """A chosen day; None when it is missing, no date, or outside the calendar forms.day keeps."""
    try:
        return forms.day(text)
    except ValueError:
        return None


def _choose(args, magnets, today: date) -> Choice:
    """The magnet and period asked for; what cannot be used is named and replaced by the default."""
    choice = Choice(magnet=args.get("magneet", "").strip(), period=args.get("periode", DEFAULT_PERIOD))
    if choice.magnet and choice.magnet not in magnets:
        choice.problems.append("Deze gids bestaat niet; je ziet nu alle gidsen.")
        choice.magnet = ""
    if choice.period == CUSTOM:
        since, until = _date(args.get("van", "")), _date(args.get("tot", ""))
        if since is None or until is None:
            problem = "Vul een geldige begin- en einddatum in (bijvoorbeeld 2026-11-01)."
        elif until < since:
            problem = "De einddatum ligt voor de begindatum."
        elif (until - since).days >= figures.MAX_DAYS:
            problem = f"Kies een periode van hoogstens {figures.MAX_DAYS} dagen."
        else:
            choice.since, choice.until = since, until
            return choice
        choice.problems.append(problem + " Je ziet nu de laatste 30 dagen.")
        choice.period = DEFAULT_PERIOD
    elif choice.period not in PERIODS:
        choice.problems.append("Deze periode kennen we niet; je ziet nu de laatste 30 dagen.")
        choice.period = DEFAULT_PERIOD
    choice.until = today
    choice.since = today - timedelta(days=PERIODS[choice.period] - 1)
    return choice


@bp.get("/")
def overview():
    services = common.services()
    now = common.now()
    choice = _choose(request.args, services.content.magnets, now.astimezone(timezone.utc).date())
    found = figures.overview(services.db, services.content, magnet=choice.magnet or None, since=choice.since,
                             until=choice.until, now=now)
    daily = found.daily
    shown = [(metric, label, charts.bar_chart(f"grafiek-{metric}", label, unit, daily.days, daily.series[metric],
                                              colour))
             for metric, label, unit, colour in SHOWN]
    return render_template("beheer/overview.html", choice=choice, magnets=services.content.magnets,
                           periods=PERIODS, daily=daily, shown=shown, outbox=found.outbox,
                           warnings=found.warnings, funnel_bar=charts.funnel_bar, long_date=charts.long_date)
