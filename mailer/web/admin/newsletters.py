"""/beheer/nieuwsbrieven: every newsletter of the content with its campaigns; a newsletter's page
with its audience (narrowed as `mailer newsletter audience` does), a preview at desktop and phone
width (sandboxed frames), a test send, scheduling (with an optional subject test), pause, resume,
cancel, and the figures per campaign and per subject variant."""

from __future__ import annotations

from datetime import datetime

from flask import flash, redirect, render_template, request, url_for

from mailer.errors import (
    DeliveryError,
    InvalidRequest,
    MailerError,
    Refused,
    RefusedRequest,
)
from mailer.web.admin import bp, common, forms

# mailer.operator.campaigns and .newsletters load the mail side (rendering, the composer): each
# view imports them when it runs, so the web app and a signup do not (tests/unit/
# test_request_side_imports.py).

NO_NEWSLETTER = ("Nieuwsbrief niet gevonden", ("Deze nieuwsbrief staat niet (meer) in de inhoudsbestanden "
                                               "(map newsletters/)."))
# A campaign's status (store/tables.CampaignStatus) as the dashboard names it, and its badge.
STATUS = {
    "scheduled": ("gepland", ""),
    "sending": ("wordt verstuurd", "warn"),
    "testing": ("onderwerptest loopt", "warn"),
    "paused": ("gepauzeerd", "warn"),
    "done": ("alles in de wachtrij", "ok"),
    "cancelled": ("geannuleerd", "bad"),
}
# The operator layer's refusals by their code (mailer.errors.Refused and RefusedRequest: the
# message is English, for the command line), as the dashboard says them. Anything else: GENERIC,
# and the reason as given.
REFUSALS = {
    "untested-b-subject": ("Er is nog geen testmail verstuurd met dit B-onderwerp. Stuur eerst een testmail met dat "
                           "onderwerp, of vink ‘Inplannen zonder testmail’ aan."),
    "untested": ("Er is nog geen testmail verstuurd van precies deze inhoud (na de laatste wijziging). Stuur eerst "
                 "een testmail, of vink ‘Inplannen zonder testmail’ aan."),
    "live-campaign": ("Deze nieuwsbrief heeft al een campagne die gepland is of loopt. Annuleer die eerst als je "
                      "opnieuw wilt inplannen."),
    "no-campaign": "Deze nieuwsbrief heeft geen campagne om te pauzeren, hervatten of annuleren.",
    "not-paused": "De campagne is niet gepauzeerd, dus er is niets om te hervatten.",
    "ab-subject-empty": "Het B-onderwerp is leeg.",
    "ab-share": ("Het deel van het publiek voor de onderwerptest moet een heel getal van 2 tot en met 100 (procent) "
                 "zijn."),
    "ab-hours": "De onderwerptest moet langer dan 0 en hooguit {hours} uur duren.",
    "ab-without-subject": "Deel en duur horen bij een onderwerptest: vul ook een B-onderwerp in.",
    "bad-address": "Dit is geen geldig e-mailadres. Er is niets verstuurd.",
}
GENERIC = "Dat lukte niet; er is niets veranderd. De reden (in het Engels):"


def _zone():
    return common.services().settings.drip_window.zone


def _refused(exc: MailerError) -> None:
    from mailer.operator.campaigns import AB_HOURS_MAX

    dutch = REFUSALS.get(exc.code) if isinstance(exc, (Refused, RefusedRequest)) else None
    if dutch is not None:
        flash(dutch.format(hours=AB_HOURS_MAX), "error")
        return
    flash(GENERIC, "error")
    flash(str(exc), "reden")


def relay_answer(exc: DeliveryError) -> str:
    """What the relay said, for the "reden" line: its code and text, or that it did not answer."""
    return f"{exc.code}: {exc.text}" if exc.code else f"geen antwoord: {exc.text}"


def _back(slug: str):
    return redirect(url_for("admin.newsletter", slug=slug))


def _missing(exc: MailerError) -> bool:
    return isinstance(exc, RefusedRequest) and exc.code == "unknown-newsletter"


# --- reading ---------------------------------------------------------------------------------

@bp.get("/nieuwsbrieven")
def newsletters():
    from mailer.operator import campaigns

    services = common.services()
    index = campaigns.newsletter_index(services.db, services.content, zone=_zone())
    return render_template("beheer/newsletters.html", index=index, status=STATUS)


