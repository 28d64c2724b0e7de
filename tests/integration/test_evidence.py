"""Consent evidence that holds up when it is questioned, on a SQLite file and on PostgreSQL:
the database itself refuses to change or delete it (but for the erasure of that person), and
a notice is its version and its text together."""

from __future__ import annotations

import logging
import uuid

import pytest
from click.testing import CliRunner
from conftest import POSTGRES_URL, Visitor, _psycopg_url, make_env, unavailable
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from mailer.cli import main
from mailer.operator.people import erase_person, purge_pending
from mailer.resources import shipped
from mailer.store import queries
from mailer.store.migrate import alembic_config, upgrade
from mailer.store.tables import ConsentEvent, ConsentNotice, Erasure, Lead
from mailer.web import create_app

APPEND_ONLY = "consent evidence is append-only"


def lead_id(services, email: str) -> int:
    with services.db.read_only() as session:
        return session.scalar(select(Lead.id).where(Lead.email == email))


def evidence(services) -> tuple[list, list]:
    """Every consent event and every stored notice, as plain values."""
    with services.db.read_only() as session:
        events = session.execute(select(ConsentEvent.id, ConsentEvent.lead_id, ConsentEvent.kind, ConsentEvent.at,
                                        ConsentEvent.form, ConsentEvent.marketing_consent, ConsentEvent.notice_id)
                                 .order_by(ConsentEvent.id)).all()
        notices = session.execute(select(ConsentNotice.id, ConsentNotice.version, ConsentNotice.sha256,
                                         ConsentNotice.text).order_by(ConsentNotice.id)).all()
    return [tuple(e) for e in events], [tuple(n) for n in notices]


def events_of(services, lead: int) -> int:
    with services.db.read_only() as session:
        return session.scalar(select(func.count()).select_from(ConsentEvent).where(ConsentEvent.lead_id == lead))


def marks(services) -> int:
    with services.db.read_only() as session:
        return session.scalar(select(func.count()).select_from(Erasure))


@pytest.fixture
def two_signups(services, visitor, clock):
    """Anne and Bram signed up through the form: a consent event each, one notice."""
    visitor.sign_up("anne@example.nl", first_name="Anne")
    visitor.sign_up("bram@example.nl", first_name="Bram")
    anne, bram = lead_id(services, "anne@example.nl"), lead_id(services, "bram@example.nl")
    assert events_of(services, anne) == events_of(services, bram) == 1
    return services, anne, bram


def unused_notice(services, clock) -> int:
    """A stored notice no consent event points at (so only the trigger can stop its deletion)."""
    with services.db.transaction() as session:
        found, inserted = queries.notice_id(session, version="ongebruikt", text="Nergens getoond", now=clock.now())
    assert inserted
    return found


# --- the database refuses ----------------------------------------------------------------

FORBIDDEN = {
    "update an event": ("UPDATE consent_events SET form = 'vervalst', ip = '10.0.0.1' WHERE lead_id = :anne",
                        "a consent event cannot be changed"),
    "update a notice": ("UPDATE consent_notices SET text = 'Een andere tekst', version = 'anders'",
                        "a stored notice text cannot be changed"),
    "delete an event": ("DELETE FROM consent_events WHERE lead_id = :anne",
                        "a consent event is deleted only by the erasure of its person"),
    "delete a notice": ("DELETE FROM consent_notices WHERE id = :unused",
                        "a stored notice text cannot be deleted"),
}


@pytest.mark.parametrize("statement", FORBIDDEN)
def test_the_database_refuses_to_change_or_delete_the_evidence(two_signups, clock, statement):
    services, anne, _ = two_signups
    unused = unused_notice(services, clock)
    before = evidence(services)
    sql, why = FORBIDDEN[statement]

    with pytest.raises(IntegrityError, match=f"{APPEND_ONLY}: {why}"), services.db.transaction() as session:
        session.execute(text(sql), {"anne": anne, "unused": unused})

    assert evidence(services) == before


def test_a_new_event_can_still_be_added(two_signups, visitor):
    services, anne, _ = two_signups
    visitor.sign_up("anne@example.nl", first_name="Anne")  # a second signup: a second event
    assert events_of(services, anne) == 2


# --- erasure lets exactly that person's evidence go --------------------------------------

def test_erasing_a_person_removes_their_events_and_nobody_elses(two_signups, clock):
    services, anne, bram = two_signups
    _, notices = evidence(services)

    erase_person(services.db, services.transport(), "anne@example.nl", services.settings.secret_keys[0],
                 clock.now())

    assert lead_id(services, "anne@example.nl") is None
    assert events_of(services, anne) == 0
    assert events_of(services, bram) == 1
    assert evidence(services)[1] == notices  # the notices name nobody: they stay
    assert marks(services) == 0  # the mark did not outlive its transaction


