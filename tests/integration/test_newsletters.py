"""Newsletters before sending, on SQLite and PostgreSQL: the starting file, a broken file,
the preview in the marketing layout with tracked links, a test send through real SMTP, and the
audience with each of its filters."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy

import pytest
from click.testing import CliRunner
from conftest import make_env
from sqlalchemy import select

from mailer.cli import main
from mailer.delivery.kinds import newsletter_ref
from mailer.delivery.rendering import Recipient
from mailer.resources import shipped
from mailer.store.tables import Click, Download, Enrollment, EnrollmentStatus, Lead, LeadStatus
from mailer.web import create_app

NEWSLETTER = '''+++
subject = "Nieuws voor de zomer"
preheader = "Twee nieuwe trainingen en een uitnodiging."
public = false
{extra}
+++
Lees [het verhaal](https://www.example.nl/verhalen/lef) en bekijk [de training](link('ontwikkelprogramma')).

## Agenda

- eerst <https://www.example.nl/agenda>
- dan een gesprek

[Plan een kennismaking](link('gesprek'))
'''


@pytest.fixture
def content(tmp_path):
    folder = tmp_path / "content"
    shutil.copytree(shipped("content"), folder)
    (folder / "newsletters" / "zomer.md").write_text(NEWSLETTER.format(extra=""), encoding="utf-8")
    (folder / "newsletters" / "nooit-gedownload.md").write_text(
        NEWSLETTER.format(extra="[audience]\ndownloaded = false"), encoding="utf-8")
    return folder


@pytest.fixture
def built(make_services, database_url, content):
    return make_services(database_url, MAILER_CONTENT_PATH=str(content))


@pytest.fixture
def cli(tmp_path, database_url, content, built):
    runner = CliRunner()

    def run(*args, **env):
        environment = make_env(tmp_path, MAILER_DATABASE_URL=database_url, MAILER_CONTENT_PATH=str(content))
        environment.update(env)
        return runner.invoke(main, list(args), env=environment, catch_exceptions=False)

    return run


# --- writing ---------------------------------------------------------------------------

def test_new_writes_a_valid_file_into_the_content_folder(cli, content):
    result = cli("newsletter", "new", "najaar")
    assert result.exit_code == 0, result.output
    path = content / "newsletters" / "najaar.md"
    assert str(path) in result.output and path.is_file()
    assert cli("newsletter", "preview", "najaar", "--output", str(content / "n.html")).exit_code == 0
    again = cli("newsletter", "new", "najaar")
    assert again.exit_code == 2 and "exists already" in again.output


def test_new_refuses_without_a_content_folder_of_your_own(cli):
    result = cli("newsletter", "new", "najaar", MAILER_CONTENT_PATH="")
    assert result.exit_code == 1
    assert "MAILER_CONTENT_PATH is not set" in result.output and "mailer init" in result.output
    assert not (shipped("content") / "newsletters" / "najaar.md").exists()


def test_new_refuses_a_name_that_is_no_slug(cli):
    result = cli("newsletter", "new", "Najaar Nieuws")
    assert result.exit_code == 2 and "slug" in result.output


def test_a_broken_file_names_the_file_and_the_field(cli, content):
    path = content / "newsletters" / "zomer.md"
    path.write_text(NEWSLETTER.format(extra='subjet = "typo"'), encoding="utf-8")
    result = cli("newsletter", "preview", "zomer", "--output", str(content / "x.html"))
    assert result.exit_code == 1
    assert f"{path.resolve().name}: field 'subjet' is not a known field" in result.output
    path.write_text(NEWSLETTER.format(extra="[audience]\nsequence = \"half\""), encoding="utf-8")
    result = cli("newsletter", "audience", "zomer")
    assert result.exit_code == 1 and "zomer.md: field 'audience.sequence'" in result.output


def test_an_unknown_newsletter_is_named(cli):
    result = cli("newsletter", "audience", "bestaat-niet")
    assert result.exit_code == 2 and "'bestaat-niet' is not a newsletter" in result.output and "zomer" in result.output


# --- looking at it ------------------------------------------------------------------------

def test_preview_renders_in_the_marketing_layout_with_tracked_links(cli, tmp_path):
    html_file, text_file = tmp_path / "zomer.html", tmp_path / "zomer.txt"
    result = cli("newsletter", "preview", "zomer", "--output", str(html_file))
    assert result.exit_code == 0, result.output
    assert "Subject: Nieuws voor de zomer" in result.output and "List-Unsubscribe-Post" in result.output
    html = html_file.read_text(encoding="utf-8")
    assert 'class="preheader"' in html and "Twee nieuwe trainingen en een uitnodiging." in html
    assert "Hallo Voorbeeld," in html and "<h2" in html
    assert re.search(r'href="https://guide\.example\.nl/afmelden/[^"]+"', html)  # visible unsubscribe link
    assert "Postbus 1234, 3500 AA Utrecht" in html and "Je ontvangt deze nieuwsbrief" in html
    hrefs = re.findall(r'href="([^"]+)"', html)
    tracked = [h for h in hrefs if h.startswith("https://guide.example.nl/k/")]
    assert len(tracked) == 4  # two plain links, two named links (one of them the button)
    assert not any("verhalen/lef" in h or "ontwikkelprogramma" in h or "kennismaken" in h for h in hrefs)
    assert 'class="button"' in html
    assert cli("newsletter", "preview", "zomer", "--output", str(text_file)).exit_code == 0
    text = text_file.read_text(encoding="utf-8")
    assert "Lees het verhaal (https://guide.example.nl/k/" in text and "/afmelden/" in text
    assert "Plan een kennismaking:\nhttps://guide.example.nl/k/" in text


def test_preview_with_a_lead_uses_its_name_but_not_its_links(cli, built, tmp_path):
    _lead(built, "anne@gemeente.nl", first_name="Anne")
    output = tmp_path / "anne.html"
    assert cli("newsletter", "preview", "zomer", "--lead", "anne@gemeente.nl", "--output", str(output)).exit_code == 0
    assert "Hallo Anne," in output.read_text(encoding="utf-8")
    result = cli("newsletter", "preview", "zomer", "--lead", "niemand@example.nl", "--output", str(output))
    assert result.exit_code != 0


def test_tracked_links_lead_to_the_newsletters_addresses_and_are_counted(built):
    anne = _lead(built, "anne@gemeente.nl")
    mail = built.renderer.render(newsletter_ref(built.content, "zomer"), Recipient(anne, "anne@gemeente.nl", "Anne"))
    tracked = re.findall(r"https://guide\.example\.nl(/k/[\w.\-]+)", mail.text)
    client = create_app(services=built).test_client()
    targets = [client.get(path + "?next=https://evil.example.com").headers["Location"] for path in tracked]
    assert targets == ["https://www.example.nl/verhalen/lef", "https://www.example.nl/ontwikkelprogramma",
                       "https://www.example.nl/agenda", "https://www.example.nl/kennismaken"]
    with built.db.read_only() as session:
        clicks = [(c.lead_id, c.sequence, c.step, c.link) for c in session.scalars(select(Click).order_by(Click.id))]
    assert clicks == [(anne, "newsletter:zomer", "zomer", name)
                      for name in ("url-1", "ontwikkelprogramma", "url-2", "gesprek")]
    assert client.get(tracked[0][:-4] + "abcd").status_code == 404


def test_with_click_tracking_off_links_are_straight(make_services, database_url, content):
    built = make_services(database_url, MAILER_CONTENT_PATH=str(content), MAILER_CLICK_TRACKING="false")
    mail = built.renderer.render(newsletter_ref(built.content, "zomer"), Recipient(5, "a@example.nl", "A"))
    assert "/k/" not in mail.html and "/k/" not in mail.text
    for address in ("https://www.example.nl/verhalen/lef", "https://www.example.nl/agenda",
                    "https://www.example.nl/ontwikkelprogramma", "https://www.example.nl/kennismaken"):
        assert f'href="{address}"' in mail.html and address in mail.text
    assert "/afmelden/" in mail.html  # the unsubscribe link stays


def test_a_test_send_arrives_marked_test_from_the_newsletters_sender(cli, content, smtp_server):
    path = content / "newsletters" / "zomer.md"
    path.write_text(NEWSLETTER.format(extra='from = "Els de Vries <els@example.nl>"\nreply_to = "els@example.nl"'),
                    encoding="utf-8")
    result = cli("newsletter", "test", "zomer", "--to", "ik@example.nl", MAILER_MAIL_URL=smtp_server.url)
    assert result.exit_code == 0, result.output
    assert "sent newsletter zomer to ik@example.nl: 250" in result.output
    assert smtp_server.wait(1, timeout=5)
    [envelope] = smtp_server.messages
    assert envelope.rcpt_tos == ["ik@example.nl"]
    message = message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"] == "[TEST] Nieuws voor de zomer"
    assert message["From"] == "Els de Vries <els@example.nl>" and message["Reply-To"] == "els@example.nl"
    assert message["List-Unsubscribe"] and message["List-Id"]
    assert "Hallo Voorbeeld," in message.get_body(("plain",)).get_content()


def test_a_bad_test_address_is_refused(cli):
    result = cli("newsletter", "test", "zomer", "--to", "geen-adres")
    assert result.exit_code == 2 and "--to" in result.output


# --- the audience -------------------------------------------------------------------------

DAY = datetime(2026, 1, 10, 12, 0, tzinfo=timezone.utc)


def _lead(built, email, *, first_name="Lid", status=LeadStatus.CONFIRMED, consent=True, magnet="mini-guide",
          created=DAY) -> int:
    with built.db.transaction() as session:
        lead = Lead(email=email, first_name=first_name, status=status.value, magnet=magnet,
                    marketing_consent=consent, created_at=created, confirmed_at=created, updated_at=created)
        session.add(lead)
        session.flush()
        return lead.id


def _add(built, *rows) -> None:
    with built.db.transaction() as session:
        session.add_all(rows)


def _enrolled(lead_id: int, *, status=EnrollmentStatus.ACTIVE, next_due: datetime | None) -> Enrollment:
    return Enrollment(lead_id=lead_id, sequence="mini-guide", status=status.value, anchor_at=DAY, position=0,
                      next_due_at=next_due, created_at=DAY, updated_at=DAY)


@pytest.fixture
def leads(built):
    """a: early, downloaded, clicked gesprek, in the sequence; b: later, finished the sequence;
    c: a removed magnet's lead, sequence stopped; and three who never get a newsletter."""
    a = _lead(built, "a@example.nl", created=DAY)
    b = _lead(built, "b@example.nl", created=DAY + timedelta(days=150))
    c = _lead(built, "c@example.nl", magnet="oud-magnet", created=datetime(2026, 2, 28, 23, 30, tzinfo=timezone.utc))
    _lead(built, "geen-toestemming@example.nl", consent=False)
    _lead(built, "wacht@example.nl", status=LeadStatus.PENDING)
    _lead(built, "afgemeld@example.nl", status=LeadStatus.UNSUBSCRIBED)
    _add(built, Download(lead_id=a, magnet="mini-guide", at=DAY),
         Click(lead_id=a, sequence="mini-guide", step="kennismaken", link="gesprek", at=DAY),
         Click(lead_id=b, sequence="mini-guide", step="visie", link="visie", at=DAY),
         _enrolled(a, next_due=DAY + timedelta(days=3)), _enrolled(b, next_due=None),
         _enrolled(c, status=EnrollmentStatus.STOPPED, next_due=None))