def _audience_filters(args, content) -> tuple[dict, list[str]]:
    """The narrowing filters of the audience form (the options of `mailer newsletter audience`),
    and what was wrong with any of them (those are left out)."""
    given: dict = {}
    problems: list[str] = []
    magnets = [m for m in args.getlist("gids") if m]
    if any(m not in content.magnets for m in magnets):
        problems.append("Onbekende gids in het filter; die is weggelaten.")
    given["magnets"] = tuple(m for m in magnets if m in content.magnets)
    for field, name, label in (("na", "signed_up_after", "Aangemeld op of na"),
                               ("voor", "signed_up_before", "Aangemeld vóór")):
        raw = args.get(field, "").strip()
        if raw:
            try:
                given[name] = forms.day(raw)
            except ValueError:
                problems.append(f"{label}: ‘{raw}’ is geen geldige datum (gebruik jjjj-mm-dd).")
    downloaded = args.get("gedownload", "")
    given["downloaded"] = {"ja": True, "nee": False}.get(downloaded)
    links = content.organisation.links
    for field, name in (("geklikt", "clicked"), ("niet_geklikt", "not_clicked")):
        chosen = [link for link in args.getlist(field) if link]
        if any(link not in links for link in chosen):
            problems.append("Onbekende link in het filter; die is weggelaten.")
        given[name] = tuple(link for link in chosen if link in links)
    given["sequence"] = {"in": "in", "klaar": "finished"}.get(args.get("reeks", ""))
    return given, problems


@bp.get("/nieuwsbrieven/<slug>")
def newsletter(slug: str):
    from mailer.operator import campaigns

    services = common.services()
    given, problems = _audience_filters(request.args, services.content)
    try:
        found = campaigns.newsletter_detail(services.db, services.content, slug, zone=_zone(), **given)
    except InvalidRequest as exc:  # unknown newsletter, or a filter the content does not know
        if _missing(exc):
            return common.error_page(404, *NO_NEWSLETTER)
        problems.append("Deze filters passen niet bij de inhoud; het publiek is zonder je filters geteld.")
        given = {}
        found = campaigns.newsletter_detail(services.db, services.content, slug, zone=_zone())
    return render_template("beheer/newsletter.html", found=found, status=STATUS, form=request.args,
                           problems=problems, content=services.content,
                           narrowed=any(value not in (None, ()) for value in given.values()),
                           ab_defaults=(campaigns.AB_SHARE_DEFAULT, campaigns.AB_HOURS_DEFAULT)), \
        400 if problems else 200


@bp.get("/nieuwsbrieven/<slug>/voorbeeld")
def newsletter_preview(slug: str):
    """The rendered newsletter alone, for the sandboxed frames of its page (its own CSP)."""
    from mailer.operator import newsletters as letters

    services = common.services()
    try:
        mail = letters.render(services.db, services.renderer, services.content, slug)
    except InvalidRequest:
        return common.error_page(404, *NO_NEWSLETTER)
    return mail.html


# --- acting ----------------------------------------------------------------------------------

@bp.post("/nieuwsbrieven/<slug>/test")
@common.requires("newsletter.test")
def newsletter_test(slug: str):
    from mailer.operator import newsletters as letters

    services = common.services()
    to = request.form.get("to", "").strip()
    subject = request.form.get("ab_subject", "").strip() or None
    target = f"newsletter {slug}"
    try:
        sent = letters.send_test(services.db, services.composer, services.transport(), services.content, slug,
                                 to, now=common.now(), subject=subject)
    except DeliveryError as exc:
        common.act("newsletter.test", target, f"relay refused it ({exc.code or 'no reply'})", "failed")
        flash("De testmail is niet verstuurd: de mailserver weigerde hem. Probeer het later opnieuw.", "error")
        flash(f"Antwoord van de mailserver: {relay_answer(exc)}", "reden")
        return _back(slug)
    except MailerError as exc:
        if _missing(exc):
            return common.error_page(404, *NO_NEWSLETTER)
        common.act("newsletter.test", target, failed_test(exc, to), "failed")
        _refused(exc)
        return _back(slug)
    code, _text = sent.reply
    common.act("newsletter.test", f"newsletter {slug}",
               f"test to {masked(sent.address)}" + (f", B subject {subject!r}" if subject else "")
               + f", relay answered {code}")
    flash(f"De testmail is verstuurd naar {sent.address}"
          + (" met het B-onderwerp." if subject else ".") + " Je kunt deze inhoud nu inplannen.", "info")
    return _back(slug)


