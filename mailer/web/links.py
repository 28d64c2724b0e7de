"""Links from mails: confirm (GET shows a button, POST confirms), download, a fresh link,
unsubscribe (GET shows a button; POST, including RFC 8058 one-click, unsubscribes), a
newsletter's unsubscribe (GET offers "only the newsletter" and "all mail"; POST acts on the
choice, and one-click ends the newsletter alone), and the click redirect of drip mails."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, send_file, url_for
from sqlalchemy.exc import InterfaceError, OperationalError

from mailer.errors import InvalidLink
from mailer.funnel.actions import click_target
from mailer.funnel.links import (CLICK_PREFIX, CONFIRM_PREFIX, CONSENT_PREFIX, DOWNLOAD_PREFIX,
                                 NEWSLETTER_UNSUBSCRIBE_PREFIX, UNSUBSCRIBE_PREFIX)
from mailer.funnel.tokens import CONFIRM, CONSENT, DOWNLOAD, NEWSLETTER_UNSUBSCRIBE, UNSUBSCRIBE
from mailer.web.common import error_page, evidence, services, signup_limit
from mailer.web.extensions import csrf, limiter
from mailer.web.forms import NewLinkForm

bp = Blueprint("links", __name__)


@bp.route(f"{CONFIRM_PREFIX}/<token>", methods=["GET", "HEAD"])
def confirm_page(token: str):
    """Changes nothing: mail scanners open links too. The button does the confirming."""
    svc = services()
    try:
        link = _lead_link(CONFIRM, token)
        with svc.db.read_only() as session:
            lead = svc.funnel.lead_for(session, link)
    except InvalidLink as exc:
        return invalid_link(exc)
    return render_template("confirm.html", magnet=svc.content.magnets[link.magnet], lead=lead)


@bp.post(f"{CONFIRM_PREFIX}/<token>")
@csrf.exempt  # the signed token is the credential; the page may be opened in another browser
def confirm(token: str):
    svc = services()
    try:
        link = _lead_link(CONFIRM, token)
        with svc.db.transaction() as session:
            lead = svc.funnel.confirm(session, link, evidence("confirm-button"), svc.clock.now())
    except InvalidLink as exc:
        return invalid_link(exc)
    magnet = svc.content.magnets[link.magnet]
    download_url = svc.links.download(lead.id, magnet.slug, lead.email)
    return render_template("confirmed.html", magnet=magnet, lead=lead, download_url=download_url)


@bp.route(f"{CONSENT_PREFIX}/<token>", methods=["GET", "HEAD"])
def consent_page(token: str):
    """Changes nothing (mail scanners open links); the button gives the consent."""
    svc = services()
    try:
        link = _lead_link(CONSENT, token)
        with svc.db.read_only() as session:
            lead = svc.funnel.lead_for(session, link)
    except InvalidLink as exc:
        return invalid_link(exc)
    return render_template("consent.html", lead=lead)


@bp.post(f"{CONSENT_PREFIX}/<token>")
@csrf.exempt  # the signed token is the credential, as for the confirmation
def consent(token: str):
    svc = services()
    try:
        link = _lead_link(CONSENT, token)
        with svc.db.transaction() as session:
            lead = svc.funnel.confirm_consent(session, link, evidence("consent-button"), svc.clock.now())
    except InvalidLink as exc:
        return invalid_link(exc)
    return render_template("consent_confirmed.html", lead=lead)


@bp.get(f"{DOWNLOAD_PREFIX}/<token>")
def download(token: str):
    svc = services()
    try:
        link = svc.signer.read_lead_link(DOWNLOAD, token)
        magnet = _magnet_of(link)
        link.check_age(svc.clock.now(), magnet.link_max_age_seconds)
        if request.method == "GET":  # a HEAD (a link checker, a mail scanner) is no download
            with svc.db.transaction() as session:
                svc.funnel.record_download(session, link, svc.clock.now())
    except InvalidLink as exc:
        return invalid_link(exc)
    try:
        return send_file(magnet.file, mimetype="application/pdf", as_attachment=True,
                         download_name=magnet.download_name, max_age=0)
    except OSError:  # the operator moved the PDF away while we run
        current_app.logger.error("lead magnet %s: cannot read %s", magnet.slug, magnet.file)
        return error_page(503)


@bp.post("/gids/<slug>/nieuwe-link")
@limiter.limit(signup_limit, scope="signup")
def new_link(slug: str):
    svc = services()
    magnet = svc.content.magnets.get(slug) or svc.content.default_magnet
    form = NewLinkForm()
    if not form.validate_on_submit():
        return render_template("invalid_link.html", magnet=magnet, form=form, reason="form"), 400
    with svc.db.transaction() as session:
        svc.funnel.request_link(session, magnet.slug, form.email.normalised, svc.clock.now())
    return redirect(url_for("public.link_sent", slug=magnet.slug), code=303)  # its own answer text


@bp.route(f"{UNSUBSCRIBE_PREFIX}/<token>", methods=["GET", "HEAD"])
def unsubscribe_page(token: str):
    """Changes nothing (mail scanners open links); the button unsubscribes."""
    try:
        _unsubscribe_link(token)
    except InvalidLink:
        return _bad_unsubscribe_link()
    return render_template("unsubscribe.html")


@bp.post(f"{UNSUBSCRIBE_PREFIX}/<token>")
@csrf.exempt  # RFC 8058: a mail client posts "List-Unsubscribe=One-Click" with no cookie or form token
def unsubscribe(token: str):
    """The button and the one-click POST alike: 200 with a page, never a redirect (a mail
    client does not follow one); repeating it is harmless."""
    svc = services()
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    try:
        link = _unsubscribe_link(token)
        with svc.db.transaction() as session:
            svc.funnel.unsubscribe(session, link, evidence("one-click" if one_click else "unsubscribe-page"),
                                   svc.clock.now())
    except InvalidLink as exc:
        if exc.reason != "unknown":
            return _bad_unsubscribe_link()
        # A genuine link whose lead is gone (erased): there is nothing left to send them.
    return render_template("unsubscribed.html")


@bp.route(f"{NEWSLETTER_UNSUBSCRIBE_PREFIX}/<token>", methods=["GET", "HEAD"])
def newsletter_unsubscribe_page(token: str):
    """Changes nothing (mail scanners open links); the page offers the two choices."""
    try:
        _newsletter_unsubscribe_link(token)
    except InvalidLink:
        return _bad_unsubscribe_link()
    return render_template("unsubscribe_newsletter.html")


@bp.post(f"{NEWSLETTER_UNSUBSCRIBE_PREFIX}/<token>")
@csrf.exempt  # RFC 8058, as for the unsubscribe link of drip mail
def newsletter_unsubscribe(token: str):
    """keuze=alles ends all marketing mail, as the drip mail's link does; anything else (the
    button "Alleen de nieuwsbrief", a one-click POST) ends the newsletter alone. 200 with a
    page, never a redirect; repeating it is harmless."""
    svc = services()
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    everything = not one_click and request.form.get("keuze") == "alles"
    gets_marketing = True
    try:
        link = _newsletter_unsubscribe_link(token)
        with svc.db.transaction() as session:
            if everything:
                svc.funnel.unsubscribe(session, link, evidence("newsletter-page"), svc.clock.now())
            else:
                lead = svc.funnel.end_newsletter(session, link, evidence("one-click" if one_click else "newsletter-page"),
                                                 svc.clock.now())
                gets_marketing = lead.marketing_consent
    except InvalidLink as exc:
        if exc.reason != "unknown":
            return _bad_unsubscribe_link()
        # A genuine link whose lead is gone (erased): there is nothing left to send them.
    # A lead unsubscribed from everything before stays so, and the page says that.
    return render_template("newsletter_ended.html" if gets_marketing and not everything else "unsubscribed.html")


@bp.route(f"{CLICK_PREFIX}/<token>", methods=["GET", "HEAD"])
def click(token: str):
    """Count the click and go on to the link's address from the content (never from the
    request). A HEAD (a scanner checking the link) is not counted."""
    svc = services()
    try:
        clicked = svc.signer.read_click_link(token)
    except InvalidLink:
        return error_page(404)
    target = None
    try:
        if request.method == "HEAD":
            with svc.db.read_only() as session:
                target = click_target(session, svc.content, clicked)
        else:
            with svc.db.transaction() as session:
                target = click_target(session, svc.content, clicked)
                svc.funnel.record_click(session, clicked, svc.clock.now())
    except (OperationalError, InterfaceError):  # the visitor still gets where they were going
        current_app.logger.warning("click on %s/%s not recorded: database unavailable",
                                   clicked.sequence, clicked.step)
        target = click_target(None, svc.content, clicked)
    # A link since removed from the content still leads somewhere: the organisation's site.
    return redirect(target or svc.content.organisation.website, code=302)


def invalid_link(exc: InvalidLink):
    """A friendly page that offers a fresh link; the same for every kind of bad token."""
    svc = services()
    magnet = svc.content.magnets.get(exc.magnet or "") or svc.content.default_magnet
    return render_template("invalid_link.html", magnet=magnet, form=NewLinkForm(formdata=None),
                           reason=exc.reason), 410 if exc.reason == "expired" else 400


def _unsubscribe_link(token: str):
    """No maximum age: unsubscribing keeps working for as long as the mail exists."""
    return services().signer.read_lead_link(UNSUBSCRIBE, token)


def _newsletter_unsubscribe_link(token: str):
    """No maximum age either."""
    return services().signer.read_lead_link(NEWSLETTER_UNSUBSCRIBE, token)


def _bad_unsubscribe_link():
    org = services().content.organisation
    return render_template(
        "error.html", title="Deze afmeldlink werkt niet",
        text=f"De link is niet compleet of klopt niet. Kopieer de hele link uit de e-mail, of mail "
             f"{org.privacy_contact}; dan melden we je af.",
    ), 400


def _lead_link(purpose: str, token: str):
    """A confirm or consent link: genuine, for a magnet that still exists, and not older than
    MAILER_CONFIRM_MAX_AGE_DAYS."""
    svc = services()
    link = svc.signer.read_lead_link(purpose, token)
    _magnet_of(link)
    return link.check_age(svc.clock.now(), svc.settings.confirm_max_age_days * 86400)


def _magnet_of(link):
    magnet = services().content.magnets.get(link.magnet)
    if magnet is None:  # the operator removed this magnet since the link was sent
        raise InvalidLink("unknown magnet")
    return magnet
