"""/beheer/: the overview (placeholder until the overview page lands)."""

from flask import render_template

from mailer.web.admin import bp


@bp.get("/")
def overview():
    return render_template("beheer/base.html")