def failed_test(exc: MailerError, to: str) -> str:
    """The audit row's detail for a test send that failed before the relay: why (the operator
    layer's English), with the address typed masked as everywhere in the audit log."""
    reason = "not a valid address" if isinstance(exc, RefusedRequest) and exc.code == "bad-address" else str(exc)
    return "not sent: " + (reason.replace(to, masked(to)) if to else reason)


def masked(address: str) -> str:
    """The audit log keeps where a test went without the whole address (it may be a lead's)."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}…@{domain}"


def _start_time(raw: str) -> datetime | None:
    """A datetime-local value (the send window's zone, Europe/Amsterdam) as UTC; None when empty.
    ValueError when it is no date and time, or outside the calendar forms.moment keeps."""
    return forms.moment(raw, _zone())


def _number(raw: str, kind):
    raw = raw.strip().replace(",", ".")
    return kind(raw) if raw else None


@bp.post("/nieuwsbrieven/<slug>/plannen")
@common.requires("newsletter.schedule")
def newsletter_schedule(slug: str):
    from mailer.operator import campaigns

    services = common.services()
    form = request.form
    try:
        start_at = _start_time(form.get("start", ""))
    except ValueError:
        flash("De starttijd is geen geldige datum en tijd. Er is niets ingepland.", "error")
        return _back(slug)
    try:
        share, hours = _number(form.get("ab_share", ""), int), _number(form.get("ab_hours", ""), float)
    except ValueError:
        flash("Het deel (procent) en de duur (uren) van de onderwerptest moeten getallen zijn. Er is niets "
              "ingepland.", "error")
        return _back(slug)
    no_test = form.get("no_test") == "1"
    try:
        ab = campaigns.SubjectTest.from_options(form.get("ab_subject", "").strip() or None, share, hours)
        view = campaigns.schedule(services.db, services.content, slug, now=common.now(), start_at=start_at,
                                  no_test=no_test, ab=ab)
    except MailerError as exc:
        if _missing(exc):
            return common.error_page(404, *NO_NEWSLETTER)
        _refused(exc)
        return _back(slug)
    common.act("newsletter.schedule", f"newsletter {slug}",
               f"campaign {view.id}, start {view.start_at.isoformat()}, content {view.content_hash[:12]}"
               + (", without a test send" if no_test else "")
               + (f", subject test {ab.share} % for {ab.hours:g} h" if ab else ""))
    flash(f"De nieuwsbrief is ingepland voor {common.nldatetime(view.start_at)}"
          + (f", met een onderwerptest onder {ab.share}% van het publiek" if ab else "") + ".", "info")
    return _back(slug)


CHANGES = {  # action (a function of operator/campaigns) -> what the flash says happened to the waiting mail
    "pause": "De campagne is gepauzeerd; {n} wachtende mail(s) worden vastgehouden.",
    "resume": "De campagne gaat verder; {n} vastgehouden mail(s) gaan weer weg.",
    "cancel": "De campagne is geannuleerd; {n} wachtende mail(s) gaan niet meer weg. Verstuurde mail blijft verstuurd.",
}


def _change(slug: str, action: str):
    from mailer.operator import campaigns

    change, said = getattr(campaigns, action), CHANGES[action]
    try:
        view = change(common.services().db, slug, now=common.now())
    except MailerError as exc:
        _refused(exc)
        return _back(slug)
    common.act(f"newsletter.{action}", f"newsletter {slug}",
               f"campaign {view.id}, now {view.status}, {view.changed_rows} waiting mail(s)")
    flash(said.format(n=common.nlnumber(view.changed_rows)), "info")
    return _back(slug)


@bp.post("/nieuwsbrieven/<slug>/pauzeren")
@common.requires("newsletter.pause")
def newsletter_pause(slug: str):
    return _change(slug, "pause")


@bp.post("/nieuwsbrieven/<slug>/hervatten")
@common.requires("newsletter.resume")
def newsletter_resume(slug: str):
    return _change(slug, "resume")


@bp.post("/nieuwsbrieven/<slug>/annuleren")
@common.requires("newsletter.cancel")
def newsletter_cancel(slug: str):
    return _change(slug, "cancel")
