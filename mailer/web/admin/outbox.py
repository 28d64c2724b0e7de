"""/outbox (placeholder)."""

from flask import render_template

from mailer.web.admin import bp


@bp.get("/outbox")
def outbox():
    return render_template("beheer/base.html")