def test_erasing_with_the_command_works_too(two_signups, tmp_path, database_url):
    services, anne, bram = two_signups
    result = CliRunner().invoke(main, ["lead", "erase", "anne@example.nl", "--yes"],
                                env=make_env(tmp_path, MAILER_DATABASE_URL=database_url), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (events_of(services, anne), events_of(services, bram)) == (0, 1)
    assert marks(services) == 0


def test_the_purge_removes_the_events_of_the_leads_it_purges(services, visitor, clock):
    visitor.sign_up("oud@example.nl", first_name="Oud")
    old = lead_id(services, "oud@example.nl")
    clock.advance(days=10)
    visitor.sign_up("nieuw@example.nl", first_name="Nieuw")
    new = lead_id(services, "nieuw@example.nl")

    assert purge_pending(services.db, older_than_days=5, now=clock.now()) == 1

    assert lead_id(services, "oud@example.nl") is None
    assert (events_of(services, old), events_of(services, new)) == (0, 1)
    assert marks(services) == 0


def test_marking_one_lead_does_not_let_another_leads_events_go(two_signups):
    services, anne, bram = two_signups
    before = evidence(services)

    for sql in ("DELETE FROM consent_events WHERE lead_id = :bram", "DELETE FROM consent_events"):
        with (pytest.raises(IntegrityError, match=APPEND_ONLY), services.db.transaction() as session,
              queries.erasure(session, [anne])):
            session.execute(text(sql), {"bram": bram})
        assert evidence(services) == before

    # The same mark does let Anne's own events go.
    with services.db.transaction() as session, queries.erasure(session, [anne]):
        session.execute(text("DELETE FROM consent_events WHERE lead_id = :anne"), {"anne": anne})
    assert (events_of(services, anne), events_of(services, bram)) == (0, 1)
    assert marks(services) == 0


def test_a_mark_is_seen_only_by_the_transaction_that_made_it(two_signups):
    services, anne, _ = two_signups
    with services.db.transaction() as marking, queries.erasure(marking, [anne]):
        assert marking.scalar(select(func.count()).select_from(Erasure)) == 1
        # Another connection, meanwhile, sees no mark (SQLite: the last committed state; its
        # writers queue behind this one anyway), so on PostgreSQL its DELETE is refused.
        assert marks(services) == 0
        if services.db.engine.dialect.name == "postgresql":
            with pytest.raises(IntegrityError, match=APPEND_ONLY), services.db.transaction() as other:
                other.execute(text("DELETE FROM consent_events WHERE lead_id = :anne"), {"anne": anne})
    assert events_of(services, anne) == 1
    assert marks(services) == 0


# --- a notice is its version and its text -----------------------------------------------

def test_a_notice_is_identified_by_its_version_and_its_text(services, clock):
    now = clock.now()
    with services.db.transaction() as session:
        first, inserted = queries.notice_id(session, version="2026-11", text="Tekst A", now=now)
        assert inserted
        assert queries.notice_id(session, version="2026-11", text="Tekst A", now=now) == (first, False)
        relabelled, inserted = queries.notice_id(session, version="2026-12", text="Tekst A", now=now)
        assert inserted and relabelled != first
        edited, inserted = queries.notice_id(session, version="2026-11", text="Tekst B", now=now)
        assert inserted and edited not in (first, relabelled)

    with services.db.read_only() as session:
        stored = session.execute(select(ConsentNotice.version, ConsentNotice.text).order_by(ConsentNotice.id)).all()
    assert [tuple(row) for row in stored] == [("2026-11", "Tekst A"), ("2026-12", "Tekst A"), ("2026-11", "Tekst B")]


def privacy_overlay(folder, services, *, version: str | None = None, text_change: str | None = None):
    """A content folder whose organisation.toml has the [privacy] version and/or notice text changed."""
    source = (shipped("content") / "organisation.toml").read_text(encoding="utf-8")
    notice = services.content.organisation.notice
    changed = source
    if version is not None:
        assert f'version = "{notice.version}"' in changed
        changed = changed.replace(f'version = "{notice.version}"', f'version = "{version}"', 1)
    if text_change is not None:
        assert "We gebruiken je voornaam" in changed
        changed = changed.replace("We gebruiken je voornaam", text_change, 1)
    folder.mkdir(parents=True)
    (folder / "organisation.toml").write_text(changed, encoding="utf-8")
    return str(folder)


def signup_notices(services) -> list[tuple[str, str]]:
    with services.db.read_only() as session:
        return [tuple(row) for row in session.execute(
            select(ConsentNotice.version, ConsentNotice.sha256).join(ConsentEvent, ConsentEvent.notice_id == ConsentNotice.id)
            .order_by(ConsentEvent.id))]


def sign_up_with(make_services, database_url, clock, email: str, **overrides):
    services = make_services(database_url, **overrides)
    app = create_app(services=services)
    app.config["TESTING"] = True
    Visitor(app.test_client(), clock).sign_up(email)
    return services


def test_a_new_version_or_a_new_text_is_a_new_notice_on_signup(make_services, database_url, clock, tmp_path):
    services = sign_up_with(make_services, database_url, clock, "a@example.nl")
    sign_up_with(make_services, database_url, clock, "b@example.nl",
                 MAILER_CONTENT_PATH=privacy_overlay(tmp_path / "relabelled", services, version="2027-01"))
    sign_up_with(make_services, database_url, clock, "c@example.nl",
                 MAILER_CONTENT_PATH=privacy_overlay(tmp_path / "edited", services, text_change="Wij gebruiken je voornaam"))

    (v1, h1), (v2, _), (v3, h3) = signup_notices(services)
    current = services.content.organisation.notice.version
    assert (v1, v2, v3) == (current, "2027-01", current)
    assert h1 != h3  # a changed text under the same label: a row of its own
    assert len(evidence(services)[1]) == 3
    # (The shipped privacy statement quotes the version, so a new label changes the text as
    # well here; the same text under a new label is test_a_notice_is_identified_by_....)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mailer" and r.levelno == logging.WARNING
            and "privacy notice" in r.getMessage()]


