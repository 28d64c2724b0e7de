"""/beheer/leads: the list of leads (search, `mailer export`'s filters, keyset pages, the CSV
download for owners) and a lead's page (what `mailer lead show` shows) with its actions:
unsubscribe, resend the guide, the JSON export and erasure. Leads are named by id in URLs and
in the audit log, never by address."""

from __future__ import annotations

import json
from datetime import date, datetime

from flask import Response, flash, redirect, render_template, request, url_for

from mailer.operator import export, people
from mailer.operator import leads as listing
from mailer.operator.figures import UnknownMagnet
from mailer.store.tables import LeadStatus
from mailer.web.admin import bp, common, forms

STATUSES = {LeadStatus.PENDING: "wacht op bevestiging", LeadStatus.CONFIRMED: "bevestigd",
            LeadStatus.UNSUBSCRIBED: "afgemeld", LeadStatus.UNDELIVERABLE: "onbestelbaar"}
BADGES = {LeadStatus.PENDING: "warn", LeadStatus.CONFIRMED: "ok", LeadStatus.UNSUBSCRIBED: "",
          LeadStatus.UNDELIVERABLE: "bad"}
CONSENT = {"": None, "ja": True, "nee": False}
VIA = {"phone": "telefoon", "mail": "e-mail", "letter": "brief", "other": "anders"}
FIELDS = ("q", "status", "magneet", "toestemming", "vanaf", "tot")  # the list's query parameters
MAX_SEARCH = 320  # an address is at most this long
RESEND = {
    "queued": ("De gids staat klaar en gaat zo opnieuw naar deze lead.", "info"),
    "daily-limit": ("Deze lead kreeg de afgelopen 24 uur al het maximum aantal gidsen. Er is niets verstuurd.",
                    "error"),
    LeadStatus.PENDING: ("Deze lead heeft het adres nog niet bevestigd: de gids gaat pas na de bevestiging. Er is "
                         + "niets verstuurd.", "error"),
    LeadStatus.UNSUBSCRIBED: ("Deze lead heeft zich afgemeld. We sturen de gids niet opnieuw; er is niets verstuurd.",
                              "error"),
    LeadStatus.UNDELIVERABLE: ("Dit adres is onbestelbaar: de ontvangende server weigert het. Er is niets verstuurd.",
                               "error"),
}
GONE = ("Lead niet gevonden",
        "Deze lead bestaat niet (meer). Misschien is hij gewist, of nooit bevestigd en daarna opgeruimd.")


class BadInput(ValueError):
    """A filter the list cannot use; the message says so in Dutch."""


def _typed(given=None) -> dict[str, str]:
    """The list's parameters as typed (the query string; the download's form), for the form and the links."""
    given = request.args if given is None else given
    typed = {name: (given.get(name) or "").strip() for name in FIELDS}
    # Names and addresses are stored without control characters (and PostgreSQL refuses a NUL).
    typed["q"] = "".join(c for c in typed["q"] if c.isprintable())[:MAX_SEARCH]
    return typed


def _filters(typed: dict[str, str]) -> export.Filters:
    """The list's filters: `mailer export`'s, with its UTC days (as every page of the dashboard)."""
    if typed["status"] and typed["status"] not in STATUSES:
        raise BadInput("Kies een status uit de lijst.")
    if typed["toestemming"] not in CONSENT:
        raise BadInput("Kies bij toestemming: alle, ja of nee.")
    since, until = _day(typed["vanaf"], "vanaf"), _day(typed["tot"], "tot en met")
    if since and until and until < since:
        raise BadInput("De datum 'tot en met' ligt voor de datum 'vanaf'.")
    return export.Filters.for_days((typed["status"],) if typed["status"] else (), typed["magneet"] or None,
                                   CONSENT[typed["toestemming"]], since, until, search=typed["q"])


def _day(value: str, name: str) -> date | None:
    try:
        return forms.day(value)
    except ValueError:
        raise BadInput(f"De datum bij '{name}' is geen geldige datum (jjjj-mm-dd).") from None


def _cursor(name: str) -> int | None:
    """A page's cursor (a lead id); anything else is no cursor (the first page)."""
    value = request.args.get(name, type=int)
    return value if value is not None and 0 <= value <= people.MAX_ID else None


def _unknown_magnet(slug: str) -> str:
    return f"Er is geen gids met de naam '{slug}'. Kies een gids uit de lijst."


@bp.get("/leads")
def leads():
    content = common.services().content
    error, found = None, None
    typed = _typed()
    try:
        found = listing.page(common.services().db, content, _filters(typed), before=_cursor("voor"),
                             after=_cursor("na"))
    except BadInput as bad:
        error = str(bad)
    except UnknownMagnet:
        error = _unknown_magnet(typed["magneet"])
    query = {name: value for name, value in typed.items() if value}
    return render_template("beheer/leads.html", page=found, typed=typed, query=query, error=error,
                           magnets=content.magnets, statuses=STATUSES, badges=BADGES,
                           counted_up_to=listing.COUNTED_UP_TO), 400 if error else 200


