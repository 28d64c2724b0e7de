"""The landing page, the embeddable form, what a visitor sees after submitting, and the
privacy statement."""

from __future__ import annotations

from datetime import timezone

from flask import Blueprint, abort, current_app, make_response, redirect, render_template, request, url_for

from mailer.errors import InvalidLink
from mailer.funnel.actions import Signup
from mailer.funnel.links import ARCHIVE_PREFIX
from mailer.operator import archive
from mailer.web.common import error_page, evidence, in_dashboard, services, signup_limit
from mailer.web.extensions import csrf, limiter
from mailer.web.forms import SignupForm

bp = Blueprint("public", __name__)

TOO_FAST = "Dat ging wel erg snel. Controleer je gegevens en klik nog een keer op de knop."
SESSION_EXPIRED = "Het formulier was verlopen. Controleer je gegevens en klik nog een keer op de knop."


def _magnet(slug: str):
    magnet = services().content.magnets.get(slug)
    if magnet is None:
        abort(404)
    return magnet


@bp.get("/")
def home():
    return _show_form(services().content.default_magnet, SignupForm(formdata=None), embed=False)


@bp.get("/gids/<slug>")
def landing(slug: str):
    return _show_form(_magnet(slug), SignupForm(formdata=None), embed=False)


@bp.get("/gids/<slug>/embed")
def embed(slug: str):
    return _show_form(_magnet(slug), SignupForm(formdata=None), embed=True)


@bp.post("/gids/<slug>")
@limiter.limit(signup_limit, scope="signup")
def signup(slug: str):
    return _submit(_magnet(slug), embed=False)


@bp.post("/gids/<slug>/embed")
# Inside an iframe on another site browsers withhold our session cookie (a third-party
# context), so a session-bound CSRF token would always fail there. The signed `started`
# timestamp (not tied to a session), the honeypot and the rate limit guard this form, and
# double opt-in means a forged post can at most cause one confirmation mail.
@csrf.exempt
@limiter.limit(signup_limit, scope="signup")
def embed_signup(slug: str):
    return _submit(_magnet(slug), embed=True)


@bp.get("/gids/<slug>/bedankt")
def thanks(slug: str):
    return render_template("thanks.html", magnet=_magnet(slug), embed=request.args.get("embed") == "1")


@bp.get("/gids/<slug>/nieuwe-link")
def link_sent(slug: str):
    """Where asking for a new link (POST, web/links.new_link) leads: the same words for every address."""
    return render_template("link_sent.html", magnet=_magnet(slug))


@bp.get("/privacy")
def privacy():
    # The statement's figures (MAILER_PENDING_MAX_AGE_DAYS, MAILER_CONFIRM_MAX_AGE_DAYS, the
    # magnets' link lifetimes) were filled in from the settings when the content was loaded:
    # the text shown here is the text every signup stores (Notice.statement).
    content = services().content
    return render_template("privacy.html", statement=content.privacy, notice=content.organisation.notice)


MONTHS = ("januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus", "september", "oktober",
          "november", "december")


@bp.app_template_filter("dutch_date")
def dutch_date(moment) -> str:
    """5 maart 2026 (the day in the send window's time zone)."""
    day = moment.astimezone(services().settings.drip_window.zone) if moment.tzinfo else moment
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


@bp.app_template_filter("atom_time")
def atom_time(moment) -> str:
    """RFC 3339 in UTC, as Atom asks."""
    moment = moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@bp.get(f"{ARCHIVE_PREFIX}/")
def archive_list():
    """The public archive: newsletters marked public whose campaign started (operator/archive.py)."""
    svc = services()
    return render_template("archive.html", entries=archive.entries(svc.db, svc.content))


@bp.get(f"{ARCHIVE_PREFIX}/feed.xml")
def archive_feed():
    svc = services()
    entries = archive.entries(svc.db, svc.content)
    updated = entries[0].sent_at if entries else svc.clock.now()
    body = render_template("archive_feed.xml", entries=entries, updated=updated, page=svc.links.newsletter_page,
                           feed_id=f"{svc.links.base_url}{ARCHIVE_PREFIX}/")
    response = make_response(body)
    response.headers["Content-Type"] = "application/atom+xml; charset=utf-8"
    return response


@bp.get(f"{ARCHIVE_PREFIX}/<slug>")
def archive_page(slug: str):
    svc = services()
    shown = archive.entry(svc.db, svc.content, slug)
    if shown is None:
        abort(404)
    return render_template("archive_page.html", entry=shown)


def _show_form(magnet, form: SignupForm, embed: bool, message: str | None = None, status: int = 200):
    form.started.data = services().signer.form_time()
    template = "embed.html" if embed else "landing.html"
    notice = services().content.organisation.notice
    return render_template(template, magnet=magnet, form=form, notice=notice, message=message,
                           embed=embed), status


def _submit(magnet, embed: bool):
    form = SignupForm()
    if not form.validate_on_submit():
        return _show_form(magnet, form, embed, status=400)
    thanks_url = url_for("public.thanks", slug=magnet.slug, embed="1" if embed else None)
    if form.website.data:
        # A bot filled the honeypot: it sees success, we store nothing.
        current_app.logger.info("honeypot filled on %s; ignored", magnet.slug)
        return redirect(thanks_url, code=303)
    problem = _timing_problem(form.started.data)
    if problem:
        return _show_form(magnet, form, embed, message=problem, status=400)
    svc = services()
    signup = Signup(
        magnet=magnet.slug, email=form.email.normalised,
        first_name=form.first_name.data, marketing=bool(form.marketing.data),
    )
    how = evidence(f"{'embed' if embed else 'landing'}:{magnet.slug}")
    with svc.db.transaction() as session:
        svc.funnel.subscribe(session, signup, how, svc.clock.now())
    return redirect(thanks_url, code=303)


def _timing_problem(started: str | None) -> str | None:
    """What to tell a visitor whose form came back too soon (bots are fast), or too late or
    without its signed timestamp; None when the timing is a person's."""
    try:
        age = services().signer.form_age(started or "")
    except InvalidLink:
        return SESSION_EXPIRED
    return TOO_FAST if age < services().settings.form_min_seconds else None


def csrf_error(exc):
    """A missing or stale CSRF token: show the form again with what was typed, never a bare 400."""
    if in_dashboard():
        return error_page(400)
    slug = (request.view_args or {}).get("slug")
    magnet = services().content.magnets.get(slug) if slug else None
    if magnet is None or request.endpoint not in ("public.signup", "public.embed_signup"):
        return render_template("error.html", title="Formulier verlopen", text=SESSION_EXPIRED), 400
    form = SignupForm()  # the typed values, and a fresh token when rendered
    return _show_form(magnet, form, request.endpoint == "public.embed_signup", message=SESSION_EXPIRED, status=400)