def test_start_up_warns_when_the_text_changed_but_the_version_did_not(make_services, database_url, clock,
                                                                       tmp_path, caplog):
    services = sign_up_with(make_services, database_url, clock, "a@example.nl")
    caplog.set_level(logging.WARNING, logger="mailer")

    make_services(database_url)  # unchanged
    make_services(database_url, MAILER_CONTENT_PATH=privacy_overlay(
        tmp_path / "both", services, version="2027-01", text_change="Wij gebruiken je voornaam"))
    assert warnings_of(caplog) == []

    make_services(database_url, MAILER_CONTENT_PATH=privacy_overlay(
        tmp_path / "text-only", services, text_change="Wij gebruiken je voornaam"))
    [warning] = warnings_of(caplog)
    assert f"organisation.toml [privacy] version is still '{services.content.organisation.notice.version}'" in warning


def test_start_up_does_not_fail_on_a_database_without_tables(make_services, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="mailer")
    make_services(f"sqlite:///{tmp_path / 'leeg' / 'mailer.db'}")  # not migrated: the check is skipped
    assert warnings_of(caplog) == []
    assert any("notice version not checked" in r.getMessage() for r in caplog.records)


# --- the migration, on a database that holds evidence already ----------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request, tmp_path):
    """A database with no schema yet: a SQLite file, or a new PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mailer.db'}"
        return
    try:
        import psycopg
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001  (ImportError or OperationalError: either way, none here)
        unavailable("postgres", str(exc).strip()[:200])
    name = f"mailer_evidence_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _psycopg_url(POSTGRES_URL.rsplit("/", 1)[0] + "/" + name)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_the_migration_keeps_existing_evidence_and_then_guards_it(empty_database_url):
    from alembic import command

    from mailer.store.database import make_engine

    upgrade(empty_database_url, "0003")
    engine = make_engine(empty_database_url)  # SQLite: with its foreign keys on, as the service has them
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO consent_notices (version, sha256, text, created_at) "
                          "VALUES ('2026-11', 'abc', 'Tekst', '2026-11-01 09:00:00')"))
        conn.execute(text("INSERT INTO leads (email, first_name, status, magnet, marketing_consent, created_at, "
                          "updated_at) VALUES ('a@example.nl', 'A', 'confirmed', 'mini-guide', :no, "
                          "'2026-11-01 09:00:00', '2026-11-01 09:00:00')"), {"no": False})
        conn.execute(text("INSERT INTO consent_events (lead_id, kind, at, magnet, marketing_consent, form, notice_id) "
                          "SELECT leads.id, 'signup', leads.created_at, leads.magnet, :no, 'form', consent_notices.id "
                          "FROM leads, consent_notices"), {"no": False})
    engine.dispose()

    upgrade(empty_database_url)

    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version, sha256, text FROM consent_notices")).all() == \
                [("2026-11", "abc", "Tekst")]
            assert conn.execute(text("SELECT count(*) FROM consent_events WHERE notice_id IS NOT NULL")).scalar() == 1
            assert [c["column_names"] for c in inspect(conn).get_unique_constraints("consent_notices")] == \
                [["version", "sha256"]]
            conn.rollback()
            for sql in ("UPDATE consent_events SET form = 'x'", "DELETE FROM consent_events",
                        "UPDATE consent_notices SET text = 'x'", "DELETE FROM consent_notices"):
                with pytest.raises(IntegrityError, match=APPEND_ONLY):
                    conn.execute(text(sql))
                conn.rollback()
    finally:
        engine.dispose()

    # And back: the triggers and the marks' table go, the old UNIQUE (sha256) returns.
    command.downgrade(alembic_config(empty_database_url), "0003")
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            assert "erasures" not in inspect(conn).get_table_names()
            assert [c["column_names"] for c in inspect(conn).get_unique_constraints("consent_notices")] == [["sha256"]]
            conn.execute(text("UPDATE consent_events SET form = 'x'"))
            conn.rollback()
    finally:
        engine.dispose()
