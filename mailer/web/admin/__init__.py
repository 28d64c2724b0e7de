"""The operators' dashboard under /beheer/: a face over the operator layer, behind a login.

Every route of the blueprint needs a valid session (a before_request check, so a new route
cannot forget it), except the login steps. Every response under /beheer/ carries a strict
Content-Security-Policy and may not be framed; the one exception is a mail preview, framed
by the dashboard's own pages in a sandbox. The role an action needs is operator/accounts.NEEDS;
each action and each refusal is an audit row (common.act, common.permit).
"""

from __future__ import annotations

from flask import Blueprint, Flask, flash, redirect, request, session, url_for
from flask_login import LoginManager, current_user

from mailer.operator import accounts
from mailer.resources import shipped
from mailer.web.admin import common

bp = Blueprint("admin", __name__, url_prefix="/beheer")
# The dashboard's stylesheet and script, outside /beheer/ so that nothing there answers without a session.
assets = Blueprint("admin_assets", __name__, static_folder=shipped("templates") / "static" / "beheer",
                   static_url_path="/static/beheer")

OPEN = {"admin.login", "admin.login_code"}  # answer without a session
SECOND_FACTOR_PAGES = {"admin.account", "admin.totp_start", "admin.totp_enable", "admin.logout"}
EXPIRED = "Je sessie is verlopen. Log opnieuw in."

login_manager = LoginManager()
login_manager.session_protection = "basic"


@login_manager.user_loader
def _load(token: str):
    services = common.services()
    settings = services.settings
    signed = accounts.load_session(services.db, token, services.clock.now(), common.idle(settings),
                                   common.absolute(settings))
    return common.User(signed) if signed else None


@bp.before_request
def _guard():
    if request.endpoint in OPEN:
        return None
    if not current_user.is_authenticated:
        if session.pop("_user_id", None):  # a session that was, and has ended or expired
            flash(EXPIRED, "info")
        nxt = request.full_path if request.method == "GET" else None
        return redirect(url_for("admin.login", next=nxt.rstrip("?") if nxt else None))
    if (common.services().settings.admin_require_2fa and current_user.signed.role == "owner"
            and not current_user.signed.totp and request.endpoint not in SECOND_FACTOR_PAGES):
        flash("Als eigenaar heb je een tweede stap nodig om in te loggen. Stel die hieronder in.", "info")
        return redirect(url_for("admin.account"))
    return None


def init_app(app: Flask) -> None:
    from mailer.web.admin import (  # noqa: F401  (each module adds its routes to bp)
        audit_log, auth, leads, newsletters, outbox, overview, sequences)

    # Flask-Login's own context processor loads the user for every template, public pages too,
    # and (session protection) writes into a visitor's session; the proxy is looked at only
    # where a template uses it: the dashboard's.
    login_manager.init_app(app, add_context_processor=False)
    app.context_processor(lambda: {"current_user": current_user})
    for name, function in common.FILTERS.items():
        app.add_template_filter(function, name)
    app.register_blueprint(bp)
    app.register_blueprint(assets)
