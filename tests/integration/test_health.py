"""GET /healthz, and what visitors see when the database is away."""

from __future__ import annotations

from conftest import Visitor, free_port

from mailer.web import create_app


def test_healthz_reports_the_database_and_outbox_counts(services, visitor, client):
    visitor.sign_up("gezond@example.nl")
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": services.db.engine.dialect.name,
                             "outbox": {"queued": 1}}


def test_an_unreachable_database_gives_503_with_retry_after_never_a_500(make_services, clock):
    services = make_services(f"postgresql://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2")
    client = create_app(services=services).test_client()

    health = client.get("/healthz")
    assert health.status_code == 503 and health.json["database"] == "unavailable"

    landing = client.get("/")  # the form needs no database
    assert landing.status_code == 200
    signup = Visitor(client, clock).sign_up("later@example.nl")
    assert signup.status_code == 503
    assert signup.headers["Retry-After"] == "30"
    assert "er is niets verloren gegaan" in signup.get_data(as_text=True)


def test_a_long_sqlite_write_lock_makes_signups_wait_then_answer_503(make_services, sqlite_url, clock):
    import sqlite3
    import time

    services = make_services(sqlite_url, MAILER_SQLITE_BUSY_TIMEOUT_MS="300")
    visitor = Visitor(create_app(services=services).test_client(), clock)
    holder = sqlite3.connect(sqlite_url.split("///", 1)[1], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock (a long import, say)
    try:
        began = time.monotonic()
        response = visitor.sign_up("wacht@example.nl")
        waited = time.monotonic() - began
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert waited >= 0.3  # it waited for the lock before giving up
    assert "database is locked" not in response.get_data(as_text=True)
    assert visitor.sign_up("wacht@example.nl").status_code == 303  # and works once the lock is gone
