"""/leads (placeholder)."""

from flask import render_template

from mailer.web.admin import bp


@bp.get("/leads")
def leads():
    return render_template("beheer/base.html")
