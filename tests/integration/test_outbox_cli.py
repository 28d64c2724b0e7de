"""`mailer outbox`: the operator's view of the queue, through click's runner on a real database."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import Visitor, make_env
from sqlalchemy import select

from mailer.cli import main
from mailer.store.tables import Outbox
from mailer.web import create_app


@pytest.fixture
def operator(tmp_path, make_services, database_url, smtp_server, clock):
    """A queue with one failed and one sent mail, and a runner for commands on the same database."""
    env = make_env(tmp_path, MAILER_DATABASE_URL=database_url, MAILER_MAIL_URL=smtp_server.url)
    services = make_services(database_url, MAILER_MAIL_URL=smtp_server.url)
    visitor = Visitor(create_app(services=services).test_client(), clock)
    smtp_server.replies["vol@example.nl"] = "552 5.2.2 Mailbox full"
    smtp_server.replies["beleid@example.nl"] = "550 5.7.1 Sender rejected by policy"
    for email in ("vol@example.nl", "goed@example.nl", "beleid@example.nl"):
        visitor.sign_up(email)
    services.sender(services.transport()).dispatch()
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(main, ["outbox", *args], env=env, catch_exceptions=False)
        return result

    run.services = services
    return run


def statuses(services):
    with services.db.read_only() as session:
        return {r.recipient: r.status for r in session.scalars(select(Outbox))}


def test_the_overview_counts_by_status_and_shows_the_marketing_pause(operator):
    result = operator()
    assert result.exit_code == 0
    assert "sent              1" in result.output and "failed            2" in result.output
    assert "marketing mail is PAUSED" in result.output and "5.7.1" in result.output
    data = json.loads(operator("--json").output)
    assert data["counts"] == {"sent": 1, "failed": 2} and "5.7.1" in data["marketing_paused"]["reason"]


def test_list_shows_failed_rows_with_their_last_reply(operator):
    result = operator("list", "--status", "failed")
    assert "vol@example.nl" in result.output and "5.2.2 Mailbox full" in result.output
    assert "goed@example.nl" not in result.output
    lines = [json.loads(line) for line in operator("list", "--status", "failed", "--json").output.splitlines()]
    assert sorted(line["recipient"] for line in lines) == ["beleid@example.nl", "vol@example.nl"]


def test_retry_puts_failed_mail_back_and_it_goes_out(operator, smtp_server):
    failed = [json.loads(line)["id"] for line in operator("list", "--status", "failed", "--json").output.splitlines()]
    del smtp_server.replies["vol@example.nl"]
    result = operator("retry", str(min(failed)))
    assert result.exit_code == 0 and "1 row(s) queued again" in result.output
    assert operator.services.sender(operator.services.transport()).dispatch().sent == 1
    assert statuses(operator.services)["vol@example.nl"] == "sent"


def test_retry_all_failed_and_usage_errors(operator):
    assert operator("retry").exit_code == 2
    assert "2 row(s) queued again" in operator("retry", "--all-failed").output
    not_failed = operator("retry", "999")
    assert not_failed.exit_code == 1 and "not failed or cancelled" in not_failed.output


def test_cancel_and_resume(operator):
    failed = [json.loads(line)["id"] for line in operator("list", "--status", "failed", "--json").output.splitlines()]
    assert "2 row(s) cancelled" in operator("cancel", *map(str, failed)).output
    assert sorted(statuses(operator.services).values()) == ["cancelled", "cancelled", "sent"]
    assert "marketing mail resumed" in operator("resume").output
    assert "was not paused" in operator("resume").output
    assert "PAUSED" not in operator().output


def test_retry_all_failed_leaves_cancelled_mail_and_undeliverable_addresses_alone(operator, smtp_server):
    from mailer.store.tables import Lead

    failed = {json.loads(line)["recipient"]: json.loads(line)["id"]
              for line in operator("list", "--status", "failed", "--json").output.splitlines()}
    operator("cancel", str(failed["vol@example.nl"]))
    with operator.services.db.transaction() as session:
        session.execute(Lead.__table__.update().where(Lead.email == "beleid@example.nl").values(status="undeliverable"))
    assert "0 row(s) queued again" in operator("retry", "--all-failed").output
    assert "1 row(s) queued again" in operator("retry", str(failed["vol@example.nl"])).output  # cancelled, by id
