"""/beheer/nieuwsbrieven: every newsletter of the content with its campaigns; a newsletter's page
with its audience (narrowed as `mailer newsletter audience` does), a preview at desktop and phone
width (sandboxed frames), a test send, scheduling (with an optional subject test), pause, resume,
cancel, and the figures per campaign and per subject variant."""

from __future__ import annotations

from datetime import UTC, date, datetime

from flask import flash, redirect, render_template, request, url_for

from mailer.errors import DeliveryError, InvalidRequest, MailerError
from mailer.web.admin import bp, common

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
# The operator layer's refusals (English, for the command line), as the dashboard says them:
# (a piece of the message, the Dutch sentence). Anything else: GENERIC and the reason as given.
REFUSALS = (
    ("no test was sent of the B subject", ("Er is nog geen testmail verstuurd met dit B-onderwerp. Stuur eerst een "
                                           "testmail met dat onderwerp, of vink ‘Inplannen zonder testmail’ aan.")),
    ("no test was sent of this content", ("Er is nog geen testmail verstuurd van precies deze inhoud (na de laatste "
                                          "wijziging). Stuur eerst een testmail, of vink ‘Inplannen zonder testmail’ "
                                          "aan.")),
    ("has a campaign already", ("Deze nieuwsbrief heeft al een campagne die gepland is of loopt. Annuleer die eerst "
                                "als je opnieuw wilt inplannen.")),
    ("has no campaign", "Deze nieuwsbrief heeft geen campagne om te pauzeren, hervatten of annuleren."),
    ("not paused", "De campagne is niet gepauzeerd, dus er is niets om te hervatten."),
    ("B subject is empty", "Het B-onderwerp is leeg."),
    ("the subject is empty", "Het B-onderwerp is leeg."),
    ("is not a share from 2 to 100", ("Het deel van het publiek voor de onderwerptest moet een heel getal van 2 "
                                      "tot en met 100 (procent) zijn.")),
    ("is not a number of hours", "De onderwerptest moet langer dan 0 en hooguit {hours} uur duren."),
    ("belong to a subject test", "Deel en duur horen bij een onderwerptest: vul ook een B-onderwerp in."),
)
GENERIC = "Dat lukte niet; er is niets veranderd. De reden (in het Engels):"


def _zone():
    return common.services().settings.drip_window.zone


def _refused(exc: MailerError) -> None:
    from mailer.operator.campaigns import AB_HOURS_MAX

    text = str(exc)
    for piece, dutch in REFUSALS:
        if piece in text:
            flash(dutch.format(hours=AB_HOURS_MAX), "error")
            return
    flash(GENERIC, "error")
    flash(text, "reden")


def _back(slug: str):
    return redirect(url_for("admin.newsletter", slug=slug))


def _missing(exc: InvalidRequest) -> bool:
    return exc.option == "SLUG" and "is not a newsletter" in str(exc)


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
    for field, name, label in (("na", "signed_up_after", "Aangemeld vanaf"), ("voor", "signed_up_before",
                                                                              "Aangemeld vóór")):
        raw = args.get(field, "").strip()
        if raw:
            try:
                given[name] = date.fromisoformat(raw)
            except ValueError:
                problems.append(f"{label}: ‘{raw}’ is geen datum (gebruik dd-mm-jjjj).")
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
    except InvalidRequest as exc:
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
    try:
        sent = letters.send_test(services.db, services.composer, services.transport(), services.content, slug,
                                     to, now=common.now(), subject=subject)
    except DeliveryError as exc:
        common.act("newsletter.test", f"newsletter {slug}", f"relay refused it ({exc.code or 'no reply'})", "failed")
        flash("De testmail is niet verstuurd: de mailserver weigerde hem. Probeer het later opnieuw.", "error")
        flash(f"Antwoord van de mailserver: {exc}", "reden")
        return _back(slug)
    except InvalidRequest as exc:
        if _missing(exc):
            return common.error_page(404, *NO_NEWSLETTER)
        if exc.option == "--to":
            flash("Dit is geen geldig e-mailadres. Er is niets verstuurd.", "error")
        else:
            _refused(exc)
        return _back(slug)
    except MailerError as exc:
        _refused(exc)
        return _back(slug)
    code, _text = sent.reply
    common.act("newsletter.test", f"newsletter {slug}",
               f"test to {masked(sent.address)}" + (f", B subject {subject!r}" if subject else "")
               + f", relay answered {code}")
    flash(f"De testmail is verstuurd naar {sent.address}"
          + (" met het B-onderwerp." if subject else ".") + " Je kunt deze inhoud nu inplannen.", "info")
    return _back(slug)


def masked(address: str) -> str:
    """The audit log keeps where a test went without the whole address (it may be a lead's)."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}…@{domain}"


def _start_time(raw: str) -> datetime | None:
    """A datetime-local value (the send window's zone, Europe/Amsterdam) as UTC; None when empty.
    ValueError when it is no date and time."""
    raw = raw.strip()
    if not raw:
        return None
    moment = datetime.fromisoformat(raw)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_zone())
    return moment.astimezone(UTC)


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
    except InvalidRequest as exc:
        if _missing(exc):
            return common.error_page(404, *NO_NEWSLETTER)
        _refused(exc)
        return _back(slug)
    except MailerError as exc:
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
