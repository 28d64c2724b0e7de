"""GET /healthz: is the database reachable, and how full is the outbox."""

from flask import Blueprint, jsonify

from mailer.store import queries
from mailer.web.common import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    svc = services()
    with svc.db.read_only() as session:
        counts = queries.outbox_counts(session)
    return jsonify(status="ok", database=svc.db.engine.dialect.name, outbox=counts)
