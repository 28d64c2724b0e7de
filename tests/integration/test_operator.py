"""The operator's tools on real databases: export, stats, a person's data, erase, purge, import."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import Visitor, make_env
from sqlalchemy import func, select
from test_funnel import confirm, deliver, link_in
from test_unsubscribe import mail_about_lef

from mailer.cli import main
from mailer.store.tables import (
    Click,
    ConsentEvent,
    DeliveryAttempt,
    Download,
    Enrollment,
    ErasedTally,
    Lead,
    Outbox,
    Suppression,
)
from mailer.web import create_app


@pytest.fixture
def cli(tmp_path, database_url):
    runner = CliRunner()

    def run(*args, input=None, **env):
        environment = make_env(tmp_path, MAILER_DATABASE_URL=database_url, **env)
        return runner.invoke(main, list(args), env=environment, input=input, catch_exceptions=False)

    return run


@pytest.fixture
def people(services, clock):
    """Three leads through the web app: Anne confirmed with consent and a click on a drip mail,
    Bram confirmed without consent, and a pending signup whose name looks like a formula."""
    client = create_app(services=services).test_client()
    visitor = Visitor(client, clock)
    mail = mail_about_lef(services, visitor, client, clock)  # anne@gemeente.nl, by the helper
    import re
    tracked = re.findall(r"https://guide\.example\.nl(/k/[\w.\-]+)", mail.get_body(("plain",)).get_content())[0]
    client.get(tracked)
    visitor.sign_up("bram@provincie.nl", first_name="Bram, de \"Jong\"")
    confirm(client, deliver(services)[0])
    deliver(services)
    visitor.sign_up("=cmd@example.nl", first_name="=HYPERLINK(\"http://x\")")
    deliver(services)
    return client


def test_export_csv_parses_back_and_neutralises_formulas(people, cli):
    result = cli("export")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout_bytes.decode(), newline="")))
    by_email = {row["email"]: row for row in rows}
    assert list(by_email) == ["anne@gemeente.nl", "bram@provincie.nl", "'=cmd@example.nl"]
    assert by_email["bram@provincie.nl"]["first_name"] == 'Bram, de "Jong"'
    assert by_email["'=cmd@example.nl"]["first_name"] == "'=HYPERLINK(\"http://x\")"
    assert by_email["anne@gemeente.nl"]["marketing_consent"] == "yes"
    assert by_email["'=cmd@example.nl"]["confirmed_at"] == "" and by_email["'=cmd@example.nl"]["status"] == "pending"
    assert result.stdout_bytes.count(b"\r\n") == 4  # RFC 4180 line ends: header and three rows
    for row in rows:
        assert not any(cell and cell[0] in "=+-@\t\r" for cell in row.values()), row


def test_export_filters_fields_and_json_lines(people, cli):
    confirmed = cli("export", "--status", "confirmed", "--marketing-consent", "no", "--fields", "email,first_name")
    assert confirmed.stdout.splitlines() == ["email,first_name", 'bram@provincie.nl,"Bram, de ""Jong"""']
    lines = cli("export", "--format", "jsonl", "--status", "pending", "--status", "confirmed").stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["email"] for r in records] == ["anne@gemeente.nl", "bram@provincie.nl", "=cmd@example.nl"]
    assert records[0]["marketing_consent"] is True and records[0]["signed_up_at"].endswith("Z")
    assert cli("export", "--since", "2030-01-01").stdout.splitlines() == [
        "id,email,first_name,status,magnet,marketing_consent,signed_up_at,confirmed_at"]
    assert cli("export", "--until", "2026-11-30").stdout.count("\n") == 1  # the header only
    bad = cli("export", "--fields", "email,password")
    assert bad.exit_code == 2 and "unknown field(s) password" in bad.output


