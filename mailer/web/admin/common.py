"""What the dashboard's views share: the signed-in operator, the audit of what they do, the
role check, the security headers, and the error page."""

from __future__ import annotations

from datetime import timedelta
from functools import wraps

from flask import abort, current_app, render_template, request
from flask_login import UserMixin, current_user
from markupsafe import Markup, escape

from mailer.operator import accounts, audit
from mailer.operator.accounts import SignedIn
from mailer.store.tables import Role

ROLE_NAMES = {Role.VIEWER: "kijker", Role.EDITOR: "redacteur", Role.OWNER: "eigenaar"}

# script-src 'self': no inline script, no other host. frame-src 'self': the mail previews.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'")
# A rendered mail in the dashboard's sandboxed frame: its inline styles, nothing that runs.
PREVIEW_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'; sandbox"


class User(UserMixin):
    """Flask-Login's user: the session token is its id, so ending the session ends the login."""

    def __init__(self, signed: SignedIn):
        self.signed = signed

    def get_id(self) -> str:
        return self.signed.token

    @property
    def role_name(self) -> str:
        return ROLE_NAMES[Role(self.signed.role)]

    def may(self, action: str) -> bool:
        return self.signed.may(action)


def services():
    return current_app.extensions["mailer"]


def idle(settings) -> timedelta:
    return timedelta(minutes=settings.admin_idle_minutes)


def absolute(settings) -> timedelta:
    return timedelta(hours=settings.admin_session_hours)


def now():
    return services().clock.now()


def actor() -> audit.Actor:
    email = current_user.signed.email if current_user.is_authenticated else None
    return audit.Actor(email, request.remote_addr)


def act(action: str, target: str = "", detail: str = "", outcome: str = "done") -> None:
    """An audit row for what the signed-in operator just did."""
    audit.record(services().db, actor(), action, now(), target=target, outcome=outcome, detail=detail)


def permit(action: str, target: str = "") -> None:
    """Stop here with 403 (and an audit row) unless the operator's role allows `action`."""
    if not current_user.may(action):
        act(action, target, f"needs role {accounts.NEEDS[action].value}, has {current_user.signed.role}", "refused")
        abort(403)


def requires(action: str):
    """A view for `action`: refused with 403, before anything changes, outside the role."""

    def decorate(view):
        @wraps(view)
        def checked(*args, **kwargs):
            permit(action)
            return view(*args, **kwargs)

        checked.action = action  # tests/integration/test_admin_security.py walks these
        return checked

    return decorate


def security_headers(response):
    """Every response under /beheer/: the CSP, never framed (a preview: only by our pages), never cached."""
    if request.endpoint and request.endpoint.endswith("_preview"):
        response.headers["Content-Security-Policy"] = PREVIEW_CSP
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
    else:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response


MESSAGES = {
    403: ("Geen toegang", "Voor deze actie heeft je rol niet genoeg rechten. Er is niets veranderd."),
    400: ("Formulier verlopen", "Het formulier was verlopen of onvolledig. Open de pagina opnieuw en probeer het nog eens."),
}


def error_page(code: int, title: str, text: str):
    title, text = MESSAGES.get(code, (title, text))
    return render_template("beheer/error.html", title=title, text=text, code=code), code


def nldatetime(moment) -> str:
    """A UTC time as the Dutch read it: in the send window's zone (Europe/Amsterdam), 30-11-2026 14:05."""
    if moment is None:
        return "-"
    return moment.astimezone(services().settings.drip_window.zone).strftime("%d-%m-%Y %H:%M")


def nlnumber(value) -> str:
    """12345 as 12.345."""
    return f"{value:,}".replace(",", ".") if isinstance(value, int) else str(value)


def nlpercent(value) -> str:
    """0.4567 as 45,7%; None as -."""
    return "-" if value is None else f"{value:.1%}".replace(".", ",")


def breakable(address: str) -> Markup:
    """An address that a narrow column breaks before its @ rather than anywhere."""
    local, at, domain = address.partition("@")
    return escape(local) + (Markup("<wbr>@") + escape(domain) if at else Markup(""))


FILTERS = {"nldatetime": nldatetime, "nlnumber": nlnumber, "nlpercent": nlpercent, "breakable": breakable}
