"""The operator's functions called directly (the CLI and a dashboard only show what they return),
on a SQLite file and on PostgreSQL: erase, import, a test send, and the outbox tools."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest
from conftest import Visitor
from sqlalchemy import func, select, update
from test_funnel import confirm, deliver

from mailer.errors import InvalidRequest, UnknownLead
from mailer.operator import outbox
from mailer.operator.imports import ImportRefused, import_leads
from mailer.operator.people import BeingSent, erase_person, record
from mailer.operator.sending import send_test
from mailer.store import queries
from mailer.store.tables import ConsentEvent, Lead, Outbox, OutboxStatus, Suppression
from mailer.web import create_app


def count(services, model, *where) -> int:
    with services.db.read_only() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def outbox_by_recipient(services) -> dict[str, list[tuple[int, str]]]:
    with services.db.read_only() as session:
        found: dict[str, list[tuple[int, str]]] = {}
        for row in session.scalars(select(Outbox).order_by(Outbox.id)):
            found.setdefault(row.recipient, []).append((row.id, row.status))
        return found


def snapshot(services) -> tuple:
    """Every lead and outbox row as plain values, to show that something changed nothing."""
    with services.db.read_only() as session:
        leads = session.execute(select(Lead.email, Lead.status, Lead.first_name, Lead.updated_at)
                                .order_by(Lead.id)).all()
        rows = session.execute(select(Outbox.id, Outbox.status, Outbox.attempts).order_by(Outbox.id)).all()
        events = session.scalar(select(func.count()).select_from(ConsentEvent))
    return [tuple(r) for r in leads], [tuple(r) for r in rows], events


# --- erasing a person --------------------------------------------------------------------

@pytest.fixture
def two_people_on_file(tmp_path, make_services, database_url, clock):
    """The embedded default's file transport: "weg" confirmed (confirmation and guide, two
    files), "blijft" only signed up (one file)."""
    folder = tmp_path / "mail"
    services = make_services(database_url, MAILER_MAIL_URL=f"file://{folder}")
    client = create_app(services=services).test_client()
    visitor = Visitor(client, clock)
    visitor.sign_up("weg@example.nl", first_name="Weg")
    visitor.sign_up("blijft@example.nl", first_name="Blijft")
    services.sender(services.transport(), worker="test").dispatch_all()
    [to_weg] = [f for f in folder.glob("*.eml") if b"weg@example.nl" in f.read_bytes()]
    confirm(client, message_from_bytes(to_weg.read_bytes(), policy=policy.default))
    services.sender(services.transport(), worker="test").dispatch_all()
    assert len(list(folder.glob("*.eml"))) == 3
    return services, folder


def files_to(folder, email: str) -> list:
    return sorted(f.name for f in folder.glob("*.eml") if f"To: {email}".encode() in f.read_bytes()
                  or f"<{email}>".encode() in f.read_bytes())


def test_erasing_a_person_removes_their_rows_and_exactly_their_mail_files(two_people_on_file, clock):
    services, folder = two_people_on_file
    assert len(files_to(folder, "weg@example.nl")) == 2
    kept = files_to(folder, "blijft@example.nl")
    assert len(kept) == 1

    removed = erase_person(services.db, services.transport(), "Weg@Example.nl", services.settings.secret_keys[0],
                           clock.now())

    assert removed == 2
    assert files_to(folder, "weg@example.nl") == []
    assert sorted(f.name for f in folder.glob("*.eml")) == kept
    with pytest.raises(UnknownLead, match="weg@example.nl"):
        record(services.db, "weg@example.nl")
    assert list(outbox_by_recipient(services)) == ["blijft@example.nl"]
    assert count(services, ConsentEvent) == 1  # only the other person's signup
    assert record(services.db, "blijft@example.nl")["email"] == "blijft@example.nl"
    assert count(services, Suppression) == 1  # the keyed hash that keeps an import from bringing it back


def test_erasing_waits_while_a_mail_to_the_person_is_being_sent(two_people_on_file, clock):
    services, folder = two_people_on_file
    with services.db.transaction() as session:
        session.execute(update(Outbox).where(Outbox.recipient == "weg@example.nl", Outbox.kind == "guide")
                        .values(status="sending"))
    before, files = snapshot(services), sorted(f.name for f in folder.glob("*.eml"))

    with pytest.raises(BeingSent, match="weg@example.nl is being sent"):
        erase_person(services.db, services.transport(), "weg@example.nl", services.settings.secret_keys[0],
                     clock.now())

    assert snapshot(services) == before
    assert sorted(f.name for f in folder.glob("*.eml")) == files
    assert count(services, Suppression) == 0
    assert record(services.db, "weg@example.nl")["status"] == "confirmed"


def test_erasing_someone_unknown_says_so(services, clock):
    with pytest.raises(UnknownLead, match="niemand@example.nl"):
        erase_person(services.db, services.transport(), "niemand@example.nl", services.settings.secret_keys[0],
                     clock.now())


# --- importing leads ---------------------------------------------------------------------

GOOD = (b"email;first_name;marketing_consent;consent_at;consent_source;consent_text\n"
        b"eva@gemeente.nl;Eva;ja;2025-03-01T10:00:00+01:00;formulier oude site;Ja, stuur mij mail\n"
        b"PIET@gemeente.nl;Piet;nee;;;\n")


def run_import(services, clock, data: bytes, dry_run: bool = False):
    return import_leads(services.db, services.content, data, "oud.csv", services.settings.secret_keys,
                        clock.now(), dry_run=dry_run)


def test_a_dry_run_import_returns_the_checked_rows_and_writes_nothing(services, clock):
    checked = run_import(services, clock, GOOD, dry_run=True)

    assert [(row.line, row.email, row.marketing) for row in checked.rows] == \
        [(2, "eva@gemeente.nl", True), (3, "piet@gemeente.nl", False)]
    assert checked.errors == [] and checked.marketing == 1
    assert count(services, Lead) == 0 and count(services, ConsentEvent) == 0


def test_an_import_stores_the_leads_confirmed_with_their_consent_evidence(services, clock):
    checked = run_import(services, clock, GOOD)

    assert len(checked.rows) == 2
    eva = record(services.db, "eva@gemeente.nl")
    assert (eva["status"], eva["marketing_consent"], eva["first_name"]) == ("confirmed", True, "Eva")
    [event] = eva["consent_events"]
    assert (event["kind"], event["form"], event["marketing_consent"]) == ("import", "formulier oude site", True)
    assert event["at"] == "2025-03-01T09:00:00Z" and event["notice"]["text"] == "Ja, stuur mij mail"
    piet = record(services.db, "piet@gemeente.nl")
    assert piet["marketing_consent"] is False
    assert [(e["kind"], e["form"]) for e in piet["consent_events"]] == [("import", "import:oud.csv")]
    assert count(services, Outbox) == 0  # imported leads get no mail by being imported


def test_one_bad_line_refuses_the_whole_import(services, clock, visitor):
    visitor.sign_up("bestaand@gemeente.nl")
    leads_before = count(services, Lead)
    bad = GOOD + b"geen-adres;X;nee;;;\nbestaand@gemeente.nl;B;nee;;;\n"

    with pytest.raises(ImportRefused) as refused:
        run_import(services, clock, bad)

    assert [e.split(":")[0] for e in refused.value.errors] == ["line 4", "line 5"]
    assert refused.value.errors[1] == "line 5: bestaand@gemeente.nl is already a lead (pending)"
    assert count(services, Lead) == leads_before  # not even the good lines
    with pytest.raises(ImportRefused):
        run_import(services, clock, bad, dry_run=True)
    with pytest.raises(UnknownLead):
        record(services.db, "eva@gemeente.nl")


# --- a test send -------------------------------------------------------------------------

@pytest.fixture
def on_smtp(make_services, database_url, smtp_server, clock):
    """Services sending to the real SMTP server, with one confirmed lead whose mail went out."""
    services = make_services(database_url, MAILER_MAIL_URL=smtp_server.url)
    client = create_app(services=services).test_client()
    Visitor(client, clock).sign_up("anne@gemeente.nl", first_name="Annemarie", marketing=True)
    confirm(client, deliver(services)[0])
    deliver(services)
    return services


def first_step(services) -> str:
    return services.content.sequences["mini-guide"].steps[0].key


def test_a_test_send_arrives_marked_and_changes_no_lead_and_no_outbox_row(on_smtp, smtp_server):
    services = on_smtp
    before = snapshot(services)

    sent = send_test(services.db, services.composer, services.transport(), services.content,
                     first_step(services), "redactie@example.nl", lead_email="anne@gemeente.nl")

    assert sent.reply == (250, "Message accepted")  # the server's own words
    assert sent.address == "redactie@example.nl" and sent.ref.step == first_step(services)
    [envelope] = smtp_server.messages
    assert envelope.rcpt_tos == ["redactie@example.nl"]
    message = message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"] == "[TEST] Een oefening van tien minuten voor deze week"
    assert "Hallo Annemarie," in message.get_body(("plain",)).get_content()
    assert snapshot(services) == before


def test_a_test_send_refuses_an_unknown_step_and_a_bad_address(on_smtp, smtp_server):
    services = on_smtp

    with pytest.raises(InvalidRequest, match="'bestaat-niet' is not a step") as unknown:
        send_test(services.db, services.composer, services.transport(), services.content,
                  "bestaat-niet", "redactie@example.nl")
    assert unknown.value.option == "STEP"
    assert "mini-guide/" + first_step(services) in str(unknown.value)  # the steps there are

    with pytest.raises(InvalidRequest) as bad_address:
        send_test(services.db, services.composer, services.transport(), services.content,
                  first_step(services), "geen adres")
    assert bad_address.value.option == "--to"
    assert smtp_server.messages == []


# --- the outbox --------------------------------------------------------------------------

@pytest.fixture
def queue(make_services, database_url, smtp_server, clock):
    """One mail sent, one failed on a full mailbox, one failed on an unknown mailbox (the lead
    is now undeliverable) and one failed on a policy refusal (marketing is paused)."""
    services = make_services(database_url, MAILER_MAIL_URL=smtp_server.url)
    visitor = Visitor(create_app(services=services).test_client(), clock)
    smtp_server.replies.update({
        "vol@example.nl": "552 5.2.2 Mailbox full",
        "weg@example.nl": "550 5.1.1 User unknown",
        "beleid@example.nl": "550 5.7.1 Sender rejected by policy",
    })
    for email in ("goed@example.nl", "vol@example.nl", "weg@example.nl", "beleid@example.nl"):
        visitor.sign_up(email)
    services.sender(services.transport(), worker="test").dispatch_all()
    ids = {recipient: rows[0][0] for recipient, rows in outbox_by_recipient(services).items()}
    assert {r: rows[0][1] for r, rows in outbox_by_recipient(services).items()} == {
        "goed@example.nl": "sent", "vol@example.nl": "failed", "weg@example.nl": "failed",
        "beleid@example.nl": "failed"}
    return services, ids


def statuses(services) -> dict[str, str]:
    return {r: rows[-1][1] for r, rows in outbox_by_recipient(services).items()}


def test_retrying_named_rows_queues_the_failed_ones_and_names_the_rest(queue, smtp_server, clock):
    services, ids = queue
    del smtp_server.replies["vol@example.nl"]

    changed = outbox.retry(services.db, [ids["vol@example.nl"], ids["goed@example.nl"], ids["weg@example.nl"],
                                         999999], clock.now())

    assert changed == outbox.Changed(1, tuple(sorted((ids["goed@example.nl"], ids["weg@example.nl"], 999999))))
    assert statuses(services)["vol@example.nl"] == "queued"
    assert statuses(services)["weg@example.nl"] == "failed"  # never mail a proved-undeliverable address
    assert services.sender(services.transport(), worker="test").dispatch().sent == 1
    assert statuses(services)["vol@example.nl"] == "sent"
    assert [e.rcpt_tos for e in smtp_server.messages][-1] == ["vol@example.nl"]


def test_retrying_every_failed_row_skips_undeliverable_addresses(queue, clock):
    services, ids = queue

    changed = outbox.retry(services.db, None, clock.now())

    assert changed == outbox.Changed(2, ())
    assert statuses(services) == {"goed@example.nl": "sent", "vol@example.nl": "queued",
                                  "weg@example.nl": "failed", "beleid@example.nl": "queued"}
    assert outbox.overview(services.db).counts[OutboxStatus.QUEUED] == 2


def test_cancelling_stops_mail_that_has_not_gone_out_and_names_what_could_not_be(queue, clock):
    services, ids = queue

    changed = outbox.cancel(services.db, [ids["vol@example.nl"], ids["goed@example.nl"]])

    assert changed == outbox.Changed(1, (ids["goed@example.nl"],))
    assert statuses(services)["vol@example.nl"] == "cancelled"
    assert statuses(services)["goed@example.nl"] == "sent"
    [row] = [r for r in outbox.rows(services.db, (OutboxStatus.CANCELLED,))]
    assert row.recipient == "vol@example.nl" and row.last_error == "cancelled by an operator"
    # A cancelled row comes back only when named.
    assert outbox.retry(services.db, None, clock.now()).count == 1  # beleid only
    assert outbox.retry(services.db, [ids["vol@example.nl"]], clock.now()) == outbox.Changed(1, ())


def test_resuming_lifts_a_policy_pause_once(queue):
    services, _ = queue
    pause = outbox.overview(services.db).marketing_paused
    assert pause is not None and "5.7.1" in pause.reason

    assert outbox.resume(services.db) is True
    assert outbox.overview(services.db).marketing_paused is None
    assert outbox.resume(services.db) is False


def test_resuming_lifts_a_pause_set_by_hand(services, clock):
    assert outbox.resume(services.db) is False
    with services.db.transaction() as session:
        queries.pause_marketing(session, reason="onderhoud", now=clock.now())
    assert outbox.overview(services.db).marketing_paused.reason == "onderhoud"
    assert outbox.resume(services.db) is True
    assert outbox.resume(services.db) is False
