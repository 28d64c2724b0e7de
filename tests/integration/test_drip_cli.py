"""`mailer drip plan|preview|render` and `mailer send-test`, through click's runner and as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timezone
from email import message_from_bytes, policy

import pytest
from click.testing import CliRunner
from conftest import make_env
from sqlalchemy import func, select
from test_drip import ANCHOR, DAY, enrol
from test_drip_walk import changed_content

from mailer.cli import main
from mailer.store.tables import Enrollment, Outbox

UTC = timezone.utc


@pytest.fixture
def cli(tmp_path, database_url):
    runner = CliRunner()

    def run(*args, **env):
        environment = make_env(tmp_path, MAILER_DATABASE_URL=database_url, **env)
        return runner.invoke(main, list(args), env=environment, catch_exceptions=False)

    return run


def test_plan_shows_who_gets_an_added_step_and_who_misses_a_removed_one(services, cli, tmp_path):
    enrol(services, 12, ANCHOR)
    services.drip.run(services.db, ANCHOR + 2 * DAY)  # records the steps; all 12 get the first mail
    with services.db.transaction() as session:  # two of them have had every step
        session.execute(Enrollment.__table__.update().where(Enrollment.id <= 2).values(position=25 * 86400))
    unchanged = cli("drip", "plan", "--now", "2026-12-03T12:00:00+00:00")
    assert "12 active enrollment(s)" in unchanged.output and "unchanged since the last drip run" in unchanged.output

    changed = cli("drip", "plan", "--json", "--now", "2026-12-06T12:00:00+00:00",
                  MAILER_CONTENT_PATH=changed_content(tmp_path, services))
    [plan] = json.loads(changed.output)
    changes = {c["key"]: c for c in plan["changes"]}
    assert plan["state"] == "changed" and set(changes) == {"vroeg", "terugblik", "kennismaken"}
    assert (changes["vroeg"]["leads"], changes["vroeg"]["overdue"]) == (10, 10)  # day 3 is past: at the next opening
    assert (changes["terugblik"]["leads"], changes["terugblik"]["overdue"]) == (10, 0)
    assert changes["terugblik"]["first"] == "2026-12-22T09:00:00+00:00"  # day 21, a Tuesday at 10:00
    assert changes["kennismaken"]["change"] == "removed" and changes["kennismaken"]["leads"] == 10

    text = cli("drip", "plan", "--now", "2026-12-06T12:00:00+00:00",
               MAILER_CONTENT_PATH=changed_content(tmp_path / "again", services)).output
    assert "+ terugblik (day 21, new): 10 lead(s) will get it: 10 from Tue 2026-12-22 10:00 CET" in text
    assert "+ vroeg (day 3, new): 10 lead(s) will get it: 10 at the next send window" in text
    assert "- kennismaken (day 25, removed): 10 lead(s) waiting for it will not get it" in text
    assert "takes effect at the first drip run after" in text


def test_preview_shows_the_timeline_after_the_window(cli):
    result = cli("drip", "preview", "--now", "2026-12-01T09:00:00+00:00", "--days", "19")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert "window mon-fri 09:00-17:00, Europe/Amsterdam" in lines[0]
    planned = [(line.split()[1], line.split()[2], line.split()[6]) for line in lines[1:]]
    assert planned == [
        ("2026-12-03", "10:00", "gids-in-de-praktijk"),
        ("2026-12-07", "09:00", "nog-niet-gelezen"),          # Saturday: Monday at nine
        ("2026-12-08", "09:00", "lef-en-eigenheid"),          # one a day
        ("2026-12-11", "10:00", "politieke-sensitiviteit"),
        ("2026-12-15", "10:00", "ontwikkelprogramma"),
    ]
    assert "skipped if downloaded" in lines[2]


def test_preview_of_a_lead_shows_what_went_out_and_what_comes(services, cli):
    enrol(services, 1, ANCHOR)
    services.drip.run(services.db, ANCHOR + 2 * DAY)
    result = cli("drip", "preview", "--lead", "LEAD0@example.nl", "--now", "2026-12-03T12:00:00+00:00", "--days", "7")
    lines = result.output.splitlines()
    assert "lead0@example.nl (confirmed): active" in lines[0]
    assert "gids-in-de-praktijk" in lines[1] and "queued" in lines[1]
    assert "nog-niet-gelezen" in lines[2] and "2026-12-07 09:00" in lines[2]
    unknown = cli("drip", "preview", "--lead", "niemand@example.nl")
    assert unknown.exit_code == 1 and "no lead with the address niemand@example.nl" in unknown.output


def test_render_writes_the_mail_as_the_recipient_sees_it(cli, tmp_path):
    html = tmp_path / "lef.html"
    result = cli("drip", "render", "lef-en-eigenheid", "--output", str(html))
    assert result.exit_code == 0
    assert "Subject: Waarom LEF en eigenheid ertoe doen bij de overheid" in result.output
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in result.output
    page = html.read_text(encoding="utf-8")
    assert "Hallo Voorbeeld," in page and "/afmelden/" in page and 'style="' in page  # CSS inlined
    text = tmp_path / "lef.txt"
    cli("drip", "render", "mini-guide/lef-en-eigenheid", "--output", str(text))
    assert text.read_text(encoding="utf-8").startswith("Hallo Voorbeeld,")
    wrong = cli("drip", "render", "lef", "--output", str(html))
    assert wrong.exit_code == 2 and "'lef' is not a step" in wrong.output and "mini-guide/kennismaken" in wrong.output


def test_send_test_delivers_one_marked_mail_and_touches_no_lead(cli, services, smtp_server):
    result = cli("send-test", "kennismaken", "--to", "Marketing@Example.nl", MAILER_MAIL_URL=smtp_server.url)
    assert result.exit_code == 0 and "sent mini-guide/kennismaken to marketing@example.nl: 250" in result.output
    [envelope] = smtp_server.messages
    message = message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"] == "[TEST] Zullen we een half uur kennismaken?"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert envelope.rcpt_tos == ["marketing@example.nl"]
    with services.db.read_only() as session:
        assert session.scalar(select(func.count()).select_from(Outbox)) == 0


def test_send_test_says_why_it_did_not_send(cli, smtp_server):
    bad = cli("send-test", "kennismaken", "--to", "geen-adres", MAILER_MAIL_URL=smtp_server.url)
    assert bad.exit_code == 2 and "--to" in bad.output
    smtp_server.replies["vol@example.nl"] = "552 5.2.2 Mailbox full"
    refused = cli("send-test", "kennismaken", "--to", "vol@example.nl", MAILER_MAIL_URL=smtp_server.url)
    assert refused.exit_code == 1 and "not sent: 552" in refused.output


def test_preview_runs_as_a_real_command(tmp_path, database_url):
    env = {**os.environ, **make_env(tmp_path, MAILER_DATABASE_URL=database_url)}
    done = subprocess.run([sys.executable, "-m", "mailer.cli", "drip", "preview", "--days", "3",
                           "--now", "2026-12-01T09:00:00+00:00"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Thu 2026-12-03 10:00 CET" in done.stdout and done.stderr == ""
