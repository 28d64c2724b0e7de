"""Links from mails: confirm (GET shows a button, POST confirms), download, and a fresh link."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, send_file, url_for

from ..errors import InvalidLink
from ..extensions import csrf, limiter
from ..forms import NewLinkForm
from ..links import CONFIRM_PREFIX, DOWNLOAD_PREFIX
from ..tokens import CONFIRM, DOWNLOAD
from . import error_page, evidence, services, signup_limit

bp = Blueprint("links", __name__)


@bp.route(f"{CONFIRM_PREFIX}/<token>", methods=["GET", "HEAD"])
def confirm_page(token: str):
    """Changes nothing: mail scanners open links too. The button does the confirming."""
    svc = services()
    try:
        link = _confirm_link(token)
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
        link = _confirm_link(token)
        with svc.db.transaction() as session:
            lead = svc.funnel.confirm(session, link, evidence("confirm-button"), svc.clock.now())
    except InvalidLink as exc:
        return invalid_link(exc)
    magnet = svc.content.magnets[link.magnet]
    download_url = svc.links.download(lead.id, magnet.slug, lead.email)
    return render_template("confirmed.html", magnet=magnet, lead=lead, download_url=download_url)


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
    return redirect(url_for("public.thanks", slug=magnet.slug), code=303)


def invalid_link(exc: InvalidLink):
    """A friendly page that offers a fresh link; the same for every kind of bad token."""
    svc = services()
    magnet = svc.content.magnets.get(exc.magnet or "") or svc.content.default_magnet
    return render_template("invalid_link.html", magnet=magnet, form=NewLinkForm(formdata=None),
                           reason=exc.reason), 410 if exc.reason == "expired" else 400


def _confirm_link(token: str):
    svc = services()
    link = svc.signer.read_lead_link(CONFIRM, token)
    _magnet_of(link)
    return link.check_age(svc.clock.now(), svc.settings.confirm_max_age_days * 86400)


def _magnet_of(link):
    magnet = services().content.magnets.get(link.magnet)
    if magnet is None:  # the operator removed this magnet since the link was sent
        raise InvalidLink("unknown magnet")
    return magnet
