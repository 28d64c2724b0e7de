"""/nieuwsbrieven (placeholder)."""

from flask import render_template

from mailer.web.admin import bp


@bp.get("/nieuwsbrieven")
def newsletters():
    return render_template("beheer/base.html")
