"""/beheer/audit: the audit log, newest first, a page at a time."""

from __future__ import annotations

from flask import render_template, request

from mailer.operator import audit
from mailer.operator.people import MAX_ID
from mailer.web.admin import bp, common


OUTCOMES = {"done": "gedaan", "refused": "geweigerd", "failed": "mislukt"}


@bp.get("/audit")
def audit_log():
    before = request.args.get("voor", type=int)
    if before is not None and not 0 < before <= MAX_ID:
        before = None  # no such entry: the newest page
    action = request.args.get("actie") or None
    found = audit.entries(common.services().db, before=before, action=action)
    older = found[-1].id if len(found) == audit.PAGE else None
    return render_template("beheer/audit.html", entries=found, older=older, action=action or "", outcomes=OUTCOMES)
