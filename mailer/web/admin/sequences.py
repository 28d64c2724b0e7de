"""/reeksen (placeholder)."""

from flask import render_template

from mailer.web.admin import bp


@bp.get("/reeksen")
def sequences():
    return render_template("beheer/base.html")