@bp.post("/leads.csv")
@common.requires("leads.export")
def leads_csv():
    """The filtered list as `mailer export` writes it, streamed; owners only. A POST with the
    CSRF token, so that another site cannot start an owner's export (a GET could be)."""
    typed = _typed(request.form)
    back = {name: value for name, value in typed.items() if value}
    fmt = export.Format(excel=request.form.get("excel") == "1")
    try:
        blocks = export.stream_leads(common.services().db, common.services().content, _filters(typed), fmt)
    except BadInput as bad:
        flash(str(bad), "error")
        return redirect(url_for("admin.leads", **back))
    except UnknownMagnet:
        flash(_unknown_magnet(back.get("magneet", "")), "error")
        return redirect(url_for("admin.leads", **back))
    # The search text may be an address: the audit log names no one, so it says only that there was one.
    detail = " ".join([f"{name}={value}" for name, value in typed.items() if value and name != "q"]
                      + (["search term (not logged)"] if typed["q"] else []) + (["excel"] if fmt.excel else []))
    common.act("leads.export", target="leads", detail=detail or "all leads")
    name = f"leads-{common.now():%Y-%m-%d}.csv"
    return Response(blocks, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.app_template_filter("nliso")
def nliso(moment: str | None) -> str:
    """A time as a lead's record writes it (ISO 8601 in UTC) as the Dutch read it."""
    return common.nldatetime(datetime.fromisoformat(moment)) if moment else "-"


@bp.get("/leads/<int:lead_id>")
def lead(lead_id: int):
    try:
        record = people.record_by_id(common.services().db, lead_id)
    except people.UnknownLeadId:
        return common.error_page(404, *GONE)
    return render_template("beheer/lead.html", lead_id=lead_id, lead=record, statuses=STATUSES, badges=BADGES,
                           via=VIA, magnets=common.services().content.magnets)


def _back(lead_id: int):
    return redirect(url_for("admin.lead", lead_id=lead_id))


@bp.post("/leads/<int:lead_id>/afmelden")
@common.requires("lead.unsubscribe")
def lead_unsubscribe(lead_id: int):
    via = request.form.get("via", "other")
    if via not in VIA:
        flash("Kies hoe de afmelding binnenkwam.", "error")
        return _back(lead_id)
    services = common.services()
    try:
        changed = people.unsubscribe_lead(services.db, services.funnel, lead_id, via, common.now())
    except people.UnknownLeadId:
        return common.error_page(404, *GONE)
    common.act("lead.unsubscribe", target=f"lead {lead_id}",
               detail=f"via {via}" if changed else f"via {via}; was unsubscribed already, nothing changed")
    flash("De lead is afgemeld en krijgt geen marketingmail meer." if changed
          else "Deze lead was al afgemeld; er is niets veranderd.", "info")
    return _back(lead_id)


@bp.post("/leads/<int:lead_id>/gids")
@common.requires("lead.resend")
def lead_resend(lead_id: int):
    services = common.services()
    try:
        outcome = people.resend_guide(services.db, services.funnel, lead_id, common.now())
    except people.UnknownLeadId:
        return common.error_page(404, *GONE)
    common.act("lead.resend", target=f"lead {lead_id}", detail=outcome,
               outcome="done" if outcome == "queued" else "refused")
    flash(*RESEND[outcome])
    return _back(lead_id)


@bp.post("/leads/<int:lead_id>/export")
@common.requires("lead.export")
def lead_export(lead_id: int):
    """Everything held about the lead, as `mailer lead export` writes it, as a download."""
    try:
        record = people.record_by_id(common.services().db, lead_id)
    except people.UnknownLeadId:
        return common.error_page(404, *GONE)
    common.act("lead.export", target=f"lead {lead_id}")
    return Response(json.dumps(record, indent=2, ensure_ascii=False) + "\n", mimetype="application/json",
                    headers={"Content-Disposition": f'attachment; filename="lead-{lead_id}.json"'})


@bp.post("/leads/<int:lead_id>/wissen")
@common.requires("lead.erase")
def lead_erase(lead_id: int):
    services = common.services()
    target = f"lead {lead_id}"
    try:
        removed = people.erase_lead(services.db, services.transport(), lead_id, request.form.get("email", ""),
                                    services.settings.secret_keys[0], common.now())
    except people.UnknownLeadId:
        return common.error_page(404, *GONE)
    except people.AddressMismatch:
        common.act("lead.erase", target=target, detail="the address typed did not match", outcome="failed")
        flash("Het adres dat je typte is niet het adres van deze lead. Er is niets gewist.", "error")
        return _back(lead_id)
    except people.BeingSent:
        common.act("lead.erase", target=target, detail="a mail to the lead was being sent", outcome="failed")
        flash("Er gaat op dit moment een mail naar deze lead. Er is niets gewist; probeer het over een minuut "
              "opnieuw.", "error")
        return _back(lead_id)
    common.act("lead.erase", target=target, detail=f"erased; {removed} kept copies of its mail removed")
    flash(f"Lead {lead_id} is gewist: alles wat we over deze persoon bewaarden is weg. De cijfers tellen hem "
          "nog mee, zonder naam of adres.", "info")
    return redirect(url_for("admin.leads"))
