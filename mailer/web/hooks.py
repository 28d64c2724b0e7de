"""POST /hooks/ses and /hooks/mailgun: the providers' word on our mail (bounces, complaints).

A thin face over `mailer/bounces/providers.py`: read the body (at most BODY_LIMIT), hand it
over, answer. 200 with a short JSON body when it was taken (also when it was ignored or seen
before); 401 when it is not the provider's (signature, topic, not configured), 400 when the
body is no JSON object, 413 when it is too large: each changes nothing. 503 (with
Retry-After) when the database or AWS could not be reached, so the provider sends it again.
No session, no CSRF token: the provider's signature is the credential.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import RequestEntityTooLarge

from mailer.bounces.providers import Malformed, Refused, Unavailable, Webhooks
from mailer.web.common import RETRY_AFTER_SECONDS, services
from mailer.web.extensions import csrf

bp = Blueprint("hooks", __name__, url_prefix="/hooks")
log = logging.getLogger("mailer.web")

BODY_LIMIT = 1024 * 1024  # SNS messages are at most 256 KB; Mailgun's events a few KB
EXTENSION = "mailer.webhooks"  # app.extensions key of the Webhooks (a test puts its own there)


def webhooks() -> Webhooks:
    """The app's Webhooks, built from the services on first use."""
    hooks = current_app.extensions.get(EXTENSION)
    if hooks is None:
        svc = services()
        hooks = current_app.extensions[EXTENSION] = Webhooks.build(svc.settings, svc.intake, svc.clock)
    return hooks


@bp.post("/ses")
@csrf.exempt  # signed by Amazon SNS
def ses():
    return _receive("ses")


@bp.post("/mailgun")
@csrf.exempt  # signed with the Mailgun signing key
def mailgun():
    return _receive("mailgun")


def _receive(provider: str):
    request.max_content_length = BODY_LIMIT
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return _answer(413, "too large")
    try:
        accepted = webhooks().receive(provider, body)
    except Refused as exc:
        log.warning("webhook %s refused from %s: %s", provider, request.remote_addr, exc)
        return _answer(401, "refused")
    except Malformed as exc:
        log.warning("webhook %s: malformed call from %s: %s", provider, request.remote_addr, exc)
        return _answer(400, "malformed")
    except Unavailable as exc:
        log.error("webhook %s: %s", provider, exc)
        return _answer(503, "try again later")
    except (OperationalError, InterfaceError) as exc:
        log.error("webhook %s: database unavailable: %s", provider, exc.__class__.__name__, exc_info=exc)
        return _answer(503, "try again later")
    return jsonify(status="ok", **accepted.summary()), 200


def _answer(code: int, status: str):
    response = jsonify(status=status)
    response.status_code = code
    if code == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