def test_export_for_dutch_excel_to_a_private_file(people, cli, tmp_path):
    target = tmp_path / "leads.csv"
    result = cli("export", "--excel", "--output", str(target))
    assert result.exit_code == 0 and "3 lead(s) written" in result.stderr
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    data = target.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfid;email;")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert rows[2][2] == 'Bram, de "Jong"' and len(rows) == 4
    assert cli("export", "--output", str(tmp_path / "geen-map" / "x.csv")).stderr.startswith("Error: cannot write")


def test_a_semicolon_in_a_name_is_quoted_for_excel(services, clock, cli):
    client = create_app(services=services).test_client()
    Visitor(client, clock).sign_up("puntkomma@example.nl", first_name="Jan; Piet")
    rows = list(csv.reader(io.StringIO(cli("export", "--excel").stdout_bytes.decode("utf-8-sig"), newline=""),
                           delimiter=";"))
    assert rows[1][1:3] == ["puntkomma@example.nl", "Jan; Piet"]


def test_export_is_silent_on_stderr_when_it_is_not_a_terminal(people, tmp_path, database_url):
    env = {**os.environ, **make_env(tmp_path, MAILER_DATABASE_URL=database_url)}
    done = subprocess.run([sys.executable, "-m", "mailer.cli", "export", "--output", str(tmp_path / "x.csv")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == f"3 lead(s) written to {tmp_path / 'x.csv'}\n"


def test_stats_counts_the_funnel_per_magnet(people, cli):
    data = json.loads(cli("stats", "--json").stdout)
    [figures] = data["magnets"]
    assert {k: figures[k] for k in ("signups", "confirmed", "downloaded", "marketing", "unsubscribed")} == \
        {"signups": 3, "confirmed": 2, "downloaded": 0, "marketing": 1, "unsubscribed": 0}
    steps = {s["step"]: (s["sent"], s["clicked"]) for s in figures["drip_steps"]}
    assert steps == {"mini-guide/gids-in-de-praktijk": (1, 0), "mini-guide/nog-niet-gelezen": (1, 0),
                     "mini-guide/lef-en-eigenheid": (1, 1)}
    table = cli("stats").stdout
    assert "  confirmed                  2  67% of signups" in table and "mini-guide/lef-en-eigenheid" in table


def test_lead_show_and_export_hold_everything_about_the_person(people, cli):
    shown = cli("lead", "show", "Anne@Gemeente.nl").stdout
    assert "anne@gemeente.nl" in shown and "consent evidence:" in shown and "clicks: 1" in shown
    record = json.loads(cli("lead", "export", "anne@gemeente.nl").stdout)
    assert [e["kind"] for e in record["consent_events"]] == ["signup", "confirm"]
    assert record["consent_events"][0]["notice"]["text"].startswith("Ja, stuur mij")
    assert [m["kind"] for m in record["mails"]][:2] == ["confirm", "guide"]
    assert record["mails"][0]["attempts"][0]["outcome"] == "sent"
    assert record["clicks"][0]["link"] == "visie"
    missing = cli("lead", "show", "niemand@example.nl")
    assert missing.exit_code == 1 and "no lead with the address niemand@example.nl" in missing.stderr


def test_erasing_removes_the_person_everywhere_but_keeps_the_figures(people, cli, services, tmp_path):
    def held(session) -> dict:
        return {model.__name__: session.scalar(select(func.count()).select_from(model))
                for model in (Lead, Outbox, DeliveryAttempt, Click, Download, Enrollment, ConsentEvent)}

    with services.db.read_only() as session:
        before_rows = held(session)
        anne = session.scalar(select(Lead).where(Lead.email == "anne@gemeente.nl"))
        annes = {"Outbox": len(session.scalars(select(Outbox).where(Outbox.lead_id == anne.id)).all()),
                 "Click": 1, "Enrollment": 1, "Download": 0, "Lead": 1,
                 "ConsentEvent": len(session.scalars(select(ConsentEvent).where(ConsentEvent.lead_id == anne.id)).all()),
                 "DeliveryAttempt": session.scalar(select(func.count()).select_from(DeliveryAttempt).join(
                     Outbox, Outbox.id == DeliveryAttempt.outbox_id).where(Outbox.lead_id == anne.id))}
    before = json.loads(cli("stats", "--json").stdout)["magnets"][0]
    assert cli("lead", "erase", "anne@gemeente.nl", input="n\n").exit_code == 1  # asked, and declined
    assert cli("lead", "erase", "anne@gemeente.nl", "--yes").exit_code == 0

    with services.db.read_only() as session:
        after_rows = held(session)
        assert {name: before_rows[name] - after_rows[name] for name in before_rows} == annes
        assert annes["DeliveryAttempt"] >= 5 and annes["ConsentEvent"] == 2
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1
        assert session.scalar(select(func.count()).select_from(ErasedTally)) > 0
    assert "anne@gemeente.nl" not in cli("export").stdout
    after = json.loads(cli("stats", "--json").stdout)["magnets"][0]
    assert after == before  # the figures do not change; the person is gone


def test_erasing_on_the_embedded_default_also_removes_the_sent_mail_files(tmp_path, make_services, sqlite_url,
                                                                          clock):
    folder = tmp_path / "mail"
    services = make_services(sqlite_url, MAILER_MAIL_URL=f"file://{folder}")
    client = create_app(services=services).test_client()
    for email in ("weg@example.nl", "blijft@example.nl"):
        Visitor(client, clock).sign_up(email)
    services.sender(services.transport(), worker="test").dispatch_all()
    assert len(list(folder.glob("*.eml"))) == 2
    env = make_env(tmp_path, MAILER_DATABASE_URL=sqlite_url, MAILER_MAIL_URL=f"file://{folder}")
    assert CliRunner().invoke(main, ["lead", "erase", "weg@example.nl", "--yes"], env=env).exit_code == 0
    [kept] = folder.glob("*.eml")
    assert b"blijft@example.nl" in kept.read_bytes()


def test_after_erasure_a_new_signup_starts_a_fresh_double_opt_in(people, cli, services, clock):
    cli("lead", "erase", "anne@gemeente.nl", "--yes")
    visitor = Visitor(people, clock)
    visitor.sign_up("anne@gemeente.nl", marketing=True)
    [mail] = deliver(services)
    assert mail["Subject"] == "Bevestig je aanvraag voor de mini guide"
    with services.db.read_only() as session:
        assert session.scalar(select(Lead.status).where(Lead.email == "anne@gemeente.nl")) == "pending"


def test_an_import_cannot_bring_an_erased_address_back(people, cli, tmp_path):
    cli("lead", "erase", "anne@gemeente.nl", "--yes")
    source = tmp_path / "oud.csv"
    source.write_text("email,first_name\nANNE@gemeente.nl,Anne\n", encoding="utf-8")
    result = cli("import", str(source))
    assert result.exit_code == 1
    assert "line 2: anne@gemeente.nl was erased on request" in result.stderr


def test_an_operator_unsubscribe_is_recorded_as_such(people, cli, services):
    assert cli("lead", "unsubscribe", "anne@gemeente.nl", "--via", "phone").stdout == "anne@gemeente.nl unsubscribed\n"
    again = cli("lead", "unsubscribe", "anne@gemeente.nl", "--via", "phone")
    assert "already unsubscribed" in again.stdout
    with services.db.read_only() as session:
        forms = session.scalars(select(ConsentEvent.form).where(ConsentEvent.kind == "unsubscribe")).all()
        assert forms == ["operator:phone"]
        assert session.scalar(select(Enrollment.status)) == "stopped"


def test_unconfirmed_signups_are_purged_and_their_links_go_dead(make_services, database_url, clock, cli):
    services = make_services(database_url, MAILER_PENDING_MAX_AGE_DAYS="3")  # the link lives 7 days
    client = create_app(services=services).test_client()
    Visitor(client, clock).sign_up("vergeten@example.nl")
    Visitor(client, clock).sign_up("bevestigd@example.nl")
    mails = deliver(services)
    confirm(client, mails[1])
    clock.advance(days=2)
    from mailer.scheduler import periodic_jobs

    [purge] = [job for job in periodic_jobs(services, []) if job.name == "purge-pending"]
    assert purge.run() == ""  # not yet
    clock.advance(days=2)
    assert purge.run() == "erased 1 signup(s) not confirmed within 3 days"
    page = client.get(link_in(mails[0], "/bevestig/"))
    assert page.status_code == 400 and "Deze link werkt niet" in page.get_data(as_text=True)
    assert json.loads(cli("stats", "--json").stdout)["magnets"][0]["signups"] == 2  # still counted
    assert json.loads(cli("stats", "--json").stdout)["magnets"][0]["confirmed"] == 1
    assert cli("purge", "--days", "1").stdout == "erased 0 signup(s) not confirmed within 1 days\n"


def test_import_checks_every_row_and_imports_all_or_nothing(cli, services, tmp_path):
    bad = tmp_path / "oud.csv"
    bad.write_text(
        "email;first_name;marketing_consent;consent_at;consent_source\n"
        "eva@gemeente.nl;Eva;ja;2025-03-01T10:00:00+01:00;formulier oude site\n"
        "geen-adres;X;nee;;\n"
        "piet@gemeente.nl;Piet;ja;;\n"
        "EVA@gemeente.nl;Eva;nee;;\n",
        encoding="utf-8-sig")
    result = cli("import", str(bad), "--dry-run")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[:3] == [
        "oud.csv: line 3: Dit e-mailadres lijkt niet te kloppen. Controleer het even, bijvoorbeeld: naam@gemeente.nl.",
        "oud.csv: line 4: marketing_consent yes needs consent_at and consent_source (the evidence)",
        "oud.csv: line 5: eva@gemeente.nl is also on line 2",
    ]
    assert cli("import", str(bad)).exit_code == 1
    with services.db.read_only() as session:
        assert session.scalar(select(func.count()).select_from(Lead)) == 0  # nothing half-imported

    good = tmp_path / "goed.csv"
    good.write_text("email,first_name,marketing_consent,consent_at,consent_source,consent_text\n"
                    "eva@gemeente.nl,Eva,yes,2025-03-01,formulier oude site,Ja graag mail\n"
                    "piet@gemeente.nl,Piet,no,,,\n", encoding="utf-8")
    assert "2 lead(s) can be imported (1 with marketing consent)" in cli("import", str(good), "--dry-run").stdout
    assert "imported 2 lead(s)" in cli("import", str(good)).stdout
    record = json.loads(cli("lead", "export", "eva@gemeente.nl").stdout)
    assert record["status"] == "confirmed" and record["marketing_consent"] is True
    assert record["consent_events"][0]["form"] == "formulier oude site"
    assert record["consent_events"][0]["notice"]["text"] == "Ja graag mail"
    again = cli("import", str(good))
    assert again.exit_code == 1 and "already a lead (confirmed)" in again.stderr


def test_a_database_without_the_schema_gets_one_clear_line(tmp_path):
    env = make_env(tmp_path, MAILER_DATABASE_URL=f"sqlite:///{tmp_path / 'leeg.db'}")
    result = CliRunner().invoke(main, ["export"], env=env)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "database: no such table: leads (is MAILER_DATABASE_URL right, and has `mailer db upgrade` run?)" \
        in result.stderr


def test_export_shows_progress_on_a_terminal(people, tmp_path, database_url):
    import pty

    env = {**os.environ, **make_env(tmp_path, MAILER_DATABASE_URL=database_url)}
    controller, terminal = pty.openpty()
    done = subprocess.run([sys.executable, "-m", "mailer.cli", "export", "--output", str(tmp_path / "x.csv")],
                          env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=terminal, timeout=60)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal's other end is closed: everything has been read
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert done.returncode == 0
    assert b"exporting" in shown and b"100%" in shown
