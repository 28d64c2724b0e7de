"""What every page module shares: the services, consent evidence of a request, the signup
rate limit, and the error pages every request can end in."""

from __future__ import annotations

import logging

from flask import current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from mailer.funnel.actions import Evidence
from mailer.services import Services

log = logging.getLogger("mailer.web")
RETRY_AFTER_SECONDS = 30
RATE_LIMIT_RETRY_SECONDS = 60


def services() -> Services:
    return current_app.extensions["mailer"]


def evidence(form: str) -> Evidence:
    """How this request reached us, as consent evidence."""
    return Evidence(ip=request.remote_addr, user_agent=request.user_agent.string, form=form)


def signup_limit() -> str:
    """The per-IP rate limit shared by the forms that cause mail (one "signup" scope)."""
    return services().settings.signup_rate_limit


def in_dashboard() -> bool:
    """A request for the operators' dashboard (/beheer/): its own headers and error pages."""
    return request.path == "/beheer" or request.path.startswith("/beheer/")


def frameable() -> bool:
    """Only the embeddable form, and the thanks page it leads to, may be shown in an iframe."""
    if request.endpoint in ("public.embed", "public.embed_signup"):
        return True
    return request.endpoint == "public.thanks" and request.args.get("embed") == "1"


MESSAGES = {
    404: ("Pagina niet gevonden", "Deze pagina bestaat niet (meer). Controleer het adres of ga naar de startpagina."),
    405: ("Dat werkt zo niet", "Deze pagina kan op deze manier niet worden geopend."),
    413: ("Te veel gegevens", "Het formulier bevatte meer gegevens dan we verwachten."),
    429: ("Even geduld", "Er kwamen vanaf jouw adres veel aanvragen achter elkaar. Probeer het over een paar minuten opnieuw."),
    503: ("Even niet bereikbaar", "We kunnen je aanvraag op dit moment niet opslaan. Probeer het over een minuut opnieuw; er is niets verloren gegaan."),
    500: ("Er ging iets mis", "Er ging aan onze kant iets mis. Probeer het later opnieuw."),
}


def error_page(code: int):
    title, text = MESSAGES.get(code, MESSAGES[500])
    if request.path == "/healthz":
        return jsonify(status="error", database="unavailable" if code == 503 else "unknown"), code
    if in_dashboard():
        from mailer.web.admin.common import error_page as dashboard_error

        return dashboard_error(code, title, text)
    # In the embed's frame (a rate limit on its form, an unknown magnet) the page keeps the
    # embed's look and its links leave the frame.
    return render_template("error.html", title=title, text=text, embed=frameable()), code


def http_error(exc: HTTPException):
    body, code = error_page(exc.code or 500)
    response = current_app.make_response((body, code))
    if code == 429:
        response.headers["Retry-After"] = str(RATE_LIMIT_RETRY_SECONDS)
    return response


def database_unavailable(exc: Exception):
    # The database is down or locked for longer than the busy timeout: nothing was stored,
    # so say so (503) and when to try again; never a 2xx, never a traceback.
    log.error("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
    body, code = error_page(503)
    response = current_app.make_response((body, code))
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def unexpected(exc: Exception):
    log.exception("unexpected error on %s %s", request.method, request.path)
    return error_page(500)