def _audience(cli, *args, slug="zomer"):
    result = cli("newsletter", "audience", slug, "--json", *args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["count"] == len(data["sample"])  # the sample (10) shows everyone counted here
    return set(data["sample"])


@pytest.mark.parametrize("args, expected", [
    ((), {"a", "b", "c"}),  # confirmed, with marketing consent: never the other three
    (("--magnet", "mini-guide"), {"a", "b"}),
    (("--after", "2026-03-01"), {"b", "c"}),  # c: 28 Feb 23:30 UTC is 1 March in Amsterdam
    (("--before", "2026-03-01"), {"a"}),
    (("--after", "2026-01-10", "--before", "2026-03-01"), {"a"}),
    (("--downloaded",), {"a"}),
    (("--not-downloaded",), {"b", "c"}),
    (("--clicked", "gesprek"), {"a"}),
    (("--not-clicked", "gesprek"), {"b", "c"}),
    (("--clicked", "gesprek", "--clicked", "visie"), set()),
    (("--not-clicked", "gesprek", "--not-clicked", "visie"), {"c"}),
    (("--sequence", "in"), {"a"}),
    (("--sequence", "finished"), {"b"}),
    (("--not-downloaded", "--after", "2026-03-01", "--sequence", "finished"), {"b"}),
])
def test_each_filter_narrows_the_audience(cli, leads, args, expected):
    assert _audience(cli, *args) == {f"{name}@example.nl" for name in expected}


def test_the_files_filters_apply_and_an_option_replaces_them(cli, leads):
    assert _audience(cli, slug="nooit-gedownload") == {"b@example.nl", "c@example.nl"}
    assert _audience(cli, "--downloaded", slug="nooit-gedownload") == {"a@example.nl"}
    assert _audience(cli, "--sequence", "finished", slug="nooit-gedownload") == {"b@example.nl"}


def test_the_count_is_of_the_same_query_as_the_sample(cli, leads, built):
    result = cli("newsletter", "audience", "zomer", "--json", "--sample", "1")
    data = json.loads(result.output)
    assert data["count"] == 3 and data["sample"] == ["a@example.nl"]  # the first by lead id
    text = cli("newsletter", "audience", "zomer", "--not-downloaded").output
    assert text.startswith("newsletter zomer: 2 lead(s): confirmed, with marketing consent, never downloaded")
    assert "b@example.nl" in text and "c@example.nl" in text


def test_an_unknown_link_or_magnet_in_an_option_is_refused(cli, leads):
    result = cli("newsletter", "audience", "zomer", "--clicked", "bestaat-niet")
    assert result.exit_code == 2 and "--clicked" in result.output
    result = cli("newsletter", "audience", "zomer", "--magnet", "bestaat-niet")
    assert result.exit_code == 2 and "--magnet" in result.output
    assert cli("newsletter", "audience", "zomer", "--after", "morgen").exit_code == 2
